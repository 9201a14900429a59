#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <optional>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "commands.h"
#include "ingest/ingestor.h"
#include "ingest/ledger_topic.h"
#include "ledger/ledger.h"

namespace gpuledger::cli {

namespace {
std::atomic<bool> g_stop{false};
extern "C" void OnStopSignal(int) { g_stop.store(true); }

// A ledger is one shard for life: what `--shard` says must be what it recorded at its first
// start (meta "shard"), which is recorded now for a new one.
absl::Status CheckShard(ledger::Ledger& l, uint32_t shard, uint32_t shards) {
  const std::string want = shards > 1 ? absl::StrCat(shard, "/", shards) : std::string();
  GPULEDGER_ASSIGN_OR_RETURN(std::optional<std::string> have, l.GetMeta(kShardMeta));
  const std::string recorded = have.value_or("");
  if (recorded == want) return absl::OkStatus();
  if (!have.has_value() && l.head().seq == 0) {
    GPULEDGER_RETURN_IF_ERROR(l.StageMeta(kShardMeta, want));
    return l.Commit();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "the ledger at ", l.path(), " is ",
      recorded.empty() ? std::string("not sharded") : absl::StrCat("shard ", recorded), ", not ",
      want.empty() ? std::string("unsharded") : absl::StrCat("shard ", want),
      " as --shard says: a ledger keeps the partitions it was started with (docs/SCALING.md)"));
}
}  // namespace

void AddIngestCommand(CLI::App& app, int* exit_code) {
  struct Args {
    ingest::IngestOptions options;
    std::string db;
    bool no_sync = false;
    std::string signing_key;
    std::string previous_signing_key;
    bool unsigned_ledger = false;
    uint64_t checkpoint_interval = 10'000;
    std::string topic_prefix;
    std::string kafka_config;
    std::string node;
    std::string shard;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "ingest",
      "Consume gpuledger.registry and every gpuledger.usage.* topic into the ledger.\n"
      "Each message becomes one ledger entry (accepted, or rejected with a reason code), except\n"
      "exact duplicates of an event already recorded, which are counted and dropped. Entries\n"
      "and the consumed offsets are written in one synced RocksDB batch per group commit, and\n"
      "consumption resumes from the offsets in the ledger. SIGTERM or SIGINT finishes the batch\n"
      "in flight and exits cleanly.");
  cmd->add_option("--brokers", args->options.brokers, "Kafka bootstrap servers, host:port[,...]")
      ->required()
      ->envname("GPULEDGER_BROKERS");
  AddKafkaConfigOption(cmd, &args->kafka_config);
  cmd->add_option("--db", args->db,
                  "Ledger directory (created if missing); the validator's state store, derived "
                  "from the ledger, goes beside it in <db>.validator")
      ->required()
      ->envname("GPULEDGER_DB");
  cmd->add_option("--instance-id", args->options.instance_id,
                  "Kafka static membership id: faster restarts after a crash, but usage topics "
                  "created meanwhile wait for the next rebalance (default: none)");
  cmd->add_option("--group", args->options.group_id,
                  "Kafka consumer group (its committed offsets are for lag monitoring only)")
      ->capture_default_str();
  cmd->add_option("--topic-prefix", args->topic_prefix,
                  "Namespace prefix of every topic, e.g. 'staging.' (default: none)")
      ->envname("GPULEDGER_TOPIC_PREFIX");
  cmd->add_flag("--until-end", args->options.stop_at_end,
                "Stop once every assigned partition is read to its end (batch mode)");
  cmd->add_option("--batch-max-messages", args->options.batch_max_messages,
                  "Most messages per group commit")
      ->check(CLI::Range(1, 1'000'000))
      ->capture_default_str();
  cmd->add_option("--batch-max-ms", args->options.batch_max_ms,
                  "Longest a batch stays open before it is committed, ms")
      ->check(CLI::Range(1, 60'000))
      ->capture_default_str();
  cmd->add_option("--max-interval-ms", args->options.limits.max_interval_ms,
                  "Longest accepted usage interval, ms (until the ledger records a\n"
                  "ValidationSettings registry event: then the ledger's limits decide)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--max-future-skew-ms", args->options.limits.max_future_skew_ms,
                  "How far past its Kafka timestamp an interval may end (FUTURE_TIMESTAMP), ms\n"
                  "(until the ledger records a ValidationSettings)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--park-grace-ms", args->options.limits.park_grace_ms,
                  "How long usage for an unannounced allocation waits (Kafka time), ms (until\n"
                  "the ledger records a ValidationSettings)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  auto* key_opt =
      cmd->add_option("--signing-key", args->signing_key,
                      "Operator's Ed25519 private key (PEM) that signs checkpoints; see `keys "
                      "generate`")
          ->envname("GPULEDGER_SIGNING_KEY");
  cmd->add_option("--previous-signing-key", args->previous_signing_key,
                  "To rotate keys: the private key (PEM) that signed the ledger so far. A key "
                  "rotation record signed by it names the new --signing-key, so auditors holding "
                  "the first published public key follow the rotation")
      ->needs(key_opt);
  cmd->add_flag("--unsigned", args->unsigned_ledger,
                "Write no signed checkpoints (tests and benchmarks only: an auditor cannot "
                "then prove the ledger was not rewritten)")
      ->excludes(key_opt);
  cmd->add_option("--checkpoint-interval", args->checkpoint_interval,
                  "A signed checkpoint every N entries (fixed when the ledger is created)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{100'000'000}))
      ->capture_default_str();
  cmd->add_option("--metrics-listen", args->options.metrics_listen,
                  "Serve Prometheus metrics at http://HOST:PORT/metrics, e.g. 127.0.0.1:9464, and\n"
                  "the probes /healthz (200 while the process answers) and /readyz (200 while\n"
                  "partitions are assigned to it, 503 before and while stopping)\n"
                  "(port 0: any free port; default: not served)")
      ->envname("GPULEDGER_METRICS_LISTEN");
  cmd->add_flag_function(
      "--no-rejected-topic", [args](int64_t) { args->options.publish_rejected = false; },
      "Do not republish rejected events to gpuledger.rejected (the ledger records "
      "them either way)");
  cmd->add_option(
         "--node", args->node,
         "Publish every commit to the ledger topic (<prefix>gpuledger.ledger) before\n"
         "writing it, as the writer named NODE, so that standbys (`ledger follow`) hold\n"
         "the same ledger; refused when another node has taken over (docs/RELIABILITY.md)\n"
         "(default: no ledger topic)")
      ->envname("GPULEDGER_NODE");
  cmd->add_option("--shard", args->shard,
                  "K/N: this ledger is shard K of N (docs/SCALING.md): it records the whole\n"
                  "registry and the usage partitions p with p % N == K of every usage topic, in\n"
                  "the consumer group <group>.shard-K-of-N; `settle --shard-dbs` settles the\n"
                  "shards together. Fixed for a ledger (default: not sharded)")
      ->envname("GPULEDGER_SHARD");
  cmd->add_flag("--no-sync", args->no_sync,
                "Do not fsync each commit (benchmarks only: a power cut may lose acknowledged "
                "events)");
  cmd->callback([args, exit_code] {
    if (absl::Status st = ingest::TopicNames::CheckPrefix(args->topic_prefix); !st.ok()) {
      *exit_code = UsageError(st);
      return;
    }
    args->options.limits.topics = ingest::TopicNames(args->topic_prefix);
    if (!args->shard.empty()) {
      if (absl::Status st = ParseShard(args->shard, &args->options.shard, &args->options.shards);
          !st.ok()) {
        *exit_code = UsageError(st);
        return;
      }
      if (args->options.shards > 1) {
        args->options.group_id = absl::StrCat(args->options.group_id, ".shard-",
                                              args->options.shard, "-of-", args->options.shards);
      }
    }
    args->options.state_dir = args->db + ".validator";
    auto kafka_config = LoadKafkaConfig(args->kafka_config);
    if (!kafka_config.ok()) {
      *exit_code = Report(kafka_config.status());
      return;
    }
    args->options.kafka_config = *std::move(kafka_config);
    ledger::LedgerOptions lo;
    lo.sync_commits = !args->no_sync;
    lo.checkpoint_interval = args->checkpoint_interval;
    if (absl::Status st = SetLedgerSigner(args->signing_key, args->previous_signing_key,
                                          args->unsigned_ledger, &lo);
        !st.ok()) {
      *exit_code = absl::IsInvalidArgument(st) ? UsageError(st) : Report(st);
      return;
    }
    auto ledger = ledger::Ledger::Open(args->db, lo);
    if (!ledger.ok()) {
      *exit_code = Report(ledger.status());
      return;
    }
    if (args->node.empty() && (*ledger)->replication().epoch() > 0) {
      const auto state = (*ledger)->replication();
      *exit_code = UsageError(absl::InvalidArgumentError(absl::StrCat(
          "the ledger at ", args->db, " publishes every commit to its ledger topic ",
          args->options.limits.topics.Ledger(args->options.shard, args->options.shards),
          " (writer '", state.writer(), "', epoch ", state.epoch(),
          "): give --node, or its standbys would miss what this ingest writes")));
      return;
    }
    if (!args->node.empty()) {
      ingest::LedgerTopicOptions to;
      to.brokers = args->options.brokers;
      to.kafka_config = args->options.kafka_config;
      to.topic = args->options.limits.topics.Ledger(args->options.shard, args->options.shards);
      to.node = args->node;
      if (absl::Status st = ingest::StartLedgerTopicWriter(to, **ledger, false); !st.ok()) {
        *exit_code = Report(st);
        return;
      }
    }
    // After the ledger topic is taken: a new shard's record of itself is published too.
    if (absl::Status st = CheckShard(**ledger, args->options.shard, args->options.shards);
        !st.ok()) {
      *exit_code = Report(st);
      return;
    }
    std::signal(SIGTERM, OnStopSignal);
    std::signal(SIGINT, OnStopSignal);
    spdlog::info("ingesting from {} into {} (head seq {})", args->options.brokers, args->db,
                 (*ledger)->head().seq);
    auto stats = ingest::RunIngest(args->options, **ledger, g_stop);
    if (!stats.ok()) {
      *exit_code = Report(stats.status());
      return;
    }
    for (const auto& [reason, n] : stats->rejected_by_reason) {
      spdlog::info("rejected {}: {}", reason, n);
    }
    spdlog::info("stopped at ledger head seq {}", (*ledger)->head().seq);
  });
}

absl::Status SetLedgerSigner(const std::string& signing_key,
                             const std::string& previous_signing_key, bool unsigned_ledger,
                             ledger::LedgerOptions* options) {
  if (signing_key.empty() && !unsigned_ledger) {
    return absl::InvalidArgumentError(
        "give --signing-key KEY.pem (create one with `gpuledger keys generate`), or "
        "--unsigned for a ledger without signed checkpoints");
  }
  // A key that cannot be read is not a usage error (exit 1, not 2).
  auto load = [](const std::string& path,
                 std::shared_ptr<const ledger::Signer>* out) -> absl::Status {
    if (path.empty()) return absl::OkStatus();
    auto signer = ledger::Signer::FromPrivateKeyFile(path);
    if (!signer.ok()) return absl::FailedPreconditionError(signer.status().message());
    *out = std::move(*signer);
    return absl::OkStatus();
  };
  GPULEDGER_RETURN_IF_ERROR(load(signing_key, &options->signer));
  return load(previous_signing_key, &options->previous_signer);
}

}  // namespace gpuledger::cli
