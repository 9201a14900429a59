// Registration of the gpuledger subcommands. Each Add*Command attaches a subcommand to `app`
// whose callback stores its exit code in `*exit_code`.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ingest/kafka_config.h"
#include "ledger/ledger.h"

namespace gpuledger::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
// `ledger verify`: the ledger or export could not be read at all.
inline constexpr int kExitUnreadable = 3;

void AddPublishCommand(CLI::App& app, int* exit_code);
void AddIngestCommand(CLI::App& app, int* exit_code);
void AddSettleCommand(CLI::App& app, int* exit_code);
void AddLedgerCommand(CLI::App& app, int* exit_code);
void AddKeysCommand(CLI::App& app, int* exit_code);
void AddReasonsCommand(CLI::App& app, int* exit_code);
void AddAuditCommand(CLI::App& app, int* exit_code);
void AddServeCommand(CLI::App& app, int* exit_code);
void AddTokensCommand(CLI::App& app, int* exit_code);
void AddSimulateCommand(CLI::App& app, int* exit_code);
void AddReportCommand(CLI::App& app, int* exit_code);
void AddAlertsCommand(CLI::App& app, int* exit_code);
void AddSchemasCommand(CLI::App& app, int* exit_code);

// Adds --kafka-config FILE (or $GPULEDGER_KAFKA_CONFIG) to a command that talks to Kafka.
CLI::Option* AddKafkaConfigOption(CLI::App* cmd, std::string* path);
// Reads the file named by --kafka-config (none if `path` is empty) and logs what it sets,
// secret values hidden.
absl::StatusOr<ingest::KafkaConfig> LoadKafkaConfig(const std::string& path);

// VerifyOptions::progress for `ledger verify` and `audit replay`: a log line (stderr) at most
// every 2 s and at each stage's end: done, of total, rate.
std::function<void(std::string_view, uint64_t, uint64_t)> VerifyProgressLog();

// `ledger follow` and `ledger promote` (cmd_replicate.cc), under `ledger`.
void AddLedgerReplicationCommands(CLI::App& ledger_cmd, int* exit_code);

// "K/N" (--shard): shard K of N, 0 <= K < N <= 1024. INVALID_ARGUMENT names what is wrong.
absl::Status ParseShard(const std::string& text, uint32_t* shard, uint32_t* shards);
// The ledger meta name that records a sharded ledger's "K/N".
inline constexpr char kShardMeta[] = "shard";

// The signing options of a command that writes the ledger (ingest, ledger promote): the
// operator's key from --signing-key (with --previous-signing-key for a rotation), or none with
// --unsigned. INVALID_ARGUMENT when neither is given (a usage error).
absl::Status SetLedgerSigner(const std::string& signing_key,
                             const std::string& previous_signing_key, bool unsigned_ledger,
                             ledger::LedgerOptions* options);

// Logs `status` as the reason a command failed and returns kExitFailed.
int Report(const absl::Status& status);
// Logs `status` as what is wrong with the command line and returns kExitUsage (2): every
// command's options that CLI11 cannot check by themselves (one needs another, a value's form)
// end here, so a wrong command line exits 2 whichever command it is.
int UsageError(const absl::Status& status);

}  // namespace gpuledger::cli
