// Verification of the ledger, live or exported: chain continuity, signed checkpoints, head,
// dedup index and counters. Reports the first bad sequence number and what is wrong.
#pragma once

#include <cstdint>
#include <istream>
#include <string>

#include "ledger/ledger.h"
#include "ledger/signing.h"

namespace gpuledger::ledger {

struct VerifyReport {
  bool ok = true;
  uint64_t entries_checked = 0;
  uint64_t dedup_records_checked = 0;
  uint64_t checkpoints_verified = 0;
  // The highest seq covered by a verified signed checkpoint (0: none). Entries after it are
  // chained but not yet signed.
  uint64_t last_checkpoint_seq = 0;
  Head head;
  // Where the key used for signatures came from: "given" (the auditor's), "ledger" (the key
  // stored in the ledger itself: proves consistency, not authorship) or "none".
  std::string key_source = "none";
  // When !ok: the first sequence number that cannot be trusted (0 if the problem is not an
  // entry) and what is wrong.
  uint64_t first_bad_seq = 0;
  std::string problem;
};

// Verifies the live ledger. `key` is the operator's public key as the auditor knows it; if
// null, the key stored in the ledger is used (key_source "ledger").
absl::StatusOr<VerifyReport> Verify(const Ledger& ledger, const SignatureVerifier* key = nullptr);

// Verifies an export stream (see docs/LEDGER.md). `key` null: signatures are not checked
// (key_source "none") and the report says so.
absl::StatusOr<VerifyReport> VerifyExport(std::istream& in, const SignatureVerifier* key);

}  // namespace gpuledger::ledger
