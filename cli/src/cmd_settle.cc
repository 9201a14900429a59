#include <spdlog/spdlog.h>

#include <fstream>
#include <iostream>

#include "base/period.h"
#include "commands.h"
#include "ledger/ledger.h"
#include "settlement/invoice.h"
#include "settlement/render.h"

namespace gpuledger::cli {

void AddSettleCommand(CLI::App& app, int* exit_code) {
  struct Args {
    std::string db;
    std::string period;
    std::string format = "table";
    std::string output;
    settlement::SettleOptions options;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "settle",
      "Price one billing period (a calendar month in KST) from the ledger: one co-pay invoice\n"
      "per institution with list price, co-pay, subsidy and VAT in whole won. Reads the ledger\n"
      "read-only, so it may run while ingest is writing; it covers entries up to the head at\n"
      "the moment it opens. Rules: docs/SETTLEMENT.md.");
  cmd->add_option("--db", args->db, "Ledger directory")->required()->envname("GPULEDGER_DB");
  cmd->add_option("--period", args->period, "Billing month, YYYY-MM (KST)")->required();
  cmd->add_option("--format", args->format, "table (for people), json or csv")
      ->check(CLI::IsMember({"table", "json", "csv"}))
      ->capture_default_str();
  cmd->add_option("--output,-o", args->output, "Write to this file instead of stdout");
  cmd->add_option("--vat-bp", args->options.vat_bp, "VAT on co-pay, basis points (1000 = 10%)")
      ->check(CLI::Range(0, 10'000))
      ->capture_default_str();
  cmd->callback([args, exit_code] {
    auto period = base::ParsePeriod(args->period);
    if (!period.ok()) {
      *exit_code = Report(period.status());
      return;
    }
    ledger::LedgerOptions lo;
    lo.read_only = true;
    auto ledger = ledger::Ledger::Open(args->db, lo);
    if (!ledger.ok()) {
      *exit_code = Report(ledger.status());
      return;
    }
    auto run = settlement::SettlePeriod(**ledger, *period, args->options);
    if (!run.ok()) {
      *exit_code = Report(run.status());
      return;
    }
    const std::string text = args->format == "json"  ? settlement::RenderJson(*run)
                             : args->format == "csv" ? settlement::RenderCsv(*run)
                                                     : settlement::RenderTable(*run);
    if (args->output.empty()) {
      std::cout << text << std::flush;
    } else {
      std::ofstream out(args->output, std::ios::binary);
      out << text;
      out.close();
      if (!out) {
        *exit_code = Report(absl::UnavailableError("cannot write " + args->output));
        return;
      }
      spdlog::info("wrote {} invoice(s) for {} to {}", run->invoices.size(), args->period,
                   args->output);
    }
    if (!run->unpriced.empty()) {
      spdlog::warn("{} usage event(s) could not be priced; they are listed in the output",
                   run->unpriced.size());
    }
  });
}

}  // namespace gpuledger::cli
