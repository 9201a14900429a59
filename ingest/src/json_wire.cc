#include "json_wire.h"

#include <algorithm>
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

// `n` bytes from `from` to `to`, inlined for the short strings events hold (a call to memcpy
// for each was a tenth of the encoder's time): two overlapping copies of a fixed size.
inline void CopyBytes(char* to, const char* from, size_t n) {
  if (n > 32) {
    std::memcpy(to, from, n);
  } else if (n > 16) {
    std::memcpy(to, from, 16);
    std::memcpy(to + n - 16, from + n - 16, 16);
  } else if (n >= 8) {
    std::memcpy(to, from, 8);
    std::memcpy(to + n - 8, from + n - 8, 8);
  } else if (n >= 4) {
    std::memcpy(to, from, 4);
    std::memcpy(to + n - 4, from + n - 4, 4);
  } else if (n > 0) {
    to[0] = from[0];
    to[n / 2] = from[n / 2];
    to[n - 1] = from[n - 1];
  }
}

// Where the encoder writes: the end of a string grown ahead of the bytes (zero-filled, a
// resize at a time) and cut back to what was written when the writer goes, so that a field's
// bytes are stored in place rather than appended piece by piece.
class WireOut {
 public:
  explicit WireOut(std::string* s) : s_(s), n_(s->size()) {}
  WireOut(const WireOut&) = delete;
  WireOut& operator=(const WireOut&) = delete;
  ~WireOut() { s_->resize(n_); }
  // Where the next bytes go, with room for `k` of them (valid until the next call).
  [[gnu::always_inline]] char* Room(size_t k) {
    if (s_->size() - n_ < k) [[unlikely]] {
      Grow(k);
    }
    return s_->data() + n_;
  }
  void Wrote(size_t k) { n_ += k; }
  size_t size() const { return n_; }
  char* At(size_t i) { return s_->data() + i; }

 private:
  [[gnu::noinline]] void Grow(size_t k) { s_->resize(std::max(n_ + k, 2 * s_->size() + 192)); }
  std::string* s_;
  size_t n_;
};

// An integer of the field's protobuf type (already in range for it): its key and wire value.
[[gnu::always_inline]] inline void PutInteger(const WireSchema::Field& field, int64_t value,
                                              WireOut& out) {
  char* bytes = out.Room(sizeof field.tag + 10);
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
  out.Wrote(n);
}

// A length-delimited field's key, length and bytes.
[[gnu::always_inline]] inline void PutBytes(const WireSchema::Field& field, std::string_view value,
                                            WireOut& out) {
  char* bytes = out.Room(sizeof field.tag + 10 + value.size());
  std::memcpy(bytes, field.tag, sizeof field.tag);
  size_t n = field.tag_size;
  n += PutVarint(value.size(), bytes + n);
  CopyBytes(bytes + n, value.data(), value.size());
  out.Wrote(n + value.size());
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

// An integer field's value read by JsonInteger: a string, a time, or an error (what the
// member loop does not take as a plain integer; out of the common path).
template <typename T>
[[gnu::noinline]] absl::Status ReadOtherInteger(dom::element v, const pb::FieldDescriptor* f,
                                                int64_t* number) {
  auto x = JsonInteger<T>(v, f);
  if (!x.ok()) return x.status();
  *number = static_cast<int64_t>(*x);  // a uint64 as the same 64 bits
  return absl::OkStatus();
}

absl::Status Encode(dom::element json, const WireSchema& schema, int depth, WireOut& out,
                    WireVisitor* visitor);

// A string or bytes field's value that is not a JSON string of a string field (base64 of a
// bytes field, or an error): read by JsonString, out of the common path.
[[gnu::noinline]] absl::Status EncodeOtherString(dom::element v, const WireSchema::Field& field,
                                                 int depth, WireOut& out, WireVisitor* visitor) {
  std::string decoded;  // a bytes field's value, from base64
  auto text = JsonString(v, field.descriptor, &decoded);
  if (!text.ok()) return text.status();
  PutBytes(field, *text, out);
  if (visitor != nullptr) visitor->String(depth, field, *text);
  return absl::OkStatus();
}

// A message field's value: its key, its length and its fields. One byte is kept for the length
// and the body written after it; a body of 128 bytes or more (its length takes more bytes) is
// moved up to make room (rare: events are small).
[[gnu::noinline]] absl::Status EncodeMessage(dom::element v, const WireSchema::Field& field,
                                             int depth, WireOut& out, WireVisitor* visitor) {
  if (visitor != nullptr) visitor->Message(depth, field);
  char* head = out.Room(sizeof field.tag + 1);
  std::memcpy(head, field.tag, sizeof field.tag);
  head[field.tag_size] = '\0';
  out.Wrote(field.tag_size + 1);
  const size_t start = out.size();
  if (absl::Status st = Encode(v, *field.sub, depth + 1, out, visitor); !st.ok()) {
    return absl::Status(st.code(), absl::StrCat(field.descriptor->json_name(), ".", st.message()));
  }
  const size_t body = out.size() - start;
  if (body < 0x80) {
    *out.At(start - 1) = static_cast<char>(body);
    return absl::OkStatus();
  }
  char length[10];
  const size_t n = PutVarint(body, length);
  out.Room(n - 1);
  std::memmove(out.At(start - 1 + n), out.At(start), body);
  std::memcpy(out.At(start - 1), length, n);
  out.Wrote(n - 1);
  return absl::OkStatus();
}

// One value of `field` (an element of a repeated field, or the field's value) in a form the loop
// over the members (Encode) does not write itself: everything but a string field's string and
// an integer field's plain integer.
absl::Status EncodeValue(dom::element v, const WireSchema::Field& field, int depth, WireOut& out,
                         WireVisitor* visitor) {
  const pb::FieldDescriptor* f = field.descriptor;
  int64_t number = 0;
  switch (field.kind) {
    case WireSchema::Kind::kString:
    case WireSchema::Kind::kBytes:
      return EncodeOtherString(v, field, depth, out, visitor);
    case WireSchema::Kind::kMessage:
      return EncodeMessage(v, field, depth, out, visitor);
    case WireSchema::Kind::kInt64:
      if (absl::Status st = ReadOtherInteger<int64_t>(v, f, &number); !st.ok()) return st;
      break;
    case WireSchema::Kind::kUInt64:
      if (absl::Status st = ReadOtherInteger<uint64_t>(v, f, &number); !st.ok()) return st;
      break;
    case WireSchema::Kind::kInt32:
      if (absl::Status st = ReadOtherInteger<int32_t>(v, f, &number); !st.ok()) return st;
      break;
    case WireSchema::Kind::kUInt32:
      if (absl::Status st = ReadOtherInteger<uint32_t>(v, f, &number); !st.ok()) return st;
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
    case WireSchema::Kind::kUnread:
      return UnreadType(f);
  }
  PutInteger(field, number, out);
  if (visitor != nullptr) visitor->Number(depth, field, number);
  return absl::OkStatus();
}

absl::Status Encode(dom::element json, const WireSchema& schema, int depth, WireOut& out,
                    WireVisitor* visitor) {
  size_t hint = 0;
  return ForEachJsonField(
      json, schema.descriptor(),
      [&schema, &hint](std::string_view key) { return schema.Find(key, &hint); },
      [&](dom::element v, const WireSchema::Field& field, bool) {
        // The forms most members take, here (inlined into the loop over the members): a string
        // field's string, an integer field's integer in range. EncodeValue writes everything
        // else (and refuses what is wrong, with its errors).
        if (field.kind == WireSchema::Kind::kString) {
          std::string_view text;
          if (v.get(text) == simdjson::SUCCESS) {
            PutBytes(field, text, out);
            if (visitor != nullptr) visitor->String(depth, field, text);
            return absl::OkStatus();
          }
        } else if (field.kind <= WireSchema::Kind::kUInt32) {
          int64_t number = 0;
          bool plain = false;
          switch (field.kind) {
            case WireSchema::Kind::kInt64:
              plain = PlainInteger<int64_t>(v, &number);
              break;
            case WireSchema::Kind::kUInt64:
              plain = PlainInteger<uint64_t>(v, &number);
              break;
            case WireSchema::Kind::kInt32:
              plain = PlainInteger<int32_t>(v, &number);
              break;
            default:
              plain = PlainInteger<uint32_t>(v, &number);
              break;
          }
          if (plain) {
            PutInteger(field, number, out);
            if (visitor != nullptr) visitor->Number(depth, field, number);
            return absl::OkStatus();
          }
        }
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
  enum_type = f->enum_type();
  if (const pb::EnumDescriptor* e = enum_type; e != nullptr) {
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

const WireSchema::Field* WireSchema::FindFrom(std::string_view key, size_t* hint) const {
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
  WireOut to(out);
  return Encode(json, schema, 0, to, visitor);
}

}  // namespace gpuledger::ingest
