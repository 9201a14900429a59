#include "ledger/verify.h"

#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <google/protobuf/util/delimited_message_util.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "chain_check.h"

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

absl::Status CheckChain(const Ledger& ledger, const SignatureVerifier* key, bool require_signed,
                        VerifyReport* r, OutcomeCounts* counts) {
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
  st = ledger.Scan(1, [&](const StoredEntry& e) -> absl::StatusOr<bool> {
    if (!check.Entry(e.seq, e.bytes, e.hash)) return false;
    if (e.entry.outcome() == v1::ACCEPTED) {
      ++counts->accepted;
    } else if (e.entry.outcome() == v1::PARKED) {
      ++counts->parked;
    } else {
      ++counts->rejected_by_reason[e.entry.reason_code()];
    }
    return true;
  });
  if (absl::IsDataLoss(st)) {
    Fail(r, check.last_seq() + 1, std::string(st.message()));
    return absl::OkStatus();
  }
  GPULEDGER_RETURN_IF_ERROR(st);
  check.Finish(r->head);
  return absl::OkStatus();
}

absl::Status CheckDedup(const Ledger& ledger, VerifyReport* r) {
  // Every record must point at an entry with that identity and outcome.
  GPULEDGER_RETURN_IF_ERROR(
      ledger.ScanDedup([&](const std::string& source_id, const std::string& event_id,
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
      }));
  // Every identity-bearing entry (other than a refused conflict) must be indexed at its seq.
  return ledger.Scan(1, [&](const StoredEntry& e) -> absl::StatusOr<bool> {
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
  });
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
  GPULEDGER_RETURN_IF_ERROR(CheckChain(ledger, key, require_signed, &r, &counts));
  if (r.ok) GPULEDGER_RETURN_IF_ERROR(CheckDedup(ledger, &r));
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
  while (r.ok) {
    record.Clear();
    if (!google::protobuf::util::ParseDelimitedFromZeroCopyStream(&record, &stream, &clean_eof)) {
      if (!clean_eof) Fail(&r, check.last_seq() + 1, "the export is truncated or garbled here");
      break;
    }
    if (record.has_entry()) {
      Digest hash{};
      if (!FromBytes(record.entry().hash(), &hash)) {
        Fail(&r, record.entry().seq(), "entry hash is not 32 bytes");
        break;
      }
      check.Entry(record.entry().seq(), record.entry().entry(), hash);
    } else if (record.has_checkpoint()) {
      check.Checkpoint(record.checkpoint());
    } else {
      Fail(&r, check.last_seq() + 1, "unexpected record in the export");
    }
  }
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
