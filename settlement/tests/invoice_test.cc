#include "settlement/invoice.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gpuledger/v1/registry.pb.h"
#include "settlement/render.h"

namespace gpuledger::settlement {
namespace {

namespace v1 = gpuledger::v1;
using base::Period;

constexpr int64_t kHour = 3'600'000;
const Period kMarch{2026, 3};

v1::RegistryEvent Institution(const std::string& id, v1::InstitutionType type, int64_t from) {
  v1::RegistryEvent e;
  auto* i = e.mutable_institution();
  i->set_institution_id(id);
  i->set_name(id + " name");
  i->set_type(type);
  i->set_effective_from_ms(from);
  return e;
}

v1::RegistryEvent Allocation(const std::string& id, const std::string& inst) {
  v1::RegistryEvent e;
  auto* a = e.mutable_allocation();
  a->set_allocation_id(id);
  a->set_institution_id(inst);
  a->set_program(v1::GOV_ADVANCED);
  a->set_csp_id("csp-a");
  a->set_gpu_model(v1::H200);
  a->set_gpu_count(16);
  a->set_start_ms(0);
  a->set_end_ms(Period{2027, 1}.StartMs());
  return e;
}

v1::RegistryEvent Rate(int64_t krw, int64_t from) {
  v1::RegistryEvent e;
  auto* r = e.mutable_rate_card();
  r->set_program(v1::GOV_ADVANCED);
  r->set_gpu_model(v1::H200);
  r->set_krw_per_gpu_hour(krw);
  r->set_effective_from_ms(from);
  return e;
}

v1::RegistryEvent Copay(v1::InstitutionType type, uint32_t bp, int64_t from) {
  v1::RegistryEvent e;
  auto* p = e.mutable_copay_policy();
  p->set_institution_type(type);
  p->set_copay_bp(bp);
  p->set_effective_from_ms(from);
  return e;
}

v1::UsageEvent Usage(const std::string& id, const std::string& alloc, uint32_t gpus, int64_t start,
                     int64_t end) {
  v1::UsageEvent e;
  e.set_event_id(id);
  auto* u = e.mutable_usage();
  u->set_allocation_id(alloc);
  u->set_gpu_model(v1::H200);
  u->set_gpu_count(gpus);
  u->set_start_ms(start);
  u->set_end_ms(end);
  return e;
}

// Registry shared by the examples: a university (0%) and an SME (9%), 4,500 won per H200-hour.
Rater StandardRater(Period period = kMarch) {
  Rater r(period);
  r.ApplyRegistry(Institution("uni", v1::ACADEMIA, 0));
  r.ApplyRegistry(Institution("sme", v1::SME, 0));
  r.ApplyRegistry(Allocation("a-uni", "uni"));
  r.ApplyRegistry(Allocation("a-sme", "sme"));
  r.ApplyRegistry(Rate(4'500, 0));
  r.ApplyRegistry(Copay(v1::ACADEMIA, 0, 0));
  r.ApplyRegistry(Copay(v1::SME, 900, 0));
  return r;
}

TEST(InvoiceTest, AcademiaPaysNothingAndTheStatePaysAll) {
  Rater r = StandardRater();
  // 8 GPUs × 10 h on 2 March.
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  r.ApplyUsage(1, "csp-a", Usage("u1", "a-uni", 8, t, t + 10 * kHour));
  auto run = r.Finish(1);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_EQ(run->invoices.size(), 1u);
  const Invoice& inv = run->invoices[0];
  EXPECT_EQ(inv.institution_id, "uni");
  EXPECT_EQ(inv.gpu_ms.ms, 80 * kHour);
  EXPECT_EQ(inv.list.won, 360'000);
  EXPECT_EQ(inv.copay.won, 0);
  EXPECT_EQ(inv.subsidy.won, 360'000);
  EXPECT_EQ(inv.amount_due.won, 0);
}

TEST(InvoiceTest, SmePaysItsShareAndVatOnTop) {
  Rater r = StandardRater();
  const int64_t t = kMarch.StartMs();
  // 3 GPUs × 7 h 20 min = 22 GPU-hours = 99,000 won; 9% = 8,910; VAT 10% = 891.
  r.ApplyUsage(1, "csp-a", Usage("u1", "a-sme", 3, t, t + 7 * kHour + 20 * 60'000));
  auto run = r.Finish(1);
  ASSERT_TRUE(run.ok());
  const Invoice& inv = run->invoices.at(0);
  EXPECT_EQ(inv.list.won, 99'000);
  EXPECT_EQ(inv.copay.won, 8'910);
  EXPECT_EQ(inv.subsidy.won, 90'090);
  EXPECT_EQ(inv.vat.won, 891);
  EXPECT_EQ(inv.amount_due.won, 9'801);
}

TEST(InvoiceTest, UsageIsSplitAtTheMonthBoundaryInKst) {
  // 4 h across midnight KST of 1 March: 1 h in February, 3 h in March.
  const int64_t start = kMarch.StartMs() - kHour;
  for (const auto& [period, hours] : {std::pair{Period{2026, 2}, 1}, std::pair{kMarch, 3}}) {
    Rater r = StandardRater(period);
    r.ApplyUsage(1, "csp-a", Usage("u1", "a-uni", 2, start, start + 4 * kHour));
    auto run = r.Finish(1);
    ASSERT_TRUE(run.ok());
    ASSERT_EQ(run->invoices.size(), 1u) << period.ToString();
    EXPECT_EQ(run->invoices[0].gpu_ms.ms, 2 * hours * kHour) << period.ToString();
  }
}

TEST(InvoiceTest, RateChangeMidIntervalMakesTwoLines) {
  Rater r = StandardRater();
  const int64_t change = kMarch.StartMs() + 15 * 24 * kHour;
  r.ApplyRegistry(Rate(6'000, change));
  r.ApplyUsage(1, "csp-a", Usage("u1", "a-sme", 1, change - 2 * kHour, change + kHour));
  auto run = r.Finish(1);
  ASSERT_TRUE(run.ok());
  const Invoice& inv = run->invoices.at(0);
  ASSERT_EQ(inv.lines.size(), 2u);
  EXPECT_EQ(inv.lines[0].krw_per_gpu_hour.won, 4'500);
  EXPECT_EQ(inv.lines[0].gpu_ms.ms, 2 * kHour);
  EXPECT_EQ(inv.lines[1].krw_per_gpu_hour.won, 6'000);
  EXPECT_EQ(inv.lines[1].gpu_ms.ms, kHour);
  EXPECT_EQ(inv.list.won, 9'000 + 6'000);
}

TEST(InvoiceTest, SmeThatBecomesAUniversityMidMonth) {
  Rater r = StandardRater();
  const int64_t change = kMarch.StartMs() + 10 * 24 * kHour;
  r.ApplyRegistry(Institution("sme", v1::ACADEMIA, change));
  r.ApplyUsage(1, "csp-a", Usage("u1", "a-sme", 10, change - kHour, change + kHour));
  auto run = r.Finish(1);
  ASSERT_TRUE(run.ok());
  const Invoice& inv = run->invoices.at(0);
  ASSERT_EQ(inv.lines.size(), 2u);
  // 10 GPU-hours each side at 45,000 won: 9% before, 0% after.
  EXPECT_EQ(inv.lines[0].copay_bp + inv.lines[1].copay_bp, 900);
  EXPECT_EQ(inv.copay.won, 4'050);
  EXPECT_EQ(inv.list.won, 90'000);
}

TEST(InvoiceTest, RoundsEachLineHalfAwayFromZero) {
  Rater r(kMarch);
  r.ApplyRegistry(Institution("sme", v1::SME, 0));
  r.ApplyRegistry(Allocation("a", "sme"));
  r.ApplyRegistry(Rate(1'800, 0));
  r.ApplyRegistry(Copay(v1::SME, 5'000, 0));
  // 1 GPU × 1 s at 1,800 won/h = 0.5 won -> 1; 50% of 1 = 0.5 -> 1; subsidy 0.
  r.ApplyUsage(1, "csp-a", Usage("u", "a", 1, kMarch.StartMs(), kMarch.StartMs() + 1'000));
  auto run = r.Finish(1);
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->invoices.at(0).list.won, 1);
  EXPECT_EQ(run->invoices.at(0).copay.won, 1);
  EXPECT_EQ(run->invoices.at(0).subsidy.won, 0);
}

TEST(InvoiceTest, CorrectionsReplaceOrCancel) {
  Rater r = StandardRater();
  const int64_t t = kMarch.StartMs();
  r.ApplyUsage(1, "csp-a", Usage("u1", "a-uni", 1, t, t + kHour));
  r.ApplyUsage(2, "csp-a", Usage("u2", "a-uni", 1, t, t + kHour));
  v1::UsageEvent fix;
  fix.set_event_id("c1");
  fix.mutable_correction()->set_target_event_id("u1");
  fix.mutable_correction()->set_allocation_id("a-uni");
  *fix.mutable_correction()->mutable_replacement() = Usage("x", "a-uni", 2, t, t + kHour).usage();
  r.ApplyUsage(3, "csp-a", fix);
  v1::UsageEvent cancel;
  cancel.set_event_id("c2");
  cancel.mutable_correction()->set_target_event_id("u2");
  cancel.mutable_correction()->set_allocation_id("a-uni");
  r.ApplyUsage(4, "csp-a", cancel);
  auto run = r.Finish(4);
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->invoices.at(0).gpu_ms.ms, 2 * kHour);
  // A correction of the correction replaces it in turn.
  v1::UsageEvent again;
  again.set_event_id("c3");
  again.mutable_correction()->set_target_event_id("c1");
  again.mutable_correction()->set_allocation_id("a-uni");
  *again.mutable_correction()->mutable_replacement() = Usage("y", "a-uni", 3, t, t + kHour).usage();
  r.ApplyUsage(5, "csp-a", again);
  EXPECT_EQ(r.Finish(5)->invoices.at(0).gpu_ms.ms, 3 * kHour);
}

// The SME's allocation is capped at 10 GPU-hours. 8 GPU-hours first, then 2 GPUs for 3 hours:
// the first hour (2 GPU-hours) fills the cap, the last two (4 GPU-hours) are beyond it and the
// SME pays all of them.
TEST(InvoiceTest, UsageBeyondTheGpuHourCapIsNotSubsidised) {
  Rater r = StandardRater();
  v1::RegistryEvent capped = Allocation("a-cap", "sme");
  capped.mutable_allocation()->set_gpu_ms_cap(10 * kHour);
  r.ApplyRegistry(capped);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  r.ApplyUsage(1, "csp-a", Usage("u1", "a-cap", 4, t, t + 2 * kHour));
  r.ApplyUsage(2, "csp-a", Usage("u2", "a-cap", 2, t + 5 * kHour, t + 8 * kHour));
  auto run = r.Finish(2);
  ASSERT_TRUE(run.ok()) << run.status();
  const Invoice& inv = run->invoices.at(0);
  ASSERT_EQ(inv.lines.size(), 2u);
  EXPECT_EQ(inv.lines[0].kind, LineKind::kUsage);
  EXPECT_EQ(inv.lines[0].gpu_ms.ms, 10 * kHour);
  EXPECT_EQ(inv.lines[0].copay.won, 4'050);  // 9% of 45,000
  EXPECT_EQ(inv.lines[1].kind, LineKind::kBeyondCap);
  EXPECT_EQ(inv.lines[1].gpu_ms.ms, 4 * kHour);
  EXPECT_EQ(inv.lines[1].copay_bp, 10'000);
  EXPECT_EQ(inv.lines[1].copay.won, 18'000);
  EXPECT_EQ(inv.lines[1].subsidy.won, 0);
  EXPECT_EQ(inv.list.won, 63'000);
  EXPECT_EQ(inv.copay.won, 22'050);
  EXPECT_EQ(inv.subsidy.won, 40'950);
}

TEST(InvoiceTest, TheCapCountsUsageOfEarlierPeriodsInLedgerOrder) {
  Rater r = StandardRater();
  v1::RegistryEvent capped = Allocation("a-cap", "sme");
  capped.mutable_allocation()->set_gpu_ms_cap(kHour);
  r.ApplyRegistry(capped);
  // February's hour used the whole cap; March's hour is beyond it.
  r.ApplyUsage(1, "csp-a",
               Usage("feb", "a-cap", 1, kMarch.StartMs() - 2 * kHour, kMarch.StartMs() - kHour));
  r.ApplyUsage(2, "csp-a", Usage("mar", "a-cap", 1, kMarch.StartMs(), kMarch.StartMs() + kHour));
  auto run = r.Finish(2);
  ASSERT_TRUE(run.ok());
  ASSERT_EQ(run->invoices.at(0).lines.size(), 1u);
  EXPECT_EQ(run->invoices.at(0).lines[0].kind, LineKind::kBeyondCap);
  EXPECT_EQ(run->invoices.at(0).copay.won, 4'500);
}

// 2 GPUs for 4 hours; 1 GPU of the allocation declared out of service for the middle 2 hours:
// 2 GPU-hours are credited at the same prices.
TEST(InvoiceTest, UsageDuringADeclaredOutageIsCredited) {
  Rater r = StandardRater();
  const int64_t t = kMarch.StartMs() + 48 * kHour;
  r.ApplyUsage(1, "csp-a", Usage("u1", "a-sme", 2, t, t + 4 * kHour));
  v1::UsageEvent outage;
  outage.set_event_id("o1");
  auto* o = outage.mutable_outage();
  o->set_allocation_id("a-sme");
  o->set_program(v1::GOV_ADVANCED);
  o->set_gpu_model(v1::H200);
  o->set_gpu_count(1);
  o->set_start_ms(t + kHour);
  o->set_end_ms(t + 3 * kHour);
  o->set_cause("gpu-fault");
  r.ApplyUsage(2, "csp-a", outage);
  auto run = r.Finish(2);
  ASSERT_TRUE(run.ok());
  const Invoice& inv = run->invoices.at(0);
  ASSERT_EQ(inv.lines.size(), 2u);
  EXPECT_EQ(inv.lines[0].kind, LineKind::kUsage);
  EXPECT_EQ(inv.lines[0].list.won, 36'000);
  EXPECT_EQ(inv.lines[1].kind, LineKind::kOutageCredit);
  EXPECT_EQ(inv.lines[1].gpu_ms.ms, -2 * kHour);
  EXPECT_EQ(inv.lines[1].list.won, -9'000);
  EXPECT_EQ(inv.lines[1].copay.won, -810);
  EXPECT_EQ(inv.lines[1].subsidy.won, -8'190);
  EXPECT_EQ(inv.list.won, 27'000);
  EXPECT_EQ(inv.copay.won, 2'430);
  EXPECT_EQ(RenderCsv(*run).find("outage_credit") != std::string::npos, true);
}

TEST(InvoiceTest, UnpricedUsageIsListedNotDropped) {
  Rater r = StandardRater();
  const int64_t t = kMarch.StartMs();
  r.ApplyUsage(7, "csp-a", Usage("u1", "no-such-allocation", 1, t, t + kHour));
  auto run = r.Finish(7);
  ASSERT_TRUE(run.ok());
  EXPECT_TRUE(run->invoices.empty());
  ASSERT_EQ(run->unpriced.size(), 1u);
  EXPECT_EQ(run->unpriced[0].seq, 7u);
  EXPECT_NE(run->unpriced[0].why.find("no-such-allocation"), std::string::npos);
  EXPECT_NE(RenderTable(*run).find("could not be priced"), std::string::npos);
}

TEST(InvoiceTest, JsonIsCanonicalAndCsvHasOneRowPerLine) {
  Rater r = StandardRater();
  const int64_t t = kMarch.StartMs();
  r.ApplyUsage(1, "csp-a", Usage("u1", "a-uni", 1, t, t + kHour));
  r.ApplyUsage(2, "csp-a", Usage("u2", "a-sme", 1, t, t + kHour));
  auto run = r.Finish(2);
  ASSERT_TRUE(run.ok());
  const std::string json = RenderJson(*run);
  EXPECT_EQ(json, RenderJson(*r.Finish(2)));
  auto doc = nlohmann::json::parse(json);
  EXPECT_EQ(doc["totals"]["list_krw"], 9'000);
  EXPECT_EQ(doc["invoices"][0]["institution_id"], "sme");
  const std::string csv = RenderCsv(*run);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3);  // header + 2 lines
}

}  // namespace
}  // namespace gpuledger::settlement
