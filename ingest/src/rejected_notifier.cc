#include "rejected_notifier.h"

#include <spdlog/spdlog.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "kafka_status.h"

namespace gpuledger::ingest {

namespace {

// Delivery failures logged one by one; later ones are only counted (metrics, final warning).
constexpr uint64_t kMaxFailuresLogged = 100;

int64_t MonotonicMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

absl::Status RejectedNotifier::Start(const std::string& brokers, const KafkaConfig& kafka_config) {
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  const std::pair<const char*, std::string> settings[] = {
      {"bootstrap.servers", brokers},
      {"client.id", "gpuledger-ingest-rejected"},
      // Retries never duplicate or reorder a notice within a partition.
      {"enable.idempotence", "true"},
      {"acks", "all"},
      {"linger.ms", "5"},
      {"compression.type", "lz4"},
      {"queue.buffering.max.messages", absl::StrCat(kQueueMaxMessages)},
      {"message.timeout.ms", absl::StrCat(kDeliveryTimeoutMs)},
  };
  for (const auto& [key, value] : settings)
    GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), key, value));
  GPULEDGER_RETURN_IF_ERROR(ApplyKafkaConfig(conf.get(), kafka_config));
  std::string err;
  if (conf->set("dr_cb", static_cast<RdKafka::DeliveryReportCb*>(this), err) !=
          RdKafka::Conf::CONF_OK ||
      conf->set("event_cb", static_cast<RdKafka::EventCb*>(this), err) != RdKafka::Conf::CONF_OK) {
    return absl::InternalError(absl::StrCat("Kafka callbacks: ", err));
  }
  producer_.reset(RdKafka::Producer::create(conf.get(), err));
  if (!producer_) return absl::InvalidArgumentError(absl::StrCat("Kafka producer: ", err));
  spdlog::info("rejected events are republished to {} after they are recorded", topic_);
  return absl::OkStatus();
}

void RejectedNotifier::Send(const std::vector<RejectedNotice>& notices) {
  if (!producer_ || notices.empty()) return;
  const int64_t give_up_at = MonotonicMs() + kQueueFullWaitMs;
  for (const RejectedNotice& n : notices) {
    in_flight_.insert(n.seq);
    for (;;) {
      RdKafka::Headers* headers = RdKafka::Headers::create();
      for (const auto& [key, value] : n.headers) headers->add(key, value);
      headers->add(kReasonHeader, n.reason_code);
      headers->add(kSeqHeader, absl::StrCat(n.seq));
      headers->add(kSourceTopicHeader, n.source_topic);
      if (!shard_.empty()) headers->add(kShardHeader, shard_);
      const RdKafka::ErrorCode code =
          producer_->produce(topic_, RdKafka::Topic::PARTITION_UA, RdKafka::Producer::RK_MSG_COPY,
                             const_cast<char*>(n.payload.data()), n.payload.size(),
                             n.source_id.empty() ? nullptr : n.source_id.data(), n.source_id.size(),
                             0, headers, reinterpret_cast<void*>(static_cast<uintptr_t>(n.seq)));
      if (code == RdKafka::ERR_NO_ERROR) break;  // librdkafka now owns `headers`
      delete headers;
      if (code == RdKafka::ERR__QUEUE_FULL && MonotonicMs() < give_up_at) {
        producer_->poll(100);  // wait for deliveries to make room
        continue;
      }
      metrics_.OnRejectedNotice(false);
      in_flight_.erase(n.seq);
      undelivered_.insert(n.seq);
      if (++failed_logged_ <= kMaxFailuresLogged) {
        spdlog::warn("rejected notice for ledger seq {} not queued for {}: {}", n.seq, topic_,
                     RdKafka::err2str(code));
      }
      break;
    }
  }
  producer_->poll(0);
}

void RejectedNotifier::Poll() {
  if (producer_) producer_->poll(0);
}

void RejectedNotifier::Flush(int timeout_ms) {
  if (!producer_) return;
  producer_->flush(timeout_ms);
  if (const int left = producer_->outq_len(); left > 0) {
    spdlog::warn(
        "{} rejected notice(s) not delivered to {} within {} ms; the next start sends them "
        "again (the ledger records the rejections in any case)",
        left, topic_, timeout_ms);
    // Their delivery reports (ERR__PURGE_*) count them as failed.
    producer_->purge(RdKafka::Producer::PURGE_QUEUE | RdKafka::Producer::PURGE_INFLIGHT);
    producer_->poll(0);
  }
}

uint64_t RejectedNotifier::ConfirmedThrough() const {
  uint64_t through = sent_through_;
  if (!in_flight_.empty()) through = std::min(through, *in_flight_.begin() - 1);
  if (!undelivered_.empty()) through = std::min(through, *undelivered_.begin() - 1);
  return through;
}

void RejectedNotifier::dr_cb(RdKafka::Message& message) {
  const bool ok = message.err() == RdKafka::ERR_NO_ERROR;
  metrics_.OnRejectedNotice(ok);
  const uint64_t seq = reinterpret_cast<uintptr_t>(message.msg_opaque());
  in_flight_.erase(seq);
  if (!ok) undelivered_.insert(seq);
  if (!ok && ++failed_logged_ <= kMaxFailuresLogged) {
    spdlog::warn("rejected notice for ledger seq {} not delivered to {}: {}",
                 reinterpret_cast<uintptr_t>(message.msg_opaque()), topic_, message.errstr());
  }
}

void RejectedNotifier::event_cb(RdKafka::Event& event) {
  // A notice is not worth stopping the ledger for: even a fatal producer error is only logged
  // (later notices then fail delivery and are counted).
  if (event.type() == RdKafka::Event::EVENT_ERROR) {
    spdlog::warn("kafka (rejected topic producer): {} ({})", event.str(),
                 RdKafka::err2str(event.err()));
  } else if (event.type() == RdKafka::Event::EVENT_LOG &&
             event.severity() <= RdKafka::Event::EVENT_SEVERITY_WARNING) {
    spdlog::warn("kafka (rejected topic producer): {} {}", event.fac(), event.str());
  }
}

}  // namespace gpuledger::ingest
