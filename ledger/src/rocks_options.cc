#include "ledger/rocks_options.h"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <spdlog/spdlog.h>

#include <cstdarg>
#include <cstdio>
#include <string>

namespace gpuledger::ledger {

namespace {

class SpdlogLogger : public rocksdb::Logger {
 public:
  explicit SpdlogLogger(const char* what)
      : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL), what_(what) {}

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel()) return;
    char buf[1024];
    va_list copy;
    va_copy(copy, ap);
    std::vsnprintf(buf, sizeof(buf), format, copy);
    va_end(copy);
    if (level >= rocksdb::InfoLogLevel::ERROR_LEVEL) {
      spdlog::error("rocksdb ({}): {}", what_, buf);
    } else {
      spdlog::warn("rocksdb ({}): {}", what_, buf);
    }
  }

 private:
  std::string what_;
};

}  // namespace

std::shared_ptr<rocksdb::Logger> RocksLogger(const char* what) {
  return std::make_shared<SpdlogLogger>(what);
}

std::shared_ptr<rocksdb::TableFactory> BoundedTables(size_t cache_bytes) {
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(cache_bytes, /*num_shard_bits=*/2);
  table.cache_index_and_filter_blocks = true;
  table.cache_index_and_filter_blocks_with_high_priority = true;
  // Pinned: only each table's top-level index into its index and filter partitions (a few KiB
  // per table). The partitions themselves stay in the cache as high-priority blocks that can be
  // evicted. Pinning L0's partitions (pin_l0_filter_and_index_blocks_in_cache) pinned them for
  // good in the ledger: its entries are written in key order, so flushed tables move down the
  // levels without being rewritten and keep the table reader that pinned them. The pinned part
  // then outgrew the cache's bound by about 3 MiB per million entries (docs/BENCHMARKS.md,
  // "Memory").
  table.metadata_cache_options.top_level_index_pinning = rocksdb::PinningTier::kAll;
  table.metadata_cache_options.partition_pinning = rocksdb::PinningTier::kNone;
  table.metadata_cache_options.unpartitioned_pinning = rocksdb::PinningTier::kNone;
  table.index_type = rocksdb::BlockBasedTableOptions::kTwoLevelIndexSearch;
  table.partition_filters = true;
  table.metadata_block_size = 4096;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  return std::shared_ptr<rocksdb::TableFactory>(rocksdb::NewBlockBasedTableFactory(table));
}

StoreMemory MemoryOf(rocksdb::DB* db, const std::vector<rocksdb::ColumnFamilyHandle*>& cfs) {
  StoreMemory m;
  for (rocksdb::ColumnFamilyHandle* cf : cfs) {
    uint64_t v = 0;
    if (db->GetIntProperty(cf, rocksdb::DB::Properties::kSizeAllMemTables, &v)) m.memtables += v;
    if (db->GetIntProperty(cf, rocksdb::DB::Properties::kEstimateTableReadersMem, &v)) {
      m.table_readers += v;
    }
  }
  // One cache for every column family: read it once.
  rocksdb::ColumnFamilyHandle* first = cfs.empty() ? db->DefaultColumnFamily() : cfs.front();
  (void)db->GetIntProperty(first, rocksdb::DB::Properties::kBlockCacheUsage, &m.block_cache);
  (void)db->GetIntProperty(first, rocksdb::DB::Properties::kBlockCachePinnedUsage,
                           &m.block_cache_pinned);
  return m;
}

}  // namespace gpuledger::ledger
