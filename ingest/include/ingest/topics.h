// Kafka topic names. Each CSP publishes on its own usage topic so that Kafka ACLs can restrict
// it to its own; the operator publishes reference data on the registry topic. An optional
// namespace prefix (e.g. "staging.") lets several gpuledger deployments, or tests, share one
// Kafka cluster.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"

namespace gpuledger::ingest {

// The dedup source id of registry events.
inline constexpr char kOperatorSourceId[] = "operator";

class TopicNames {
 public:
  // `prefix` is empty (production) or letters, digits, '_' and '-' ending in '.'.
  static absl::Status CheckPrefix(const std::string& prefix);
  TopicNames() = default;
  explicit TopicNames(std::string prefix) : prefix_(std::move(prefix)) {}

  std::string Registry() const { return prefix_ + "gpuledger.registry"; }
  std::string Rejected() const { return prefix_ + "gpuledger.rejected"; }
  // Alerts raised by `gpuledger alerts run` (docs/ALERTS.md), keyed by alert id.
  std::string Alerts() const { return prefix_ + "gpuledger.alerts"; }
  // The ledger topic (docs/RELIABILITY.md): the writer's commits, in ledger order, for standbys
  // and auditors. One partition, kept forever.
  // A shard's (docs/SCALING.md): gpuledger.ledger.shard-K-of-N when there are N > 1 shards.
  std::string Ledger(uint32_t shard = 0, uint32_t shards = 1) const {
    if (shards <= 1) return prefix_ + "gpuledger.ledger";
    return prefix_ + "gpuledger.ledger.shard-" + std::to_string(shard) + "-of-" +
           std::to_string(shards);
  }
  std::string Usage(const std::string& csp_id) const { return UsagePrefix() + csp_id; }
  std::string UsagePrefix() const { return prefix_ + "gpuledger.usage."; }
  // librdkafka subscription pattern for every CSP usage topic (a leading '^' makes it a regex).
  std::string UsagePattern() const;
  // The CSP id of a usage topic, or nullopt if `topic` is not one.
  std::optional<std::string> CspOfUsage(const std::string& topic) const;
  const std::string& prefix() const { return prefix_; }

 private:
  std::string prefix_;
};

}  // namespace gpuledger::ingest
