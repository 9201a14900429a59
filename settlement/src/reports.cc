// Reports over time (settlement/reports.h): read from the roll-ups the engine keeps as it
// applies entries. Months and longer read the month's lines (l/: each priced as the invoice
// prices it), own use (w/) and outages by kind (dk/); days read the daily roll-up (rd/).

#include "settlement/reports.h"

#include <algorithm>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status.h"
#include "counters.h"
#include "engine_internal.h"
#include "settlement/engine.h"

namespace gpuledger::settlement {

using namespace internal;  // NOLINT: the engine's own helpers

namespace {

constexpr int64_t kMaxDays = 5 * 366;  // a day report: at most about five years
constexpr int kMaxMonths = 100 * 12;   // a month report: at most a hundred years

// The KST day of a period's first day, and its last.
int64_t FirstDay(Period p) { return keys::KstDay(p.StartMs()); }
int64_t LastDay(Period p) { return keys::KstDay(p.EndMs()) - 1; }

// "YYYY-MM-DD" or "YYYY-MM" (its first day, or with `last`, its last).
absl::StatusOr<int64_t> ParseDay(const std::string& text, bool last, const char* what) {
  if (text.size() == 7) {
    auto p = base::ParsePeriod(text);
    if (!p.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " '", text, "' is not a month (YYYY-MM) or a day (YYYY-MM-DD)"));
    }
    return last ? LastDay(*p) : FirstDay(*p);
  }
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " '", text, "' is not a day (YYYY-MM-DD) or a month (YYYY-MM)"));
  };
  if (text.size() != 10 || text[4] != '-' || text[7] != '-') return bad();
  auto p = base::ParsePeriod(text.substr(0, 7));
  int d = 0;
  if (!p.ok() || !absl::SimpleAtoi(text.substr(8), &d) || text[8] < '0' || text[8] > '9') {
    return bad();
  }
  const int64_t day = FirstDay(*p) + d - 1;
  if (d < 1 || day > LastDay(*p)) return bad();
  return day;
}

Period PeriodOfDay(int64_t day) { return base::PeriodOf(keys::KstDayStartMs(day)); }

std::string BucketOf(Granularity g, int64_t day) {
  const Period p = PeriodOfDay(day);
  switch (g) {
    case Granularity::kDay:
      return FormatDay(day);
    case Granularity::kMonth:
      return p.ToString();
    case Granularity::kQuarter:
      return absl::StrCat(p.year, "-Q", (p.month - 1) / 3 + 1);
    case Granularity::kYear:
      return absl::StrCat(p.year);
  }
  return "";
}

// Sums kept in 128 bits, narrowed (checked) when the report is written.
struct UsageSum {
  __int128 used = 0, credited = 0, list = 0, copay = 0, subsidy = 0;
};
struct CapacitySum {
  __int128 capacity = 0, use = 0, own = 0, planned = 0, unplanned = 0;
};

using GroupKey = std::pair<std::string, std::vector<std::string>>;  // bucket, group

absl::StatusOr<int64_t> Narrow(__int128 v, const GroupKey& key, const char* what) {
  auto out = base::CheckedNarrow(v, what);
  if (!out.ok()) {
    return absl::OutOfRangeError(absl::StrCat("the report's ", what, " of ", key.first,
                                              " does not fit 64 bits: ", out.status().message()));
  }
  return *out;
}

}  // namespace

const char* GranularityName(Granularity g) {
  switch (g) {
    case Granularity::kDay:
      return "day";
    case Granularity::kMonth:
      return "month";
    case Granularity::kQuarter:
      return "quarter";
    case Granularity::kYear:
      return "year";
  }
  return "";
}

const char* DimensionName(Dimension d) {
  switch (d) {
    case Dimension::kProgram:
      return "program";
    case Dimension::kCsp:
      return "csp";
    case Dimension::kModel:
      return "model";
    case Dimension::kInstitutionType:
      return "institution_type";
    case Dimension::kInstitution:
      return "institution";
    case Dimension::kCall:
      return "call";
  }
  return "";
}

std::string FormatDay(int64_t day) {
  const Period p = PeriodOfDay(day);
  return absl::StrCat(p.ToString(), "-", absl::Dec(day - FirstDay(p) + 1, absl::kZeroPad2));
}

absl::StatusOr<UsageQuery> ParseUsageQuery(const std::string& from, const std::string& to,
                                           const std::string& granularity,
                                           const std::string& group_by) {
  UsageQuery q;
  if (from.empty() || to.empty()) {
    return absl::InvalidArgumentError(
        "give the range: from and to, each a month (2026-01) or a day (2026-01-15), KST");
  }
  GPULEDGER_ASSIGN_OR_RETURN(q.from_day, ParseDay(from, false, "from"));
  GPULEDGER_ASSIGN_OR_RETURN(q.to_day, ParseDay(to, true, "to"));
  if (q.to_day < q.from_day) {
    return absl::InvalidArgumentError(absl::StrCat("the range ends (", FormatDay(q.to_day),
                                                   ") before it starts (", FormatDay(q.from_day),
                                                   ")"));
  }
  const std::string g = granularity.empty() ? "month" : granularity;
  bool known = false;
  for (Granularity c :
       {Granularity::kDay, Granularity::kMonth, Granularity::kQuarter, Granularity::kYear}) {
    if (g == GranularityName(c)) {
      q.granularity = c;
      known = true;
    }
  }
  if (!known) {
    return absl::InvalidArgumentError(
        absl::StrCat("granularity '", g, "' is not one of day, month, quarter, year"));
  }
  if (q.granularity == Granularity::kDay) {
    if (q.to_day - q.from_day + 1 > kMaxDays) {
      return absl::InvalidArgumentError(absl::StrCat("a report by day covers at most ", kMaxDays,
                                                     " days; ask by month for a longer range"));
    }
  } else {
    if (FirstDay(PeriodOfDay(q.from_day)) != q.from_day ||
        LastDay(PeriodOfDay(q.to_day)) != q.to_day) {
      return absl::InvalidArgumentError(
          absl::StrCat("money is settled by month, so a report by ", GranularityName(q.granularity),
                       " covers whole months: give from and to as months (e.g. from ",
                       PeriodOfDay(q.from_day).ToString(), " to ", PeriodOfDay(q.to_day).ToString(),
                       "), or ask by day"));
    }
    const Period a = PeriodOfDay(q.from_day), b = PeriodOfDay(q.to_day);
    if ((b.year - a.year) * 12 + (b.month - a.month) + 1 > kMaxMonths) {
      return absl::InvalidArgumentError(
          absl::StrCat("a report covers at most ", kMaxMonths, " months"));
    }
  }
  if (!group_by.empty()) {
    for (const std::string& part : std::vector<std::string>(absl::StrSplit(group_by, ','))) {
      bool found = false;
      for (Dimension d : {Dimension::kProgram, Dimension::kCsp, Dimension::kModel,
                          Dimension::kInstitutionType, Dimension::kInstitution, Dimension::kCall}) {
        if (part == DimensionName(d)) {
          if (std::find(q.group_by.begin(), q.group_by.end(), d) != q.group_by.end()) {
            return absl::InvalidArgumentError(absl::StrCat("group_by names '", part, "' twice"));
          }
          q.group_by.push_back(d);
          found = true;
        }
      }
      if (!found) {
        return absl::InvalidArgumentError(
            absl::StrCat("group_by '", part,
                         "' is not one of program, csp, model, institution_type, institution, "
                         "call"));
      }
    }
  }
  return q;
}

absl::StatusOr<UsageReport> Engine::Usage(const UsageQuery& query) {
  counters_->Flush();
  UsageReport report;
  report.query = query;
  report.applied_through = applied_through_;
  report.capacity_shown = !query.institution_id.has_value();

  auto group_of = [&](const std::string& csp, int program, int model, int type,
                      const std::string& institution, const std::string& call, bool pool_only) {
    std::vector<std::string> g;
    for (Dimension d : query.group_by) {
      switch (d) {
        case Dimension::kProgram:
          g.push_back(v1::Program_Name(static_cast<v1::Program>(program)));
          break;
        case Dimension::kCsp:
          g.push_back(csp);
          break;
        case Dimension::kModel:
          g.push_back(v1::GpuModel_Name(static_cast<v1::GpuModel>(model)));
          break;
        case Dimension::kInstitutionType:
          if (!pool_only) {
            g.push_back(v1::InstitutionType_Name(static_cast<v1::InstitutionType>(type)));
          }
          break;
        case Dimension::kInstitution:
          if (!pool_only) g.push_back(institution);
          break;
        case Dimension::kCall:
          if (!pool_only) g.push_back(call);
          break;
      }
    }
    return g;
  };
  std::map<GroupKey, UsageSum> usage;
  std::map<GroupKey, CapacitySum> capacity;
  using Pool = std::tuple<std::string, int, int>;
  // What each pool delivered to the programme, per bucket (for the capacity breakdown).
  std::map<std::pair<std::string, Pool>, __int128> pool_use;

  const Period first = PeriodOfDay(query.from_day), last = PeriodOfDay(query.to_day);
  for (Period p = first;; p = p.Next()) {
    report.periods.emplace_back(p.ToString(), IsClosed(p.ToString()));
    if (p == last) break;
  }

  if (query.granularity != Granularity::kDay) {
    for (Period p = first;; p = p.Next()) {
      const std::string period = p.ToString();
      const std::string bucket = BucketOf(query.granularity, FirstDay(p));
      const std::string prefix = KeyBuilder(keys::kLine).Str(period).Take();
      absl::Status failed;
      store_->Scan(prefix, [&](std::string_view key, std::string_view value) {
        ++report.keys_read;
        report.bytes_read += key.size() + value.size();
        LineId id;
        const auto gpu_ms = keys::DecodeI128(value);
        if (!DecodeLine(key.substr(prefix.size()), &id) || !gpu_ms) {
          failed =
              absl::DataLossError(absl::StrCat("settlement store: an unreadable line of ", period));
          return false;
        }
        if (query.institution_id && id.institution_id != *query.institution_id) return true;
        const v1::Allocation* a = registry_.FindAllocation(id.allocation_id);
        const std::string csp = a == nullptr ? "" : a->csp_id();
        if (query.csp_id && csp != *query.csp_id) return true;
        const int program = a == nullptr ? 0 : a->program();
        UsageSum& s = usage[{bucket, group_of(csp, program, id.model, id.type, id.institution_id,
                                              a == nullptr ? "" : a->call_id(), false)}];
        const bool credit = id.kind == v1::LINE_KIND_OUTAGE_CREDIT;
        (credit ? s.credited : s.used) += *gpu_ms;
        pool_use[{bucket, Pool{csp, program, id.model}}] += *gpu_ms;
        v1::InvoiceLine line;
        line.set_kind(static_cast<v1::LineKind>(id.kind));
        line.set_krw_per_gpu_hour(id.rate);
        line.set_copay_bp(static_cast<uint32_t>(id.copay_bp));
        auto narrow = base::CheckedNarrow(*gpu_ms, "a line's GPU-ms");
        absl::Status priced = narrow.status();
        if (priced.ok()) {
          line.set_gpu_ms(*narrow);
          priced = Price(&line);
        }
        if (!priced.ok()) {
          failed = absl::OutOfRangeError(absl::StrCat("a line of ", period, " (allocation ",
                                                      id.allocation_id,
                                                      ") cannot be priced: ", priced.message()));
          return false;
        }
        s.list += line.list_krw();
        s.copay += line.copay_krw();
        s.subsidy += line.subsidy_krw();
        return true;
      });
      GPULEDGER_RETURN_IF_ERROR(failed);
      if (report.capacity_shown) {
        for (const auto& [csp, program, model] : registry_.Pools()) {
          if (query.csp_id && csp != *query.csp_id) continue;
          const std::string rest = PoolRest(period, csp, program, model);
          CapacitySum& c = capacity[{bucket, group_of(csp, program, model, 0, "", "", true)}];
          if (const auto* pool = registry_.Pool(csp, program, model)) {
            pool->ForEachWithin(p.StartMs(), p.EndMs(), [&](int64_t lo, int64_t hi, uint32_t n) {
              c.capacity += GpuMsOf(n, lo, hi);
            });
          }
          const std::string by_kind = KeyBuilder(keys::kOutageByKind).Raw(rest).Take();
          for (auto [key, sum] :
               {std::pair{absl::StrCat(keys::kOwnUse, rest), &c.own},
                std::pair{KeyBuilder(by_kind).U32(v1::OUTAGE_PLANNED).Take(), &c.planned},
                std::pair{KeyBuilder(by_kind).U32(v1::OUTAGE_UNPLANNED).Take(), &c.unplanned}}) {
            *sum += store_->GetInt(key);
            ++report.keys_read;
            report.bytes_read += key.size() + 16;
          }
          auto it = pool_use.find({bucket, Pool{csp, program, model}});
          if (it != pool_use.end()) {
            c.use += it->second;
            pool_use.erase(it);
          }
        }
      }
      if (p == last) break;
    }
  } else {
    const std::string from =
        KeyBuilder(keys::kRollupDay).U32(static_cast<uint32_t>(query.from_day)).Take();
    absl::Status failed;
    store_->Scan(keys::kRollupDay, from, [&](std::string_view key, std::string_view value) {
      ++report.keys_read;
      report.bytes_read += key.size() + value.size();
      keys::RollupFields f;
      const auto gpu_ms = keys::DecodeI128(value);
      if (!keys::DecodeRollup(key, &f) || !gpu_ms) {
        failed = absl::DataLossError("settlement store: an unreadable daily roll-up");
        return false;
      }
      if (f.day > query.to_day) return false;
      if (query.csp_id && f.csp != *query.csp_id) return true;
      const std::string bucket = FormatDay(f.day);
      if (f.measure == keys::kMeasureUsed) {
        const v1::Allocation* a = registry_.FindAllocation(f.allocation);
        if (query.institution_id &&
            (a == nullptr || a->institution_id() != *query.institution_id)) {
          return true;
        }
        usage[{bucket,
               group_of(f.csp, f.program, f.model, f.type, a == nullptr ? "" : a->institution_id(),
                        a == nullptr ? "" : a->call_id(), false)}]
            .used += *gpu_ms;
      }
      if (!report.capacity_shown) return true;
      CapacitySum& c = capacity[{bucket, group_of(f.csp, f.program, f.model, 0, "", "", true)}];
      switch (f.measure) {
        case keys::kMeasureUsed:
          c.use += *gpu_ms;
          break;
        case keys::kMeasureOwnUse:
          c.own += *gpu_ms;
          break;
        case keys::kMeasurePlannedOutage:
          c.planned += *gpu_ms;
          break;
        default:
          c.unplanned += *gpu_ms;
          break;
      }
      return true;
    });
    GPULEDGER_RETURN_IF_ERROR(failed);
    if (report.capacity_shown) {
      for (const auto& [csp, program, model] : registry_.Pools()) {
        if (query.csp_id && csp != *query.csp_id) continue;
        const auto* pool = registry_.Pool(csp, program, model);
        if (pool == nullptr) continue;
        for (int64_t day = query.from_day; day <= query.to_day; ++day) {
          __int128 cap = 0;
          pool->ForEachWithin(
              keys::KstDayStartMs(day), keys::KstDayStartMs(day + 1),
              [&](int64_t lo, int64_t hi, uint32_t n) { cap += GpuMsOf(n, lo, hi); });
          if (cap == 0) continue;
          capacity[{FormatDay(day), group_of(csp, program, model, 0, "", "", true)}].capacity +=
              cap;
        }
      }
    }
  }

  UsageSum total;
  for (const auto& [key, s] : usage) {
    UsageRow row;
    row.bucket = key.first;
    row.group = key.second;
    GPULEDGER_ASSIGN_OR_RETURN(row.used_gpu_ms, Narrow(s.used, key, "used GPU-ms"));
    GPULEDGER_ASSIGN_OR_RETURN(row.credited_gpu_ms, Narrow(s.credited, key, "credited GPU-ms"));
    GPULEDGER_ASSIGN_OR_RETURN(row.net_gpu_ms, Narrow(s.used + s.credited, key, "net GPU-ms"));
    row.has_money = query.granularity != Granularity::kDay;
    GPULEDGER_ASSIGN_OR_RETURN(row.list_krw, Narrow(s.list, key, "list price"));
    GPULEDGER_ASSIGN_OR_RETURN(row.copay_krw, Narrow(s.copay, key, "co-pay"));
    GPULEDGER_ASSIGN_OR_RETURN(row.subsidy_krw, Narrow(s.subsidy, key, "subsidy"));
    total.used += s.used;
    total.credited += s.credited;
    total.list += s.list;
    total.copay += s.copay;
    total.subsidy += s.subsidy;
    report.rows.push_back(std::move(row));
  }
  const GroupKey all{"total", {}};
  report.totals.has_money = query.granularity != Granularity::kDay;
  GPULEDGER_ASSIGN_OR_RETURN(report.totals.used_gpu_ms, Narrow(total.used, all, "used GPU-ms"));
  GPULEDGER_ASSIGN_OR_RETURN(report.totals.credited_gpu_ms,
                             Narrow(total.credited, all, "credited GPU-ms"));
  GPULEDGER_ASSIGN_OR_RETURN(report.totals.net_gpu_ms,
                             Narrow(total.used + total.credited, all, "net GPU-ms"));
  GPULEDGER_ASSIGN_OR_RETURN(report.totals.list_krw, Narrow(total.list, all, "list price"));
  GPULEDGER_ASSIGN_OR_RETURN(report.totals.copay_krw, Narrow(total.copay, all, "co-pay"));
  GPULEDGER_ASSIGN_OR_RETURN(report.totals.subsidy_krw, Narrow(total.subsidy, all, "subsidy"));
  for (const auto& [key, c] : capacity) {
    if (c.capacity == 0 && c.use == 0 && c.own == 0 && c.planned == 0 && c.unplanned == 0) {
      continue;
    }
    CapacityRow row;
    row.bucket = key.first;
    row.group = key.second;
    GPULEDGER_ASSIGN_OR_RETURN(row.capacity_gpu_ms, Narrow(c.capacity, key, "capacity"));
    GPULEDGER_ASSIGN_OR_RETURN(row.programme_use_gpu_ms, Narrow(c.use, key, "programme use"));
    GPULEDGER_ASSIGN_OR_RETURN(row.own_use_gpu_ms, Narrow(c.own, key, "own use"));
    GPULEDGER_ASSIGN_OR_RETURN(row.planned_outage_gpu_ms, Narrow(c.planned, key, "planned outage"));
    GPULEDGER_ASSIGN_OR_RETURN(row.unplanned_outage_gpu_ms,
                               Narrow(c.unplanned, key, "unplanned outage"));
    GPULEDGER_ASSIGN_OR_RETURN(
        row.idle_gpu_ms,
        Narrow(c.capacity - c.use - c.own - c.planned - c.unplanned, key, "idle GPU-ms"));
    report.capacity.push_back(std::move(row));
  }
  return report;
}

__int128 Engine::CapUsedGpuMs(const std::string& cap_holder) {
  return counters_->Get(KeyBuilder(keys::kCapUsed).Str(cap_holder).Take());
}

absl::StatusOr<BudgetReport> Engine::Budgets(uint32_t year, std::optional<int> program) {
  counters_->Flush();
  BudgetReport report;
  report.year = year;
  report.applied_through = applied_through_;
  if (year < static_cast<uint32_t>(base::kFirstPeriod.year) ||
      year > static_cast<uint32_t>(base::kLastPeriod.year)) {
    return absl::InvalidArgumentError(absl::StrCat("year ", year, " is outside the periods known"));
  }
  std::vector<const std::pair<const ledger::BudgetKey, ledger::Timeline<ledger::BudgetVersion>>*>
      chosen;
  for (const auto& entry : registry_.budgets()) {
    const auto& [prog, y, call] = entry.first;
    if (y != year || (program && prog != *program)) continue;
    chosen.push_back(&entry);
  }
  if (chosen.empty()) return report;

  // The months reported: January to the last month of the year closed or with usage.
  int last_month = 0;
  for (int m = 1; m <= 12; ++m) {
    const Period p{static_cast<int>(year), m};
    bool any = IsClosed(p.ToString());
    if (!any) {
      store_->Scan(KeyBuilder(keys::kLine).Str(p.ToString()).Take(),
                   [&](std::string_view, std::string_view) {
                     any = true;
                     return false;
                   });
    }
    if (any) last_month = m;
  }
  // Each month's drawdown per (programme, call): "" is the programme's whole.
  std::map<std::pair<int, std::string>, std::vector<__int128>> drawn;
  for (const auto* entry : chosen) {
    drawn[{std::get<0>(entry->first), std::get<2>(entry->first)}].assign(last_month, 0);
  }
  for (int m = 1; m <= last_month; ++m) {
    const Period p{static_cast<int>(year), m};
    DocumentFilter filter;
    filter.statements = false;
    GPULEDGER_ASSIGN_OR_RETURN(v1::PeriodDocuments docs, Documents(p, filter));
    if (docs.errors_size() > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the documents of ", p.ToString(), " cannot all be computed (", docs.errors(0).document(),
          ": ", docs.errors(0).message(), "); a budget report needs every one"));
    }
    for (const v1::ProgramSummary& ps : docs.programs()) {
      auto it = drawn.find({ps.program(), ""});
      if (it == drawn.end()) continue;
      it->second[m - 1] +=
          static_cast<__int128>(ps.totals().subsidy_krw()) + ps.reservation_difference_krw();
    }
    auto add_lines = [&](const v1::Invoice& inv) {
      for (const auto* lines : {&inv.lines(), &inv.adjustments()}) {
        for (const v1::InvoiceLine& l : *lines) {
          const v1::Allocation* a = registry_.FindAllocation(l.allocation_id());
          if (a == nullptr || a->call_id().empty()) continue;
          auto it = drawn.find({l.program(), a->call_id()});
          if (it != drawn.end()) it->second[m - 1] += l.subsidy_krw();
        }
      }
    };
    for (const auto& inv : docs.invoices()) add_lines(inv);
    for (const auto& inv : docs.nothing_owed()) add_lines(inv);
  }

  for (const auto* entry : chosen) {
    const auto& [prog, y, call] = entry->first;
    BudgetRow row;
    row.program = v1::Program_Name(static_cast<v1::Program>(prog));
    row.call_id = call;
    const Period december{static_cast<int>(year), 12};
    entry->second.ForEachWithin(INT64_MIN, INT64_MAX,
                                [&](int64_t from, int64_t, const ledger::BudgetVersion& v) {
                                  row.versions.emplace_back(from, v.budget.amount_krw());
                                });
    const ledger::BudgetVersion* in_force = entry->second.Find(december.EndMs() - 1);
    if (in_force == nullptr) in_force = entry->second.Find(INT64_MAX);
    row.amount_krw = in_force->budget.amount_krw();
    row.note = in_force->budget.note();
    row.alert_thresholds_bp.assign(in_force->budget.alert_thresholds_bp().begin(),
                                   in_force->budget.alert_thresholds_bp().end());
    const std::vector<__int128>& months = drawn[{prog, call}];
    __int128 cumulative = 0, closed_sum = 0;
    int closed_months = 0;
    for (size_t i = 0; i < months.size(); ++i) {
      const Period p{static_cast<int>(year), static_cast<int>(i + 1)};
      BudgetMonth bm;
      bm.period = p.ToString();
      bm.closed = IsClosed(bm.period);
      cumulative += months[i];
      GPULEDGER_ASSIGN_OR_RETURN(bm.drawdown_krw,
                                 base::CheckedNarrow(months[i], "a month's drawdown"));
      GPULEDGER_ASSIGN_OR_RETURN(bm.cumulative_krw,
                                 base::CheckedNarrow(cumulative, "the drawdown"));
      if (bm.closed) {
        closed_sum += months[i];
        ++closed_months;
      }
      row.months.push_back(std::move(bm));
    }
    GPULEDGER_ASSIGN_OR_RETURN(row.drawn_krw, base::CheckedNarrow(cumulative, "the drawdown"));
    GPULEDGER_ASSIGN_OR_RETURN(row.remaining_krw,
                               base::CheckedSub(row.amount_krw, row.drawn_krw, "the remainder"));
    GPULEDGER_ASSIGN_OR_RETURN(int64_t bp,
                               DivRound(cumulative * base::kBasisPointsPerUnit, row.amount_krw));
    row.drawn_bp = static_cast<uint32_t>(std::clamp<int64_t>(bp, 0, UINT32_MAX));
    for (uint32_t t : row.alert_thresholds_bp) {
      if (cumulative * base::kBasisPointsPerUnit >= static_cast<__int128>(t) * row.amount_krw) {
        row.thresholds_crossed_bp.push_back(t);
      }
    }
    const int reported = static_cast<int>(months.size());
    if (reported > 0) {
      const bool by_closed = closed_months > 0;
      row.forecast_basis = by_closed ? "closed" : "draft";
      const __int128 base_sum = by_closed ? closed_sum : cumulative;
      const int base_n = by_closed ? closed_months : reported;
      GPULEDGER_ASSIGN_OR_RETURN(int64_t rest, DivRound(base_sum * (12 - reported), base_n));
      GPULEDGER_ASSIGN_OR_RETURN(row.forecast_krw,
                                 base::CheckedAdd(row.drawn_krw, rest, "the forecast"));
    }
    report.budgets.push_back(std::move(row));
  }
  return report;
}

}  // namespace gpuledger::settlement
