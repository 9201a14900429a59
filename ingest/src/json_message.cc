#include "json_message.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/reflection.h>

#include <limits>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/node_hash_map.h"
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

JsonField::JsonField(const pb::FieldDescriptor* f)
    : descriptor(f),
      index(f->index()),
      oneof(f->containing_oneof() != nullptr ? f->containing_oneof()->index() : -1),
      repeated(f->is_repeated()),
      map(f->is_map()) {}

namespace json_errors {

absl::Status NotAnObject(const pb::Descriptor* d) {
  return absl::InvalidArgumentError(absl::StrCat("expected a JSON object for ", d->name()));
}
absl::Status NoSuchField(const pb::Descriptor* d, std::string_view key) {
  return absl::InvalidArgumentError(absl::StrCat(d->name(), " has no field \"", Shown(key), "\""));
}
absl::Status GivenTwice(const JsonField& f) {
  return absl::InvalidArgumentError(absl::StrCat(f.descriptor->json_name(), ": given twice"));
}
absl::Status TwoOfOneof(const pb::Descriptor* d, int set, const JsonField& f) {
  return absl::InvalidArgumentError(absl::StrCat("both ", d->field(set)->json_name(), " and ",
                                                 f.descriptor->json_name(), ": give one of ",
                                                 f.descriptor->containing_oneof()->name()));
}
absl::Status MapNotRead(const JsonField& f) {
  return absl::InvalidArgumentError(absl::StrCat(f.descriptor->json_name(), ": maps are not read"));
}
absl::Status NotAnArray(const JsonField& f) {
  return absl::InvalidArgumentError(absl::StrCat(f.descriptor->json_name(), ": expected an array"));
}

}  // namespace json_errors

namespace {

absl::Status SetValue(dom::element v, const pb::FieldDescriptor* f, const pb::Reflection* r,
                      pb::Message* m, bool repeated);

// A message type's fields by JSON name and by .proto name, built once per type and thread (a
// node map: an index stays where it is while others are added).
const JsonField* FindField(const pb::Descriptor* d, std::string_view key) {
  using Index = absl::flat_hash_map<std::string, JsonField>;
  thread_local absl::node_hash_map<const pb::Descriptor*, Index> indexes;
  auto [it, added] = indexes.try_emplace(d);
  if (added) {
    for (int i = 0; i < d->field_count(); ++i) {
      it->second.try_emplace(d->field(i)->json_name(), d->field(i));
      it->second.try_emplace(d->field(i)->name(), d->field(i));
    }
  }
  const auto f = it->second.find(Sv(key));
  return f == it->second.end() ? nullptr : &f->second;
}

absl::Status FillMessage(dom::element json, pb::Message* m) {
  // Looked up once per message (each call goes through the generated code's descriptor table
  // check).
  const pb::Descriptor* d = m->GetDescriptor();
  const pb::Reflection* r = m->GetReflection();
  return ForEachJsonField(
      json, d, [d](std::string_view key) { return FindField(d, key); },
      [&](dom::element v, const JsonField& f, bool repeated) {
        return SetValue(v, f.descriptor, r, m, repeated);
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
