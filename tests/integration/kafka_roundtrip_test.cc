// The walking skeleton on the real parts: events published to a real Kafka broker, ingested
// into a RocksDB ledger, settled into invoices whose totals are recomputed here independently.
#include <gtest/gtest.h>
#include <librdkafka/rdkafkacpp.h>

#include <atomic>
#include <map>
#include <memory>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"
#include "base/period.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/ingestor.h"
#include "ingest/publisher.h"
#include "ledger/verify.h"
#include "settlement/engine.h"
#include "testsupport/kafka_test.h"

namespace gpuledger {
namespace {

namespace v1 = gpuledger::v1;
constexpr int64_t kHour = 3'600'000;
constexpr int kPartitions = 3;
const base::Period kPeriod{2026, 3};

struct Grant {
  std::string allocation_id;
  std::string institution_id;
  std::string csp_id;
  v1::InstitutionType type;
  int64_t krw_per_gpu_hour;
  int64_t copay_bp;
  uint32_t gpus;
};

// Three allocations with distinct institutions, programs and prices, on two CSPs.
const Grant kGrants[] = {
    {"alloc-uni", "uni", "csp-a", v1::ACADEMIA, 5'100, 0, 16},
    {"alloc-sme", "sme", "csp-a", v1::SME, 4'800, 900, 4},
    {"alloc-big", "big", "csp-b", v1::LARGE_ENTERPRISE, 7'900, 5'000, 8},
};
const v1::Program kPrograms[] = {v1::LEASE_RESEARCH, v1::GOV_ADVANCED, v1::LEASE_HPC};

ingest::EncodedEvent Encode(const std::string& topic, const std::string& key,
                            const google::protobuf::Message& m) {
  return {topic, key, m.SerializeAsString()};
}

std::vector<ingest::EncodedEvent> RegistryEvents(const ingest::TopicNames& topics) {
  std::vector<ingest::EncodedEvent> out;
  int n = 0;
  auto add = [&](auto fill) {
    v1::RegistryEvent e;
    e.set_schema_version(1);
    e.set_event_id(absl::StrCat("reg-", ++n));
    fill(&e);
    out.push_back(Encode(topics.Registry(), e.event_id(), e));
  };
  for (size_t i = 0; i < std::size(kGrants); ++i) {
    const Grant& g = kGrants[i];
    add([&](v1::RegistryEvent* e) {
      auto* x = e->mutable_institution();
      x->set_institution_id(g.institution_id);
      x->set_name(g.institution_id);
      x->set_type(g.type);
    });
    add([&](v1::RegistryEvent* e) {
      auto* x = e->mutable_copay_policy();
      x->set_institution_type(g.type);
      x->set_copay_bp(static_cast<uint32_t>(g.copay_bp));
    });
    add([&](v1::RegistryEvent* e) {
      auto* x = e->mutable_rate_card();
      x->set_program(kPrograms[i]);
      x->set_gpu_model(v1::H200);
      x->set_krw_per_gpu_hour(g.krw_per_gpu_hour);
    });
    add([&](v1::RegistryEvent* e) {
      auto* x = e->mutable_allocation();
      x->set_allocation_id(g.allocation_id);
      x->set_institution_id(g.institution_id);
      x->set_program(kPrograms[i]);
      x->set_csp_id(g.csp_id);
      x->set_gpu_model(v1::H200);
      x->set_gpu_count(g.gpus);
      x->set_start_ms(kPeriod.StartMs());
      x->set_end_ms(kPeriod.EndMs());
    });
  }
  return out;
}

class KafkaRoundTripTest : public testing::KafkaTest {
 protected:
  KafkaRoundTripTest() : KafkaTest("rt") {}

  absl::StatusOr<ingest::IngestStats> Ingest(ledger::Ledger& l) {
    ingest::IngestOptions o;
    o.brokers = brokers_;
    o.group_id = absl::StrCat("rt-", seed_);
    o.stop_at_end = true;
    o.batch_max_messages = 500;
    o.limits.topics = topics_;
    std::atomic<bool> stop{false};
    return ingest::RunIngest(o, l, stop);
  }
};

TEST_F(KafkaRoundTripTest, DuplicatesCountedOnceOffsetsAtEndAndInvoiceTotalsExact) {
  std::mt19937_64 rng(seed_);
  const std::vector<ingest::EncodedEvent> registry = RegistryEvents(topics_);

  // 1,500 distinct usage events inside the period, and 10% of them sent a second time. Each
  // allocation's intervals sit in consecutive one-hour slots, so none overlap (the validator
  // would rightly refuse overlapping ones).
  constexpr int kDistinct = 1'500;
  std::vector<ingest::EncodedEvent> usage;
  std::map<std::string, int64_t> gpu_ms_by_allocation;
  std::map<std::string, uint64_t> producer_seq;
  std::map<std::string, int64_t> slot;
  for (int i = 0; i < kDistinct; ++i) {
    const Grant& g = kGrants[rng() % std::size(kGrants)];
    v1::UsageEvent e;
    e.set_schema_version(1);
    e.set_event_id(absl::StrCat("u-", i));
    e.set_csp_id(g.csp_id);
    e.set_producer_id("meter");
    e.set_producer_seq(++producer_seq[g.csp_id]);
    auto* u = e.mutable_usage();
    u->set_allocation_id(g.allocation_id);
    u->set_gpu_model(v1::H200);
    u->set_gpu_count(1 + static_cast<uint32_t>(rng() % g.gpus));
    const int64_t start = kPeriod.StartMs() + slot[g.allocation_id]++ * kHour +
                          static_cast<int64_t>(rng() % (kHour / 2));
    const int64_t length = 1 + static_cast<int64_t>(rng() % (kHour / 2));
    u->set_start_ms(start);
    u->set_end_ms(start + length);
    u->set_node_id(absl::StrCat("node-", i % 7));
    gpu_ms_by_allocation[g.allocation_id] += static_cast<int64_t>(u->gpu_count()) * length;
    usage.push_back(Encode(topics_.Usage(g.csp_id), g.allocation_id, e));
  }
  // The operator's registry goes first and is ingested before usage arrives, so that no usage
  // waits for its allocation (parking is tested in the validator's tests).
  std::vector<ingest::EncodedEvent> stream = usage;
  int duplicates = 0;
  for (int i = 0; i < kDistinct; i += 10, ++duplicates) stream.push_back(usage[i]);

  ingest::PublishOptions po;
  po.brokers = brokers_;
  po.topics = topics_;
  po.partitions_if_created = kPartitions;
  auto published_registry = ingest::Publish(registry, po);
  ASSERT_TRUE(published_registry.ok()) << published_registry.status();
  {
    auto l = ledger::Ledger::Open(dir_.Sub("ledger"), {});
    ASSERT_TRUE(l.ok()) << l.status();
    auto first = Ingest(**l);
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_EQ(first->accepted, registry.size());
  }
  auto published = ingest::Publish(stream, po);
  ASSERT_TRUE(published.ok()) << published.status();
  ASSERT_EQ(published->published, stream.size());
  published->topics.push_back(topics_.Registry());

  auto ledger = ledger::Ledger::Open(dir_.Sub("ledger"), {});
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  auto stats = Ingest(**ledger);
  ASSERT_TRUE(stats.ok()) << stats.status();

  // Every distinct event exactly once; duplicates counted, not recorded.
  const uint64_t distinct = registry.size() + kDistinct;
  EXPECT_EQ(stats->accepted, static_cast<uint64_t>(kDistinct));
  EXPECT_EQ(stats->consumed, stream.size());
  EXPECT_EQ(stats->parked, 0u);
  EXPECT_EQ(stats->duplicates, static_cast<uint64_t>(duplicates));
  EXPECT_EQ(stats->rejected, 0u);
  EXPECT_EQ((*ledger)->head().seq, distinct);
  std::set<std::pair<std::string, std::string>> seen;
  ASSERT_TRUE(
      (*ledger)
          ->Scan(1,
                 [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
                   EXPECT_TRUE(seen.insert({e.entry.source_id(), e.entry.event_id()}).second)
                       << "twice: " << e.entry.event_id();
                   return true;
                 })
          .ok());
  EXPECT_EQ(seen.size(), distinct);
  auto report = ledger::Verify(**ledger);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok) << report->problem;

  // The stored offsets are the end of every partition that was written.
  const ledger::OffsetMap stored = (*ledger)->Offsets();
  for (const std::string& topic : published->topics) {
    for (const auto& [partition, high] : testing::HighWatermarks(brokers_, topic)) {
      auto it = stored.find({topic, partition});
      EXPECT_EQ(it == stored.end() ? 0 : it->second, high) << topic << "[" << partition << "]";
    }
  }

  // Invoice totals recomputed here: one line per allocation, the rounding rule written out.
  int64_t want_list = 0;
  int64_t want_copay = 0;
  for (const Grant& g : kGrants) {
    const __int128 gpu_ms = gpu_ms_by_allocation[g.allocation_id];
    const int64_t list = static_cast<int64_t>((gpu_ms * g.krw_per_gpu_hour + kHour / 2) / kHour);
    want_list += list;
    want_copay += (list * g.copay_bp + 5'000) / 10'000;
  }
  auto settled = settlement::OpenSettlement(dir_.Sub("settlement"), **ledger, {});
  ASSERT_TRUE(settled.ok()) << settled.status();
  auto docs = settled->engine->Documents(kPeriod);
  ASSERT_TRUE(docs.ok()) << docs.status();
  int64_t list = 0, copay = 0, subsidy = 0;
  // Every institution's lines: the invoices, and those of institutions that owe nothing.
  for (const auto* invoices : {&docs->invoices(), &docs->nothing_owed()}) {
    for (const auto& inv : *invoices) {
      list += inv.totals().list_krw();
      copay += inv.totals().copay_krw();
      subsidy += inv.totals().subsidy_krw();
    }
  }
  EXPECT_EQ(list, want_list);
  EXPECT_EQ(copay, want_copay);
  EXPECT_EQ(subsidy, want_list - want_copay);
  EXPECT_EQ(docs->invoices_size() + docs->nothing_owed_size(),
            static_cast<int>(std::size(kGrants)));
  EXPECT_EQ(docs->unpriced_size(), 0);

  // A restart reads nothing again; a CSP resending old events adds nothing.
  auto again = Ingest(**ledger);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->consumed, 0u);
  std::vector<ingest::EncodedEvent> resent(usage.begin(), usage.begin() + 100);
  ASSERT_TRUE(ingest::Publish(resent, po).ok());
  auto after_resend = Ingest(**ledger);
  ASSERT_TRUE(after_resend.ok()) << after_resend.status();
  EXPECT_EQ(after_resend->consumed, 100u);
  EXPECT_EQ(after_resend->duplicates, 100u);
  EXPECT_EQ((*ledger)->head().seq, distinct);
}

}  // namespace
}  // namespace gpuledger
