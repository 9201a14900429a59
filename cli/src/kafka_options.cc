#include <spdlog/spdlog.h>

#include "commands.h"

namespace gpuledger::cli {

CLI::Option* AddKafkaConfigOption(CLI::App* cmd, std::string* path) {
  return cmd
      ->add_option("--kafka-config", *path,
                   "librdkafka client properties (key=value lines, # comments) for every Kafka "
                   "client of this command: credentials (security.protocol, sasl.mechanism, "
                   "sasl.username, sasl.password), TLS, tuning. Keep it readable only by the "
                   "service; secret values are never logged (docs/OPERATIONS.md)")
      ->envname("GPULEDGER_KAFKA_CONFIG");
}

absl::StatusOr<ingest::KafkaConfig> LoadKafkaConfig(const std::string& path) {
  if (path.empty()) return ingest::KafkaConfig{};
  absl::StatusOr<ingest::KafkaConfig> config = ingest::ReadKafkaConfigFile(path);
  if (config.ok()) {
    spdlog::info("Kafka client settings from {}: {}", path,
                 config->empty() ? "none" : config->Describe());
  }
  return config;
}

}  // namespace gpuledger::cli
