// RocksDB settings every gpuledger store shares (the ledger, the validator's state store, the
// settlement store).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace rocksdb {
class ColumnFamilyHandle;
class DB;
class Logger;
class TableFactory;
}  // namespace rocksdb

namespace gpuledger::ledger {

// RocksDB's informational log, sent to gpuledger's log (spdlog, stderr) instead of a LOG file in
// the database directory: on a full disk that file cannot be written either, and Debian's
// assertion-enabled RocksDB aborts the process when its error handler then tries to log the
// write failure to it. Only warnings and worse are passed on. `what` names the store in each
// line ("ledger", "settlement store", ...).
std::shared_ptr<rocksdb::Logger> RocksLogger(const char* what);

// Block-based tables whose memory does not grow with the store: index and filter blocks are
// charged to a fixed LRU cache of `cache_bytes` (by default they stay in memory outside any
// cache, hundreds of MB for a 50M-entry ledger), partitioned (RocksDB's two-level index: a large
// table's whole index would not fit one cache shard and would be read and decompressed again
// on every seek) in a few large shards; a bloom filter answers most "not there" lookups (new
// events in the dedup index) without a read.
std::shared_ptr<rocksdb::TableFactory> BoundedTables(size_t cache_bytes);

// What one store holds in memory, by RocksDB's own accounting (docs/OPERATIONS.md, "Memory"):
// memtables (active, immutable and pinned), table readers (per open table file, outside the
// cache) and the block cache (index, filter and data blocks; `block_cache_pinned` of it cannot
// be evicted). Each store's column families share one cache.
struct StoreMemory {
  uint64_t memtables = 0;
  uint64_t table_readers = 0;
  uint64_t block_cache = 0;
  uint64_t block_cache_pinned = 0;
};
StoreMemory MemoryOf(rocksdb::DB* db, const std::vector<rocksdb::ColumnFamilyHandle*>& cfs);

}  // namespace gpuledger::ledger
