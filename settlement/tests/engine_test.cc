// The worked examples of docs/SETTLEMENT.md, each as a test.
#include "settlement/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "absl/strings/str_split.h"
#include "events.h"
#include "harness.h"
#include "settlement/render.h"

namespace gpuledger::settlement {
namespace {

using base::Period;
using testing::Harness;
using namespace testing;  // NOLINT: the event builders

const Period kMarch{2026, 3};
const Period kApril{2026, 4};

// Registry shared by the examples: a university (0%) and an SME (9%), 4,500 won per H200-hour.
void Standard(Harness& h) {
  h.Registry(Institution("uni", v1::ACADEMIA, 0));
  h.Registry(Institution("sme", v1::SME, 0));
  h.Registry(Allocation("a-uni", "uni"));
  h.Registry(Allocation("a-sme", "sme"));
  h.Registry(Rate(4'500, 0));
  h.Registry(Copay(v1::ACADEMIA, 0, 0));
  h.Registry(Copay(v1::SME, 900, 0));
}

// The one institution's lines: its invoice, or (if it owes nothing) its lines kept apart.
const v1::Invoice& OnlyInvoice(const v1::PeriodDocuments& d) {
  EXPECT_EQ(d.invoices_size() + d.nothing_owed_size(), 1);
  return d.invoices_size() > 0 ? d.invoices(0) : d.nothing_owed(0);
}

// The one line of `kind` on the invoice (an empty line, and a test failure, if not exactly one).
v1::InvoiceLine LineOfKind(const v1::Invoice& inv, v1::LineKind kind) {
  std::vector<v1::InvoiceLine> found;
  for (const auto& l : inv.lines()) {
    if (l.kind() == kind) found.push_back(l);
  }
  EXPECT_EQ(found.size(), 1u) << v1::LineKind_Name(kind);
  return found.size() == 1 ? found[0] : v1::InvoiceLine{};
}

TEST(InvoiceTest, AcademiaPaysNothingAndTheStatePaysAll) {
  Harness h;
  Standard(h);
  // 8 GPUs × 10 h on 2 March.
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Usage("csp-a", Usage("u1", "a-uni", 8, t, t + 10 * kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::Invoice& inv = OnlyInvoice(*d);
  EXPECT_EQ(inv.institution_id(), "uni");
  EXPECT_EQ(inv.totals().gpu_ms(), 80 * kHour);
  EXPECT_EQ(inv.totals().list_krw(), 360'000);
  EXPECT_EQ(inv.totals().copay_krw(), 0);
  EXPECT_EQ(inv.totals().subsidy_krw(), 360'000);
  EXPECT_EQ(inv.amount_due_krw(), 0);
}

TEST(InvoiceTest, SmePaysItsShareAndVatOnTop) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs();
  // 3 GPUs × 7 h 20 min = 22 GPU-hours = 99,000 won; 9% = 8,910; VAT 10% = 891.
  h.Usage("csp-a", Usage("u1", "a-sme", 3, t, t + 7 * kHour + 20 * 60'000));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok());
  const v1::Invoice& inv = OnlyInvoice(*d);
  EXPECT_EQ(inv.totals().list_krw(), 99'000);
  EXPECT_EQ(inv.totals().copay_krw(), 8'910);
  EXPECT_EQ(inv.totals().subsidy_krw(), 90'090);
  EXPECT_EQ(inv.vat_krw(), 891);
  EXPECT_EQ(inv.amount_due_krw(), 9'801);
}

TEST(InvoiceTest, UsageIsSplitAtTheMonthBoundaryInKst) {
  Harness h;
  Standard(h);
  // 4 h across midnight KST of 1 March: 1 h in February, 3 h in March.
  const int64_t start = kMarch.StartMs() - kHour;
  h.Usage("csp-a", Usage("u1", "a-uni", 2, start, start + 4 * kHour));
  for (const auto& [period, hours] : {std::pair{Period{2026, 2}, 1}, std::pair{kMarch, 3}}) {
    auto d = h.Docs(period);
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(OnlyInvoice(*d).totals().gpu_ms(), 2 * hours * kHour) << period.ToString();
  }
}

TEST(InvoiceTest, RateChangeMidIntervalMakesTwoLines) {
  Harness h;
  Standard(h);
  const int64_t change = kMarch.StartMs() + 15 * 24 * kHour;
  h.Registry(Rate(6'000, change));
  h.Usage("csp-a", Usage("u1", "a-sme", 1, change - 2 * kHour, change + kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok());
  const v1::Invoice& inv = OnlyInvoice(*d);
  ASSERT_EQ(inv.lines_size(), 2);
  EXPECT_EQ(inv.lines(0).krw_per_gpu_hour(), 4'500);
  EXPECT_EQ(inv.lines(0).gpu_ms(), 2 * kHour);
  EXPECT_EQ(inv.lines(1).krw_per_gpu_hour(), 6'000);
  EXPECT_EQ(inv.lines(1).gpu_ms(), kHour);
  EXPECT_EQ(inv.totals().list_krw(), 9'000 + 6'000);
}

TEST(InvoiceTest, SmeThatBecomesAUniversityMidMonth) {
  Harness h;
  Standard(h);
  const int64_t change = kMarch.StartMs() + 10 * 24 * kHour;
  h.Registry(Institution("sme", v1::ACADEMIA, change));
  h.Usage("csp-a", Usage("u1", "a-sme", 10, change - kHour, change + kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok());
  const v1::Invoice& inv = OnlyInvoice(*d);
  ASSERT_EQ(inv.lines_size(), 2);
  // 10 GPU-hours each side at 45,000 won: 9% before, 0% after.
  EXPECT_EQ(inv.lines(0).copay_bp() + inv.lines(1).copay_bp(), 900u);
  EXPECT_EQ(inv.totals().copay_krw(), 4'050);
  EXPECT_EQ(inv.totals().list_krw(), 90'000);
}

TEST(InvoiceTest, RoundsEachLineHalfAwayFromZero) {
  Harness h;
  h.Registry(Institution("sme", v1::SME, 0));
  h.Registry(Allocation("a", "sme"));
  h.Registry(Rate(1'800, 0));
  h.Registry(Copay(v1::SME, 5'000, 0));
  // 1 GPU × 1 s at 1,800 won/h = 0.5 won -> 1; 50% of 1 = 0.5 -> 1; subsidy 0.
  h.Usage("csp-a", Usage("u", "a", 1, kMarch.StartMs(), kMarch.StartMs() + 1'000));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(OnlyInvoice(*d).totals().list_krw(), 1);
  EXPECT_EQ(OnlyInvoice(*d).totals().copay_krw(), 1);
  EXPECT_EQ(OnlyInvoice(*d).totals().subsidy_krw(), 0);
}

TEST(InvoiceTest, CorrectionsReplaceOrCancel) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs();
  h.Usage("csp-a", Usage("u1", "a-uni", 1, t, t + kHour));
  h.Usage("csp-a", Usage("u2", "a-uni", 1, t, t + kHour));
  const auto two = Usage("x", "a-uni", 2, t, t + kHour);
  h.Usage("csp-a", Correction("c1", "u1", "a-uni", &two));
  h.Usage("csp-a", Correction("c2", "u2", "a-uni", nullptr));
  EXPECT_EQ(OnlyInvoice(*h.Docs(kMarch)).totals().gpu_ms(), 2 * kHour);
  // A correction of the correction replaces it in turn.
  const auto three = Usage("y", "a-uni", 3, t, t + kHour);
  h.Usage("csp-a", Correction("c3", "c1", "a-uni", &three));
  EXPECT_EQ(OnlyInvoice(*h.Docs(kMarch)).totals().gpu_ms(), 3 * kHour);
}

TEST(InvoiceTest, RejectedEntriesNeverCount) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs();
  h.Rejected("csp-a", Usage("u1", "a-uni", 1, t, t + kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->invoices_size(), 0);
}

// The SME's allocation is capped at 10 GPU-hours. 8 GPU-hours first, then 2 GPUs for 3 hours:
// the first hour (2 GPU-hours) fills the cap, the last two (4 GPU-hours) are beyond it and the
// SME pays all of them.
TEST(InvoiceTest, UsageBeyondTheGpuHourCapIsNotSubsidised) {
  Harness h;
  Standard(h);
  h.Registry(OverCap(v1::SME, v1::OVER_CAP_BILL_FULL));
  v1::RegistryEvent capped = Allocation("a-cap", "sme");
  capped.mutable_allocation()->set_gpu_ms_cap(10 * kHour);
  h.Registry(capped);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Usage("csp-a", Usage("u1", "a-cap", 4, t, t + 2 * kHour));
  h.Usage("csp-a", Usage("u2", "a-cap", 2, t + 5 * kHour, t + 8 * kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::Invoice& inv = OnlyInvoice(*d);
  ASSERT_EQ(inv.lines_size(), 2);
  EXPECT_EQ(inv.lines(0).kind(), v1::LINE_KIND_USAGE);
  EXPECT_EQ(inv.lines(0).gpu_ms(), 10 * kHour);
  EXPECT_EQ(inv.lines(0).copay_krw(), 4'050);  // 9% of 45,000
  EXPECT_EQ(inv.lines(1).kind(), v1::LINE_KIND_BEYOND_CAP);
  EXPECT_EQ(inv.lines(1).gpu_ms(), 4 * kHour);
  EXPECT_EQ(inv.lines(1).copay_bp(), 10'000u);
  EXPECT_EQ(inv.lines(1).copay_krw(), 18'000);
  EXPECT_EQ(inv.lines(1).subsidy_krw(), 0);
  EXPECT_EQ(inv.totals().list_krw(), 63'000);
  EXPECT_EQ(inv.totals().copay_krw(), 22'050);
  EXPECT_EQ(inv.totals().subsidy_krw(), 40'950);
}

// The cap split, worked to the millisecond: 8 GPU-hours used, then 2 GPUs for 3 hours with
// 2 GPU-hours and 1 ms left under the cap. 1 ms × 2 GPUs does not fit, so the cap is crossed
// after 3,600,000 ms (the last whole millisecond that fits), not 3,600,001: 10 GPU-hours exactly
// within, 4 beyond. (Kills the mutant that rounds the crossing up.)
TEST(InvoiceTest, TheCapIsCrossedAtTheLastWholeMillisecondThatFits) {
  Harness h;
  Standard(h);
  h.Registry(OverCap(v1::SME, v1::OVER_CAP_BILL_FULL));
  v1::RegistryEvent capped = Allocation("a-cap", "sme");
  capped.mutable_allocation()->set_gpu_ms_cap(10 * kHour + 1);
  h.Registry(capped);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Usage("csp-a", Usage("u1", "a-cap", 4, t, t + 2 * kHour));
  h.Usage("csp-a", Usage("u2", "a-cap", 2, t + 5 * kHour, t + 8 * kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::Invoice& inv = OnlyInvoice(*d);
  ASSERT_EQ(inv.lines_size(), 2);
  EXPECT_EQ(inv.lines(0).kind(), v1::LINE_KIND_USAGE);
  EXPECT_EQ(inv.lines(0).gpu_ms(), 10 * kHour);
  EXPECT_EQ(inv.lines(1).kind(), v1::LINE_KIND_BEYOND_CAP);
  EXPECT_EQ(inv.lines(1).gpu_ms(), 4 * kHour);
  EXPECT_EQ(inv.totals().copay_krw(), 4'050 + 18'000);
}

TEST(InvoiceTest, TheCapCountsUsageOfEarlierPeriodsInLedgerOrder) {
  Harness h;
  Standard(h);
  h.Registry(OverCap(v1::SME, v1::OVER_CAP_BILL_FULL));
  v1::RegistryEvent capped = Allocation("a-cap", "sme");
  capped.mutable_allocation()->set_gpu_ms_cap(kHour);
  h.Registry(capped);
  // February's hour used the whole cap; March's hour is beyond it.
  h.Usage("csp-a",
          Usage("feb", "a-cap", 1, kMarch.StartMs() - 2 * kHour, kMarch.StartMs() - kHour));
  h.Usage("csp-a", Usage("mar", "a-cap", 1, kMarch.StartMs(), kMarch.StartMs() + kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(OnlyInvoice(*d).lines_size(), 1);
  EXPECT_EQ(OnlyInvoice(*d).lines(0).kind(), v1::LINE_KIND_BEYOND_CAP);
  EXPECT_EQ(OnlyInvoice(*d).totals().copay_krw(), 4'500);
}

// With no programme policy, usage beyond a cap is held: on the invoice with its GPU-ms, worth
// 0 won to the institution and to the state, for a university and an SME alike.
TEST(InvoiceTest, UsageBeyondTheCapIsHeldWithoutAPolicy) {
  Harness h;
  Standard(h);
  v1::RegistryEvent capped = Allocation("a-cap", "uni");
  capped.mutable_allocation()->set_gpu_ms_cap(2 * kHour);
  h.Registry(capped);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Usage("csp-a", Usage("u1", "a-cap", 2, t, t + 3 * kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::Invoice& inv = OnlyInvoice(*d);
  ASSERT_EQ(inv.lines_size(), 2);
  EXPECT_EQ(LineOfKind(inv, v1::LINE_KIND_USAGE).gpu_ms(), 2 * kHour);
  EXPECT_EQ(LineOfKind(inv, v1::LINE_KIND_USAGE).subsidy_krw(), 9'000);
  const v1::InvoiceLine held = LineOfKind(inv, v1::LINE_KIND_HELD);
  EXPECT_EQ(held.gpu_ms(), 4 * kHour);
  EXPECT_EQ(held.list_krw(), 0);
  EXPECT_EQ(held.copay_krw(), 0);
  EXPECT_EQ(held.subsidy_krw(), 0);
  EXPECT_EQ(inv.totals().gpu_ms(), 6 * kHour);
  EXPECT_EQ(inv.totals().copay_krw(), 0);
  EXPECT_EQ(inv.amount_due_krw(), 0);
  // The CSP's statement shows the held GPU-hours delivered, and no subsidy for them.
  ASSERT_EQ(d->statements_size(), 1);
  EXPECT_EQ(d->statements(0).totals().gpu_ms(), 6 * kHour);
  EXPECT_EQ(d->statements(0).totals().subsidy_krw(), 9'000);
}

// Each over-cap action on both sides of the cap: within it the co-pay policy applies; beyond it
// the rule's own co-pay, the list price, or nothing (refused).
TEST(InvoiceTest, OverCapRulesPriceUsageBeyondTheCapAsThePolicySays) {
  struct Want {
    v1::OverCapAction action;
    uint32_t bp;
    v1::LineKind kind;
    int64_t copay_krw;  // of the 4 GPU-hours beyond the cap (list 18,000)
    int64_t subsidy_krw;
  };
  for (const Want& w : {Want{v1::OVER_CAP_BILL_AT, 2'500, v1::LINE_KIND_BEYOND_CAP, 4'500, 13'500},
                        Want{v1::OVER_CAP_BILL_FULL, 0, v1::LINE_KIND_BEYOND_CAP, 18'000, 0},
                        Want{v1::OVER_CAP_REFUSE, 0, v1::LINE_KIND_REFUSED, 0, 0},
                        Want{v1::OVER_CAP_HOLD, 0, v1::LINE_KIND_HELD, 0, 0}}) {
    SCOPED_TRACE(v1::OverCapAction_Name(w.action));
    Harness h;
    Standard(h);
    h.Registry(OverCap(v1::SME, w.action, w.bp));
    v1::RegistryEvent capped = Allocation("a-cap", "sme");
    capped.mutable_allocation()->set_gpu_ms_cap(2 * kHour);
    h.Registry(capped);
    const int64_t t = kMarch.StartMs() + 24 * kHour;
    h.Usage("csp-a", Usage("u1", "a-cap", 2, t, t + 3 * kHour));
    auto d = h.Docs(kMarch);
    ASSERT_TRUE(d.ok()) << d.status();
    const v1::Invoice& inv = OnlyInvoice(*d);
    ASSERT_EQ(inv.lines_size(), 2);
    EXPECT_EQ(LineOfKind(inv, v1::LINE_KIND_USAGE).copay_krw(), 810);  // 9% of 9,000
    const v1::InvoiceLine beyond = LineOfKind(inv, w.kind);
    EXPECT_EQ(beyond.gpu_ms(), 4 * kHour);
    EXPECT_EQ(beyond.copay_krw(), w.copay_krw);
    EXPECT_EQ(beyond.subsidy_krw(), w.subsidy_krw);
    EXPECT_EQ(inv.totals().copay_krw(), 810 + w.copay_krw);
  }
}

// A rule for another type, or another programme, does not apply: the SME's usage is held.
TEST(InvoiceTest, AnOverCapRuleAppliesToItsTypeAndProgrammeOnly) {
  Harness h;
  Standard(h);
  h.Registry(OverCap(v1::ACADEMIA, v1::OVER_CAP_BILL_FULL));
  h.Registry(OverCap(v1::SME, v1::OVER_CAP_BILL_FULL, 0, 0, v1::LEASE_HPC));
  v1::RegistryEvent capped = Allocation("a-cap", "sme");
  capped.mutable_allocation()->set_gpu_ms_cap(kHour);
  h.Registry(capped);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Usage("csp-a", Usage("u1", "a-cap", 1, t, t + 2 * kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(OnlyInvoice(*d).lines_size(), 2);
  EXPECT_EQ(LineOfKind(OnlyInvoice(*d), v1::LINE_KIND_HELD).gpu_ms(), kHour);
}

// A policy that changes mid-interval splits the usage beyond the cap there.
TEST(InvoiceTest, AnOverCapRuleTakesEffectAtItsDate) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Registry(OverCap(v1::SME, v1::OVER_CAP_BILL_FULL, 0, t + 2 * kHour));
  v1::RegistryEvent capped = Allocation("a-cap", "sme");
  capped.mutable_allocation()->set_gpu_ms_cap(kHour);
  h.Registry(capped);
  h.Usage("csp-a", Usage("u1", "a-cap", 1, t, t + 4 * kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::Invoice& inv = OnlyInvoice(*d);
  ASSERT_EQ(inv.lines_size(), 3);
  // From t + 2h billed in full; t + 1h to t + 2h held.
  EXPECT_EQ(LineOfKind(inv, v1::LINE_KIND_BEYOND_CAP).gpu_ms(), 2 * kHour);
  EXPECT_EQ(LineOfKind(inv, v1::LINE_KIND_HELD).gpu_ms(), kHour);
  EXPECT_EQ(inv.totals().copay_krw(), 405 + 9'000);
}

// The operator's release bills held usage at its co-pay: usage recorded before the release
// (including that of a closed month, as an adjustment) and after it. Outage credits of held usage
// are worth 0 won until then, and follow the usage when it is released.
TEST(InvoiceTest, AReleaseBillsHeldUsageAtItsCopay) {
  Harness h;
  Standard(h);
  v1::RegistryEvent capped = Allocation("a-cap", "uni");
  capped.mutable_allocation()->set_gpu_ms_cap(kHour);
  h.Registry(capped);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Usage("csp-a", Usage("u1", "a-cap", 2, t, t + 2 * kHour));  // 1 h within, 3 h held
  h.Usage("csp-a", Outage("o1", "a-cap", 1, t + kHour, t + 2 * kHour, "gpu-fault"));
  {
    auto d = h.Docs(kMarch);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(OnlyInvoice(*d).totals().copay_krw(), 0);
    EXPECT_EQ(OnlyInvoice(*d).totals().list_krw(), 4'500);    // the hour within the cap
    EXPECT_EQ(OnlyInvoice(*d).totals().gpu_ms(), 3 * kHour);  // 4 used, 1 credited
  }
  h.Close(kMarch);
  h.Registry(Release("a-cap", 1'000));
  const int64_t a = kApril.StartMs() + 24 * kHour;
  h.Usage("csp-a", Usage("u2", "a-cap", 1, a, a + kHour));
  auto d = h.Docs(kApril);
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::Invoice& inv = OnlyInvoice(*d);
  ASSERT_EQ(inv.lines_size(), 1);
  EXPECT_EQ(inv.lines(0).kind(), v1::LINE_KIND_BEYOND_CAP);
  EXPECT_EQ(inv.lines(0).copay_bp(), 1'000u);
  EXPECT_EQ(inv.lines(0).copay_krw(), 450);
  // March's 3 held GPU-hours less 1 credited: 2 GPU-hours at 10% of 4,500 won.
  int64_t adjusted_copay = 0;
  int64_t adjusted_list = 0;
  for (const auto& l : inv.adjustments()) {
    EXPECT_EQ(l.adjusts_period(), "2026-03");
    adjusted_copay += l.copay_krw();
    adjusted_list += l.list_krw();
  }
  EXPECT_EQ(adjusted_list, 9'000);
  EXPECT_EQ(adjusted_copay, 900);
  EXPECT_EQ(inv.totals().copay_krw(), 450 + 900);
}

// Usage taken back by a shortening gives its cap back: an interval recorded later, at an earlier
// time, is within the cap again.
TEST(InvoiceTest, UsageTakenBackGivesItsCapBack) {
  Harness h;
  Standard(h);
  h.Registry(OverCap(v1::SME, v1::OVER_CAP_BILL_FULL));
  v1::RegistryEvent capped = Allocation("a-cap", "sme");
  capped.mutable_allocation()->set_gpu_ms_cap(3 * kHour);
  h.Registry(capped);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Usage("csp-a", Usage("u1", "a-cap", 2, t + kHour, t + 3 * kHour));  // 3 within, 1 beyond
  v1::RegistryEvent shorten;
  shorten.mutable_allocation_amendment()->set_allocation_id("a-cap");
  shorten.mutable_allocation_amendment()->set_effective_from_ms(t);
  shorten.mutable_allocation_amendment()->set_new_end_ms(t + 2 * kHour);
  h.Registry(shorten);  // u1 keeps [t + 1 h, t + 2 h): 2 GPU-hours of the cap, 1 given back
  h.Usage("csp-a", Usage("u2", "a-cap", 1, t, t + 2 * kHour));  // 1 within, 1 beyond
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::Invoice& inv = OnlyInvoice(*d);
  EXPECT_EQ(LineOfKind(inv, v1::LINE_KIND_USAGE).gpu_ms(), 3 * kHour);
  EXPECT_EQ(LineOfKind(inv, v1::LINE_KIND_BEYOND_CAP).gpu_ms(), kHour);
  EXPECT_EQ(inv.totals().gpu_ms(), 4 * kHour);
}

// Issue 16, item 4: an allocation transferred to another CSP and institution keeps one cap.
// a-cap (the SME, csp-a) has 6 GPU-hours: u1 takes 4, u2 2 of which the transfer at t + 4 h
// takes back 1 (it ran after a-cap ended), so a-next (sme2, csp-b) has 1 left: u3's 3 GPU-hours
// are 1 within the cap and 2 beyond it.
TEST(InvoiceTest, ATransferKeepsTheCapAcrossCspsAndInstitutions) {
  Harness h;
  Standard(h);
  h.Registry(Institution("sme2", v1::SME, 0));
  h.Registry(OverCap(v1::SME, v1::OVER_CAP_BILL_FULL));
  v1::RegistryEvent capped = Allocation("a-cap", "sme");
  capped.mutable_allocation()->set_gpu_ms_cap(6 * kHour);
  h.Registry(capped);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Usage("csp-a", Usage("u1", "a-cap", 2, t, t + 2 * kHour));
  h.Usage("csp-a", Usage("u2", "a-cap", 1, t + 3 * kHour, t + 5 * kHour));
  v1::RegistryEvent move;
  move.mutable_allocation_amendment()->set_allocation_id("a-cap");
  move.mutable_allocation_amendment()->set_effective_from_ms(t + 4 * kHour);
  auto* to = move.mutable_allocation_amendment()->mutable_transfer();
  to->set_new_allocation_id("a-next");
  to->set_to_csp_id("csp-b");
  to->set_to_institution_id("sme2");
  h.Registry(move);
  h.Usage("csp-b", Usage("u3", "a-next", 1, t + 4 * kHour, t + 7 * kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->invoices_size(), 2);
  const v1::Invoice& first = d->invoices(0);
  const v1::Invoice& next = d->invoices(1);
  ASSERT_EQ(first.institution_id(), "sme");
  ASSERT_EQ(next.institution_id(), "sme2");
  EXPECT_EQ(LineOfKind(first, v1::LINE_KIND_USAGE).gpu_ms(), 5 * kHour);
  EXPECT_EQ(first.totals().gpu_ms(), 5 * kHour);
  EXPECT_EQ(LineOfKind(next, v1::LINE_KIND_USAGE).gpu_ms(), kHour);
  EXPECT_EQ(LineOfKind(next, v1::LINE_KIND_BEYOND_CAP).gpu_ms(), 2 * kHour);
  EXPECT_EQ(next.totals().gpu_ms(), 3 * kHour);
  // Each CSP's statement has what it delivered.
  ASSERT_EQ(d->statements_size(), 2);
  EXPECT_EQ(d->statements(0).csp_id(), "csp-a");
  EXPECT_EQ(d->statements(1).csp_id(), "csp-b");
  EXPECT_EQ(d->statements(1).totals().gpu_ms(), 3 * kHour);
}

// 2 GPUs for 4 hours; 1 GPU of the allocation declared out of service for the middle 2 hours:
// 2 GPU-hours are credited at the same prices. The outage is recorded after the usage.
TEST(InvoiceTest, UsageDuringADeclaredOutageIsCredited) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs() + 48 * kHour;
  h.Usage("csp-a", Usage("u1", "a-sme", 2, t, t + 4 * kHour));
  h.Usage("csp-a", Outage("o1", "a-sme", 1, t + kHour, t + 3 * kHour, "gpu-fault"));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok());
  const v1::Invoice& inv = OnlyInvoice(*d);
  ASSERT_EQ(inv.lines_size(), 2);
  EXPECT_EQ(inv.lines(0).kind(), v1::LINE_KIND_USAGE);
  EXPECT_EQ(inv.lines(0).list_krw(), 36'000);
  EXPECT_EQ(inv.lines(1).kind(), v1::LINE_KIND_OUTAGE_CREDIT);
  EXPECT_EQ(inv.lines(1).gpu_ms(), -2 * kHour);
  EXPECT_EQ(inv.lines(1).list_krw(), -9'000);
  EXPECT_EQ(inv.lines(1).copay_krw(), -810);
  EXPECT_EQ(inv.lines(1).subsidy_krw(), -8'190);
  EXPECT_EQ(inv.totals().list_krw(), 27'000);
  EXPECT_EQ(inv.totals().copay_krw(), 2'430);
  EXPECT_NE(RenderCsv(*d, "invoices").find("outage_credit"), std::string::npos);
  // The CSP statement shows the outage by cause.
  ASSERT_EQ(d->statements_size(), 1);
  ASSERT_EQ(d->statements(0).outages_size(), 1);
  EXPECT_EQ(d->statements(0).outages(0).cause(), "gpu-fault");
  EXPECT_EQ(d->statements(0).outages(0).scope(), "allocation");
  EXPECT_EQ(d->statements(0).outages(0).gpu_ms(), 2 * kHour);
}

// Credit is capped by the usage's GPUs at each instant. 2 GPUs for 4 hours; outages of 1 GPU
// for the first 3 hours and 2 GPUs for the last 2: 1 GPU is out for 2 h, 3 GPUs for 1 h (only
// the 2 in use are credited), 2 GPUs for 1 h: 2 + 2 + 2 = 6 GPU-hours credited, not 7.
// (Kills the mutants that credit every GPU declared out, or the larger of the two counts.)
TEST(InvoiceTest, AnOutageCreditsAtMostTheGpusInUse) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs() + 48 * kHour;
  h.Usage("csp-a", Usage("u1", "a-sme", 2, t, t + 4 * kHour));
  h.Usage("csp-a", Outage("o1", "a-sme", 1, t, t + 3 * kHour, "fan"));
  h.Usage("csp-a", Outage("o2", "a-sme", 2, t + 2 * kHour, t + 4 * kHour, "power"));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::Invoice& inv = OnlyInvoice(*d);
  ASSERT_EQ(inv.lines_size(), 2);
  EXPECT_EQ(inv.lines(1).kind(), v1::LINE_KIND_OUTAGE_CREDIT);
  EXPECT_EQ(inv.lines(1).gpu_ms(), -6 * kHour);
  EXPECT_EQ(inv.lines(1).list_krw(), -27'000);
  EXPECT_EQ(inv.totals().gpu_ms(), 2 * kHour);
}

// An outage credits at most the GPUs it took out, across all the allocation's usage at each
// instant: two 3-GPU intervals under one 2-GPU outage of 2 hours are credited 2 GPUs × 2 h =
// 4 GPU-hours, not 8 (issue 16). One more GPU out credits 3 and not 4; and a 2-GPU outage
// over two 1-GPU intervals credits both. (Kills the mutant that caps credits per interval.)
TEST(InvoiceTest, AnOutageCreditsEachGpuOutOnceAcrossTheAllocationsUsage) {
  const int64_t t = kMarch.StartMs() + 48 * kHour;
  struct Case {
    int64_t usage_gpus;
    int64_t out_gpus;
    int64_t credited_gpus;
  };
  for (const Case c : {Case{3, 2, 2}, Case{3, 3, 3}, Case{1, 2, 2}, Case{1, 1, 1}}) {
    SCOPED_TRACE(absl::StrCat(c.usage_gpus, " GPUs twice, ", c.out_gpus, " out"));
    Harness h;
    Standard(h);
    h.Usage("csp-a", Usage("u1", "a-sme", c.usage_gpus, t, t + 4 * kHour));
    h.Usage("csp-a", Usage("u2", "a-sme", c.usage_gpus, t, t + 4 * kHour));
    h.Usage("csp-a", Outage("o1", "a-sme", c.out_gpus, t + kHour, t + 3 * kHour, "fan"));
    auto d = h.Docs(kMarch);
    ASSERT_TRUE(d.ok()) << d.status();
    const v1::InvoiceLine credit = LineOfKind(OnlyInvoice(*d), v1::LINE_KIND_OUTAGE_CREDIT);
    EXPECT_EQ(credit.gpu_ms(), -c.credited_gpus * 2 * kHour);
    EXPECT_EQ(OnlyInvoice(*d).totals().gpu_ms(),
              (2 * c.usage_gpus * 4 - c.credited_gpus * 2) * kHour);
  }
}

// The order of arrival does not change the credits: the outage first, then the usage; and usage
// taken back by a correction leaves the credit to the usage still there.
TEST(InvoiceTest, CreditsPerAllocationDoNotDependOnArrivalAndFollowCorrections) {
  const int64_t t = kMarch.StartMs() + 48 * kHour;
  Harness h;
  Standard(h);
  h.Usage("csp-a", Outage("o1", "a-sme", 2, t + kHour, t + 3 * kHour, "fan"));
  h.Usage("csp-a", Usage("u2", "a-sme", 3, t, t + 4 * kHour));
  h.Usage("csp-a", Usage("u1", "a-sme", 3, t, t + 4 * kHour));
  {
    auto d = h.Docs(kMarch);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(LineOfKind(OnlyInvoice(*d), v1::LINE_KIND_OUTAGE_CREDIT).gpu_ms(), -4 * kHour);
  }
  // u1 (first by event id) had the credit; cancelled, u2 takes it.
  h.Usage("csp-a", Correction("c1", "u1", "a-sme", nullptr));
  {
    auto d = h.Docs(kMarch);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(LineOfKind(OnlyInvoice(*d), v1::LINE_KIND_OUTAGE_CREDIT).gpu_ms(), -4 * kHour);
    EXPECT_EQ(OnlyInvoice(*d).totals().gpu_ms(), (12 - 4) * kHour);
  }
  // Cut short by a revocation after 2 hours: the credit is 2 GPUs × 1 h.
  v1::RegistryEvent revoke;
  revoke.mutable_allocation_amendment()->set_allocation_id("a-sme");
  revoke.mutable_allocation_amendment()->set_effective_from_ms(t + 2 * kHour);
  revoke.mutable_allocation_amendment()->set_revoke(true);
  h.Registry(revoke);
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(LineOfKind(OnlyInvoice(*d), v1::LINE_KIND_OUTAGE_CREDIT).gpu_ms(), -2 * kHour);
  EXPECT_EQ(OnlyInvoice(*d).totals().gpu_ms(), (6 - 2) * kHour);
}

// Billed usage is credited before held usage at the same instant: a cap of 4 GPU-hours; u1
// (1 GPU × 4 h) fills it; u2 (1 GPU × 4 h, same hours) is held; 1 GPU out for 2 h credits u1.
TEST(InvoiceTest, BilledUsageTakesTheCreditBeforeHeldUsage) {
  const int64_t t = kMarch.StartMs() + 48 * kHour;
  Harness h;
  Standard(h);
  v1::RegistryEvent capped = Allocation("a-cap", "sme");
  capped.mutable_allocation()->set_gpu_ms_cap(4 * kHour);
  h.Registry(capped);
  h.Usage("csp-a", Outage("o1", "a-cap", 1, t + kHour, t + 3 * kHour, "fan"));
  h.Usage("csp-a", Usage("z-first", "a-cap", 1, t, t + 4 * kHour));
  h.Usage("csp-a", Usage("a-second", "a-cap", 1, t, t + 4 * kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::Invoice& inv = OnlyInvoice(*d);
  int64_t billed_credit = 0, held_credit = 0;
  for (const auto& l : inv.lines()) {
    if (l.kind() != v1::LINE_KIND_OUTAGE_CREDIT) continue;
    (l.krw_per_gpu_hour() == 0 ? held_credit : billed_credit) += l.gpu_ms();
  }
  EXPECT_EQ(billed_credit, -2 * kHour);
  EXPECT_EQ(held_credit, 0);
  EXPECT_EQ(LineOfKind(inv, v1::LINE_KIND_HELD).gpu_ms(), 4 * kHour);
  EXPECT_EQ(inv.totals().list_krw(), 2 * 4'500);
}

// VAT is computed once, on the invoice's co-pay total, and rounded once: three lines of 5 won
// co-pay (9% of 56 won) make 15 won, VAT 1.5 -> 2 won; rounding each line's 0.5 won would give 3.
// (Kills the mutant that sums per-line VAT.)
TEST(InvoiceTest, VatIsRoundedOncePerInvoice) {
  Harness h;
  h.Registry(Institution("sme", v1::SME, 0));
  for (const char* a : {"a1", "a2", "a3"}) h.Registry(Allocation(a, "sme"));
  h.Registry(Rate(56, 0));
  h.Registry(Copay(v1::SME, 900, 0));
  const int64_t t = kMarch.StartMs();
  h.Usage("csp-a", Usage("u1", "a1", 1, t, t + kHour));
  h.Usage("csp-a", Usage("u2", "a2", 1, t, t + kHour));
  h.Usage("csp-a", Usage("u3", "a3", 1, t, t + kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::Invoice& inv = OnlyInvoice(*d);
  ASSERT_EQ(inv.lines_size(), 3);
  for (const auto& l : inv.lines()) EXPECT_EQ(l.copay_krw(), 5);
  EXPECT_EQ(inv.totals().copay_krw(), 15);
  EXPECT_EQ(inv.vat_krw(), 2);
  EXPECT_EQ(inv.amount_due_krw(), 17);
}

TEST(InvoiceTest, AnOutageBeforeTheUsageCreditsItToo) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs() + 48 * kHour;
  h.Usage("csp-a", Outage("o1", "a-sme", 1, t + kHour, t + 3 * kHour, "gpu-fault"));
  h.Usage("csp-a", Usage("u1", "a-sme", 2, t, t + 4 * kHour));
  EXPECT_EQ(OnlyInvoice(*h.Docs(kMarch)).totals().list_krw(), 27'000);
}

// A withdrawn outage stops counting: the credit it gave goes (an adjustment once the month is
// closed), and so does its row on the CSP's statement.
TEST(InvoiceTest, AWithdrawnOutageTakesBackItsCreditsAndStatementRows) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Usage("csp-a", Usage("u1", "a-sme", 2, t, t + 4 * kHour));
  h.Usage("csp-a", Outage("o1", "a-sme", 1, t + kHour, t + 3 * kHour, "gpu-fault"));
  {
    auto d = h.Docs(kMarch);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(OnlyInvoice(*d).totals().list_krw(), 27'000);
    ASSERT_EQ(d->statements_size(), 1);
    EXPECT_EQ(d->statements(0).outages_size(), 1);
  }
  h.Close(kMarch);
  v1::UsageEvent w;
  w.set_event_id("w1");
  w.mutable_outage_withdrawal()->set_target_event_id("o1");
  w.mutable_outage_withdrawal()->set_allocation_id("a-sme");
  w.mutable_outage_withdrawal()->set_program(v1::GOV_ADVANCED);
  w.mutable_outage_withdrawal()->set_gpu_model(v1::H200);
  h.Usage("csp-a", w);
  auto d = h.Docs(kApril);
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::Invoice& inv = OnlyInvoice(*d);
  ASSERT_EQ(inv.adjustments_size(), 1);
  EXPECT_EQ(inv.adjustments(0).kind(), v1::LINE_KIND_OUTAGE_CREDIT);
  EXPECT_EQ(inv.adjustments(0).gpu_ms(), 2 * kHour);  // the credit taken back
  EXPECT_EQ(inv.adjustments(0).list_krw(), 9'000);
  ASSERT_EQ(d->statements_size(), 1);
  ASSERT_EQ(d->statements(0).outage_adjustments_size(), 1);
  EXPECT_EQ(d->statements(0).outage_adjustments(0).gpu_ms(), -2 * kHour);
}

TEST(InvoiceTest, UnpricedUsageIsListedNotDropped) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs();
  const uint64_t seq = h.Usage("csp-a", Usage("u1", "no-such-allocation", 1, t, t + kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->invoices_size(), 0);
  ASSERT_EQ(d->unpriced_size(), 1);
  EXPECT_EQ(d->unpriced(0).seq(), seq);
  EXPECT_NE(d->unpriced(0).why().find("no-such-allocation"), std::string::npos);
  EXPECT_NE(RenderTable(*d).find("could not be priced"), std::string::npos);
  EXPECT_EQ(d->unpriced(0).gpu_ms(), kHour);
}

// Usage of a known allocation that no rate card prices yet is on its institution's invoice as an
// `unpriced` line with its GPU-ms and 0 won, and in the list with the reason; once a rate card is
// in force, usage from then on is priced. No outage credit applies to the unpriced part.
TEST(InvoiceTest, UsageThatCannotBePricedIsOnTheInvoiceWithItsGpuMs) {
  Harness h;
  Standard(h);  // no rate card for B200
  v1::RegistryEvent b200 = Allocation("a-b200", "sme");
  b200.mutable_allocation()->set_gpu_model(v1::B200);
  h.Registry(b200);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Registry(Rate(9'000, t + 2 * kHour, v1::GOV_ADVANCED, v1::B200));
  h.Usage("csp-a", Outage("o1", "a-b200", 2, t, t + 3 * kHour, "fan"));
  h.Usage("csp-a", Usage("u1", "a-b200", 2, t, t + 3 * kHour, v1::B200));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::Invoice& inv = OnlyInvoice(*d);
  const v1::InvoiceLine unpriced = LineOfKind(inv, v1::LINE_KIND_UNPRICED);
  EXPECT_EQ(unpriced.gpu_ms(), 4 * kHour);
  EXPECT_EQ(unpriced.list_krw(), 0);
  EXPECT_EQ(unpriced.copay_krw(), 0);
  EXPECT_EQ(LineOfKind(inv, v1::LINE_KIND_USAGE).gpu_ms(), 2 * kHour);
  EXPECT_EQ(LineOfKind(inv, v1::LINE_KIND_USAGE).list_krw(), 18'000);
  EXPECT_EQ(LineOfKind(inv, v1::LINE_KIND_OUTAGE_CREDIT).gpu_ms(), -2 * kHour);  // priced hour
  EXPECT_EQ(inv.totals().gpu_ms(), 4 * kHour);
  EXPECT_EQ(inv.totals().list_krw(), 0);
  ASSERT_EQ(d->unpriced_size(), 1);
  EXPECT_EQ(d->unpriced(0).gpu_ms(), 4 * kHour);
  EXPECT_NE(d->unpriced(0).why().find("no rate card"), std::string::npos);
  EXPECT_NE(InvoiceJson(inv).find("\"unpriced\""), std::string::npos);
}

v1::RegistryEvent Rerating(int64_t from, int64_t to, v1::GpuModel model = v1::H200) {
  v1::RegistryEvent e;
  auto* r = e.mutable_rerating();
  r->set_program(v1::GOV_ADVANCED);
  r->set_gpu_model(model);
  r->set_from_ms(from);
  r->set_to_ms(to);
  r->set_reason("rate card 2026-03 recorded late");
  return e;
}

// A rate card effective earlier but recorded after the usage does not reprice it by itself (the
// usage was priced when recorded); the operator's re-rating does, over its range only. The SME
// used 2 GPUs × 4 h at 4,500 won; a 6,000-won card effective from the usage's start is recorded
// later; a re-rating of the first 2 hours prices them at 6,000: 4 GPU-hours at 6,000 and 4 at
// 4,500. A re-rating of another model changes nothing.
TEST(InvoiceTest, AReratingRepricesItsRangeWithTheRegistryAsItIsNow) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs() + 48 * kHour;
  h.Usage("csp-a", Usage("u1", "a-sme", 2, t, t + 4 * kHour));
  h.Registry(Rate(6'000, t));
  auto before = h.Docs(kMarch);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(OnlyInvoice(*before).totals().list_krw(), 36'000);
  h.Registry(Rerating(t, t + 2 * kHour, v1::B200));
  EXPECT_EQ(OnlyInvoice(*h.Docs(kMarch)).totals().list_krw(), 36'000);
  h.Registry(Rerating(t - kHour, t + 2 * kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::Invoice& inv = OnlyInvoice(*d);
  ASSERT_EQ(inv.lines_size(), 2);
  std::map<int64_t, int64_t> gpu_ms_by_rate;
  for (const auto& l : inv.lines()) gpu_ms_by_rate[l.krw_per_gpu_hour()] += l.gpu_ms();
  EXPECT_EQ(gpu_ms_by_rate[6'000], 4 * kHour);
  EXPECT_EQ(gpu_ms_by_rate[4'500], 4 * kHour);
  EXPECT_EQ(inv.totals().list_krw(), 24'000 + 18'000);
  EXPECT_EQ(inv.totals().gpu_ms(), 8 * kHour);
}

// Re-rating keeps what the usage took from its cap (the split stays at the same instant), and an
// outage credit follows the new price. Usage that could not be priced becomes priced once the
// missing record exists and a re-rating covers it.
TEST(InvoiceTest, AReratingKeepsTheCapSplitMovesCreditsAndPricesUnpricedUsage) {
  Harness h;
  h.Registry(Institution("sme", v1::SME, 0));
  h.Registry(Copay(v1::SME, 900, 0));
  h.Registry(OverCap(v1::SME, v1::OVER_CAP_BILL_FULL));
  v1::RegistryEvent capped = Allocation("a-cap", "sme");
  capped.mutable_allocation()->set_gpu_ms_cap(3 * kHour);
  h.Registry(capped);
  const int64_t t = kMarch.StartMs() + 48 * kHour;
  h.Usage("csp-a", Usage("u1", "a-cap", 1, t, t + 4 * kHour));  // no rate card: unpriced
  h.Usage("csp-a", Outage("o1", "a-cap", 1, t + 3 * kHour, t + 4 * kHour, "fan"));
  h.Registry(Rate(4'500, 0));
  {
    auto d = h.Docs(kMarch);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(LineOfKind(OnlyInvoice(*d), v1::LINE_KIND_UNPRICED).gpu_ms(), 4 * kHour);
    EXPECT_GT(d->unpriced_size(), 0);
  }
  h.Registry(Rerating(t, t + 4 * kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::Invoice& inv = OnlyInvoice(*d);
  EXPECT_EQ(LineOfKind(inv, v1::LINE_KIND_USAGE).gpu_ms(), 3 * kHour);
  EXPECT_EQ(LineOfKind(inv, v1::LINE_KIND_BEYOND_CAP).gpu_ms(), kHour);
  const v1::InvoiceLine credit = LineOfKind(inv, v1::LINE_KIND_OUTAGE_CREDIT);
  EXPECT_EQ(credit.gpu_ms(), -kHour);
  EXPECT_EQ(credit.krw_per_gpu_hour(), 4'500);
  EXPECT_EQ(credit.copay_bp(), 10'000u);  // the credited hour is the one beyond the cap
  EXPECT_EQ(d->unpriced_size(), 0);
  for (const auto& l : inv.lines()) EXPECT_NE(l.kind(), v1::LINE_KIND_UNPRICED);
  EXPECT_EQ(inv.totals().list_krw(), 3 * 4'500);
}

// A re-rating of a closed month leaves its documents as frozen and puts the difference on the
// first open month as adjustments.
TEST(CloseTest, AReratingOfAClosedMonthIsAnAdjustment) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs() + 48 * kHour;
  h.Usage("csp-a", Usage("u1", "a-sme", 2, t, t + 4 * kHour));
  h.Close(kMarch);
  auto frozen = h.Docs(kMarch);
  ASSERT_TRUE(frozen.ok()) << frozen.status();
  h.Registry(Rate(6'000, t));
  h.Registry(Rerating(t, t + 4 * kHour));
  auto march = h.Docs(kMarch);
  ASSERT_TRUE(march.ok()) << march.status();
  EXPECT_EQ(RenderCsv(*march, "invoices"), RenderCsv(*frozen, "invoices"));
  auto april = h.Docs(kApril);
  ASSERT_TRUE(april.ok()) << april.status();
  const v1::Invoice& inv = OnlyInvoice(*april);
  int64_t list = 0, gpu_ms = 0;
  for (const auto& a : inv.adjustments()) {
    EXPECT_EQ(a.adjusts_period(), "2026-03");
    list += a.list_krw();
    gpu_ms += a.gpu_ms();
  }
  EXPECT_EQ(gpu_ms, 0);              // the same hours, at another price
  EXPECT_EQ(list, 48'000 - 36'000);  // 8 GPU-hours at 6,000 instead of 4,500
}

// A re-rating prices own use again too, over its range and for its model only (issue 16, item
// 5): csp-a's 10 B200 GPU-hours of own use had no rate card when recorded (unpriced); a card of
// 8,000 won effective from their start, recorded later, values nothing by itself; a re-rating of
// the first 4 hours values those at 8,000 (32,000 won) and leaves 6 unpriced. Its H200 own use
// (2 GPU-hours at 4,500) is untouched by a B200 re-rating.
TEST(StatementTest, AReratingValuesOwnUseAgainOverItsRange) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Registry(Pool("csp-a", 10, 0));
  h.Registry(Pool("csp-a", 4, 0, v1::GOV_ADVANCED, v1::B200));
  h.Registry(Contract("csp-a", 1'000, 0));
  h.Usage("csp-a", OwnUse("own-b", 1, t, t + 10 * kHour, v1::GOV_ADVANCED, v1::B200));
  h.Usage("csp-a", OwnUse("own-h", 1, t, t + 2 * kHour));
  auto row = [&](v1::GpuModel model) {
    auto d = h.Docs(kMarch);
    EXPECT_TRUE(d.ok()) << d.status();
    v1::OwnUseRow out;
    for (const auto& r : d->statements(0).own_use()) {
      if (r.gpu_model() == model) out = r;
    }
    return out;
  };
  EXPECT_EQ(row(v1::B200).unpriced_gpu_ms(), 10 * kHour);
  h.Registry(Rate(8'000, t, v1::GOV_ADVANCED, v1::B200));
  EXPECT_EQ(row(v1::B200).unpriced_gpu_ms(), 10 * kHour);
  EXPECT_EQ(row(v1::B200).value_krw(), 0);
  h.Registry(Rerating(t, t + 4 * kHour, v1::B200));
  EXPECT_EQ(row(v1::B200).value_krw(), 4 * 8'000);
  EXPECT_EQ(row(v1::B200).unpriced_gpu_ms(), 6 * kHour);
  EXPECT_EQ(row(v1::H200).value_krw(), 2 * 4'500);
  // The same range again changes nothing; the rest of it prices the other 6 hours.
  h.Registry(Rerating(t, t + 4 * kHour, v1::B200));
  EXPECT_EQ(row(v1::B200).value_krw(), 4 * 8'000);
  h.Registry(Rerating(t - kHour, t + 30 * kHour, v1::B200));
  EXPECT_EQ(row(v1::B200).value_krw(), 10 * 8'000);
  EXPECT_EQ(row(v1::B200).unpriced_gpu_ms(), 0);
  EXPECT_EQ(row(v1::B200).own_use_gpu_ms(), 10 * kHour);
}

// Own use of a closed month re-rated: the month stays as billed; the first open month's
// statement carries the difference in value as an own-use adjustment (the whole month is over
// the cap of 0, so the excess value moves with it).
TEST(CloseTest, AReratingOfClosedOwnUseIsAnAdjustmentOfItsValue) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Registry(Pool("csp-a", 10, 0));
  h.Registry(Contract("csp-a", 0, 0));
  h.Usage("csp-a", OwnUse("own", 2, t, t + 5 * kHour));  // 10 GPU-hours at 4,500
  h.Close(kMarch);
  auto frozen = h.Docs(kMarch);
  ASSERT_TRUE(frozen.ok()) << frozen.status();
  h.Registry(Rate(6'000, t));
  h.Registry(Rerating(t, t + 5 * kHour));
  auto march = h.Docs(kMarch);
  ASSERT_TRUE(march.ok()) << march.status();
  EXPECT_EQ(StatementJson(march->statements(0)), StatementJson(frozen->statements(0)));
  auto april = h.Docs(kApril);
  ASSERT_TRUE(april.ok()) << april.status();
  const v1::CspStatement& s = april->statements(0);
  ASSERT_EQ(s.own_use_adjustments_size(), 1);
  EXPECT_EQ(s.own_use_adjustments(0).adjusts_period(), "2026-03");
  EXPECT_EQ(s.own_use_adjustments(0).own_use_gpu_ms(), 0);
  EXPECT_EQ(s.own_use_adjustments(0).value_krw(), 10 * (6'000 - 4'500));
  EXPECT_EQ(s.own_use_adjustments(0).excess_value_krw(), 10 * (6'000 - 4'500));
}

// csp-a's 4 LEASE_HPC H200 GPUs, reserved from the start, at 3,000 won per GPU-hour and 3,600
// from 16 March; an SME allocation of 2 GPUs on them.
void ReservedLease(Harness& h, bool reserved) {
  Standard(h);
  v1::RegistryEvent pool = Pool("csp-a", 4, 0, v1::LEASE_HPC, v1::H200);
  if (reserved) pool.mutable_gpu_pool()->set_lease_pricing(v1::LEASE_PRICING_RESERVED);
  h.Registry(pool);
  h.Registry(Rate(3'000, 0, v1::LEASE_HPC));
  h.Registry(Rate(3'600, kMarch.StartMs() + 15 * 24 * kHour, v1::LEASE_HPC));
  h.Registry(Allocation("a-sme-l", "sme", "csp-a", 2, v1::LEASE_HPC));
}

// A leased pool priced per reserved capacity (issue 16, item 4): the state pays its GPUs × hours
// less those out of service, at the rate card, whatever was used. March: a pool outage of 2 GPUs
// for 10 hours and an allocation outage of 3 GPUs over 5 of them (5 out, at most the pool's 4):
// 2×5 + 4×5 = 30 GPU-hours out. Charged: 4×360 − 30 = 1,410 GPU-hours at 3,000 before 16 March,
// 4×384 = 1,536 at 3,600 after: 9,759,600 won. The SME used 2 GPUs × 100 h at 3,600 (list
// 720,000, co-pay 9% 64,800): the state pays the charge less the co-pay, 9,694,800. Priced per
// delivered GPU-hour, the same month pays the usage's subsidy, 655,200.
TEST(StatementTest, AReservedLeasePoolIsPaidItsCapacityLessOutagesAtTheRateCard) {
  for (bool reserved : {false, true}) {
    SCOPED_TRACE(reserved ? "reserved" : "delivered");
    Harness h;
    ReservedLease(h, reserved);
    const int64_t t = kMarch.StartMs() + 24 * kHour;
    h.Usage("csp-a", Outage("out-pool", "", 2, t, t + 10 * kHour, "power", v1::LEASE_HPC));
    h.Usage("csp-a", Outage("out-alloc", "a-sme-l", 3, t + 5 * kHour, t + 10 * kHour, "gpu-fault",
                            v1::LEASE_HPC));
    const int64_t u = kMarch.StartMs() + 20 * 24 * kHour;
    h.Usage("csp-a", Usage("u1", "a-sme-l", 2, u, u + 100 * kHour));
    auto d = h.Docs(kMarch);
    ASSERT_TRUE(d.ok()) << d.status();
    ASSERT_EQ(d->statements_size(), 1);
    const v1::CspStatement& s = d->statements(0);
    EXPECT_EQ(s.totals().subsidy_krw(), 655'200);
    if (!reserved) {
      EXPECT_EQ(s.reserved_size(), 0);
      EXPECT_EQ(s.reservation_difference_krw(), 0);
      EXPECT_EQ(s.payable_krw(), 655'200);
      continue;
    }
    ASSERT_EQ(s.reserved_size(), 1);
    const v1::ReservedRow& r = s.reserved(0);
    EXPECT_EQ(r.program(), v1::LEASE_HPC);
    EXPECT_EQ(r.reserved_gpu_ms(), 4 * 744 * kHour);
    EXPECT_EQ(r.out_of_service_gpu_ms(), 30 * kHour);
    EXPECT_EQ(r.charged_gpu_ms(), (4 * 744 - 30) * kHour);
    EXPECT_EQ(r.unpriced_gpu_ms(), 0);
    EXPECT_EQ(r.charge_krw(), 1'410 * 3'000 + 1'536 * 3'600);
    EXPECT_EQ(r.delivered_list_krw(), 720'000);
    EXPECT_EQ(r.copay_krw(), 64'800);
    EXPECT_EQ(r.subsidy_krw(), 9'759'600 - 64'800);
    EXPECT_EQ(s.reservation_difference_krw(), 9'759'600 - 720'000);
    EXPECT_EQ(s.payable_krw(), 9'759'600 - 64'800);
    // The programme's summary: its cost to the state is the subsidy plus the difference.
    for (const auto& ps : d->programs()) {
      EXPECT_EQ(ps.reservation_difference_krw(),
                ps.program() == v1::LEASE_HPC ? 9'759'600 - 720'000 : 0);
    }
    // The invoice does not change: the SME pays its co-pay on what it used.
    EXPECT_EQ(OnlyInvoice(*d).totals().copay_krw(), 64'800);
    const std::string json = StatementJson(s);
    EXPECT_NE(json.find("\"charge_krw\": 9759600"), std::string::npos) << json;
    const std::string csv = RenderCsv(*d, "statements");
    EXPECT_NE(csv.find(",reserved,LEASE_HPC,H200,"), std::string::npos) << csv;
    // Every row has the header's columns (no field here holds a comma).
    const std::vector<std::string> rows = absl::StrSplit(csv, "\r\n", absl::SkipEmpty());
    for (const std::string& line : rows) {
      EXPECT_EQ(std::count(line.begin(), line.end(), ','),
                std::count(rows[0].begin(), rows[0].end(), ','))
          << line;
    }
  }
}

// A closed month's reservation is what its statement billed; an outage recorded after the close
// (1 GPU for 24 hours at 3,000) comes as a reserved adjustment on April's statement, taking
// 72,000 won off what the state pays; once April closes, May carries nothing.
TEST(CloseTest, AReservationChangedAfterItsMonthClosedIsAnAdjustment) {
  Harness h;
  ReservedLease(h, true);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Close(kMarch);
  auto frozen = h.Docs(kMarch);
  ASSERT_TRUE(frozen.ok()) << frozen.status();
  ASSERT_EQ(frozen->statements(0).reserved_size(), 1);
  h.Usage("csp-a", Outage("late", "", 1, t, t + 24 * kHour, "power", v1::LEASE_HPC));
  auto march = h.Docs(kMarch);
  ASSERT_TRUE(march.ok()) << march.status();
  EXPECT_EQ(StatementJson(march->statements(0)), StatementJson(frozen->statements(0)));
  auto april = h.Docs(kApril);
  ASSERT_TRUE(april.ok()) << april.status();
  const v1::CspStatement& s = april->statements(0);
  ASSERT_EQ(s.reserved_size(), 1);
  EXPECT_EQ(s.reserved(0).charge_krw(), 4 * 720 * 3'600);
  ASSERT_EQ(s.reserved_adjustments_size(), 1);
  const v1::ReservedRow& a = s.reserved_adjustments(0);
  EXPECT_EQ(a.adjusts_period(), "2026-03");
  EXPECT_EQ(a.reserved_gpu_ms(), 0);
  EXPECT_EQ(a.out_of_service_gpu_ms(), 24 * kHour);
  EXPECT_EQ(a.charged_gpu_ms(), -24 * kHour);
  EXPECT_EQ(a.charge_krw(), -72'000);
  EXPECT_EQ(s.reservation_difference_krw(), 4 * 720 * 3'600 - 72'000);
  EXPECT_EQ(s.payable_krw(), 4 * 720 * 3'600 - 72'000);
  h.Close(kApril);
  auto may = h.Docs(Period{2026, 5});
  ASSERT_TRUE(may.ok()) << may.status();
  EXPECT_EQ(may->statements(0).reserved_adjustments_size(), 0);
  EXPECT_EQ(may->statements(0).reserved(0).charge_krw(), 4 * 744 * 3'600);
}

TEST(InvoiceTest, JsonIsCanonicalAndCsvHasOneRowPerLine) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs();
  h.Usage("csp-a", Usage("u1", "a-uni", 1, t, t + kHour));
  h.Usage("csp-a", Usage("u2", "a-sme", 1, t, t + kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok());
  const std::string json = PeriodJson(*d);
  EXPECT_EQ(json, PeriodJson(*h.Docs(kMarch)));
  auto doc = nlohmann::json::parse(json);
  EXPECT_EQ(doc["invoice_totals"]["list_krw"], 9'000);
  EXPECT_EQ(doc["invoices"][0]["institution_id"], "sme");
  EXPECT_EQ(doc["status"], "draft");
  const std::string csv = RenderCsv(*d, "invoices");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 3);  // header + 2 lines
  // For a spreadsheet: a UTF-8 byte-order mark, the period as 202603 (never a date), the co-pay
  // rate as a percentage beside its basis points.
  EXPECT_TRUE(csv.starts_with("\xEF\xBB\xBFperiod_yyyymm,institution_id,")) << csv;
  EXPECT_NE(csv.find("\r\n202603,sme,"), std::string::npos) << csv;
  EXPECT_NE(csv.find(",900,9.00%,3600000,1.000,"), std::string::npos) << csv;
  EXPECT_NE(csv.find(",0,0.00%,3600000,1.000,"), std::string::npos) << csv;
  for (const char* which : {"statements", "programs"}) {
    EXPECT_TRUE(RenderCsv(*d, which).starts_with("\xEF\xBB\xBFperiod_yyyymm,")) << which;
  }
}

TEST(InvoiceTest, StateSurvivesReopeningTheStore) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs();
  h.Usage("csp-a", Usage("u1", "a-sme", 2, t, t + kHour));
  h.Reopen();
  const auto one = Usage("x", "a-sme", 1, t, t + kHour);
  h.Usage("csp-a", Correction("c1", "u1", "a-sme", &one));
  h.Reopen();
  EXPECT_EQ(OnlyInvoice(*h.Docs(kMarch)).totals().gpu_ms(), kHour);
  EXPECT_EQ(h.engine().applied_through(), h.seq());
}

// ---- Period close and adjustments ----

TEST(CloseTest, AClosedPeriodNeverChangesAndLateUsageIsAnAdjustmentOnTheNextPeriod) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Usage("csp-a", Usage("u1", "a-sme", 2, t, t + 10 * kHour));  // 20 h = 90,000 won
  const auto before = h.Docs(kMarch);
  const uint64_t close_seq = h.Close(kMarch);
  auto closed = h.Docs(kMarch);
  ASSERT_TRUE(closed.ok());
  EXPECT_TRUE(closed->closed());
  EXPECT_EQ(closed->close_seq(), close_seq);
  EXPECT_EQ(closed->covered_seq(), close_seq - 1);
  EXPECT_EQ(closed->digests_size(),
            closed->invoices_size() + closed->statements_size() + closed->programs_size());
  // The close numbers and dates the bill; nothing else changes.
  ASSERT_EQ(closed->invoices(0).bills_size(), 1);
  EXPECT_EQ(closed->invoices(0).bills(0).number(), "operator-2026-000001");
  EXPECT_EQ(closed->invoices(0).bills(0).issue_date(), "2026-04-01");
  v1::Invoice unnumbered = closed->invoices(0);
  unnumbered.mutable_bills(0)->clear_number();
  unnumbered.mutable_bills(0)->clear_issue_date();
  EXPECT_EQ(InvoiceJson(unnumbered), InvoiceJson(before->invoices(0)));
  EXPECT_EQ(closed->digests(0).sha256(), DigestHex(InvoiceJson(closed->invoices(0))));
  DocumentFilter statements_only;
  statements_only.invoices = statements_only.programs = false;
  auto frozen_statements = h.Docs(kMarch, statements_only);
  EXPECT_EQ(frozen_statements->invoices_size(), 0);
  EXPECT_EQ(frozen_statements->statements_size(), 1);
  EXPECT_EQ(frozen_statements->programs_size(), 0);

  // A late event for March (4 GPU-hours = 18,000 won) arrives in April.
  h.Usage("csp-a", Usage("late", "a-sme", 1, t + 20 * kHour, t + 24 * kHour));
  auto march = h.Docs(kMarch);
  EXPECT_EQ(PeriodJson(*march), PeriodJson(*closed));  // frozen
  auto april = h.Docs(kApril);
  ASSERT_TRUE(april.ok());
  const v1::Invoice& inv = OnlyInvoice(*april);
  EXPECT_EQ(inv.lines_size(), 0);
  ASSERT_EQ(inv.adjustments_size(), 1);
  EXPECT_EQ(inv.adjustments(0).adjusts_period(), "2026-03");
  EXPECT_EQ(inv.adjustments(0).gpu_ms(), 4 * kHour);
  EXPECT_EQ(inv.adjustments(0).list_krw(), 18'000);
  EXPECT_EQ(inv.adjustments(0).copay_krw(), 1'620);
  EXPECT_EQ(inv.totals().copay_krw(), 1'620);
  EXPECT_EQ(inv.amount_due_krw(), 1'782);
  // The CSP statement and the programme summary carry it too.
  ASSERT_EQ(april->statements_size(), 1);
  ASSERT_EQ(april->statements(0).adjustments_size(), 1);
  EXPECT_EQ(april->statements(0).totals().subsidy_krw(), 16'380);
  ASSERT_EQ(april->programs_size(), 1);
  EXPECT_EQ(april->programs(0).adjustments(0).adjusts_period(), "2026-03");
}

TEST(CloseTest, ACorrectionAfterCloseAdjustsByTheExactDifference) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Usage("csp-a", Usage("u1", "a-sme", 3, t, t + kHour));  // 13,500 won, co-pay 1,215
  h.Close(kMarch);
  // Cancelled in April: the adjustment is exactly the negation of what was billed.
  h.Usage("csp-a", Correction("c1", "u1", "a-sme", nullptr));
  auto april = h.Docs(kApril);
  ASSERT_TRUE(april.ok());
  const auto& adj = OnlyInvoice(*april).adjustments(0);
  EXPECT_EQ(adj.gpu_ms(), -3 * kHour);
  EXPECT_EQ(adj.list_krw(), -13'500);
  EXPECT_EQ(adj.copay_krw(), -1'215);
  EXPECT_EQ(adj.subsidy_krw(), -12'285);
  EXPECT_EQ(OnlyInvoice(*april).vat_krw(), -122);  // -121.5 rounds away from zero
}

// An adjustment's co-pay is the co-pay of the period recomputed now less the co-pay billed,
// not the co-pay of the difference. 50% co-pay at 1,800 won/h: 1 s billed in March as list 1,
// co-pay 1 (0.5 and 0.5 round up). 2 s more arrive late: 3 s is list 2 (1.5), co-pay 1 (1.0),
// so the adjustment is list +1, co-pay 0, subsidy +1; pricing the 2 late seconds alone would
// give list 1, co-pay 1. (Kills the mutant that prices the difference.)
TEST(CloseTest, AnAdjustmentsCopayIsTheDifferenceOfCopays) {
  Harness h;
  h.Registry(Institution("sme", v1::SME, 0));
  h.Registry(Allocation("a", "sme"));
  h.Registry(Rate(1'800, 0));
  h.Registry(Copay(v1::SME, 5'000, 0));
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Usage("csp-a", Usage("u1", "a", 1, t, t + 1'000));
  auto march = h.Docs(kMarch);
  ASSERT_TRUE(march.ok());
  EXPECT_EQ(OnlyInvoice(*march).totals().list_krw(), 1);
  EXPECT_EQ(OnlyInvoice(*march).totals().copay_krw(), 1);
  h.Close(kMarch);
  h.Usage("csp-a", Usage("late", "a", 1, t + 10'000, t + 12'000));
  auto april = h.Docs(kApril);
  ASSERT_TRUE(april.ok()) << april.status();
  const v1::Invoice& inv = OnlyInvoice(*april);
  ASSERT_EQ(inv.adjustments_size(), 1);
  EXPECT_EQ(inv.adjustments(0).gpu_ms(), 2'000);
  EXPECT_EQ(inv.adjustments(0).list_krw(), 1);
  EXPECT_EQ(inv.adjustments(0).copay_krw(), 0);
  EXPECT_EQ(inv.adjustments(0).subsidy_krw(), 1);
  EXPECT_EQ(inv.amount_due_krw(), 0);
}

TEST(CloseTest, AdjustmentsOnceBilledAreNotBilledAgain) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Usage("csp-a", Usage("u1", "a-sme", 1, t, t + kHour));
  h.Close(kMarch);
  h.Usage("csp-a", Usage("late", "a-sme", 1, t + kHour, t + 2 * kHour));
  h.Close(kApril);
  auto april = h.Docs(kApril);
  ASSERT_EQ(OnlyInvoice(*april).adjustments_size(), 1);
  auto may = h.Docs(Period{2026, 5});
  ASSERT_TRUE(may.ok());
  EXPECT_EQ(may->invoices_size(), 0);
  // One more late hour for March: only that hour shows up, on May.
  h.Usage("csp-a", Usage("later", "a-sme", 1, t + 2 * kHour, t + 3 * kHour));
  may = h.Docs(Period{2026, 5});
  ASSERT_EQ(OnlyInvoice(*may).adjustments_size(), 1);
  EXPECT_EQ(OnlyInvoice(*may).adjustments(0).gpu_ms(), kHour);
}

TEST(CloseTest, ARevocationAfterCloseTakesBackUsageAfterIt) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs() + 24 * kHour;
  h.Usage("csp-a", Usage("u1", "a-sme", 1, t, t + 4 * kHour));
  h.Close(kMarch);
  v1::RegistryEvent revoke;
  revoke.mutable_allocation_amendment()->set_allocation_id("a-sme");
  revoke.mutable_allocation_amendment()->set_effective_from_ms(t + kHour);
  revoke.mutable_allocation_amendment()->set_revoke(true);
  h.Registry(revoke);
  auto april = h.Docs(kApril);
  ASSERT_TRUE(april.ok());
  EXPECT_EQ(OnlyInvoice(*april).adjustments(0).gpu_ms(), -3 * kHour);
}

// Own use is valued slice by slice at the rate in force then, its excess is that value's share
// (excess / own use), and a contract that nets the excess takes it off what the state pays.
// March: 10 H200s, 10% cap (744 GPU-hours allowed); the H200 rate is 4,500 won until 16 March
// 00:00 KST and 6,000 after. 2 GPUs of own use all month: 720 GPU-hours at 4,500 and 768 at
// 6,000 = 7,848,000 won; 744 of 1,488 GPU-hours over the cap: half of it, 3,924,000 won. 4 B200s
// hosted with no B200 rate card: their own use is unpriced, valued 0.
TEST(StatementTest, OwnUseIsValuedSliceBySliceAndItsExcessNettedByContract) {
  for (bool net : {false, true}) {
    SCOPED_TRACE(net ? "netted" : "reported");
    Harness h;
    Standard(h);
    const int64_t t = kMarch.StartMs();
    const int64_t mid = t + 15 * 24 * kHour;
    h.Registry(Rate(6'000, mid));
    h.Registry(Pool("csp-a", 10, 0));
    h.Registry(Pool("csp-a", 4, 0, v1::GOV_ADVANCED, v1::B200));
    v1::RegistryEvent contract = Contract("csp-a", 1'000, 0);
    if (net) contract.mutable_csp_contract()->set_own_use_excess(v1::OWN_USE_EXCESS_NETTED);
    h.Registry(contract);
    h.Usage("csp-a", OwnUse("own", 2, t, kMarch.EndMs()));
    h.Usage("csp-a", OwnUse("own-b", 1, t, t + 10 * kHour, v1::GOV_ADVANCED, v1::B200));
    h.Usage("csp-a", Usage("u1", "a-uni", 8, t, t + 100 * kHour));
    auto d = h.Docs(kMarch);
    ASSERT_TRUE(d.ok()) << d.status();
    ASSERT_EQ(d->statements_size(), 1);
    const v1::CspStatement& s = d->statements(0);
    ASSERT_EQ(s.own_use_size(), 2);
    const v1::OwnUseRow& h200 = s.own_use(1).gpu_model() == v1::H200 ? s.own_use(1) : s.own_use(0);
    const v1::OwnUseRow& b200 = s.own_use(1).gpu_model() == v1::H200 ? s.own_use(0) : s.own_use(1);
    EXPECT_EQ(h200.value_krw(), 720 * 4'500 + 768 * 6'000);
    EXPECT_EQ(h200.unpriced_gpu_ms(), 0);
    EXPECT_EQ(h200.excess_gpu_ms(), 744 * kHour);
    EXPECT_EQ(h200.excess_value_krw(), (720 * 4'500 + 768 * 6'000) / 2);
    EXPECT_EQ(h200.netted(), net);
    EXPECT_EQ(b200.value_krw(), 0);
    EXPECT_EQ(b200.unpriced_gpu_ms(), 10 * kHour);
    EXPECT_EQ(s.own_use_value_krw(), 7'848'000);
    EXPECT_EQ(s.totals().subsidy_krw(), 800 * 4'500);
    // B200: 4 GPUs × 744 h × 10% = 297.6 GPU-hours allowed, 10 used: no excess there.
    EXPECT_EQ(s.own_use_excess_value_krw(), 3'924'000);
    EXPECT_EQ(s.own_use_netted_krw(), net ? 3'924'000 : 0);
    // Netted, the CSP owes the state 324,000 won for March.
    EXPECT_EQ(s.payable_krw(), net ? 3'600'000 - 3'924'000 : 3'600'000);
    const std::string json = StatementJson(s);
    EXPECT_NE(json.find(absl::StrCat("\"payable_krw\": ", s.payable_krw())), std::string::npos)
        << json;
  }
}

// One GPU-ms of own use over the cap at the highest rate rounds to a won, half away from zero;
// a numerator that does not fit fails the statement alone, never wraps.
TEST(StatementTest, TheExcessValueRoundsOnceAndNeverWraps) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs();
  h.Registry(Pool("csp-a", 10, 0));
  h.Registry(Contract("csp-a", 0, 0));                   // nothing allowed: all own use is excess
  h.Usage("csp-a", OwnUse("own", 1, t, t + 1'800'000));  // half an hour at 4,500: 2,250 won
  h.Usage("csp-a", OwnUse("own-2", 1, t + kHour, t + kHour + 400));  // 0.5 won: rounds up
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->statements(0).own_use(0).value_krw(), 2'251);
  EXPECT_EQ(d->statements(0).own_use(0).excess_value_krw(), 2'251);
  // Three billion GPUs for ten days: the value fits, value × excess does not fit 128 bits.
  h.Usage("csp-a", OwnUse("huge", 3'000'000'000u, t + 2 * kHour, t + 2 * kHour + 240 * kHour));
  d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->statements_size(), 0);
  ASSERT_EQ(d->errors_size(), 1);
  EXPECT_EQ(d->errors(0).document(), "statement/csp-a");
  EXPECT_NE(d->errors(0).message().find("does not fit"), std::string::npos)
      << d->errors(0).message();
  EXPECT_EQ(d->programs_size(), 1);  // the programme's summary is unaffected
}

// The programme summary reports each call apart (issue 16, item 4): the period's own lines by
// the call and agency of their allocations, with what each call granted in the period. The
// second call's 8 GPUs start on 11 March (21 days in March); an allocation of no call is blank.
TEST(SummaryTest, EachCallIsReportedApartWithWhatItGranted) {
  Harness h;
  h.Registry(Institution("uni", v1::ACADEMIA, 0));
  h.Registry(Institution("sme", v1::SME, 0));
  h.Registry(Rate(4'500, 0));
  h.Registry(Copay(v1::ACADEMIA, 0, 0));
  h.Registry(Copay(v1::SME, 900, 0));
  const int64_t t = kMarch.StartMs();
  v1::RegistryEvent first = Allocation("a-uni", "uni");  // 16 GPUs all month
  first.mutable_allocation()->set_call_id("gov-2026-1");
  first.mutable_allocation()->set_agency_id("NIPA");
  first.mutable_allocation()->set_project_id("p-1");
  h.Registry(first);
  v1::RegistryEvent second = Allocation("a-sme", "sme", "csp-a", 8);
  second.mutable_allocation()->set_call_id("gov-2026-2");
  second.mutable_allocation()->set_agency_id("NIPA");
  second.mutable_allocation()->set_project_id("p-2");
  second.mutable_allocation()->set_start_ms(t + 10 * 24 * kHour);
  h.Registry(second);
  h.Registry(Allocation("a-old", "uni", "csp-a", 2));
  h.Usage("csp-a", Usage("u1", "a-uni", 4, t, t + 10 * kHour));
  h.Usage("csp-a", Usage("u2", "a-sme", 2, t + 240 * kHour, t + 250 * kHour));
  h.Usage("csp-a", Usage("u3", "a-old", 1, t, t + kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->programs_size(), 1);
  const v1::ProgramSummary& ps = d->programs(0);
  ASSERT_EQ(ps.by_call_size(), 3);
  const v1::CallRow& none = ps.by_call(0);  // sorted by (call, agency): blank first
  EXPECT_EQ(none.call_id(), "");
  EXPECT_EQ(none.totals().gpu_ms(), 1 * kHour);
  EXPECT_EQ(none.granted_gpu_ms(), 2 * 744 * kHour);
  const v1::CallRow& one = ps.by_call(1);
  EXPECT_EQ(one.call_id(), "gov-2026-1");
  EXPECT_EQ(one.agency_id(), "NIPA");
  EXPECT_EQ(one.allocations(), 1u);
  EXPECT_EQ(one.totals().gpu_ms(), 40 * kHour);
  EXPECT_EQ(one.totals().list_krw(), 40 * 4'500);
  EXPECT_EQ(one.granted_gpu_ms(), 16 * 744 * kHour);
  const v1::CallRow& two = ps.by_call(2);
  EXPECT_EQ(two.call_id(), "gov-2026-2");
  EXPECT_EQ(two.totals().gpu_ms(), 20 * kHour);
  EXPECT_EQ(two.totals().copay_krw(), 20 * 4'500 * 900 / 10'000);
  EXPECT_EQ(two.granted_gpu_ms(), 8 * (744 - 240) * kHour);
  // The rows add up to the summary's own lines.
  EXPECT_EQ(none.totals().gpu_ms() + one.totals().gpu_ms() + two.totals().gpu_ms(),
            ps.totals().gpu_ms());
  const std::string csv = RenderCsv(*d, "programs");
  EXPECT_NE(csv.find(",by_call,,,72000000,"), std::string::npos) << csv;
}

// March: 10 H200s hosted, 10% cap (744 GPU-hours allowed), 700 GPU-hours of own use billed.
// After the close, csp-a reports 100 more GPU-hours of own use in March and a 5 GPU-hour pool
// outage: April's statement carries them, with the excess they add (56 GPU-hours, 252,000 won).
TEST(CloseTest, OwnUseAndOutagesRecordedAfterCloseAreAdjustmentsOnTheStatement) {
  Harness h;
  Standard(h);
  h.Registry(Pool("csp-a", 10, 0));
  h.Registry(Contract("csp-a", 1'000, 0));
  const int64_t t = kMarch.StartMs();
  h.Usage("csp-a", OwnUse("own1", 1, t, t + 700 * kHour));
  h.Close(kMarch);
  h.Usage("csp-a", OwnUse("own2", 1, t + 700 * kHour, t + 744 * kHour));
  h.Usage("csp-a", OwnUse("own3", 1, t, t + 56 * kHour));
  h.Usage("csp-a", Outage("out", "", 1, t, t + 5 * kHour, "power"));
  auto march = h.Docs(kMarch);
  ASSERT_TRUE(march.ok());
  EXPECT_EQ(march->statements(0).own_use_gpu_ms(), 700 * kHour);  // frozen
  auto april = h.Docs(kApril);
  ASSERT_TRUE(april.ok()) << april.status();
  ASSERT_EQ(april->statements_size(), 1);
  const v1::CspStatement& s = april->statements(0);
  ASSERT_EQ(s.own_use_adjustments_size(), 1);
  EXPECT_EQ(s.own_use_adjustments(0).adjusts_period(), "2026-03");
  EXPECT_EQ(s.own_use_adjustments(0).own_use_gpu_ms(), 100 * kHour);
  EXPECT_EQ(s.own_use_adjustments(0).excess_gpu_ms(), 56 * kHour);
  EXPECT_EQ(s.own_use_adjustments(0).excess_value_krw(), 56 * 4'500);
  ASSERT_EQ(s.outage_adjustments_size(), 1);
  EXPECT_EQ(s.outage_adjustments(0).gpu_ms(), 5 * kHour);
  EXPECT_NE(StatementJson(s).find("\"own_use_adjustments\""), std::string::npos);
  // Once April closes they are billed; May carries nothing.
  h.Close(kApril);
  auto may = h.Docs(Period{2026, 5});
  ASSERT_TRUE(may.ok());
  EXPECT_EQ(may->statements(0).own_use_adjustments_size(), 0);
  EXPECT_EQ(may->statements(0).outage_adjustments_size(), 0);
}

// ---- CSP statements and programme summaries ----

// csp-a hosts 10 H200s for the government programme; its contract lets it use 10% of them.
// In March (31 days = 744 h) capacity is 7,440 GPU-hours; allowed own use 744 GPU-hours. It
// used 2 GPUs all month (1,488 GPU-hours = 20%): 744 GPU-hours over the cap, worth 744 × 4,500.
TEST(StatementTest, OwnUseShareAgainstTheContractCapAndTheCapacityIdentity) {
  Harness h;
  Standard(h);
  h.Registry(Pool("csp-a", 10, 0));
  h.Registry(Contract("csp-a", 1'000, 0));
  h.Usage("csp-a", OwnUse("own", 2, kMarch.StartMs(), kMarch.EndMs()));
  const int64_t t = kMarch.StartMs();
  h.Usage("csp-a", Usage("u1", "a-uni", 8, t, t + 100 * kHour));
  h.Usage("csp-a", Outage("pool-out", "", 1, t, t + 10 * kHour, "power"));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->statements_size(), 1);
  const v1::CspStatement& s = d->statements(0);
  EXPECT_EQ(s.hosted_capacity_gpu_ms(), 7'440 * kHour);
  EXPECT_EQ(s.own_use_gpu_ms(), 1'488 * kHour);
  EXPECT_EQ(s.own_use_share_bp(), 2'000u);
  EXPECT_EQ(s.own_use_cap_bp(), 1'000u);
  EXPECT_EQ(s.own_use_excess_gpu_ms(), 744 * kHour);
  EXPECT_EQ(s.own_use_excess_value_krw(), 744 * 4'500);
  ASSERT_EQ(s.capacity_size(), 1);
  const v1::CapacityRow& c = s.capacity(0);
  EXPECT_EQ(c.program_usage_gpu_ms(), 800 * kHour);
  EXPECT_EQ(c.outage_gpu_ms(), 10 * kHour);
  EXPECT_EQ(c.idle_gpu_ms(), (7'440 - 800 - 1'488 - 10) * kHour);
  EXPECT_FALSE(c.oversubscribed());
  EXPECT_EQ(s.totals().subsidy_krw(), 800 * 4'500);
  ASSERT_EQ(d->programs_size(), 1);
  EXPECT_EQ(d->programs(0).utilisation_bp(), 1'075u);  // 800 / 7,440 = 10.75%
}

TEST(StatementTest, OversubscriptionIsFlagged) {
  Harness h;
  Standard(h);
  h.Registry(Pool("csp-a", 1, 0));
  const int64_t t = kMarch.StartMs();
  h.Usage("csp-a", Usage("u1", "a-uni", 1, t, kMarch.EndMs()));
  h.Usage("csp-a", OwnUse("own", 1, t, t + kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->statements(0).capacity(0).oversubscribed());
  EXPECT_EQ(d->statements(0).capacity(0).idle_gpu_ms(), -kHour);
  EXPECT_NE(RenderTable(*d).find("OVERSUBSCRIBED"), std::string::npos);
  EXPECT_NE(RenderHtml(*d, i18n::Lang::kEn).find("OVERSUBSCRIBED"), std::string::npos);
  EXPECT_NE(RenderHtml(*d).find("초과 배정"), std::string::npos);
}

TEST(StatementTest, HtmlIsSelfContainedAndEscapes) {
  Harness h;
  v1::RegistryEvent inst = Institution("i<1>", v1::SME, 0);
  inst.mutable_institution()->set_name("<script>alert(1)</script>");
  h.Registry(inst);
  h.Registry(Allocation("a", "i<1>"));
  h.Registry(Rate(4'500, 0));
  h.Registry(Copay(v1::SME, 900, 0));
  h.Usage("csp-a", Usage("u", "a", 1, kMarch.StartMs(), kMarch.StartMs() + kHour));
  const std::string html = RenderHtml(*h.Docs(kMarch));
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;"), std::string::npos);
  EXPECT_EQ(html.find("http"), std::string::npos);  // nothing fetched
  EXPECT_NE(html.find("@page { size: A4"), std::string::npos);
}

TEST(DocumentTest, OneInvoiceIsReadWithoutTheRest) {
  Harness h;
  Standard(h);
  const int64_t t = kMarch.StartMs();
  h.Usage("csp-a", Usage("u1", "a-uni", 1, t, t + kHour));
  h.Usage("csp-a", Usage("u2", "a-sme", 1, t, t + kHour));
  DocumentFilter f;
  f.institution_id = "sme";
  f.statements = false;
  f.programs = false;
  auto d = h.Docs(kMarch, f);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(OnlyInvoice(*d).institution_id(), "sme");
  auto all = h.Docs(kMarch);
  EXPECT_EQ(InvoiceJson(OnlyInvoice(*d)), InvoiceJson(all->invoices(0)));
}

// ---- Bills: parties, issuers, numbers, tax (docs/SETTLEMENT.md, "Invoices") ----

const Period kNovember{2026, 11};
const Period kDecember{2026, 12};

// An SME on the state's GPUs (csp-a issues their invoices) and on a leased pool (the operator
// issues), a zero-rated SME, a university that owes nothing; November and December closed.
void BilledMonths(Harness& h) {
  Standard(h);
  h.Registry(Rate(3'000, 0, v1::LEASE_HPC));
  h.Registry(Institution("sme2", v1::SME, 0));
  h.Registry(Allocation("a-lease", "sme", "csp-b", 4, v1::LEASE_HPC));
  h.Registry(Allocation("a-sme2", "sme2"));
  h.Registry(Party("nipa", "정보통신산업진흥원", "220810553"));
  h.Registry(Party("csp-a", "(주)가온클라우드", "101820000"));
  h.Registry(Party("sme", "(주)대한바이오", "123456789"));
  h.Registry(Party("sme2", "(주)수출바이오", "987654321", v1::TAX_ZERO_RATED));
  h.Registry(
      Terms("nipa", 1'000, v1::VAT_ROUND_TOWARD_ZERO, 30, {{v1::GOV_ADVANCED, v1::ISSUER_CSP}}));
  for (const Period& p : {kNovember, kDecember}) {
    const int64_t t = p.StartMs();
    h.Usage("csp-a", Usage("s" + p.ToString(), "a-sme", 1, t, t + kHour));    // co-pay 405
    h.Usage("csp-b", Usage("l" + p.ToString(), "a-lease", 1, t, t + kHour));  // co-pay 270
    h.Usage("csp-a", Usage("u" + p.ToString(), "a-uni", 1, t, t + kHour));    // co-pay 0
    h.Usage("csp-a", Usage("z" + p.ToString(), "a-sme2", 2, t, t + kHour));   // co-pay 810
  }
}

TEST(BillTest, EachIssuerBillsItsProgrammesWithTheRecipientsTaxAndTheTermsRounding) {
  Harness h;
  BilledMonths(h);
  auto d = h.Docs(kNovember);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->invoices_size(), 2);
  ASSERT_EQ(d->nothing_owed_size(), 1);  // the university: 0% co-pay, no invoice
  EXPECT_EQ(d->nothing_owed(0).institution_id(), "uni");
  EXPECT_EQ(d->nothing_owed(0).totals().list_krw(), 4'500);

  const v1::Invoice& sme = d->invoices(0);
  EXPECT_EQ(sme.recipient().legal_name(), "(주)대한바이오");
  EXPECT_EQ(sme.recipient().registration_number(), "1234567891");
  ASSERT_EQ(sme.bills_size(), 2);
  const v1::Bill& by_csp = sme.bills(0);  // "csp-a" < "nipa"
  EXPECT_EQ(by_csp.issuer_party_id(), "csp-a");
  EXPECT_EQ(by_csp.issuer_role(), v1::ISSUER_CSP);
  EXPECT_EQ(by_csp.issuer().legal_name(), "(주)가온클라우드");
  ASSERT_EQ(by_csp.programs_size(), 1);
  EXPECT_EQ(by_csp.programs(0), v1::GOV_ADVANCED);
  EXPECT_EQ(by_csp.supply_krw(), 405);
  EXPECT_EQ(by_csp.vat_krw(), 40);  // 40.5 truncated (절사); half away from zero would be 41
  EXPECT_EQ(by_csp.total_krw(), 445);
  EXPECT_TRUE(by_csp.number().empty());  // a draft has no number
  const v1::Bill& by_operator = sme.bills(1);
  EXPECT_EQ(by_operator.issuer_party_id(), "nipa");
  EXPECT_EQ(by_operator.issuer_role(), v1::ISSUER_OPERATOR);
  EXPECT_EQ(by_operator.supply_krw(), 270);
  EXPECT_EQ(by_operator.vat_krw(), 27);
  EXPECT_EQ(sme.vat_krw(), 67);
  EXPECT_EQ(sme.amount_due_krw(), 405 + 270 + 67);
  EXPECT_NE(by_operator.payment_instructions().find("국민은행"), std::string::npos);

  const v1::Invoice& zero_rated = d->invoices(1);
  EXPECT_EQ(zero_rated.institution_id(), "sme2");
  ASSERT_EQ(zero_rated.bills_size(), 1);
  EXPECT_EQ(zero_rated.bills(0).tax_type(), v1::TAX_ZERO_RATED);
  EXPECT_EQ(zero_rated.bills(0).vat_bp(), 0u);
  EXPECT_EQ(zero_rated.bills(0).supply_krw(), 810);
  EXPECT_EQ(zero_rated.bills(0).vat_krw(), 0);
  EXPECT_EQ(zero_rated.amount_due_krw(), 810);
}

TEST(BillTest, NumbersAreGaplessPerIssuerAndYearAndAReplayGivesTheSame) {
  Harness live, replay;
  for (Harness* h : {&live, &replay}) {
    BilledMonths(*h);
    h->Close(kNovember);
    h->Close(kDecember);  // emitted at 2027-01-01 KST: numbers of 2027
  }
  replay.Reopen();
  auto nov = live.Docs(kNovember);
  auto dec = live.Docs(kDecember);
  ASSERT_TRUE(nov.ok() && dec.ok());
  std::vector<std::string> numbers;
  for (const auto* d : {&*nov, &*dec}) {
    for (const auto& inv : d->invoices()) {
      for (const auto& b : inv.bills()) {
        numbers.push_back(absl::StrCat(inv.institution_id(), " ", b.number(), " ", b.issue_date(),
                                       " ", b.due_date()));
      }
    }
  }
  const std::vector<std::string> want = {"sme csp-a-2026-000001 2026-12-01 2026-12-31",
                                         "sme nipa-2026-000001 2026-12-01 2026-12-31",
                                         "sme2 csp-a-2026-000002 2026-12-01 2026-12-31",
                                         "sme csp-a-2027-000001 2027-01-01 2027-01-31",
                                         "sme nipa-2027-000001 2027-01-01 2027-01-31",
                                         "sme2 csp-a-2027-000002 2027-01-01 2027-01-31"};
  EXPECT_EQ(numbers, want);
  // The university owes nothing: no number is spent on it, and its lines are still audited.
  EXPECT_EQ(nov->nothing_owed_size(), 1);
  bool usage_digest = false;
  for (const auto& dg : nov->digests()) usage_digest |= dg.document() == "usage/uni";
  EXPECT_TRUE(usage_digest);
  for (const Period& p : {kNovember, kDecember}) {
    EXPECT_EQ(PeriodJson(*live.Docs(p)), PeriodJson(*replay.Docs(p))) << p.ToString();
  }
  // The tax invoice data: one entry per bill, both parties, amounts and items.
  const auto etax = nlohmann::json::parse(EtaxJson(*nov));
  ASSERT_EQ(etax["invoices"].size(), 3u);
  const auto& first = etax["invoices"][0];
  EXPECT_EQ(first["number"], "csp-a-2026-000001");
  EXPECT_EQ(first["type_code"], "0101");
  EXPECT_EQ(first["invoicer"]["name"], "(주)가온클라우드");
  EXPECT_EQ(first["invoicee"]["registration_number"], "1234567891");
  EXPECT_EQ(first["supply_krw"], 405);
  EXPECT_EQ(first["tax_krw"], 40);
  EXPECT_EQ(first["total_krw"], 445);
  ASSERT_EQ(first["items"].size(), 1u);
  EXPECT_EQ(first["items"][0]["supply_date"], "2026-11-30");
  EXPECT_EQ(first["items"][0]["quantity_gpu_hours"], "1.000");
  EXPECT_EQ(first["items"][0]["supply_krw"], 405);
  EXPECT_EQ(etax["invoices"][2]["type_code"], "0102");  // zero-rated
  // Every bill's items add up to its supply value.
  for (const auto& inv : etax["invoices"]) {
    int64_t sum = 0;
    for (const auto& item : inv["items"]) sum += item["supply_krw"].get<int64_t>();
    EXPECT_EQ(sum, inv["supply_krw"].get<int64_t>()) << inv["number"];
  }
}

// The page is rendered from Mustache templates: what the data holds is text, never a tag of the
// template or markup, whatever an institution or party calls itself.
TEST(BillTest, NamesAreTextInTheTemplates) {
  Harness h;
  Standard(h);
  const std::string evil = "{{t.total}}{{> meta}}<script>x</script>";
  h.Registry(Institution(evil, v1::SME, 0));
  h.Registry(Allocation("a-evil", evil));
  h.Registry(Party(evil, "{{#bills}}&<b>", "123456789"));
  const int64_t t = kMarch.StartMs();
  h.Usage("csp-a", Usage("e1", "a-evil", 1, t, t + kHour));
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  for (i18n::Lang lang : {i18n::Lang::kKo, i18n::Lang::kEn}) {
    const std::string html = RenderHtml(*d, lang);
    EXPECT_EQ(html.find("<script>"), std::string::npos);
    EXPECT_EQ(html.find("<b>"), std::string::npos);
    EXPECT_NE(html.find("{{t.total}}{{&gt; meta}}&lt;script&gt;x&lt;/script&gt;"),
              std::string::npos);
    EXPECT_NE(html.find("{{#bills}}&amp;&lt;b&gt;"), std::string::npos);
  }
}

// Balances (issue 18): an invoice shows each GPU-hour cap its allocations draw on, used and
// remaining; an allocation continued by a transfer draws on its first allocation's cap.
TEST(BillTest, InvoicesShowTheCapsTheirAllocationsDrawOn) {
  Harness h;
  Standard(h);
  auto capped = Allocation("a-cap", "sme");
  capped.mutable_allocation()->set_gpu_ms_cap(10 * kHour);
  h.Registry(capped);
  const int64_t t = kMarch.StartMs();
  h.Usage("csp-a", Usage("c1", "a-cap", 2, t, t + 3 * kHour));  // 6 of 10 GPU-hours
  h.Usage("csp-a", Usage("s1", "a-sme", 1, t, t + kHour));      // no cap
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  const v1::Invoice& inv = OnlyInvoice(*d);
  ASSERT_EQ(inv.balances_size(), 1);
  EXPECT_EQ(inv.balances(0).allocation_id(), "a-cap");
  EXPECT_EQ(inv.balances(0).cap_gpu_ms(), 10 * kHour);
  EXPECT_EQ(inv.balances(0).used_gpu_ms(), 6 * kHour);
  EXPECT_EQ(inv.balances(0).remaining_gpu_ms(), 4 * kHour);
  h.Usage("csp-a", Usage("c2", "a-cap", 2, t + 3 * kHour, t + 6 * kHour));  // 6 more: 2 beyond
  auto after = h.Docs(kMarch);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(OnlyInvoice(*after).balances(0).used_gpu_ms(), 10 * kHour);
  EXPECT_EQ(OnlyInvoice(*after).balances(0).remaining_gpu_ms(), 0);
  const auto json = nlohmann::json::parse(InvoiceJson(OnlyInvoice(*after)));
  EXPECT_EQ(json["balances"][0]["remaining_gpu_hours"], "0.000");
  EXPECT_NE(RenderHtml(*after).find("GPU시간 상한"), std::string::npos);
}

TEST(BillTest, TermsCanAskForAnInvoiceOfNothingOwed) {
  Harness h;
  Standard(h);
  h.Registry(Terms("nipa", 1'000, v1::VAT_ROUND_HALF_AWAY_FROM_ZERO, 14, {}, true));
  const int64_t t = kMarch.StartMs();
  h.Usage("csp-a", Usage("u1", "a-uni", 1, t, t + kHour));
  h.Close(kMarch);
  auto d = h.Docs(kMarch);
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->invoices_size(), 1);
  EXPECT_EQ(d->nothing_owed_size(), 0);
  ASSERT_EQ(d->invoices(0).bills_size(), 1);
  EXPECT_EQ(d->invoices(0).bills(0).number(), "nipa-2026-000001");
  EXPECT_EQ(d->invoices(0).bills(0).total_krw(), 0);
  EXPECT_EQ(d->invoices(0).bills(0).due_date(), "2026-04-15");
  EXPECT_FALSE(d->invoices(0).has_recipient());  // no party recorded for it
}

}  // namespace
}  // namespace gpuledger::settlement
