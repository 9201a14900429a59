// POST /v1/events reads a plain JSON event straight into wire bytes (json_wire.h) instead of
// filling a message through reflection and serializing it. These tests hold the two to one
// answer: for every input here (every kind of event, and thousands of mutations of them: members
// dropped, nulled, doubled, retyped, out of range, unknown, two bodies, other CSPs, time strings),
// ParseHttpEvents gives what the message path gives — the same refusal and detail, or the same
// event id, topic and key, and bytes that parse to the same message.
#include "ingest/gateway.h"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gateway_reference.h"
#include "google/protobuf/util/message_differencer.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/publisher.h"
#include "ingest/reasons.h"
#include "json_message.h"
#include "json_wire.h"

namespace gpuledger::ingest {
namespace {

namespace v1 = gpuledger::v1;
using nlohmann::ordered_json;

constexpr char kCsp[] = "csp-alpha";

// Checks the gateway against the reference for one event; returns whether it was taken.
bool Compare(const std::string& text) {
  HttpEventsOptions options;
  options.csp = kCsp;
  const oracle::Expected want = oracle::Reference(text, options);
  // In an array of one: the body is then one event, whatever the event is.
  auto got = ParseHttpEvents("application/json", {}, "[" + text + "]", options);
  EXPECT_TRUE(got.ok()) << text;
  if (!got.ok()) return false;
  EXPECT_EQ(got->size(), 1u);
  const GatewayEvent& g = got->front();
  EXPECT_EQ(g.reason, want.reason) << text;
  EXPECT_EQ(g.detail, want.detail) << text;
  EXPECT_EQ(g.event_id, want.event_id) << text;
  if (!g.reason.empty() || !want.reason.empty()) return false;
  // The gateway produces every event of the request to the CSP's topic: the message path's.
  EXPECT_EQ(g.encoded.topic, "") << text;
  EXPECT_EQ(options.topics.Usage(kCsp), want.topic) << text;
  EXPECT_EQ(g.encoded.key, want.key) << text;
  v1::UsageEvent parsed;
  EXPECT_TRUE(parsed.ParseFromString(g.encoded.value)) << text;
  std::string diff;
  google::protobuf::util::MessageDifferencer differ;
  differ.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differ.Compare(want.event, parsed)) << text << "\n" << diff;
  return true;
}

// One event of each kind the schema has, every field given.
std::vector<ordered_json> BaseEvents() {
  const char* texts[] = {
      R"({"schemaVersion":1,"eventId":"e-usage","cspId":"csp-alpha","producerId":"m-1","producerSeq":7,"emittedAtMs":1772303100000,"usage":{"allocationId":"alloc-0001","gpuModel":"H200","gpuCount":4,"startMs":1772299500000,"endMs":1772303100000,"nodeId":"n-4"}})",
      R"({"schemaVersion":1,"eventId":"e-own","cspId":"csp-alpha","producerId":"m-1","producerSeq":8,"emittedAtMs":1772377200000,"ownUse":{"program":"GOV_ADVANCED","gpuModel":"B200","gpuCount":16,"startMs":1772319600000,"endMs":1772377200000,"nodeId":"own-1"}})",
      R"({"schemaVersion":1,"eventId":"e-outage","cspId":"csp-alpha","producerId":"m-1","producerSeq":9,"emittedAtMs":1772658000000,"outage":{"allocationId":"alloc-0002","program":"GOV_ADVANCED","gpuModel":"H200","gpuCount":2,"startMs":1772636400000,"endMs":1772658000000,"cause":"gpu-xid-79","kind":"OUTAGE_UNPLANNED"}})",
      R"({"schemaVersion":1,"eventId":"e-pool-outage","cspId":"csp-alpha","producerId":"m-1","producerSeq":10,"emittedAtMs":1772658000000,"outage":{"program":"GOV_ADVANCED","gpuModel":"B200","gpuCount":2,"startMs":1772636400000,"endMs":1772658000000,"kind":1}})",
      R"({"schemaVersion":1,"eventId":"e-correction","cspId":"csp-alpha","producerId":"m-1","producerSeq":11,"emittedAtMs":1775142000000,"correction":{"targetEventId":"e-usage","reason":"metering fault","allocationId":"alloc-0001","replacement":{"allocationId":"alloc-0001","gpuModel":"H200","gpuCount":2,"startMs":1772299500000,"endMs":1772303100000,"nodeId":"n-4"}}})",
      R"({"schemaVersion":1,"eventId":"e-withdrawal","cspId":"csp-alpha","producerId":"m-1","producerSeq":12,"emittedAtMs":1775142000000,"outageWithdrawal":{"targetEventId":"e-outage","allocationId":"","program":"GOV_ADVANCED","gpuModel":"H200","reason":"not an outage"}})",
      R"({"schemaVersion":1,"eventId":"e-close","cspId":"csp-alpha","closeMarker":{"period":"2026-03"}})",
      R"({"event_id":"e-snake","csp_id":"csp-alpha","producer_id":"m-1","producer_seq":"13","emitted_at_ms":"2026-03-01T09:00:00+09:00","usage":{"allocation_id":"alloc-0003","gpu_model":2,"gpu_count":"1","start_ms":"2026-03-01T08:00:00Z","end_ms":1772326800000}})",
  };
  std::vector<ordered_json> out;
  for (const char* t : texts) out.push_back(ordered_json::parse(t));
  return out;
}

// Values a member is replaced with: every JSON type, edges of each integer range, time texts,
// enum names and numbers, strings that look like numbers, nested wrong shapes.
std::vector<ordered_json> OddValues() {
  return {
      nullptr,
      true,
      false,
      0,
      1,
      -1,
      2,
      4294967295LL,
      4294967296LL,
      2147483647,
      -2147483648LL,
      -2147483649LL,
      9223372036854775807LL,
      std::numeric_limits<int64_t>::min(),
      18446744073709551615ULL,
      1.5,
      1e30,
      "",
      "x",
      "12",
      "-12",
      "+12",
      " 12",
      "18446744073709551616",
      "2026-03-01T09:00:00+09:00",
      "2026-03-01T09:00:00.123Z",
      "2026-03-01T09:00:00.1234Z",
      "2026-13-01T09:00:00Z",
      "H200",
      "B200",
      "GPU_MODEL_UNSPECIFIED",
      "GOV_ADVANCED",
      "OUTAGE_PLANNED",
      "csp-alpha",
      "csp-beta",
      std::string(100, 'a'),
      "\xed\x95\x9c\xea\xb8\x80",  // 한글
      ordered_json::array(),
      ordered_json::array({1, 2}),
      ordered_json::object(),
      ordered_json::object({{"allocationId", "a"}}),
      ordered_json::object({{"nope", 1}}),
  };
}

TEST(GatewayWireTest, EveryKindOfEventIsTheMessagePathsEvent) {
  for (const ordered_json& e : BaseEvents()) Compare(e.dump());
  HttpEventsOptions options;
  options.csp = kCsp;
  // The close marker is refused; the others are taken.
  size_t taken = 0;
  for (const ordered_json& e : BaseEvents()) {
    auto got = ParseHttpEvents("application/json", {}, e.dump(), options);
    ASSERT_TRUE(got.ok());
    taken += got->front().reason.empty() ? 1 : 0;
  }
  EXPECT_EQ(taken, BaseEvents().size() - 1);
}

TEST(GatewayWireTest, MutatedEventsAgreeWithTheMessagePath) {
  const std::vector<ordered_json> values = OddValues();
  size_t inputs = 0, taken = 0;
  auto check = [&](const ordered_json& e) {
    ++inputs;
    taken += Compare(e.dump()) ? 1 : 0;
  };
  for (const ordered_json& base : BaseEvents()) {
    for (const auto& [key, value] : base.items()) {
      ordered_json dropped = base;
      dropped.erase(key);
      check(dropped);
      for (const ordered_json& v : values) {
        ordered_json changed = base;
        changed[key] = v;
        check(changed);
      }
      if (value.is_object()) {
        for (const auto& [inner, unused] : value.items()) {
          ordered_json dropped_inner = base;
          dropped_inner[key].erase(inner);
          check(dropped_inner);
          for (const ordered_json& v : values) {
            ordered_json changed = base;
            changed[key][inner] = v;
            check(changed);
          }
        }
      }
    }
    // Unknown members, a second body, a member given under both its names, members reordered.
    ordered_json unknown = base;
    unknown["colour"] = "red";
    check(unknown);
    for (const char* body :
         {"usage", "ownUse", "outage", "correction", "outageWithdrawal", "closeMarker"}) {
      ordered_json two = base;
      two[body] = ordered_json::object();
      check(two);
      ordered_json null_body = base;
      null_body[body] = nullptr;
      check(null_body);
    }
    std::string doubled = base.dump();
    doubled.insert(1, R"("event_id":"again",)");
    ++inputs;
    taken += Compare(doubled) ? 1 : 0;
    std::vector<std::string> keys;
    for (const auto& [key, unused] : base.items()) keys.push_back(key);
    ordered_json backwards = ordered_json::object();
    for (auto k = keys.rbegin(); k != keys.rend(); ++k) backwards[*k] = base[*k];
    check(backwards);
  }
  // Not objects at all.
  for (const ordered_json& v : values) {
    if (!v.is_object()) check(v);
  }
  std::cout << inputs << " events compared, " << taken << " taken by both paths\n";
  EXPECT_GT(inputs, 4000u);
  EXPECT_GT(taken, 1000u);  // both paths take many: the comparison is not only of refusals
}

TEST(GatewayWireTest, BatchesAndLinesAgreeEventByEvent) {
  // The sample month's events (tests/fuzz/fixture), as one array and as lines.
  std::vector<std::string> lines;
  ordered_json array = ordered_json::array();
  for (const ordered_json& e : BaseEvents()) {
    lines.push_back(e.dump());
    array.push_back(e);
  }
  HttpEventsOptions options;
  options.csp = kCsp;
  auto batch = ParseHttpEvents("application/json", {}, array.dump(), options);
  ASSERT_TRUE(batch.ok());
  ASSERT_EQ(batch->size(), lines.size());
  std::string ndjson;
  for (const std::string& l : lines) ndjson += l + "\n";
  auto by_line = ParseHttpEvents("application/x-ndjson", {}, ndjson, options);
  ASSERT_TRUE(by_line.ok());
  ASSERT_EQ(by_line->size(), lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    auto one = ParseHttpEvents("application/json", {}, lines[i], options);
    ASSERT_TRUE(one.ok());
    for (const std::vector<GatewayEvent>* all : {&*batch, &*by_line}) {
      const GatewayEvent& g = (*all)[i];
      EXPECT_EQ(g.reason, one->front().reason);
      EXPECT_EQ(g.detail, one->front().detail);
      EXPECT_EQ(g.event_id, one->front().event_id);
      EXPECT_EQ(g.encoded.key, one->front().encoded.key);
      EXPECT_EQ(g.encoded.value, one->front().encoded.value);
    }
  }
}

TEST(GatewayWireTest, DefaultsAreFilledInAndKeysFollowTheBody) {
  HttpEventsOptions options;
  options.csp = kCsp;
  auto got =
      ParseHttpEvents("application/json", {},
                      R"([{"eventId":"a","ownUse":{"program":"GOV_ADVANCED","gpuModel":"B200"}},
          {"eventId":"b","cspId":"","schemaVersion":0,"outage":{"allocationId":"alloc-9"}},
          {"eventId":"c"}])",
                      options);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 3u);
  for (const GatewayEvent& g : *got) {
    ASSERT_EQ(g.reason, "") << g.detail;
    v1::UsageEvent e;
    ASSERT_TRUE(e.ParseFromString(g.encoded.value));
    EXPECT_EQ(e.csp_id(), kCsp);
    EXPECT_EQ(e.schema_version(), 1u);
    EXPECT_EQ(g.encoded.topic, "");  // the request's topic: options.topics.Usage(kCsp)
  }
  EXPECT_EQ((*got)[0].encoded.key, "pool:GOV_ADVANCED:B200");
  EXPECT_EQ((*got)[1].encoded.key, "alloc-9");
  EXPECT_EQ((*got)[2].encoded.key, "c");
}

TEST(JsonWireTest, WritesWhatProtobufReads) {
  // Every scalar kind of the schema through the encoder, then parsed by protobuf's own code.
  simdjson::dom::parser parser;
  simdjson::dom::element j;
  ASSERT_EQ(
      parser
          .parse(std::string(
              R"({"schemaVersion":4294967295,"eventId":"한글","producerSeq":"18446744073709551615","emittedAtMs":-5,"usage":{"gpuModel":"B200","gpuCount":0}})"))
          .get(j),
      simdjson::SUCCESS);
  std::string bytes;
  ASSERT_TRUE(EncodeJson(j, WireSchema::Of(v1::UsageEvent::descriptor()), &bytes, nullptr).ok());
  v1::UsageEvent e;
  ASSERT_TRUE(e.ParseFromString(bytes));
  EXPECT_EQ(e.schema_version(), 4294967295u);
  EXPECT_EQ(e.event_id(), "한글");
  EXPECT_EQ(e.producer_seq(), 18446744073709551615ull);
  EXPECT_EQ(e.emitted_at_ms(), -5);
  EXPECT_EQ(e.usage().gpu_model(), v1::B200);
  EXPECT_TRUE(e.has_usage());
}

TEST(JsonWireTest, NestedBodiesOfEveryLengthAndMembersInAnyOrder) {
  // A body's length is one byte below 128 and more from there (the encoder moves such a body);
  // members out of the .proto's order are found whatever the order.
  for (size_t n :
       {0, 1, 100, 110, 111, 112, 113, 120, 126, 127, 128, 129, 200, 16383, 16384, 70000}) {
    const std::string id(n, 'a');
    for (const bool reversed : {false, true}) {
      const std::string text =
          reversed ? absl::StrCat(R"({"usage":{"gpuCount":3,"allocationId":")", id,
                                  R"("},"producerSeq":"7","eventId":"e"})")
                   : absl::StrCat(R"({"eventId":"e","producerSeq":"7","usage":{"allocationId":")",
                                  id, R"(","gpuCount":3}})");
      simdjson::dom::parser parser;
      simdjson::dom::element j;
      ASSERT_EQ(parser.parse(text).get(j), simdjson::SUCCESS);
      std::string bytes;
      ASSERT_TRUE(
          EncodeJson(j, WireSchema::Of(v1::UsageEvent::descriptor()), &bytes, nullptr).ok());
      v1::UsageEvent e;
      ASSERT_TRUE(e.ParseFromString(bytes)) << n;
      EXPECT_EQ(e.usage().allocation_id(), id) << n;
      EXPECT_EQ(e.usage().gpu_count(), 3u) << n;
      EXPECT_EQ(e.producer_seq(), 7u) << n;
      EXPECT_EQ(e.event_id(), "e") << n;
      v1::UsageEvent reference;
      ASSERT_TRUE(MessageFromJsonText(text, &reference).ok()) << n;
      EXPECT_EQ(e.SerializeAsString(), reference.SerializeAsString()) << n;
    }
  }
}

}  // namespace
}  // namespace gpuledger::ingest
