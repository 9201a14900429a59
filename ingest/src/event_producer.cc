// EventProducer: one idempotent librdkafka producer shared by every HTTP request, with a thread
// that polls for delivery reports and one that asks the cluster for metadata now and then (the
// readiness of the gateway).
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafkacpp.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "ingest/gateway.h"
#include "kafka_status.h"

namespace gpuledger::ingest {

namespace {

// One request's messages; freed by whoever settles its last message.
struct Batch {
  std::vector<Delivery> deliveries;
  std::vector<std::pair<Batch*, size_t>> refs;  // each message's opaque: (batch, index)
  std::atomic<size_t> pending{0};
  EventProducer::Done done;

  // Counts one message (or the producer's own guard) as settled.
  void Settle() {
    if (pending.fetch_sub(1) == 1) {
      done(std::move(deliveries));
      delete this;
    }
  }
};

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct EventProducer::Impl : public RdKafka::DeliveryReportCb, public RdKafka::EventCb {
  EventProducerOptions options;
  std::unique_ptr<RdKafka::Producer> producer;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> last_metadata_ok_ms{-1};
  std::thread poller;
  std::thread prober;
  std::mutex mu;
  std::condition_variable wake;
  // The topics ensured to exist, each with its handle (a produce by name looks the topic up
  // and takes a reference every time). Guarded by mu; a handle lives as long as the producer.
  std::map<std::string, std::unique_ptr<RdKafka::Topic>> topics;

  void dr_cb(RdKafka::Message& m) override {
    auto* ref = static_cast<std::pair<Batch*, size_t>*>(m.msg_opaque());
    Delivery& d = ref->first->deliveries[ref->second];
    if (m.err() == RdKafka::ERR_NO_ERROR) {
      d.partition = m.partition();
      d.offset = m.offset();
    } else {
      d.status = FromKafka(m.err(), absl::StrCat("producing to ", m.topic_name()));
    }
    ref->first->Settle();
  }

  void event_cb(RdKafka::Event& event) override {
    if (event.type() == RdKafka::Event::EVENT_ERROR) {
      spdlog::warn("kafka (gateway): {} ({})", event.str(), RdKafka::err2str(event.err()));
    } else if (event.type() == RdKafka::Event::EVENT_LOG &&
               event.severity() <= RdKafka::Event::EVENT_SEVERITY_ERROR) {
      spdlog::warn("kafka (gateway): {} {}", event.fac(), event.str());
    }
  }

  void Poll() {
    while (!stop.load()) producer->poll(50);
  }

  void Probe() {
    while (!stop.load()) {
      RdKafka::Metadata* raw = nullptr;
      if (producer->metadata(false, nullptr, &raw, 2'000) == RdKafka::ERR_NO_ERROR) {
        last_metadata_ok_ms.store(NowMs());
      }
      delete raw;
      std::unique_lock<std::mutex> lock(mu);
      wake.wait_for(lock, std::chrono::seconds(2), [&] { return stop.load(); });
    }
  }
};

EventProducer::EventProducer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

EventProducer::~EventProducer() {
  // Waits for what is in flight (their requests are being answered), then stops the threads.
  impl_->producer->flush(impl_->options.delivery_timeout_ms);
  impl_->stop.store(true);
  impl_->wake.notify_all();
  impl_->poller.join();
  impl_->prober.join();
  impl_->producer->poll(0);
}

absl::StatusOr<std::unique_ptr<EventProducer>> EventProducer::Create(
    const EventProducerOptions& options) {
  if (options.brokers.empty()) return absl::InvalidArgumentError("no Kafka brokers given");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  const std::pair<const char*, std::string> settings[] = {
      {"bootstrap.servers", options.brokers},
      {"client.id", "gpuledger-gateway"},
      {"enable.idempotence", "true"},
      {"acks", "all"},
      {"linger.ms", absl::StrCat(options.linger_ms)},
      {"message.timeout.ms", absl::StrCat(options.delivery_timeout_ms)},
      {"compression.type", "lz4"},
  };
  for (const auto& [key, value] : settings) {
    GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), key, value));
  }
  GPULEDGER_RETURN_IF_ERROR(ApplyKafkaConfig(conf.get(), options.kafka_config));
  std::string err;
  if (conf->set("dr_cb", static_cast<RdKafka::DeliveryReportCb*>(impl.get()), err) !=
          RdKafka::Conf::CONF_OK ||
      conf->set("event_cb", static_cast<RdKafka::EventCb*>(impl.get()), err) !=
          RdKafka::Conf::CONF_OK) {
    return absl::InternalError(absl::StrCat("Kafka callbacks: ", err));
  }
  impl->producer.reset(RdKafka::Producer::create(conf.get(), err));
  if (!impl->producer) return absl::InvalidArgumentError(absl::StrCat("Kafka producer: ", err));
  Impl* raw = impl.get();
  impl->poller = std::thread([raw] { raw->Poll(); });
  impl->prober = std::thread([raw] { raw->Probe(); });
  return std::unique_ptr<EventProducer>(new EventProducer(std::move(impl)));
}

bool EventProducer::BrokerReachable() const {
  const int64_t last = impl_->last_metadata_ok_ms.load();
  return last >= 0 && NowMs() - last < 10'000;
}

void EventProducer::Produce(const std::string& topic_name, const std::vector<EncodedEvent>& events,
                            Done done) {
  // The CSP's topic is created (with log-append time) the first time it is written here.
  RdKafka::Topic* topic = nullptr;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (auto it = impl_->topics.find(topic_name); it != impl_->topics.end()) {
      topic = it->second.get();  // std::map nodes do not move
    }
  }
  absl::Status ensured = absl::OkStatus();
  if (topic == nullptr) {
    ensured = EnsureTopics(impl_->options.brokers, impl_->options.kafka_config, {topic_name}, 3);
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (auto it = impl_->topics.find(topic_name); it != impl_->topics.end()) {
      topic = it->second.get();
    } else if (ensured.ok()) {
      std::string err;
      std::unique_ptr<RdKafka::Topic> handle(
          RdKafka::Topic::create(impl_->producer.get(), topic_name, nullptr, err));
      if (handle == nullptr) {
        ensured =
            absl::InternalError(absl::StrCat("Kafka topic handle for ", topic_name, ": ", err));
      } else {
        topic = impl_->topics.emplace(topic_name, std::move(handle)).first->second.get();
      }
    }
  }
  auto* batch = new Batch;
  batch->done = std::move(done);
  batch->deliveries.resize(events.size());
  batch->refs.reserve(events.size());
  for (size_t i = 0; i < events.size(); ++i) batch->refs.emplace_back(batch, i);
  batch->pending.store(events.size() + 1);  // + 1: this call's own guard
  if (topic == nullptr) {
    for (size_t i = 0; i < events.size(); ++i) {
      batch->deliveries[i].status = ensured;
      batch->Settle();
    }
    batch->Settle();
    return;
  }
  // Queued at once with rd_kafka_produce_batch: the topic locked and the clock read once rather
  // than once a message (the C++ API queues one at a time). The delivery reports come to dr_cb
  // as for any message; a message refused here has none.
  std::vector<rd_kafka_message_t> run(events.size(), rd_kafka_message_t{});
  for (size_t i = 0; i < events.size(); ++i) {
    const EncodedEvent& e = events[i];
    rd_kafka_message_t& m = run[i];
    m.payload = const_cast<char*>(e.value.data());
    m.len = e.value.size();
    m.key = const_cast<char*>(e.key.data());
    m.key_len = e.key.size();
    m._private = &batch->refs[i];
  }
  rd_kafka_produce_batch(topic->c_ptr(), RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, run.data(),
                         static_cast<int>(run.size()));
  for (size_t i = 0; i < events.size(); ++i) {
    const rd_kafka_resp_err_t err = run[i].err;
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) continue;
    batch->deliveries[i].status =
        FromKafka(static_cast<RdKafka::ErrorCode>(err), absl::StrCat("queueing for ", topic_name));
    batch->Settle();
  }
  batch->Settle();
}

}  // namespace gpuledger::ingest
