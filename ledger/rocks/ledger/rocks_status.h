// The one conversion of RocksDB statuses to absl::Status, for every RocksDB store of gpuledger
// (the ledger, the validator's state store, the settlement store).
//
// Not a public header of gpuledger::ledger: it includes rocksdb/. Only modules that open a
// RocksDB store of their own link the helper target gpuledger::ledger_rocks, PRIVATE, and
// include it from their src/ (ledger/README.md).
#pragma once

#include <rocksdb/status.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace gpuledger::ledger {

// What a store tells its user about the failures they can act on. Each is a sentence fragment
// placed in the message; empty: a generic one.
struct RocksAdvice {
  // Another process (or another open in this process) holds the store's LOCK file.
  // Default: "another process holds its lock".
  absl::string_view locked;
  // The disk (or the space limit) is full. Default: "free space and start again".
  absl::string_view no_space;
};

// The mapping, the same for every store:
//   NotFound, or an IO error "path not found"         -> NOT_FOUND
//   Corruption                                        -> DATA_LOSS
//   NoSpace, SpaceLimit                               -> RESOURCE_EXHAUSTED ("the disk is full")
//   the LOCK file held by another process or open     -> FAILED_PRECONDITION (it stays so until
//                                                        the other one stops: retrying is futile)
//   Busy, TryAgain, TimedOut, other IO errors         -> UNAVAILABLE
//   InvalidArgument                                   -> INVALID_ARGUMENT
//   anything else (NotSupported, Aborted, ...)        -> INTERNAL
// The message starts with `what`, which names the store and the operation ("settlement store:
// write"), and keeps RocksDB's own text.
absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what,
                       const RocksAdvice& advice = {});

// True if `s` says the store's LOCK file is held (by another process or another open here).
bool IsHeldLock(const rocksdb::Status& s);

}  // namespace gpuledger::ledger
