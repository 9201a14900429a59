// The validator's state store writes each committed batch on another thread while the next one
// is staged: reads must see the staged batch over the one being written over what RocksDB has,
// whenever that write happens to finish.
#include "hold_store.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "testsupport/temp_dir.h"

namespace gpuledger::ingest {
namespace {

HoldStore::Interval Iv(int64_t start, int64_t end, const std::string& event_id) {
  return HoldStore::Interval{start, end, 1, "node-1", "csp-01", event_id};
}

std::vector<int64_t> Starts(HoldStore& store, const std::string& allocation) {
  std::vector<int64_t> out;
  absl::Status st = store.ScanIntervals(allocation, 0, 1'000, [&](const HoldStore::Interval& in) {
    out.push_back(in.start_ms);
    return true;
  });
  EXPECT_TRUE(st.ok()) << st;
  return out;
}

// "R" retired, "a@10" holding, "" none.
std::string HolderOf(HoldStore& store, const std::string& event_id) {
  auto h = store.GetHolder("csp-01", event_id);
  EXPECT_TRUE(h.ok()) << h.status();
  if (!h.ok() || !h->has_value()) return "";
  if ((*h)->retired) return "R";
  return (*h)->allocation + "@" + std::to_string((*h)->start_ms);
}

ledger::Digest DigestOf(uint8_t b) {
  ledger::Digest d{};
  d.fill(b);
  return d;
}

// Three batches: the first written (or being written) while the second is staged and read, the
// second being written while the third is staged and read. Many rounds, so that the background
// write finishes before, during and after the reads.
void ThreeBatches(HoldStore& store) {
  store.PutInterval("a", Iv(0, 10, "e1"));
  store.PutInterval("a", Iv(10, 20, "e2"));
  store.PutInterval("b", Iv(5, 15, "e4"));
  store.PutHolder("csp-01", "e1", HoldStore::Holder{false, "a", 0});
  store.PutHolder("csp-01", "e2", HoldStore::Holder{false, "a", 10});
  ASSERT_TRUE(store.Commit(HoldStore::Marker{1, DigestOf(1)}).ok());

  // Batch 2 takes back e1 and adds e3 over batch 1, possibly still in flight.
  store.DeleteInterval("a", 0, "csp-01", "e1");
  store.PutHolder("csp-01", "e1", HoldStore::Holder{true, "", 0});
  store.PutInterval("a", Iv(20, 30, "e3"));
  store.PutHolder("csp-01", "e3", HoldStore::Holder{false, "a", 20});
  EXPECT_EQ(Starts(store, "a"), (std::vector<int64_t>{10, 20}));
  EXPECT_EQ(Starts(store, "b"), (std::vector<int64_t>{5}));
  EXPECT_EQ(HolderOf(store, "e1"), "R");
  EXPECT_EQ(HolderOf(store, "e2"), "a@10");
  EXPECT_EQ(HolderOf(store, "e9"), "");
  ASSERT_TRUE(store.Commit(HoldStore::Marker{2, DigestOf(2)}).ok());

  // Batch 3 takes back e2 while batch 2 may be in flight: a deletion over a put below it.
  store.DeleteInterval("a", 10, "csp-01", "e2");
  store.PutHolder("csp-01", "e2", HoldStore::Holder{true, "", 0});
  EXPECT_EQ(Starts(store, "a"), (std::vector<int64_t>{20}));
  EXPECT_EQ(HolderOf(store, "e2"), "R");
  EXPECT_EQ(HolderOf(store, "e3"), "a@20");
  EXPECT_EQ(HolderOf(store, "e1"), "R");
  ASSERT_TRUE(store.Commit(HoldStore::Marker{3, DigestOf(3)}).ok());
  EXPECT_EQ(Starts(store, "a"), (std::vector<int64_t>{20}));  // only the write in flight
  ASSERT_TRUE(store.Wait().ok());
  EXPECT_EQ(Starts(store, "a"), (std::vector<int64_t>{20}));  // only RocksDB
  EXPECT_EQ(HolderOf(store, "e1"), "R");
  EXPECT_EQ(HolderOf(store, "e3"), "a@20");
}

TEST(HoldStoreTest, ReadsSeeTheStagedBatchOverTheOneBeingWrittenOverTheStore) {
  for (int round = 0; round < 200; ++round) {
    SCOPED_TRACE(round);
    auto store = HoldStore::Open("");
    ASSERT_TRUE(store.ok()) << store.status();
    ThreeBatches(**store);
    if (HasFatalFailure()) return;
    auto marker = (*store)->GetMarker();
    ASSERT_TRUE(marker.ok() && marker->has_value());
    EXPECT_EQ((*marker)->seq, 3u);
    EXPECT_EQ((*marker)->hash, DigestOf(3));
  }
}

TEST(HoldStoreTest, WhatWasCommittedIsOnDiskAfterCloseEvenWithAWriteInFlight) {
  testing::TempDir dir;
  {
    auto store = HoldStore::Open(dir.Sub("state"));
    ASSERT_TRUE(store.ok()) << store.status();
    ThreeBatches(**store);
    (*store)->PutInterval("c", Iv(1, 2, "e5"));
    ASSERT_TRUE((*store)->Commit(HoldStore::Marker{4, DigestOf(4)}).ok());
    // Closed with that write in flight: the destructor collects it.
  }
  auto store = HoldStore::Open(dir.Sub("state"));
  ASSERT_TRUE(store.ok()) << store.status();
  auto marker = (*store)->GetMarker();
  ASSERT_TRUE(marker.ok() && marker->has_value());
  EXPECT_EQ((*marker)->seq, 4u);
  EXPECT_EQ(Starts(**store, "a"), (std::vector<int64_t>{20}));
  EXPECT_EQ(Starts(**store, "c"), (std::vector<int64_t>{1}));
  EXPECT_EQ(HolderOf(**store, "e2"), "R");
  EXPECT_GT((*store)->Memory().table_readers + (*store)->Memory().block_cache, 0u);
}

TEST(HoldStoreTest, MemoryCountsTheWrittenBatchesInItsMemtables) {
  auto store = HoldStore::Open("");
  ASSERT_TRUE(store.ok()) << store.status();
  const uint64_t before = (*store)->Memory().memtables;
  for (int i = 0; i < 1'000; ++i) {
    (*store)->PutInterval("alloc", Iv(i * 10, i * 10 + 10, "event-" + std::to_string(i)));
  }
  ASSERT_TRUE((*store)->Commit(HoldStore::Marker{1, DigestOf(1)}).ok());
  ASSERT_TRUE((*store)->Wait().ok());
  EXPECT_GT((*store)->Memory().memtables, before + 1'000 * 20);
}

}  // namespace
}  // namespace gpuledger::ingest
