// Fuzzes what a CSP sends to POST /v1/events as JSON: ParseHttpEvents, which writes each plain
// event's protobuf bytes straight from the parsed JSON (ingest/src/json_wire.h).
//
// Input: the first byte picks the Content-Type (even: application/json, odd:
// application/x-ndjson); the rest is the body.
// Properties: no crash or sanitizer report; a body refused whole says why; every event taken
// decodes as a UsageEvent of the token's CSP and goes to its topic; and for a JSON body, each
// event is answered as the message path answers it (ingest/tests/gateway_reference.h: the same
// refusal and detail, or the same id, topic and key, and bytes that parse to the same message).

#include <simdjson.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_support.h"
#include "gateway_reference.h"
#include "google/protobuf/util/message_differencer.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/gateway.h"

namespace {

namespace ingest = gpuledger::ingest;
namespace v1 = gpuledger::v1;
using gpuledger::fuzz::Require;

void CheckAgainstOracle(const ingest::GatewayEvent& got, const std::string& text,
                        const ingest::HttpEventsOptions& options) {
  const ingest::oracle::Expected want = ingest::oracle::Reference(text, options);
  Require(got.reason == want.reason, "an event is refused as the message path refuses it");
  Require(got.detail == want.detail, "a refusal says what the message path says");
  Require(got.event_id == want.event_id, "the answer names the event as the message path does");
  if (!got.reason.empty()) return;
  // The gateway produces a request's events to its CSP's topic (encoded.topic is left empty).
  Require(options.topics.Usage(options.csp) == want.topic && got.encoded.key == want.key,
          "an event is keyed, and goes to the topic, as the message path's");
  v1::UsageEvent parsed;
  Require(parsed.ParseFromString(got.encoded.value), "the bytes decode");
  Require(google::protobuf::util::MessageDifferencer::Equals(parsed, want.event),
          "the bytes are the message path's message");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool ndjson = (data[0] & 1) != 0;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  ingest::HttpEventsOptions options;
  options.csp = "csp-alpha";
  options.max_events = 64;
  auto events = ingest::ParseHttpEvents(ndjson ? "application/x-ndjson" : "application/json", {},
                                        body, options);
  if (!events.ok()) {
    Require(!events.status().message().empty(), "a refused body says why");
    return 0;
  }
  Require(!events->empty() && events->size() <= options.max_events, "1 to max_events events");
  for (const ingest::GatewayEvent& e : *events) {
    if (!e.reason.empty()) {
      Require(!e.detail.empty(), "a refused event says why");
      continue;
    }
    v1::UsageEvent u;
    Require(u.ParseFromString(e.encoded.value), "a taken event decodes");
    Require(u.csp_id() == options.csp && e.encoded.topic.empty(),
            "a taken event is the token's CSP's (and goes to its topic, the request's)");
  }
  if (ndjson) return 0;
  // The body parsed (it was not refused whole): each event against the oracle, by its text.
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  Require(parser.parse(body).get(doc) == simdjson::SUCCESS, "an accepted JSON body parses");
  simdjson::dom::array items;
  if (doc.get(items) == simdjson::SUCCESS) {
    size_t i = 0;
    for (simdjson::dom::element item : items) {
      CheckAgainstOracle((*events)[i++], simdjson::to_string(item), options);
    }
  } else {
    CheckAgainstOracle(events->front(), simdjson::to_string(doc), options);
  }
  return 0;
}
