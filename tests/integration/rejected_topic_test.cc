// Rejected events republished to the rejected topic: after a real ingest against a real broker,
// the topic holds exactly the ledger's rejected entries, each with its reason, ledger seq and
// source topic in headers, keyed by source id, with the original payload.
#include <gtest/gtest.h>
#include <librdkafka/rdkafkacpp.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/period.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/ingestor.h"
#include "ingest/publisher.h"
#include "ingest/reasons.h"
#include "testsupport/kafka_test.h"

namespace gpuledger {
namespace {

namespace v1 = gpuledger::v1;
constexpr int64_t kHour = 3'600'000;
constexpr int kRejectedPartitions = 2;
const base::Period kPeriod{2026, 3};

// A message read back from the rejected topic.
struct Notice {
  std::string key;
  bool has_key = false;
  std::string value;
  std::map<std::string, std::string> headers;  // last value of each header
};

// The operator's reference data for one allocation of csp-a.
std::vector<ingest::EncodedEvent> RegistryEvents(const ingest::TopicNames& topics) {
  std::vector<ingest::EncodedEvent> out;
  int n = 0;
  auto add = [&](auto fill) {
    v1::RegistryEvent e;
    e.set_schema_version(1);
    e.set_event_id(absl::StrCat("reg-", ++n));
    fill(&e);
    out.push_back({topics.Registry(), e.event_id(), e.SerializeAsString()});
  };
  add([](v1::RegistryEvent* e) {
    auto* x = e->mutable_institution();
    x->set_institution_id("uni");
    x->set_name("uni");
    x->set_type(v1::ACADEMIA);
  });
  add([](v1::RegistryEvent* e) {
    auto* x = e->mutable_copay_policy();
    x->set_institution_type(v1::ACADEMIA);
    x->set_copay_bp(0);
  });
  add([](v1::RegistryEvent* e) {
    auto* x = e->mutable_rate_card();
    x->set_program(v1::LEASE_RESEARCH);
    x->set_gpu_model(v1::H200);
    x->set_krw_per_gpu_hour(5'100);
  });
  add([](v1::RegistryEvent* e) {
    auto* x = e->mutable_allocation();
    x->set_allocation_id("alloc-1");
    x->set_institution_id("uni");
    x->set_program(v1::LEASE_RESEARCH);
    x->set_csp_id("csp-a");
    x->set_gpu_model(v1::H200);
    x->set_gpu_count(8);
    x->set_start_ms(kPeriod.StartMs());
    x->set_end_ms(kPeriod.EndMs());
  });
  return out;
}

// Usage event `i` of csp-a: one GPU for half an hour in hour i of the period (no overlaps).
v1::UsageEvent Usage(int i) {
  v1::UsageEvent e;
  e.set_schema_version(1);
  e.set_event_id(absl::StrCat("u-", i));
  e.set_csp_id("csp-a");
  e.set_producer_id("meter");
  e.set_producer_seq(static_cast<uint64_t>(i) + 1);
  auto* u = e.mutable_usage();
  u->set_allocation_id("alloc-1");
  u->set_gpu_model(v1::H200);
  u->set_gpu_count(1);
  u->set_start_ms(kPeriod.StartMs() + i * kHour);
  u->set_end_ms(kPeriod.StartMs() + i * kHour + kHour / 2);
  u->set_node_id("node-1");
  return e;
}

// Reads every message of `topic` from the beginning to the end of each partition.
std::vector<Notice> ReadAll(const std::string& brokers, const std::string& topic) {
  std::string err;
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  conf->set("bootstrap.servers", brokers, err);
  conf->set("group.id", "rejected-topic-reader", err);
  conf->set("enable.partition.eof", "true", err);
  conf->set("enable.auto.commit", "false", err);
  std::unique_ptr<RdKafka::KafkaConsumer> c(RdKafka::KafkaConsumer::create(conf.get(), err));
  EXPECT_TRUE(c) << err;
  if (!c) return {};
  std::vector<RdKafka::TopicPartition*> parts;
  for (int32_t p = 0; p < kRejectedPartitions; ++p) {
    parts.push_back(RdKafka::TopicPartition::create(topic, p, RdKafka::Topic::OFFSET_BEGINNING));
  }
  EXPECT_EQ(c->assign(parts), RdKafka::ERR_NO_ERROR);
  RdKafka::TopicPartition::destroy(parts);
  std::vector<Notice> out;
  std::set<int32_t> at_end;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (at_end.size() < kRejectedPartitions && std::chrono::steady_clock::now() < deadline) {
    std::unique_ptr<RdKafka::Message> m(c->consume(1'000));
    if (m->err() == RdKafka::ERR__PARTITION_EOF) {
      at_end.insert(m->partition());
    } else if (m->err() == RdKafka::ERR_NO_ERROR) {
      at_end.erase(m->partition());
      Notice n;
      n.has_key = m->key() != nullptr;
      if (n.has_key) n.key = *m->key();
      n.value.assign(static_cast<const char*>(m->payload()), m->len());
      if (RdKafka::Headers* h = m->headers()) {
        for (const RdKafka::Headers::Header& header : h->get_all()) {
          n.headers[header.key()] =
              std::string(static_cast<const char*>(header.value()), header.value_size());
        }
      }
      out.push_back(std::move(n));
    } else if (m->err() != RdKafka::ERR__TIMED_OUT) {
      ADD_FAILURE() << "reading " << topic << ": " << m->errstr();
      break;
    }
  }
  EXPECT_EQ(at_end.size(), static_cast<size_t>(kRejectedPartitions))
      << "did not reach the end of " << topic << " within 60 s";
  c->close();
  return out;
}

// One message with headers, as a CSP's client sends a CloudEvent in the Kafka binding's binary
// mode (ingest::Publish sends none); waits for the broker's acknowledgement.
void ProduceWithHeaders(const std::string& brokers, const std::string& topic,
                        const std::string& key, const std::string& value,
                        const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string err;
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  ASSERT_EQ(conf->set("bootstrap.servers", brokers, err), RdKafka::Conf::CONF_OK) << err;
  std::unique_ptr<RdKafka::Producer> p(RdKafka::Producer::create(conf.get(), err));
  ASSERT_NE(p, nullptr) << err;
  RdKafka::Headers* h = RdKafka::Headers::create();
  for (const auto& [k, v] : headers) h->add(k, v);
  const RdKafka::ErrorCode code = p->produce(
      topic, RdKafka::Topic::PARTITION_UA, RdKafka::Producer::RK_MSG_COPY,
      const_cast<char*>(value.data()), value.size(), key.data(), key.size(), 0, h, nullptr);
  if (code != RdKafka::ERR_NO_ERROR) delete h;  // librdkafka owns it once produced
  ASSERT_EQ(code, RdKafka::ERR_NO_ERROR) << RdKafka::err2str(code);
  ASSERT_EQ(p->flush(30'000), RdKafka::ERR_NO_ERROR);
}

class RejectedTopicTest : public testing::KafkaTest {
 protected:
  RejectedTopicTest() : KafkaTest("rj") {}

  void SetUp() override {
    KafkaTest::SetUp();
    publish_.brokers = brokers_;
    publish_.topics = topics_;
    publish_.partitions_if_created = 3;
  }

  absl::StatusOr<ingest::IngestStats> Ingest(ledger::Ledger& l) {
    ingest::IngestOptions o;
    o.brokers = brokers_;
    o.group_id = absl::StrCat("rj-", seed_);
    o.stop_at_end = true;
    o.batch_max_messages = 4;  // several group commits, each announcing its own rejections
    o.limits.topics = topics_;
    std::atomic<bool> stop{false};
    return ingest::RunIngest(o, l, stop);
  }

  ingest::PublishOptions publish_;
};

TEST_F(RejectedTopicTest, ExactlyTheRejectedEntriesArriveWithReasonSeqAndSourceHeaders) {
  // The operator creates the rejected topic (production clusters do not auto-create topics).
  ASSERT_TRUE(ingest::EnsureTopics(brokers_, {topics_.Rejected()}, kRejectedPartitions).ok());
  auto ledger = ledger::Ledger::Open(dir_.Sub("ledger"), {});
  ASSERT_TRUE(ledger.ok()) << ledger.status();

  // The registry first, so that usage is decided against a known allocation.
  const std::vector<ingest::EncodedEvent> registry = RegistryEvents(topics_);
  ASSERT_TRUE(ingest::Publish(registry, publish_).ok());
  auto first = Ingest(**ledger);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->accepted, registry.size());

  const std::string usage_topic = topics_.Usage("csp-a");
  constexpr int kValid = 12;
  std::vector<ingest::EncodedEvent> stream;
  for (int i = 0; i < kValid; ++i) {
    stream.push_back({usage_topic, "alloc-1", Usage(i).SerializeAsString()});
  }
  stream.push_back(stream[3]);  // an exact duplicate: counted, not a rejection
  std::multiset<std::string> want_reasons;
  auto reject = [&](v1::UsageEvent e, const char* reason) {
    stream.push_back({usage_topic, "alloc-1", e.SerializeAsString()});
    want_reasons.insert(reason);
  };
  v1::UsageEvent empty = Usage(100);
  empty.mutable_usage()->set_end_ms(empty.usage().start_ms());
  reject(empty, ingest::reason::kEmptyInterval);
  v1::UsageEvent negative = Usage(101);
  negative.mutable_usage()->set_end_ms(negative.usage().start_ms() - 1);
  reject(negative, ingest::reason::kEmptyInterval);
  v1::UsageEvent other_csp = Usage(102);
  other_csp.set_csp_id("csp-b");
  reject(other_csp, ingest::reason::kCspTopicMismatch);
  v1::UsageEvent conflict = Usage(5);  // event id u-5 again, different content
  conflict.mutable_usage()->set_node_id("node-2");
  reject(conflict, ingest::reason::kConflictingDuplicate);
  // Bytes that are no protobuf: 'n' is field 13 with the invalid wire type 6.
  stream.push_back({usage_topic, "junk", "not a protobuf \xff\xff\xff"});
  want_reasons.insert(ingest::reason::kMalformed);
  ASSERT_TRUE(ingest::Publish(stream, publish_).ok());

  auto second = Ingest(**ledger);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->accepted, static_cast<uint64_t>(kValid));
  EXPECT_EQ(second->duplicates, 1u);
  EXPECT_EQ(second->rejected, want_reasons.size());

  // The ledger's rejected entries, by seq.
  std::map<uint64_t, v1::LedgerEntry> rejected;
  ASSERT_TRUE((*ledger)
                  ->Scan(1,
                         [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
                           if (e.entry.outcome() == v1::REJECTED) rejected[e.seq] = e.entry;
                           return true;
                         })
                  .ok());
  ASSERT_EQ(rejected.size(), want_reasons.size());

  // The topic holds each of them once, as the ledger recorded it.
  const std::vector<Notice> notices = ReadAll(brokers_, topics_.Rejected());
  std::multiset<std::string> got_reasons;
  std::set<uint64_t> got_seqs;
  for (const Notice& n : notices) {
    ASSERT_TRUE(n.headers.contains("gpuledger-seq"));
    const uint64_t seq = std::stoull(n.headers.at("gpuledger-seq"));
    EXPECT_TRUE(got_seqs.insert(seq).second) << "seq " << seq << " announced twice";
    ASSERT_TRUE(rejected.contains(seq)) << "seq " << seq << " is not a rejected entry";
    const v1::LedgerEntry& entry = rejected.at(seq);
    EXPECT_EQ(n.headers.at("gpuledger-reason"), entry.reason_code()) << "seq " << seq;
    EXPECT_EQ(n.headers.at("gpuledger-source-topic"), usage_topic) << "seq " << seq;
    EXPECT_EQ(n.headers.at("gpuledger-source-topic"), entry.topic()) << "seq " << seq;
    EXPECT_EQ(n.value, entry.payload()) << "seq " << seq;
    EXPECT_EQ(n.key, entry.source_id()) << "seq " << seq;
    EXPECT_EQ(n.has_key, !entry.source_id().empty()) << "seq " << seq;
    got_reasons.insert(n.headers.at("gpuledger-reason"));
  }
  EXPECT_EQ(got_reasons, want_reasons);
  EXPECT_EQ(got_seqs.size(), rejected.size());

  // Restarting announces nothing again: the ledger resumes after what it recorded.
  auto third = Ingest(**ledger);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->consumed, 0u);
  EXPECT_EQ(ReadAll(brokers_, topics_.Rejected()).size(), notices.size());
}

TEST_F(RejectedTopicTest, NoticesNeverConfirmedAreSentAgainAtTheNextStart) {
  ASSERT_TRUE(ingest::EnsureTopics(brokers_, {topics_.Rejected()}, kRejectedPartitions).ok());
  auto ledger = ledger::Ledger::Open(dir_.Sub("ledger"), {});
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  const std::vector<ingest::EncodedEvent> junk = {
      {topics_.Usage("csp-a"), "junk", "not a protobuf \xff\xff"}};
  ASSERT_TRUE(ingest::Publish(junk, publish_).ok());
  // A binary-mode CloudEvent of another type: rejected, and its id is only in its headers.
  const std::vector<std::pair<std::string, std::string>> ce = {
      {"ce_specversion", "1.0"},
      {"ce_type", "com.example.Other"},
      {"ce_id", "ce-other-1"},
      {"ce_source", "csp-a-meter"},
      {"content-type", "application/json"}};
  ProduceWithHeaders(brokers_, topics_.Usage("csp-a"), "junk", "{}", ce);
  ingest::IngestOptions o;
  o.brokers = brokers_;
  o.group_id = absl::StrCat("rj-off-", seed_);
  o.stop_at_end = true;
  o.publish_rejected = false;
  o.limits.topics = topics_;
  std::atomic<bool> stop{false};
  auto stats = ingest::RunIngest(o, **ledger, stop);
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->rejected, 2u);
  EXPECT_TRUE(ReadAll(brokers_, topics_.Rejected()).empty());

  // Turned on again, ingest finds the rejection whose notice was never confirmed (the ledger's
  // cursor did not pass it) and sends it: at least once, even across stops and crashes.
  o.publish_rejected = true;
  auto resend = ingest::RunIngest(o, **ledger, stop);
  ASSERT_TRUE(resend.ok()) << resend.status();
  EXPECT_EQ(resend->consumed, 0u);
  auto notices = ReadAll(brokers_, topics_.Rejected());
  ASSERT_EQ(notices.size(), 2u);
  std::map<std::string, Notice> by_seq;
  for (const Notice& n : notices) by_seq[n.headers.at("gpuledger-seq")] = n;
  ASSERT_TRUE(by_seq.contains("1") && by_seq.contains("2"));
  EXPECT_EQ(by_seq["1"].headers["gpuledger-reason"], "MALFORMED");
  EXPECT_FALSE(by_seq["1"].headers.contains("ce_id"));
  // The CloudEvent's notice, sent again from the ledger entry, keeps the headers it was sent with.
  EXPECT_EQ(by_seq["2"].headers["gpuledger-reason"], "MALFORMED");
  for (const auto& [key, value] : ce) EXPECT_EQ(by_seq["2"].headers[key], value) << key;
  auto cursor = (*ledger)->GetMeta("rejected_notified_through");
  ASSERT_TRUE(cursor.ok() && cursor->has_value());
  EXPECT_EQ(**cursor, "2");
  // Delivered and recorded as such: the next start sends nothing again.
  ASSERT_TRUE(ingest::RunIngest(o, **ledger, stop).ok());
  EXPECT_EQ(ReadAll(brokers_, topics_.Rejected()).size(), 2u);
}

}  // namespace
}  // namespace gpuledger
