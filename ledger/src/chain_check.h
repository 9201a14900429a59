// Incremental chain verification shared by the live-ledger and export verifiers. Fed entries in
// seq order and checkpoints (before their entry, or right after it); keeps the first failure.
#pragma once

#include <map>
#include <string>
#include <unordered_set>

#include "gpuledger/v1/ledger.pb.h"
#include "ledger/signing.h"
#include "ledger/verify.h"

namespace gpuledger::ledger {

class ChainCheck {
 public:
  // `report` outlives the check. `key` may be null (signatures then cannot be checked).
  ChainCheck(VerifyReport* report, uint64_t first_seq, const Digest& prev_hash,
             const SignatureVerifier* key, uint64_t interval, bool track_identities);

  // Returns false once verification has failed (the caller may stop reading).
  bool Entry(uint64_t seq, const std::string& bytes, const Digest& stored_hash);
  bool Checkpoint(const gpuledger::v1::Checkpoint& cp);
  // Call after the last entry; `head` is the ledger's head if known (live), else the last entry.
  void Finish(const Head& head);

  const Digest& last_hash() const { return prev_; }
  uint64_t last_seq() const { return next_ - 1; }

 private:
  void Fail(uint64_t seq, std::string problem);
  bool CheckCheckpointAgainst(const gpuledger::v1::Checkpoint& cp, const Digest& hash);
  bool ResolveAwaiting();

  VerifyReport* r_;
  uint64_t next_;
  Digest prev_;
  const SignatureVerifier* key_;
  uint64_t interval_;
  bool track_identities_;
  std::map<uint64_t, gpuledger::v1::Checkpoint> pending_;  // checkpoints ahead of the walk
  uint64_t awaiting_ = 0;  // a seq that must have a checkpoint and has none yet
  std::unordered_set<std::string> identities_;
};

}  // namespace gpuledger::ledger
