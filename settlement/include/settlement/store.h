// The settlement store: a RocksDB database of derived state (live drafts, what each usage event
// contributed, frozen documents of closed periods). It is rebuilt from the ledger at any time;
// the ledger stays the system of record. Writes are staged in memory, in key order, where reads
// see them at once, and become durable together at Commit() (one RocksDB WriteBatch).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ledger/rocks_options.h"

namespace gpuledger::settlement {

struct StoreOptions {
  bool create_if_missing = true;
  bool read_only = false;
  // fsync at Commit. Default: true. Off for throw-away replay stores.
  bool sync = true;
};

// One process writes a store at a time (RocksDB's lock). Not thread-safe.
class Store {
 public:
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path,
                                                     const StoreOptions& options);
  // Deletes the store at `path` (RocksDB's files only). It must not be open.
  static absl::Status Destroy(const std::string& path);
  ~Store();

  // Staged writes are visible to Get and Scan before Commit.
  std::optional<std::string> Get(std::string_view key);
  void Put(std::string_view key, std::string_view value);
  void Delete(std::string_view key);
  // Calls visit(key, value) for each key starting with `prefix`, in key order, until it returns
  // false.
  void Scan(std::string_view prefix,
            const std::function<bool(std::string_view key, std::string_view value)>& visit);
  // The same, from the first key at or after `from` (which starts with `prefix`).
  void Scan(std::string_view prefix, std::string_view from,
            const std::function<bool(std::string_view key, std::string_view value)>& visit);

  // Counters: 16-byte big-endian signed 128-bit values (settlement/src/keys.h). A value of
  // another size is a read error (reported at Commit) and reads as 0.
  __int128 GetInt(std::string_view key);
  // Stores `value`, or deletes the key when it is 0.
  void PutInt(std::string_view key, __int128 value);

  // Writes every staged change atomically. Also reports the first read error since the last
  // Commit (reads cannot fail silently: a failed read poisons the batch).
  absl::Status Commit();
  // Drops every staged change and any read error noted since the last Commit.
  void Rollback();
  size_t staged() const;
  // What RocksDB holds in memory for the store, and the staged writes' keys and values in bytes.
  ledger::StoreMemory Memory() const;
  uint64_t staged_bytes() const;
  const std::string& path() const;

 private:
  struct Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpuledger::settlement
