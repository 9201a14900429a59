#include "ledger/rocks_status.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace gpuledger::ledger {

bool IsHeldLock(const rocksdb::Status& s) {
  if (!s.IsIOError()) return false;
  // RocksDB 7.8 has no subcode for it: PosixFileSystem::LockFile says "While lock file: PATH:
  // <strerror>" (another process) or "lock hold by current process, ..." (another open here).
  const std::string text = s.ToString();
  return absl::StrContains(text, "While lock file") ||
         absl::StrContains(text, "lock hold by current process");
}

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what,
                       const RocksAdvice& advice) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": ", s.ToString());
  if (s.IsNotFound() || s.IsPathNotFound()) return absl::NotFoundError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsNoSpace() || s.subcode() == rocksdb::Status::kSpaceLimit) {
    return absl::ResourceExhaustedError(
        absl::StrCat(msg, " -- the disk is full: ",
                     advice.no_space.empty() ? "free space and start again" : advice.no_space));
  }
  if (IsHeldLock(s)) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": ", advice.locked.empty() ? "another process holds its lock" : advice.locked, " (",
        s.ToString(), ")"));
  }
  if (s.IsBusy() || s.IsTryAgain() || s.IsTimedOut() || s.IsIOError()) {
    return absl::UnavailableError(msg);
  }
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  return absl::InternalError(msg);
}

}  // namespace gpuledger::ledger
