#include "settlement/store.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <filesystem>
#include <map>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "base/limits.h"
#include "keys.h"
#include "ledger/rocks_options.h"
#include "ledger/rocks_status.h"

namespace gpuledger::settlement {

// The store's advice on ledger::FromRocks, the one conversion of every store.
constexpr ledger::RocksAdvice kStoreAdvice{
    .locked =
        "in use by another gpuledger process (a running `gpuledger serve` owns it: read "
        "the documents from its API, or stop it first)",
    .no_space = "free space and run the command again (the store catches up from the ledger)"};

struct Store::Impl {
  std::string path;
  StoreOptions options;
  std::unique_ptr<rocksdb::DB> db;
  // Staged writes: key → value (nullopt: deleted), in key order. Reads look here first. At
  // Commit they become one WriteBatch in key order, which RocksDB's memtable inserts faster than
  // the order they were made in (most are new per-event records, one or two per entry).
  std::map<std::string, std::optional<std::string>, std::less<>> staged;
  absl::Status read_error;

  void NoteReadError(const rocksdb::Status& s) {
    if (read_error.ok()) read_error = ledger::FromRocks(s, "settlement store read", kStoreAdvice);
  }
};

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() {
  // A clean close flushes the memtable, so that the next open does not replay the WAL.
  if (impl_ && impl_->db && !impl_->options.read_only) {
    (void)impl_->db->Flush(rocksdb::FlushOptions());
  }
}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path,
                                                   const StoreOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->options = options;
  rocksdb::Options ro;
  ro.create_if_missing = options.create_if_missing;
  ro.max_total_wal_size = limits::kSettlementWalBytesMax;
  ro.write_buffer_size = limits::kSettlementMemtableBytes;
  ro.max_write_buffer_number = limits::kSettlementMemtables;
  ro.table_factory = ledger::BoundedTables(limits::kSettlementBlockCacheBytes);
  ro.info_log = ledger::RocksLogger("settlement store");
  // RocksDB logs a missing directory as an error before creating it; a new store is normal.
  if (options.create_if_missing && !options.read_only) {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
  }
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = options.read_only ? rocksdb::DB::OpenForReadOnly(ro, path, &db)
                                        : rocksdb::DB::Open(ro, path, &db);
  if (!s.ok()) {
    if (s.IsInvalidArgument() || s.IsPathNotFound()) {
      return absl::NotFoundError(
          absl::StrCat("no settlement store at ", path, " (", s.ToString(), ")"));
    }
    return ledger::FromRocks(s,
                             ledger::IsHeldLock(s)
                                 ? absl::StrCat("settlement store ", path)
                                 : absl::StrCat("cannot open settlement store ", path),
                             kStoreAdvice);
  }
  impl->db.reset(db);
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

std::optional<std::string> Store::Get(std::string_view key) {
  if (auto it = impl_->staged.find(key); it != impl_->staged.end()) return it->second;
  std::string value;
  rocksdb::Status s =
      impl_->db->Get(rocksdb::ReadOptions(), rocksdb::Slice(key.data(), key.size()), &value);
  if (s.IsNotFound()) return std::nullopt;
  if (!s.ok()) {
    impl_->NoteReadError(s);
    return std::nullopt;
  }
  return value;
}

void Store::Put(std::string_view key, std::string_view value) {
  auto it = impl_->staged.lower_bound(key);
  if (it != impl_->staged.end() && it->first == key) {
    it->second.emplace(value);
  } else {
    impl_->staged.emplace_hint(it, std::string(key), std::string(value));
  }
}

void Store::Delete(std::string_view key) {
  auto it = impl_->staged.lower_bound(key);
  if (it != impl_->staged.end() && it->first == key) {
    it->second.reset();
  } else {
    impl_->staged.emplace_hint(it, std::string(key), std::nullopt);
  }
}

// The stored keys under `prefix` merged with the staged ones (a staged key hides the stored one;
// a staged delete hides it altogether).
void Store::Scan(std::string_view prefix,
                 const std::function<bool(std::string_view, std::string_view)>& visit) {
  Scan(prefix, prefix, visit);
}

void Store::Scan(std::string_view prefix, std::string_view from,
                 const std::function<bool(std::string_view, std::string_view)>& visit) {
  if (from < prefix) from = prefix;
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(rocksdb::ReadOptions()));
  const rocksdb::Slice p(prefix.data(), prefix.size());
  auto staged = impl_->staged.lower_bound(from);
  auto staged_in_prefix = [&] {
    return staged != impl_->staged.end() && std::string_view(staged->first).starts_with(prefix);
  };
  it->Seek(rocksdb::Slice(from.data(), from.size()));
  while (true) {
    const bool stored = it->Valid() && it->key().starts_with(p);
    const bool pending = staged_in_prefix();
    if (!stored && !pending) break;
    const int order = !stored    ? 1
                      : !pending ? -1
                                 : it->key().compare(rocksdb::Slice(staged->first));
    if (order < 0) {
      if (!visit(it->key().ToStringView(), it->value().ToStringView())) break;
      it->Next();
      continue;
    }
    if (order == 0) it->Next();  // the staged value replaces the stored one
    const auto& [key, value] = *staged;
    ++staged;
    if (value && !visit(key, *value)) break;
  }
  if (!it->status().ok()) impl_->NoteReadError(it->status());
}

__int128 Store::GetInt(std::string_view key) {
  auto v = Get(key);
  if (!v) return 0;
  const auto out = keys::DecodeI128(*v);
  if (!out) {
    impl_->NoteReadError(rocksdb::Status::Corruption("a counter of the wrong size"));
    return 0;
  }
  return *out;
}

void Store::PutInt(std::string_view key, __int128 value) {
  if (value == 0) {
    Delete(key);
  } else {
    Put(key, keys::EncodeI128(value));
  }
}

absl::Status Store::Destroy(const std::string& path) {
  rocksdb::Status s = rocksdb::DestroyDB(path, rocksdb::Options());
  return ledger::FromRocks(s, absl::StrCat("cannot delete settlement store ", path), kStoreAdvice);
}

absl::Status Store::Commit() {
  if (!impl_->read_error.ok()) {
    absl::Status st = impl_->read_error;
    impl_->read_error = absl::OkStatus();
    impl_->staged.clear();
    return st;
  }
  if (impl_->options.read_only) {
    impl_->staged.clear();
    return absl::OkStatus();
  }
  rocksdb::WriteBatch batch;
  for (const auto& [key, value] : impl_->staged) {
    (void)(value ? batch.Put(key, *value) : batch.Delete(key));
  }
  impl_->staged.clear();
  rocksdb::WriteOptions wo;
  wo.sync = impl_->options.sync;
  rocksdb::Status s = impl_->db->Write(wo, &batch);
  return ledger::FromRocks(s, "settlement store write", kStoreAdvice);
}

void Store::Rollback() {
  impl_->staged.clear();
  impl_->read_error = absl::OkStatus();
}

size_t Store::staged() const { return impl_->staged.size(); }

ledger::StoreMemory Store::Memory() const {
  return ledger::MemoryOf(impl_->db.get(), {impl_->db->DefaultColumnFamily()});
}

uint64_t Store::staged_bytes() const {
  // Walks the staged writes: for a progress line now and then, not for every entry.
  uint64_t bytes = 0;
  for (const auto& [key, value] : impl_->staged) bytes += key.size() + (value ? value->size() : 0);
  return bytes;
}

const std::string& Store::path() const { return impl_->path; }

}  // namespace gpuledger::settlement
