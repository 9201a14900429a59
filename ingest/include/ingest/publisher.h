// Publishing events to Kafka: what a CSP's metering system (or the operator's registry tool)
// does, packaged as `gpuledger publish`.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ingest/topics.h"

namespace gpuledger::ingest {

enum class EventKind { kUsage, kRegistry };

struct PublishOptions {
  // Kafka bootstrap servers. Required.
  std::string brokers;
  // Topic names (namespace prefix). Default: production names.
  TopicNames topics;
  // Partitions for topics this publisher creates if they do not exist yet. Default: 3.
  int partitions_if_created = 3;
  // How long to wait for every message to be acknowledged before failing, ms. Default: 60,000.
  int64_t flush_timeout_ms = 60'000;
  // Longest accepted input line, bytes. Default: 1 MiB.
  size_t max_line_bytes = 1 << 20;
};

struct PublishStats {
  uint64_t lines = 0;               // non-blank input lines
  uint64_t published = 0;           // messages acknowledged by the broker (acks=all)
  std::vector<std::string> topics;  // topics written to
};

// An event already encoded for the wire.
struct EncodedEvent {
  std::string topic;
  std::string key;
  std::string value;
};

// Parses JSON lines (protobuf JSON mapping of UsageEvent or RegistryEvent) into wire events.
// Nothing is published if any line is bad: the error names every bad line (up to 20).
absl::StatusOr<std::vector<EncodedEvent>> EncodeJsonLines(std::istream& in, EventKind kind,
                                                          const PublishOptions& options);

// Produces `events` in order with the idempotent producer (acks=all) and waits until every
// one is acknowledged. Creates missing topics first.
absl::StatusOr<PublishStats> Publish(const std::vector<EncodedEvent>& events,
                                     const PublishOptions& options);

// Creates the topics that do not exist yet, with `partitions` partitions each.
absl::Status EnsureTopics(const std::string& brokers, const std::vector<std::string>& topics,
                          int partitions);

}  // namespace gpuledger::ingest
