#include "ingest/json_schema.h"

#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/match.h"

namespace gpuledger::ingest {

namespace pb = google::protobuf;
using json = nlohmann::json;

namespace {

std::string Ref(const std::string& full_name) { return "#/$defs/" + full_name; }

bool IsTimeField(const pb::FieldDescriptor* f) {
  return f->cpp_type() == pb::FieldDescriptor::CPPTYPE_INT64 &&
         (absl::EndsWith(f->name(), "_ms") || absl::EndsWith(f->json_name(), "Ms"));
}

class Builder {
 public:
  json defs = json::object();

  // The schema of one value of `f` (an element, for a repeated field).
  json Value(const pb::FieldDescriptor* f) {
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT64: {
        json options = {{{"type", "integer"}},
                        {{"type", "string"}, {"pattern", "^-?[0-9]{1,19}$"}}};
        if (IsTimeField(f)) {
          options.push_back({{"type", "string"},
                             {"format", "date-time"},
                             {"description", "RFC 3339, to the millisecond"}});
        }
        return {{"anyOf", options}};
      }
      case pb::FieldDescriptor::CPPTYPE_UINT64:
        return {{"anyOf",
                 {{{"type", "integer"}, {"minimum", 0}},
                  {{"type", "string"}, {"pattern", "^[0-9]{1,20}$"}}}}};
      case pb::FieldDescriptor::CPPTYPE_INT32:
        return {{"type", "integer"},
                {"minimum", std::numeric_limits<int32_t>::min()},
                {"maximum", std::numeric_limits<int32_t>::max()}};
      case pb::FieldDescriptor::CPPTYPE_UINT32:
        return {
            {"type", "integer"}, {"minimum", 0}, {"maximum", std::numeric_limits<uint32_t>::max()}};
      case pb::FieldDescriptor::CPPTYPE_BOOL:
        return {{"type", "boolean"}};
      case pb::FieldDescriptor::CPPTYPE_STRING:
        if (f->type() == pb::FieldDescriptor::TYPE_BYTES) {
          return {{"type", "string"}, {"contentEncoding", "base64"}};
        }
        return {{"type", "string"}};
      case pb::FieldDescriptor::CPPTYPE_ENUM:
        Enum(f->enum_type());
        return {{"$ref", Ref(f->enum_type()->full_name())}};
      case pb::FieldDescriptor::CPPTYPE_MESSAGE:
        Message(f->message_type());
        return {{"$ref", Ref(f->message_type()->full_name())}};
      default:
        return json::object();  // float and double: gpuledger's schemas have none
    }
  }

  void Enum(const pb::EnumDescriptor* e) {
    if (defs.contains(e->full_name())) return;
    json values = json::array();
    for (int i = 0; i < e->value_count(); ++i) values.push_back(e->value(i)->name());
    for (int i = 0; i < e->value_count(); ++i) values.push_back(e->value(i)->number());
    defs[e->full_name()] = {{"description", "By name or by number"}, {"enum", values}};
  }

  void Message(const pb::Descriptor* d) {
    if (defs.contains(d->full_name())) return;
    defs[d->full_name()] = json::object();  // placeholder against recursion
    json properties = json::object();
    for (int i = 0; i < d->field_count(); ++i) {
      const pb::FieldDescriptor* f = d->field(i);
      json v = Value(f);
      properties[f->json_name()] =
          f->is_repeated() ? json{{"type", "array"}, {"items", v}} : std::move(v);
    }
    json schema = {{"type", "object"},
                   {"title", d->full_name()},
                   {"additionalProperties", false},
                   {"properties", properties}};
    // At most one member of each oneof: no two of them together.
    json pairs = json::array();
    for (int o = 0; o < d->oneof_decl_count(); ++o) {
      const pb::OneofDescriptor* oneof = d->oneof_decl(o);
      for (int a = 0; a < oneof->field_count(); ++a) {
        for (int b = a + 1; b < oneof->field_count(); ++b) {
          pairs.push_back(
              {{"required", {oneof->field(a)->json_name(), oneof->field(b)->json_name()}}});
        }
      }
    }
    if (!pairs.empty()) schema["not"] = {{"anyOf", pairs}};
    defs[d->full_name()] = std::move(schema);
  }
};

}  // namespace

std::string JsonSchemaOf(const pb::Descriptor* message, std::string_view id) {
  Builder b;
  b.Message(message);
  json schema = {{"$schema", "https://json-schema.org/draft/2020-12/schema"},
                 {"$id", std::string(id)},
                 {"title", message->full_name()},
                 {"description",
                  "The JSON form of " + message->full_name() +
                      " as gpuledger reads it (protobuf's JSON mapping; docs/FORMATS.md). "
                      "Generated from schemas/gpuledger/v1 by `gpuledger schemas json-schema`."},
                 {"$ref", Ref(message->full_name())},
                 {"$defs", b.defs}};
  return schema.dump(2) + "\n";
}

}  // namespace gpuledger::ingest
