#include "json_wire.h"

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
          if (known == name) {
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
      // The body is written first, then its length put before it (a short move: events are
      // small).
      const size_t start = out->size();
      if (absl::Status st = Encode(v, *field.sub, depth + 1, out, visitor); !st.ok()) {
        return absl::Status(st.code(), absl::StrCat(f->json_name(), ".", st.message()));
      }
      char length[10];
      const size_t body = out->size() - start;
      size_t n = 0;
      for (uint64_t x = body;; x >>= 7) {
        length[n++] = static_cast<char>((x & 0x7f) | (x >= 0x80 ? 0x80 : 0));
        if (x < 0x80) break;
      }
      out->insert(start, length, n);
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
  const pb::Descriptor* d = schema.descriptor();
  dom::object obj;
  if (json.get(obj) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError(absl::StrCat("expected a JSON object for ", d->name()));
  }
  // Fields seen as a bit set, on the stack for messages of up to 64 fields; each oneof's member
  // set so far (by field index).
  const int count = d->field_count();
  uint64_t seen_bits = 0;
  std::vector<bool> seen_many(count > 64 ? count : 0);
  auto seen = [&](int index) {
    if (count > 64) {
      const bool was = seen_many[index];
      seen_many[index] = true;
      return was;
    }
    const uint64_t bit = uint64_t{1} << index;
    const bool was = (seen_bits & bit) != 0;
    seen_bits |= bit;
    return was;
  };
  int oneof_small[4] = {-1, -1, -1, -1};
  std::vector<int> oneof_many(d->oneof_decl_count() > 4 ? d->oneof_decl_count() : 0, -1);
  int* oneof_set = d->oneof_decl_count() > 4 ? oneof_many.data() : oneof_small;
  for (dom::key_value_pair kv : obj) {
    const WireSchema::Field* field = schema.Find(kv.key);
    if (field == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(d->name(), " has no field \"",
                                                     std::string(kv.key.substr(0, 64)),
                                                     kv.key.size() > 64 ? "…" : "", "\""));
    }
    const pb::FieldDescriptor* f = field->descriptor;
    if (seen(f->index())) {
      return absl::InvalidArgumentError(absl::StrCat(f->json_name(), ": given twice"));
    }
    if (kv.value.is_null()) continue;
    if (field->oneof >= 0) {
      const int set = oneof_set[field->oneof];
      if (set >= 0 && set != f->index()) {
        return absl::InvalidArgumentError(absl::StrCat("both ", d->field(set)->json_name(), " and ",
                                                       f->json_name(), ": give one of ",
                                                       f->containing_oneof()->name()));
      }
      oneof_set[field->oneof] = f->index();
    }
    if (f->is_map()) {
      return absl::InvalidArgumentError(absl::StrCat(f->json_name(), ": maps are not read"));
    }
    if (f->is_repeated()) {
      dom::array a;
      if (kv.value.get(a) != simdjson::SUCCESS) {
        return absl::InvalidArgumentError(absl::StrCat(f->json_name(), ": expected an array"));
      }
      for (dom::element e : a) {
        if (absl::Status st = EncodeValue(e, *field, depth, out, visitor); !st.ok()) return st;
      }
    } else if (absl::Status st = EncodeValue(kv.value, *field, depth, out, visitor); !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

}  // namespace

void AppendVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
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
    field.oneof = f->containing_oneof() != nullptr ? f->containing_oneof()->index() : -1;
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
  if (names_.size() > 16) {
    for (const auto& [name, index] : names_) by_name_[name] = index;
    names_.clear();
  }
}

const WireSchema::Field* WireSchema::Find(std::string_view key) const {
  if (!by_name_.empty()) {
    const auto it = by_name_.find(absl::string_view(key.data(), key.size()));
    return it == by_name_.end() ? nullptr : &fields_[it->second];
  }
  for (const auto& [name, index] : names_) {
    if (name.size() == key.size() && name == key) return &fields_[index];
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
