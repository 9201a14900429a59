#include "settlement/shards.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "ledger/hash.h"

namespace gpuledger::settlement {

namespace v1 = gpuledger::v1;

namespace {

// What every shard must agree on about a registry entry (seqs and ingest's clock differ).
bool SameRegistryEntry(const v1::LedgerEntry& a, const v1::LedgerEntry& b) {
  return a.payload() == b.payload() && a.topic() == b.topic() && a.partition() == b.partition() &&
         a.offset() == b.offset() && a.outcome() == b.outcome() &&
         a.reason_code() == b.reason_code() && a.event_id() == b.event_id() &&
         a.source_id() == b.source_id() && a.decoded_event() == b.decoded_event();
}

std::string Describe(size_t shard, const ledger::StoredEntry& e) {
  return absl::StrCat("shard ", shard, " seq ", e.seq, " (", e.entry.topic(), "[",
                      e.entry.partition(), "] offset ", e.entry.offset(), ", ",
                      v1::Outcome_Name(e.entry.outcome()), e.entry.reason_code().empty() ? "" : " ",
                      e.entry.reason_code(), ")");
}

class Merge {
 public:
  Merge(std::vector<const ledger::Ledger*> shards, std::shared_ptr<ShardMergeReport> report)
      : shards_(std::move(shards)), report_(std::move(report)) {}

  absl::Status Run(uint64_t from_seq, const EntryVisitor& visit) {
    const size_t n = shards_.size();
    std::vector<uint64_t> next(n, 1), head(n);
    for (size_t k = 0; k < n; ++k) head[k] = shards_[k]->head().seq;
    std::vector<std::optional<ledger::StoredEntry>> at(n);  // each shard's registry entry
    while (true) {
      for (size_t k = 0; k < n; ++k) {
        at[k].reset();
        while (next[k] <= head[k]) {
          GPULEDGER_ASSIGN_OR_RETURN(ledger::StoredEntry e, shards_[k]->Get(next[k]));
          if (e.entry.source() == v1::SOURCE_REGISTRY) {
            at[k] = std::move(e);
            break;
          }
          ++next[k];
          GPULEDGER_RETURN_IF_ERROR(SettleOnce(k, &e));
          GPULEDGER_ASSIGN_OR_RETURN(bool go_on, Emit(std::move(e), from_seq, visit));
          if (!go_on) return absl::OkStatus();
        }
      }
      size_t ended = 0;
      for (size_t k = 0; k < n; ++k) ended += at[k].has_value() ? 0 : 1;
      if (ended == n) return absl::OkStatus();
      if (ended > 0) {
        // A shard still ingesting: the stream ends before the registry entry it lacks.
        size_t lagging = n, ahead = n;
        for (size_t k = 0; k < n; ++k) {
          if (!at[k].has_value() && lagging == n) lagging = k;
          if (at[k].has_value() && ahead == n) ahead = k;
        }
        if (report_) {
          report_->stopped_early =
              absl::StrCat("shard ", lagging, " has not yet recorded the registry entry at ",
                           at[ahead]->entry.topic(), " offset ", at[ahead]->entry.offset(),
                           " that shard ", ahead, " has: settled up to it");
        }
        return absl::OkStatus();
      }
      for (size_t k = 1; k < n; ++k) {
        if (!SameRegistryEntry(at[0]->entry, at[k]->entry)) {
          return absl::FailedPreconditionError(absl::StrCat(
              "the shards disagree on the registry: ", Describe(0, *at[0]), " and ",
              Describe(k, *at[k]),
              ". Every shard reads the same registry and must decide it the same way; check "
              "that they read the same registry topic (--topic-prefix)"));
        }
      }
      for (size_t k = 0; k < n; ++k) ++next[k];
      if (report_) ++report_->registry_entries;
      GPULEDGER_ASSIGN_OR_RETURN(bool go_on, Emit(*std::move(at[0]), from_seq, visit));
      if (!go_on) return absl::OkStatus();
    }
  }

 private:
  // An accepted usage event another shard holds too is settled once (see ShardMergeReport).
  absl::Status SettleOnce(size_t k, ledger::StoredEntry* e) {
    const v1::LedgerEntry& le = e->entry;
    if (shards_.size() < 2 || le.source() != v1::SOURCE_USAGE || le.outcome() != v1::ACCEPTED ||
        le.event_id().empty()) {
      return absl::OkStatus();
    }
    for (size_t j = 0; j < shards_.size(); ++j) {
      if (j == k) continue;
      GPULEDGER_ASSIGN_OR_RETURN(std::optional<ledger::DedupRecord> rec,
                                 shards_[j]->LookupEvent(le.source_id(), le.event_id()));
      if (!rec.has_value() || rec->outcome != v1::ACCEPTED) continue;
      GPULEDGER_ASSIGN_OR_RETURN(ledger::StoredEntry other, shards_[j]->Get(rec->seq));
      if (other.entry.outcome() != v1::ACCEPTED) continue;
      const bool other_first =
          other.entry.kafka_timestamp_ms() < le.kafka_timestamp_ms() ||
          (other.entry.kafka_timestamp_ms() == le.kafka_timestamp_ms() && j < k);
      if (!other_first) continue;
      const std::string note = absl::StrCat("event '", le.event_id(), "' of ", le.source_id(),
                                            " is in shard ", j, " (seq ", other.seq, ") and shard ",
                                            k, " (seq ", e->seq, "): settled once, from shard ", j);
      if (report_) {
        ++report_->cross_shard_duplicates;
        if (report_->notes.size() < 20) report_->notes.push_back(note);
      }
      e->entry.set_outcome(v1::REJECTED);
      e->entry.set_reason_code(ledger::kConflictingDuplicate);
      e->entry.set_reason_detail(note);
      return absl::OkStatus();
    }
    return absl::OkStatus();
  }

  absl::StatusOr<bool> Emit(ledger::StoredEntry e, uint64_t from_seq, const EntryVisitor& visit) {
    ++seq_;
    e.seq = seq_;
    e.hash = ledger::ChainHash(hash_, seq_, e.bytes);
    hash_ = e.hash;
    if (report_) report_->entries = seq_;
    if (seq_ < from_seq) return true;
    return visit(e);
  }

  std::vector<const ledger::Ledger*> shards_;
  std::shared_ptr<ShardMergeReport> report_;
  uint64_t seq_ = 0;
  ledger::Digest hash_ = ledger::kZeroDigest;
};

}  // namespace

EntrySource MergeShards(std::vector<const ledger::Ledger*> shards,
                        std::shared_ptr<ShardMergeReport> report) {
  return [shards = std::move(shards), report = std::move(report)](
             uint64_t from_seq, const EntryVisitor& visit) -> absl::Status {
    if (report) *report = ShardMergeReport{};
    Merge merge(shards, report);
    return merge.Run(from_seq, visit);
  };
}

}  // namespace gpuledger::settlement
