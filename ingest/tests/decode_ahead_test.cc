// The ingest loop's decode thread (ingest/src/decode_ahead.h): every message of every window comes
// back decoded exactly as the loop would decode it, whichever of the two threads took it.
#include "decode_ahead.h"

#include <gtest/gtest.h>

#include <random>

#include "gpuledger/v1/usage.pb.h"
#include "ingest/topics.h"
#include "ledger/hash.h"

namespace gpuledger::ingest {
namespace {

namespace v1 = gpuledger::v1;

// A consumed message or event, as librdkafka would hand it over.
class TestMessage : public RdKafka::Message {
 public:
  TestMessage(RdKafka::ErrorCode err, std::string topic, int32_t partition, int64_t offset,
              std::string payload)
      : err_(err),
        topic_(std::move(topic)),
        partition_(partition),
        offset_(offset),
        payload_(std::move(payload)) {}
  std::string errstr() const override { return RdKafka::err2str(err_); }
  RdKafka::ErrorCode err() const override { return err_; }
  RdKafka::Topic* topic() const override { return nullptr; }
  std::string topic_name() const override { return topic_; }
  int32_t partition() const override { return partition_; }
  void* payload() const override { return const_cast<char*>(payload_.data()); }
  size_t len() const override { return payload_.size(); }
  const std::string* key() const override { return nullptr; }
  const void* key_pointer() const override { return nullptr; }
  size_t key_len() const override { return 0; }
  int64_t offset() const override { return offset_; }
  RdKafka::MessageTimestamp timestamp() const override {
    RdKafka::MessageTimestamp ts;
    ts.type = RdKafka::MessageTimestamp::MSG_TIMESTAMP_LOG_APPEND_TIME;
    ts.timestamp = 1'772'000'000'000 + offset_;
    return ts;
  }
  void* msg_opaque() const override { return nullptr; }
  int64_t latency() const override { return 0; }
  rd_kafka_message_s* c_ptr() override { return nullptr; }
  Status status() const override { return MSG_STATUS_PERSISTED; }
  RdKafka::Headers* headers() override { return nullptr; }
  RdKafka::Headers* headers(RdKafka::ErrorCode* err) override {
    *err = RdKafka::ERR_NO_ERROR;
    return nullptr;
  }
  int32_t broker_id() const override { return 1; }

 private:
  RdKafka::ErrorCode err_;
  std::string topic_;
  int32_t partition_;
  int64_t offset_;
  std::string payload_;
};

std::string Usage(int64_t i) {
  v1::UsageEvent e;
  e.set_schema_version(1);
  e.set_event_id("evt-" + std::to_string(i));
  e.set_csp_id("csp-a");
  e.set_producer_id("meter-1");
  e.set_producer_seq(static_cast<uint64_t>(i) + 1);
  auto* u = e.mutable_usage();
  u->set_allocation_id("alloc-1");
  u->set_gpu_model(v1::H200);
  u->set_gpu_count(static_cast<int32_t>(1 + i % 8));
  u->set_start_ms(1'772'000'000'000 + i * 60'000);
  u->set_end_ms(1'772'000'000'000 + (i + 1) * 60'000);
  u->set_node_id("node-1");
  return e.SerializeAsString();
}

// Usage events, undecodable payloads and partition ends, in a window of `n`.
std::vector<Consumed> Window(std::mt19937_64& rng, size_t n, int64_t* offset) {
  const std::string topic = TopicNames().Usage("csp-a");
  std::vector<Consumed> w;
  for (size_t i = 0; i < n; ++i) {
    const int64_t o = (*offset)++;
    switch (rng() % 8) {
      case 0:
        w.push_back({std::make_unique<TestMessage>(RdKafka::ERR__PARTITION_EOF, topic, 0, o, ""), 0,
                     std::nullopt, 0});
        break;
      case 1:
        w.push_back({std::make_unique<TestMessage>(RdKafka::ERR_NO_ERROR, topic, 0, o,
                                                   std::string("\xff\x01garbage", 9)),
                     0, std::nullopt, 0});
        break;
      default:
        w.push_back({std::make_unique<TestMessage>(RdKafka::ERR_NO_ERROR, topic, 0, o, Usage(o)), 0,
                     std::nullopt, 0});
    }
  }
  return w;
}

TEST(DecodeAheadTest, EveryMessageOfEveryWindowComesBackDecodedAsTheLoopWouldDecodeIt) {
  std::mt19937_64 rng(15);
  DecodeAhead decoder;
  ValidationLimits limits;
  int64_t offset = 0;
  size_t decoded = 0;
  for (uint64_t round = 0; round < 300; ++round) {
    // Sizes from empty to more than the loop's window, so that either thread may take any part.
    std::vector<Consumed> window = Window(rng, rng() % 1'200, &offset);
    limits.max_interval_ms = round % 3 == 0 ? 60'000 : 31LL * 86'400'000;
    decoder.Start(&window, limits, round);
    if (round % 2 == 0) std::this_thread::yield();
    decoder.Wait();
    for (const Consumed& c : window) {
      if (c.msg->err() != RdKafka::ERR_NO_ERROR) {
        EXPECT_FALSE(c.decoded.has_value()) << "an event is not a message";
        continue;
      }
      ASSERT_TRUE(c.decoded.has_value()) << "offset " << c.msg->offset() << " round " << round;
      EXPECT_EQ(c.limits_seq, round);
      const Decoded want =
          Decode(ToRawMessage(*c.msg), limits, c.decoded->candidate.recorded_at_ms);
      const ledger::Candidate& got = c.decoded->candidate;
      EXPECT_EQ(got.offset, c.msg->offset());
      EXPECT_EQ(got.payload, want.candidate.payload);
      EXPECT_EQ(got.canonical, want.candidate.canonical);
      EXPECT_EQ(got.reason_code, want.candidate.reason_code);
      EXPECT_EQ(got.reason_detail, want.candidate.reason_detail);
      EXPECT_EQ(got.event_id, want.candidate.event_id);
      ASSERT_TRUE(got.content_hash.has_value());
      EXPECT_EQ(*got.content_hash,
                ledger::Sha256(want.candidate.canonical.empty() ? want.candidate.payload
                                                                : want.candidate.canonical));
      ++decoded;
    }
  }
  EXPECT_GT(decoded, 100'000u);
}

TEST(DecodeAheadTest, WaitWithoutAWindowReturnsAndAStartedWindowIsFinishedOnDestruction) {
  DecodeAhead idle;
  idle.Wait();
  std::mt19937_64 rng(1);
  int64_t offset = 0;
  std::vector<Consumed> window = Window(rng, 500, &offset);
  {
    DecodeAhead decoder;
    decoder.Wait();
    decoder.Start(&window, ValidationLimits(), 0);
  }
  for (const Consumed& c : window) {
    EXPECT_EQ(c.decoded.has_value(), c.msg->err() == RdKafka::ERR_NO_ERROR);
  }
}

}  // namespace
}  // namespace gpuledger::ingest
