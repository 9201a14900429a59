#include "json_message.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/reflection.h>

#include <limits>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace gpuledger::ingest {

namespace pb = google::protobuf;
namespace dom = simdjson::dom;

namespace {

absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::string Shown(std::string_view s) {
  return std::string(s.substr(0, 64)) + (s.size() > 64 ? "…" : "");
}

}  // namespace

template <typename T>
absl::StatusOr<T> JsonInteger(dom::element v, const pb::FieldDescriptor* f) {
  constexpr T lo = std::numeric_limits<T>::min();
  constexpr T hi = std::numeric_limits<T>::max();
  auto range = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat(f->json_name(), ": out of range for a ", f->type_name(), " field"));
  };
  switch (v.type()) {
    case dom::element_type::INT64: {
      const int64_t x = int64_t(v);
      if constexpr (std::is_unsigned_v<T>) {
        if (x < 0) return range();
        if (static_cast<uint64_t>(x) > static_cast<uint64_t>(hi)) return range();
      } else {
        if (x < static_cast<int64_t>(lo) || x > static_cast<int64_t>(hi)) return range();
      }
      return static_cast<T>(x);
    }
    case dom::element_type::UINT64: {
      const uint64_t x = uint64_t(v);
      if (x > static_cast<uint64_t>(hi)) return range();
      return static_cast<T>(x);
    }
    case dom::element_type::STRING: {
      const std::string_view s = std::string_view(v);
      T x{};
      if (absl::SimpleAtoi(Sv(s), &x) && !s.empty() && s.front() != '+' && s.front() != ' ') {
        return x;
      }
      if constexpr (std::is_same_v<T, int64_t>) {
        if (IsTimeField(f)) return Rfc3339Ms(s, f->json_name());
      }
      return absl::InvalidArgumentError(
          absl::StrCat(f->json_name(), ": \"", Shown(s), "\" is not a whole number",
                       IsTimeField(f) ? " nor an RFC 3339 time" : ""));
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(f->json_name(), ": expected a whole number",
                       IsTimeField(f) ? " (epoch ms) or an RFC 3339 time" : ""));
  }
}

template absl::StatusOr<int64_t> JsonInteger<int64_t>(dom::element, const pb::FieldDescriptor*);
template absl::StatusOr<uint64_t> JsonInteger<uint64_t>(dom::element, const pb::FieldDescriptor*);
template absl::StatusOr<int32_t> JsonInteger<int32_t>(dom::element, const pb::FieldDescriptor*);
template absl::StatusOr<uint32_t> JsonInteger<uint32_t>(dom::element, const pb::FieldDescriptor*);

absl::StatusOr<bool> JsonBool(dom::element v, const pb::FieldDescriptor* f) {
  if (!v.is_bool()) {
    return absl::InvalidArgumentError(absl::StrCat(f->json_name(), ": expected true or false"));
  }
  return bool(v);
}

absl::StatusOr<std::string_view> JsonString(dom::element v, const pb::FieldDescriptor* f,
                                            std::string* scratch) {
  if (!v.is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(f->json_name(), ": expected a string"));
  }
  const std::string_view s(v);
  if (f->type() != pb::FieldDescriptor::TYPE_BYTES) return s;
  scratch->clear();
  if (!absl::Base64Unescape(Sv(s), scratch) && !absl::WebSafeBase64Unescape(Sv(s), scratch)) {
    return absl::InvalidArgumentError(absl::StrCat(f->json_name(), ": not base64"));
  }
  return std::string_view(*scratch);
}

absl::StatusOr<int> JsonEnum(dom::element v, const pb::FieldDescriptor* f) {
  const pb::EnumValueDescriptor* e = nullptr;
  if (v.is_string()) {
    e = f->enum_type()->FindValueByName(std::string(std::string_view(v)));
  } else if (v.is_int64()) {
    const int64_t n = int64_t(v);
    if (n >= std::numeric_limits<int32_t>::min() && n <= std::numeric_limits<int32_t>::max()) {
      e = f->enum_type()->FindValueByNumber(static_cast<int>(n));
    }
  }
  if (e == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(f->json_name(), ": not a value of ", f->enum_type()->name(),
                     v.is_string() ? absl::StrCat(" (\"", Shown(std::string_view(v)), "\")") : ""));
  }
  return e->number();
}

absl::Status UnreadType(const pb::FieldDescriptor* f) {
  return absl::InvalidArgumentError(
      absl::StrCat(f->json_name(), ": fields of type ", f->type_name(), " are not read"));
}

bool IsTimeField(const pb::FieldDescriptor* f) {
  return f->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT64 &&
         (absl::EndsWith(f->name(), "_ms") || absl::EndsWith(f->json_name(), "Ms"));
}

absl::Status ForEachJsonField(
    dom::element json, const pb::Descriptor* d,
    absl::FunctionRef<const pb::FieldDescriptor*(std::string_view)> find,
    absl::FunctionRef<absl::Status(dom::element, const pb::FieldDescriptor*, bool)> value) {
  dom::object obj;
  if (json.get(obj) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError(absl::StrCat("expected a JSON object for ", d->name()));
  }
  // Fields seen as a bit set, on the stack for messages of up to 64 fields; each oneof's member
  // given so far (by field index), on the stack for up to 4 oneofs.
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
    const pb::FieldDescriptor* f = find(kv.key);
    if (f == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(d->name(), " has no field \"", Shown(kv.key), "\""));
    }
    if (seen(f->index())) {
      return absl::InvalidArgumentError(absl::StrCat(f->json_name(), ": given twice"));
    }
    if (kv.value.is_null()) continue;
    if (const pb::OneofDescriptor* o = f->containing_oneof()) {
      const int set = oneof_set[o->index()];
      if (set >= 0 && set != f->index()) {
        return absl::InvalidArgumentError(absl::StrCat("both ", d->field(set)->json_name(), " and ",
                                                       f->json_name(), ": give one of ",
                                                       o->name()));
      }
      oneof_set[o->index()] = f->index();
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
        if (absl::Status st = value(e, f, true); !st.ok()) return st;
      }
    } else if (absl::Status st = value(kv.value, f, false); !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

namespace {

absl::Status SetValue(dom::element v, const pb::FieldDescriptor* f, const pb::Reflection* r,
                      pb::Message* m, bool repeated);

// A message type's fields by JSON name and by .proto name, built once per type and thread.
const pb::FieldDescriptor* FindField(const pb::Descriptor* d, std::string_view key) {
  using Index = absl::flat_hash_map<std::string, const pb::FieldDescriptor*>;
  thread_local absl::flat_hash_map<const pb::Descriptor*, Index> indexes;
  auto [it, added] = indexes.try_emplace(d);
  if (added) {
    for (int i = 0; i < d->field_count(); ++i) {
      it->second[d->field(i)->json_name()] = d->field(i);
      it->second[d->field(i)->name()] = d->field(i);
    }
  }
  const auto f = it->second.find(Sv(key));
  return f == it->second.end() ? nullptr : f->second;
}

absl::Status FillMessage(dom::element json, pb::Message* m) {
  // Looked up once per message (each call goes through the generated code's descriptor table
  // check).
  const pb::Descriptor* d = m->GetDescriptor();
  const pb::Reflection* r = m->GetReflection();
  return ForEachJsonField(
      json, d, [d](std::string_view key) { return FindField(d, key); },
      [&](dom::element v, const pb::FieldDescriptor* f, bool repeated) {
        return SetValue(v, f, r, m, repeated);
      });
}

absl::Status SetValue(dom::element v, const pb::FieldDescriptor* f, const pb::Reflection* r,
                      pb::Message* m, bool repeated) {
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT64: {
      auto x = JsonInteger<int64_t>(v, f);
      if (!x.ok()) return x.status();
      repeated ? r->AddInt64(m, f, *x) : r->SetInt64(m, f, *x);
      return absl::OkStatus();
    }
    case pb::FieldDescriptor::CPPTYPE_UINT64: {
      auto x = JsonInteger<uint64_t>(v, f);
      if (!x.ok()) return x.status();
      repeated ? r->AddUInt64(m, f, *x) : r->SetUInt64(m, f, *x);
      return absl::OkStatus();
    }
    case pb::FieldDescriptor::CPPTYPE_INT32: {
      auto x = JsonInteger<int32_t>(v, f);
      if (!x.ok()) return x.status();
      repeated ? r->AddInt32(m, f, *x) : r->SetInt32(m, f, *x);
      return absl::OkStatus();
    }
    case pb::FieldDescriptor::CPPTYPE_UINT32: {
      auto x = JsonInteger<uint32_t>(v, f);
      if (!x.ok()) return x.status();
      repeated ? r->AddUInt32(m, f, *x) : r->SetUInt32(m, f, *x);
      return absl::OkStatus();
    }
    case pb::FieldDescriptor::CPPTYPE_BOOL: {
      auto x = JsonBool(v, f);
      if (!x.ok()) return x.status();
      repeated ? r->AddBool(m, f, *x) : r->SetBool(m, f, *x);
      return absl::OkStatus();
    }
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      std::string scratch;
      auto x = JsonString(v, f, &scratch);
      if (!x.ok()) return x.status();
      std::string s(*x);
      repeated ? r->AddString(m, f, std::move(s)) : r->SetString(m, f, std::move(s));
      return absl::OkStatus();
    }
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      auto x = JsonEnum(v, f);
      if (!x.ok()) return x.status();
      repeated ? r->AddEnumValue(m, f, *x) : r->SetEnumValue(m, f, *x);
      return absl::OkStatus();
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE: {
      pb::Message* sub = repeated ? r->AddMessage(m, f) : r->MutableMessage(m, f);
      if (absl::Status st = FillMessage(v, sub); !st.ok()) {
        return absl::Status(st.code(), absl::StrCat(f->json_name(), ".", st.message()));
      }
      return absl::OkStatus();
    }
    default:
      return UnreadType(f);
  }
}

}  // namespace

absl::StatusOr<int64_t> Rfc3339Ms(std::string_view text, std::string_view field) {
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, Sv(text), &t, &err)) {
    return absl::InvalidArgumentError(absl::StrCat(
        Sv(field), ": \"", Shown(text), "\" is neither epoch milliseconds nor an RFC 3339 time (",
        err, "); write e.g. 2026-03-01T09:00:00+09:00"));
  }
  const int64_t ms = absl::ToUnixMillis(t);
  if (absl::FromUnixMillis(ms) != t) {
    return absl::InvalidArgumentError(
        absl::StrCat(Sv(field), ": \"", Shown(text),
                     "\" has a fraction below a millisecond; gpuledger counts whole "
                     "milliseconds (round it at the source)"));
  }
  return ms;
}

absl::Status MessageFromJson(dom::element json, pb::Message* out) {
  out->Clear();
  return FillMessage(json, out);
}

simdjson::dom::parser& ThreadJsonParser() {
  thread_local dom::parser parser;
  return parser;
}

absl::Status MessageFromJsonText(std::string_view text, pb::Message* out) {
  // Its own parser: a caller may hold elements of a document ThreadJsonParser() parsed.
  thread_local dom::parser parser;
  dom::element doc;
  if (auto err = parser.parse(text.data(), text.size()).get(doc); err != simdjson::SUCCESS) {
    return absl::InvalidArgumentError(
        absl::StrCat("not JSON text (", simdjson::error_message(err), ")"));
  }
  return MessageFromJson(doc, out);
}

}  // namespace gpuledger::ingest
