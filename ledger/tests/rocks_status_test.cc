#include "ledger/rocks_status.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "testsupport/temp_dir.h"

namespace gpuledger::ledger {
namespace {

TEST(RocksStatusTest, OkStaysOk) { EXPECT_TRUE(FromRocks(rocksdb::Status::OK(), "store").ok()); }

TEST(RocksStatusTest, HeldLockOfAnotherProcessIsFailedPreconditionWithTheStoresAdvice) {
  // What PosixFileSystem::LockFile says when another process holds the LOCK file.
  const rocksdb::Status s = rocksdb::Status::IOError("While lock file: /data/store/LOCK",
                                                     "Resource temporarily unavailable");
  EXPECT_TRUE(IsHeldLock(s));
  const absl::Status st = FromRocks(s, "settlement store /data/store",
                                    {.locked = "a running serve owns it", .no_space = ""});
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_TRUE(
      absl::StartsWith(st.message(), "settlement store /data/store: a running serve owns it"))
      << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "Resource temporarily unavailable")) << st;
  EXPECT_TRUE(absl::StrContains(FromRocks(s, "store").message(), "another process holds its lock"));
}

TEST(RocksStatusTest, HeldLockOfASecondOpenInThisProcessIsFailedPrecondition) {
  testing::TempDir dir;
  const std::string path = dir.Sub("db");
  rocksdb::Options o;
  o.create_if_missing = true;
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(o, path, &raw).ok());
  std::unique_ptr<rocksdb::DB> first(raw);
  rocksdb::DB* second = nullptr;
  const rocksdb::Status s = rocksdb::DB::Open(o, path, &second);
  ASSERT_FALSE(s.ok());
  delete second;
  EXPECT_TRUE(IsHeldLock(s)) << s.ToString();
  EXPECT_EQ(FromRocks(s, "store").code(), absl::StatusCode::kFailedPrecondition);
}

TEST(RocksStatusTest, AnIoErrorNamingALockPathIsNotAHeldLock) {
  const rocksdb::Status s = rocksdb::Status::IOError(
      "While open a file for appending: /blocks/000012.log", "Input/output error");
  EXPECT_FALSE(IsHeldLock(s));
  EXPECT_EQ(FromRocks(s, "store").code(), absl::StatusCode::kUnavailable);
}

TEST(RocksStatusTest, NoSpaceIsResourceExhaustedAndSaysTheDiskIsFull) {
  for (const rocksdb::Status& s :
       {rocksdb::Status::NoSpace("While appending to file", "No space left on device"),
        rocksdb::Status::SpaceLimit("max_allowed_space_usage reached")}) {
    const absl::Status st =
        FromRocks(s, "ledger: commit batch", {.locked = "", .no_space = "ingest resumes"});
    EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
    EXPECT_TRUE(absl::StrContains(st.message(), "ledger: commit batch: ")) << st;
    EXPECT_TRUE(absl::StrContains(st.message(), "the disk is full: ingest resumes")) << st;
    EXPECT_TRUE(absl::StrContains(FromRocks(s, "x").message(),
                                  "the disk is full: free space and start again"));
  }
}

TEST(RocksStatusTest, CorruptionIsDataLoss) {
  const absl::Status st = FromRocks(rocksdb::Status::Corruption("block checksum mismatch"), "scan");
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "block checksum mismatch")) << st;
}

TEST(RocksStatusTest, BusyTryAgainTimedOutAndOtherIoErrorsAreUnavailable) {
  for (const rocksdb::Status& s :
       {rocksdb::Status::Busy("write stall"), rocksdb::Status::TryAgain("again"),
        rocksdb::Status::TimedOut("slow"), rocksdb::Status::IOError("read", "EIO")}) {
    EXPECT_EQ(FromRocks(s, "store").code(), absl::StatusCode::kUnavailable) << s.ToString();
  }
}

TEST(RocksStatusTest, NotFoundInvalidArgumentAndTheRest) {
  EXPECT_EQ(FromRocks(rocksdb::Status::NotFound("k"), "s").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(FromRocks(rocksdb::Status::PathNotFound("/x"), "s").code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(FromRocks(rocksdb::Status::InvalidArgument("no such db"), "s").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FromRocks(rocksdb::Status::NotSupported("x"), "s").code(), absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace gpuledger::ledger
