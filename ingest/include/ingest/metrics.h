// Prometheus metrics of the ingest process: what it consumed and decided, how its group commits
// perform, how far behind Kafka it is, and the ledger head. Optionally served over HTTP at
// /metrics in the Prometheus text format. See docs/OPERATIONS.md for every metric.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace gpuledger::ingest {

// What became of a consumed message, or of a parked one when it was decided.
enum class MessageOutcome {
  kAccepted,   // a new entry with outcome ACCEPTED
  kRejected,   // a new entry with outcome REJECTED (incl. CONFLICTING_DUPLICATE)
  kDuplicate,  // an exact duplicate: counted, not recorded
  kParked,     // a new entry PARKED, waiting for the registry
};

// Owned by the ingest loop. The update methods are called from the ingest thread only; the
// HTTP server (if any) answers scrapes from its own threads and only reads the metrics.
class IngestMetrics {
 public:
  // `listen_address` is "host:port" (e.g. "127.0.0.1:9464") to serve /metrics there; port 0
  // lets the OS pick a free port (see port()). Empty: metrics are kept but not served.
  // UNAVAILABLE if the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<IngestMetrics>> Create(const std::string& listen_address);
  ~IngestMetrics();
  IngestMetrics(const IngestMetrics&) = delete;
  IngestMetrics& operator=(const IngestMetrics&) = delete;

  // One message consumed from Kafka.
  void OnConsumed();
  // One outcome: of a consumed message, or of the entry that decides a parked one (which then
  // counts as accepted or rejected too, as in IngestStats). `reason_code` labels rejections.
  void OnMessage(MessageOutcome outcome, const std::string& reason_code = "");
  // One group commit of `batch_messages` consumed messages whose ledger commit took `seconds`.
  void OnCommit(size_t batch_messages, double seconds);
  // Messages in `topic`[`partition`] not yet recorded in the ledger.
  void SetLag(const std::string& topic, int32_t partition, int64_t lag_messages);
  // Forgets a partition's lag (it was revoked from this consumer).
  void RemoveLag(const std::string& topic, int32_t partition);
  // The committed ledger head.
  void SetHead(uint64_t seq);
  // Entries parked now, waiting for the registry.
  void SetParked(size_t entries);
  // Bytes of memory held by one part of the process (docs/OPERATIONS.md, "Memory"): "rss",
  // "heap_in_use", "heap_free", "ledger_memtables", "state_block_cache", ...
  void SetMemory(const std::string& part, uint64_t bytes);
  // Rejection notices delivered to, or failed to be delivered to, the rejected topic.
  void OnRejectedNotice(bool delivered);

  // Partitions assigned to the consumer now: /readyz answers 200 while there are some.
  void SetAssignedPartitions(size_t partitions);
  // Ingest is stopping: /readyz answers 503 from now on.
  void SetStopping();
  // The bound TCP port; 0 when not serving.
  int port() const;
  // "http://host:port/metrics", or "" when not serving.
  std::string url() const;
  // Every metric in the Prometheus text format, as a scrape would return it.
  std::string Render() const;

 private:
  struct Impl;
  explicit IngestMetrics(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpuledger::ingest
