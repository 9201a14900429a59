#include "chain_check.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "ledger/ledger.h"

namespace gpuledger::ledger {

namespace v1 = gpuledger::v1;

ChainCheck::ChainCheck(VerifyReport* report, uint64_t first_seq, const Digest& prev_hash,
                       const SignatureVerifier* key, uint64_t interval, bool track_identities,
                       bool require_signed)
    : r_(report),
      next_(first_seq),
      prev_(prev_hash),
      key_(key),
      interval_(interval),
      track_identities_(track_identities),
      require_signed_(require_signed) {
  r_->first_seq = first_seq;
}

void ChainCheck::Fail(uint64_t seq, std::string problem) {
  if (!r_->ok) return;  // keep the first problem
  r_->ok = false;
  r_->first_bad_seq = seq;
  r_->problem = std::move(problem);
}

// Checks the signature of a checkpoint or rotation record with the key in force; a rotation's
// next key is parsed into next_key_.
bool ChainCheck::CheckSignature(const v1::Checkpoint& cp, uint64_t suspect_from) {
  next_key_.reset();
  if (!cp.next_public_key_pem().empty()) {
    auto next = SignatureVerifier::FromPublicKeyPem(cp.next_public_key_pem());
    if (!next.ok()) {
      Fail(suspect_from,
           absl::StrCat("key rotation at seq ", cp.seq(), " does not name an Ed25519 public key"));
      return false;
    }
    next_key_ = *std::move(next);
  }
  if (key_ == nullptr) return true;
  if (cp.key_id() != ToBytes(key_->KeyId())) {
    Fail(suspect_from,
         absl::StrCat(next_key_ ? "key rotation" : "checkpoint", " at seq ", cp.seq(),
                      " was signed by another key than the one in force (give the first "
                      "published key: key rotations recorded in the ledger are followed from it)"));
    return false;
  }
  const std::string message =
      next_key_ ? KeyRotationMessage(cp, next_key_->KeyId()) : CheckpointMessage(cp);
  if (!key_->Verify(message, cp.signature())) {
    Fail(suspect_from, absl::StrCat(next_key_ ? "key rotation" : "checkpoint", " at seq ", cp.seq(),
                                    " has an invalid signature"));
    return false;
  }
  return true;
}

bool ChainCheck::CheckCheckpointAgainst(const v1::Checkpoint& cp, const Digest& hash) {
  // A rewritten tail can be re-chained, but not re-signed: everything after the last good
  // checkpoint is suspect.
  const uint64_t suspect_from = std::max(r_->last_checkpoint_seq + 1, r_->first_seq);
  if (interval_ != 0 && cp.interval() != interval_) {
    Fail(suspect_from, absl::StrCat("checkpoint at seq ", cp.seq(), " says interval ",
                                    cp.interval(), ", the ledger says ", interval_));
    return false;
  }
  if (!CheckSignature(cp, suspect_from)) return false;
  if (cp.head_hash() != ToBytes(hash)) {
    Fail(suspect_from, absl::StrCat("entries ", suspect_from, "..", cp.seq(),
                                    " do not match the signed checkpoint at seq ", cp.seq(),
                                    ": they were rewritten after it was signed"));
    return false;
  }
  if (key_ != nullptr) {
    ++r_->checkpoints_verified;
    r_->last_checkpoint_seq = cp.seq();
    // A header or ledger that says "interval 0" cannot switch off the periodic check: the
    // interval a signed checkpoint states is the ledger's.
    if (interval_ == 0) interval_ = cp.interval();
    if (next_key_) {
      ++r_->key_rotations;
      key_ = next_key_.get();
      rotated_keys_.push_back(std::move(next_key_));
    }
  }
  if (awaiting_ == cp.seq()) awaiting_ = 0;
  return true;
}

bool ChainCheck::EarlierRotation(const v1::Checkpoint& rotation) {
  if (!CheckSignature(rotation, next_)) return false;
  if (key_ != nullptr) {
    ++r_->key_rotations;
    key_ = next_key_.get();
    rotated_keys_.push_back(std::move(next_key_));
  }
  return true;
}

bool ChainCheck::ResolveAwaiting() {
  if (awaiting_ == 0) return true;
  Fail(r_->last_checkpoint_seq + 1, absl::StrCat("the checkpoint due at seq ", awaiting_,
                                                 " (every ", interval_, " entries) is missing"));
  return false;
}

bool ChainCheck::Entry(const ChainItem& item) {
  const uint64_t seq = item.seq;
  if (!r_->ok || !ResolveAwaiting()) return false;
  if (seq != next_) {
    Fail(next_, seq > next_ ? absl::StrCat("entry ", next_, " is missing (next present: ", seq, ")")
                            : absl::StrCat("entry ", seq, " appears out of order"));
    return false;
  }
  // A slice's previous hash is whatever its maker wrote: only a signed checkpoint at the seq
  // before it makes it the ledger's.
  if (key_ != nullptr && seq == r_->first_seq && seq > 1 && r_->last_checkpoint_seq + 1 != seq) {
    Fail(seq, absl::StrCat("the slice starts at seq ", seq,
                           " but names no signed checkpoint at seq ", seq - 1,
                           " to vouch for its previous hash (export it again with this build: a "
                           "slice starts right after a signed checkpoint and carries it)"));
    return false;
  }
  if (!item.parsed) {
    Fail(seq, "entry bytes do not parse as a LedgerEntry");
    return false;
  }
  const v1::LedgerEntry& entry = *item.entry;
  if (entry.seq() != seq) {
    Fail(seq, absl::StrCat("entry stored under seq ", seq, " says seq ", entry.seq()));
    return false;
  }
  const Digest hash = item.prev_hash == prev_ ? item.chain_hash : ChainHash(prev_, seq, item.bytes);
  if (hash != item.stored_hash) {
    Fail(seq, "chain hash does not match the entry's bytes and its predecessor's hash");
    return false;
  }
  // An entry without an event id (input that did not decode) has no identity, even when its
  // source (the CSP of its topic) is known.
  if (track_identities_ && !entry.event_id().empty()) {
    const std::string id = absl::StrCat(entry.source_id(), std::string(1, '\0'), entry.event_id());
    const bool seen = identities_.contains(id);
    if (entry.reason_code() == kConflictingDuplicate || entry.resolves_seq() != 0) {
      if (!seen) {
        Fail(seq, entry.resolves_seq() != 0
                      ? "resolution of a parked event that was never recorded"
                      : "conflicting duplicate of an event id that was never recorded");
        return false;
      }
    } else if (seen) {
      Fail(seq, absl::StrCat("event (", entry.source_id(), ", ", entry.event_id(),
                             ") is recorded twice"));
      return false;
    } else {
      identities_.insert(id);
    }
  }
  prev_ = hash;
  ++next_;
  ++r_->entries_checked;
  if (interval_ != 0 && seq % interval_ == 0) awaiting_ = seq;
  if (auto it = pending_.find(seq); it != pending_.end()) {
    const std::vector<v1::Checkpoint> at_seq = std::move(it->second);
    pending_.erase(it);
    for (const v1::Checkpoint& cp : at_seq) {
      if (!CheckCheckpointAgainst(cp, hash)) return false;
    }
  }
  return true;
}

bool ChainCheck::Checkpoint(const v1::Checkpoint& cp) {
  if (!r_->ok) return false;
  if (cp.seq() + 1 == next_) return CheckCheckpointAgainst(cp, prev_);
  if (cp.seq() >= next_) {
    pending_[cp.seq()].push_back(cp);
    return true;
  }
  if (r_->entries_checked == 0 && !cp.next_public_key_pem().empty()) return EarlierRotation(cp);
  Fail(cp.seq(), absl::StrCat("checkpoint at seq ", cp.seq(), " is out of order"));
  return false;
}

void ChainCheck::Finish(const Head& head) {
  if (!r_->ok) return;
  if (!ResolveAwaiting()) return;
  if (!pending_.empty()) {
    Fail(pending_.begin()->first, absl::StrCat("a checkpoint names seq ", pending_.begin()->first,
                                               ", past the last entry ", next_ - 1));
    return;
  }
  if (head.seq != next_ - 1 || head.hash != prev_) {
    Fail(next_, absl::StrCat("head says seq ", head.seq, " but the chain ends at seq ", next_ - 1));
    return;
  }
  // A tail appended or rewritten after the last signed checkpoint chains as well as the real
  // one, and so does a ledger or export whose checkpoints were all deleted: with a key, only
  // what a verified signature covers is verified.
  if (require_signed_ && key_ != nullptr && r_->unsigned_entries() > 0) {
    const uint64_t from = r_->unsigned_from();
    Fail(from,
         absl::StrCat(
             "entries ", from, "..", head.seq, " (", r_->unsigned_entries(),
             ") are not covered by a signed checkpoint",
             r_->last_checkpoint_seq == 0
                 ? " (there is none)"
                 : absl::StrCat(" (the last verified one is at seq ", r_->last_checkpoint_seq, ")"),
             ": they may have been appended or rewritten by anyone with disk access. Verify a "
             "ledger whose writer stopped cleanly (it signs its head), or accept the tail "
             "knowingly with --allow-unsigned-tail"));
  }
}

}  // namespace gpuledger::ledger
