// The ledger as a Kafka topic (docs/RELIABILITY.md): the writer publishes each commit to its
// ledger topic before writing it (a Kafka transaction per commit, under one transactional id per
// ledger topic, so that a new writer's start fences the old one); standbys apply the topic and
// hold the writer's ledger entry for entry; auditors tail it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ingest/kafka_config.h"
#include "ledger/ledger.h"

namespace gpuledger::ingest {

struct LedgerTopicOptions {
  // Kafka bootstrap servers, "host:port[,host:port]". Required.
  std::string brokers;
  // Extra librdkafka properties (credentials, TLS). Default: none.
  KafkaConfig kafka_config;
  // The ledger topic (TopicNames::Ledger()). Required.
  std::string topic;
  // This node's name, recorded as the writer of each commit it publishes. Required to write.
  std::string node;
  // How long a publish, a fencing or a catch-up may wait for the broker, ms; a commit whose
  // transaction cannot be ended (a broker restarting) is tried again for up to 4 times this.
  // Default: 30,000.
  int64_t timeout_ms = 30'000;
  // The transactional id the writers of `topic` share: empty means "gpuledger-ledger:" + topic.
  // A writer with another id is not fenced by a takeover: for the test that shows the standbys
  // catch such a writer, never for operation.
  std::string transactional_id;
};

// Creates the ledger topic unless it exists: one partition (one order), kept forever
// (retention.ms and retention.bytes -1), messages up to 64 MiB.
absl::Status EnsureLedgerTopic(const LedgerTopicOptions& options);

// Applies the ledger topic's commits after the ledger's position (Ledger::replication()), each
// as one atomic write, checking that each follows (Ledger::ApplyCommit). With `until_end`,
// returns at the topic's end (its last committed transaction); otherwise runs until `stop`.
// Returns the number of commits applied; stops at the first commit that does not follow.
// `on_commit` (optional) is called after each applied commit.
absl::StatusOr<uint64_t> FollowLedgerTopic(
    const LedgerTopicOptions& options, ledger::Ledger& ledger, const std::atomic<bool>& stop,
    bool until_end, const std::function<void(const gpuledger::v1::LedgerCommit&)>& on_commit = {});

// Makes this node the ledger's writer on its ledger topic: applies what the topic holds beyond
// the ledger, then checks that this node is the topic's writer (refused otherwise: it was
// fenced), fences any other producer of the topic (Kafka's transactional fencing), applies again
// what arrived meanwhile, and starts publishing every commit (Ledger::StartPublishing). With
// `takeover`, the node becomes the writer in a new epoch instead, whoever wrote before: the old
// writer is fenced and every standby sees the takeover (`gpuledger ledger promote`).
absl::Status StartLedgerTopicWriter(const LedgerTopicOptions& options, ledger::Ledger& ledger,
                                    bool takeover);

}  // namespace gpuledger::ingest
