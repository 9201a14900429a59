// Reports for systems (canonical JSON, CSV), terminals (a table) and pages (SVG charts drawn
// here: no script, nothing fetched).

#include <algorithm>
#include <array>
#include <map>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/money.h"
#include "csv.h"
#include "i18n/i18n.h"
#include "settlement/render.h"
#include "settlement/reports.h"

namespace gpuledger::settlement {

using json = nlohmann::ordered_json;
using internal::CsvField;
using internal::CsvPeriod;
using internal::kUtf8Bom;

namespace {

std::string Hours(int64_t gpu_ms) { return base::FormatGpuHours(base::GpuMs{gpu_ms}); }

std::vector<Dimension> PoolDims(const UsageQuery& q) {
  std::vector<Dimension> out;
  for (Dimension d : q.group_by) {
    if (d == Dimension::kProgram || d == Dimension::kCsp || d == Dimension::kModel) {
      out.push_back(d);
    }
  }
  return out;
}

json GroupObj(const std::vector<Dimension>& dims, const std::vector<std::string>& values) {
  json o = json::object();
  for (size_t i = 0; i < dims.size() && i < values.size(); ++i) {
    o[DimensionName(dims[i])] = values[i];
  }
  return o;
}

json UsageObj(const UsageRow& r) {
  json o;
  o["used_gpu_ms"] = r.used_gpu_ms;
  o["used_gpu_hours"] = Hours(r.used_gpu_ms);
  if (r.has_money) {
    o["credited_gpu_ms"] = r.credited_gpu_ms;
    o["net_gpu_ms"] = r.net_gpu_ms;
    o["net_gpu_hours"] = Hours(r.net_gpu_ms);
    o["list_krw"] = r.list_krw;
    o["copay_krw"] = r.copay_krw;
    o["subsidy_krw"] = r.subsidy_krw;
  }
  return o;
}

json CapacityObj(const CapacityRow& r) {
  return {{"capacity_gpu_ms", r.capacity_gpu_ms},
          {"capacity_gpu_hours", Hours(r.capacity_gpu_ms)},
          {"programme_use_gpu_ms", r.programme_use_gpu_ms},
          {"own_use_gpu_ms", r.own_use_gpu_ms},
          {"planned_outage_gpu_ms", r.planned_outage_gpu_ms},
          {"unplanned_outage_gpu_ms", r.unplanned_outage_gpu_ms},
          {"idle_gpu_ms", r.idle_gpu_ms}};
}

std::string Dump(const json& j) { return j.dump(2) + "\n"; }

}  // namespace

std::string UsageReportJson(const UsageReport& report) {
  const UsageQuery& q = report.query;
  json o;
  o["format"] = "gpuledger.usage_report/1";
  o["from"] = FormatDay(q.from_day);
  o["to"] = FormatDay(q.to_day);
  o["granularity"] = GranularityName(q.granularity);
  json dims = json::array();
  for (Dimension d : q.group_by) dims.push_back(DimensionName(d));
  o["group_by"] = dims;
  o["institution_id"] = q.institution_id ? json(*q.institution_id) : json(nullptr);
  o["csp_id"] = q.csp_id ? json(*q.csp_id) : json(nullptr);
  o["applied_through_seq"] = report.applied_through;
  json periods = json::array();
  for (const auto& [p, closed] : report.periods) {
    periods.push_back({{"period", p}, {"closed", closed}});
  }
  o["periods"] = periods;
  json rows = json::array();
  for (const UsageRow& r : report.rows) {
    json row = {{"bucket", r.bucket}, {"group", GroupObj(q.group_by, r.group)}};
    row.update(UsageObj(r));
    rows.push_back(row);
  }
  o["rows"] = rows;
  o["totals"] = UsageObj(report.totals);
  if (report.capacity_shown) {
    json cap = json::array();
    const std::vector<Dimension> dims_of_pools = PoolDims(q);
    for (const CapacityRow& r : report.capacity) {
      json row = {{"bucket", r.bucket}, {"group", GroupObj(dims_of_pools, r.group)}};
      row.update(CapacityObj(r));
      cap.push_back(row);
    }
    o["capacity"] = cap;
  } else {
    o["capacity"] = nullptr;
  }
  return Dump(o);
}

std::string UsageReportCsv(const UsageReport& report, const std::string& which) {
  const UsageQuery& q = report.query;
  std::string out = kUtf8Bom;
  const bool capacity = which == "capacity";
  const std::vector<Dimension> dims = capacity ? PoolDims(q) : q.group_by;
  absl::StrAppend(&out, "bucket");
  for (Dimension d : dims) absl::StrAppend(&out, ",", DimensionName(d));
  if (capacity) {
    absl::StrAppend(&out,
                    ",capacity_gpu_ms,programme_use_gpu_ms,own_use_gpu_ms,planned_outage_gpu_ms,"
                    "unplanned_outage_gpu_ms,idle_gpu_ms\r\n");
    for (const CapacityRow& r : report.capacity) {
      absl::StrAppend(&out, CsvPeriod(r.bucket));
      for (const auto& g : r.group) absl::StrAppend(&out, ",", CsvField(g));
      absl::StrAppend(&out, ",", r.capacity_gpu_ms, ",", r.programme_use_gpu_ms, ",",
                      r.own_use_gpu_ms, ",", r.planned_outage_gpu_ms, ",",
                      r.unplanned_outage_gpu_ms, ",", r.idle_gpu_ms, "\r\n");
    }
    return out;
  }
  absl::StrAppend(&out,
                  ",used_gpu_ms,used_gpu_hours,credited_gpu_ms,net_gpu_ms,list_krw,copay_krw,"
                  "subsidy_krw\r\n");
  for (const UsageRow& r : report.rows) {
    absl::StrAppend(&out, CsvPeriod(r.bucket));
    for (const auto& g : r.group) absl::StrAppend(&out, ",", CsvField(g));
    absl::StrAppend(&out, ",", r.used_gpu_ms, ",", Hours(r.used_gpu_ms));
    if (r.has_money) {
      absl::StrAppend(&out, ",", r.credited_gpu_ms, ",", r.net_gpu_ms, ",", r.list_krw, ",",
                      r.copay_krw, ",", r.subsidy_krw, "\r\n");
    } else {
      absl::StrAppend(&out, ",,,,,\r\n");
    }
  }
  return out;
}

std::string UsageReportTable(const UsageReport& report) {
  const UsageQuery& q = report.query;
  std::string out = absl::StrFormat(
      "Usage %s to %s by %s%s%s (ledger entry %d)\n", FormatDay(q.from_day), FormatDay(q.to_day),
      GranularityName(q.granularity), q.institution_id ? ", institution " + *q.institution_id : "",
      q.csp_id ? ", CSP " + *q.csp_id : "", report.applied_through);
  std::string head = absl::StrFormat("%-10s", "bucket");
  for (Dimension d : q.group_by)
    absl::StrAppend(&head, absl::StrFormat(" %-16s", DimensionName(d)));
  absl::StrAppend(&head, absl::StrFormat(" %14s %14s %16s %16s", "used GPU-h", "net GPU-h",
                                         "co-pay (won)", "subsidy (won)"));
  absl::StrAppend(&out, head, "\n");
  auto line = [&](const std::string& bucket, const std::vector<std::string>& group,
                  const UsageRow& r) {
    std::string l = absl::StrFormat("%-10s", bucket);
    for (const auto& g : group) absl::StrAppend(&l, absl::StrFormat(" %-16s", g));
    absl::StrAppend(&l, absl::StrFormat(" %14s", Hours(r.used_gpu_ms)));
    if (r.has_money) {
      absl::StrAppend(&l, absl::StrFormat(" %14s %16s %16s", Hours(r.net_gpu_ms),
                                          base::FormatWon(base::Krw{r.copay_krw}),
                                          base::FormatWon(base::Krw{r.subsidy_krw})));
    }
    absl::StrAppend(&out, l, "\n");
  };
  for (const UsageRow& r : report.rows) line(r.bucket, r.group, r);
  line("TOTAL", std::vector<std::string>(q.group_by.size(), ""), report.totals);
  if (report.capacity_shown && !report.capacity.empty()) {
    absl::StrAppend(&out, "\nCapacity (GPU-hours)\n");
    std::string h = absl::StrFormat("%-10s", "bucket");
    for (Dimension d : PoolDims(q))
      absl::StrAppend(&h, absl::StrFormat(" %-16s", DimensionName(d)));
    absl::StrAppend(&h, absl::StrFormat(" %12s %12s %10s %10s %10s %12s", "capacity", "programme",
                                        "own use", "planned", "unplanned", "idle"));
    absl::StrAppend(&out, h, "\n");
    for (const CapacityRow& r : report.capacity) {
      std::string l = absl::StrFormat("%-10s", r.bucket);
      for (const auto& g : r.group) absl::StrAppend(&l, absl::StrFormat(" %-16s", g));
      absl::StrAppend(&l, absl::StrFormat(" %12s %12s %10s %10s %10s %12s",
                                          Hours(r.capacity_gpu_ms), Hours(r.programme_use_gpu_ms),
                                          Hours(r.own_use_gpu_ms), Hours(r.planned_outage_gpu_ms),
                                          Hours(r.unplanned_outage_gpu_ms), Hours(r.idle_gpu_ms)));
      absl::StrAppend(&out, l, "\n");
    }
  }
  return out;
}

std::string UsageReportSvg(const UsageReport& report, i18n::Lang lang) {
  // Per bucket: the stacked values, in order, and the whole.
  struct Bucket {
    std::array<__int128, 5> parts{};
    __int128 whole = 0;
  };
  std::map<std::string, Bucket> buckets;
  const bool capacity = report.capacity_shown && !report.capacity.empty();
  if (capacity) {
    for (const CapacityRow& r : report.capacity) {
      Bucket& b = buckets[r.bucket];
      b.parts[0] += r.programme_use_gpu_ms;
      b.parts[1] += r.own_use_gpu_ms;
      b.parts[2] += r.planned_outage_gpu_ms;
      b.parts[3] += r.unplanned_outage_gpu_ms;
      b.parts[4] += std::max<int64_t>(0, r.idle_gpu_ms);
    }
  } else {
    for (const UsageRow& r : report.rows) buckets[r.bucket].parts[0] += r.used_gpu_ms;
  }
  __int128 top = 1;
  for (auto& [name, b] : buckets) {
    for (__int128 v : b.parts) b.whole += std::max<__int128>(0, v);
    top = std::max(top, b.whole);
  }
  static constexpr const char* kColours[] = {"#2c7fb8", "#7fcdbb", "#fdae61", "#d7191c", "#e0e0e0"};
  const std::array<std::string, 5> names = {
      i18n::Tr(lang, "programme use"), i18n::Tr(lang, "own use"), i18n::Tr(lang, "planned outage"),
      i18n::Tr(lang, "unplanned outage"), i18n::Tr(lang, "idle")};
  constexpr int kW = 720, kH = 240, kLeft = 10, kTop = 24, kBottom = 30;
  const int plot_h = kH - kTop - kBottom;
  const int n = std::max<int>(1, static_cast<int>(buckets.size()));
  const int slot = std::max(2, (kW - kLeft) / n);
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 %d %d\" "
      "width=\"%d\" height=\"%d\" role=\"img\" aria-label=\"%s\">",
      kW, kH, kW, kH,
      HtmlEscape(capacity ? i18n::Tr(lang, "Capacity by use") : i18n::Tr(lang, "GPU-hours used")));
  // The legend.
  for (int i = 0, x = kLeft; i < (capacity ? 5 : 1); ++i) {
    absl::StrAppend(
        &svg, absl::StrFormat("<rect x=\"%d\" y=\"4\" width=\"10\" height=\"10\" "
                              "fill=\"%s\"/><text x=\"%d\" y=\"13\" "
                              "font-size=\"11\">%s</text>",
                              x, kColours[i], x + 14,
                              HtmlEscape(capacity ? names[i] : i18n::Tr(lang, "GPU-hours used"))));
    x += 130;
  }
  int i = 0;
  for (const auto& [name, b] : buckets) {
    const int x = kLeft + i * slot;
    int64_t y = kTop + plot_h;
    std::string title = name;
    for (size_t k = 0; k < b.parts.size(); ++k) {
      const __int128 v = std::max<__int128>(0, b.parts[k]);
      if (v == 0) continue;
      const int h = static_cast<int>(v * plot_h / top);
      y -= h;
      const int64_t shown = v > INT64_MAX ? INT64_MAX : static_cast<int64_t>(v);
      absl::StrAppend(
          &svg, absl::StrFormat("<rect x=\"%d\" y=\"%d\" width=\"%d\" "
                                "height=\"%d\" fill=\"%s\"><title>%s %s: %s "
                                "GPU-h</title></rect>",
                                x, y, std::max(1, slot - 2), h, kColours[k], HtmlEscape(name),
                                HtmlEscape(capacity ? names[k] : ""), HtmlEscape(Hours(shown))));
    }
    if (n <= 40 || i % (n / 20 + 1) == 0) {
      absl::StrAppend(&svg, absl::StrFormat("<text x=\"%d\" y=\"%d\" font-size=\"9\">%s</text>", x,
                                            kH - 14, HtmlEscape(name)));
    }
    ++i;
  }
  absl::StrAppend(&svg, "</svg>");
  return svg;
}

// ---- Budgets ----

namespace {

json BudgetObj(const BudgetRow& b) {
  json versions = json::array();
  for (const auto& [from, amount] : b.versions) {
    versions.push_back({{"effective_from_ms", from}, {"amount_krw", amount}});
  }
  json months = json::array();
  for (const BudgetMonth& m : b.months) {
    months.push_back({{"period", m.period},
                      {"closed", m.closed},
                      {"drawdown_krw", m.drawdown_krw},
                      {"cumulative_krw", m.cumulative_krw}});
  }
  return {{"program", b.program},
          {"call_id", b.call_id},
          {"amount_krw", b.amount_krw},
          {"note", b.note},
          {"versions", versions},
          {"drawn_krw", b.drawn_krw},
          {"remaining_krw", b.remaining_krw},
          {"drawn_bp", b.drawn_bp},
          {"forecast_krw", b.forecast_krw},
          {"forecast_basis", b.forecast_basis},
          {"alert_thresholds_bp", b.alert_thresholds_bp},
          {"thresholds_crossed_bp", b.thresholds_crossed_bp},
          {"months", months}};
}

}  // namespace

std::string BudgetReportJson(const BudgetReport& report) {
  json budgets = json::array();
  for (const BudgetRow& b : report.budgets) budgets.push_back(BudgetObj(b));
  json o = {{"format", "gpuledger.budget_report/1"},
            {"year", report.year},
            {"applied_through_seq", report.applied_through},
            {"budgets", budgets}};
  return Dump(o);
}

std::string BudgetReportCsv(const BudgetReport& report) {
  std::string out = kUtf8Bom;
  absl::StrAppend(&out,
                  "year,program,call_id,amount_krw,period,closed,drawdown_krw,cumulative_krw,"
                  "remaining_krw,forecast_krw\r\n");
  for (const BudgetRow& b : report.budgets) {
    for (const BudgetMonth& m : b.months) {
      absl::StrAppend(&out, report.year, ",", CsvField(b.program), ",", CsvField(b.call_id), ",",
                      b.amount_krw, ",", CsvPeriod(m.period), ",", m.closed ? "TRUE" : "FALSE", ",",
                      m.drawdown_krw, ",", m.cumulative_krw, ",", b.amount_krw - m.cumulative_krw,
                      ",", b.forecast_krw, "\r\n");
    }
  }
  return out;
}

std::string BudgetReportTable(const BudgetReport& report) {
  std::string out =
      absl::StrFormat("Budgets of %d (ledger entry %d)\n", report.year, report.applied_through);
  if (report.budgets.empty()) {
    absl::StrAppend(&out, "No budget is recorded for ", report.year,
                    ": record one with a Budget registry event (docs/REPORTS.md).\n");
    return out;
  }
  absl::StrAppend(&out, absl::StrFormat("%-16s %-14s %18s %18s %18s %8s %18s\n", "programme",
                                        "call", "budget (won)", "drawn (won)", "remaining (won)",
                                        "drawn", "forecast (won)"));
  for (const BudgetRow& b : report.budgets) {
    absl::StrAppend(&out, absl::StrFormat("%-16s %-14s %18s %18s %18s %8s %18s\n", b.program,
                                          b.call_id.empty() ? "(all)" : b.call_id,
                                          base::FormatWon(base::Krw{b.amount_krw}),
                                          base::FormatWon(base::Krw{b.drawn_krw}),
                                          base::FormatWon(base::Krw{b.remaining_krw}),
                                          i18n::Percent(b.drawn_bp),
                                          base::FormatWon(base::Krw{b.forecast_krw})));
    for (const BudgetMonth& m : b.months) {
      absl::StrAppend(
          &out, absl::StrFormat("    %s %-6s %18s %18s\n", m.period, m.closed ? "closed" : "draft",
                                base::FormatWon(base::Krw{m.drawdown_krw}),
                                base::FormatWon(base::Krw{m.cumulative_krw})));
    }
  }
  return out;
}

std::string BudgetBurnDownSvg(const BudgetRow& row, i18n::Lang lang) {
  constexpr int kW = 640, kH = 260, kLeft = 90, kRight = 20, kTop = 20, kBottom = 40;
  const int plot_w = kW - kLeft - kRight, plot_h = kH - kTop - kBottom;
  // Integers only, even for drawing (a float never touches money).
  const int64_t top = std::max<int64_t>({row.amount_krw, row.forecast_krw, row.drawn_krw, 1});
  auto x = [&](int month) { return kLeft + plot_w * month / 12; };  // month 0..12 (end of)
  auto y = [&](int64_t krw) {
    return kTop + plot_h - static_cast<int>(static_cast<__int128>(plot_h) * krw / top);
  };
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" width=\"%d\" "
      "height=\"%d\" role=\"img\" aria-label=\"%s\">",
      kW, kH, kW, kH, HtmlEscape(i18n::Tr(lang, "Budget burn-down")));
  // Axes and the months.
  absl::StrAppend(&svg, absl::StrFormat("<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" "
                                        "stroke=\"#888\"/>",
                                        kLeft, kTop + plot_h, kLeft + plot_w, kTop + plot_h));
  for (int m = 1; m <= 12; ++m) {
    absl::StrAppend(&svg, absl::StrFormat("<text x=\"%d\" y=\"%d\" font-size=\"11\" "
                                          "text-anchor=\"middle\">%d</text>",
                                          (x(m - 1) + x(m)) / 2, kTop + plot_h + 16, m));
  }
  // The budget line.
  absl::StrAppend(
      &svg, absl::StrFormat("<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#c0392b\" "
                            "stroke-width=\"2\"/><text x=\"%d\" y=\"%d\" font-size=\"11\" "
                            "text-anchor=\"end\">%s</text>",
                            kLeft, y(row.amount_krw), kLeft + plot_w, y(row.amount_krw), kLeft - 4,
                            y(row.amount_krw) + 4, HtmlEscape(i18n::Won(lang, row.amount_krw))));
  // Cumulative drawdown: bars per month, closed solid and drafts lighter.
  for (size_t i = 0; i < row.months.size(); ++i) {
    const BudgetMonth& m = row.months[i];
    const int bx = x(static_cast<int>(i)) + 4;
    const int bw = plot_w / 12 - 8;
    const int by = y(std::max<int64_t>(0, m.cumulative_krw));
    absl::StrAppend(
        &svg, absl::StrFormat("<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" "
                              "fill=\"%s\"><title>%s %s</title></rect>",
                              bx, by, bw, kTop + plot_h - by, m.closed ? "#2c7fb8" : "#a6cbe3",
                              HtmlEscape(i18n::Month(lang, m.period)),
                              HtmlEscape(i18n::Won(lang, m.cumulative_krw))));
  }
  // The forecast: from the last month reported to December.
  if (!row.months.empty() && row.months.size() < 12) {
    const int n = static_cast<int>(row.months.size());
    absl::StrAppend(
        &svg, absl::StrFormat("<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#555\" "
                              "stroke-dasharray=\"6 4\" stroke-width=\"2\"><title>%s %s</title>"
                              "</line>",
                              x(n), y(row.drawn_krw), x(12), y(row.forecast_krw),
                              HtmlEscape(i18n::Tr(lang, "Forecast")),
                              HtmlEscape(i18n::Won(lang, row.forecast_krw))));
  }
  absl::StrAppend(&svg, "</svg>");
  return svg;
}

}  // namespace gpuledger::settlement
