// Issue 16's "done when": a simulated month under the programmes' default policies (sim/src/
// fleet.cc), priced by the settlement engine. Every registry record the simulator draws is one
// ingest accepts, and academia and research institutes owe 0 won although their usage goes
// beyond allocation caps (it is held, not billed).
#include <gtest/gtest.h>

#include "harness.h"
#include "ledger/registry.h"
#include "sim/fleet.h"

namespace gpuledger::settlement::testing {
namespace {

TEST(SimulatedMonthTest, AcademiaAndResearchOweNothingUnderTheDefaultPolicies) {
  sim::FleetOptions o = sim::Scaled(sim::FleetOptions{}, 0.1);
  o.interval_minutes = 60;
  o.duplicates_ppm = o.conflicts_ppm = o.late_ppm = o.overlaps_ppm = o.malformed_ppm = 0;
  Harness h;
  ledger::Registry registry;  // as ingest decides
  int policies = 0;
  sim::Generate(o, [&](const sim::SimMessage& m) {
    if (m.registry) {
      v1::RegistryEvent e;
      ASSERT_TRUE(e.ParseFromString(m.value));
      const auto problem = registry.Check(e);
      EXPECT_FALSE(problem.has_value()) << problem->code << ": " << problem->detail;
      if (problem) return;
      registry.Apply(e);
      policies += e.has_programme_policy() ? 1 : 0;
      h.Registry(e);
    } else {
      v1::UsageEvent e;
      ASSERT_TRUE(e.ParseFromString(m.value));
      h.Usage(m.csp_id, e);
    }
  });
  EXPECT_EQ(policies, 3);
  auto d = h.Docs(o.period);
  ASSERT_TRUE(d.ok()) << d.status();
  int64_t free_tier_invoices = 0, held_gpu_ms = 0;
  for (const v1::Invoice& inv : d->invoices()) {
    for (const auto& l : inv.lines()) {
      if (l.kind() == v1::LINE_KIND_HELD) held_gpu_ms += l.gpu_ms();
    }
    if (inv.institution_type() != v1::ACADEMIA &&
        inv.institution_type() != v1::RESEARCH_INSTITUTE) {
      continue;
    }
    ++free_tier_invoices;
    EXPECT_EQ(inv.totals().copay_krw(), 0) << inv.institution_id();
    EXPECT_EQ(inv.amount_due_krw(), 0) << inv.institution_id();
  }
  // Not vacuous: free-tier institutions used GPUs, and some usage went beyond its cap.
  EXPECT_GT(free_tier_invoices, 10);
  EXPECT_GT(held_gpu_ms, 0);
}

}  // namespace
}  // namespace gpuledger::settlement::testing
