// Every memory bound of gpuledger in one place, as TigerBeetle's constants.zig: each cache,
// buffer and queue, named with its unit, with the reason for its number. A process's resident
// memory is about the sum of the bounds of what it opens (docs/OPERATIONS.md, docs/BENCHMARKS.md
// "Memory and scaling"); anything that grows without one of these is a bug.
//
// Bounds on the *fields* of outside input (ids, names, times, counts) are not memory bounds and
// stay next to the code that checks them: ingest/include/ingest/limits.h (every field of a
// usage or registry event) and api/include/api/limits.h (HTTP requests).
#pragma once

#include <cstddef>
#include <cstdint>

namespace gpuledger::limits {

inline constexpr size_t kMiB = size_t{1} << 20;
inline constexpr size_t kKiB = size_t{1} << 10;

// --- Verification (ledger/src/chain_pipeline.h) -----------------------------------------------

// Entries handed to a hashing thread at a time. Large enough that the hand-over (a lock, a
// wake-up) is rare next to the hashing (about a thousand entries of the usual 200-300 bytes);
// small enough that the check starts soon after the reader.
inline constexpr size_t kVerifyBatchBytesMax = 256 * kKiB;

// Entries read ahead of the chain check, counting each entry's bytes and its record (its parsed
// LedgerEntry adds about as much again). The reader waits for the check beyond it, so a
// verification's memory does not grow with the ledger.
inline constexpr size_t kVerifyInFlightBytesMax = 8 * kMiB;

// Threads that hash and parse entries beside the one that reads and checks them: one, so that
// with the reader both cores of the reference machine are busy.
inline constexpr int kVerifyHashThreads = 1;

}  // namespace gpuledger::limits
