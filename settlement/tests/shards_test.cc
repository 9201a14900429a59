// MergeShards (settlement/shards.h): the order it yields the shards' entries in, the registry
// once, a shard that disagrees on the registry, a shard still behind, an event in two shards.
// The same over real shard ledgers of the sample month: tests/integration/shards_test.sh.
#include "settlement/shards.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ledger/hash.h"
#include "ledger/ledger.h"
#include "testsupport/temp_dir.h"

namespace gpuledger::settlement {
namespace {

namespace v1 = gpuledger::v1;

// "R<n>": the registry topic's message at offset n; anything else: a usage event of csp-a.
ledger::Candidate Entry(const std::string& name, int64_t kafka_ms = 0, bool rejected = false) {
  ledger::Candidate c;
  const bool registry = name[0] == 'R';
  c.source = registry ? v1::SOURCE_REGISTRY : v1::SOURCE_USAGE;
  c.payload = absl::StrCat("payload of ", name);
  c.topic = registry ? "gpuledger.registry" : "gpuledger.usage.csp-a";
  c.offset = registry ? std::stoll(name.substr(1)) : 0;
  c.source_id = registry ? "operator" : "csp-a";
  c.event_id = name;
  c.kafka_timestamp_ms = kafka_ms;
  if (rejected) c.reason_code = "INVALID_FIELD";
  return c;
}

class ShardsTest : public ::testing::Test {
 protected:
  ledger::Ledger& Shard(const std::vector<ledger::Candidate>& entries) {
    auto l = ledger::Ledger::Open(absl::StrCat(dir_.path(), "/shard", ledgers_.size()), {});
    EXPECT_TRUE(l.ok()) << l.status();
    for (const auto& c : entries) EXPECT_TRUE((*l)->Append(c).ok());
    EXPECT_TRUE((*l)->Commit().ok());
    ledgers_.push_back(std::move(*l));
    return *ledgers_.back();
  }
  std::vector<const ledger::Ledger*> All() const {
    std::vector<const ledger::Ledger*> out;
    for (const auto& l : ledgers_) out.push_back(l.get());
    return out;
  }
  // The merged stream from `from`: "name@seq" for each entry, "!" after a rejected one.
  absl::StatusOr<std::vector<std::string>> Read(std::shared_ptr<ShardMergeReport> report,
                                                uint64_t from = 1) {
    std::vector<std::string> out;
    ledger::Digest prev = ledger::kZeroDigest;
    uint64_t expect = from;
    absl::Status st =
        MergeShards(All(), report)(from, [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
          EXPECT_EQ(e.seq, expect++);
          if (from == 1) {
            EXPECT_EQ(e.hash, ledger::ChainHash(prev, e.seq, e.bytes)) << e.seq;
            prev = e.hash;
          }
          out.push_back(absl::StrCat(e.entry.event_id(), "@", e.seq,
                                     e.entry.outcome() == v1::REJECTED ? "!" : ""));
          return true;
        });
    if (!st.ok()) return st;
    return out;
  }
  testing::TempDir dir_;
  std::vector<std::unique_ptr<ledger::Ledger>> ledgers_;
};

using Names = std::vector<std::string>;

TEST_F(ShardsTest, EachRegistryEntryOnceAfterWhatEveryShardRecordedBeforeIt) {
  Shard({Entry("R1"), Entry("a1"), Entry("R2"), Entry("a2")});
  Shard({Entry("b1"), Entry("R1"), Entry("R2"), Entry("b2"), Entry("b3")});
  Shard({Entry("R1"), Entry("R2")});
  auto report = std::make_shared<ShardMergeReport>();
  auto got = Read(report);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, (Names{"b1@1", "R1@2", "a1@3", "R2@4", "a2@5", "b2@6", "b3@7"}));
  EXPECT_EQ(report->entries, 7u);
  EXPECT_EQ(report->registry_entries, 2u);
  EXPECT_TRUE(report->stopped_early.empty());
  // From the middle: the same numbers.
  got = Read(nullptr, 4);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, (Names{"R2@4", "a2@5", "b2@6", "b3@7"}));
}

TEST_F(ShardsTest, ShardsThatDecidedTheRegistryDifferentlyAreRefused) {
  Shard({Entry("R1"), Entry("R2")});
  Shard({Entry("R1"), Entry("R2", 0, true)});
  auto got = Read(nullptr);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(got.status().message().find("disagree on the registry"), std::string::npos)
      << got.status();
  EXPECT_NE(got.status().message().find("shard 1 seq 2"), std::string::npos) << got.status();
}

TEST_F(ShardsTest, AShardBehindOnTheRegistryEndsTheStreamBeforeWhatItLacks) {
  Shard({Entry("R1"), Entry("a1"), Entry("R2"), Entry("a2")});
  Shard({Entry("R1"), Entry("b1")});
  auto report = std::make_shared<ShardMergeReport>();
  auto got = Read(report);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, (Names{"R1@1", "a1@2", "b1@3"}));
  EXPECT_NE(report->stopped_early.find("shard 1 has not yet recorded"), std::string::npos)
      << report->stopped_early;
}

TEST_F(ShardsTest, AnEventAcceptedInTwoShardsIsSettledOnceFromTheEarlierOne) {
  // "dup" went to two partitions (sent twice with different keys): shard 1 got it first.
  Shard({Entry("R1"), Entry("dup", 2'000), Entry("a1", 1'000)});
  Shard({Entry("R1"), Entry("dup", 1'500), Entry("b1", 1'000)});
  auto report = std::make_shared<ShardMergeReport>();
  auto got = Read(report);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, (Names{"R1@1", "dup@2!", "a1@3", "dup@4", "b1@5"}));
  EXPECT_EQ(report->cross_shard_duplicates, 1u);
  ASSERT_EQ(report->notes.size(), 1u);
  EXPECT_NE(report->notes[0].find("settled once, from shard 1"), std::string::npos)
      << report->notes[0];
}

}  // namespace
}  // namespace gpuledger::settlement
