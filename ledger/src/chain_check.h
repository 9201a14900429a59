// Incremental chain verification shared by the live-ledger and export verifiers. Fed entries in
// seq order and checkpoints (before their entry, or right after it); keeps the first failure.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "chain_pipeline.h"
#include "gpuledger/v1/ledger.pb.h"
#include "ledger/signing.h"
#include "ledger/verify.h"

namespace gpuledger::ledger {

class ChainCheck {
 public:
  // `report` outlives the check. `key` may be null (signatures then cannot be checked); it is
  // the first key, and key rotation records switch to the key they name. With
  // `require_signed` (and a key), Finish() fails unless verified checkpoints cover the head.
  ChainCheck(VerifyReport* report, uint64_t first_seq, const Digest& prev_hash,
             const SignatureVerifier* key, uint64_t interval, bool track_identities,
             bool require_signed);

  // Returns false once verification has failed (the caller may stop reading). A slice (with a
  // key) must give the checkpoint at first_seq - 1 before its first entry, which vouches for
  // prev_hash, and before that the key rotations recorded earlier.
  // `item` comes from ChainPipeline: its hash was computed on the stored hash of the entry
  // before it, and is used when that is the hash the check has verified (else it hashes again).
  bool Entry(const ChainItem& item);
  bool Checkpoint(const gpuledger::v1::Checkpoint& cp);
  // Call after the last entry; `head` is the ledger's head if known (live), else the last entry.
  void Finish(const Head& head);

  const Digest& last_hash() const { return prev_; }
  uint64_t last_seq() const { return next_ - 1; }

 private:
  void Fail(uint64_t seq, std::string problem);
  bool CheckCheckpointAgainst(const gpuledger::v1::Checkpoint& cp, const Digest& hash);
  bool CheckSignature(const gpuledger::v1::Checkpoint& cp, uint64_t suspect_from);
  bool ResolveAwaiting();
  // A key rotation before a slice's first entry: its signature is checked and followed; its
  // head hash cannot be (those entries are not there).
  bool EarlierRotation(const gpuledger::v1::Checkpoint& rotation);

  VerifyReport* r_;
  uint64_t next_;
  Digest prev_;
  const SignatureVerifier* key_;  // the key in force: the first, or the last rotation's
  std::vector<std::unique_ptr<SignatureVerifier>> rotated_keys_;
  std::unique_ptr<SignatureVerifier> next_key_;  // named by the record being checked
  uint64_t interval_;
  bool track_identities_;
  bool require_signed_;
  // Checkpoints ahead of the walk, several per seq in order (a checkpoint, then rotations).
  std::map<uint64_t, std::vector<gpuledger::v1::Checkpoint>> pending_;
  uint64_t awaiting_ = 0;  // a seq that must have a checkpoint and has none yet
  std::unordered_set<std::string> identities_;
};

}  // namespace gpuledger::ledger
