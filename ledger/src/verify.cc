#include "ledger/verify.h"

#include "absl/strings/str_cat.h"
#include "base/status.h"

namespace gpuledger::ledger {

namespace v1 = gpuledger::v1;

namespace {

void Fail(VerifyReport* r, uint64_t seq, std::string problem) {
  if (!r->ok) return;  // keep the first problem
  r->ok = false;
  r->first_bad_seq = seq;
  r->problem = std::move(problem);
}

// Walks the chain from seq 1. Stops at the first broken link: everything after it is suspect.
absl::Status CheckChain(const Ledger& ledger, VerifyReport* r) {
  Digest prev = kZeroDigest;
  uint64_t expected = 1;
  absl::Status st = ledger.Scan(1, [&](const StoredEntry& e) -> absl::StatusOr<bool> {
    if (e.seq != expected) {
      Fail(r, expected,
           e.seq > expected
               ? absl::StrCat("entry ", expected, " is missing (next present: ", e.seq, ")")
               : absl::StrCat("entry key ", e.seq, " out of order"));
      return false;
    }
    if (e.entry.seq() != e.seq) {
      Fail(r, e.seq, absl::StrCat("entry stored under seq ", e.seq, " says seq ", e.entry.seq()));
      return false;
    }
    if (ChainHash(prev, e.seq, e.bytes) != e.hash) {
      Fail(r, e.seq, "chain hash does not match the entry's bytes and its predecessor's hash");
      return false;
    }
    prev = e.hash;
    ++r->entries_checked;
    ++expected;
    return true;
  });
  if (absl::IsDataLoss(st)) {
    Fail(r, expected, std::string(st.message()));
    return absl::OkStatus();
  }
  GPULEDGER_RETURN_IF_ERROR(st);
  if (r->ok && (r->entries_checked != r->head.seq || prev != r->head.hash)) {
    Fail(r, r->entries_checked + 1,
         absl::StrCat("head says seq ", r->head.seq, " but the chain ends at seq ",
                      r->entries_checked));
  }
  return absl::OkStatus();
}

absl::Status CheckDedup(const Ledger& ledger, VerifyReport* r) {
  // Every record must point at an entry with that identity and content.
  absl::Status st = ledger.ScanDedup([&](const std::string& source_id, const std::string& event_id,
                                         const DedupRecord& rec) -> absl::Status {
    ++r->dedup_records_checked;
    auto e = ledger.Get(rec.seq);
    if (!e.ok()) {
      Fail(
          r, rec.seq,
          absl::StrCat("dedup record (", source_id, ", ", event_id, ") points at a missing entry"));
      return absl::OkStatus();
    }
    if (e->entry.source_id() != source_id || e->entry.event_id() != event_id ||
        e->entry.outcome() != rec.outcome) {
      Fail(r, rec.seq,
           absl::StrCat("dedup record (", source_id, ", ", event_id,
                        ") does not match the entry it points at"));
    }
    return absl::OkStatus();
  });
  GPULEDGER_RETURN_IF_ERROR(st);
  // Every identity-bearing entry (other than a refused conflict) must be indexed at its seq.
  return ledger.Scan(1, [&](const StoredEntry& e) -> absl::StatusOr<bool> {
    const auto& le = e.entry;
    if (le.source_id().empty() && le.event_id().empty()) return true;
    if (le.reason_code() == kConflictingDuplicate) return true;
    GPULEDGER_ASSIGN_OR_RETURN(auto rec, ledger.LookupEvent(le.source_id(), le.event_id()));
    if (!rec.has_value() || rec->seq != e.seq) {
      Fail(r, e.seq,
           absl::StrCat("entry (", le.source_id(), ", ", le.event_id(),
                        ") is not in the dedup index"));
      return false;
    }
    return true;
  });
}

}  // namespace

absl::StatusOr<VerifyReport> Verify(const Ledger& ledger) {
  VerifyReport r;
  r.head = ledger.head();
  GPULEDGER_RETURN_IF_ERROR(CheckChain(ledger, &r));
  if (r.ok) GPULEDGER_RETURN_IF_ERROR(CheckDedup(ledger, &r));
  return r;
}

}  // namespace gpuledger::ledger
