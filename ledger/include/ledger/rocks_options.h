// RocksDB settings every gpuledger store shares (the ledger, the validator's state store, the
// settlement store).
#pragma once

#include <cstddef>
#include <memory>

namespace rocksdb {
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

}  // namespace gpuledger::ledger
