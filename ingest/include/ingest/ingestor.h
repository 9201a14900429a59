// The ingest loop: consume the registry topic and every CSP usage topic, decide about each
// message, and record it in the ledger together with the consumed offsets, one synced write
// batch per group commit.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "ingest/decide.h"
#include "ingest/kafka_config.h"
#include "ledger/ledger.h"

namespace gpuledger::ingest {

struct IngestOptions {
  // Kafka bootstrap servers, "host:port[,host:port]". Required.
  std::string brokers;
  // Extra librdkafka properties (credentials, TLS) for the consumer and the rejected-topic
  // producer. Default: none.
  KafkaConfig kafka_config;
  // Consumer group id. Offsets committed to Kafka under it are for lag monitoring only; the
  // ledger's stored offsets decide where consumption resumes. Default: "gpuledger-ingest".
  std::string group_id = "gpuledger-ingest";
  // Kafka static membership id (group.instance.id). Set, a restart after a crash resumes its
  // partitions at once instead of after session_timeout_ms; but a rejoining static member
  // keeps its old assignment, so a CSP usage topic created meanwhile is only picked up at the
  // next rebalance. Default: empty (dynamic membership).
  std::string instance_id;
  // Kafka consumer session timeout, ms: how long a crashed member keeps its partitions (a
  // restarted ingest waits that long for them). Default: 10,000.
  int64_t session_timeout_ms = 10'000;
  // Most messages recorded per group commit (one synced RocksDB write). Default: 5,000.
  size_t batch_max_messages = 5'000;
  // Longest a batch stays open before it is committed, ms. Default: 200.
  int64_t batch_max_ms = 200;
  // Stop once every assigned partition has been read to its end and committed, instead of
  // running until asked to stop. Default: false (run as a service).
  bool stop_at_end = false;
  // With stop_at_end: give up waiting for a partition assignment after this long, ms.
  // Default: 60,000.
  int64_t assignment_timeout_ms = 60'000;
  // Log a progress line at most this often, ms. Default: 2,000.
  int64_t progress_interval_ms = 2'000;
  // Serve Prometheus metrics at http://<this>/metrics, "host:port" (e.g. "127.0.0.1:9464");
  // port 0 picks a free port (logged). Default: empty, not served.
  std::string metrics_listen;
  // After each ledger commit, republish its rejected entries to the rejected topic (reason,
  // seq and source topic in headers; see docs/OPERATIONS.md). Default: true.
  bool publish_rejected = true;
  // On shutdown, wait at most this long for rejection notices to be delivered, ms.
  // Default: 10,000.
  int64_t rejected_flush_timeout_ms = 10'000;
  // The validator's state store (accepted intervals and their holders, derived from the
  // ledger; see ingest/src/hold_store.h), conventionally "<ledger>.validator". Empty: kept in
  // memory and rebuilt from the whole ledger at each start. Default: empty.
  std::string state_dir;
  // Validation limits applied to each event.
  ValidationLimits limits;
  // Sharded ingest (docs/SCALING.md): this ledger is shard `shard` of `shards`. It records the
  // whole registry and the usage partitions p with p % shards == shard of every usage topic.
  // Each shard is a consumer group of its own (group_id should differ per shard). Default: 0 of
  // 1, every partition.
  uint32_t shard = 0;
  uint32_t shards = 1;
};

// True when usage partition `partition` belongs to shard `shard` of `shards`.
inline bool ShardOwns(int32_t partition, uint32_t shard, uint32_t shards) {
  return shards <= 1 || static_cast<uint32_t>(partition) % shards == shard;
}

struct IngestStats {
  uint64_t consumed = 0;    // messages read from Kafka
  uint64_t accepted = 0;    // new entries with outcome ACCEPTED
  uint64_t rejected = 0;    // new entries with outcome REJECTED (incl. conflicts)
  uint64_t duplicates = 0;  // exact duplicates: counted, not recorded again
  uint64_t parked = 0;      // new entries PARKED, waiting for the registry
  uint64_t resolved = 0;    // entries deciding a parked one (also counted accepted/rejected)
  uint64_t batches = 0;     // group commits
  std::map<std::string, uint64_t> rejected_by_reason;
};

// Runs until `stop` becomes true (then finishes and commits the batch in flight), until the
// end of every partition with stop_at_end, or until an error that makes going on unsafe.
// `ledger` must be open for writing; this function is its only writer while it runs.
absl::StatusOr<IngestStats> RunIngest(const IngestOptions& options, ledger::Ledger& ledger,
                                      const std::atomic<bool>& stop);

}  // namespace gpuledger::ingest
