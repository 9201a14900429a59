#include "ledger/producers.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

namespace gpuledger::ledger {
namespace {

TEST(ProducerProgressTest, InOrderArrivalsStayContiguous) {
  ProducerProgress p;
  for (uint64_t s = 1; s <= 100; ++s) p.Add(s);
  EXPECT_EQ(p.contiguous(), 100u);
  EXPECT_TRUE(p.Missing().empty());
  p.Add(50);  // a resend changes nothing
  EXPECT_EQ(p.contiguous(), 100u);
}

TEST(ProducerProgressTest, OutOfOrderArrivalsCloseTheirGaps) {
  ProducerProgress p;
  for (uint64_t s : {3, 1, 7, 5, 6}) p.Add(s);
  EXPECT_EQ(p.contiguous(), 1u);
  EXPECT_EQ(p.Missing(), (std::vector<SeqRange>{{2, 2}, {4, 4}}));
  EXPECT_EQ(p.MissingCount(), 2u);
  p.Add(2);
  p.Add(4);
  EXPECT_EQ(p.contiguous(), 7u);
  EXPECT_TRUE(p.Missing().empty());
}

TEST(ProducerProgressTest, MatchesASetModelOnRandomArrivals) {
  const uint64_t seed = std::random_device{}();
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 50; ++round) {
    ProducerProgress p;
    std::set<uint64_t> arrived;
    for (int i = 0; i < 300; ++i) {
      const uint64_t s = 1 + rng() % 200;
      p.Add(s);
      arrived.insert(s);
    }
    uint64_t contiguous = 0;
    while (arrived.contains(contiguous + 1)) ++contiguous;
    ASSERT_EQ(p.contiguous(), contiguous) << "seed " << seed;
    ASSERT_EQ(p.highest(), *arrived.rbegin()) << "seed " << seed;
    uint64_t missing = 0;
    for (uint64_t s = 1; s <= *arrived.rbegin(); ++s) missing += arrived.contains(s) ? 0 : 1;
    ASSERT_EQ(p.MissingCount(), missing) << "seed " << seed;
    auto decoded = ProducerProgress::Decode(p.Encode());
    ASSERT_TRUE(decoded.ok());
    ASSERT_EQ(decoded->Missing(), p.Missing());
  }
}

TEST(ProducerProgressTest, RejectsDamagedRecords) {
  EXPECT_FALSE(ProducerProgress::Decode("").ok());
  EXPECT_FALSE(ProducerProgress::Decode(std::string(10, '\0')).ok());
}

}  // namespace
}  // namespace gpuledger::ledger
