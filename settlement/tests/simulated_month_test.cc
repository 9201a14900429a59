// Issue 16's "done when": a simulated month under the programmes' default policies (sim/src/
// fleet.cc), priced by the settlement engine. Every registry record the simulator draws is one
// ingest accepts, and academia and research institutes owe 0 won although their usage goes
// beyond allocation caps (it is held, not billed).
#include <gtest/gtest.h>

#include "base/status.h"
#include "harness.h"
#include "ledger/registry.h"
#include "sim/fleet.h"
#include "testsupport/temp_dir.h"

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
  for (const v1::Invoice& inv : AllInvoices(*d)) {
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

// The entries of a simulated month as the ledger would hand them to settlement (the registry
// records ingest accepts, every valid usage event), numbered 1, 2, 3, ...
std::vector<ledger::StoredEntry> SimulatedEntries(double scale) {
  sim::FleetOptions o = sim::Scaled(sim::FleetOptions{}, scale);
  o.interval_minutes = 60;
  o.duplicates_ppm = o.conflicts_ppm = o.late_ppm = o.overlaps_ppm = o.malformed_ppm = 0;
  ledger::Registry registry;
  std::vector<ledger::StoredEntry> out;
  sim::Generate(o, [&](const sim::SimMessage& m) {
    ledger::StoredEntry e;
    e.seq = out.size() + 1;
    if (m.registry) {
      v1::RegistryEvent r;
      if (!r.ParseFromString(m.value) || registry.Check(r).has_value()) return;
      registry.Apply(r);
      e.entry.set_source(v1::SOURCE_REGISTRY);
      e.entry.set_source_id("operator");
    } else {
      e.entry.set_source(v1::SOURCE_USAGE);
      e.entry.set_source_id(m.csp_id);
    }
    e.entry.set_payload(m.value);
    e.entry.set_outcome(v1::ACCEPTED);
    e.bytes = e.entry.SerializeAsString();
    e.hash = ledger::Sha256(absl::StrCat(e.seq, e.bytes));
    out.push_back(std::move(e));
  });
  return out;
}

EntrySource SourceOf(const std::vector<ledger::StoredEntry>& entries) {
  return [&entries](uint64_t from_seq, const EntryVisitor& visit) -> absl::Status {
    for (uint64_t seq = from_seq; seq <= entries.size(); ++seq) {
      GPULEDGER_ASSIGN_OR_RETURN(bool more, visit(entries[seq - 1]));
      if (!more) break;
    }
    return absl::OkStatus();
  };
}

// The documents of `period` after catching up with `options`, in one go or stopping at `until`
// first; as canonical bytes.
std::string CaughtUp(const std::vector<ledger::StoredEntry>& entries, const base::Period& period,
                     CatchUpOptions options, uint64_t until) {
  gpuledger::testing::TempDir dir;
  StoreOptions so;
  so.sync = false;
  auto store = Store::Open(dir.Sub("store"), so);
  EXPECT_TRUE(store.ok()) << store.status();
  auto engine = Engine::Open(store->get(), {});
  EXPECT_TRUE(engine.ok()) << engine.status();
  if (until != 0) {
    auto part = CatchUp(SourceOf(entries), until, engine->get(), options);
    EXPECT_TRUE(part.ok()) << part.status();
    EXPECT_EQ((*engine)->applied_through(), until);
  }
  auto rest = CatchUp(SourceOf(entries), 0, engine->get(), options);
  EXPECT_TRUE(rest.ok()) << rest.status();
  EXPECT_EQ((*engine)->applied_through(), entries.size());
  auto docs = (*engine)->Documents(period, {});
  EXPECT_TRUE(docs.ok()) << docs.status();
  return docs.ok() ? docs->SerializeAsString() : std::string();
}

// Catching up with the ledger read ahead on a second thread gives the documents of applying each
// entry as it is read, whatever the commit batch and wherever a catch-up stops.
TEST(CatchUpTest, ReadingAheadOnASecondThreadChangesNothing) {
  const std::vector<ledger::StoredEntry> entries = SimulatedEntries(0.02);
  ASSERT_GT(entries.size(), 5 * kReadAheadMin);
  const base::Period march = sim::FleetOptions{}.period;
  CatchUpOptions inline_options;
  inline_options.read_ahead = false;
  const std::string want = CaughtUp(entries, march, inline_options, 0);
  ASSERT_FALSE(want.empty());
  for (uint64_t batch : {uint64_t{1'000}, uint64_t{20'000}}) {
    CatchUpOptions options;
    options.batch = batch;
    uint64_t last_progress = 0;
    options.progress = [&](uint64_t applied, uint64_t) {
      EXPECT_GE(applied, last_progress);
      last_progress = applied;
    };
    EXPECT_EQ(CaughtUp(entries, march, options, 0), want) << "batch " << batch;
    EXPECT_EQ(last_progress, entries.size());
    last_progress = 0;
    EXPECT_EQ(CaughtUp(entries, march, options, entries.size() / 3), want) << "batch " << batch;
  }
}

// An error on either side ends the catch-up with that error, and nothing waits forever.
TEST(CatchUpTest, AnErrorOfTheSourceOrOfTheEngineEndsTheCatchUp) {
  std::vector<ledger::StoredEntry> entries = SimulatedEntries(0.01);
  ASSERT_GT(entries.size(), 3 * kReadAheadMin);
  gpuledger::testing::TempDir dir;
  auto store = Store::Open(dir.Sub("store"), {});
  ASSERT_TRUE(store.ok()) << store.status();
  auto engine = Engine::Open(store->get(), {});
  ASSERT_TRUE(engine.ok()) << engine.status();
  // The source fails after 2,500 entries.
  const EntrySource failing = [&](uint64_t from_seq, const EntryVisitor& visit) -> absl::Status {
    for (uint64_t seq = from_seq; seq <= entries.size(); ++seq) {
      if (seq == 2'501) return absl::DataLossError("damaged block");
      GPULEDGER_ASSIGN_OR_RETURN(bool more, visit(entries[seq - 1]));
      if (!more) break;
    }
    return absl::OkStatus();
  };
  auto r = CatchUp(failing, 0, engine->get(), {});
  EXPECT_TRUE(absl::IsDataLoss(r.status())) << r.status();
  // The engine refuses an entry out of order (here, at 2,001): the reader stops too.
  std::vector<ledger::StoredEntry> gap = entries;
  gap[2'000].seq = 9'999'999;
  auto engine2 = Engine::Open(store->get(), {});
  ASSERT_TRUE(engine2.ok()) << engine2.status();
  const uint64_t at = (*engine2)->applied_through();
  auto r2 = CatchUp(SourceOf(gap), 0, engine2->get(), {});
  EXPECT_TRUE(absl::IsFailedPrecondition(r2.status())) << r2.status() << " from " << at;
}

}  // namespace
}  // namespace gpuledger::settlement::testing
