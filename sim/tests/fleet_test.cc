#include "sim/fleet.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "ledger/registry.h"

namespace gpuledger::sim {
namespace {

namespace v1 = gpuledger::v1;

FleetOptions Small() {
  FleetOptions o = Scaled(FleetOptions{}, 0.01);
  o.duplicates_ppm = 20'000;
  o.conflicts_ppm = 5'000;
  o.late_ppm = 5'000;
  o.overlaps_ppm = 5'000;
  o.malformed_ppm = 5'000;
  return o;
}

std::vector<SimMessage> Simulate(const FleetOptions& o, SimStats* stats) {
  std::vector<SimMessage> out;
  *stats = Generate(o, [&](const SimMessage& m) { out.push_back(m); });
  return out;
}

TEST(FleetTest, TheSameSeedGivesTheSameBytesAndAnotherSeedDoesNot) {
  SimStats a, b, c;
  const auto first = Simulate(Small(), &a);
  const auto again = Simulate(Small(), &b);
  ASSERT_EQ(first.size(), again.size());
  for (size_t i = 0; i < first.size(); ++i) ASSERT_EQ(first[i].value, again[i].value) << i;
  FleetOptions other = Small();
  other.seed = 2;
  const auto different = Simulate(other, &c);
  bool differs = different.size() != first.size();
  for (size_t i = 0; !differs && i < first.size(); ++i)
    differs = first[i].value != different[i].value;
  EXPECT_TRUE(differs);
}

TEST(FleetTest, TheMonthIsConsistentWithItsRegistryExceptTheInjectedFaults) {
  SimStats stats;
  const auto messages = Simulate(Small(), &stats);
  ledger::Registry registry;
  std::map<std::string, uint32_t> granted;
  std::set<std::pair<std::string, std::string>> ids;
  uint64_t usage = 0, undecodable = 0, repeated = 0;
  const base::Period march{2026, 3};
  for (const SimMessage& m : messages) {
    if (m.registry) {
      v1::RegistryEvent e;
      ASSERT_TRUE(e.ParseFromString(m.value));
      EXPECT_FALSE(registry.Check(e).has_value()) << e.DebugString();
      registry.Apply(e);
      continue;
    }
    v1::UsageEvent e;
    if (!e.ParseFromString(m.value) || e.event_id().empty()) {
      ++undecodable;
      continue;
    }
    EXPECT_EQ(e.csp_id(), m.csp_id);
    if (!ids.insert({e.csp_id(), e.event_id()}).second) ++repeated;
    if (e.has_usage()) {
      const auto& u = e.usage();
      const v1::Allocation* a = registry.FindAllocation(u.allocation_id());
      ASSERT_NE(a, nullptr);
      EXPECT_EQ(a->csp_id(), e.csp_id());
      EXPECT_LE(u.gpu_count(), a->gpu_count());
      EXPECT_GE(u.start_ms(), std::max(a->start_ms(), march.StartMs()));
      EXPECT_LE(u.end_ms(), std::min(a->end_ms(), march.EndMs()));
      EXPECT_LT(u.start_ms(), u.end_ms());
      ++usage;
    }
  }
  EXPECT_GT(stats.allocations, 0u);
  EXPECT_GT(stats.usage_events, 1'000u);
  EXPECT_GT(stats.own_use_events, 0u);
  EXPECT_GT(stats.outage_events, 0u);
  // Every injected fault is in the stream, and only those repeat an id or fail to decode.
  EXPECT_GT(stats.duplicates, 0u);
  EXPECT_GT(stats.malformed, 0u);
  EXPECT_EQ(repeated, stats.duplicates + stats.conflicts);
  EXPECT_LE(undecodable, stats.malformed);
  EXPECT_EQ(usage, stats.usage_events + stats.duplicates + stats.conflicts + stats.overlaps);
  EXPECT_EQ(stats.messages, messages.size());
}

// A later month of a series: the same registry, byte for byte; usage of that month only, inside
// the first month's allocations; no usage, own-use or outage id and no producer of the first.
TEST(FleetTest, ALaterMonthOfASeriesExtendsTheFirst) {
  FleetOptions first = Small();
  FleetOptions later = Small();
  later.period = base::Period{2026, 4};
  later.series_start = first.period;
  SimStats a, b;
  const auto m1 = Simulate(first, &a);
  const auto m2 = Simulate(later, &b);
  std::vector<std::string> reg1, reg2;
  std::set<std::string> ids1, producers1;
  for (const auto& m : m1) {
    if (m.registry) {
      reg1.push_back(m.value);
      continue;
    }
    v1::UsageEvent e;
    if (e.ParseFromString(m.value) && !e.event_id().empty()) {
      ids1.insert(e.event_id());
      producers1.insert(e.producer_id());
    }
  }
  ledger::Registry registry;
  const base::Period april{2026, 4};
  uint64_t usage = 0;
  for (const auto& m : m2) {
    if (m.registry) {
      reg2.push_back(m.value);
      v1::RegistryEvent e;
      ASSERT_TRUE(e.ParseFromString(m.value));
      registry.Apply(e);
      continue;
    }
    v1::UsageEvent e;
    if (!e.ParseFromString(m.value) || e.event_id().empty()) continue;
    EXPECT_FALSE(ids1.contains(e.event_id())) << e.event_id();
    EXPECT_FALSE(producers1.contains(e.producer_id())) << e.producer_id();
    if (!e.has_usage()) continue;
    const v1::Allocation* alloc = registry.FindAllocation(e.usage().allocation_id());
    ASSERT_NE(alloc, nullptr);
    EXPECT_GE(e.usage().start_ms(), std::max(alloc->start_ms(), april.StartMs()));
    EXPECT_LE(e.usage().end_ms(), std::min(alloc->end_ms(), april.EndMs()));
    ++usage;
  }
  EXPECT_EQ(reg1, reg2);
  EXPECT_GT(usage, 100u);
  // On its own, April draws another fleet: its registry differs.
  FleetOptions alone = later;
  alone.series_start.reset();
  SimStats c;
  std::vector<std::string> reg3;
  for (const auto& m : Simulate(alone, &c)) {
    if (m.registry) reg3.push_back(m.value);
  }
  EXPECT_NE(reg1, reg3);
}

TEST(FleetTest, MaxEventsBoundsTheRun) {
  FleetOptions o = Small();
  o.max_usage_events = 500;
  SimStats stats;
  Simulate(o, &stats);
  EXPECT_EQ(stats.usage_events, 500u);
}

}  // namespace
}  // namespace gpuledger::sim
