// Republishes rejected ledger entries to the rejected topic, as notices for operators and CSPs.
// The ledger is the record; a notice is sent only after the ledger commit that recorded the
// rejection. Delivery is at least once: the ledger keeps a cursor (every rejection up to it was
// delivered), written with each commit, and a restart re-sends what lies after it. Headers and
// delivery semantics: docs/OPERATIONS.md.
#pragma once

#include <librdkafka/rdkafkacpp.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "base/limits.h"
#include "ingest/kafka_config.h"
#include "ingest/metrics.h"

namespace gpuledger::ingest {

// Kafka header names on the rejected topic.
inline constexpr char kReasonHeader[] = "gpuledger-reason";
inline constexpr char kSeqHeader[] = "gpuledger-seq";
inline constexpr char kSourceTopicHeader[] = "gpuledger-source-topic";
// Sharded ingest only: "K/N", the shard whose ledger seq gpuledger-seq is.
inline constexpr char kShardHeader[] = "gpuledger-shard";

// One rejected entry of the batch in flight.
struct RejectedNotice {
  uint64_t seq = 0;          // its ledger seq
  std::string reason_code;   // its reason code
  std::string source_id;     // the message key; empty: no key (the payload did not decode)
  std::string payload;       // the original message value
  std::string source_topic;  // where it was consumed from
  // Its CloudEvents headers as consumed and recorded (`ce_...`, `content-type`), in order: a
  // binary-mode CloudEvent's attributes are there, not in the payload.
  std::vector<std::pair<std::string, std::string>> headers;
};

// Owned by the ingest loop and used on its thread only: delivery reports and librdkafka's
// events are served from Poll() and Flush(), on that thread.
class RejectedNotifier : public RdKafka::DeliveryReportCb, public RdKafka::EventCb {
 public:
  // Most notices waiting for delivery; beyond it Send() waits (bounded) for room.
  static constexpr int kQueueMaxMessages = gpuledger::limits::kRejectedQueueMessagesMax;
  // Longest Send() waits for room in a full queue before dropping the rest, ms.
  static constexpr int kQueueFullWaitMs = 10'000;
  // Longest librdkafka retries one notice before reporting it failed, ms.
  static constexpr int kDeliveryTimeoutMs = 120'000;

  RejectedNotifier(std::string topic, IngestMetrics& metrics)
      : topic_(std::move(topic)), metrics_(metrics) {}

  // Sharded ingest: every notice also carries kShardHeader = `shard` ("K/N"), since seqs are
  // per shard. Call before Start.
  void SetShard(std::string shard) { shard_ = std::move(shard); }
  // Creates the idempotent producer, with `kafka_config`'s properties (credentials).
  absl::Status Start(const std::string& brokers, const KafkaConfig& kafka_config);
  // Queues `notices` for delivery (asynchronous; never fails the caller).
  void Send(const std::vector<RejectedNotice>& notices);
  // Serves delivery reports without blocking.
  void Poll();
  // Waits up to `timeout_ms` for every queued notice; logs a warning about those left.
  void Flush(int timeout_ms);

  // Every notice for ledger seqs up to `seq` has been handed to Send().
  void MarkSentThrough(uint64_t seq) { sent_through_ = std::max(sent_through_, seq); }
  // The highest seq such that every notice up to it was delivered (acknowledged by Kafka).
  uint64_t ConfirmedThrough() const;

  void dr_cb(RdKafka::Message& message) override;
  void event_cb(RdKafka::Event& event) override;

 private:
  std::string shard_;
  std::string topic_;
  IngestMetrics& metrics_;
  std::unique_ptr<RdKafka::Producer> producer_;
  uint64_t failed_logged_ = 0;  // delivery failures logged individually so far
  uint64_t sent_through_ = 0;
  std::set<uint64_t> in_flight_;    // queued, not yet acknowledged
  std::set<uint64_t> undelivered_;  // failed: re-sent by the next start
};

}  // namespace gpuledger::ingest
