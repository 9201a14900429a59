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

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace gpuledger::ingest {

// Milliseconds since the epoch of an RFC 3339 time; refused unless whole milliseconds. `field`
// names it in the error.
absl::StatusOr<int64_t> Rfc3339Ms(std::string_view text, std::string_view field);

// One JSON value as a field of `f`'s type, with the errors above (each naming the field by its
// JSON name): what both MessageFromJson and the wire encoder (json_wire.h) read values with.
// JsonInteger: T is int64_t, uint64_t, int32_t or uint32_t (a time field also takes RFC 3339).
template <typename T>
absl::StatusOr<T> JsonInteger(simdjson::dom::element v, const google::protobuf::FieldDescriptor* f);
absl::StatusOr<bool> JsonBool(simdjson::dom::element v, const google::protobuf::FieldDescriptor* f);
// A string field's text (in the parsed document), or a bytes field's bytes (decoded from base64
// into `scratch`, which the answer then points into).
absl::StatusOr<std::string_view> JsonString(simdjson::dom::element v,
                                            const google::protobuf::FieldDescriptor* f,
                                            std::string* scratch);
// An enum field's number, from a value's name or number (only values the schema has).
absl::StatusOr<int> JsonEnum(simdjson::dom::element v, const google::protobuf::FieldDescriptor* f);
// The error for a field of a type not read from JSON (float, double).
absl::Status UnreadType(const google::protobuf::FieldDescriptor* f);
// A 64-bit integer field named ..._ms / ...Ms: also read from an RFC 3339 string.
bool IsTimeField(const google::protobuf::FieldDescriptor* f);

// The members of a JSON object as fields of `d`, with the checks every reader of the mapping
// makes (a JSON object; each member a field `find` knows; none given twice; null skipped; one
// member per oneof; no maps; a repeated field an array): `value` is called for each value (each
// element of a repeated field, `repeated` true), in the JSON's order, and its error returned.
absl::Status ForEachJsonField(
    simdjson::dom::element json, const google::protobuf::Descriptor* d,
    absl::FunctionRef<const google::protobuf::FieldDescriptor*(std::string_view)> find,
    absl::FunctionRef<absl::Status(simdjson::dom::element, const google::protobuf::FieldDescriptor*,
                                   bool)>
        value);

// Fills `out` (cleared first) from a parsed JSON object.
absl::Status MessageFromJson(simdjson::dom::element json, google::protobuf::Message* out);

// Parses `text` (one JSON object) with this thread's parser and fills `out`.
absl::Status MessageFromJsonText(std::string_view text, google::protobuf::Message* out);

// This thread's simdjson parser (reused: its buffers grow to the largest document seen).
simdjson::dom::parser& ThreadJsonParser();

}  // namespace gpuledger::ingest
