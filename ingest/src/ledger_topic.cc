#include "ingest/ledger_topic.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafkacpp.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "gpuledger/v1/ledger.pb.h"
#include "ingest/publisher.h"
#include "kafka_log.h"
#include "kafka_status.h"

namespace gpuledger::ingest {

namespace v1 = gpuledger::v1;

namespace {

// Ledger commits can be large (a group commit of 5,000 entries is a few MiB).
constexpr int kMaxCommitBytes = 64 << 20;
constexpr char kMaxCommitBytesText[] = "67108864";
// How many publish timeouts a commit may take when the broker is away (see PublishBytes).
constexpr int64_t kRetryTimeouts = 4;

std::string TransactionalId(const LedgerTopicOptions& options) {
  return options.transactional_id.empty() ? absl::StrCat("gpuledger-ledger:", options.topic)
                                          : options.transactional_id;
}

bool IsFenced(RdKafka::ErrorCode code) {
  return code == RdKafka::ERR__FENCED || code == RdKafka::ERR_PRODUCER_FENCED ||
         code == RdKafka::ERR_INVALID_PRODUCER_EPOCH;
}

absl::Status Fenced(absl::string_view msg) {
  return absl::FailedPreconditionError(absl::StrCat(
      msg,
      ": another node took over this ledger topic (fenced); this node must not write. Run it "
      "as a standby (`gpuledger ledger follow`) and see docs/RELIABILITY.md"));
}

absl::Status FromKafkaError(const RdKafka::Error& error, absl::string_view what) {
  const std::string msg = absl::StrCat(what, ": ", error.str());
  if (IsFenced(error.code())) return Fenced(msg);
  if (error.is_retriable()) return absl::UnavailableError(msg);
  const absl::Status s = FromKafka(error.code(), what);
  return s.ok() ? absl::InternalError(msg) : absl::Status(s.code(), msg);
}

// Keeps the offset of the last delivered message, or its error.
class DeliveryOffset : public RdKafka::DeliveryReportCb {
 public:
  void dr_cb(RdKafka::Message& message) override {
    if (message.err() != RdKafka::ERR_NO_ERROR) {
      error =
          FromKafka(message.err(), absl::StrCat("publishing a commit to ", message.topic_name()));
      return;
    }
    offset = message.offset();
  }
  int64_t offset = -1;
  absl::Status error;
};

// The writer's side of the ledger topic: one transaction per commit.
class KafkaCommitLog : public ledger::CommitLog {
 public:
  KafkaCommitLog(LedgerTopicOptions options, std::unique_ptr<RdKafka::Producer> producer,
                 std::unique_ptr<DeliveryOffset> delivery, std::unique_ptr<LogForwarder> log,
                 uint64_t epoch, bool takeover)
      : options_(std::move(options)),
        delivery_(std::move(delivery)),
        log_(std::move(log)),
        producer_(std::move(producer)),
        epoch_(epoch),
        takeover_(takeover) {}
  ~KafkaCommitLog() override {
    if (producer_) producer_->flush(static_cast<int>(options_.timeout_ms));
  }

  absl::StatusOr<int64_t> Publish(v1::LedgerCommit* commit) override {
    if (failed_) {
      return absl::FailedPreconditionError(
          "an earlier commit could not be published; restart to find where the topic stands");
    }
    commit->set_epoch(epoch_);
    commit->set_writer(options_.node);
    commit->set_takeover(takeover_ && first_);
    std::string bytes;
    if (!commit->SerializeToString(&bytes) || bytes.size() > static_cast<size_t>(kMaxCommitBytes)) {
      failed_ = true;
      return absl::ResourceExhaustedError(
          absl::StrCat("a commit of ", commit->entries_size(), " entries is ", bytes.size(),
                       " bytes, more than the ledger topic takes (", kMaxCommitBytes,
                       "); lower --batch-max-messages"));
    }
    absl::StatusOr<int64_t> offset = PublishBytes(bytes);
    if (!offset.ok()) {
      failed_ = true;
      return offset.status();
    }
    first_ = false;
    return offset;
  }

 private:
  // One transaction holding the commit. A broker that is away for a while (a restart) is
  // waited for: a commit that cannot be ended is retried, an aborted transaction is made again,
  // for up to kRetryTimeouts publish timeouts. Fenced or fatal: at once.
  absl::StatusOr<int64_t> PublishBytes(const std::string& bytes) {
    const int timeout = static_cast<int>(options_.timeout_ms);
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::milliseconds(options_.timeout_ms * kRetryTimeouts);
    for (int attempt = 1;; ++attempt) {
      absl::Status st;
      if (std::unique_ptr<RdKafka::Error> e(producer_->begin_transaction()); e) {
        st = FromKafkaError(*e, "begin a ledger topic transaction");
      }
      if (st.ok()) {
        delivery_->offset = -1;
        delivery_->error = absl::OkStatus();
        const RdKafka::ErrorCode code = producer_->produce(
            options_.topic, 0, RdKafka::Producer::RK_MSG_COPY, const_cast<char*>(bytes.data()),
            bytes.size(), nullptr, 0, 0, nullptr);
        st = FromKafka(code, absl::StrCat("publish a commit to ", options_.topic));
      }
      // Delivered (its offset known) before the transaction commits.
      if (st.ok()) producer_->flush(timeout);
      if (st.ok()) st = delivery_->error;
      if (st.ok() && delivery_->offset < 0) {
        st = absl::UnavailableError(absl::StrCat("a commit to ", options_.topic,
                                                 " was not acknowledged within ", timeout, " ms"));
      }
      while (st.ok()) {
        std::unique_ptr<RdKafka::Error> e(producer_->commit_transaction(timeout));
        if (!e) return delivery_->offset;
        st = FromKafkaError(*e, "commit a ledger topic transaction");
        // Retriable: the outcome is not known yet; asking again is how librdkafka learns it.
        if (e->is_retriable() && std::chrono::steady_clock::now() < deadline) {
          spdlog::warn("ledger topic {}: {}; trying again", options_.topic,
                       std::string(st.message()));
          st = absl::OkStatus();
          continue;
        }
        if (!e->txn_requires_abort()) return st;
      }
      // A fatal error (the producer was fenced) purges the message: that is what to say.
      std::string fatal_text;
      if (const RdKafka::ErrorCode fatal = producer_->fatal_error(fatal_text);
          fatal != RdKafka::ERR_NO_ERROR) {
        const std::string msg =
            absl::StrCat("publish a commit to ", options_.topic, ": ", fatal_text);
        return IsFenced(fatal) ? Fenced(msg) : FromKafka(fatal, msg);
      }
      // Not published: the transaction's message is never read by standbys (read_committed).
      std::unique_ptr<RdKafka::Error> aborted(producer_->abort_transaction(timeout));
      if (aborted) {
        spdlog::warn("ledger topic {}: aborting the transaction failed: {}", options_.topic,
                     aborted->str());
        return st;
      }
      if (std::chrono::steady_clock::now() >= deadline) return st;
      spdlog::warn("ledger topic {}: {} (attempt {}); publishing the commit again", options_.topic,
                   std::string(st.message()), attempt);
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  }

  LedgerTopicOptions options_;
  std::unique_ptr<DeliveryOffset> delivery_;
  std::unique_ptr<LogForwarder> log_;
  std::unique_ptr<RdKafka::Producer> producer_;
  uint64_t epoch_;
  bool takeover_;
  bool first_ = true;
  bool failed_ = false;
};

absl::StatusOr<std::unique_ptr<RdKafka::KafkaConsumer>> NewFollower(
    const LedgerTopicOptions& options, LogForwarder* log) {
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "bootstrap.servers", options.brokers));
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "client.id", "gpuledger-ledger-follow"));
  // Positions are kept in the ledger (meta/replication), never in a group.
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "group.id", "gpuledger-ledger-follow"));
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "enable.auto.commit", "false"));
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "enable.auto.offset.store", "false"));
  // Only committed transactions: a commit whose writer crashed or was fenced before it
  // committed is never applied.
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "isolation.level", "read_committed"));
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "enable.partition.eof", "true"));
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "fetch.max.bytes", kMaxCommitBytesText));
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "max.partition.fetch.bytes", kMaxCommitBytesText));
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "receive.message.max.bytes",
                                    std::to_string(kMaxCommitBytes + 1'000'000)));
  GPULEDGER_RETURN_IF_ERROR(ApplyKafkaConfig(conf.get(), options.kafka_config));
  std::string error;
  if (conf->set("event_cb", static_cast<RdKafka::EventCb*>(log), error) != RdKafka::Conf::CONF_OK) {
    return absl::InternalError(error);
  }
  std::unique_ptr<RdKafka::KafkaConsumer> consumer(
      RdKafka::KafkaConsumer::create(conf.get(), error));
  if (!consumer) {
    return absl::InvalidArgumentError(absl::StrCat("Kafka consumer for the ledger topic: ", error));
  }
  return consumer;
}

absl::Status CheckWriter(const LedgerTopicOptions& options, const ledger::Ledger& ledger) {
  const v1::ReplicationState state = ledger.replication();
  if (state.epoch() == 0 || state.writer() == options.node) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the ledger topic ", options.topic, " is written by '", state.writer(), "' (epoch ",
      state.epoch(), "), not by this node '", options.node,
      "': this node was fenced and must not write. Run it as a standby (`gpuledger ledger "
      "follow`), or make it the writer with `gpuledger ledger promote` (which fences '",
      state.writer(), "'); see docs/RELIABILITY.md"));
}

}  // namespace

absl::Status EnsureLedgerTopic(const LedgerTopicOptions& options) {
  return EnsureTopics(options.brokers, options.kafka_config, {options.topic}, 1,
                      {{"retention.ms", "-1"},
                       {"retention.bytes", "-1"},
                       {"cleanup.policy", "delete"},
                       {"max.message.bytes", kMaxCommitBytesText}});
}

absl::StatusOr<uint64_t> FollowLedgerTopic(
    const LedgerTopicOptions& options, ledger::Ledger& ledger, const std::atomic<bool>& stop,
    bool until_end, const std::function<void(const v1::LedgerCommit&)>& on_commit) {
  LogForwarder log;  // outlives the consumer
  GPULEDGER_ASSIGN_OR_RETURN(std::unique_ptr<RdKafka::KafkaConsumer> consumer,
                             NewFollower(options, &log));
  const int64_t start = ledger.replication().next_offset();
  std::vector<RdKafka::TopicPartition*> assignment = {RdKafka::TopicPartition::create(
      options.topic, 0, start > 0 ? start : RdKafka::Topic::OFFSET_BEGINNING)};
  RdKafka::ErrorCode code = consumer->assign(assignment);
  RdKafka::TopicPartition::destroy(assignment);
  GPULEDGER_RETURN_IF_ERROR(FromKafka(code, absl::StrCat("read the ledger topic ", options.topic)));
  uint64_t applied = 0;
  absl::Status status;
  auto last_progress = std::chrono::steady_clock::now();
  auto quiet_since = std::chrono::steady_clock::now();
  while (!stop.load()) {
    std::unique_ptr<RdKafka::Message> m(consumer->consume(200));
    if (m->err() == RdKafka::ERR__TIMED_OUT) {
      // A topic with nothing in it yet answers nothing at all until it exists.
      if (until_end && std::chrono::steady_clock::now() - quiet_since >
                           std::chrono::milliseconds(options.timeout_ms)) {
        status = absl::UnavailableError(absl::StrCat("the ledger topic ", options.topic,
                                                     " gave no answer within ", options.timeout_ms,
                                                     " ms; is the broker up?"));
        break;
      }
      continue;
    }
    if (m->err() == RdKafka::ERR__TRANSPORT || m->err() == RdKafka::ERR__ALL_BROKERS_DOWN ||
        m->err() == RdKafka::ERR__RESOLVE) {
      // librdkafka reconnects by itself; a standby waits for the broker.
      spdlog::warn("ledger topic {}: {}; waiting for the broker", options.topic, m->errstr());
      continue;
    }
    quiet_since = std::chrono::steady_clock::now();
    if (m->err() == RdKafka::ERR__PARTITION_EOF) {
      if (until_end) break;
      continue;
    }
    if (m->err() != RdKafka::ERR_NO_ERROR) {
      status = FromKafka(m->err(), absl::StrCat("read the ledger topic ", options.topic));
      break;
    }
    v1::LedgerCommit commit;
    if (!commit.ParseFromArray(m->payload(), static_cast<int>(m->len()))) {
      status = absl::DataLossError(absl::StrCat("the ledger topic ", options.topic,
                                                " holds a message at offset ", m->offset(),
                                                " that is not a LedgerCommit"));
      break;
    }
    status = ledger.ApplyCommit(commit, m->offset());
    if (!status.ok()) break;
    ++applied;
    if (on_commit) on_commit(commit);
    const auto now = std::chrono::steady_clock::now();
    if (now - last_progress > std::chrono::seconds(2)) {
      last_progress = now;
      spdlog::info("ledger topic {}: applied through offset {}, ledger head seq {}", options.topic,
                   m->offset(), ledger.head().seq);
    }
  }
  consumer->close();
  if (!status.ok()) return status;
  return applied;
}

absl::Status StartLedgerTopicWriter(const LedgerTopicOptions& options, ledger::Ledger& ledger,
                                    bool takeover) {
  if (options.node.empty()) {
    return absl::InvalidArgumentError("a ledger topic's writer needs a node name (--node)");
  }
  GPULEDGER_RETURN_IF_ERROR(EnsureLedgerTopic(options));
  const std::atomic<bool> never{false};
  // What the topic holds beyond this ledger: commits this node published before it crashed,
  // or, on a standby being promoted, the old writer's last ones.
  GPULEDGER_ASSIGN_OR_RETURN(uint64_t applied, FollowLedgerTopic(options, ledger, never, true));
  if (!takeover) GPULEDGER_RETURN_IF_ERROR(CheckWriter(options, ledger));

  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "bootstrap.servers", options.brokers));
  GPULEDGER_RETURN_IF_ERROR(
      SetConf(conf.get(), "client.id", absl::StrCat("gpuledger-ledger-writer-", options.node)));
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "transactional.id", TransactionalId(options)));
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "acks", "all"));
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "compression.type", "lz4"));
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "linger.ms", "0"));
  GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "message.max.bytes", kMaxCommitBytesText));
  GPULEDGER_RETURN_IF_ERROR(
      SetConf(conf.get(), "transaction.timeout.ms", std::to_string(options.timeout_ms * 2)));
  auto delivery = std::make_unique<DeliveryOffset>();
  auto log = std::make_unique<LogForwarder>();
  std::string error;
  if (conf->set("dr_cb", static_cast<RdKafka::DeliveryReportCb*>(delivery.get()), error) !=
          RdKafka::Conf::CONF_OK ||
      conf->set("event_cb", static_cast<RdKafka::EventCb*>(log.get()), error) !=
          RdKafka::Conf::CONF_OK) {
    return absl::InternalError(error);
  }
  GPULEDGER_RETURN_IF_ERROR(ApplyKafkaConfig(conf.get(), options.kafka_config));
  std::unique_ptr<RdKafka::Producer> producer(RdKafka::Producer::create(conf.get(), error));
  if (!producer) {
    return absl::InvalidArgumentError(absl::StrCat("Kafka producer for the ledger topic: ", error));
  }
  // Fences every earlier producer of this transactional id (the old writer, or this node before
  // it crashed) and aborts its open transaction: nothing more of theirs reaches the topic.
  if (std::unique_ptr<RdKafka::Error> e(
          producer->init_transactions(static_cast<int>(options.timeout_ms)));
      e) {
    return FromKafkaError(*e, absl::StrCat("take the writer's place on ", options.topic));
  }
  // What the fenced writer committed before it was fenced.
  GPULEDGER_ASSIGN_OR_RETURN(uint64_t more, FollowLedgerTopic(options, ledger, never, true));
  applied += more;
  if (!takeover) GPULEDGER_RETURN_IF_ERROR(CheckWriter(options, ledger));
  const v1::ReplicationState state = ledger.replication();
  const bool new_epoch = takeover || state.epoch() == 0;
  const uint64_t epoch = new_epoch ? state.epoch() + 1 : state.epoch();
  auto commit_log = std::make_shared<KafkaCommitLog>(
      options, std::move(producer), std::move(delivery), std::move(log), epoch, new_epoch);
  GPULEDGER_RETURN_IF_ERROR(ledger.StartPublishing(commit_log));
  spdlog::info(
      "ledger topic {}: node '{}' writes at epoch {}{} (applied {} commits from the topic first; "
      "ledger head seq {})",
      options.topic, options.node, epoch,
      takeover && state.epoch() > 0 ? absl::StrCat(", taking over from '", state.writer(), "'")
                                    : std::string(),
      applied, ledger.head().seq);
  return absl::OkStatus();
}

}  // namespace gpuledger::ingest
