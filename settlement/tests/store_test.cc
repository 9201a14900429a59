// The settlement store's staging (src/store.cc): writes are visible to Get and Scan before
// Commit, a staged value or delete hides the stored one, Scan visits keys in order across both,
// Commit makes them durable together and Rollback drops them.
#include "settlement/store.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "testsupport/temp_dir.h"

namespace gpuledger::settlement {
namespace {

using Pairs = std::vector<std::pair<std::string, std::string>>;

Pairs ScanAll(Store& store, std::string_view prefix, size_t stop_after = 1'000) {
  Pairs out;
  store.Scan(prefix, [&](std::string_view key, std::string_view value) {
    out.emplace_back(std::string(key), std::string(value));
    return out.size() < stop_after;
  });
  return out;
}

std::unique_ptr<Store> OpenStore(const std::string& path) {
  StoreOptions so;
  so.sync = false;
  auto store = Store::Open(path, so);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? *std::move(store) : nullptr;
}

TEST(StoreTest, StagedWritesAreReadMergedInKeyOrderAndCommittedTogether) {
  gpuledger::testing::TempDir dir;
  auto store = OpenStore(dir.Sub("store"));
  ASSERT_NE(store, nullptr);
  store->Put("a/1", "x");
  store->Put("a/3", "y");
  store->Put("a/5", "z");
  store->Put("a/7", "w");
  ASSERT_TRUE(store->Commit().ok());

  store->Put("a/2", "new");
  store->Put("a/3", "replaced");
  store->Delete("a/5");
  store->Put("a/6", "gone");
  store->Delete("a/6");
  store->Put("a/9", "last");
  store->Put("b/1", "other prefix");
  store->Put("a", "shorter than the prefix");
  const Pairs expected = {
      {"a/1", "x"}, {"a/2", "new"}, {"a/3", "replaced"}, {"a/7", "w"}, {"a/9", "last"}};
  EXPECT_EQ(ScanAll(*store, "a/"), expected);
  EXPECT_EQ(ScanAll(*store, "a/", 2), Pairs(expected.begin(), expected.begin() + 2));
  EXPECT_EQ(store->Get("a/3"), "replaced");
  EXPECT_EQ(store->Get("a/5"), std::nullopt);
  EXPECT_EQ(store->Get("a/6"), std::nullopt);
  EXPECT_EQ(store->Get("a/7"), "w");
  ASSERT_TRUE(store->Commit().ok());
  EXPECT_EQ(store->staged(), 0u);

  store.reset();
  store = OpenStore(dir.Sub("store"));
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(ScanAll(*store, "a/"), expected);
  EXPECT_EQ(ScanAll(*store, "b/"), (Pairs{{"b/1", "other prefix"}}));
}

TEST(StoreTest, RollbackDropsWhatWasStaged) {
  gpuledger::testing::TempDir dir;
  auto store = OpenStore(dir.Sub("store"));
  ASSERT_NE(store, nullptr);
  store->Put("k/1", "kept");
  ASSERT_TRUE(store->Commit().ok());
  store->Put("k/1", "changed");
  store->Delete("k/1");
  store->Put("k/2", "added");
  store->Rollback();
  EXPECT_EQ(ScanAll(*store, "k/"), (Pairs{{"k/1", "kept"}}));
  store->PutInt("k/3", 5);
  store->PutInt("k/3", 0);  // a counter at 0 is deleted
  EXPECT_EQ(store->Get("k/3"), std::nullopt);
  store->PutInt("k/4", -7);
  EXPECT_EQ(store->GetInt("k/4"), -7);
}

}  // namespace
}  // namespace gpuledger::settlement
