// A file system for RocksDB secondary instances that reads the database's CURRENT file once and
// then always answers with what it read, so that TryCatchUpWithPrimary() never switches to a
// new MANIFEST. See Ledger::Open: a writer's start (a new MANIFEST) is met by opening a new
// secondary instead.
//
// Why: RocksDB 7.8's catch-up across a MANIFEST switch (ManifestTailer::Initialize) builds on
// the column family's oldest live version, and asserts it is not the current one
// (BaseReferencedVersionBuilder, db/version_builder.cc:1365, `version_ != cfd->current()`);
// when it is, Debian's assertion-enabled build aborts the reader, and a release build would
// rebuild from the wrong base. Found by LedgerTest.ReadOnlyOpenSeesEveryCommitMadeBeforeItBegan
// (about one run in five). A fresh open reads a new MANIFEST in recovery mode, which is sound.
#pragma once

#include <memory>
#include <string>

namespace rocksdb {
class Env;
}  // namespace rocksdb

namespace gpuledger::ledger {

// Owned by one secondary instance (it must outlive the DB); thread-safe.
class PinnedCurrent {
 public:
  // For the database in directory `db_dir`.
  explicit PinnedCurrent(const std::string& db_dir);
  ~PinnedCurrent();

  // The Env to open the secondary with.
  rocksdb::Env* env() const;
  // The MANIFEST name the instance was pinned to (empty before RocksDB read CURRENT).
  std::string pinned() const;
  // True when the database's CURRENT file names another MANIFEST than the pinned one (a writer
  // started since): the instance no longer follows the writer and must be opened again.
  bool Moved() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpuledger::ledger
