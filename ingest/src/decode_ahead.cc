#include "decode_ahead.h"

#include <chrono>

#include "ledger/hash.h"

namespace gpuledger::ingest {

namespace v1 = gpuledger::v1;

RawMessage ToRawMessage(const RdKafka::Message& msg) {
  RawMessage raw;
  raw.topic = msg.topic_name();
  raw.partition = msg.partition();
  raw.offset = msg.offset();
  const RdKafka::MessageTimestamp ts = msg.timestamp();
  switch (ts.type) {
    case RdKafka::MessageTimestamp::MSG_TIMESTAMP_LOG_APPEND_TIME:
      raw.kafka_timestamp_type = v1::KAFKA_TIMESTAMP_LOG_APPEND_TIME;
      raw.kafka_timestamp_ms = ts.timestamp;
      break;
    case RdKafka::MessageTimestamp::MSG_TIMESTAMP_CREATE_TIME:
      raw.kafka_timestamp_type = v1::KAFKA_TIMESTAMP_CREATE_TIME;
      raw.kafka_timestamp_ms = ts.timestamp;
      break;
    case RdKafka::MessageTimestamp::MSG_TIMESTAMP_NOT_AVAILABLE:
      raw.kafka_timestamp_type = v1::KAFKA_TIMESTAMP_NONE;
      raw.kafka_timestamp_ms = -1;
      break;
  }
  if (msg.payload() != nullptr)
    raw.payload.assign(static_cast<const char*>(msg.payload()), msg.len());
  // The headers a decision reads (the CloudEvents ones), in order; the message owns `headers`.
  // headers() is not const only because librdkafka parses them on first use.
  if (RdKafka::Headers* headers = const_cast<RdKafka::Message&>(msg).headers();
      headers != nullptr) {
    for (const RdKafka::Headers::Header& h : headers->get_all()) {
      if (!RecordedHeader(h.key())) continue;
      raw.headers.emplace_back(
          h.key(), h.value() == nullptr
                       ? std::string()
                       : std::string(static_cast<const char*>(h.value()), h.value_size()));
    }
  }
  return raw;
}

Decoded DecodeMessage(const RdKafka::Message& msg, const ValidationLimits& limits,
                      int64_t recorded_at_ms) {
  Decoded decoded = Decode(ToRawMessage(msg), limits, recorded_at_ms);
  ledger::SetContentHash(&decoded.candidate);
  return decoded;
}

namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

DecodeAhead::DecodeAhead() : thread_([this] { Loop(); }) {}

DecodeAhead::~DecodeAhead() {
  Wait();
  {
    std::lock_guard<std::mutex> lock(mu_);
    quit_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void DecodeAhead::Start(std::vector<Consumed>* window, const ValidationLimits& limits,
                        uint64_t limits_seq) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    window_ = window;
    limits_ = limits;
    limits_seq_ = limits_seq;
    done_ = 0;
    next_.store(0, std::memory_order_relaxed);
    ++round_;
  }
  cv_.notify_all();
}

size_t DecodeAhead::Drain() {
  // window_, limits_ and limits_seq_ do not change until every message is done (Wait()).
  size_t decoded = 0;
  for (;;) {
    const size_t i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i >= window_->size()) return decoded;
    Consumed& c = (*window_)[i];
    ++decoded;
    if (c.msg->err() != RdKafka::ERR_NO_ERROR) continue;
    c.decoded = DecodeMessage(*c.msg, limits_, NowMs());
    c.limits_seq = limits_seq_;
  }
}

void DecodeAhead::Wait() {
  std::unique_lock<std::mutex> lock(mu_);
  if (window_ == nullptr) return;
  lock.unlock();
  const size_t mine = Drain();
  lock.lock();
  done_ += mine;
  // The thread may still be decoding a message it claimed; it never starts on a window after this.
  cv_.wait(lock, [&] { return done_ == window_->size() && !thread_active_; });
  window_ = nullptr;
}

void DecodeAhead::Loop() {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return quit_ || round_ != seen; });
    if (quit_) return;
    seen = round_;
    if (window_ == nullptr) continue;  // Wait() already did it all
    thread_active_ = true;
    lock.unlock();
    const size_t mine = Drain();
    lock.lock();
    done_ += mine;
    thread_active_ = false;
    cv_.notify_all();
  }
}

}  // namespace gpuledger::ingest
