// Reports over time (docs/REPORTS.md): usage and money over any range of KST days, by day,
// month, quarter or year, grouped by programme, CSP, GPU model, institution type, institution
// or call, with a capacity breakdown like Slurm's sreport (programme use, own use, planned and
// unplanned outage, idle); and budgets drawn down by the month's documents. Read from roll-ups
// the engine keeps as entries are applied (the month's lines l/, the daily roll-up rd/, own use
// w/ and outages by kind dk/), so a year's report reads a few thousand keys and recomputes
// nothing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "i18n/i18n.h"

namespace gpuledger::settlement {

enum class Granularity { kDay, kMonth, kQuarter, kYear };
enum class Dimension { kProgram, kCsp, kModel, kInstitutionType, kInstitution, kCall };

// "day", "month", "quarter", "year"; and "program", "csp", "model", "institution_type",
// "institution", "call".
const char* GranularityName(Granularity g);
const char* DimensionName(Dimension d);

struct UsageQuery {
  int64_t from_day = 0;  // first KST day (days since 1970-01-01 KST), inclusive
  int64_t to_day = 0;    // last KST day, inclusive
  Granularity granularity = Granularity::kMonth;
  std::vector<Dimension> group_by;
  std::optional<std::string> institution_id;  // only this institution's usage (no capacity)
  std::optional<std::string> csp_id;          // only this CSP's usage and pools
};

// A query from people's words: `from` and `to` as YYYY-MM-DD or YYYY-MM (a month: its first day
// for `from`, its last for `to`), `granularity` as named above, `group_by` comma-separated
// dimension names (empty: no grouping). Money is per month (the invoice lines' rounding), so
// month, quarter and year reports need whole months: INVALID_ARGUMENT otherwise, with what to
// write instead; a range is at most 100 years of months, or 5 years of days.
absl::StatusOr<UsageQuery> ParseUsageQuery(const std::string& from, const std::string& to,
                                           const std::string& granularity,
                                           const std::string& group_by);

// One row: a bucket ("2026-03-01", "2026-03", "2026-Q1", "2026") and the group's values, in
// the query's group_by order (ids; enum names for programme, model and type; "" for a call not
// named).
struct UsageRow {
  std::string bucket;
  std::vector<std::string> group;
  int64_t used_gpu_ms = 0;      // as reported: usage, beyond cap, held, refused, unpriced
  int64_t credited_gpu_ms = 0;  // outage credits (≤ 0); months and longer only
  int64_t net_gpu_ms = 0;       // used + credited
  // Money of the invoice lines as priced now (what the documents billed, with the adjustments
  // issued since): months and longer only.
  bool has_money = false;
  int64_t list_krw = 0;
  int64_t copay_krw = 0;
  int64_t subsidy_krw = 0;
};

// A pool's time by what it was used for, over a bucket: capacity (the GPU pool records) =
// programme use + own use + planned outage + unplanned outage + idle. Programme use is net of
// outage credits by month (by day: as reported, before credits). Idle is what is left; it is
// negative where more was reported than the pool holds.
struct CapacityRow {
  std::string bucket;
  std::vector<std::string> group;  // the query's programme, CSP and model dimensions only
  int64_t capacity_gpu_ms = 0;
  int64_t programme_use_gpu_ms = 0;
  int64_t own_use_gpu_ms = 0;
  int64_t planned_outage_gpu_ms = 0;
  int64_t unplanned_outage_gpu_ms = 0;
  int64_t idle_gpu_ms = 0;
};

struct UsageReport {
  UsageQuery query;
  std::vector<UsageRow> rows;   // by bucket, then group
  UsageRow totals;              // every row summed (bucket and group empty)
  bool capacity_shown = false;  // not for one institution's report
  std::vector<CapacityRow> capacity;
  std::vector<std::pair<std::string, bool>> periods;  // the months touched, and whether closed
  uint64_t applied_through = 0;
  // What it read: roll-up keys and their bytes (keys and values), for the benchmark
  // (ops/bench/reports.sh); not rendered.
  uint64_t keys_read = 0;
  uint64_t bytes_read = 0;
};

// "2026-03-01" ↔ day numbers (KST).
std::string FormatDay(int64_t day);

// Canonical JSON ("gpuledger.usage_report/1", docs/FORMATS.md) and RFC 4180 CSV ("rows": one
// row per bucket and group; "capacity": one per bucket and pool group).
std::string UsageReportJson(const UsageReport& report);
std::string UsageReportCsv(const UsageReport& report, const std::string& which);
// A fixed-width table for a terminal.
std::string UsageReportTable(const UsageReport& report);
// A chart of the report (SVG, drawn here in integers): each bucket's capacity stacked by use
// (programme use, own use, planned and unplanned outage, idle) when the report has capacity,
// else each bucket's GPU-hours used.
std::string UsageReportSvg(const UsageReport& report, i18n::Lang lang);

// ---- Budgets ----

struct BudgetMonth {
  std::string period;  // YYYY-MM
  bool closed = false;
  // What the month's documents charge to the budget: the subsidy of its invoice lines and of
  // the adjustments it issues (and, for a programme's budget, the reservation difference of its
  // leased pools).
  int64_t drawdown_krw = 0;
  int64_t cumulative_krw = 0;
};

struct BudgetRow {
  std::string program;     // enum name
  std::string call_id;     // "" for the programme's whole year
  int64_t amount_krw = 0;  // the record in force at the year's last millisecond
  std::string note;
  std::vector<std::pair<int64_t, int64_t>> versions;  // (effective_from_ms, amount_krw)
  std::vector<uint32_t> alert_thresholds_bp;
  std::vector<BudgetMonth> months;  // January to the last month with documents
  int64_t drawn_krw = 0;
  int64_t remaining_krw = 0;  // amount − drawn (negative: overspent)
  uint32_t drawn_bp = 0;      // drawn / amount, basis points, rounded half away from zero
  // Run-rate forecast to the year's end: drawn + the mean drawdown of the year's closed months
  // (of every month reported when none is closed) × the months after the last one reported.
  int64_t forecast_krw = 0;
  std::string forecast_basis;  // "closed" or "draft" months, "" when no month is reported
  std::vector<uint32_t> thresholds_crossed_bp;
};

struct BudgetReport {
  uint32_t year = 0;
  std::vector<BudgetRow> budgets;
  uint64_t applied_through = 0;
};

std::string BudgetReportJson(const BudgetReport& report);  // "gpuledger.budget_report/1"
std::string BudgetReportCsv(const BudgetReport& report);   // one row per budget and month
std::string BudgetReportTable(const BudgetReport& report);
// A burn-down chart of one budget (SVG, drawn here): cumulative drawdown by month against the
// budget line, and the forecast to December.
std::string BudgetBurnDownSvg(const BudgetRow& row, i18n::Lang lang);

}  // namespace gpuledger::settlement
