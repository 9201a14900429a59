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
#include <vector>

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

// What the readers of the mapping ask of a field for each member, read from its descriptor once
// per type (each is a call into protobuf otherwise, several a member).
struct JsonField {
  explicit JsonField(const google::protobuf::FieldDescriptor* f);
  const google::protobuf::FieldDescriptor* descriptor;
  int index;  // in its message
  int oneof;  // its oneof's index, or -1
  bool repeated;
  bool map;
};

// The errors ForEachJsonField gives (made out of line: they are rare).
namespace json_errors {
absl::Status NotAnObject(const google::protobuf::Descriptor* d);
absl::Status NoSuchField(const google::protobuf::Descriptor* d, std::string_view key);
absl::Status GivenTwice(const JsonField& f);
absl::Status TwoOfOneof(const google::protobuf::Descriptor* d, int set, const JsonField& f);
absl::Status MapNotRead(const JsonField& f);
absl::Status NotAnArray(const JsonField& f);
}  // namespace json_errors

// The members of a JSON object as fields of `d`, with the checks every reader of the mapping
// makes (a JSON object; each member a field `find` knows; none given twice; null skipped; one
// member per oneof; no maps; a repeated field an array): `value` is called for each value (each
// element of a repeated field, `repeated` true), in the JSON's order, and its error returned.
// `find(key)` gives a `const F*` (F a JsonField, or a type derived from it) or null; `value` is
// called as value(simdjson::dom::element, const F&, bool repeated) -> absl::Status. A template
// so that both are inlined: it runs for every member of every event POST /v1/events takes.
template <typename Find, typename Value>
absl::Status ForEachJsonField(simdjson::dom::element json, const google::protobuf::Descriptor* d,
                              Find&& find, Value&& value) {
  simdjson::dom::object obj;
  if (json.get(obj) != simdjson::SUCCESS) return json_errors::NotAnObject(d);
  // Fields seen as a bit set, on the stack for messages of up to 64 fields; each oneof's member
  // given so far (by field index), on the stack for up to 4 oneofs.
  const int count = d->field_count();
  const int oneofs = d->oneof_decl_count();
  uint64_t seen_bits = 0;
  std::vector<bool> seen_many(count > 64 ? count : 0);
  int oneof_small[4] = {-1, -1, -1, -1};
  std::vector<int> oneof_many(oneofs > 4 ? oneofs : 0, -1);
  int* oneof_set = oneofs > 4 ? oneof_many.data() : oneof_small;
  for (simdjson::dom::key_value_pair kv : obj) {
    const auto* f = find(kv.key);
    if (f == nullptr) return json_errors::NoSuchField(d, kv.key);
    const JsonField& field = *f;
    bool was_seen;
    if (count > 64) {
      was_seen = seen_many[field.index];
      seen_many[field.index] = true;
    } else {
      const uint64_t bit = uint64_t{1} << field.index;
      was_seen = (seen_bits & bit) != 0;
      seen_bits |= bit;
    }
    if (was_seen) return json_errors::GivenTwice(field);
    if (kv.value.is_null()) continue;
    if (field.oneof >= 0) {
      const int set = oneof_set[field.oneof];
      if (set >= 0 && set != field.index) return json_errors::TwoOfOneof(d, set, field);
      oneof_set[field.oneof] = field.index;
    }
    if (field.map) return json_errors::MapNotRead(field);
    if (field.repeated) {
      simdjson::dom::array a;
      if (kv.value.get(a) != simdjson::SUCCESS) return json_errors::NotAnArray(field);
      for (simdjson::dom::element e : a) {
        if (absl::Status st = value(e, *f, true); !st.ok()) return st;
      }
    } else if (absl::Status st = value(kv.value, *f, false); !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

// Fills `out` (cleared first) from a parsed JSON object.
absl::Status MessageFromJson(simdjson::dom::element json, google::protobuf::Message* out);

// Parses `text` (one JSON object) with this thread's parser and fills `out`.
absl::Status MessageFromJsonText(std::string_view text, google::protobuf::Message* out);

// This thread's simdjson parser (reused: its buffers grow to the largest document seen).
simdjson::dom::parser& ThreadJsonParser();

}  // namespace gpuledger::ingest
