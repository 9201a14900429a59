// `gpuledger report usage` and `gpuledger report budget`: reports over time (docs/REPORTS.md),
// read from the settlement store's roll-ups after bringing it up to the ledger's head.

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "commands.h"
#include "gpuledger/v1/common.pb.h"
#include "settle_common.h"
#include "settlement/reports.h"
#include "spdlog/spdlog.h"

namespace gpuledger::cli {

namespace {

void AddUsageReport(CLI::App* report, int* exit_code) {
  struct Args {
    StoreArgs store;
    std::string from, to;
    std::string granularity = "month";
    std::string group_by;
    std::string institution, csp;
    std::string format = "table";
    std::string output;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = report->add_subcommand(
      "usage",
      "Usage and money over a range of KST days: by day, month, quarter or year, grouped by\n"
      "programme, CSP, GPU model, institution type, institution or call, with each pool's\n"
      "capacity split into programme use, own use, planned and unplanned outage and idle\n"
      "(like Slurm's sreport). Money is per month as the invoices price it (with the\n"
      "adjustments issued since), so a report by day shows GPU-ms only. Read from roll-ups kept\n"
      "as the ledger is applied: a year's report reads, it does not recompute.\n"
      "Example: gpuledger report usage --db DB --from 2026-01 --to 2026-12 --by csp,model");
  AddStoreOptions(cmd, &args->store, true);
  cmd->add_option("--from", args->from, "First day (YYYY-MM-DD) or month (YYYY-MM), KST")
      ->required();
  cmd->add_option("--to", args->to, "Last day (YYYY-MM-DD) or month (YYYY-MM), inclusive")
      ->required();
  cmd->add_option("--granularity", args->granularity, "day, month, quarter or year")
      ->check(CLI::IsMember({"day", "month", "quarter", "year"}))
      ->capture_default_str();
  cmd->add_option("--by", args->group_by,
                  "Group by, comma-separated: program, csp, model, institution_type,\n"
                  "institution, call (default: no grouping)");
  cmd->add_option("--institution", args->institution, "Only this institution's usage");
  cmd->add_option("--csp", args->csp, "Only this CSP's usage and pools");
  cmd->add_option("--format", args->format,
                  "table, json (gpuledger.usage_report/1), csv (rows) or capacity-csv")
      ->check(CLI::IsMember({"table", "json", "csv", "capacity-csv"}))
      ->capture_default_str();
  cmd->add_option("--output,-o", args->output, "Write to this file instead of stdout");
  cmd->callback([args, exit_code] {
    auto query =
        settlement::ParseUsageQuery(args->from, args->to, args->granularity, args->group_by);
    if (!query.ok()) {
      *exit_code = UsageError(query.status());
      return;
    }
    if (!args->institution.empty()) query->institution_id = args->institution;
    if (!args->csp.empty()) query->csp_id = args->csp;
    auto opened = OpenAndCatchUp(args->store);
    if (!opened.ok()) {
      *exit_code = Report(opened.status());
      return;
    }
    const auto t0 = std::chrono::steady_clock::now();
    auto report = opened->settlement.engine->Usage(*query);
    if (!report.ok()) {
      *exit_code = Report(report.status());
      return;
    }
    spdlog::debug(
        "usage report built in {} us: {} roll-up keys read ({} bytes), {} rows",
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
            .count(),
        report->keys_read, report->bytes_read, report->rows.size());
    const std::string text = args->format == "json"           ? UsageReportJson(*report)
                             : args->format == "csv"          ? UsageReportCsv(*report, "rows")
                             : args->format == "capacity-csv" ? UsageReportCsv(*report, "capacity")
                                                              : UsageReportTable(*report);
    absl::Status st = WriteOutput(args->output, text);
    if (!st.ok()) *exit_code = Report(st);
  });
}

void AddBudgetReport(CLI::App* report, int* exit_code) {
  struct Args {
    StoreArgs store;
    uint32_t year = 0;
    std::string program;
    std::string format = "table";
    std::string output;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = report->add_subcommand(
      "budget",
      "The year's budgets (Budget registry records) drawn down by each month's documents:\n"
      "closed months as frozen, open months as drafts, adjustments in the month that issues\n"
      "them; remaining amount, thresholds crossed, and a run-rate forecast to December.");
  AddStoreOptions(cmd, &args->store, true);
  cmd->add_option("--year", args->year, "Fiscal year (the calendar year, KST)")->required();
  cmd->add_option("--program", args->program, "Only this programme (e.g. GOV_ADVANCED)");
  cmd->add_option("--format", args->format, "table, json (gpuledger.budget_report/1) or csv")
      ->check(CLI::IsMember({"table", "json", "csv"}))
      ->capture_default_str();
  cmd->add_option("--output,-o", args->output, "Write to this file instead of stdout");
  cmd->callback([args, exit_code] {
    std::optional<int> program;
    if (!args->program.empty()) {
      v1::Program p;
      if (!v1::Program_Parse(args->program, &p) || p == v1::PROGRAM_UNSPECIFIED) {
        *exit_code = UsageError(absl::InvalidArgumentError(absl::StrCat(
            "--program '", args->program, "' is not GOV_ADVANCED, LEASE_HPC or LEASE_RESEARCH")));
        return;
      }
      program = p;
    }
    auto opened = OpenAndCatchUp(args->store);
    if (!opened.ok()) {
      *exit_code = Report(opened.status());
      return;
    }
    auto report = opened->settlement.engine->Budgets(args->year, program);
    if (!report.ok()) {
      *exit_code = Report(report.status());
      return;
    }
    const std::string text = args->format == "json"  ? BudgetReportJson(*report)
                             : args->format == "csv" ? BudgetReportCsv(*report)
                                                     : BudgetReportTable(*report);
    absl::Status st = WriteOutput(args->output, text);
    if (!st.ok()) *exit_code = Report(st);
  });
}

}  // namespace

void AddReportCommand(CLI::App& app, int* exit_code) {
  CLI::App* report = app.add_subcommand(
      "report", "Reports over time: usage and capacity over any range, and budgets");
  report->require_subcommand(1);
  AddUsageReport(report, exit_code);
  AddBudgetReport(report, exit_code);
}

}  // namespace gpuledger::cli
