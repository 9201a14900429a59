// Protobuf wire bytes straight from a parsed JSON object: the same mapping, the same checks and
// the same error texts as MessageFromJson (json_message.h, whose value readers it shares), but
// without building a message through reflection and serializing it, which was a third of the
// HTTP gateway's time (docs/BENCHMARKS.md, "Usage over HTTP: where serve's time goes").
//
// The bytes are a valid encoding of the message MessageFromJson would fill, not its canonical
// one: fields come in the JSON's order, a field given as its default value (0, "") is written
// rather than left out, repeated fields are written unpacked, and a caller may append a field
// again (a later value of a scalar field wins when parsed). Whoever reads them parses them; the
// ledger's duplicate check compares the canonical bytes ingest re-encodes (decide.cc), so two
// encodings of one event are one event there.
#pragma once

#include <simdjson.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "google/protobuf/descriptor.h"
#include "json_message.h"

namespace gpuledger::ingest {

// Whether two strings of `n` bytes are equal: eight bytes at a time, inlined (names and keys
// are short, and a call to memcmp for each was 5% of the encoder's time).
inline bool SameBytes(const char* a, const char* b, size_t n) {
  for (; n >= 8; a += 8, b += 8, n -= 8) {
    uint64_t x, y;
    std::memcpy(&x, a, 8);
    std::memcpy(&y, b, 8);
    if (x != y) return false;
  }
  for (; n > 0; ++a, ++b, --n) {
    if (*a != *b) return false;
  }
  return true;
}

// A message type as the encoder reads it: its fields by either JSON name, with their tags.
// Built once per type (WireSchema::Of keeps one per descriptor for the process).
class WireSchema {
 public:
  // How a value is read from JSON (the field's C++ type; bytes apart from strings). The four
  // integer kinds come first: the encoder tests `kind <= kUInt32`.
  enum class Kind : uint8_t {
    kInt64,
    kUInt64,
    kInt32,
    kUInt32,
    kBool,
    kEnum,
    kString,
    kBytes,
    kMessage,
    kUnread
  };
  // How an integer is written: a varint, zigzag (sint), or 4 or 8 little-endian bytes.
  enum class Form : uint8_t { kVarint, kZigZag, kFixed32, kFixed64 };
  struct Field : JsonField {
    explicit Field(const google::protobuf::FieldDescriptor* f);
    Kind kind;
    Form form;
    char tag[5] = {};  // the field's key as a varint (number << 3 | wire type)
    uint8_t tag_size = 0;
    const WireSchema* sub = nullptr;  // a message field's type
    // An enum field's values by name (few: a scan, without the string protobuf's lookup makes).
    std::vector<std::pair<std::string, int>> enum_names;
    const google::protobuf::EnumDescriptor* enum_type = nullptr;  // an enum field's type
  };
  static const WireSchema& Of(const google::protobuf::Descriptor* d);
  const google::protobuf::Descriptor* descriptor() const { return descriptor_; }
  const std::vector<Field>& fields() const { return fields_; }
  // The field a JSON member names (its JSON name or its .proto name), or null. `hint` (0 at the
  // start of an object) is where the scan starts and is moved past each name found: members
  // given in the order of the .proto are found at the first comparison.
  const Field* Find(std::string_view key, size_t* hint) const {
    // The name at the hint, compared here (inlined: it is the common case); the rest out of line.
    if (*hint < names_.size()) {
      const std::string& name = names_[*hint].first;
      if (name.size() == key.size() && SameBytes(name.data(), key.data(), key.size())) {
        return &fields_[names_[(*hint)++].second];
      }
    }
    return FindFrom(key, hint);
  }

 private:
  explicit WireSchema(const google::protobuf::Descriptor* d);
  const Field* FindFrom(std::string_view key, size_t* hint) const;
  const google::protobuf::Descriptor* descriptor_;
  std::vector<Field> fields_;
  // Each field's JSON name in field order, then the .proto names that differ: few, a scan; many
  // (more than kScanned), the map.
  static constexpr size_t kScanned = 64;
  std::vector<std::pair<std::string, int>> names_;
  absl::flat_hash_map<std::string, int> by_name_;
};

// Told of what the encoder wrote, while it writes it: the values of scalar fields (strings as
// they are in the parsed document, or in a scratch buffer for bytes: copy what is kept) and the
// start of each message field. `depth` 0 is the top-level message.
class WireVisitor {
 public:
  virtual ~WireVisitor() = default;
  virtual void String(int depth, const WireSchema::Field& f, std::string_view value) = 0;
  // Integers, enums (their number) and bools (0 or 1).
  virtual void Number(int depth, const WireSchema::Field& f, int64_t value) = 0;
  virtual void Message(int depth, const WireSchema::Field& f) = 0;
};

// Appends the wire bytes of the message `json` is (an object) to `out`; on an error `out` holds
// part of it. `visitor` may be null.
absl::Status EncodeJson(simdjson::dom::element json, const WireSchema& schema, std::string* out,
                        WireVisitor* visitor);

// Wire-format pieces for a caller that appends a field (a default it fills in).
void AppendVarint(uint64_t value, std::string* out);
void AppendStringField(int number, std::string_view value, std::string* out);
void AppendVarintField(int number, uint64_t value, std::string* out);

}  // namespace gpuledger::ingest
