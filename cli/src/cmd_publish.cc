#include <spdlog/spdlog.h>

#include <fstream>
#include <iostream>

#include "absl/strings/str_join.h"
#include "commands.h"
#include "ingest/publisher.h"

namespace gpuledger::cli {

void AddPublishCommand(CLI::App& app, int* exit_code) {
  struct Args {
    ingest::PublishOptions options;
    std::string kind = "usage";
    std::vector<std::string> files;
    std::string topic_prefix;
    std::string kafka_config;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "publish",
      "Publish events to Kafka, as a CSP (usage) or the program operator (registry) would.\n"
      "Input: JSON lines, one gpuledger.v1.UsageEvent or RegistryEvent per line in the\n"
      "protobuf JSON mapping (docs/FORMATS.md); a time field (...Ms) may be epoch ms or an\n"
      "RFC 3339 time such as 2026-03-01T09:00:00+09:00. Usage goes to gpuledger.usage.<cspId>, "
      "keyed\n"
      "by allocation id; registry events to gpuledger.registry. The idempotent producer\n"
      "(acks=all) is used. Every line is checked first: if any is bad, nothing is published.");
  cmd->add_option("--brokers", args->options.brokers, "Kafka bootstrap servers, host:port[,...]")
      ->required()
      ->envname("GPULEDGER_BROKERS");
  AddKafkaConfigOption(cmd, &args->kafka_config);
  cmd->add_option("--kind", args->kind, "What the lines are: usage or registry")
      ->check(CLI::IsMember({"usage", "registry"}))
      ->capture_default_str();
  cmd->add_option("--partitions", args->options.partitions_if_created,
                  "Partitions for topics that do not exist yet")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--topic-prefix", args->topic_prefix,
                  "Namespace prefix of every topic, e.g. 'staging.' (default: none)")
      ->envname("GPULEDGER_TOPIC_PREFIX");
  cmd->add_option("--connect-timeout-ms", args->options.connect_timeout_ms,
                  "Fail (publishing nothing) when no broker answers within this, ms")
      ->check(CLI::Range(100, 600'000))
      ->capture_default_str();
  cmd->add_option("files", args->files, "JSON-lines files to publish ('-' or none: stdin)");
  cmd->callback([args, exit_code] {
    if (absl::Status st = ingest::TopicNames::CheckPrefix(args->topic_prefix); !st.ok()) {
      *exit_code = UsageError(st);
      return;
    }
    args->options.topics = ingest::TopicNames(args->topic_prefix);
    auto kafka_config = LoadKafkaConfig(args->kafka_config);
    if (!kafka_config.ok()) {
      *exit_code = Report(kafka_config.status());
      return;
    }
    args->options.kafka_config = *std::move(kafka_config);
    const auto kind =
        args->kind == "usage" ? ingest::EventKind::kUsage : ingest::EventKind::kRegistry;
    std::vector<ingest::EncodedEvent> events;
    if (args->files.empty()) args->files.push_back("-");
    for (const std::string& file : args->files) {
      std::ifstream f;
      if (file != "-") {
        f.open(file);
        if (!f) {
          *exit_code = Report(absl::NotFoundError("cannot read " + file));
          return;
        }
      }
      auto encoded = ingest::EncodeJsonLines(file == "-" ? std::cin : f, kind, args->options);
      if (!encoded.ok()) {
        *exit_code = Report(
            absl::InvalidArgumentError(absl::StrCat(file, ": ", encoded.status().message())));
        return;
      }
      events.insert(events.end(), encoded->begin(), encoded->end());
    }
    auto stats = ingest::Publish(events, args->options);
    if (!stats.ok()) {
      *exit_code = Report(stats.status());
      return;
    }
    spdlog::info("published {} {} event(s) to {}", stats->published, args->kind,
                 absl::StrJoin(stats->topics, ", "));
  });
}

}  // namespace gpuledger::cli
