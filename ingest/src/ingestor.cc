#include "ingest/ingestor.h"

#include <librdkafka/rdkafkacpp.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/limits.h"
#include "base/process_memory.h"
#include "base/status.h"
#include "decode_ahead.h"
#include "gpuledger/v1/registry.pb.h"
#include "ingest/limits.h"
#include "ingest/metrics.h"
#include "ingest/reasons.h"
#include "ingest/topics.h"
#include "ingest/validator.h"
#include "kafka_status.h"
#include "rejected_notifier.h"

namespace gpuledger::ingest {

namespace v1 = gpuledger::v1;

namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t MonotonicMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Owns the consumer and the batch in flight. Runs on the calling thread; librdkafka calls the
// rebalance and event callbacks from inside consume(), on this same thread. It consumes a window
// of messages ahead of the one it handles, which DecodeAhead decodes on the second core
// meanwhile (limits::kIngestWindowMessagesMax, kIngestWindowBytesMax).
class IngestLoop : public RdKafka::RebalanceCb, public RdKafka::EventCb {
 public:
  IngestLoop(const IngestOptions& options, ledger::Ledger& ledger, const std::atomic<bool>& stop,
             IngestMetrics& metrics)
      : options_(options),
        ledger_(ledger),
        stop_(stop),
        metrics_(metrics),
        notifier_(options.limits.topics.Rejected(), metrics),
        validator_(options.limits) {}

  absl::StatusOr<IngestStats> Run();

  void rebalance_cb(RdKafka::KafkaConsumer* consumer, RdKafka::ErrorCode err,
                    std::vector<RdKafka::TopicPartition*>& partitions) override;
  void event_cb(RdKafka::Event& event) override;

 private:
  absl::Status Setup();
  // Consumes into `*window` what the consumer has: waits up to `wait_ms` for the first result,
  // then takes what is ready, up to the window's bounds.
  void Fill(std::vector<Consumed>* window, int64_t wait_ms);
  // Handles one result of consume() (skipped when a rebalance came after it was consumed);
  // commits the batch when it is full.
  absl::Status Step(Consumed& c);
  // Handles a consumed message, or holds it while a period close waits for usage offsets.
  // `ahead`: the message decoded by DecodeAhead, or null.
  absl::Status Offer(std::unique_ptr<RdKafka::Message> msg, Consumed* ahead);
  // Decides and records `msg`; sets `*hold` instead for a close marker of a period not closed
  // yet (its partition is paused until that close is recorded; the caller keeps the message).
  absl::Status Handle(const RdKafka::Message& msg, Consumed* ahead, bool* hold);
  // A close was recorded: resumes the partitions paused behind it or behind close markers, and
  // handles what they held, in the order it came (a later close or marker may hold some again).
  absl::Status ReleaseHeld();
  // Lets partitions held at a close marker for longer than limits::kCloseMarkerHoldMsMax go on.
  absl::Status ExpireMarkers();
  // True when `msg` must wait for the pending close: any registry message after it, and usage at
  // or after the close's offset of its partition (or of a partition the close does not name).
  bool MustWait(const RdKafka::Message& msg) const;
  // Records the pending close once every usage partition it names is read up to its offset,
  // then handles the messages held behind it.
  absl::Status RecordCloseIfReached();
  bool CloseReached() const;
  std::optional<int64_t> EndReached(const ledger::TopicPartition& tp) const;
  // Records the pending close (accepted, or refused by RecordCloseIfReached) and handles what it
  // held.
  absl::Status RecordPendingClose();
  void PauseForClose(const std::string& topic, int32_t partition);
  // Appends one decided message (a consumed one or a resolution of a parked one) and counts it.
  absl::Status Record(const Decoded& decoded);
  absl::Status CheckpointIfClose(const Decoded& decoded, uint64_t seq);
  absl::Status CommitBatch();
  absl::Status StageNoticeCursor();
  absl::Status ResendUnconfirmedNotices();
  bool AllAtEnd() const;
  void ResumeUsage();
  void LogProgress(bool final);
  // Sets the memory gauges; with `log`, says them in one line too.
  void SampleMemory(bool log);
  // Warns once per topic whose messages carry the producer's CreateTime: its time checks use
  // ingest's clock, and the topic should be configured message.timestamp.type=LogAppendTime.
  void NoteProducerTimestamps(const std::string& topic);

  const IngestOptions& options_;
  ledger::Ledger& ledger_;
  const std::atomic<bool>& stop_;
  IngestMetrics& metrics_;
  RejectedNotifier notifier_;
  std::unique_ptr<RdKafka::KafkaConsumer> consumer_;
  IngestStats stats_;
  Validator validator_;
  absl::Status callback_error_;  // set by callbacks, checked by the loop
  std::set<ledger::TopicPartition> assigned_;
  std::set<ledger::TopicPartition> at_end_;
  std::set<ledger::TopicPartition> paused_;  // usage waiting for the registry's end
  // The next offset to handle per partition (from the ledger, then as messages are handled).
  std::map<ledger::TopicPartition, int64_t> next_offset_;
  // A period close read before ingest reached its usage offsets, and the messages held behind
  // it (in the order consumed) on partitions paused until it is recorded.
  std::optional<Decoded> pending_close_;
  std::map<ledger::TopicPartition, int64_t> close_offsets_;
  std::vector<std::unique_ptr<RdKafka::Message>> held_;
  std::set<ledger::TopicPartition> held_paused_;
  // Partitions held at a close marker of a period not closed yet (CloseMarker, usage.proto), and
  // since when (MonotonicMs); markers held for longer than limits::kCloseMarkerHoldMsMax, by
  // partition and offset, which hold no longer.
  std::map<ledger::TopicPartition, int64_t> marker_held_;
  std::set<std::pair<ledger::TopicPartition, int64_t>> markers_expired_;
  int64_t last_close_note_ms_ = 0;
  ledger::OffsetMap batch_offsets_;
  size_t batch_messages_ = 0;  // consumed messages in the batch in flight
  // Rejected entries of the batch in flight, republished once it is committed.
  std::vector<RejectedNotice> batch_rejected_;
  int64_t batch_opened_ms_ = 0;
  int64_t last_progress_ms_ = 0;
  int64_t last_memory_log_ms_ = 0;
  uint64_t consumed_at_last_progress_ = 0;
  bool ever_assigned_ = false;
  // Counts rebalances: what was consumed before the latest is not handled (Consumed::generation).
  uint64_t generation_ = 0;
  uint64_t staged_notice_cursor_ = 0;
  std::set<std::string> create_time_topics_;  // warned about by NoteProducerTimestamps
};

void IngestLoop::NoteProducerTimestamps(const std::string& topic) {
  if (!create_time_topics_.insert(topic).second) return;
  spdlog::warn(
      "topic {} stamps messages with the producer's CreateTime, which a CSP can set to anything: "
      "time checks of its messages use ingest's own clock instead. Configure the topic with "
      "message.timestamp.type=LogAppendTime (kafka-configs --alter --entity-type topics "
      "--entity-name {} --add-config message.timestamp.type=LogAppendTime; docs/OPERATIONS.md)",
      topic, topic);
}

// The memory line of the log comes every so often, beside the progress lines.
constexpr int64_t kMemoryLogEveryMs = 60'000;

// Ledger meta name of the rejected-notice cursor: every rejection up to it was delivered.
constexpr char kNoticeCursor[] = "rejected_notified_through";

absl::Status IngestLoop::Setup() {
  if (options_.brokers.empty()) return absl::InvalidArgumentError("no Kafka brokers given");
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  const std::pair<const char*, std::string> settings[] = {
      {"bootstrap.servers", options_.brokers},
      {"group.id", options_.group_id},
      {"session.timeout.ms", std::to_string(options_.session_timeout_ms)},
      {"client.id", "gpuledger-ingest"},
      // The ledger stores offsets; Kafka's committed offsets are written only for lag tools.
      {"enable.auto.commit", "false"},
      {"enable.auto.offset.store", "false"},
      {"auto.offset.reset", "earliest"},
      {"enable.partition.eof", "true"},
      {"isolation.level", "read_committed"},
      // Pick up a new CSP's usage topic within 10 s.
      {"topic.metadata.refresh.interval.ms", "10000"},
      // librdkafka's prefetch per partition, bounded (base/limits.h).
      {"queued.max.messages.kbytes",
       std::to_string(gpuledger::limits::kKafkaPrefetchKiBPerPartitionMax)},
      {"queued.min.messages",
       std::to_string(gpuledger::limits::kKafkaPrefetchMessagesPerPartitionMax)},
  };
  if (!options_.instance_id.empty()) {
    // Static membership: a restart gets its partitions back at once instead of waiting out
    // the dead member's session; but its cached assignment misses usage topics created since.
    GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), "group.instance.id", options_.instance_id));
  }
  for (const auto& [key, value] : settings)
    GPULEDGER_RETURN_IF_ERROR(SetConf(conf.get(), key, value));
  GPULEDGER_RETURN_IF_ERROR(ApplyKafkaConfig(conf.get(), options_.kafka_config));
  std::string err;
  if (conf->set("rebalance_cb", static_cast<RdKafka::RebalanceCb*>(this), err) !=
          RdKafka::Conf::CONF_OK ||
      conf->set("event_cb", static_cast<RdKafka::EventCb*>(this), err) != RdKafka::Conf::CONF_OK) {
    return absl::InternalError(absl::StrCat("Kafka callbacks: ", err));
  }
  consumer_.reset(RdKafka::KafkaConsumer::create(conf.get(), err));
  if (!consumer_) return absl::InvalidArgumentError(absl::StrCat("Kafka consumer: ", err));
  if (options_.publish_rejected) {
    if (options_.shards > 1) notifier_.SetShard(absl::StrCat(options_.shard, "/", options_.shards));
    GPULEDGER_RETURN_IF_ERROR(notifier_.Start(options_.brokers, options_.kafka_config));
    GPULEDGER_RETURN_IF_ERROR(ResendUnconfirmedNotices());
  }
  const TopicNames& topics = options_.limits.topics;
  return FromKafka(consumer_->subscribe({topics.Registry(), topics.UsagePattern()}), "subscribe");
}

void IngestLoop::rebalance_cb(RdKafka::KafkaConsumer* consumer, RdKafka::ErrorCode err,
                              std::vector<RdKafka::TopicPartition*>& partitions) {
  // Whatever happens, the batch in flight is made durable first: its offsets belong to the
  // partitions that may be about to move. What was consumed and not handled yet is dropped: it is
  // consumed again from the ledger's offsets once partitions are assigned again.
  if (absl::Status st = CommitBatch(); !st.ok() && callback_error_.ok()) callback_error_ = st;
  ++generation_;
  if (err == RdKafka::ERR__ASSIGN_PARTITIONS) {
    const ledger::OffsetMap stored = ledger_.Offsets();
    // A shard takes the whole registry and its own usage partitions; its group gives it every
    // partition (each shard is a group of its own).
    std::vector<RdKafka::TopicPartition*> owned;
    for (RdKafka::TopicPartition* tp : partitions) {
      if (tp->topic() == options_.limits.topics.Registry() ||
          ShardOwns(tp->partition(), options_.shard, options_.shards)) {
        owned.push_back(tp);
      }
    }
    for (RdKafka::TopicPartition* tp : owned) {
      const ledger::TopicPartition key{tp->topic(), tp->partition()};
      auto it = stored.find(key);
      tp->set_offset(it != stored.end() ? it->second : RdKafka::Topic::OFFSET_BEGINNING);
      assigned_.insert(key);
      at_end_.erase(key);
      if (it != stored.end()) next_offset_[key] = it->second;
      spdlog::info("assigned {}[{}] from offset {}", key.topic, key.partition,
                   it != stored.end() ? absl::StrCat(it->second) : std::string("beginning"));
    }
    if (owned.size() != partitions.size()) {
      spdlog::info("shard {} of {}: {} of the {} partitions assigned are this shard's",
                   options_.shard, options_.shards, owned.size(), partitions.size());
    }
    ever_assigned_ = ever_assigned_ || !owned.empty();
    consumer->assign(owned);
    // Read the registry to its end before usage: usage read ahead of the allocations it names
    // would only be parked (held in memory) and decided later.
    std::vector<RdKafka::TopicPartition*> usage;
    bool registry = false;
    for (RdKafka::TopicPartition* tp : owned) {
      if (tp->topic() == options_.limits.topics.Registry()) {
        registry = true;
      } else {
        usage.push_back(tp);
      }
    }
    if (registry && !usage.empty() && consumer->pause(usage) == RdKafka::ERR_NO_ERROR) {
      for (RdKafka::TopicPartition* tp : usage) paused_.insert({tp->topic(), tp->partition()});
      spdlog::info("reading the registry to its end before {} usage partition(s)", usage.size());
    }
  } else {
    if (err != RdKafka::ERR__REVOKE_PARTITIONS) {
      spdlog::warn("rebalance error: {}", RdKafka::err2str(err));
    }
    paused_.clear();
    held_paused_.clear();
    marker_held_.clear();
    // A close waiting for usage, and what it held, were not recorded (their offsets were not
    // advanced): they are consumed again once partitions are assigned again.
    pending_close_.reset();
    close_offsets_.clear();
    held_.clear();
    for (RdKafka::TopicPartition* tp : partitions) {
      next_offset_.erase({tp->topic(), tp->partition()});
      assigned_.erase({tp->topic(), tp->partition()});
      at_end_.erase({tp->topic(), tp->partition()});
      metrics_.RemoveLag(tp->topic(), tp->partition());
    }
    consumer->unassign();
  }
  metrics_.SetAssignedPartitions(assigned_.size());
}

void IngestLoop::event_cb(RdKafka::Event& event) {
  switch (event.type()) {
    case RdKafka::Event::EVENT_ERROR:
      if (event.fatal()) {
        callback_error_ = FromKafka(event.err(), absl::StrCat("fatal Kafka error: ", event.str()));
      } else {
        spdlog::warn("kafka: {} ({})", event.str(), RdKafka::err2str(event.err()));
      }
      break;
    case RdKafka::Event::EVENT_LOG:
      if (event.severity() <= RdKafka::Event::EVENT_SEVERITY_WARNING) {
        spdlog::warn("kafka: {} {}", event.fac(), event.str());
      }
      break;
    default:
      break;
  }
}

absl::Status IngestLoop::Handle(const RdKafka::Message& msg, Consumed* ahead, bool* hold) {
  *hold = false;
  if (msg.timestamp().type == RdKafka::MessageTimestamp::MSG_TIMESTAMP_CREATE_TIME) {
    NoteProducerTimestamps(msg.topic_name());
  }
  // Decoded ahead with the limits in force now, or decoded here.
  Decoded decoded = ahead != nullptr && ahead->decoded.has_value() &&
                            ahead->limits_seq == validator_.limits_from_seq()
                        ? *std::move(ahead->decoded)
                        : DecodeMessage(msg, validator_.limits(), NowMs());
  validator_.Check(&decoded);
  GPULEDGER_RETURN_IF_ERROR(validator_.status());
  next_offset_[{decoded.candidate.topic, decoded.candidate.partition}] =
      decoded.candidate.offset + 1;
  if (const v1::UsageEvent* u = decoded.usage();
      u != nullptr && u->has_close_marker() && decoded.candidate.reason_code.empty()) {
    // Usage after a marker of a period still open is recorded after that period's close, here
    // as in a ledger rebuilt from the topics (which reads the close first and holds the
    // partition at the close's offset, the marker's).
    auto period = base::ParsePeriod(u->close_marker().period());
    const auto closed = validator_.registry().last_closed();
    // With a close pending, its offsets decide instead (a marker left by a `settle close` that
    // stopped before publishing its close is before the offsets of the one run again).
    const ledger::TopicPartition tp{decoded.candidate.topic, decoded.candidate.partition};
    if (!pending_close_ && period.ok() && (!closed || *period > *closed) &&
        !markers_expired_.contains({tp, decoded.candidate.offset})) {
      if (marker_held_.emplace(tp, MonotonicMs()).second) {
        spdlog::info(
            "close marker of {} at {}[{}] offset {}: the partition waits until that close is "
            "recorded (published by `gpuledger settle close`)",
            period->ToString(), tp.topic, tp.partition, decoded.candidate.offset);
      }
      PauseForClose(tp.topic, tp.partition);
      *hold = true;
      return absl::OkStatus();  // no close is pending here: nothing more to record
    }
  }
  if (const v1::RegistryEvent* r = decoded.registry(); r != nullptr && r->has_period_close() &&
                                                       !r->period_close().usage_offsets().empty() &&
                                                       decoded.candidate.reason_code.empty()) {
    // A close takes effect when ingest has read the usage it covers, and before any usage after
    // it: it waits here (its registry offset not advanced) until then.
    close_offsets_.clear();
    for (const auto& o : r->period_close().usage_offsets()) {
      // A shard waits only for its own partitions: each shard's close covers the usage before
      // the markers on its partitions, and the shards' closes together cover what one ledger's
      // would.
      if (!ShardOwns(o.partition(), options_.shard, options_.shards)) continue;
      close_offsets_[{o.topic(), o.partition()}] = o.offset();
    }
    spdlog::info("period {} close read: recorded once the usage it covers is read ({} partitions)",
                 r->period_close().period(), close_offsets_.size());
    pending_close_ = std::move(decoded);
    ResumeUsage();
    // Partitions held at a close marker go on up to the close's offsets (which may record the
    // close at once).
    if (!marker_held_.empty()) GPULEDGER_RETURN_IF_ERROR(ReleaseHeld());
    if (!pending_close_) return absl::OkStatus();
    PauseForClose(msg.topic_name(), msg.partition());
    return RecordCloseIfReached();
  }
  ++stats_.consumed;
  metrics_.OnConsumed();
  ++batch_messages_;
  GPULEDGER_RETURN_IF_ERROR(Record(decoded));
  const ledger::Candidate& candidate = decoded.candidate;
  const ledger::TopicPartition tp{candidate.topic, candidate.partition};
  GPULEDGER_RETURN_IF_ERROR(ledger_.AdvanceOffset(tp, candidate.offset + 1));
  batch_offsets_[tp] = candidate.offset + 1;
  at_end_.erase(tp);
  // Parked events whose allocation this message announced, or whose grace period it ended.
  for (Decoded& resolution : validator_.TakeResolvable()) {
    validator_.Check(&resolution);
    GPULEDGER_RETURN_IF_ERROR(validator_.status());
    GPULEDGER_RETURN_IF_ERROR(Record(resolution));
  }
  // A close recorded when read (one without usage offsets) releases the close markers too.
  if (const v1::RegistryEvent* r = decoded.registry(); r != nullptr && r->has_period_close() &&
                                                       candidate.reason_code.empty() &&
                                                       !marker_held_.empty()) {
    GPULEDGER_RETURN_IF_ERROR(ReleaseHeld());
  }
  return pending_close_ ? RecordCloseIfReached() : absl::OkStatus();
}

absl::Status IngestLoop::Offer(std::unique_ptr<RdKafka::Message> msg, Consumed* ahead) {
  const ledger::TopicPartition tp{msg->topic_name(), msg->partition()};
  // Already handled (a partition resumed after a pause may deliver again what it had fetched).
  if (auto it = next_offset_.find(tp); it != next_offset_.end() && msg->offset() < it->second) {
    return absl::OkStatus();
  }
  if ((pending_close_ && MustWait(*msg)) || marker_held_.contains(tp)) {
    next_offset_[tp] = msg->offset() + 1;
    PauseForClose(tp.topic, tp.partition);
    held_.push_back(std::move(msg));
    return absl::OkStatus();
  }
  bool hold = false;
  GPULEDGER_RETURN_IF_ERROR(Handle(*msg, ahead, &hold));
  if (hold) held_.push_back(std::move(msg));
  return absl::OkStatus();
}

bool IngestLoop::MustWait(const RdKafka::Message& msg) const {
  if (msg.topic_name() == options_.limits.topics.Registry()) return true;
  auto it = close_offsets_.find({msg.topic_name(), msg.partition()});
  return it == close_offsets_.end() || msg.offset() >= it->second;
}

void IngestLoop::PauseForClose(const std::string& topic, int32_t partition) {
  if (!held_paused_.insert({topic, partition}).second) return;
  std::vector<RdKafka::TopicPartition*> parts{RdKafka::TopicPartition::create(topic, partition)};
  const RdKafka::ErrorCode err = consumer_->pause(parts);
  RdKafka::TopicPartition::destroy(parts);
  if (err != RdKafka::ERR_NO_ERROR)
    spdlog::warn("pausing {}[{}]: {}", topic, partition, RdKafka::err2str(err));
}

// The end of a partition ingest has read to its end (its high watermark then), or nullopt.
std::optional<int64_t> IngestLoop::EndReached(const ledger::TopicPartition& tp) const {
  if (!at_end_.contains(tp)) return std::nullopt;
  int64_t low = 0, high = 0;
  if (consumer_->get_watermark_offsets(tp.topic, tp.partition, &low, &high) !=
      RdKafka::ERR_NO_ERROR) {
    return std::nullopt;
  }
  return high;
}

bool IngestLoop::CloseReached() const {
  for (const auto& [tp, offset] : close_offsets_) {
    if (offset == 0) continue;
    auto it = next_offset_.find(tp);
    if (it != next_offset_.end() && it->second >= offset) continue;
    // Read to its end, and the end is at or past the offset: every message before it was read
    // (or removed by the topic's retention before ingest could read it).
    if (auto end = EndReached(tp); end && *end >= offset) continue;
    return false;
  }
  return true;
}

absl::Status IngestLoop::RecordCloseIfReached() {
  if (!pending_close_) return absl::OkStatus();
  if (!CloseReached()) {
    // A partition read to its end that ends before the close's offset can never reach it (a
    // usage topic deleted and created again, or a close not written by `settle close`): the
    // close is refused rather than waited for forever, and what it held goes on.
    for (const auto& [tp, offset] : close_offsets_) {
      auto end = EndReached(tp);
      if (!end || *end >= offset) continue;
      pending_close_->candidate.reason_code = reason::kInvalidField;
      pending_close_->candidate.reason_detail = absl::StrCat(
          "period_close.usage_offsets: ", tp.topic, "[", tp.partition, "] ends at offset ", *end,
          ", before the close's ", offset,
          " (a usage topic created again, or a close not written by `gpuledger settle close`)");
      spdlog::warn("period close refused: {}", pending_close_->candidate.reason_detail);
      return RecordPendingClose();
    }
    const int64_t now = MonotonicMs();
    if (now - last_close_note_ms_ >= 10'000) {
      last_close_note_ms_ = now;
      for (const auto& [tp, offset] : close_offsets_) {
        auto it = next_offset_.find(tp);
        const int64_t at = it == next_offset_.end() ? 0 : it->second;
        if (at < offset) {
          spdlog::info("period close waits for {}[{}]: read to offset {} of {}", tp.topic,
                       tp.partition, at, offset);
        }
      }
    }
    return absl::OkStatus();
  }
  return RecordPendingClose();
}

absl::Status IngestLoop::RecordPendingClose() {
  Decoded close = *std::move(pending_close_);
  pending_close_.reset();
  close_offsets_.clear();
  ++stats_.consumed;
  metrics_.OnConsumed();
  ++batch_messages_;
  GPULEDGER_RETURN_IF_ERROR(Record(close));
  const ledger::TopicPartition tp{close.candidate.topic, close.candidate.partition};
  GPULEDGER_RETURN_IF_ERROR(ledger_.AdvanceOffset(tp, close.candidate.offset + 1));
  if (batch_offsets_.empty()) batch_opened_ms_ = MonotonicMs();
  batch_offsets_[tp] = close.candidate.offset + 1;
  return ReleaseHeld();
}

absl::Status IngestLoop::ExpireMarkers() {
  const int64_t now = MonotonicMs();
  bool expired = false;
  for (const auto& [tp, since] : marker_held_) {
    if (now - since < limits::kCloseMarkerHoldMsMax) continue;
    for (const auto& m : held_) {
      if (m->topic_name() != tp.topic || m->partition() != tp.partition) continue;
      // The first message held on the partition is its marker.
      expired = true;
      markers_expired_.insert({tp, m->offset()});
      spdlog::warn(
          "{}[{}]: the close marker at offset {} has waited {} s for its close, which is not on "
          "the registry topic (`gpuledger settle close` stopped before publishing it, or it was "
          "refused): the partition goes on; run `settle close` again to close the month",
          tp.topic, tp.partition, m->offset(), (now - since) / 1000);
      break;
    }
  }
  return expired ? ReleaseHeld() : absl::OkStatus();
}

absl::Status IngestLoop::ReleaseHeld() {
  marker_held_.clear();
  if (!held_paused_.empty()) {
    std::vector<RdKafka::TopicPartition*> parts;
    for (const auto& p : held_paused_) {
      parts.push_back(RdKafka::TopicPartition::create(p.topic, p.partition));
    }
    const RdKafka::ErrorCode err = consumer_->resume(parts);
    RdKafka::TopicPartition::destroy(parts);
    if (err != RdKafka::ERR_NO_ERROR)
      spdlog::warn("resuming after a close: {}", RdKafka::err2str(err));
    held_paused_.clear();
  }
  std::vector<std::unique_ptr<RdKafka::Message>> held = std::move(held_);
  held_.clear();
  for (auto& m : held) {
    const ledger::TopicPartition at{m->topic_name(), m->partition()};
    if ((pending_close_ && MustWait(*m)) || marker_held_.contains(at)) {
      PauseForClose(at.topic, at.partition);
      held_.push_back(std::move(m));
      continue;
    }
    bool hold = false;
    GPULEDGER_RETURN_IF_ERROR(Handle(*m, nullptr, &hold));
    if (hold) held_.push_back(std::move(m));
  }
  return absl::OkStatus();
}

// A period close is sealed by a signed checkpoint at its own entry (on a signed ledger).
absl::Status IngestLoop::CheckpointIfClose(const Decoded& decoded, uint64_t seq) {
  if (decoded.candidate.source != v1::SOURCE_REGISTRY) return absl::OkStatus();
  const v1::RegistryEvent* registry = decoded.registry();
  if (registry == nullptr || !registry->has_period_close()) return absl::OkStatus();
  const v1::RegistryEvent& event = *registry;
  if (!ledger_.can_sign()) {
    spdlog::warn("period {} closed at seq {} on an unsigned ledger: no signed checkpoint",
                 event.period_close().period(), seq);
    return absl::OkStatus();
  }
  spdlog::info("period {} closed at seq {}; signed checkpoint staged",
               event.period_close().period(), seq);
  return ledger_.StageCheckpoint(event.emitted_at_ms());
}

absl::Status IngestLoop::Record(const Decoded& decoded) {
  const ledger::Candidate& candidate = decoded.candidate;
  GPULEDGER_ASSIGN_OR_RETURN(ledger::AppendResult result, ledger_.Append(candidate));
  std::string reason;  // of a new rejected entry
  switch (result.kind) {
    case ledger::AppendKind::kDuplicate:
      ++stats_.duplicates;
      metrics_.OnMessage(MessageOutcome::kDuplicate);
      break;
    case ledger::AppendKind::kConflict:
      reason = ledger::kConflictingDuplicate;
      break;
    case ledger::AppendKind::kAppended:
      validator_.Recorded(decoded, result.seq);
      if (candidate.resolves_seq != 0) ++stats_.resolved;
      if (!candidate.reason_code.empty()) {
        reason = candidate.reason_code;
      } else if (candidate.park) {
        ++stats_.parked;
        metrics_.OnMessage(MessageOutcome::kParked);
      } else {
        ++stats_.accepted;
        metrics_.OnMessage(MessageOutcome::kAccepted);
        GPULEDGER_RETURN_IF_ERROR(CheckpointIfClose(decoded, result.seq));
      }
      break;
  }
  if (!reason.empty()) {
    ++stats_.rejected;
    ++stats_.rejected_by_reason[reason];
    metrics_.OnMessage(MessageOutcome::kRejected, reason);
    // Every shard records the registry; the first one announces its rejections.
    if (options_.publish_rejected &&
        (options_.shard == 0 || candidate.source != gpuledger::v1::SOURCE_REGISTRY)) {
      batch_rejected_.push_back({result.seq, reason, candidate.source_id, candidate.payload,
                                 candidate.topic, candidate.headers});
    }
  }
  return absl::OkStatus();
}

absl::Status IngestLoop::StageNoticeCursor() {
  if (!options_.publish_rejected) return absl::OkStatus();
  const uint64_t through = notifier_.ConfirmedThrough();
  if (through == staged_notice_cursor_) return absl::OkStatus();
  staged_notice_cursor_ = through;
  return ledger_.StageMeta(kNoticeCursor, absl::StrCat(through));
}

// Notices of rejections recorded after the cursor were perhaps never delivered (a crash, a
// broker that stayed away): send them again. Consumers dedup by the gpuledger-seq header.
absl::Status IngestLoop::ResendUnconfirmedNotices() {
  if (!options_.publish_rejected) return absl::OkStatus();
  GPULEDGER_ASSIGN_OR_RETURN(std::optional<std::string> cursor, ledger_.GetMeta(kNoticeCursor));
  uint64_t through = 0;
  if (cursor.has_value() && !absl::SimpleAtoi(*cursor, &through)) {
    return absl::DataLossError("the rejected-notice cursor in the ledger is damaged");
  }
  staged_notice_cursor_ = through;
  std::vector<RejectedNotice> notices;
  GPULEDGER_RETURN_IF_ERROR(
      ledger_.Scan(through + 1, [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
        if (e.entry.outcome() == gpuledger::v1::REJECTED &&
            (options_.shard == 0 || e.entry.source() != gpuledger::v1::SOURCE_REGISTRY)) {
          RejectedNotice& n = notices.emplace_back(RejectedNotice{e.seq,
                                                                  e.entry.reason_code(),
                                                                  e.entry.source_id(),
                                                                  e.entry.payload(),
                                                                  e.entry.topic(),
                                                                  {}});
          for (const v1::KafkaHeader& h : e.entry.headers()) {
            n.headers.emplace_back(h.key(), h.value());
          }
        }
        return true;
      }));
  if (!notices.empty()) {
    spdlog::info(
        "sending {} rejected notice(s) again: their delivery was not confirmed before "
        "the last stop",
        notices.size());
  }
  notifier_.Send(notices);
  notifier_.MarkSentThrough(ledger_.head().seq);
  return absl::OkStatus();
}

absl::Status IngestLoop::CommitBatch() {
  if (batch_offsets_.empty()) return absl::OkStatus();
  // Never commit decisions made while the validator's state store could not be read.
  GPULEDGER_RETURN_IF_ERROR(validator_.status());
  GPULEDGER_RETURN_IF_ERROR(StageNoticeCursor());
  const auto commit_started = std::chrono::steady_clock::now();
  GPULEDGER_RETURN_IF_ERROR(ledger_.Commit());
  // Not synced: after a crash the validator replays what its marker lacks from the ledger.
  GPULEDGER_RETURN_IF_ERROR(validator_.Persist(ledger_.head()));
  const std::chrono::duration<double> commit_seconds =
      std::chrono::steady_clock::now() - commit_started;
  metrics_.OnCommit(batch_messages_, commit_seconds.count());
  metrics_.SetHead(ledger_.head().seq);
  batch_messages_ = 0;
  ++stats_.batches;
  // Only now, with the ledger's record durable, tell operators and CSPs about rejections.
  notifier_.Send(batch_rejected_);
  notifier_.MarkSentThrough(ledger_.head().seq);
  batch_rejected_.clear();
  // Now durable in the ledger: tell Kafka too, for lag monitoring only (failures harmless).
  std::vector<RdKafka::TopicPartition*> commits;
  for (const auto& [tp, next] : batch_offsets_) {
    commits.push_back(RdKafka::TopicPartition::create(tp.topic, tp.partition, next));
  }
  consumer_->commitAsync(commits);
  RdKafka::TopicPartition::destroy(commits);
  batch_offsets_.clear();
  return absl::OkStatus();
}

bool IngestLoop::AllAtEnd() const {
  if (assigned_.empty() || !batch_offsets_.empty()) return false;
  // A partition paused behind a pending close has nothing to read until the close is recorded;
  // a run that stops then leaves the close and what it held unrecorded, to be read again.
  for (const auto& tp : assigned_) {
    if (!at_end_.contains(tp) && !held_paused_.contains(tp)) return false;
  }
  if (pending_close_) {
    spdlog::warn(
        "stopping at the end of the topics with period {} close unrecorded: the usage it covers "
        "is not all on the topics yet (it is read again on the next start)",
        pending_close_->registry()->period_close().period());
  } else if (!marker_held_.empty()) {
    spdlog::warn(
        "stopping at the end of the topics with {} usage partition(s) held at a close marker "
        "whose close is not on the registry topic yet (`gpuledger settle close` stopped before "
        "publishing it? run it again); they are read again on the next start",
        marker_held_.size());
  }
  return true;
}

void IngestLoop::ResumeUsage() {
  if (paused_.empty()) return;
  std::vector<RdKafka::TopicPartition*> parts;
  for (const auto& tp : paused_)
    parts.push_back(RdKafka::TopicPartition::create(tp.topic, tp.partition));
  const RdKafka::ErrorCode err = consumer_->resume(parts);
  RdKafka::TopicPartition::destroy(parts);
  if (err != RdKafka::ERR_NO_ERROR) {
    spdlog::warn("resuming usage partitions: {}", RdKafka::err2str(err));
    return;
  }
  spdlog::info("registry read to its end: reading {} usage partition(s)", paused_.size());
  paused_.clear();
}

void IngestLoop::SampleMemory(bool log) {
  const base::ProcessMemory proc = base::ReadProcessMemory();
  const ledger::StoreMemory l = ledger_.Memory();
  const ledger::StoreMemory v = validator_.StateStoreMemory();
  const uint64_t recent = validator_.RecentIntervalsBytes();
  const std::pair<const char*, uint64_t> parts[] = {
      {"rss", proc.rss},
      {"heap_in_use", proc.heap_in_use},
      {"heap_free", proc.heap_free},
      {"ledger_memtables", l.memtables},
      {"ledger_table_readers", l.table_readers},
      {"ledger_block_cache", l.block_cache},
      {"ledger_block_cache_pinned", l.block_cache_pinned},
      {"state_memtables", v.memtables},
      {"state_table_readers", v.table_readers},
      {"state_block_cache", v.block_cache},
      {"state_block_cache_pinned", v.block_cache_pinned},
      {"recent_intervals", recent},
  };
  for (const auto& [part, bytes] : parts) metrics_.SetMemory(part, bytes);
  if (!log) return;
  auto mib = [](uint64_t b) { return static_cast<double>(b) / (1 << 20); };
  spdlog::info(
      "memory (MiB): resident {:.0f}, heap in use {:.0f} and free {:.0f}; ledger memtables "
      "{:.0f}, table readers {:.1f}, block cache {:.0f} ({:.0f} pinned); state store memtables "
      "{:.0f}, table readers {:.1f}, block cache {:.0f} ({:.0f} pinned); recent intervals {:.0f}",
      mib(proc.rss), mib(proc.heap_in_use), mib(proc.heap_free), mib(l.memtables),
      mib(l.table_readers), mib(l.block_cache), mib(l.block_cache_pinned), mib(v.memtables),
      mib(v.table_readers), mib(v.block_cache), mib(v.block_cache_pinned), mib(recent));
}

void IngestLoop::LogProgress(bool final) {
  const int64_t now = MonotonicMs();
  if (!final && now - last_progress_ms_ < options_.progress_interval_ms) return;
  const double seconds = static_cast<double>(now - last_progress_ms_) / 1000.0;
  const uint64_t delta = stats_.consumed - consumed_at_last_progress_;
  int64_t lag = 0;
  for (const auto& tp : assigned_) {
    int64_t low = 0;
    int64_t high = 0;
    if (consumer_->get_watermark_offsets(tp.topic, tp.partition, &low, &high) ==
        RdKafka::ERR_NO_ERROR) {
      auto stored = ledger_.Offsets();
      auto it = stored.find(tp);
      const int64_t pos = it != stored.end() ? it->second : low;
      if (high > pos) lag += high - pos;
      metrics_.SetLag(tp.topic, tp.partition, high > pos ? high - pos : 0);
    }
  }
  spdlog::info(
      "{}consumed {} ({:.0f}/s), accepted {}, rejected {}, duplicates {}, parked now {}, "
      "ledger head {}, lag {}",
      final ? "done: " : "", stats_.consumed,
      seconds > 0 ? static_cast<double>(delta) / seconds : 0.0, stats_.accepted, stats_.rejected,
      stats_.duplicates, validator_.parked(), ledger_.head().seq, lag);
  metrics_.SetHead(ledger_.head().seq);
  metrics_.SetParked(validator_.parked());
  base::ReleaseFreeMemory();  // glibc: what malloc holds free in other threads' arenas
  const bool log_memory = final || now - last_memory_log_ms_ >= kMemoryLogEveryMs;
  SampleMemory(log_memory);
  if (log_memory) last_memory_log_ms_ = now;
  last_progress_ms_ = now;
  consumed_at_last_progress_ = stats_.consumed;
}

void IngestLoop::Fill(std::vector<Consumed>* window, int64_t wait_ms) {
  size_t bytes = 0;
  while (window->size() < gpuledger::limits::kIngestWindowMessagesMax &&
         bytes < gpuledger::limits::kIngestWindowBytesMax) {
    std::unique_ptr<RdKafka::Message> msg(
        consumer_->consume(window->empty() ? static_cast<int>(wait_ms) : 0));
    if (msg->err() == RdKafka::ERR__TIMED_OUT) break;
    bytes += msg->len();
    window->push_back(Consumed{std::move(msg), generation_, std::nullopt, 0});
    if (!callback_error_.ok()) break;
  }
}

absl::Status IngestLoop::Step(Consumed& c) {
  if (c.generation != generation_) return absl::OkStatus();
  absl::Status result;
  const RdKafka::ErrorCode consumed = c.msg->err();
  switch (consumed) {
    case RdKafka::ERR_NO_ERROR:
      if (batch_offsets_.empty()) batch_opened_ms_ = MonotonicMs();
      result = Offer(std::move(c.msg), &c);
      break;
    case RdKafka::ERR__PARTITION_EOF:
      at_end_.insert({c.msg->topic_name(), c.msg->partition()});
      if (c.msg->topic_name() == options_.limits.topics.Registry()) ResumeUsage();
      if (pending_close_) result = RecordCloseIfReached();
      break;
    default:
      spdlog::warn("consume: {}", c.msg->errstr());
      break;
  }
  GPULEDGER_RETURN_IF_ERROR(result);
  const bool batch_full =
      ledger_.PendingEntries() >= options_.batch_max_messages ||
      (!batch_offsets_.empty() && MonotonicMs() - batch_opened_ms_ >= options_.batch_max_ms);
  if (batch_full || (options_.stop_at_end && consumed == RdKafka::ERR__PARTITION_EOF)) {
    GPULEDGER_RETURN_IF_ERROR(CommitBatch());
  }
  LogProgress(false);
  return absl::OkStatus();
}

absl::StatusOr<IngestStats> IngestLoop::Run() {
  // The validator's state is the ledger's: rebuild it before deciding anything new.
  GPULEDGER_RETURN_IF_ERROR(validator_.Load(ledger_, options_.state_dir));
  {
    const ValidationLimits& l = validator_.limits();
    const std::string limits = absl::StrCat(
        "longest interval ", l.max_interval_ms, " ms, future skew ", l.max_future_skew_ms,
        " ms, park grace ", l.park_grace_ms, " ms, event id ", l.max_event_id_bytes, " bytes");
    if (validator_.limits_from_seq() == 0) {
      spdlog::info("validation limits from the command line (the ledger records none): {}", limits);
    } else {
      spdlog::info(
          "validation limits recorded in the ledger at entry {} (they decide, not the "
          "command line): {}",
          validator_.limits_from_seq(), limits);
    }
  }
  GPULEDGER_RETURN_IF_ERROR(Setup());
  const int64_t started = MonotonicMs();
  last_progress_ms_ = started;
  absl::Status result;
  // Two windows: `current` is handled here while DecodeAhead decodes `next`, consumed just before.
  std::vector<Consumed> current;
  std::vector<Consumed> next;
  DecodeAhead decoder;
  while (!stop_.load()) {
    int64_t wait_ms = 0;
    if (current.empty()) {
      wait_ms = 100;
      if (!batch_offsets_.empty()) {
        wait_ms = std::max<int64_t>(0, batch_opened_ms_ + options_.batch_max_ms - MonotonicMs());
      }
    }
    Fill(&next, wait_ms);
    notifier_.Poll();
    if (!callback_error_.ok()) {
      result = callback_error_;
      break;
    }
    decoder.Start(&next, validator_.limits(), validator_.limits_from_seq());
    for (Consumed& c : current) {
      result = Step(c);
      if (!result.ok()) break;
    }
    decoder.Wait();
    if (!result.ok()) break;
    current.swap(next);
    next.clear();
    if (current.empty()) {
      // Nothing consumed in time: a batch open for long enough is committed all the same.
      if (!batch_offsets_.empty() && MonotonicMs() - batch_opened_ms_ >= options_.batch_max_ms) {
        result = CommitBatch();
        if (!result.ok()) break;
      }
      LogProgress(false);
    }
    if (result.ok() && !marker_held_.empty()) result = ExpireMarkers();
    if (!result.ok()) break;
    // Only with nothing consumed and unhandled: a partition's end is not the end while messages
    // read after it wait in the window.
    if (options_.stop_at_end && current.empty()) {
      if (AllAtEnd()) break;
      if (!ever_assigned_ && MonotonicMs() - started > options_.assignment_timeout_ms) {
        result = absl::DeadlineExceededError(absl::StrCat(
            "no partition of ", options_.limits.topics.Registry(), " or ",
            options_.limits.topics.UsagePrefix(), "* was assigned within ",
            options_.assignment_timeout_ms, " ms: check --brokers and that the topics exist"));
        break;
      }
    }
  }
  // What was consumed and not handled is consumed again on the next start (its offsets were not
  // advanced).
  // A graceful stop finishes the batch in flight; after an error nothing staged is written
  // (the messages are consumed again from the stored offsets on the next start).
  if (result.ok()) result = CommitBatch();
  if (result.ok()) result = validator_.Drain();
  if (!result.ok()) {
    ledger_.Abort();
    batch_offsets_.clear();
    batch_rejected_.clear();  // not recorded: nothing to announce
    batch_messages_ = 0;
  }
  LogProgress(true);
  metrics_.SetStopping();
  consumer_->close();
  notifier_.Flush(static_cast<int>(options_.rejected_flush_timeout_ms));
  if (result.ok()) {
    // Record what was delivered, so that a clean restart sends nothing again.
    result = StageNoticeCursor();
    if (result.ok()) result = ledger_.Commit();
    // A clean stop leaves the whole ledger signed: an auditor's key then verifies it to its
    // head, with no unsigned tail to accept.
    if (result.ok()) result = ledger_.SignHead();
  }
  if (!result.ok()) return result;
  return stats_;
}

}  // namespace

absl::StatusOr<IngestStats> RunIngest(const IngestOptions& options, ledger::Ledger& ledger,
                                      const std::atomic<bool>& stop) {
  GPULEDGER_ASSIGN_OR_RETURN(std::unique_ptr<IngestMetrics> metrics,
                             IngestMetrics::Create(options.metrics_listen));
  if (!metrics->url().empty()) spdlog::info("serving metrics at {}", metrics->url());
  metrics->SetHead(ledger.head().seq);
  IngestLoop loop(options, ledger, stop, *metrics);
  return loop.Run();
}

}  // namespace gpuledger::ingest
