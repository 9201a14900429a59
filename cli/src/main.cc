// gpuledger: metering and settlement ledger for shared GPU programs.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/build_info.h"
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

int UsageError(const absl::Status& status) {
  spdlog::error("{} (see --help)", std::string(status.message()));
  return kExitUsage;
}

namespace {

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// For a command line CLI11 refused: the first word that is neither an option, an option's
// value nor a subcommand where the command expects one, and the subcommands it may be a typo of
// ("gpuledger setle" -> settle). Empty when the error is something else.
std::string SubcommandSuggestion(CLI::App& app, int argc, char** argv) {
  CLI::App* cur = &app;
  bool value_next = false;
  for (int i = 1; i < argc; ++i) {
    const std::string t = argv[i];
    if (value_next) {
      value_next = false;
      continue;
    }
    if (t.starts_with("-")) {
      const std::string name = t.substr(0, t.find('='));
      const CLI::Option* o = cur->get_option_no_throw(name);
      value_next = o != nullptr && o->get_expected_min() > 0 && t.find('=') == std::string::npos;
      continue;
    }
    const std::vector<CLI::App*> subs = cur->get_subcommands({});
    const auto sub =
        std::find_if(subs.begin(), subs.end(), [&](CLI::App* a) { return a->check_name(t); });
    if (sub != subs.end()) {
      cur = *sub;
      continue;
    }
    if (subs.empty()) return "";
    std::vector<std::string> close;
    for (const CLI::App* sub : subs) {
      const std::string& n = sub->get_name();
      if (EditDistance(t, n) <= std::max<size_t>(1, n.size() / 3) || n.starts_with(t)) {
        close.push_back("'" + n + "'");
      }
    }
    std::string command = cur == &app ? "gpuledger" : "gpuledger " + cur->get_name();
    std::string out = "'" + t + "' is not a command of `" + command + "`";
    if (!close.empty()) {
      out += "; did you mean " + close[0];
      for (size_t k = 1; k < close.size(); ++k) out += " or " + close[k];
      out += "?";
    }
    return out + " (`" + command + " --help` lists them)";
  }
  return "";
}

// The config file's values, but none that a GPULEDGER_* variable set in the environment gives
// too: CLI11 applies a config file before the environment and would let the file win. The
// order of precedence is then the command line, the environment, the file, the defaults.
class EnvironmentFirstConfig : public CLI::ConfigTOML {
 public:
  explicit EnvironmentFirstConfig(std::set<std::string> given_by_environment)
      : given_by_environment_(std::move(given_by_environment)) {}
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
    std::vector<CLI::ConfigItem> items = CLI::ConfigTOML::from_config(input);
    std::erase_if(items, [&](const CLI::ConfigItem& item) {
      return given_by_environment_.contains(item.fullname());
    });
    return items;
  }

 private:
  std::set<std::string> given_by_environment_;
};

// "serve.db", "ingest.brokers", ...: every option (by its long names, under its subcommands'
// names) whose environment variable is set now.
void OptionsGivenByEnvironment(const CLI::App* app, const std::string& prefix,
                               std::set<std::string>* out) {
  for (const CLI::Option* o : app->get_options()) {
    const std::string env = o->get_envname();
    if (env.empty() || std::getenv(env.c_str()) == nullptr) continue;
    for (const std::string& name : o->get_lnames()) out->insert(prefix + name);
  }
  for (const CLI::App* sub : app->get_subcommands({})) {
    OptionsGivenByEnvironment(sub, prefix + sub->get_name() + ".", out);
  }
}

int Main(int argc, char** argv) {
  CLI::App app{
      "gpuledger: the system of record for shared GPU programs.\n"
      "CSPs publish usage events to Kafka; `ingest` records every one of them in an\n"
      "append-only, hash-chained RocksDB ledger; `settle` turns the ledger into co-pay\n"
      "invoices, CSP statements and programme summaries, and closes months; `serve` offers\n"
      "them over HTTP; `ledger verify` and `audit replay` prove nothing was changed.",
      "gpuledger"};
  app.require_subcommand(1);
  // A key in the config file that no option has is an error (a typo must not pass silently).
  app.allow_config_extras(CLI::config_extras_mode::error);
  app.set_version_flag("--version", "gpuledger " + std::string(base::BuildVersion()) + " (commit " +
                                        std::string(base::BuildCommit()) + ")");
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
  AddSchemasCommand(app, &exit_code);
  // $GPULEDGER_CONFIG names the file when --config does not (CLI11 reads the file before the
  // environment, so the variable is read here); a file named there must exist.
  const char* config_env = std::getenv("GPULEDGER_CONFIG");
  app.set_config("--config", config_env != nullptr ? config_env : "",
                 "Read options from this TOML (or INI) file (default: $GPULEDGER_CONFIG):\n"
                 "top-level keys for the global options, a [command] section per command\n"
                 "([serve], [ingest], [settle.close], ...), keys named as the long options\n"
                 "without dashes (db = \"/var/lib/gpuledger/ledger\"). The command line and\n"
                 "GPULEDGER_* variables override it (docs/OPERATIONS.md)",
                 config_env != nullptr && *config_env != '\0');
  {
    std::set<std::string> from_environment;
    OptionsGivenByEnvironment(&app, "", &from_environment);
    app.config_formatter(std::make_shared<EnvironmentFirstConfig>(std::move(from_environment)));
  }
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
    if (e.get_exit_code() != 0) {
      if (const std::string hint = SubcommandSuggestion(app, argc, argv); !hint.empty()) {
        std::cerr << "gpuledger: " << hint << "\n";
        return kExitUsage;
      }
    }
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
