#include "chain_check.h"

#include "absl/strings/str_cat.h"
#include "ledger/ledger.h"

namespace gpuledger::ledger {

namespace v1 = gpuledger::v1;

ChainCheck::ChainCheck(VerifyReport* report, uint64_t first_seq, const Digest& prev_hash,
                       const SignatureVerifier* key, uint64_t interval, bool track_identities)
    : r_(report),
      next_(first_seq),
      prev_(prev_hash),
      key_(key),
      interval_(interval),
      track_identities_(track_identities) {}

void ChainCheck::Fail(uint64_t seq, std::string problem) {
  if (!r_->ok) return;  // keep the first problem
  r_->ok = false;
  r_->first_bad_seq = seq;
  r_->problem = std::move(problem);
}

bool ChainCheck::CheckCheckpointAgainst(const v1::Checkpoint& cp, const Digest& hash) {
  // A rewritten tail can be re-chained, but not re-signed: everything after the last good
  // checkpoint is suspect.
  const uint64_t suspect_from = r_->last_checkpoint_seq + 1;
  if (interval_ != 0 && cp.interval() != interval_) {
    Fail(suspect_from, absl::StrCat("checkpoint at seq ", cp.seq(), " says interval ",
                                    cp.interval(), ", the ledger says ", interval_));
    return false;
  }
  if (key_ != nullptr) {
    if (cp.key_id() != ToBytes(key_->KeyId())) {
      Fail(suspect_from, absl::StrCat("checkpoint at seq ", cp.seq(),
                                      " was signed by another key than the one given"));
      return false;
    }
    if (!key_->Verify(CheckpointMessage(cp), cp.signature())) {
      Fail(suspect_from, absl::StrCat("checkpoint at seq ", cp.seq(), " has an invalid signature"));
      return false;
    }
  }
  if (cp.head_hash() != ToBytes(hash)) {
    Fail(suspect_from, absl::StrCat("entries ", suspect_from, "..", cp.seq(),
                                    " do not match the signed checkpoint at seq ", cp.seq(),
                                    ": they were rewritten after it was signed"));
    return false;
  }
  if (key_ != nullptr) {
    ++r_->checkpoints_verified;
    r_->last_checkpoint_seq = cp.seq();
  }
  if (awaiting_ == cp.seq()) awaiting_ = 0;
  return true;
}

bool ChainCheck::ResolveAwaiting() {
  if (awaiting_ == 0) return true;
  Fail(r_->last_checkpoint_seq + 1, absl::StrCat("the checkpoint due at seq ", awaiting_,
                                                 " (every ", interval_, " entries) is missing"));
  return false;
}

bool ChainCheck::Entry(uint64_t seq, const std::string& bytes, const Digest& stored_hash) {
  if (!r_->ok || !ResolveAwaiting()) return false;
  if (seq != next_) {
    Fail(next_, seq > next_ ? absl::StrCat("entry ", next_, " is missing (next present: ", seq, ")")
                            : absl::StrCat("entry ", seq, " appears out of order"));
    return false;
  }
  v1::LedgerEntry entry;
  if (!entry.ParseFromString(bytes)) {
    Fail(seq, "entry bytes do not parse as a LedgerEntry");
    return false;
  }
  if (entry.seq() != seq) {
    Fail(seq, absl::StrCat("entry stored under seq ", seq, " says seq ", entry.seq()));
    return false;
  }
  const Digest hash = ChainHash(prev_, seq, bytes);
  if (hash != stored_hash) {
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
    const bool ok = CheckCheckpointAgainst(it->second, hash);
    pending_.erase(it);
    return ok;
  }
  return true;
}

bool ChainCheck::Checkpoint(const v1::Checkpoint& cp) {
  if (!r_->ok) return false;
  if (cp.seq() + 1 == next_) return CheckCheckpointAgainst(cp, prev_);
  if (cp.seq() >= next_) {
    pending_[cp.seq()] = cp;
    return true;
  }
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
  }
}

}  // namespace gpuledger::ledger
