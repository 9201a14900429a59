// Protobuf messages from JSON text, in protobuf's JSON mapping as gpuledger's schemas use it,
// parsed with simdjson and filled through protobuf's reflection: what `gpuledger publish` and
// POST /v1/events read (protobuf's own JsonStringToMessage was most of the gateway's time,
// ops/bench/gateway.sh).
//
// The mapping: a member is a field's JSON name (lowerCamelCase) or its .proto name; 64-bit
// integers are JSON integers or decimal strings, 32-bit ones JSON integers (or strings);
// enums are names or numbers; bools true/false; bytes base64; nested messages objects; repeated
// fields arrays; null leaves a field unset. A time field (a 64-bit integer whose name ends in
// Ms or _ms) may also be an RFC 3339 string, "2026-03-01T09:00:00+09:00", to the millisecond.
// Errors: not JSON, a member no field has, a field given twice, two members of one oneof, a
// value of the wrong type or out of range, an enum name the schema lacks.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message.h"

namespace gpuledger::ingest {

// Milliseconds since the epoch of an RFC 3339 time; refused unless whole milliseconds. `field`
// names it in the error.
absl::StatusOr<int64_t> Rfc3339Ms(std::string_view text, std::string_view field);

// Fills `out` (cleared first) from a parsed JSON object.
absl::Status MessageFromJson(simdjson::dom::element json, google::protobuf::Message* out);

// Parses `text` (one JSON object) with this thread's parser and fills `out`.
absl::Status MessageFromJsonText(std::string_view text, google::protobuf::Message* out);

// This thread's simdjson parser (reused: its buffers grow to the largest document seen).
simdjson::dom::parser& ThreadJsonParser();

}  // namespace gpuledger::ingest
