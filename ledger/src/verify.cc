#include "ledger/verify.h"

#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <google/protobuf/util/delimited_message_util.h>

#include <map>
#include <string_view>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/limits.h"
#include "base/status.h"
#include "chain_check.h"
#include "chain_pipeline.h"

namespace gpuledger::ledger {

namespace v1 = gpuledger::v1;

namespace {

void Fail(VerifyReport* r, uint64_t seq, std::string problem) {
  if (!r->ok) return;
  r->ok = false;
  r->first_bad_seq = seq;
  r->problem = std::move(problem);
}

struct OutcomeCounts {
  uint64_t accepted = 0;
  uint64_t parked = 0;
  std::map<std::string, uint64_t> rejected_by_reason;
};

// Reports progress to VerifyOptions::progress every kProgressEvery units, and at the end.
class ProgressNote {
 public:
  ProgressNote(const VerifyOptions& options, std::string_view stage, uint64_t total)
      : options_(options), stage_(stage), total_(total) {}
  void Tick(uint64_t done) {
    if (options_.progress && done % kProgressEvery == 0) options_.progress(stage_, done, total_);
  }
  void Done(uint64_t done) {
    if (options_.progress) options_.progress(stage_, done, total_);
  }

 private:
  static constexpr uint64_t kProgressEvery = 16'384;
  const VerifyOptions& options_;
  std::string_view stage_;
  uint64_t total_;
};

absl::Status CheckChain(const Ledger& ledger, const SignatureVerifier* key, bool require_signed,
                        const VerifyOptions& options, VerifyReport* r, OutcomeCounts* counts) {
  ChainCheck check(r, 1, kZeroDigest, key, ledger.checkpoint_interval(), false, require_signed);
  absl::Status st = ledger.ScanCheckpoints([&](const v1::Checkpoint& cp) -> absl::Status {
    check.Checkpoint(cp);
    return absl::OkStatus();
  });
  if (absl::IsDataLoss(st)) {
    Fail(r, 0, std::string(st.message()));
    return absl::OkStatus();
  }
  GPULEDGER_RETURN_IF_ERROR(st);
  ProgressNote progress(options, "chain", r->head.seq);
  // The reader (this thread) queues raw entries; a worker hashes and parses them; this thread
  // checks them in order (chain_pipeline.h).
  ChainPipeline pipeline(
      [&](ChainItem& item) -> bool {
        if (!item.parsed) {
          // What Ledger::Scan reports for such an entry, before the check sees it.
          Fail(r, check.last_seq() + 1,
               absl::StrCat("entry ", item.seq, " does not parse as a LedgerEntry"));
          return false;
        }
        if (!check.Entry(item)) return false;
        if (item.entry->outcome() == v1::ACCEPTED) {
          ++counts->accepted;
        } else if (item.entry->outcome() == v1::PARKED) {
          ++counts->parked;
        } else {
          ++counts->rejected_by_reason[item.entry->reason_code()];
        }
        progress.Tick(r->entries_checked);
        return true;
      },
      kZeroDigest, limits::kVerifyHashThreads);
  st = ledger.ScanRaw(
      1, [&](uint64_t seq, std::string_view bytes, const Digest& hash) -> absl::StatusOr<bool> {
        return pipeline.AddEntry(seq, std::string(bytes), hash);
      });
  pipeline.Drain();
  // An entry the check stopped at comes before whatever the reader met after it.
  if (!r->ok) return absl::OkStatus();
  if (absl::IsDataLoss(st)) {
    Fail(r, check.last_seq() + 1, std::string(st.message()));
    return absl::OkStatus();
  }
  GPULEDGER_RETURN_IF_ERROR(st);
  progress.Done(r->entries_checked);
  check.Finish(r->head);
  return absl::OkStatus();
}

// Every dedup record must point at an entry with that identity and outcome.
absl::Status CheckDedupRecords(const Ledger& ledger, VerifyReport* r) {
  return ledger.ScanDedup([&](const std::string& source_id, const std::string& event_id,
                              const DedupRecord& rec) -> absl::Status {
    ++r->dedup_records_checked;
    auto e = ledger.Get(rec.seq);
    if (!e.ok() || e->entry.source_id() != source_id || e->entry.event_id() != event_id ||
        e->entry.outcome() != rec.outcome) {
      Fail(r, rec.seq,
           absl::StrCat("dedup record (", source_id, ", ", event_id,
                        ") does not match the entry it points at"));
    }
    return absl::OkStatus();
  });
}

// Every identity-bearing entry (other than a refused conflict) must be indexed at its seq.
absl::Status CheckIndexedEntries(const Ledger& ledger, const VerifyOptions& options,
                                 uint64_t head_seq, VerifyReport* r) {
  ProgressNote progress(options, "dedup index", head_seq);
  GPULEDGER_RETURN_IF_ERROR(ledger.Scan(1, [&](const StoredEntry& e) -> absl::StatusOr<bool> {
    progress.Tick(e.seq);
    const auto& le = e.entry;
    if (le.event_id().empty()) return true;  // no identity: never indexed
    if (le.reason_code() == kConflictingDuplicate) return true;
    GPULEDGER_ASSIGN_OR_RETURN(auto rec, ledger.LookupEvent(le.source_id(), le.event_id()));
    // A parked entry's identity moves on to the entry that resolves it.
    if (le.outcome() == v1::PARKED && rec.has_value() && rec->seq > e.seq) return true;
    if (!rec.has_value() || rec->seq != e.seq) {
      Fail(r, e.seq,
           absl::StrCat("entry (", le.source_id(), ", ", le.event_id(),
                        ") is not in the dedup index"));
      return false;
    }
    return true;
  }));
  if (r->ok) progress.Done(head_seq);
  return absl::OkStatus();
}

// The two directions are independent reads, so the records' runs on a second thread while this
// one checks the entries'. Each keeps its own first problem; the records' is reported first, and
// their errors in the same order, as when the two ran one after the other.
absl::Status CheckDedup(const Ledger& ledger, const VerifyOptions& options, VerifyReport* r) {
  VerifyReport records;
  absl::Status records_status;
  std::thread records_thread([&] { records_status = CheckDedupRecords(ledger, &records); });
  VerifyReport entries;
  const absl::Status entries_status = CheckIndexedEntries(ledger, options, r->head.seq, &entries);
  records_thread.join();
  r->dedup_records_checked = records.dedup_records_checked;
  GPULEDGER_RETURN_IF_ERROR(records_status);
  if (!records.ok) Fail(r, records.first_bad_seq, records.problem);
  GPULEDGER_RETURN_IF_ERROR(entries_status);
  if (!entries.ok) Fail(r, entries.first_bad_seq, entries.problem);
  return absl::OkStatus();
}

void CheckCounters(const v1::LedgerCounters& stored, const OutcomeCounts& counts, VerifyReport* r) {
  const uint64_t accepted = counts.accepted;
  uint64_t rejected = 0;
  if (stored.parked() != counts.parked) {
    Fail(r, 0,
         absl::StrCat("counters say ", stored.parked(), " parked; the entries hold ",
                      counts.parked));
  }
  for (const auto& [reason, n] : counts.rejected_by_reason) {
    rejected += n;
    auto it = stored.rejected_by_reason().find(reason);
    if (it == stored.rejected_by_reason().end() || it->second != n) {
      Fail(r, 0, absl::StrCat("counter of rejections ", reason, " does not match the entries"));
    }
  }
  if (stored.accepted() != accepted || stored.rejected() != rejected) {
    Fail(r, 0,
         absl::StrCat("counters say ", stored.accepted(), " accepted and ", stored.rejected(),
                      " rejected; the entries hold ", accepted, " and ", rejected));
  }
}

}  // namespace

absl::StatusOr<VerifyReport> Verify(const Ledger& ledger, const SignatureVerifier* key,
                                    const VerifyOptions& options) {
  VerifyReport r;
  r.head = ledger.head();
  std::unique_ptr<SignatureVerifier> stored_key;
  if (key != nullptr) {
    r.key_source = "given";
  } else if (!ledger.first_public_key_pem().empty()) {
    GPULEDGER_ASSIGN_OR_RETURN(stored_key,
                               SignatureVerifier::FromPublicKeyPem(ledger.first_public_key_pem()));
    key = stored_key.get();
    r.key_source = "ledger";
  }
  // A damaged block reads as missing data (no entries, no dedup record): name it first.
  if (absl::Status tables = ledger.VerifyTables(); !tables.ok()) {
    if (!absl::IsDataLoss(tables)) return tables;
    Fail(&r, 0, std::string(tables.message()));
    return r;
  }
  OutcomeCounts counts;
  const bool require_signed = r.key_source == "given" && !options.allow_unsigned_tail;
  GPULEDGER_RETURN_IF_ERROR(CheckChain(ledger, key, require_signed, options, &r, &counts));
  if (r.ok) GPULEDGER_RETURN_IF_ERROR(CheckDedup(ledger, options, &r));
  if (r.ok) CheckCounters(ledger.Counters(), counts, &r);
  if (!r.ok) {
    // Missing entries or dedup records may be a damaged block that RocksDB read as no data:
    // name the damage rather than its symptom.
    if (absl::Status tables = ledger.DiagnoseTables(); !tables.ok()) {
      if (!absl::IsDataLoss(tables)) return tables;
      r.problem = std::string(tables.message());
      return r;
    }
  }
  if (r.ok && !ledger.wal_damage().empty()) {
    Fail(&r, r.head.seq + 1,
         absl::StrCat("the write-ahead log is damaged and recovery stopped there (",
                      ledger.wal_damage(),
                      "): this view ends at the last commit before the damage, seq ", r.head.seq,
                      "; whatever was committed after it is not on disk any more (ingest's next "
                      "start recovers the same prefix and consumes the rest again from Kafka)"));
  }
  return r;
}

absl::StatusOr<VerifyReport> VerifyExport(std::istream& in, const SignatureVerifier* key,
                                          const VerifyOptions& options) {
  VerifyReport r;
  r.key_source = key != nullptr ? "given" : "none";
  google::protobuf::io::IstreamInputStream stream(&in);
  v1::ExportRecord record;
  bool clean_eof = false;
  if (!google::protobuf::util::ParseDelimitedFromZeroCopyStream(&record, &stream, &clean_eof) ||
      !record.has_header() || record.header().format() != "gpuledger-export") {
    Fail(&r, 0, "not a gpuledger export: the stream does not start with an export header");
    return r;
  }
  const v1::ExportHeader header = record.header();
  if (header.format_version() != 1 && header.format_version() != 2) {
    Fail(&r, 0,
         absl::StrCat("export format version ", header.format_version(),
                      " is not one this build reads (1 or 2)"));
    return r;
  }
  Digest prev{};
  if (!FromBytes(header.prev_hash(), &prev) || header.first_seq() == 0 ||
      (header.first_seq() == 1 && prev != kZeroDigest)) {
    Fail(&r, header.first_seq(),
         "export header's prev_hash is not 32 bytes, or not zero before entry 1");
    return r;
  }
  // Identities can only be checked from the first entry on.
  ChainCheck check(&r, header.first_seq(), prev, key, header.checkpoint_interval(),
                   header.first_seq() == 1, key != nullptr && !options.allow_unsigned_tail);
  const uint64_t promised =
      header.last_seq() >= header.first_seq() ? header.last_seq() - header.first_seq() + 1 : 0;
  ProgressNote progress(options, "chain", promised);
  // Records are checked in the stream's order, behind the reader (chain_pipeline.h): before
  // the reader judges the stream itself, the check catches up, so that the first problem is
  // the one a record-by-record reading meets first.
  ChainPipeline pipeline(
      [&](ChainItem& item) -> bool {
        if (item.checkpoint) return check.Checkpoint(*item.checkpoint);
        if (!check.Entry(item)) return false;
        progress.Tick(r.entries_checked);
        return true;
      },
      prev, limits::kVerifyHashThreads);
  while (r.ok) {
    record.Clear();
    if (!google::protobuf::util::ParseDelimitedFromZeroCopyStream(&record, &stream, &clean_eof)) {
      pipeline.Drain();
      if (!clean_eof) Fail(&r, check.last_seq() + 1, "the export is truncated or garbled here");
      break;
    }
    if (record.has_entry()) {
      Digest hash{};
      if (!FromBytes(record.entry().hash(), &hash)) {
        pipeline.Drain();
        Fail(&r, record.entry().seq(), "entry hash is not 32 bytes");
        break;
      }
      if (!pipeline.AddEntry(record.entry().seq(),
                             std::move(*record.mutable_entry()->mutable_entry()), hash)) {
        break;
      }
    } else if (record.has_checkpoint()) {
      if (!pipeline.AddCheckpoint(record.checkpoint())) break;
    } else {
      pipeline.Drain();
      Fail(&r, check.last_seq() + 1, "unexpected record in the export");
    }
  }
  pipeline.Drain();
  if (r.ok) progress.Done(r.entries_checked);
  r.head = Head{check.last_seq(), check.last_hash()};
  if (r.ok && check.last_seq() != header.last_seq()) {
    Fail(&r, check.last_seq() + 1,
         absl::StrCat("the header promises entries up to ", header.last_seq(),
                      " but the export ends at ", check.last_seq()));
  }
  check.Finish(r.head);
  return r;
}

}  // namespace gpuledger::ledger
