// Reports over time (settlement/reports.h): their sums equal the monthly documents (a property
// test over random months), by day as by month; capacity by outage kind; budgets drawn down by
// the documents.
#include "settlement/reports.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "events.h"
#include "harness.h"

namespace gpuledger::settlement::testing {
namespace {

struct Sums {
  int64_t used = 0, credited = 0, list = 0, copay = 0, subsidy = 0;
  friend bool operator==(const Sums&, const Sums&) = default;
};

std::ostream& operator<<(std::ostream& os, const Sums& s) {
  return os << "{used " << s.used << ", credited " << s.credited << ", list " << s.list
            << ", co-pay " << s.copay << ", subsidy " << s.subsidy << "}";
}

void Add(Sums* s, const v1::InvoiceLine& l) {
  (l.kind() == v1::LINE_KIND_OUTAGE_CREDIT ? s->credited : s->used) += l.gpu_ms();
  s->list += l.list_krw();
  s->copay += l.copay_krw();
  s->subsidy += l.subsidy_krw();
}

UsageReport Report(Harness& h, const std::string& from, const std::string& to,
                   const std::string& granularity, const std::string& group_by) {
  auto q = ParseUsageQuery(from, to, granularity, group_by);
  EXPECT_TRUE(q.ok()) << q.status();
  auto r = h.engine().Usage(*q);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : UsageReport{};
}

const base::Period kJan{2026, 1}, kFeb{2026, 2}, kMar{2026, 3}, kApr{2026, 4};

// A random quarter: institutions whose type changes, allocations on two CSPs and two models
// with caps, rates that change, usage, corrections, own use, outages of both kinds and withdrawn
// ones; January closes, then late usage and outages change it.
void RandomQuarter(Harness& h, uint32_t seed) {
  std::mt19937 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint32_t>(n)); };
  h.Registry(Rate(4'000 + pick(3'000), 0, v1::GOV_ADVANCED, v1::H200));
  h.Registry(Rate(6'000 + pick(3'000), 0, v1::GOV_ADVANCED, v1::B200));
  h.Registry(Rate(5'000, kFeb.StartMs() + pick(10) * 24 * kHour, v1::GOV_ADVANCED, v1::H200));
  h.Registry(Copay(v1::ACADEMIA, 0, 0));
  h.Registry(Copay(v1::SME, 700 + pick(300), 0));
  h.Registry(Copay(v1::SME, 900, kMar.StartMs()));
  for (const char* csp : {"csp-a", "csp-b"}) {
    h.Registry(Pool(csp, 64, 0, v1::GOV_ADVANCED, v1::H200));
    h.Registry(Pool(csp, 32, 0, v1::GOV_ADVANCED, v1::B200));
  }
  const std::vector<std::string> insts = {"u1", "u2", "s1", "s2"};
  for (const auto& i : insts) {
    h.Registry(Institution(i, i[0] == 'u' ? v1::ACADEMIA : v1::SME, 0));
  }
  h.Registry(Institution("s2", v1::ACADEMIA, kFeb.StartMs() + pick(20) * 24 * kHour));
  std::vector<std::tuple<std::string, std::string, v1::GpuModel>> allocs;  // id, csp, model
  for (int n = 0; n < 6; ++n) {
    const std::string id = absl::StrCat("a", n);
    const std::string csp = n % 2 == 0 ? "csp-a" : "csp-b";
    const v1::GpuModel model = n % 3 == 2 ? v1::B200 : v1::H200;
    v1::RegistryEvent e = Allocation(id, insts[n % insts.size()], csp, 8, v1::GOV_ADVANCED, model);
    e.mutable_allocation()->set_call_id(n < 3 ? "call-1" : "call-2");
    if (n == 1) e.mutable_allocation()->set_gpu_ms_cap(400 * kHour);
    h.Registry(e);
    allocs.emplace_back(id, csp, model);
  }
  int ids = 0;
  std::map<std::string, std::pair<std::string, std::string>> usage_of;  // event: alloc, csp
  auto random_usage = [&](base::Period within) {
    const auto& [alloc, csp, model] = allocs[pick(static_cast<int>(allocs.size()))];
    usage_of[absl::StrCat("e", ids + 1)] = {alloc, csp};
    const int64_t span = within.EndMs() - within.StartMs();
    const int64_t start = within.StartMs() +
                          (static_cast<int64_t>(rng()) % (span / kHour)) * kHour -
                          pick(2) * 3 * kHour;  // now and then across a month's start
    const int64_t end = start + (1 + pick(30)) * kHour;
    h.Usage(csp, Usage(absl::StrCat("e", ++ids), alloc, 1 + pick(8), start, end, model));
  };
  auto random_outage = [&](base::Period within) {
    const auto& [alloc, csp, model] = allocs[pick(static_cast<int>(allocs.size()))];
    const int64_t start = within.StartMs() + pick(25 * 24) * kHour;
    v1::UsageEvent o =
        Outage(absl::StrCat("o", ++ids), pick(2) == 0 ? alloc : "", 1 + pick(4), start,
               start + (1 + pick(12)) * kHour, "power", v1::GOV_ADVANCED, model);
    o.mutable_outage()->set_kind(static_cast<v1::OutageKind>(pick(3)));
    h.Usage(csp, o);
  };
  for (const base::Period p : {kJan, kFeb, kMar}) {
    for (int n = 0; n < 40; ++n) random_usage(p);
    for (int n = 0; n < 4; ++n) random_outage(p);
    h.Usage("csp-a", OwnUse(absl::StrCat("w", ++ids), 4, p.StartMs() + 5 * kHour,
                            p.StartMs() + (5 + pick(100)) * kHour));
  }
  const auto& [cancelled_alloc, cancelled_csp] = usage_of.at("e2");
  h.Usage(cancelled_csp, Correction(absl::StrCat("c", ++ids), "e2", cancelled_alloc, nullptr));
  h.Close(kJan);
  for (int n = 0; n < 10; ++n) random_usage(kJan);  // late: adjustments on February's invoices
  random_outage(kJan);
}

// The documents of `p` as they now stand: its lines (frozen if closed) and every adjustment to
// it issued since (by the closes after it, and pending on the first open period's drafts), per
// institution.
std::map<std::string, Sums> DocumentSums(Harness& h, base::Period p) {
  std::map<std::string, Sums> out;
  const auto last_closed = h.engine().last_closed();
  const base::Period first_open = last_closed ? last_closed->Next() : base::Period{2026, 1};
  for (base::Period q = p; q <= std::max(p, first_open); q = q.Next()) {
    auto d = h.Docs(q);
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) continue;
    EXPECT_EQ(d->errors_size(), 0);
    for (const v1::Invoice& inv : AllInvoices(*d)) {
      if (q == p) {
        for (const auto& l : inv.lines()) Add(&out[inv.institution_id()], l);
      }
      for (const auto& l : inv.adjustments()) {
        if (l.adjusts_period() == p.ToString()) Add(&out[inv.institution_id()], l);
      }
    }
  }
  return out;
}

TEST(UsageReportTest, SumsEqualTheMonthlyDocumentsAndTheirAdjustments) {
  int64_t credited = 0;
  for (uint32_t seed = 1; seed <= 8; ++seed) {
    SCOPED_TRACE(seed);
    Harness h;
    RandomQuarter(h, seed);
    const UsageReport by_month = Report(h, "2026-01", "2026-03", "month", "institution");
    const UsageReport by_day = Report(h, "2026-01-01", "2026-03-31", "day", "institution");
    const UsageReport by_quarter =
        Report(h, "2026-01", "2026-03", "quarter", "program,csp,model,institution_type,call");
    Sums quarter_docs;
    for (const base::Period p : {kJan, kFeb, kMar}) {
      const std::map<std::string, Sums> docs = DocumentSums(h, p);
      std::map<std::string, Sums> report;
      std::map<std::string, int64_t> days_used;
      for (const UsageRow& r : by_month.rows) {
        if (r.bucket != p.ToString()) continue;
        Sums& s = report[r.group.at(0)];
        s.used += r.used_gpu_ms;
        s.credited += r.credited_gpu_ms;
        s.list += r.list_krw;
        s.copay += r.copay_krw;
        s.subsidy += r.subsidy_krw;
        EXPECT_EQ(r.net_gpu_ms, r.used_gpu_ms + r.credited_gpu_ms);
      }
      for (const UsageRow& r : by_day.rows) {
        if (r.bucket.substr(0, 7) == p.ToString()) days_used[r.group.at(0)] += r.used_gpu_ms;
      }
      std::map<std::string, Sums> docs_nonzero;
      for (const auto& [inst, s] : docs) {
        if (s != Sums{}) docs_nonzero[inst] = s;
        quarter_docs.used += s.used;
        quarter_docs.credited += s.credited;
        quarter_docs.list += s.list;
        quarter_docs.copay += s.copay;
        quarter_docs.subsidy += s.subsidy;
      }
      EXPECT_EQ(report, docs_nonzero) << p.ToString();
      for (const auto& [inst, s] : report) {
        EXPECT_EQ(days_used[inst], s.used) << p.ToString() << " " << inst;
      }
      EXPECT_FALSE(report.empty());
    }
    // Another grouping of the same quarter sums to the same.
    Sums q;
    for (const UsageRow& r : by_quarter.rows) {
      EXPECT_EQ(r.bucket, "2026-Q1");
      q.used += r.used_gpu_ms;
      q.credited += r.credited_gpu_ms;
      q.list += r.list_krw;
      q.copay += r.copay_krw;
      q.subsidy += r.subsidy_krw;
    }
    EXPECT_EQ(q, quarter_docs);
    EXPECT_EQ(by_quarter.totals.list_krw, quarter_docs.list);
    EXPECT_GT(quarter_docs.copay, 0);  // not vacuous: co-pay, and credits over the seeds
    credited += quarter_docs.credited;
  }
  EXPECT_LT(credited, 0);
}

TEST(UsageReportTest, CapacityTellsPlannedFromUnplannedOutagesAndOwnUse) {
  Harness h;
  h.Registry(Rate(5'000, 0));
  h.Registry(Copay(v1::ACADEMIA, 0, 0));
  h.Registry(Institution("u1", v1::ACADEMIA, 0));
  h.Registry(Pool("csp-a", 10, 0));
  h.Registry(Allocation("a1", "u1", "csp-a", 4));
  const int64_t t0 = kMar.StartMs();
  h.Usage("csp-a", Usage("e1", "a1", 4, t0, t0 + 10 * kHour));
  v1::UsageEvent planned = Outage("o1", "", 2, t0, t0 + 5 * kHour, "maintenance");
  planned.mutable_outage()->set_kind(v1::OUTAGE_PLANNED);
  h.Usage("csp-a", planned);
  v1::UsageEvent unplanned = Outage("o2", "", 1, t0 + 30 * kHour, t0 + 33 * kHour, "power");
  h.Usage("csp-a", unplanned);  // kind unspecified: unplanned
  h.Usage("csp-a", OwnUse("w1", 3, t0 + 24 * kHour, t0 + 26 * kHour));

  const UsageReport month = Report(h, "2026-03", "2026-03", "month", "csp,model,institution");
  ASSERT_TRUE(month.capacity_shown);
  ASSERT_EQ(month.capacity.size(), 1u);
  const CapacityRow& c = month.capacity[0];
  EXPECT_EQ(c.group, (std::vector<std::string>{"csp-a", "H200"}));
  EXPECT_EQ(c.capacity_gpu_ms, 10 * (kApr.StartMs() - kMar.StartMs()));
  EXPECT_EQ(c.programme_use_gpu_ms, 40 * kHour);
  EXPECT_EQ(c.own_use_gpu_ms, 6 * kHour);
  EXPECT_EQ(c.planned_outage_gpu_ms, 10 * kHour);
  EXPECT_EQ(c.unplanned_outage_gpu_ms, 3 * kHour);
  EXPECT_EQ(c.idle_gpu_ms, c.capacity_gpu_ms - 59 * kHour);

  // By day: the first day holds the usage and the planned outage, the second the rest.
  const UsageReport days = Report(h, "2026-03-01", "2026-03-02", "day", "csp");
  ASSERT_EQ(days.capacity.size(), 2u);
  EXPECT_EQ(days.capacity[0].bucket, "2026-03-01");
  EXPECT_EQ(days.capacity[0].capacity_gpu_ms, 10 * 24 * kHour);
  EXPECT_EQ(days.capacity[0].programme_use_gpu_ms, 40 * kHour);
  EXPECT_EQ(days.capacity[0].planned_outage_gpu_ms, 10 * kHour);
  EXPECT_EQ(days.capacity[1].own_use_gpu_ms, 6 * kHour);
  EXPECT_EQ(days.capacity[1].unplanned_outage_gpu_ms, 3 * kHour);
  EXPECT_FALSE(days.rows.at(0).has_money);

  // Withdrawn, an outage leaves the report.
  v1::UsageEvent w;
  w.set_event_id("x1");
  w.mutable_outage_withdrawal()->set_target_event_id("o1");
  w.mutable_outage_withdrawal()->set_program(v1::GOV_ADVANCED);
  w.mutable_outage_withdrawal()->set_gpu_model(v1::H200);
  h.Usage("csp-a", w);
  EXPECT_EQ(Report(h, "2026-03", "2026-03", "month", "").capacity.at(0).planned_outage_gpu_ms, 0);

  // One institution's report has no capacity; one CSP's only its pools.
  auto q = ParseUsageQuery("2026-03", "2026-03", "month", "");
  ASSERT_TRUE(q.ok());
  q->institution_id = "u1";
  auto mine = h.engine().Usage(*q);
  ASSERT_TRUE(mine.ok());
  EXPECT_FALSE(mine->capacity_shown);
  EXPECT_EQ(mine->totals.used_gpu_ms, 40 * kHour);
  q->institution_id.reset();
  q->csp_id = "csp-b";
  auto other = h.engine().Usage(*q);
  ASSERT_TRUE(other.ok());
  EXPECT_TRUE(other->rows.empty());
  EXPECT_TRUE(other->capacity.empty());
}

TEST(UsageReportTest, QueriesThatCannotBeAnsweredSayWhatToWriteInstead) {
  auto bad = [](const std::string& from, const std::string& to, const std::string& g,
                const std::string& by) {
    auto q = ParseUsageQuery(from, to, g, by);
    EXPECT_FALSE(q.ok()) << from << " " << to << " " << g << " " << by;
    return q.ok() ? std::string() : std::string(q.status().message());
  };
  EXPECT_NE(bad("2026-03-05", "2026-03-31", "month", "").find("whole months"), std::string::npos);
  EXPECT_NE(bad("2026-13", "2026-12", "month", "").find("not a month"), std::string::npos);
  EXPECT_NE(bad("2026-02-30", "2026-03-01", "day", "").find("not a day"), std::string::npos);
  EXPECT_NE(bad("2026-03", "2026-02", "month", "").find("ends"), std::string::npos);
  EXPECT_NE(bad("2026-01", "2026-02", "week", "").find("day, month, quarter, year"),
            std::string::npos);
  EXPECT_NE(bad("2026-01", "2026-02", "month", "csp,region").find("'region'"), std::string::npos);
  EXPECT_NE(bad("2026-01", "2026-02", "month", "csp,csp").find("twice"), std::string::npos);
  EXPECT_NE(bad("2010-01-01", "2026-01-01", "day", "").find("at most"), std::string::npos);
  EXPECT_NE(bad("", "2026-01", "month", "").find("give the range"), std::string::npos);
  auto q = ParseUsageQuery("2026-02", "2026-02", "", "");
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(FormatDay(q->from_day), "2026-02-01");
  EXPECT_EQ(FormatDay(q->to_day), "2026-02-28");
  EXPECT_EQ(q->granularity, Granularity::kMonth);
}

v1::RegistryEvent Budget(int64_t krw, int64_t from, const std::string& call = "",
                         std::vector<uint32_t> thresholds = {}) {
  v1::RegistryEvent e;
  auto* b = e.mutable_budget();
  b->set_program(v1::GOV_ADVANCED);
  b->set_fiscal_year(2026);
  b->set_call_id(call);
  b->set_amount_krw(krw);
  b->set_effective_from_ms(from);
  for (uint32_t t : thresholds) b->add_alert_thresholds_bp(t);
  return e;
}

TEST(BudgetReportTest, TheDocumentsDrawDownTheBudgetAndTheRunRateForecastsTheYear) {
  Harness h;
  h.Registry(Rate(10'000, 0));
  h.Registry(Copay(v1::SME, 1'000, 0));
  h.Registry(Institution("s1", v1::SME, 0));
  v1::RegistryEvent a = Allocation("a1", "s1");
  a.mutable_allocation()->set_call_id("call-1");
  h.Registry(a);
  h.Registry(Allocation("a2", "s1"));
  h.Registry(Budget(10'000'000, 0, "", {5'000, 8'000, 10'000}));
  // A supplementary budget from March.
  h.Registry(Budget(12'000'000, kMar.StartMs(), "", {5'000, 8'000, 10'000}));
  h.Registry(Budget(1'000'000, 0, "call-1"));
  // January: 100 GPU-hours on each allocation (1,000,000 won list, 900,000 subsidy each).
  h.Usage("csp-a", Usage("e1", "a1", 10, kJan.StartMs(), kJan.StartMs() + 10 * kHour));
  h.Usage("csp-a", Usage("e2", "a2", 10, kJan.StartMs(), kJan.StartMs() + 10 * kHour));
  h.Close(kJan);
  // February: 50 GPU-hours on a2, and a late 10 GPU-hours of January on a1 (an adjustment).
  h.Usage("csp-a", Usage("e3", "a2", 5, kFeb.StartMs(), kFeb.StartMs() + 10 * kHour));
  h.Usage("csp-a", Usage("e4", "a1", 1, kJan.StartMs() + 20 * kHour, kJan.StartMs() + 30 * kHour));

  auto r = h.engine().Budgets(2026);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->budgets.size(), 2u);
  const BudgetRow& all = r->budgets[0];
  EXPECT_EQ(all.call_id, "");
  EXPECT_EQ(all.amount_krw, 12'000'000);
  EXPECT_EQ(all.versions.size(), 2u);
  ASSERT_EQ(all.months.size(), 2u);
  EXPECT_TRUE(all.months[0].closed);
  EXPECT_EQ(all.months[0].drawdown_krw, 1'800'000);
  EXPECT_FALSE(all.months[1].closed);
  EXPECT_EQ(all.months[1].drawdown_krw, 450'000 + 90'000);
  EXPECT_EQ(all.drawn_krw, 2'340'000);
  EXPECT_EQ(all.remaining_krw, 12'000'000 - 2'340'000);
  EXPECT_EQ(all.drawn_bp, 1'950u);
  EXPECT_EQ(all.forecast_basis, "closed");
  EXPECT_EQ(all.forecast_krw, 2'340'000 + 10 * 1'800'000);
  EXPECT_TRUE(all.thresholds_crossed_bp.empty());
  // The drawdown is what the programme summaries say the state pays.
  for (const base::Period p : {kJan, kFeb}) {
    auto d = h.Docs(p);
    ASSERT_TRUE(d.ok());
    ASSERT_EQ(d->programs_size(), 1);
    EXPECT_EQ(all.months[p.month - 1].drawdown_krw,
              d->programs(0).totals().subsidy_krw() + d->programs(0).reservation_difference_krw());
  }
  const BudgetRow& call = r->budgets[1];
  EXPECT_EQ(call.call_id, "call-1");
  EXPECT_EQ(call.months[0].drawdown_krw, 900'000);
  EXPECT_EQ(call.months[1].drawdown_krw, 90'000);  // January's late usage, billed in February
  EXPECT_EQ(call.drawn_bp, 9'900u);

  // More usage crosses the thresholds; another year has no budget.
  h.Usage("csp-a", Usage("e5", "a1", 16, kFeb.StartMs(), kFeb.StartMs() + 500 * kHour));
  auto more = h.engine().Budgets(2026, v1::GOV_ADVANCED);
  ASSERT_TRUE(more.ok());
  EXPECT_EQ(more->budgets[0].thresholds_crossed_bp, (std::vector<uint32_t>{5'000, 8'000, 10'000}));
  EXPECT_LT(more->budgets[0].remaining_krw, 0);
  auto none = h.engine().Budgets(2027);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->budgets.empty());
  EXPECT_FALSE(h.engine().Budgets(1900).ok());

  // Rendered: JSON, CSV and the burn-down chart.
  const std::string json = BudgetReportJson(*more);
  EXPECT_NE(json.find("\"format\": \"gpuledger.budget_report/1\""), std::string::npos);
  EXPECT_NE(BudgetReportCsv(*more).find("202602"), std::string::npos);
  const std::string svg = BudgetBurnDownSvg(more->budgets[0], i18n::Lang::kKo);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("stroke-dasharray"), std::string::npos);  // the forecast
}

}  // namespace
}  // namespace gpuledger::settlement::testing
