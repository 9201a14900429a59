// `gpuledger ledger follow` (a standby applying the ledger topic) and `gpuledger ledger promote`
// (a standby taking the writer's place). See docs/RELIABILITY.md.
#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "commands.h"
#include "ingest/ledger_topic.h"
#include "ingest/topics.h"
#include "ledger/hash.h"
#include "ledger/ledger.h"

namespace gpuledger::cli {

namespace {

std::atomic<bool> g_stop{false};
extern "C" void OnFollowSignal(int) { g_stop.store(true); }

struct TopicArgs {
  std::string db;
  std::string brokers;
  std::string topic_prefix;
  std::string kafka_config;
  std::string shard;
};

void AddTopicOptions(CLI::App* cmd, TopicArgs* args) {
  cmd->add_option("--db", args->db, "Ledger directory (created if missing)")
      ->required()
      ->envname("GPULEDGER_DB");
  cmd->add_option("--brokers", args->brokers, "Kafka bootstrap servers, host:port[,...]")
      ->required()
      ->envname("GPULEDGER_BROKERS");
  cmd->add_option("--topic-prefix", args->topic_prefix,
                  "Namespace prefix of every topic, e.g. 'staging.' (default: none)")
      ->envname("GPULEDGER_TOPIC_PREFIX");
  AddKafkaConfigOption(cmd, &args->kafka_config);
  cmd->add_option("--shard", args->shard,
                  "K/N: the ledger of shard K of N (`ingest --shard`), whose ledger topic is\n"
                  "gpuledger.ledger.shard-K-of-N (default: not sharded)")
      ->envname("GPULEDGER_SHARD");
}

// The ledger topic's options from the command line; exit code set on a bad one.
bool TopicOptions(const TopicArgs& args, ingest::LedgerTopicOptions* out, int* exit_code) {
  if (absl::Status st = ingest::TopicNames::CheckPrefix(args.topic_prefix); !st.ok()) {
    *exit_code = UsageError(st);
    return false;
  }
  auto kafka_config = LoadKafkaConfig(args.kafka_config);
  if (!kafka_config.ok()) {
    *exit_code = Report(kafka_config.status());
    return false;
  }
  uint32_t shard = 0, shards = 1;
  if (!args.shard.empty()) {
    if (absl::Status st = ParseShard(args.shard, &shard, &shards); !st.ok()) {
      *exit_code = UsageError(st);
      return false;
    }
  }
  out->brokers = args.brokers;
  out->kafka_config = *std::move(kafka_config);
  out->topic = ingest::TopicNames(args.topic_prefix).Ledger(shard, shards);
  return true;
}

void PrintStanding(const ledger::Ledger& l) {
  const ledger::Head head = l.head();
  const auto state = l.replication();
  std::cout << "head seq " << head.seq << " hash " << ledger::ToHex(head.hash) << "\n"
            << "writer '" << state.writer() << "' epoch " << state.epoch()
            << ", ledger topic applied to offset " << state.next_offset() << "\n";
}

void AddFollow(CLI::App& ledger_cmd, int* exit_code) {
  struct Args : TopicArgs {
    bool until_end = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = ledger_cmd.add_subcommand(
      "follow",
      "Keep a standby of the ledger: apply its ledger topic (<prefix>gpuledger.ledger, written\n"
      "by `gpuledger ingest --node`) into --db, each commit as one atomic write, after checking\n"
      "that it follows: its entries chain from the standby's head with the hashes the writer\n"
      "stored, and it comes from the topic's writer in the current epoch. The standby then holds\n"
      "the writer's ledger entry for entry (same head hash; `ledger verify` passes on it) with\n"
      "its offsets, so that `ledger promote` can make it the writer. Runs until SIGTERM or\n"
      "SIGINT, or with --until-end to the topic's end. A commit that does not follow (a writer\n"
      "that was not fenced, a fork) stops it with exit 1, naming the commit; nothing of it is\n"
      "applied. An auditor can follow the same topic into a ledger of their own.");
  AddTopicOptions(cmd, args.get());
  cmd->add_flag("--until-end", args->until_end,
                "Stop at the topic's end (its last committed transaction)");
  cmd->callback([args, exit_code] {
    ingest::LedgerTopicOptions to;
    if (!TopicOptions(*args, &to, exit_code)) return;
    ledger::LedgerOptions lo;
    lo.replica = true;
    auto l = ledger::Ledger::Open(args->db, lo);
    if (!l.ok()) {
      *exit_code = Report(l.status());
      return;
    }
    if (absl::Status st = ingest::EnsureLedgerTopic(to); !st.ok()) {
      *exit_code = Report(st);
      return;
    }
    std::signal(SIGTERM, OnFollowSignal);
    std::signal(SIGINT, OnFollowSignal);
    spdlog::info("following {} into {} from offset {} (head seq {})", to.topic, args->db,
                 (*l)->replication().next_offset(), (*l)->head().seq);
    auto applied = ingest::FollowLedgerTopic(to, **l, g_stop, args->until_end);
    if (!applied.ok()) {
      *exit_code = Report(applied.status());
      return;
    }
    spdlog::info("applied {} commits", *applied);
    PrintStanding(**l);
  });
}

void AddPromote(CLI::App& ledger_cmd, int* exit_code) {
  struct Args : TopicArgs {
    std::string node;
    std::string signing_key;
    std::string previous_signing_key;
    bool unsigned_ledger = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = ledger_cmd.add_subcommand(
      "promote",
      "Make a standby (--db, kept by `ledger follow`, which must be stopped) the ledger's\n"
      "writer: apply what the ledger topic holds beyond it, fence the old writer (Kafka's\n"
      "transactional fencing: the old writer's next commit fails and it stops; its commit in\n"
      "flight is never applied), apply what it committed before that, and publish a takeover\n"
      "commit in a new epoch naming --node. Then start `gpuledger ingest --node NODE --db DB`:\n"
      "it resumes from the offsets the ledger holds, losing and re-deciding nothing. The old\n"
      "writer, started again, is refused; run it as a standby. See docs/RELIABILITY.md.");
  AddTopicOptions(cmd, args.get());
  cmd->add_option("--node", args->node, "This node's name, the new writer")
      ->required()
      ->envname("GPULEDGER_NODE");
  cmd->add_option("--signing-key", args->signing_key,
                  "The operator's private key (PEM) that signs the ledger's checkpoints")
      ->envname("GPULEDGER_SIGNING_KEY");
  cmd->add_option("--previous-signing-key", args->previous_signing_key,
                  "The key that signed so far, when --signing-key is a new one (a rotation)");
  cmd->add_flag("--unsigned", args->unsigned_ledger, "The ledger is unsigned (tests)");
  cmd->callback([args, exit_code] {
    ingest::LedgerTopicOptions to;
    if (!TopicOptions(*args, &to, exit_code)) return;
    to.node = args->node;
    ledger::LedgerOptions lo;
    if (absl::Status st = SetLedgerSigner(args->signing_key, args->previous_signing_key,
                                          args->unsigned_ledger, &lo);
        !st.ok()) {
      *exit_code = absl::IsInvalidArgument(st) ? UsageError(st) : Report(st);
      return;
    }
    auto l = ledger::Ledger::Open(args->db, lo);
    if (!l.ok()) {
      *exit_code = Report(l.status());
      return;
    }
    if (absl::Status st = ingest::StartLedgerTopicWriter(to, **l, true); !st.ok()) {
      *exit_code = Report(st);
      return;
    }
    std::cout << "node '" << args->node << "' is the writer of " << to.topic
              << "; start `gpuledger ingest --node " << args->node << "` on this ledger\n";
    PrintStanding(**l);
  });
}

}  // namespace

absl::Status ParseShard(const std::string& text, uint32_t* shard, uint32_t* shards) {
  const size_t slash = text.find('/');
  uint32_t k = 0, n = 0;
  if (slash == std::string::npos || !absl::SimpleAtoi(text.substr(0, slash), &k) ||
      !absl::SimpleAtoi(text.substr(slash + 1), &n) || n < 1 || n > 1024 || k >= n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--shard '", text, "': give K/N, shard K of N shards, 0 <= K < N <= 1024 (e.g. 0/3)"));
  }
  *shard = k;
  *shards = n;
  return absl::OkStatus();
}

void AddLedgerReplicationCommands(CLI::App& ledger_cmd, int* exit_code) {
  AddFollow(ledger_cmd, exit_code);
  AddPromote(ledger_cmd, exit_code);
}

}  // namespace gpuledger::cli
