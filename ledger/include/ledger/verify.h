// Verification of the ledger, live or exported: chain continuity, signed checkpoints, head,
// dedup index and counters. Reports the first bad sequence number and what is wrong.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <istream>
#include <string>
#include <string_view>

#include "ledger/ledger.h"
#include "ledger/signing.h"

namespace gpuledger::ledger {

struct VerifyOptions {
  // With a key given: accept entries after the last verified signed checkpoint (the report
  // names them: unsigned_from()..head.seq). Default: false, so a key verifies only what signed
  // checkpoints cover to its end; a ledger or export whose checkpoints were deleted, or whose
  // tail was appended or rewritten after the last one, does not verify.
  bool allow_unsigned_tail = false;
  // Called on the verifying thread as verification goes: the stage ("chain", then for a live
  // ledger "dedup index"), how many entries of it are done, and how many there are (0: not known
  // in advance). Every 16,384 entries and at a stage's end; how often to print is the caller's.
  // Default: none.
  std::function<void(std::string_view stage, uint64_t done, uint64_t total)> progress;
};

struct VerifyReport {
  bool ok = true;
  // The first seq of what was verified: 1, or where an export slice starts.
  uint64_t first_seq = 1;
  uint64_t entries_checked = 0;
  uint64_t dedup_records_checked = 0;
  uint64_t checkpoints_verified = 0;
  // The highest seq covered by a verified signed checkpoint (0: none). Entries after it are
  // chained but not yet signed.
  // A slice's vouched start counts: first_seq - 1 once its base checkpoint verified.
  uint64_t last_checkpoint_seq = 0;
  // Key rotation records followed (each signed by the key it replaces).
  uint64_t key_rotations = 0;
  Head head;
  // Where the key used for signatures came from: "given" (the auditor's), "ledger" (the key
  // stored in the ledger itself: proves consistency, not authorship) or "none".
  std::string key_source = "none";
  // When !ok: the first sequence number that cannot be trusted (0 if the problem is not an
  // entry) and what is wrong.
  uint64_t first_bad_seq = 0;
  std::string problem;

  // The first entry no verified signed checkpoint covers (head.seq + 1 when all are covered).
  uint64_t unsigned_from() const { return std::max(last_checkpoint_seq + 1, first_seq); }
  // How many entries no verified signed checkpoint covers.
  uint64_t unsigned_entries() const {
    return head.seq + 1 > unsigned_from() ? head.seq + 1 - unsigned_from() : 0;
  }
};

// Verifies the live ledger. `key` is the operator's first published public key as the auditor
// knows it (key rotations recorded in the ledger are followed from it); every entry must then
// be covered by a signed checkpoint unless options.allow_unsigned_tail. If null, the first key
// stored in the ledger is used (key_source "ledger": consistency, not authorship) and an
// unsigned tail is reported, not refused.
absl::StatusOr<VerifyReport> Verify(const Ledger& ledger, const SignatureVerifier* key = nullptr,
                                    const VerifyOptions& options = {});

// Verifies an export stream (see docs/LEDGER.md). `key` null: signatures are not checked
// (key_source "none") and the report says so. With a key, as Verify; a slice must also carry
// the signed checkpoint at its start.
absl::StatusOr<VerifyReport> VerifyExport(std::istream& in, const SignatureVerifier* key,
                                          const VerifyOptions& options = {});

}  // namespace gpuledger::ledger
