#include "ingest/metrics.h"

#include <CivetServer.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <atomic>
#include <exception>
#include <functional>
#include <map>
#include <sstream>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "ingest/process_metrics.h"

namespace gpuledger::ingest {

namespace {

// Messages per group commit: 1 up to IngestOptions::batch_max_messages' ceiling (1,000,000).
const prometheus::Histogram::BucketBoundaries kBatchSizeBuckets = {
    1, 10, 50, 100, 250, 500, 1'000, 2'500, 5'000, 10'000, 50'000, 100'000, 1'000'000};
// Ledger commit latency, seconds: one synced RocksDB write is ~1 ms on SSD, more on disks.
const prometheus::Histogram::BucketBoundaries kCommitSecondsBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

// One GET path of the metrics listener: status, content type and body, computed per request.
class Endpoint : public CivetHandler {
 public:
  using Answer = std::function<std::tuple<int, std::string, std::string>()>;
  explicit Endpoint(Answer answer) : answer_(std::move(answer)) {}
  bool handleGet(CivetServer*, mg_connection* c) override { return Write(c, true); }
  bool handleHead(CivetServer*, mg_connection* c) override { return Write(c, false); }

 private:
  bool Write(mg_connection* c, bool body) {
    const auto [status, type, text] = answer_();
    const std::string head =
        absl::StrCat("HTTP/1.1 ", status, status == 200 ? " OK" : " Service Unavailable",
                     "\r\nContent-Type: ", type, "\r\nContent-Length: ", text.size(),
                     "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n");
    mg_write(c, head.data(), head.size());
    if (body) mg_write(c, text.data(), text.size());
    return true;
  }
  Answer answer_;
};

}  // namespace

struct IngestMetrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::shared_ptr<ProcessCollector> process = std::make_shared<ProcessCollector>();
  // Serves /metrics, /healthz and /readyz; null when not serving. Declared after its handlers,
  // so that it stops before they are destroyed.
  std::vector<std::unique_ptr<Endpoint>> endpoints;
  std::unique_ptr<CivetServer> server;
  std::string host;
  int port = 0;
  std::atomic<size_t> assigned_partitions{0};
  std::atomic<bool> stopping{false};
  prometheus::Gauge* assigned = nullptr;

  prometheus::Counter* consumed = nullptr;
  prometheus::Counter* accepted = nullptr;
  prometheus::Counter* duplicates = nullptr;
  prometheus::Counter* parked_total = nullptr;
  prometheus::Gauge* parked = nullptr;
  prometheus::Counter* batches = nullptr;
  prometheus::Counter* notices_delivered = nullptr;
  prometheus::Counter* notices_failed = nullptr;
  prometheus::Family<prometheus::Counter>* rejected = nullptr;
  prometheus::Histogram* batch_size = nullptr;
  prometheus::Histogram* commit_seconds = nullptr;
  prometheus::Family<prometheus::Gauge>* lag = nullptr;
  prometheus::Gauge* head_seq = nullptr;
  prometheus::Family<prometheus::Gauge>* memory = nullptr;
  // Caches of labelled series, so that the hot path does not hash label maps. Ingest thread.
  std::map<std::string, prometheus::Counter*> rejected_by_reason;
  std::map<std::pair<std::string, int32_t>, prometheus::Gauge*> lag_by_partition;
  std::map<std::string, prometheus::Gauge*> memory_by_part;

  Impl() {
    prometheus::Registry& r = *registry;
    auto counter = [&r](const char* name, const char* help) {
      return &prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
    };
    consumed = counter("gpuledger_ingest_consumed_total", "Messages consumed from Kafka.");
    accepted =
        counter("gpuledger_ingest_accepted_total", "New ledger entries with outcome ACCEPTED.");
    duplicates = counter("gpuledger_ingest_duplicates_total",
                         "Exact duplicates of recorded events: counted, not recorded again.");
    parked_total = counter("gpuledger_ingest_parked_total",
                           "New ledger entries PARKED, waiting for the registry.");
    batches = counter("gpuledger_ingest_batches_total", "Group commits to the ledger.");
    notices_delivered = counter("gpuledger_ingest_rejected_notices_delivered_total",
                                "Rejection notices acknowledged by Kafka on the rejected topic.");
    notices_failed = counter("gpuledger_ingest_rejected_notices_failed_total",
                             "Rejection notices that could not be delivered to the rejected topic "
                             "(the ledger still records the rejection).");
    rejected = &prometheus::BuildCounter()
                    .Name("gpuledger_ingest_rejected_total")
                    .Help("New ledger entries with outcome REJECTED, by reason code.")
                    .Register(r);
    batch_size = &prometheus::BuildHistogram()
                      .Name("gpuledger_ingest_batch_size")
                      .Help("Consumed messages per group commit.")
                      .Register(r)
                      .Add({}, kBatchSizeBuckets);
    commit_seconds = &prometheus::BuildHistogram()
                          .Name("gpuledger_ingest_commit_seconds")
                          .Help("Latency of one ledger group commit (synced write), seconds.")
                          .Register(r)
                          .Add({}, kCommitSecondsBuckets);
    lag = &prometheus::BuildGauge()
               .Name("gpuledger_ingest_consumer_lag")
               .Help("Messages in an assigned partition not yet recorded in the ledger.")
               .Register(r);
    parked =
        &prometheus::BuildGauge()
             .Name("gpuledger_ingest_parked")
             .Help("Entries parked now, waiting for the registry to announce their allocation.")
             .Register(r)
             .Add({});
    memory = &prometheus::BuildGauge()
                  .Name("gpuledger_ingest_memory_bytes")
                  .Help(
                      "Memory held by each part of ingest: the process's resident set (rss), "
                      "the C heap in use and free, and RocksDB's memtables, table readers and "
                      "block cache of the ledger and of the validator's state store, and the "
                      "index of recent intervals.")
                  .Register(r);
    head_seq = &prometheus::BuildGauge()
                    .Name("gpuledger_ledger_head_seq")
                    .Help("Sequence number of the last committed ledger entry.")
                    .Register(r)
                    .Add({});
    assigned = &prometheus::BuildGauge()
                    .Name("gpuledger_ingest_assigned_partitions")
                    .Help(
                        "Topic partitions assigned to this consumer (0: not in the group yet, "
                        "or the broker is unreachable since the last rebalance).")
                    .Register(r)
                    .Add({});
  }
};

absl::StatusOr<std::unique_ptr<IngestMetrics>> IngestMetrics::Create(
    const std::string& listen_address) {
  auto impl = std::make_unique<Impl>();
  if (!listen_address.empty()) {
    const size_t colon = listen_address.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == listen_address.size()) {
      return absl::InvalidArgumentError(absl::StrCat("metrics listen address '", listen_address,
                                                     "' is not host:port (e.g. 127.0.0.1:9464)"));
    }
    impl->host = listen_address.substr(0, colon);
    try {
      // One server thread: scrapes and probes are rare and cheap.
      impl->server = std::make_unique<CivetServer>(
          std::vector<std::string>{"listening_ports", listen_address, "num_threads", "1"});
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on ", listen_address, ": ", e.what()));
    }
    Impl* raw = impl.get();
    auto add = [&](const char* path, Endpoint::Answer answer) {
      impl->endpoints.push_back(std::make_unique<Endpoint>(std::move(answer)));
      impl->server->addHandler(path, impl->endpoints.back().get());
    };
    add("/metrics", [raw] {
      std::ostringstream out;
      std::vector<prometheus::MetricFamily> families = raw->registry->Collect();
      for (prometheus::MetricFamily& f : raw->process->Collect()) families.push_back(std::move(f));
      prometheus::TextSerializer().Serialize(out, families);
      return std::make_tuple(200, std::string("text/plain; version=0.0.4"), out.str());
    });
    // Alive while this process answers at all.
    add("/healthz", [] {
      return std::make_tuple(200, std::string("application/json"),
                             std::string("{\"status\": \"ok\"}\n"));
    });
    // Ready while partitions are assigned to it (it is in the consumer group, reading), and it
    // is not stopping.
    add("/readyz", [raw] {
      const size_t n = raw->assigned_partitions.load();
      const bool ready = n > 0 && !raw->stopping.load();
      return std::make_tuple(ready ? 200 : 503, std::string("application/json"),
                             absl::StrCat("{\"status\": \"",
                                          ready           ? "ready"
                                          : raw->stopping ? "stopping"
                                                          : "starting",
                                          "\", \"assigned_partitions\": ", n, "}\n"));
    });
    const std::vector<int> ports = impl->server->getListeningPorts();
    impl->port = ports.empty() ? 0 : ports.front();
  }
  return std::unique_ptr<IngestMetrics>(new IngestMetrics(std::move(impl)));
}

IngestMetrics::IngestMetrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

IngestMetrics::~IngestMetrics() = default;

void IngestMetrics::OnConsumed() { impl_->consumed->Increment(); }

void IngestMetrics::OnMessage(MessageOutcome outcome, const std::string& reason_code) {
  switch (outcome) {
    case MessageOutcome::kAccepted:
      impl_->accepted->Increment();
      break;
    case MessageOutcome::kDuplicate:
      impl_->duplicates->Increment();
      break;
    case MessageOutcome::kParked:
      impl_->parked_total->Increment();
      break;
    case MessageOutcome::kRejected: {
      prometheus::Counter*& c = impl_->rejected_by_reason[reason_code];
      if (c == nullptr) c = &impl_->rejected->Add({{"reason", reason_code}});
      c->Increment();
      break;
    }
  }
}

void IngestMetrics::OnCommit(size_t batch_messages, double seconds) {
  impl_->batches->Increment();
  impl_->batch_size->Observe(static_cast<double>(batch_messages));
  impl_->commit_seconds->Observe(seconds);
}

void IngestMetrics::SetLag(const std::string& topic, int32_t partition, int64_t lag_messages) {
  prometheus::Gauge*& g = impl_->lag_by_partition[{topic, partition}];
  if (g == nullptr) {
    g = &impl_->lag->Add({{"topic", topic}, {"partition", absl::StrCat(partition)}});
  }
  g->Set(static_cast<double>(lag_messages));
}

void IngestMetrics::RemoveLag(const std::string& topic, int32_t partition) {
  auto it = impl_->lag_by_partition.find({topic, partition});
  if (it == impl_->lag_by_partition.end()) return;
  impl_->lag->Remove(it->second);
  impl_->lag_by_partition.erase(it);
}

void IngestMetrics::SetHead(uint64_t seq) { impl_->head_seq->Set(static_cast<double>(seq)); }

void IngestMetrics::SetParked(size_t entries) { impl_->parked->Set(static_cast<double>(entries)); }

void IngestMetrics::SetMemory(const std::string& part, uint64_t bytes) {
  prometheus::Gauge*& g = impl_->memory_by_part[part];
  if (g == nullptr) g = &impl_->memory->Add({{"part", part}});
  g->Set(static_cast<double>(bytes));
}

void IngestMetrics::OnRejectedNotice(bool delivered) {
  (delivered ? impl_->notices_delivered : impl_->notices_failed)->Increment();
}

void IngestMetrics::SetAssignedPartitions(size_t partitions) {
  impl_->assigned_partitions.store(partitions);
  impl_->assigned->Set(static_cast<double>(partitions));
}

void IngestMetrics::SetStopping() { impl_->stopping.store(true); }

int IngestMetrics::port() const { return impl_->port; }

std::string IngestMetrics::url() const {
  if (impl_->server == nullptr) return "";
  return absl::StrCat("http://", impl_->host, ":", impl_->port, "/metrics");
}

std::string IngestMetrics::Render() const {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, impl_->registry->Collect());
  return out.str();
}

}  // namespace gpuledger::ingest
