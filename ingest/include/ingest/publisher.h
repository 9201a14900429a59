// Publishing events to Kafka: what a CSP's metering system (or the operator's registry tool)
// does, packaged as `gpuledger publish`.
#pragma once

#include <cstdint>
#include <istream>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/kafka_config.h"
#include "ingest/topics.h"

namespace gpuledger::ingest {

enum class EventKind { kUsage, kRegistry };

struct PublishOptions {
  // Kafka bootstrap servers. Required.
  std::string brokers;
  // Extra librdkafka properties (credentials, TLS) for the producer and the topic creator.
  // Default: none.
  KafkaConfig kafka_config;
  // Topic names (namespace prefix). Default: production names.
  TopicNames topics;
  // Partitions for topics this publisher creates if they do not exist yet. Default: 3.
  int partitions_if_created = 3;
  // How long to wait for every message to be acknowledged before failing, ms. Default: 60,000.
  int64_t flush_timeout_ms = 60'000;
  // How long to wait for a broker to answer at all before failing (nothing published), ms.
  // Default: 10,000.
  int64_t connect_timeout_ms = 10'000;
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
  // The producer's CreateTime for the message, UTC ms; 0: now. gpuledger never trusts it (the
  // topics it creates stamp LogAppendTime); tests set it to show that.
  int64_t create_time_ms = 0;
};

// One event for the wire: its topic (the CSP's usage topic, or the registry) and key (the
// allocation, so that an allocation's events stay in order on one partition).
absl::StatusOr<EncodedEvent> EncodeUsageEvent(const gpuledger::v1::UsageEvent& event,
                                              const TopicNames& topics);
// The key EncodeUsageEvent gives an event, from what it depends on: the body's kind, its
// allocation (usage, correction, outage, withdrawal), its pool (program and GPU model: own use,
// and an outage or withdrawal of no one allocation), the event id (a close marker, no body).
std::string UsageEventKey(gpuledger::v1::UsageEvent::BodyCase body, std::string_view allocation_id,
                          gpuledger::v1::Program program, gpuledger::v1::GpuModel gpu_model,
                          std::string_view event_id);
absl::StatusOr<EncodedEvent> EncodeRegistryEvent(const gpuledger::v1::RegistryEvent& event,
                                                 const TopicNames& topics);

// Parses JSON lines (protobuf JSON mapping of UsageEvent or RegistryEvent) into wire events.
// Nothing is published if any line is bad: the error names every bad line (up to 20).
absl::StatusOr<std::vector<EncodedEvent>> EncodeJsonLines(std::istream& in, EventKind kind,
                                                          const PublishOptions& options);

// Produces `events` in order with the idempotent producer (acks=all) and waits until every
// one is acknowledged. Creates missing topics first.
absl::StatusOr<PublishStats> Publish(const std::vector<EncodedEvent>& events,
                                     const PublishOptions& options);

// A streaming publisher, for more events than fit in memory (gpuledger simulate).
class Publisher {
 public:
  static absl::StatusOr<std::unique_ptr<Publisher>> Create(const PublishOptions& options);
  ~Publisher();
  // Creates missing topics (the registry topic with one partition).
  absl::Status PrepareTopics(const std::vector<std::string>& topics);
  // Queues one event (waits while librdkafka's queue is full).
  absl::Status Send(const EncodedEvent& event);
  uint64_t delivered() const;
  // Waits until every event is acknowledged.
  absl::StatusOr<PublishStats> Finish();

 private:
  struct Impl;
  explicit Publisher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Creates the topics that do not exist yet, with `partitions` partitions each. A topic this
// client is not authorized to create (a CSP's principal has no CREATE right) is taken to exist
// (the cluster administrator creates topics), with a log line saying so; producing to it then
// fails if it does not. `topic_config`: settings of the new topics besides log-append time
// (e.g. retention.ms), applied only to topics created here.
absl::Status EnsureTopics(
    const std::string& brokers, const KafkaConfig& kafka_config,
    const std::vector<std::string>& topics, int partitions,
    const std::vector<std::pair<std::string, std::string>>& topic_config = {});
// The same without extra client properties.
absl::Status EnsureTopics(const std::string& brokers, const std::vector<std::string>& topics,
                          int partitions);

// Where a period close cuts a partition of a usage topic.
struct PartitionEnd {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
};

// Writes a close marker of `period` (UsageEvent.close_marker, producer "gpuledger-settle-close")
// to every partition of every usage topic on the cluster and waits for each to be acknowledged:
// returns each marker's offset, sorted by topic and partition. A period close naming these
// offsets covers exactly the usage before the markers, in any ledger built from the topics.
absl::StatusOr<std::vector<PartitionEnd>> PublishCloseMarkers(const std::string& brokers,
                                                              const KafkaConfig& kafka_config,
                                                              const TopicNames& topics,
                                                              const std::string& period,
                                                              int64_t now_ms);

}  // namespace gpuledger::ingest
