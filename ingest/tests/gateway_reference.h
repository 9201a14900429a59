// The message path's answer for one plain JSON event over HTTP, written out as the tests' oracle:
// what POST /v1/events answered before it wrote wire bytes straight from the JSON (json_wire.h),
// and must still answer. Used by ingest/tests/gateway_test.cc and tests/fuzz/fuzz_gateway.cc.
#pragma once

#include <simdjson.h>

#include <string>
#include <string_view>

#include "gpuledger/v1/usage.pb.h"
#include "ingest/gateway.h"
#include "ingest/publisher.h"
#include "ingest/reasons.h"
#include "json_message.h"

namespace gpuledger::ingest::oracle {

// What the gateway must answer for one plain event, by the message path: MessageFromJson, the
// schema version and CSP defaults, the CSP and close-marker checks, EncodeUsageEvent.
struct Expected {
  std::string reason, detail, event_id, topic, key;
  gpuledger::v1::UsageEvent event;
};

inline Expected Reference(const std::string& text, const HttpEventsOptions& options) {
  Expected x;
  simdjson::dom::parser parser;
  simdjson::dom::element j;
  if (parser.parse(text).get(j) != simdjson::SUCCESS) {
    x.reason = "not JSON";
    return x;
  }
  if (!j.is_object()) {
    x.reason = reason::kMalformed;
    x.detail = "an event must be a JSON object";
    return x;
  }
  if (absl::Status st = MessageFromJson(j, &x.event); !st.ok()) {
    std::string_view id;
    if (j["eventId"].get(id) != simdjson::SUCCESS || id.empty()) {
      if (j["event_id"].get(id) != simdjson::SUCCESS) id = "";
    }
    x.event_id = std::string(id);
    x.reason = reason::kMalformed;
    x.detail = std::string(st.message());
    return x;
  }
  if (x.event.schema_version() == 0) x.event.set_schema_version(1);
  x.event_id = x.event.event_id();
  if (x.event.csp_id().empty()) x.event.set_csp_id(options.csp);
  if (x.event.csp_id() != options.csp) {
    x.reason = reason::kCspTopicMismatch;
    x.detail = "cspId \"" + x.event.csp_id().substr(0, 64) + "\" is not this token's CSP (" +
               options.csp + "): a CSP publishes only its own usage";
    return x;
  }
  if (x.event.body_case() == gpuledger::v1::UsageEvent::kCloseMarker) {
    x.reason = reason::kMalformed;
    x.detail = "a close marker is written by the operator's `gpuledger settle close`, not a CSP";
    return x;
  }
  absl::StatusOr<EncodedEvent> encoded = EncodeUsageEvent(x.event, options.topics);
  if (!encoded.ok()) {
    x.reason = "not encoded";
    return x;
  }
  x.topic = encoded->topic;
  x.key = encoded->key;
  return x;
}

}  // namespace gpuledger::ingest::oracle
