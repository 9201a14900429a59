#include "ingest/publisher.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafkacpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/topics.h"
#include "json_message.h"
#include "kafka_log.h"
#include "kafka_status.h"

namespace gpuledger::ingest {

namespace v1 = gpuledger::v1;

namespace {

constexpr size_t kMaxReportedBadLines = 20;

absl::StatusOr<EncodedEvent> EncodeUsage(const std::string& line, const TopicNames& topics) {
  v1::UsageEvent e;
  if (absl::Status st = MessageFromJsonText(line, &e); !st.ok()) return st;
  if (e.csp_id().empty()) return absl::InvalidArgumentError("cspId is required to pick the topic");
  return EncodeUsageEvent(e, topics);
}

absl::StatusOr<EncodedEvent> EncodeRegistry(const std::string& line, const TopicNames& topics) {
  v1::RegistryEvent e;
  if (absl::Status st = MessageFromJsonText(line, &e); !st.ok()) return st;
  return EncodeRegistryEvent(e, topics);
}

}  // namespace

std::string UsageEventKey(v1::UsageEvent::BodyCase body, std::string_view allocation_id,
                          v1::Program program, v1::GpuModel gpu_model, std::string_view event_id) {
  const auto pool = [&] {
    return absl::StrCat("pool:", v1::Program_Name(program), ":", v1::GpuModel_Name(gpu_model));
  };
  // Keyed by allocation so that one allocation's events stay in order on one partition.
  switch (body) {
    case v1::UsageEvent::kUsage:
    case v1::UsageEvent::kCorrection:  // the target's: same partition, read after it
      return std::string(allocation_id);
    case v1::UsageEvent::kOutage:
    case v1::UsageEvent::kOutageWithdrawal:  // keyed as the outage: read after it
      return allocation_id.empty() ? pool() : std::string(allocation_id);
    case v1::UsageEvent::kOwnUse:
      return pool();
    case v1::UsageEvent::kCloseMarker:  // written to a chosen partition, not by key
    case v1::UsageEvent::BODY_NOT_SET:
      break;
  }
  return std::string(event_id);
}

absl::StatusOr<EncodedEvent> EncodeUsageEvent(const v1::UsageEvent& e, const TopicNames& topics) {
  EncodedEvent out;
  out.topic = topics.Usage(e.csp_id());
  switch (e.body_case()) {
    case v1::UsageEvent::kUsage:
      out.key = UsageEventKey(e.body_case(), e.usage().allocation_id(), {}, {}, e.event_id());
      break;
    case v1::UsageEvent::kCorrection:
      out.key = UsageEventKey(e.body_case(), e.correction().allocation_id(), {}, {}, e.event_id());
      break;
    case v1::UsageEvent::kOutage:
      out.key = UsageEventKey(e.body_case(), e.outage().allocation_id(), e.outage().program(),
                              e.outage().gpu_model(), e.event_id());
      break;
    case v1::UsageEvent::kOwnUse:
      out.key = UsageEventKey(e.body_case(), "", e.own_use().program(), e.own_use().gpu_model(),
                              e.event_id());
      break;
    case v1::UsageEvent::kOutageWithdrawal:
      out.key = UsageEventKey(e.body_case(), e.outage_withdrawal().allocation_id(),
                              e.outage_withdrawal().program(), e.outage_withdrawal().gpu_model(),
                              e.event_id());
      break;
    case v1::UsageEvent::kCloseMarker:
    case v1::UsageEvent::BODY_NOT_SET:
      out.key = UsageEventKey(e.body_case(), "", {}, {}, e.event_id());
      break;
  }
  if (!e.SerializeToString(&out.value)) return absl::InternalError("serialize");
  return out;
}

absl::StatusOr<EncodedEvent> EncodeRegistryEvent(const v1::RegistryEvent& e,
                                                 const TopicNames& topics) {
  EncodedEvent out;
  out.topic = topics.Registry();
  // The registry topic is read in one order by everyone; its key only spreads load.
  out.key = e.event_id();
  if (!e.SerializeToString(&out.value)) return absl::InternalError("serialize");
  return out;
}

namespace {

// Delivery reports arrive on the thread that calls poll()/flush(): the publishing thread.
class DeliveryCounter : public RdKafka::DeliveryReportCb {
 public:
  void dr_cb(RdKafka::Message& message) override {
    if (message.err() == RdKafka::ERR_NO_ERROR) {
      ++delivered;
    } else {
      if (++failed == 1) {
        first_error = FromKafka(message.err(), absl::StrCat("producing to ", message.topic_name()));
      }
    }
  }
  // The first failure, as the status of the whole publication.
  absl::Status Failure() const {
    return absl::Status(
        first_error.code(),
        absl::StrCat(failed, " message(s) failed delivery: ", first_error.message()));
  }
  uint64_t delivered = 0;
  uint64_t failed = 0;
  absl::Status first_error;
};

}  // namespace

absl::StatusOr<std::vector<EncodedEvent>> EncodeJsonLines(std::istream& in, EventKind kind,
                                                          const PublishOptions& options) {
  const size_t max_line_bytes = options.max_line_bytes;
  std::vector<EncodedEvent> out;
  std::vector<std::string> bad;
  uint64_t bad_count = 0;
  std::string line;
  for (uint64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    absl::StatusOr<EncodedEvent> e =
        line.size() > max_line_bytes
            ? absl::InvalidArgumentError(absl::StrCat("longer than ", max_line_bytes, " bytes"))
            : (kind == EventKind::kUsage ? EncodeUsage(line, options.topics)
                                         : EncodeRegistry(line, options.topics));
    if (e.ok()) {
      out.push_back(std::move(*e));
    } else if (++bad_count <= kMaxReportedBadLines) {
      bad.push_back(absl::StrCat("line ", number, ": ", e.status().message()));
    }
  }
  if (bad_count > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        bad_count, " bad line(s), nothing published:\n  ", absl::StrJoin(bad, "\n  "),
        bad_count > bad.size() ? absl::StrCat("\n  ... and ", bad_count - bad.size(), " more")
                               : std::string()));
  }
  return out;
}

namespace {

// Per-topic outcome of CreateTopics: created, already there, or not ours to create.
absl::Status CheckCreated(const rd_kafka_topic_result_t* result) {
  const std::string name = rd_kafka_topic_result_name(result);
  switch (const rd_kafka_resp_err_t code = rd_kafka_topic_result_error(result)) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
    case RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS:
      return absl::OkStatus();
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
      // A CSP's principal may write its topic but not create it: the administrator does.
      spdlog::info(
          "not authorized to create topic {} ({}): taking it to exist, created by the cluster "
          "administrator; producing to it fails if it does not exist or is not ours to write",
          name, rd_kafka_err2name(code));
      return absl::OkStatus();
    default:
      return FromKafka(static_cast<RdKafka::ErrorCode>(code), absl::StrCat("create topic ", name));
  }
}

}  // namespace

absl::Status EnsureTopics(const std::string& brokers, const std::vector<std::string>& topics,
                          int partitions) {
  return EnsureTopics(brokers, KafkaConfig{}, topics, partitions);
}

absl::Status EnsureTopics(const std::string& brokers, const KafkaConfig& kafka_config,
                          const std::vector<std::string>& topics, int partitions,
                          const std::vector<std::pair<std::string, std::string>>& topic_config) {
  if (topics.empty()) return absl::OkStatus();
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "bootstrap.servers", brokers));
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "client.id", "gpuledger-topics"));
  GPULEDGER_RETURN_IF_ERROR(ApplyKafkaConfig(conf.get(), kafka_config));
  LogForwarder log_forwarder;
  std::string error;
  if (conf->set("event_cb", static_cast<RdKafka::EventCb*>(&log_forwarder), error) !=
      RdKafka::Conf::CONF_OK) {
    return absl::InternalError(error);
  }
  std::unique_ptr<RdKafka::Producer> admin(RdKafka::Producer::create(conf.get(), error));
  if (!admin) return absl::InvalidArgumentError(absl::StrCat("Kafka admin client: ", error));
  rd_kafka_t* rk = admin->c_ptr();
  char err[512];
  std::vector<rd_kafka_NewTopic_t*> new_topics;
  for (const std::string& t : topics) {
    rd_kafka_NewTopic_t* topic = rd_kafka_NewTopic_new(t.c_str(), partitions, -1, err, sizeof err);
    // The broker stamps every message with its own clock: time checks never rest on a time a
    // producer chose (docs/OPERATIONS.md, "Topics").
    rd_kafka_NewTopic_set_config(topic, "message.timestamp.type", "LogAppendTime");
    for (const auto& [key, value] : topic_config) {
      rd_kafka_NewTopic_set_config(topic, key.c_str(), value.c_str());
    }
    new_topics.push_back(topic);
  }
  rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
  rd_kafka_AdminOptions_t* opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
  rd_kafka_AdminOptions_set_operation_timeout(opts, 30'000, err, sizeof err);
  rd_kafka_CreateTopics(rk, new_topics.data(), new_topics.size(), opts, queue);
  // The answer comes on `queue`; librdkafka's errors (served by poll) on the client's own.
  constexpr int kCreateTimeoutMs = 60'000;
  constexpr int kPollSliceMs = 100;
  rd_kafka_event_t* ev = nullptr;
  for (int waited_ms = 0;
       ev == nullptr && waited_ms < kCreateTimeoutMs && log_forwarder.auth_failure.ok();
       waited_ms += kPollSliceMs) {
    ev = rd_kafka_queue_poll(queue, kPollSliceMs);
    admin->poll(0);
  }
  absl::Status status;
  if (!log_forwarder.auth_failure.ok()) {
    status = log_forwarder.auth_failure;
  } else if (ev == nullptr) {
    status = absl::UnavailableError(
        absl::StrCat("creating topics on ", brokers, ": no answer within 60 s; is the broker up?"));
  } else if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    status = absl::UnavailableError(
        absl::StrCat("creating topics on ", brokers, ": ", rd_kafka_event_error_string(ev)));
  } else {
    size_t n = 0;
    const rd_kafka_topic_result_t** results =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    for (size_t i = 0; i < n && status.ok(); ++i) status = CheckCreated(results[i]);
  }
  if (ev != nullptr) rd_kafka_event_destroy(ev);
  rd_kafka_AdminOptions_destroy(opts);
  rd_kafka_queue_destroy(queue);
  rd_kafka_NewTopic_destroy_array(new_topics.data(), new_topics.size());
  return status;
}

namespace {

// Keeps the offset of each delivered close marker, by (topic, partition).
class MarkerOffsets : public RdKafka::DeliveryReportCb {
 public:
  void dr_cb(RdKafka::Message& message) override {
    if (message.err() != RdKafka::ERR_NO_ERROR) {
      if (error.ok()) {
        error = FromKafka(message.err(),
                          absl::StrCat("writing a close marker to ", message.topic_name(), "[",
                                       message.partition(), "]"));
      }
      return;
    }
    offsets[{message.topic_name(), message.partition()}] = message.offset();
  }
  std::map<std::pair<std::string, int32_t>, int64_t> offsets;
  absl::Status error;
};

}  // namespace

absl::StatusOr<std::vector<PartitionEnd>> PublishCloseMarkers(const std::string& brokers,
                                                              const KafkaConfig& kafka_config,
                                                              const TopicNames& topics,
                                                              const std::string& period,
                                                              int64_t now_ms) {
  constexpr int kTimeoutMs = 30'000;
  MarkerOffsets delivered;
  LogForwarder log_forwarder;
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  const std::pair<const char*, std::string> settings[] = {
      {"bootstrap.servers", brokers},
      {"client.id", "gpuledger-close"},
      {"enable.idempotence", "true"},
      {"acks", "all"},
  };
  for (const auto& [key, value] : settings) {
    GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), key, value));
  }
  GPULEDGER_RETURN_IF_ERROR(ApplyKafkaConfig(conf.get(), kafka_config));
  std::string error;
  if (conf->set("dr_cb", static_cast<RdKafka::DeliveryReportCb*>(&delivered), error) !=
          RdKafka::Conf::CONF_OK ||
      conf->set("event_cb", static_cast<RdKafka::EventCb*>(&log_forwarder), error) !=
          RdKafka::Conf::CONF_OK) {
    return absl::InternalError(absl::StrCat("Kafka callbacks: ", error));
  }
  std::unique_ptr<RdKafka::Producer> producer(RdKafka::Producer::create(conf.get(), error));
  if (!producer) return absl::InvalidArgumentError(absl::StrCat("Kafka producer: ", error));
  RdKafka::Metadata* raw = nullptr;
  const RdKafka::ErrorCode listed = producer->metadata(true, nullptr, &raw, kTimeoutMs);
  std::unique_ptr<RdKafka::Metadata> metadata(raw);
  if (listed != RdKafka::ERR_NO_ERROR) {
    return absl::UnavailableError(absl::StrCat("listing the topics on ", brokers, ": ",
                                               RdKafka::err2str(listed), "; is the broker up?"));
  }
  size_t sent = 0;
  for (const RdKafka::TopicMetadata* t : *metadata->topics()) {
    const std::optional<std::string> csp = topics.CspOfUsage(t->topic());
    if (!csp) continue;
    for (const RdKafka::PartitionMetadata* p : *t->partitions()) {
      v1::UsageEvent marker;
      marker.set_schema_version(1);
      marker.set_event_id(absl::StrCat("close-marker-", period, "-", now_ms, "-", p->id()));
      marker.set_csp_id(*csp);
      marker.set_producer_id("gpuledger-settle-close");
      marker.set_emitted_at_ms(now_ms);
      marker.mutable_close_marker()->set_period(period);
      const std::string value = marker.SerializeAsString();
      const RdKafka::ErrorCode err = producer->produce(
          t->topic(), p->id(), RdKafka::Producer::RK_MSG_COPY, const_cast<char*>(value.data()),
          value.size(), marker.event_id().data(), marker.event_id().size(), 0, nullptr);
      if (err != RdKafka::ERR_NO_ERROR) {
        return FromKafka(err,
                         absl::StrCat("writing a close marker to ", t->topic(), "[", p->id(), "]"));
      }
      ++sent;
    }
  }
  producer->flush(kTimeoutMs);
  GPULEDGER_RETURN_IF_ERROR(log_forwarder.auth_failure);
  GPULEDGER_RETURN_IF_ERROR(delivered.error);
  if (delivered.offsets.size() != sent) {
    return absl::DeadlineExceededError(
        absl::StrCat(sent - delivered.offsets.size(), " of ", sent,
                     " close markers were not acknowledged within ", kTimeoutMs / 1000,
                     " s; nothing was closed: run `gpuledger settle close` again"));
  }
  std::vector<PartitionEnd> out;
  for (const auto& [tp, offset] : delivered.offsets) out.push_back({tp.first, tp.second, offset});
  return out;  // sorted by topic and partition (the map's order)
}

struct Publisher::Impl {
  PublishOptions options;
  DeliveryCounter counter;
  LogForwarder log_forwarder;
  std::unique_ptr<RdKafka::Producer> producer;
  std::set<std::string> topics;
  uint64_t sent = 0;
};

Publisher::Publisher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Publisher::~Publisher() = default;

absl::StatusOr<std::unique_ptr<Publisher>> Publisher::Create(const PublishOptions& options) {
  if (options.brokers.empty()) return absl::InvalidArgumentError("no Kafka brokers given");
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  const std::pair<const char*, std::string> settings[] = {
      {"bootstrap.servers", options.brokers},
      {"client.id", "gpuledger-publish"},
      // Retries never duplicate or reorder within a partition.
      {"enable.idempotence", "true"},
      {"acks", "all"},
      {"linger.ms", "5"},
      {"compression.type", "lz4"},
  };
  for (const auto& [key, value] : settings)
    GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), key, value));
  GPULEDGER_RETURN_IF_ERROR(ApplyKafkaConfig(conf.get(), options.kafka_config));
  std::string err;
  if (conf->set("dr_cb", static_cast<RdKafka::DeliveryReportCb*>(&impl->counter), err) !=
          RdKafka::Conf::CONF_OK ||
      conf->set("event_cb", static_cast<RdKafka::EventCb*>(&impl->log_forwarder), err) !=
          RdKafka::Conf::CONF_OK) {
    return absl::InternalError(err);
  }
  impl->producer.reset(RdKafka::Producer::create(conf.get(), err));
  if (!impl->producer) return absl::InvalidArgumentError(absl::StrCat("Kafka producer: ", err));
  return std::unique_ptr<Publisher>(new Publisher(std::move(impl)));
}

absl::Status Publisher::PrepareTopics(const std::vector<std::string>& topics) {
  const PublishOptions& options = impl_->options;
  // Fail fast when no broker answers: topic creation and delivery would otherwise each wait
  // their own minute.
  // Asked in short slices, serving the client's events between them, so that credentials the
  // broker refuses are reported at once rather than after the whole wait.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(options.connect_timeout_ms);
  RdKafka::ErrorCode listed = RdKafka::ERR__TRANSPORT;
  do {
    RdKafka::Metadata* raw = nullptr;
    listed = impl_->producer->metadata(false, nullptr, &raw, 250);
    delete raw;
    impl_->producer->poll(0);
    GPULEDGER_RETURN_IF_ERROR(impl_->log_forwarder.auth_failure);
  } while (listed != RdKafka::ERR_NO_ERROR && std::chrono::steady_clock::now() < deadline);
  if (listed != RdKafka::ERR_NO_ERROR) {
    return absl::UnavailableError(
        absl::StrCat("no Kafka broker answered at ", options.brokers, " within ",
                     options.connect_timeout_ms / 1000, " s (", RdKafka::err2str(listed),
                     "): is the broker up and --brokers right? nothing was published"));
  }
  // The registry is one ordered stream (an institution before its allocations): one partition.
  std::vector<std::string> usage_topics;
  bool registry = false;
  for (const std::string& t : topics) {
    if (t == options.topics.Registry()) {
      registry = true;
    } else {
      usage_topics.push_back(t);
    }
  }
  if (registry) {
    GPULEDGER_RETURN_IF_ERROR(
        EnsureTopics(options.brokers, options.kafka_config, {options.topics.Registry()}, 1));
  }
  return EnsureTopics(options.brokers, options.kafka_config, usage_topics,
                      options.partitions_if_created);
}

absl::Status Publisher::Send(const EncodedEvent& e) {
  RdKafka::Producer* producer = impl_->producer.get();
  for (;;) {
    const RdKafka::ErrorCode code =
        producer->produce(e.topic, RdKafka::Topic::PARTITION_UA, RdKafka::Producer::RK_MSG_COPY,
                          const_cast<char*>(e.value.data()), e.value.size(), e.key.data(),
                          e.key.size(), e.create_time_ms, nullptr);
    if (code == RdKafka::ERR__QUEUE_FULL) {
      producer->poll(100);  // wait for deliveries to make room
      continue;
    }
    GPULEDGER_RETURN_IF_ERROR(FromKafka(code, absl::StrCat("producing to ", e.topic)));
    break;
  }
  impl_->topics.insert(e.topic);
  ++impl_->sent;
  producer->poll(0);
  GPULEDGER_RETURN_IF_ERROR(impl_->log_forwarder.auth_failure);
  if (impl_->counter.failed > 0) return impl_->counter.Failure();
  return absl::OkStatus();
}

uint64_t Publisher::delivered() const { return impl_->counter.delivered; }

absl::StatusOr<PublishStats> Publisher::Finish() {
  const PublishOptions& options = impl_->options;
  RdKafka::Producer* producer = impl_->producer.get();
  // Flushed in slices, so that refused credentials end the wait at once.
  constexpr int kFlushSliceMs = 100;
  RdKafka::ErrorCode flushed = RdKafka::ERR__TIMED_OUT;
  for (int64_t waited_ms = 0; flushed != RdKafka::ERR_NO_ERROR; waited_ms += kFlushSliceMs) {
    GPULEDGER_RETURN_IF_ERROR(impl_->log_forwarder.auth_failure);
    if (waited_ms >= options.flush_timeout_ms) {
      return absl::UnavailableError(absl::StrCat(
          producer->outq_len(), " message(s) not acknowledged within ", options.flush_timeout_ms,
          " ms (", RdKafka::err2str(flushed), "); is the broker at ", options.brokers, " up?"));
    }
    flushed = producer->flush(kFlushSliceMs);
  }
  if (impl_->counter.failed > 0) return impl_->counter.Failure();
  PublishStats stats;
  stats.lines = impl_->sent;
  stats.published = impl_->counter.delivered;
  stats.topics.assign(impl_->topics.begin(), impl_->topics.end());
  return stats;
}

absl::StatusOr<PublishStats> Publish(const std::vector<EncodedEvent>& events,
                                     const PublishOptions& options) {
  GPULEDGER_ASSIGN_OR_RETURN(std::unique_ptr<Publisher> publisher, Publisher::Create(options));
  std::set<std::string> topics;
  for (const auto& e : events) topics.insert(e.topic);
  GPULEDGER_RETURN_IF_ERROR(
      publisher->PrepareTopics(std::vector<std::string>(topics.begin(), topics.end())));
  for (const EncodedEvent& e : events) GPULEDGER_RETURN_IF_ERROR(publisher->Send(e));
  return publisher->Finish();
}

}  // namespace gpuledger::ingest
