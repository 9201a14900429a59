#include "ingest/decide.h"

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/reasons.h"
#include "ingest/topics.h"

namespace gpuledger::ingest {
namespace {

namespace v1 = gpuledger::v1;

constexpr int64_t kT0 = 1'772'000'000'000;  // early March 2026

v1::UsageEvent GoodUsage() {
  v1::UsageEvent e;
  e.set_schema_version(1);
  e.set_event_id("evt-1");
  e.set_csp_id("csp-a");
  e.set_producer_id("meter-1");
  e.set_producer_seq(1);
  auto* u = e.mutable_usage();
  u->set_allocation_id("alloc-1");
  u->set_gpu_model(v1::H200);
  u->set_gpu_count(8);
  u->set_start_ms(kT0);
  u->set_end_ms(kT0 + 60'000);
  u->set_node_id("node-1");
  return e;
}

RawMessage Msg(const std::string& topic, const std::string& payload) {
  return RawMessage{topic, 0, 42, 123, payload};
}

TEST(DecideTest, AcceptsAWellFormedUsageEvent) {
  const auto c = Decide(Msg(TopicNames().Usage("csp-a"), GoodUsage().SerializeAsString()), {}, 7);
  EXPECT_EQ(c.reason_code, "") << c.reason_detail;
  EXPECT_EQ(c.source, v1::SOURCE_USAGE);
  EXPECT_EQ(c.source_id, "csp-a");
  EXPECT_EQ(c.event_id, "evt-1");
  EXPECT_EQ(c.offset, 42);
  EXPECT_EQ(c.kafka_timestamp_ms, 123);
  EXPECT_EQ(c.recorded_at_ms, 7);
  EXPECT_FALSE(c.canonical.empty());
}

struct UsageCase {
  const char* name;
  std::function<void(v1::UsageEvent*)> mutate;
  const char* want_reason;
};

TEST(DecideTest, RejectsEachStructuralFaultWithItsReason) {
  const UsageCase cases[] = {
      {"schema v2", [](auto* e) { e->set_schema_version(2); }, reason::kUnknownSchemaVersion},
      {"no event id", [](auto* e) { e->clear_event_id(); }, reason::kMissingField},
      {"event id with space", [](auto* e) { e->set_event_id("a b"); }, reason::kInvalidField},
      {"event id too long", [](auto* e) { e->set_event_id(std::string(129, 'x')); },
       reason::kInvalidField},
      {"no csp", [](auto* e) { e->clear_csp_id(); }, reason::kMissingField},
      {"other csp", [](auto* e) { e->set_csp_id("csp-b"); }, reason::kCspTopicMismatch},
      {"no producer", [](auto* e) { e->clear_producer_id(); }, reason::kMissingField},
      {"producer seq 0", [](auto* e) { e->set_producer_seq(0); }, reason::kInvalidField},
      {"no body", [](auto* e) { e->clear_body(); }, reason::kMissingField},
      {"no allocation", [](auto* e) { e->mutable_usage()->clear_allocation_id(); },
       reason::kMissingField},
      {"no model", [](auto* e) { e->mutable_usage()->clear_gpu_model(); }, reason::kMissingField},
      {"unknown model",
       [](auto* e) { e->mutable_usage()->set_gpu_model(static_cast<v1::GpuModel>(99)); },
       reason::kInvalidField},
      {"zero gpus", [](auto* e) { e->mutable_usage()->set_gpu_count(0); }, reason::kInvalidField},
      {"zero duration", [](auto* e) { e->mutable_usage()->set_end_ms(kT0); },
       reason::kEmptyInterval},
      {"negative duration", [](auto* e) { e->mutable_usage()->set_end_ms(kT0 - 1); },
       reason::kEmptyInterval},
      {"too long", [](auto* e) { e->mutable_usage()->set_end_ms(kT0 + 32LL * 86'400'000); },
       reason::kDurationTooLong},
      {"self correction",
       [](auto* e) {
         e->mutable_correction()->set_target_event_id(e->event_id());
         e->mutable_correction()->set_allocation_id("alloc-1");
       },
       reason::kInvalidField},
      {"correction without target", [](auto* e) { e->mutable_correction(); },
       reason::kMissingField},
      {"correction without allocation",
       [](auto* e) { e->mutable_correction()->set_target_event_id("evt-0"); },
       reason::kMissingField},
      {"correction moving usage to another allocation",
       [](auto* e) {
         auto replacement = e->usage();
         auto* c = e->mutable_correction();
         c->set_target_event_id("evt-0");
         c->set_allocation_id("alloc-2");
         *c->mutable_replacement() = replacement;
       },
       reason::kInvalidField},
      {"own use without gpus",
       [](auto* e) {
         auto* o = e->mutable_own_use();
         o->set_program(v1::GOV_ADVANCED);
         o->set_gpu_model(v1::B200);
         o->set_start_ms(kT0);
         o->set_end_ms(kT0 + 10);
       },
       reason::kInvalidField},
  };
  for (const auto& tc : cases) {
    v1::UsageEvent e = GoodUsage();
    tc.mutate(&e);
    const auto c = Decide(Msg(TopicNames().Usage("csp-a"), e.SerializeAsString()), {}, 0);
    EXPECT_EQ(c.reason_code, tc.want_reason) << tc.name << ": " << c.reason_detail;
    EXPECT_FALSE(c.reason_detail.empty()) << tc.name;
  }
}

// Bytes that do not decode have no event id, so they are never deduplicated; but they came on
// csp-a's topic, so they are csp-a's to see (its rejected list, its notices).
TEST(DecideTest, MalformedBytesOnACspsTopicAreThatCspsWithoutAnEventId) {
  const auto c =
      Decide(Msg(TopicNames().Usage("csp-a"), std::string("\xff\xff\xff\xff", 4)), {}, 0);
  EXPECT_EQ(c.reason_code, reason::kMalformed);
  EXPECT_EQ(c.source_id, "csp-a");
  EXPECT_TRUE(c.event_id.empty());
  v1::UsageEvent bad_id = GoodUsage();
  bad_id.set_event_id(
      "a\x1f"
      "b");
  const auto d = Decide(Msg(TopicNames().Usage("csp-a"), bad_id.SerializeAsString()), {}, 0);
  EXPECT_EQ(d.reason_code, reason::kInvalidField);
  EXPECT_EQ(d.source_id, "csp-a");
  EXPECT_TRUE(d.event_id.empty());
}

// Another message's bytes parse as protobuf, with fields of the wrong numbers or types: a usage
// event on the registry topic must not become an institution record, nor the reverse.
TEST(DecideTest, AnotherMessagesBytesAreMalformedNotReadAsSomethingElse) {
  const auto on_registry =
      Decide(Msg(TopicNames().Registry(), GoodUsage().SerializeAsString()), {}, 0);
  EXPECT_EQ(on_registry.reason_code, reason::kMalformed) << on_registry.reason_detail;
  EXPECT_NE(on_registry.reason_detail.find("does not define"), std::string::npos);
  v1::RegistryEvent institution;
  institution.set_schema_version(1);
  institution.set_event_id("reg-1");
  institution.mutable_institution()->set_institution_id("inst-1");
  institution.mutable_institution()->set_name("Nari University");
  institution.mutable_institution()->set_type(v1::ACADEMIA);
  const auto on_usage =
      Decide(Msg(TopicNames().Usage("csp-a"), institution.SerializeAsString()), {}, 0);
  EXPECT_EQ(on_usage.reason_code, reason::kMalformed) << on_usage.reason_detail;
  // The same institution on its own topic is fine.
  EXPECT_EQ(
      Decide(Msg(TopicNames().Registry(), institution.SerializeAsString()), {}, 0).reason_code, "");
}

// The registry's identity is "operator": no CSP may have it, or its event ids would collide with
// the operator's in the dedup index.
TEST(DecideTest, TheOperatorIsNeverACsp) {
  v1::UsageEvent e = GoodUsage();
  e.set_csp_id("operator");
  EXPECT_EQ(Decide(Msg(TopicNames().Usage("operator"), e.SerializeAsString()), {}, 0).reason_code,
            reason::kUnknownTopic);
  v1::RegistryEvent r;
  r.set_schema_version(1);
  r.set_event_id("reg-2");
  auto* a = r.mutable_allocation();
  a->set_allocation_id("alloc-1");
  a->set_institution_id("inst-1");
  a->set_program(v1::GOV_ADVANCED);
  a->set_gpu_model(v1::H200);
  a->set_gpu_count(8);
  a->set_start_ms(kT0);
  a->set_end_ms(kT0 + 86'400'000);
  for (const char* csp : {"operator", "csp a", "csp/a", "", "csp\x1f"}) {
    a->set_csp_id(csp);
    EXPECT_NE(Decide(Msg(TopicNames().Registry(), r.SerializeAsString()), {}, 0).reason_code, "")
        << csp;
  }
  a->set_csp_id("csp-a");
  EXPECT_EQ(Decide(Msg(TopicNames().Registry(), r.SerializeAsString()), {}, 0).reason_code, "");
}

TEST(DecideTest, IdentityIsTheTopicsCspNotTheClaimedOne) {
  v1::UsageEvent e = GoodUsage();
  e.set_csp_id("csp-b");
  const auto c = Decide(Msg(TopicNames().Usage("csp-a"), e.SerializeAsString()), {}, 0);
  EXPECT_EQ(c.reason_code, reason::kCspTopicMismatch);
  EXPECT_EQ(c.source_id, "csp-a");
}

TEST(DecideTest, TopicPrefixNamespacesEveryTopic) {
  ValidationLimits limits;
  limits.topics = TopicNames("staging.");
  EXPECT_EQ(limits.topics.Usage("csp-a"), "staging.gpuledger.usage.csp-a");
  EXPECT_EQ(limits.topics.UsagePattern(), "^staging\\.gpuledger\\.usage\\..+");
  const auto c =
      Decide(Msg("staging.gpuledger.usage.csp-a", GoodUsage().SerializeAsString()), limits, 0);
  EXPECT_EQ(c.reason_code, "") << c.reason_detail;
  EXPECT_EQ(Decide(Msg(TopicNames().Usage("csp-a"), GoodUsage().SerializeAsString()), limits, 0)
                .reason_code,
            reason::kUnknownTopic);
  EXPECT_TRUE(TopicNames::CheckPrefix("").ok());
  EXPECT_TRUE(TopicNames::CheckPrefix("t-1_x.").ok());
  EXPECT_FALSE(TopicNames::CheckPrefix("staging").ok());
  EXPECT_FALSE(TopicNames::CheckPrefix("a.b.").ok());
  EXPECT_FALSE(TopicNames::CheckPrefix(".").ok());
}

TEST(DecideTest, UnknownTopicIsRejected) {
  const auto c = Decide(Msg("other", GoodUsage().SerializeAsString()), {}, 0);
  EXPECT_EQ(c.reason_code, reason::kUnknownTopic);
}

TEST(DecideTest, RegistryEventsAreCheckedToo) {
  v1::RegistryEvent r;
  r.set_schema_version(1);
  r.set_event_id("reg-1");
  auto* rate = r.mutable_rate_card();
  rate->set_program(v1::GOV_ADVANCED);
  rate->set_gpu_model(v1::H200);
  rate->set_krw_per_gpu_hour(4'500);
  auto ok = Decide(Msg(TopicNames().Registry(), r.SerializeAsString()), {}, 0);
  EXPECT_EQ(ok.reason_code, "") << ok.reason_detail;
  EXPECT_EQ(ok.source, v1::SOURCE_REGISTRY);
  EXPECT_EQ(ok.source_id, kOperatorSourceId);

  rate->set_krw_per_gpu_hour(0);
  EXPECT_EQ(Decide(Msg(TopicNames().Registry(), r.SerializeAsString()), {}, 0).reason_code,
            reason::kInvalidField);
  r.mutable_copay_policy()->set_institution_type(v1::SME);
  r.mutable_copay_policy()->set_copay_bp(10'001);
  EXPECT_EQ(Decide(Msg(TopicNames().Registry(), r.SerializeAsString()), {}, 0).reason_code,
            reason::kInvalidField);
  // A contract: a cap up to 100%, and how its excess is settled, one of the two rules.
  auto* contract = r.mutable_csp_contract();
  contract->set_csp_id("csp-a");
  contract->set_own_use_cap_bp(10'000);
  contract->set_own_use_excess(v1::OWN_USE_EXCESS_NETTED);
  EXPECT_EQ(Decide(Msg(TopicNames().Registry(), r.SerializeAsString()), {}, 0).reason_code, "");
  contract->set_own_use_excess(static_cast<v1::OwnUseExcess>(2));
  auto bad = Decide(Msg(TopicNames().Registry(), r.SerializeAsString()), {}, 0);
  EXPECT_EQ(bad.reason_code, reason::kInvalidField);
  EXPECT_NE(bad.reason_detail.find("own_use_excess"), std::string::npos) << bad.reason_detail;
  // A pool's pricing: per reserved capacity only on the leases (the state owns GOV_ADVANCED's).
  {
    v1::RegistryEvent pool_event = r;
    auto* pool = pool_event.mutable_gpu_pool();
    pool->set_csp_id("csp-a");
    pool->set_program(v1::LEASE_HPC);
    pool->set_gpu_model(v1::H200);
    pool->set_gpu_count(8);
    pool->set_lease_pricing(v1::LEASE_PRICING_RESERVED);
    auto decide = [&] {
      return Decide(Msg(TopicNames().Registry(), pool_event.SerializeAsString()), {}, 0);
    };
    EXPECT_EQ(decide().reason_code, "") << decide().reason_detail;
    pool->set_program(v1::LEASE_RESEARCH);
    EXPECT_EQ(decide().reason_code, "") << decide().reason_detail;
    pool->set_program(v1::GOV_ADVANCED);
    EXPECT_EQ(decide().reason_code, reason::kInvalidField);
    EXPECT_NE(decide().reason_detail.find("leased pools"), std::string::npos)
        << decide().reason_detail;
    pool->set_lease_pricing(v1::LEASE_PRICING_DELIVERED);
    EXPECT_EQ(decide().reason_code, "");
    pool->set_lease_pricing(static_cast<v1::LeasePricing>(2));
    EXPECT_EQ(decide().reason_code, reason::kInvalidField);
    EXPECT_NE(decide().reason_detail.find("lease_pricing"), std::string::npos)
        << decide().reason_detail;
  }
  // A transfer names the allocation continuing it, and another CSP, institution or both.
  {
    v1::RegistryEvent move = r;
    auto* a = move.mutable_allocation_amendment();
    a->set_allocation_id("al-1");
    a->set_effective_from_ms(1'772'000'000'000);
    auto* t = a->mutable_transfer();
    auto decide = [&] {
      return Decide(Msg(TopicNames().Registry(), move.SerializeAsString()), {}, 0);
    };
    EXPECT_EQ(decide().reason_code, reason::kMissingField);  // no new id
    t->set_new_allocation_id("al-2");
    EXPECT_EQ(decide().reason_code, reason::kMissingField);  // moves nowhere
    EXPECT_NE(decide().reason_detail.find("to_csp_id or to_institution_id"), std::string::npos)
        << decide().reason_detail;
    t->set_to_institution_id("inst-2");
    EXPECT_EQ(decide().reason_code, "") << decide().reason_detail;
    t->set_to_csp_id("csp-b");
    EXPECT_EQ(decide().reason_code, "") << decide().reason_detail;
    t->set_to_csp_id(kOperatorSourceId);  // the registry's identity is no CSP
    EXPECT_EQ(decide().reason_code, reason::kInvalidField);
  }
  contract->set_own_use_excess(v1::OWN_USE_EXCESS_REPORTED);
  contract->set_own_use_cap_bp(10'001);
  EXPECT_EQ(Decide(Msg(TopicNames().Registry(), r.SerializeAsString()), {}, 0).reason_code,
            reason::kInvalidField);
  r.clear_body();
  EXPECT_EQ(Decide(Msg(TopicNames().Registry(), r.SerializeAsString()), {}, 0).reason_code,
            reason::kMissingField);
}

// A close's usage offsets: partitions of usage topics, each once, from 0. One that names another
// topic would hold the close forever (ingest waits for offsets it never reads).
// A close marker (written by `settle close` to each usage partition) names a month, and is
// outside every metering sequence: producer_seq 0 is allowed for it, and for nothing else.
TEST(DecideTest, CloseMarkersAreTheOperatorsAndNameAMonth) {
  v1::UsageEvent marker = GoodUsage();
  marker.set_producer_id("gpuledger-settle-close");
  marker.set_producer_seq(0);
  marker.mutable_close_marker()->set_period("2026-03");
  auto decide = [](const v1::UsageEvent& e) {
    return Decide(Msg(TopicNames().Usage("csp-a"), e.SerializeAsString()), {}, 7);
  };
  EXPECT_EQ(decide(marker).reason_code, "") << decide(marker).reason_detail;
  EXPECT_EQ(decide(marker).source_id, "csp-a");
  marker.mutable_close_marker()->set_period("2026-13");
  EXPECT_EQ(decide(marker).reason_code, reason::kInvalidField);
  EXPECT_NE(decide(marker).reason_detail.find("close_marker.period"), std::string::npos);
  marker.mutable_close_marker()->set_period("");
  EXPECT_EQ(decide(marker).reason_code, reason::kInvalidField);
  v1::UsageEvent usage = GoodUsage();
  usage.set_producer_seq(0);
  EXPECT_EQ(decide(usage).reason_code, reason::kInvalidField);
}

TEST(DecideTest, ACloseNamesUsagePartitionsOnce) {
  auto decide = [](const std::function<void(v1::PeriodClose*)>& mutate) {
    v1::RegistryEvent r;
    r.set_schema_version(1);
    r.set_event_id("close-1");
    v1::PeriodClose* c = r.mutable_period_close();
    c->set_period("2026-03");
    for (int p : {0, 1}) {
      v1::UsageOffset* o = c->add_usage_offsets();
      o->set_topic(TopicNames().Usage("csp-a"));
      o->set_partition(p);
      o->set_offset(p == 0 ? 0 : 1'000);
    }
    mutate(c);
    return Decide(Msg(TopicNames().Registry(), r.SerializeAsString()), {}, 0);
  };
  EXPECT_EQ(decide([](v1::PeriodClose*) {}).reason_code, "");
  EXPECT_EQ(decide([](v1::PeriodClose* c) { c->clear_usage_offsets(); }).reason_code, "");
  EXPECT_EQ(decide([](v1::PeriodClose* c) {
              c->mutable_usage_offsets(1)->set_topic(TopicNames().Registry());
            }).reason_code,
            reason::kInvalidField);
  EXPECT_EQ(decide([](v1::PeriodClose* c) {
              c->mutable_usage_offsets(1)->set_topic(TopicNames().Usage("operator"));
            }).reason_code,
            reason::kInvalidField);
  EXPECT_EQ(
      decide([](v1::PeriodClose* c) { c->mutable_usage_offsets(1)->set_partition(0); }).reason_code,
      reason::kInvalidField);
  EXPECT_EQ(decide([](v1::PeriodClose* c) {
              c->mutable_usage_offsets(1)->set_partition(-1);
            }).reason_code,
            reason::kInvalidField);
  EXPECT_EQ(
      decide([](v1::PeriodClose* c) { c->mutable_usage_offsets(1)->set_offset(-1); }).reason_code,
      reason::kInvalidField);
  EXPECT_EQ(decide([](v1::PeriodClose* c) {
              for (int p = 2; p < 10'000; ++p) {
                v1::UsageOffset* o = c->add_usage_offsets();
                o->set_topic(TopicNames().Usage("csp-b"));
                o->set_partition(p);
              }
            }).reason_code,
            "");
  EXPECT_EQ(decide([](v1::PeriodClose* c) {
              for (int p = 2; p < 10'001; ++p) {
                v1::UsageOffset* o = c->add_usage_offsets();
                o->set_topic(TopicNames().Usage("csp-b"));
                o->set_partition(p);
              }
            }).reason_code,
            reason::kInvalidField);
}

TEST(DecideTest, AReratingIsCheckedWhenDecoded) {
  auto decide = [](const std::function<void(v1::Rerating*)>& mutate) {
    v1::RegistryEvent r;
    r.set_schema_version(1);
    r.set_event_id("rerate-1");
    v1::Rerating* x = r.mutable_rerating();
    x->set_program(v1::GOV_ADVANCED);
    x->set_from_ms(kT0);
    x->set_to_ms(kT0 + 1);
    x->set_reason("late rate card");
    mutate(x);
    return Decide(Msg(TopicNames().Registry(), r.SerializeAsString()), {}, 0).reason_code;
  };
  EXPECT_EQ(decide([](v1::Rerating*) {}), "");
  EXPECT_EQ(decide([](v1::Rerating* x) { x->set_gpu_model(v1::B200); }), "");
  EXPECT_EQ(decide([](v1::Rerating* x) { x->set_program(v1::PROGRAM_UNSPECIFIED); }),
            reason::kMissingField);
  EXPECT_EQ(decide([](v1::Rerating* x) { x->set_gpu_model(static_cast<v1::GpuModel>(99)); }),
            reason::kInvalidField);
  EXPECT_EQ(decide([](v1::Rerating* x) { x->set_to_ms(kT0); }), reason::kEmptyInterval);
  EXPECT_EQ(decide([](v1::Rerating* x) { x->set_from_ms(0); }), reason::kTimeOutOfRange);
  EXPECT_EQ(decide([](v1::Rerating* x) { x->set_reason(std::string(1'024, 'a')); }), "");
  EXPECT_EQ(decide([](v1::Rerating* x) { x->set_reason(std::string(1'025, 'a')); }),
            reason::kInvalidField);
  EXPECT_EQ(decide([](v1::Rerating* x) { x->set_reason("bad\x01"); }), reason::kInvalidField);
}

TEST(DecideTest, EveryReasonHasMeaningAndAdvice) {
  for (const auto& r : reason::AllReasons()) {
    EXPECT_FALSE(r.meaning.empty()) << r.code;
    EXPECT_FALSE(r.what_to_do.empty()) << r.code;
  }
  EXPECT_GE(reason::AllReasons().size(), 9u);
}

TEST(DecideTest, EveryReasonIsInTheOperatorsTable) {
  std::ifstream doc(GPULEDGER_REASON_CODES_DOC);
  ASSERT_TRUE(doc) << GPULEDGER_REASON_CODES_DOC;
  std::stringstream text;
  text << doc.rdbuf();
  for (const auto& r : reason::AllReasons()) {
    EXPECT_NE(text.str().find("| `" + std::string(r.code) + "` |"), std::string::npos)
        << r.code << " is missing from docs/REASON_CODES.md";
  }
}

// ---- CloudEvents on Kafka (docs/FORMATS.md) ----

using Headers = std::vector<std::pair<std::string, std::string>>;

RawMessage CloudEventMsg(Headers headers, const std::string& value) {
  RawMessage m = Msg(TopicNames().Usage("csp-a"), value);
  m.headers = std::move(headers);
  return m;
}

Headers BinaryHeaders(const std::string& content_type = "application/json") {
  return {{"ce_specversion", "1.0"},
          {"ce_type", "gpuledger.v1.UsageEvent"},
          {"ce_id", "evt-1"},
          {"ce_source", "meter-1"},
          {"content-type", content_type}};
}

// GoodUsage() as JSON data, without what the attributes and the topic give.
constexpr char kUsageData[] =
    R"({"producerSeq":1,"usage":{"allocationId":"alloc-1","gpuModel":"H200","gpuCount":8,)"
    R"("startMs":1772000000000,"endMs":"2026-02-25T06:14:20+00:00","nodeId":"node-1"}})";

TEST(DecideCloudEventsTest, EachModeDecidesAsTheProtobufMessageWould) {
  const ledger::Candidate proto =
      Decide(Msg(TopicNames().Usage("csp-a"), GoodUsage().SerializeAsString()), {}, 7);
  ASSERT_EQ(proto.reason_code, "") << proto.reason_detail;
  EXPECT_TRUE(proto.decoded_event.empty());
  const std::string envelope =
      std::string(R"({"specversion":"1.0","type":"gpuledger.v1.UsageEvent","id":"evt-1",)") +
      R"("source":"meter-1","data":)" + kUsageData + "}";
  v1::UsageEvent without_attributes = GoodUsage();
  without_attributes.clear_event_id();
  without_attributes.clear_producer_id();
  without_attributes.clear_csp_id();
  const std::pair<RawMessage, const char*> modes[] = {
      {CloudEventMsg(BinaryHeaders(), kUsageData), "binary, JSON data"},
      {CloudEventMsg(BinaryHeaders("application/protobuf"), without_attributes.SerializeAsString()),
       "binary, protobuf data"},
      {CloudEventMsg({{"content-type", "application/cloudevents+json; charset=utf-8"}}, envelope),
       "structured"},
  };
  for (const auto& [msg, name] : modes) {
    SCOPED_TRACE(name);
    const Decoded d = Decode(msg, {}, 7);
    const ledger::Candidate& c = d.candidate;
    EXPECT_EQ(c.reason_code, "") << c.reason_detail;
    EXPECT_EQ(c.source_id, "csp-a");
    EXPECT_EQ(c.event_id, "evt-1");
    EXPECT_EQ(c.producer_id, "meter-1");
    // The same content as the protobuf message: a duplicate of it, not a conflict.
    EXPECT_EQ(c.canonical, proto.canonical);
    EXPECT_EQ(c.decoded_event, c.canonical);
    EXPECT_EQ(c.payload, msg.payload);  // kept as consumed
    EXPECT_EQ(c.headers, msg.headers);
    ASSERT_NE(d.usage(), nullptr);
    EXPECT_EQ(d.usage()->csp_id(), "csp-a");
  }
}

TEST(DecideCloudEventsTest, WhatIsNotAUsageCloudEventIsMalformedWithItsReason) {
  Headers wrong_type = BinaryHeaders();
  wrong_type[1].second = "com.example.Other";
  Headers twice = BinaryHeaders();
  twice.emplace_back("ce_id", "evt-2");
  Headers bad_name = BinaryHeaders();
  bad_name.emplace_back("ce_Trace-Id", "x");
  Headers datacontenttype = BinaryHeaders();
  datacontenttype.emplace_back("ce_datacontenttype", "application/json");
  Headers no_specversion = BinaryHeaders();
  no_specversion.erase(no_specversion.begin());
  Headers other_csp_topic = BinaryHeaders();
  const struct {
    const char* name;
    RawMessage msg;
    const char* want_reason;
    const char* want_detail;
  } cases[] = {
      {"other type", CloudEventMsg(wrong_type, kUsageData), reason::kMalformed,
       "is not gpuledger.v1.UsageEvent"},
      {"attribute twice", CloudEventMsg(twice, kUsageData), reason::kMalformed, "given twice"},
      {"bad attribute name", CloudEventMsg(bad_name, kUsageData), reason::kMalformed,
       "not a CloudEvents attribute name"},
      {"ce_datacontenttype", CloudEventMsg(datacontenttype, kUsageData), reason::kMalformed,
       "content-type header"},
      {"no specversion", CloudEventMsg(no_specversion, kUsageData), reason::kMalformed,
       "without ce_specversion"},
      {"batch", CloudEventMsg({{"Content-Type", "application/cloudevents-batch+json"}}, "[]"),
       reason::kMalformed, "batch"},
      {"structured, not JSON",
       CloudEventMsg({{"content-type", "application/cloudevents+json"}}, "{"), reason::kMalformed,
       "not JSON"},
      {"structured with ce_ headers",
       CloudEventMsg({{"content-type", "application/cloudevents+json"}, {"ce_id", "x"}}, "{}"),
       reason::kMalformed, "no ce_ headers"},
      {"unknown member", CloudEventMsg(BinaryHeaders(), R"({"gpuHours":1})"), reason::kMalformed,
       "gpuHours"},
      {"protobuf data with an unknown field",
       CloudEventMsg(BinaryHeaders("application/protobuf"), std::string("\xf8\x07\x01", 3)),
       reason::kMalformed, "does not define"},
      {"data names another CSP",
       CloudEventMsg(other_csp_topic, std::string(R"({"cspId":"csp-b",)") + (kUsageData + 1)),
       reason::kCspTopicMismatch, ""},
      {"no data", CloudEventMsg(BinaryHeaders(), ""), reason::kMalformed, ""},
  };
  for (const auto& tc : cases) {
    SCOPED_TRACE(tc.name);
    const ledger::Candidate c = Decide(tc.msg, {}, 7);
    EXPECT_EQ(c.reason_code, tc.want_reason) << c.reason_detail;
    EXPECT_NE(c.reason_detail.find(tc.want_detail), std::string::npos) << c.reason_detail;
    EXPECT_EQ(c.headers, tc.msg.headers);
    EXPECT_EQ(c.source_id, "csp-a");
  }
}

TEST(DecideCloudEventsTest, OnlyCloudEventsHeadersAreRecorded) {
  EXPECT_TRUE(RecordedHeader("ce_id"));
  EXPECT_TRUE(RecordedHeader("content-type"));
  EXPECT_TRUE(RecordedHeader("Content-Type"));
  EXPECT_FALSE(RecordedHeader("traceparent"));
  EXPECT_FALSE(RecordedHeader("ce_\xff"));  // the entry keeps names as UTF-8 text
  EXPECT_FALSE(RecordedHeader(std::string("ce_\0x", 5)));
  EXPECT_FALSE(RecordedHeader(""));
  EXPECT_FALSE(RecordedHeader("ce_" + std::string(100, 'a')));
  // A protobuf message with an unrelated content-type is still a protobuf message.
  RawMessage m = Msg(TopicNames().Usage("csp-a"), GoodUsage().SerializeAsString());
  m.headers = {{"content-type", "application/x-protobuf"}};
  const ledger::Candidate c = Decide(m, {}, 7);
  EXPECT_EQ(c.reason_code, "") << c.reason_detail;
  EXPECT_TRUE(c.decoded_event.empty());
}

}  // namespace
}  // namespace gpuledger::ingest
