// Helpers shared by the ledger's unit tests: candidates, filled ledgers, and raw access to the
// RocksDB underneath (as an attacker with disk access has).
#pragma once

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ledger/ledger.h"
#include "ledger/verify.h"

namespace gpuledger::ledger::testing_support {

namespace v1 = gpuledger::v1;

inline Candidate Usage(const std::string& event_id, const std::string& payload, int64_t offset) {
  Candidate c;
  c.source = v1::SOURCE_USAGE;
  c.payload = payload;
  c.topic = "gpuledger.usage.csp-a";
  c.partition = 0;
  c.offset = offset;
  c.recorded_at_ms = 1000 + offset;
  c.source_id = "csp-a";
  c.event_id = event_id;
  return c;
}

inline std::unique_ptr<Ledger> OpenOrDie(const std::string& path, LedgerOptions o = {}) {
  auto l = Ledger::Open(path, o);
  EXPECT_TRUE(l.ok()) << l.status();
  return l.ok() ? std::move(*l) : nullptr;
}

// Opens a ledger's RocksDB directly, as an attacker with disk access would.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    std::vector<std::string> names;
    EXPECT_TRUE(rocksdb::DB::ListColumnFamilies({}, path, &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
    for (const auto& n : names) cfs.push_back({n, {}});
    rocksdb::DB* raw = nullptr;
    EXPECT_TRUE(rocksdb::DB::Open({}, path, cfs, &handles_, &raw).ok());
    db_.reset(raw);
    for (size_t i = 0; i < names.size(); ++i) by_name_[names[i]] = handles_[i];
  }
  ~RawDb() {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
  }
  std::string Get(const std::string& cf, const std::string& key) {
    std::string v;
    EXPECT_TRUE(db_->Get({}, by_name_.at(cf), key, &v).ok()) << cf;
    return v;
  }
  void Put(const std::string& cf, const std::string& key, const std::string& value) {
    EXPECT_TRUE(db_->Put({}, by_name_.at(cf), key, value).ok());
  }
  void Delete(const std::string& cf, const std::string& key) {
    EXPECT_TRUE(db_->Delete({}, by_name_.at(cf), key).ok());
  }
  rocksdb::DB* db() { return db_.get(); }
  std::vector<std::string> Keys(const std::string& cf) {
    std::vector<std::string> keys;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator({}, by_name_.at(cf)));
    for (it->SeekToFirst(); it->Valid(); it->Next()) keys.push_back(it->key().ToString());
    return keys;
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::map<std::string, rocksdb::ColumnFamilyHandle*> by_name_;
};

inline std::string SeqKey(uint64_t seq) {
  std::string k;
  for (int i = 7; i >= 0; --i) k.push_back(static_cast<char>((seq >> (8 * i)) & 0xff));
  return k;
}

// Writes `n` entries, optionally signed with a checkpoint every `interval`.
inline void Fill(const std::string& path, int n, std::shared_ptr<const Signer> signer = nullptr,
                 uint64_t interval = 10) {
  LedgerOptions o;
  o.signer = std::move(signer);
  o.checkpoint_interval = interval;
  auto ledger = OpenOrDie(path, o);
  for (int i = 1; i <= n; ++i) {
    ASSERT_TRUE(ledger->Append(Usage(absl::StrCat("e", i), absl::StrCat("payload", i), i)).ok());
  }
  ASSERT_TRUE(ledger->Commit().ok());
}

inline VerifyReport VerifyOrDie(const std::string& path, const SignatureVerifier* key = nullptr,
                                const VerifyOptions& options = {}) {
  LedgerOptions ro;
  ro.read_only = true;
  auto ledger = Ledger::Open(path, ro);
  EXPECT_TRUE(ledger.ok()) << ledger.status();
  auto report = Verify(**ledger, key, options);
  EXPECT_TRUE(report.ok()) << report.status();
  return *report;
}

}  // namespace gpuledger::ledger::testing_support
