// gpuledger: metering and settlement ledger for shared GPU programs.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>

#include "commands.h"
#include "json_log.h"

#ifdef GPULEDGER_WITH_JEMALLOC
// jemalloc's settings for this process (the environment's MALLOC_CONF overrides them): a
// background thread gives unused pages back to the system, and two arenas are plenty for a
// process whose hot paths run on one or two threads (docs/BENCHMARKS.md, "Memory": a 12M-event
// ingest peaked at 455 MiB with these, 480 MiB with jemalloc's defaults, 489 MiB on glibc).
extern "C" {
// NOLINTNEXTLINE: the name is jemalloc's.
const char* malloc_conf = "background_thread:true,narenas:2";
}
#endif

namespace gpuledger::cli {

int Report(const absl::Status& status) {
  spdlog::error("{}", std::string(status.message()));
  return kExitFailed;
}

namespace {

int Main(int argc, char** argv) {
  CLI::App app{
      "gpuledger: the system of record for shared GPU programs.\n"
      "CSPs publish usage events to Kafka; `ingest` records every one of them in an\n"
      "append-only, hash-chained RocksDB ledger; `settle` turns the ledger into co-pay\n"
      "invoices, CSP statements and programme summaries, and closes months; `serve` offers\n"
      "them over HTTP; `ledger verify` and `audit replay` prove nothing was changed.",
      "gpuledger"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "gpuledger 0.1.0");
  std::string log_level = "info";
  std::string log_format = "text";
  app.add_option("--log-level", log_level,
                 "trace, debug, info, warn, error or off (logs go to stderr)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->capture_default_str();
  app.add_option("--log-format", log_format,
                 "text (for people) or json (one object per line: ts_ms, level, msg)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.footer(
      "Exit codes: 0 success, 1 the work failed, 2 the command line was wrong\n"
      "(`ledger verify`: 1 the ledger does not verify, 3 it could not be read).\n"
      "Run `gpuledger SUBCOMMAND --help` for each subcommand's options.");

  int exit_code = kExitOk;
  AddPublishCommand(app, &exit_code);
  AddIngestCommand(app, &exit_code);
  AddSettleCommand(app, &exit_code);
  AddReportCommand(app, &exit_code);
  AddAlertsCommand(app, &exit_code);
  AddLedgerCommand(app, &exit_code);
  AddKeysCommand(app, &exit_code);
  AddReasonsCommand(app, &exit_code);
  AddAuditCommand(app, &exit_code);
  AddServeCommand(app, &exit_code);
  AddTokensCommand(app, &exit_code);
  AddSimulateCommand(app, &exit_code);
  app.parse_complete_callback([&] {
    auto logger = spdlog::stderr_color_mt("gpuledger");
    spdlog::set_default_logger(logger);
    if (log_format == "json") {
      spdlog::set_formatter(std::make_unique<JsonLogFormatter>());
    } else {
      spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$ %v");
    }
    spdlog::set_level(spdlog::level::from_str(log_level));
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kExitOk : kExitUsage;
  } catch (const std::exception& e) {
    // The edge of the program: nothing may escape as a crash.
    spdlog::error("unexpected error: {}", e.what());
    return kExitFailed;
  }
  return exit_code;
}

}  // namespace
}  // namespace gpuledger::cli

int main(int argc, char** argv) { return gpuledger::cli::Main(argc, argv); }
