#include "json_wire.h"

#include <cstring>
#include <map>
#include <memory>
#include <mutex>

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

void AppendFixed(uint64_t value, int bytes, std::string* out) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

void AppendTag(const WireSchema::Field& field, std::string* out) {
  out->append(field.tag, field.tag_size);
}

// An integer of `f`'s protobuf type (already in range for it) as its wire value.
void AppendInteger(const WireSchema::Field& field, int64_t value, std::string* out) {
  AppendTag(field, out);
  switch (field.descriptor->type()) {
    case pb::FieldDescriptor::TYPE_SINT32:
    case pb::FieldDescriptor::TYPE_SINT64:
      AppendVarint((static_cast<uint64_t>(value) << 1) ^ static_cast<uint64_t>(value >> 63), out);
      return;
    case pb::FieldDescriptor::TYPE_FIXED32:
    case pb::FieldDescriptor::TYPE_SFIXED32:
      AppendFixed(static_cast<uint64_t>(value), 4, out);
      return;
    case pb::FieldDescriptor::TYPE_FIXED64:
    case pb::FieldDescriptor::TYPE_SFIXED64:
      AppendFixed(static_cast<uint64_t>(value), 8, out);
      return;
    default:  // int32 and enums are sign-extended to 64 bits, as protobuf writes them
      AppendVarint(static_cast<uint64_t>(value), out);
  }
}

absl::Status Encode(dom::element json, const WireSchema& schema, int depth, std::string* out,
                    WireVisitor* visitor);

// One value of `field` (an element of a repeated field, or the field's value).
absl::Status EncodeValue(dom::element v, const WireSchema::Field& field, int depth,
                         std::string* out, WireVisitor* visitor) {
  const pb::FieldDescriptor* f = field.descriptor;
  int64_t number = 0;
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT64: {
      auto x = JsonInteger<int64_t>(v, f);
      if (!x.ok()) return x.status();
      number = *x;
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT64: {
      auto x = JsonInteger<uint64_t>(v, f);
      if (!x.ok()) return x.status();
      // Written as the 64 bits it is; told to the visitor as the same bits.
      number = static_cast<int64_t>(*x);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_INT32: {
      auto x = JsonInteger<int32_t>(v, f);
      if (!x.ok()) return x.status();
      number = *x;
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT32: {
      auto x = JsonInteger<uint32_t>(v, f);
      if (!x.ok()) return x.status();
      number = *x;
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_BOOL: {
      auto x = JsonBool(v, f);
      if (!x.ok()) return x.status();
      number = *x ? 1 : 0;
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      // A name the schema has, found here; anything else (numbers, unknown names) read and
      // refused by JsonEnum, as MessageFromJson reads it.
      std::string_view name;
      bool found = false;
      if (v.get(name) == simdjson::SUCCESS) {
        for (const auto& [known, n] : field.enum_names) {
          if (known.size() == name.size() &&
              std::memcmp(known.data(), name.data(), name.size()) == 0) {
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
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      thread_local std::string scratch;
      auto x = JsonString(v, f, &scratch);
      if (!x.ok()) return x.status();
      AppendTag(field, out);
      AppendVarint(x->size(), out);
      out->append(*x);
      if (visitor != nullptr) visitor->String(depth, f, *x);
      return absl::OkStatus();
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE: {
      if (visitor != nullptr) visitor->Message(depth, f);
      AppendTag(field, out);
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
        size_t n = 0;
        for (uint64_t x = body;; x >>= 7) {
          length[n++] = static_cast<char>((x & 0x7f) | (x >= 0x80 ? 0x80 : 0));
          if (x < 0x80) break;
        }
        out->replace(start - 1, 1, length, n);
      }
      return absl::OkStatus();
    }
    default:
      return UnreadType(f);
  }
  AppendInteger(field, number, out);
  if (visitor != nullptr) visitor->Number(depth, f, number);
  return absl::OkStatus();
}

absl::Status Encode(dom::element json, const WireSchema& schema, int depth, std::string* out,
                    WireVisitor* visitor) {
  const WireSchema::Field* fields = schema.fields().data();
  size_t hint = 0;
  return ForEachJsonField(
      json, schema.descriptor(),
      [&schema, &hint](std::string_view key) -> const pb::FieldDescriptor* {
        const WireSchema::Field* field = schema.Find(key, &hint);
        return field == nullptr ? nullptr : field->descriptor;
      },
      [&](dom::element v, const pb::FieldDescriptor* f, bool) {
        return EncodeValue(v, fields[f->index()], depth, out, visitor);
      });
}

}  // namespace

void AppendVarint(uint64_t value, std::string* out) {
  if (value < 0x80) {
    out->push_back(static_cast<char>(value));
    return;
  }
  char bytes[10];
  size_t n = 0;
  while (value >= 0x80) {
    bytes[n++] = static_cast<char>((value & 0x7f) | 0x80);
    value >>= 7;
  }
  bytes[n++] = static_cast<char>(value);
  out->append(bytes, n);
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

WireSchema::WireSchema(const pb::Descriptor* d) : descriptor_(d) {
  fields_.resize(d->field_count());
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    Field& field = fields_[i];
    field.descriptor = f;
    std::string tag;
    AppendVarint((static_cast<uint64_t>(f->number()) << 3) | WireTypeOf(f), &tag);
    std::copy(tag.begin(), tag.end(), field.tag);
    field.tag_size = static_cast<uint8_t>(tag.size());
    if (const pb::EnumDescriptor* e = f->enum_type(); e != nullptr) {
      for (int k = 0; k < e->value_count(); ++k) {
        field.enum_names.emplace_back(e->value(k)->name(), e->value(k)->number());
      }
    }
    names_.emplace_back(f->json_name(), i);
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
        std::memcmp(name.data(), key.data(), key.size()) == 0) {
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
        if (field.descriptor->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
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
