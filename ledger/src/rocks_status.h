// The one place where RocksDB statuses become absl::Status.
#pragma once

#include <rocksdb/status.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace gpuledger::ledger {

inline absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsNoSpace() || s.subcode() == rocksdb::Status::kSpaceLimit) {
    return absl::ResourceExhaustedError(absl::StrCat(
        msg,
        " -- the disk is full: what was being written is not recorded; free space and start "
        "again (ingest resumes from the offsets stored with the last recorded batch)"));
  }
  if (s.IsBusy() || s.IsTryAgain() || s.IsTimedOut()) return absl::UnavailableError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  if (s.IsIOError()) {
    // RocksDB reports a held LOCK file as an IO error; name the real cause.
    if (s.ToString().find("lock") != std::string::npos) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, ": the ledger is already open for writing by another process (",
                       s.ToString(), "); only one writer may run per ledger"));
    }
    return absl::UnavailableError(msg);
  }
  return absl::InternalError(msg);
}

}  // namespace gpuledger::ledger
