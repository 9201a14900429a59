#include "json_wire.h"

#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "json_message.h"

namespace gpuledger::ingest {

namespace pb = google::protobuf;
namespace dom = simdjson::dom;

namespace {

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

WireType WireTypeOf(const pb::FieldDescriptor* f) {
  switch (f->type()) {
    case pb::FieldDescriptor::TYPE_FIXED64:
    case pb::FieldDescriptor::TYPE_SFIXED64:
    case pb::FieldDescriptor::TYPE_DOUBLE:
      return kFixed64;
    case pb::FieldDescriptor::TYPE_FIXED32:
    case pb::FieldDescriptor::TYPE_SFIXED32:
    case pb::FieldDescriptor::TYPE_FLOAT:
      return kFixed32;
    case pb::FieldDescriptor::TYPE_STRING:
    case pb::FieldDescriptor::TYPE_BYTES:
    case pb::FieldDescriptor::TYPE_MESSAGE:
      return kLengthDelimited;
    default:
      return kVarint;
  }
}

// Whether two strings of `n` bytes are equal: eight bytes at a time, inlined (names and keys
// are short, and a call to memcmp for each was 5% of the encoder's time).
bool SameBytes(const char* a, const char* b, size_t n) {
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

// Writes `value` as a varint at `p` (room for 10 bytes); returns the bytes written.
size_t PutVarint(uint64_t value, char* p) {
  size_t n = 0;
  while (value >= 0x80) {
    p[n++] = static_cast<char>((value & 0x7f) | 0x80);
    value >>= 7;
  }
  p[n++] = static_cast<char>(value);
  return n;
}

// An integer of the field's protobuf type (already in range for it): its key and wire value,
// appended at once.
void AppendInteger(const WireSchema::Field& field, int64_t value, std::string* out) {
  char bytes[15];
  std::memcpy(bytes, field.tag, sizeof field.tag);
  size_t n = field.tag_size;
  const auto bits = static_cast<uint64_t>(value);
  switch (field.form) {
    case WireSchema::Form::kZigZag:
      n += PutVarint((bits << 1) ^ static_cast<uint64_t>(value >> 63), bytes + n);
      break;
    case WireSchema::Form::kFixed32:
    case WireSchema::Form::kFixed64:
      for (int i = 0; i < (field.form == WireSchema::Form::kFixed32 ? 4 : 8); ++i) {
        bytes[n++] = static_cast<char>((bits >> (8 * i)) & 0xff);
      }
      break;
    case WireSchema::Form::kVarint:     // int32 and enums are sign-extended to 64 bits, as protobuf
      n += PutVarint(bits, bytes + n);  // writes them
      break;
  }
  out->append(bytes, n);
}

// A length-delimited field's key, length and bytes.
void AppendBytes(const WireSchema::Field& field, std::string_view value, std::string* out) {
  char head[15];
  std::memcpy(head, field.tag, sizeof field.tag);
  const size_t n = field.tag_size + PutVarint(value.size(), head + field.tag_size);
  out->append(head, n);
  out->append(value.data(), value.size());
}

// A JSON integer that is certainly in range of T: the value every reader takes without a word
// (JsonInteger reads everything else: strings, times, and what it refuses).
template <typename T>
bool PlainInteger(dom::element v, int64_t* out) {
  switch (v.type()) {
    case dom::element_type::INT64: {
      const int64_t x = int64_t(v);
      if constexpr (std::is_unsigned_v<T>) {
        if (x < 0 || static_cast<uint64_t>(x) > std::numeric_limits<T>::max()) return false;
      } else {
        if (x < std::numeric_limits<T>::min() || x > std::numeric_limits<T>::max()) return false;
      }
      *out = x;
      return true;
    }
    case dom::element_type::UINT64:  // above int64's range: only a uint64 field holds it
      if constexpr (!std::is_same_v<T, uint64_t>) return false;
      *out = static_cast<int64_t>(uint64_t(v));  // written as the 64 bits it is
      return true;
    default:
      return false;
  }
}

template <typename T>
absl::Status ReadInteger(dom::element v, const pb::FieldDescriptor* f, int64_t* number) {
  if (PlainInteger<T>(v, number)) return absl::OkStatus();
  auto x = JsonInteger<T>(v, f);
  if (!x.ok()) return x.status();
  *number = static_cast<int64_t>(*x);  // a uint64 as the same 64 bits
  return absl::OkStatus();
}

absl::Status Encode(dom::element json, const WireSchema& schema, int depth, std::string* out,
                    WireVisitor* visitor);

// One value of `field` (an element of a repeated field, or the field's value).
absl::Status EncodeValue(dom::element v, const WireSchema::Field& field, int depth,
                         std::string* out, WireVisitor* visitor) {
  const pb::FieldDescriptor* f = field.descriptor;
  int64_t number = 0;
  absl::Status read;
  switch (field.kind) {
    case WireSchema::Kind::kInt64:
      read = ReadInteger<int64_t>(v, f, &number);
      break;
    case WireSchema::Kind::kUInt64:
      read = ReadInteger<uint64_t>(v, f, &number);
      break;
    case WireSchema::Kind::kInt32:
      read = ReadInteger<int32_t>(v, f, &number);
      break;
    case WireSchema::Kind::kUInt32:
      read = ReadInteger<uint32_t>(v, f, &number);
      break;
    case WireSchema::Kind::kBool: {
      bool b = false;
      if (v.get(b) != simdjson::SUCCESS) return JsonBool(v, f).status();
      number = b ? 1 : 0;
      break;
    }
    case WireSchema::Kind::kEnum: {
      // A name the schema has, found here; anything else (numbers, unknown names) read and
      // refused by JsonEnum, as MessageFromJson reads it.
      std::string_view name;
      bool found = false;
      if (v.get(name) == simdjson::SUCCESS) {
        for (const auto& [known, n] : field.enum_names) {
          if (known.size() == name.size() && SameBytes(known.data(), name.data(), name.size())) {
            number = n;
            found = true;
            break;
          }
        }
      }
      if (!found) {
        auto x = JsonEnum(v, f);
        if (!x.ok()) return x.status();
        number = *x;
      }
      break;
    }
    case WireSchema::Kind::kString:
    case WireSchema::Kind::kBytes: {
      std::string_view text;
      std::string decoded;  // a bytes field's value, from base64
      if (field.kind != WireSchema::Kind::kString || v.get(text) != simdjson::SUCCESS) {
        auto x = JsonString(v, f, &decoded);
        if (!x.ok()) return x.status();
        text = *x;
      }
      AppendBytes(field, text, out);
      if (visitor != nullptr) visitor->String(depth, f, text);
      return absl::OkStatus();
    }
    case WireSchema::Kind::kMessage: {
      if (visitor != nullptr) visitor->Message(depth, f);
      out->append(field.tag, field.tag_size);
      // One byte kept for the length and the body written after it; a body of 128 bytes or
      // more (its length takes more bytes) is moved up to make room (rare: events are small).
      out->push_back('\0');
      const size_t start = out->size();
      if (absl::Status st = Encode(v, *field.sub, depth + 1, out, visitor); !st.ok()) {
        return absl::Status(st.code(), absl::StrCat(f->json_name(), ".", st.message()));
      }
      const size_t body = out->size() - start;
      if (body < 0x80) {
        (*out)[start - 1] = static_cast<char>(body);
      } else {
        char length[10];
        out->replace(start - 1, 1, length, PutVarint(body, length));
      }
      return absl::OkStatus();
    }
    case WireSchema::Kind::kUnread:
      return UnreadType(f);
  }
  if (!read.ok()) return read;
  AppendInteger(field, number, out);
  if (visitor != nullptr) visitor->Number(depth, f, number);
  return absl::OkStatus();
}

absl::Status Encode(dom::element json, const WireSchema& schema, int depth, std::string* out,
                    WireVisitor* visitor) {
  size_t hint = 0;
  return ForEachJsonField(
      json, schema.descriptor(),
      [&schema, &hint](std::string_view key) { return schema.Find(key, &hint); },
      [&](dom::element v, const WireSchema::Field& field, bool) {
        return EncodeValue(v, field, depth, out, visitor);
      });
}

}  // namespace

void AppendVarint(uint64_t value, std::string* out) {
  if (value < 0x80) {
    out->push_back(static_cast<char>(value));
    return;
  }
  char bytes[10];
  out->append(bytes, PutVarint(value, bytes));
}

void AppendStringField(int number, std::string_view value, std::string* out) {
  AppendVarint((static_cast<uint64_t>(number) << 3) | kLengthDelimited, out);
  AppendVarint(value.size(), out);
  out->append(value);
}

void AppendVarintField(int number, uint64_t value, std::string* out) {
  AppendVarint((static_cast<uint64_t>(number) << 3) | kVarint, out);
  AppendVarint(value, out);
}

WireSchema::Field::Field(const pb::FieldDescriptor* f) : JsonField(f) {
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT64:
      kind = Kind::kInt64;
      break;
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      kind = Kind::kUInt64;
      break;
    case pb::FieldDescriptor::CPPTYPE_INT32:
      kind = Kind::kInt32;
      break;
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      kind = Kind::kUInt32;
      break;
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      kind = Kind::kBool;
      break;
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      kind = Kind::kEnum;
      break;
    case pb::FieldDescriptor::CPPTYPE_STRING:
      kind = f->type() == pb::FieldDescriptor::TYPE_BYTES ? Kind::kBytes : Kind::kString;
      break;
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      kind = Kind::kMessage;
      break;
    default:
      kind = Kind::kUnread;
      break;
  }
  switch (f->type()) {
    case pb::FieldDescriptor::TYPE_SINT32:
    case pb::FieldDescriptor::TYPE_SINT64:
      form = Form::kZigZag;
      break;
    case pb::FieldDescriptor::TYPE_FIXED32:
    case pb::FieldDescriptor::TYPE_SFIXED32:
      form = Form::kFixed32;
      break;
    case pb::FieldDescriptor::TYPE_FIXED64:
    case pb::FieldDescriptor::TYPE_SFIXED64:
      form = Form::kFixed64;
      break;
    default:
      form = Form::kVarint;
  }
  tag_size = static_cast<uint8_t>(
      PutVarint((static_cast<uint64_t>(f->number()) << 3) | WireTypeOf(f), tag));
  if (const pb::EnumDescriptor* e = f->enum_type(); e != nullptr) {
    for (int k = 0; k < e->value_count(); ++k) {
      enum_names.emplace_back(e->value(k)->name(), e->value(k)->number());
    }
  }
}

WireSchema::WireSchema(const pb::Descriptor* d) : descriptor_(d) {
  fields_.reserve(d->field_count());
  for (int i = 0; i < d->field_count(); ++i) {
    fields_.emplace_back(d->field(i));
    names_.emplace_back(d->field(i)->json_name(), i);
  }
  // JSON names first (what clients mostly send), then the .proto names that differ.
  for (int i = 0; i < d->field_count(); ++i) {
    if (d->field(i)->name() != d->field(i)->json_name())
      names_.emplace_back(d->field(i)->name(), i);
  }
  if (names_.size() > kScanned) {
    for (const auto& [name, index] : names_) by_name_[name] = index;
    names_.clear();
  }
}

const WireSchema::Field* WireSchema::Find(std::string_view key, size_t* hint) const {
  if (!by_name_.empty()) {
    const auto it = by_name_.find(absl::string_view(key.data(), key.size()));
    return it == by_name_.end() ? nullptr : &fields_[it->second];
  }
  const size_t n = names_.size();
  size_t i = *hint < n ? *hint : 0;
  for (size_t tried = 0; tried < n; ++tried, i = i + 1 == n ? 0 : i + 1) {
    const std::string& name = names_[i].first;
    if (name.size() == key.size() && !key.empty() && name[0] == key[0] &&
        SameBytes(name.data(), key.data(), key.size())) {
      *hint = i + 1;
      return &fields_[names_[i].second];
    }
  }
  return nullptr;
}

const WireSchema& WireSchema::Of(const pb::Descriptor* d) {
  // Every type reachable from `d` is built (and linked) under one lock, once; recursive types
  // find their own entry already there.
  static std::mutex mu;
  static std::map<const pb::Descriptor*, std::unique_ptr<WireSchema>> schemas;
  std::lock_guard<std::mutex> lock(mu);
  struct Builder {
    std::map<const pb::Descriptor*, std::unique_ptr<WireSchema>>& all;
    WireSchema* Get(const pb::Descriptor* type) {
      auto it = all.find(type);
      if (it != all.end()) return it->second.get();
      WireSchema* s =
          all.emplace(type, std::unique_ptr<WireSchema>(new WireSchema(type))).first->second.get();
      for (Field& field : s->fields_) {
        if (field.kind == Kind::kMessage) {
          field.sub = Get(field.descriptor->message_type());
        }
      }
      return s;
    }
  };
  return *Builder{schemas}.Get(d);
}

absl::Status EncodeJson(dom::element json, const WireSchema& schema, std::string* out,
                        WireVisitor* visitor) {
  return Encode(json, schema, 0, out, visitor);
}

}  // namespace gpuledger::ingest
