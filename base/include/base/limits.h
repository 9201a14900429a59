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

// --- The ledger (ledger/src/ledger.cc) --------------------------------------------------------

// Memtables of all the ledger's column families together (one RocksDB WriteBufferManager): a
// group commit of several thousand entries is a few MB; 128 MiB lets a flush run beside writes
// without a stall, and does not grow with the ledger.
inline constexpr size_t kLedgerMemtableBytesMax = 128 * kMiB;

// The ledger's block cache, where index and filter blocks are charged too (BoundedTables,
// ledger/rocks_options.h): they would otherwise stay in memory outside any cache, hundreds of MB
// for a 50M-entry ledger. Reads are mostly sequential (scans, replay), so a small cache serves.
inline constexpr size_t kLedgerBlockCacheBytes = 64 * kMiB;

// Write-ahead log kept before column families written rarely are flushed (disk, not memory):
// they would otherwise pin old WAL files forever, and every open would replay them.
inline constexpr size_t kLedgerWalBytesMax = 256 * kMiB;

// Disjoint ranges of producer sequence numbers tracked above the contiguous prefix, per
// producer (ledger/producers.h, about 16 bytes each): past it the tracker stops recording
// out-of-order arrivals and says so. ProducerProgress::kMaxRanges, asserted equal in
// ledger/src/producers.cc (its header is included everywhere; a change here is a rebuild).
inline constexpr size_t kProducerRangesMax = 65'536;

// --- The validator's state store (ingest/src/hold_store.cc) -----------------------------------

// One memtable, and how many: fixed memory however large the store grows.
inline constexpr size_t kHoldStoreMemtableBytes = 32 * kMiB;
inline constexpr int kHoldStoreMemtables = 2;
// Index, filter and data blocks; the bloom filter serves the point reads by holder.
inline constexpr size_t kHoldStoreBlockCacheBytes = 64 * kMiB;
// Write-ahead log before a flush is forced (disk).
inline constexpr size_t kHoldStoreWalBytesMax = 64 * kMiB;

// The validator's in-memory index of recent intervals per allocation, in front of its state
// store (ingest/src/recent_intervals.h): some 250,000 intervals at ~250 bytes each (with event
// ids of 20-40 bytes), a month of hourly usage of about 350 nodes, so that the overlap check of
// nearly every usage event is answered from memory; beyond it the oldest intervals of the least
// recently checked allocations go, and a check that needs them reads the store. Small next to
// the 512 MiB peak RSS target (issue 15).
inline constexpr size_t kRecentIntervalsBytes = 64 * kMiB;

// --- The settlement store (settlement/src/store.cc) -------------------------------------------

// Write-ahead log before a flush is forced (disk).
inline constexpr size_t kSettlementWalBytesMax = 64 * kMiB;
// One memtable, and how many: the engine sums GPU-ms counters in memory and writes them once
// per batch of 20,000 entries, so a batch's writes are a few MB at most.
inline constexpr size_t kSettlementMemtableBytes = 32 * kMiB;
inline constexpr int kSettlementMemtables = 2;
// Index, filter and data blocks (BoundedTables, as the ledger's), so that they do not grow
// outside any cache with the store.
inline constexpr size_t kSettlementBlockCacheBytes = 32 * kMiB;

// A catch-up of the settlement store (settle, serve, audit replay; settlement/src/engine.cc) reads
// the ledger on a second thread ahead of the engine, in batches of this many entries, with at most
// this many bytes of entries (serialized and parsed) queued between the two threads.
inline constexpr size_t kCatchUpReadAheadBatchEntries = 1'024;
inline constexpr size_t kCatchUpReadAheadBytesMax = 8 * kMiB;

// --- Kafka (ingest) -----------------------------------------------------------------------------

// librdkafka's prefetch per consumed partition: at most this many KiB
// (`queued.max.messages.kbytes`, which wins over the count) and, once this many messages are
// queued, no further fetch (`queued.min.messages`); both set in ingest/src/ingestor.cc.
// librdkafka's defaults (64 MiB and 100,000 messages) and our earlier 16 MiB were most of
// ingest's growth: a heap profile of a 3M-event ingest had 171 MiB in librdkafka (queued messages
// and fetch buffers, 13 partitions), and its peak RSS at 4M events was 574 MiB. 4 MiB gave 429 MiB
// at the same speed then. With the loop faster (decode on the second core), a count of 20,000
// starved it: the same 1M-event ingest took 17.9 s with 20,000 and 16.9 s with 100,000, at the
// same peak (docs/BENCHMARKS.md, "Ingest: decode on the second core"); 16 MiB took 14.9 s but
// 35 MiB more at 1M events, which the 512 MiB target cannot spare.
inline constexpr size_t kKafkaPrefetchKiBPerPartitionMax = 4'096;
inline constexpr int kKafkaPrefetchMessagesPerPartitionMax = 100'000;

// The ingest loop consumes a window of messages ahead of the one it decides and records, which a
// second thread decodes meanwhile (ingest/src/decode_ahead.h): two windows are in memory, each
// at most this many messages and, counting their payloads, about this many bytes (a window is
// closed once it reaches it; the decoded events add about as much again). 1,024 messages are
// some 20 ms of the loop's work, so the hand-over (a lock and a wake-up) is rare next to it.
inline constexpr size_t kIngestWindowMessagesMax = 1'024;
inline constexpr size_t kIngestWindowBytesMax = 4 * kMiB;

// Rejected-event notices waiting for delivery to gpuledger.rejected
// (ingest/src/rejected_notifier.h); beyond it Send() waits, bounded, for room.
inline constexpr int kRejectedQueueMessagesMax = 100'000;

// --- serve (api/include/api/service.h) ----------------------------------------------------------

// The cache of rendered documents: when an entry would exceed either bound the cache is emptied
// first. A month's documents for every institution are a few MB. kMaxCachedDocuments and
// kMaxCachedDocumentBytes in api/service.h, asserted equal in api/src/service.cc.
inline constexpr size_t kServeDocumentCacheDocumentsMax = 1'000;
inline constexpr size_t kServeDocumentCacheBytesMax = 64 * kMiB;

// --- Verification (ledger/src/chain_pipeline.h) -----------------------------------------------

// Entries handed to a hashing thread at a time. Large enough that the hand-over (a lock, a
// wake-up) is rare next to the hashing (about a thousand entries of the usual 200-300 bytes);
// small enough that the check starts soon after the reader.
inline constexpr size_t kVerifyBatchBytesMax = 256 * kKiB;

// Entries read ahead of the chain check, counting each entry's bytes and its record (their parsed
// messages, in each batch's arena, add about as much again). The reader waits for the check
// beyond it, so a verification's memory does not grow with the ledger.
inline constexpr size_t kVerifyInFlightBytesMax = 8 * kMiB;

// Threads that hash and parse entries beside the one that reads and checks them: one, so that
// with the reader both cores of the reference machine are busy.
inline constexpr int kVerifyHashThreads = 1;

}  // namespace gpuledger::limits
