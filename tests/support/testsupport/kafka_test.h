// A GoogleTest fixture for tests against the real broker of the `kafka` CTest fixture: the
// broker's address, a printed seed, a topic namespace of its own (so tests sharing the broker
// never read each other's events) and a temporary directory.
#pragma once

#include <gtest/gtest.h>
#include <librdkafka/rdkafkacpp.h>

#include <iostream>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "ingest/publisher.h"
#include "ingest/topics.h"
#include "testsupport/kafka_env.h"
#include "testsupport/temp_dir.h"

namespace gpuledger::testing {

class KafkaTest : public ::testing::Test {
 protected:
  // `namespace_tag` starts the topic prefix, e.g. "rt" → "rt123456.gpuledger.usage.csp-a".
  explicit KafkaTest(std::string namespace_tag) : tag_(std::move(namespace_tag)) {}

  void SetUp() override {
    std::string why;
    brokers_ = KafkaBootstrap(&why);
    ASSERT_FALSE(brokers_.empty()) << why;
    seed_ = TestSeed();
    std::cout << "seed " << seed_ << " (GPULEDGER_TEST_SEED=" << seed_ << " replays it)\n";
    topics_ = ingest::TopicNames(absl::StrCat(tag_, seed_ % 1'000'000'007, "."));
  }

  std::string brokers_;
  uint64_t seed_ = 0;
  ingest::TopicNames topics_;
  TempDir dir_;

 private:
  std::string tag_;
};

// The end offset (high watermark) of every partition of `topic`, as the broker reports it.
inline std::map<int32_t, int64_t> HighWatermarks(const std::string& brokers,
                                                 const std::string& topic) {
  std::string err;
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  conf->set("bootstrap.servers", brokers, err);
  conf->set("group.id", "watermark-probe", err);
  std::unique_ptr<RdKafka::KafkaConsumer> c(RdKafka::KafkaConsumer::create(conf.get(), err));
  std::map<int32_t, int64_t> out;
  std::unique_ptr<RdKafka::Topic> t(RdKafka::Topic::create(c.get(), topic, nullptr, err));
  RdKafka::Metadata* raw = nullptr;
  EXPECT_EQ(c->metadata(false, t.get(), &raw, 10'000), RdKafka::ERR_NO_ERROR) << topic;
  std::unique_ptr<RdKafka::Metadata> metadata(raw);
  if (metadata && !metadata->topics()->empty()) {
    for (const auto* p : *metadata->topics()->front()->partitions()) {
      int64_t low = 0;
      int64_t high = 0;
      EXPECT_EQ(c->query_watermark_offsets(topic, p->id(), &low, &high, 10'000),
                RdKafka::ERR_NO_ERROR);
      out[p->id()] = high;
    }
  }
  c->close();
  return out;
}

// Publishes `events` and fails unless every one was acknowledged.
inline absl::Status PublishAll(const std::vector<ingest::EncodedEvent>& events,
                               const ingest::PublishOptions& options) {
  auto published = ingest::Publish(events, options);
  if (!published.ok()) return published.status();
  if (published->published != events.size()) {
    return absl::InternalError(
        absl::StrCat(published->published, " of ", events.size(), " events published"));
  }
  return absl::OkStatus();
}

}  // namespace gpuledger::testing
