// Kafka topic names. Each CSP publishes on its own usage topic so that Kafka ACLs can restrict
// it to its own; the operator publishes reference data on the registry topic.
#pragma once

#include <optional>
#include <string>

namespace gpuledger::ingest {

inline constexpr char kUsageTopicPrefix[] = "gpuledger.usage.";
inline constexpr char kRegistryTopic[] = "gpuledger.registry";
inline constexpr char kRejectedTopic[] = "gpuledger.rejected";
// librdkafka subscription pattern for every CSP usage topic (a leading '^' makes it a regex).
inline constexpr char kUsageTopicPattern[] = "^gpuledger\\.usage\\..+";
// The dedup source id of registry events.
inline constexpr char kOperatorSourceId[] = "operator";

inline std::string UsageTopic(const std::string& csp_id) { return kUsageTopicPrefix + csp_id; }

// The CSP id of a usage topic, or nullopt if `topic` is not one.
inline std::optional<std::string> CspOfUsageTopic(const std::string& topic) {
  const std::string prefix = kUsageTopicPrefix;
  if (topic.size() <= prefix.size() || topic.compare(0, prefix.size(), prefix) != 0) {
    return std::nullopt;
  }
  return topic.substr(prefix.size());
}

}  // namespace gpuledger::ingest
