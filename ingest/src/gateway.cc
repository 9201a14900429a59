#include "ingest/gateway.h"

#include <algorithm>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "ingest/reasons.h"
#include "json_message.h"
#include "json_wire.h"

namespace gpuledger::ingest {

namespace v1 = gpuledger::v1;
namespace dom = simdjson::dom;
namespace pb = google::protobuf;

namespace {

// The media type of a Content-Type, lower case, without parameters.
std::string BaseType(std::string_view content_type) {
  const std::string_view base = content_type.substr(0, content_type.find(';'));
  return absl::AsciiStrToLower(
      absl::StripAsciiWhitespace(absl::string_view(base.data(), base.size())));
}

bool IsProtobuf(std::string_view content_type) {
  const std::string base = BaseType(content_type);
  return base == "application/protobuf" || base == "application/x-protobuf";
}

bool IsJson(std::string_view content_type) {
  return content_type.empty() || BaseType(content_type) == "application/json";
}

// The path (/v1/events) and the CloudEvent type name the schema's version.
void DefaultVersion(v1::UsageEvent* e) {
  if (e->schema_version() == 0) e->set_schema_version(1);
}

std::string StringMember(dom::element j, const char* name) {
  std::string_view s;
  if (j[name].get(s) != simdjson::SUCCESS) return "";
  return std::string(s);
}

// The context attributes onto the event its data decoded to (docs/FORMATS.md, "CloudEvents").
absl::Status ApplyAttributes(const CloudEventAttributes& a, const std::string& csp,
                             v1::UsageEvent* out) {
  DefaultVersion(out);
  if (out->event_id().empty()) {
    out->set_event_id(a.id);
  } else if (out->event_id() != a.id) {
    return absl::InvalidArgumentError(
        "the data's eventId differs from the CloudEvent's id; give one or make them equal");
  }
  if (out->producer_id().empty()) out->set_producer_id(a.source);
  if (out->emitted_at_ms() == 0 && !a.time.empty()) {
    absl::StatusOr<int64_t> ms = Rfc3339Ms(a.time, "time");
    if (!ms.ok()) return ms.status();
    out->set_emitted_at_ms(*ms);
  }
  if (out->csp_id().empty()) out->set_csp_id(csp);
  return absl::OkStatus();
}

absl::Status CheckAttributes(const CloudEventAttributes& a) {
  // Attribute values are Unicode strings (CloudEvents spec); id and source become protobuf
  // strings of the event, which must be UTF-8 for the recorded bytes to parse again.
  const std::pair<const char*, const std::string*> named[] = {
      {"specversion", &a.specversion},
      {"id", &a.id},
      {"source", &a.source},
      {"type", &a.type},
      {"time", &a.time},
      {"datacontenttype", &a.datacontenttype},
      {"subject", &a.subject}};
  for (const auto& [name, value] : named) {
    if (!simdjson::validate_utf8(value->data(), value->size())) {
      return absl::InvalidArgumentError(
          absl::StrCat("the CloudEvent's ", name, " is not valid UTF-8"));
    }
  }
  if (a.specversion != kCloudEventSpecVersion) {
    return absl::InvalidArgumentError(absl::StrCat("CloudEvents specversion \"",
                                                   a.specversion.substr(0, 16), "\": only ",
                                                   kCloudEventSpecVersion, " is read"));
  }
  if (a.type != kCloudEventType) {
    return absl::InvalidArgumentError(
        absl::StrCat("CloudEvent type \"", a.type.substr(0, 64), "\" is not ", kCloudEventType));
  }
  if (a.id.empty()) return absl::InvalidArgumentError("the CloudEvent has no id");
  if (a.source.empty()) return absl::InvalidArgumentError("the CloudEvent has no source");
  return absl::OkStatus();
}

// The context attributes of a binary-mode CloudEvent from its headers (names without their
// prefix, lower case): each at most once, each name one a CloudEvent can have.
absl::Status AttributesOf(const std::vector<std::pair<std::string, std::string>>& named,
                          CloudEventAttributes* a) {
  std::vector<std::string_view> seen;
  for (const auto& [name, value] : named) {
    const bool valid_name =
        !name.empty() && name.size() <= 20 && std::all_of(name.begin(), name.end(), [](char ch) {
          return absl::ascii_isdigit(ch) || (ch >= 'a' && ch <= 'z');
        });
    if (!valid_name) {
      return absl::InvalidArgumentError(absl::StrCat(
          "\"", name.substr(0, 32),
          "\" is not a CloudEvents attribute name (1 to 20 lower-case letters and digits)"));
    }
    if (std::find(seen.begin(), seen.end(), name) != seen.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the CloudEvent attribute ", name, " is given twice"));
    }
    seen.push_back(name);
    if (name == "specversion") a->specversion = value;
    if (name == "id") a->id = value;
    if (name == "source") a->source = value;
    if (name == "type") a->type = value;
    if (name == "time") a->time = value;
    if (name == "subject") a->subject = value;
    if (name == "datacontenttype") {
      return absl::InvalidArgumentError(
          "datacontenttype travels as the content-type header in binary mode, not as a ce_ one");
    }
  }
  return absl::OkStatus();
}

// The UsageEvent of a structured CloudEvent (one member of a batch, or a whole body).
absl::Status FromStructured(dom::element j, const std::string& csp, v1::UsageEvent* out) {
  if (!j.is_object()) return absl::InvalidArgumentError("a CloudEvent must be a JSON object");
  CloudEventAttributes a;
  a.specversion = StringMember(j, "specversion");
  a.id = StringMember(j, "id");
  a.source = StringMember(j, "source");
  a.type = StringMember(j, "type");
  a.time = StringMember(j, "time");
  a.datacontenttype = StringMember(j, "datacontenttype");
  a.subject = StringMember(j, "subject");
  dom::element data;
  const bool has_data = j["data"].get(data) == simdjson::SUCCESS;
  std::string_view data_base64;
  const bool has_base64 = j["data_base64"].get(data_base64) == simdjson::SUCCESS;
  if (has_data && has_base64) {
    return absl::InvalidArgumentError("a CloudEvent has data or data_base64, not both");
  }
  if (has_base64) {
    std::string bytes;
    if (!absl::Base64Unescape(absl::string_view(data_base64.data(), data_base64.size()), &bytes)) {
      return absl::InvalidArgumentError("data_base64 is not base64 text");
    }
    return UsageEventFromCloudEvent(a, bytes, csp, out);
  }
  if (!has_data) return absl::InvalidArgumentError("the CloudEvent has no data");
  if (!IsJson(a.datacontenttype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "datacontenttype ", a.datacontenttype.substr(0, 64),
        " with JSON data; use application/json, or data_base64 for application/protobuf"));
  }
  if (absl::Status st = CheckAttributes(a); !st.ok()) return st;
  if (absl::Status st = MessageFromJson(data, out); !st.ok()) return st;
  return ApplyAttributes(a, csp, out);
}

// The event id (for the answer) of what is known of an event, refused or not.
std::string IdOf(dom::element j, bool cloudevent) {
  if (!j.is_object()) return "";
  if (cloudevent) return StringMember(j, "id");
  std::string id = StringMember(j, "eventId");
  return id.empty() ? StringMember(j, "event_id") : id;
}

void Finish(const absl::Status& st, v1::UsageEvent& e, const HttpEventsOptions& options,
            GatewayEvent* g) {
  if (!st.ok()) {
    g->reason = reason::kMalformed;
    g->detail = std::string(st.message());
    return;
  }
  g->event_id = e.event_id();
  if (e.csp_id().empty()) e.set_csp_id(options.csp);
  if (e.csp_id() != options.csp) {
    g->reason = reason::kCspTopicMismatch;
    g->detail = absl::StrCat("cspId \"", e.csp_id().substr(0, 64), "\" is not this token's CSP (",
                             options.csp, "): a CSP publishes only its own usage");
    return;
  }
  if (e.body_case() == v1::UsageEvent::kCloseMarker) {
    g->reason = reason::kMalformed;
    g->detail = "a close marker is written by the operator's `gpuledger settle close`, not a CSP";
    return;
  }
  absl::StatusOr<EncodedEvent> encoded = EncodeUsageEvent(e, options.topics);
  if (!encoded.ok()) {
    g->reason = reason::kMalformed;
    g->detail = std::string(encoded.status().message());
    return;
  }
  g->encoded.key = std::move(encoded->key);
  g->encoded.value = std::move(encoded->value);
}

// What the gateway needs to know of a plain event while its wire bytes are written
// (EncodeJson): what Finish reads from the message.
class UsageFacts final : public WireVisitor {
 public:
  static bool IsAllocationId(const pb::FieldDescriptor* f) {
    constexpr std::string_view kName = "allocation_id";
    const std::string& name = f->name();
    return name.size() == kName.size() && name == kName;
  }
  std::string_view event_id, csp_id, allocation_id;
  int64_t schema_version = 0;
  v1::UsageEvent::BodyCase body = v1::UsageEvent::BODY_NOT_SET;
  v1::Program program{};
  v1::GpuModel gpu_model{};

  void String(int depth, const WireSchema::Field& f, std::string_view value) override {
    if (depth == 0) {
      if (f.descriptor->number() == v1::UsageEvent::kEventIdFieldNumber) event_id = value;
      if (f.descriptor->number() == v1::UsageEvent::kCspIdFieldNumber) csp_id = value;
    } else if (depth == 1 && in_body && IsAllocationId(f.descriptor)) {
      allocation_id = value;
    }
  }
  void Number(int depth, const WireSchema::Field& f, int64_t value) override {
    if (depth == 0 && f.descriptor->number() == v1::UsageEvent::kSchemaVersionFieldNumber) {
      schema_version = value;
    } else if (depth == 1 && in_body && f.enum_type != nullptr) {
      // The descriptors looked up once (each call of X_descriptor() takes a lock).
      static const pb::EnumDescriptor* const kProgram = v1::Program_descriptor();
      static const pb::EnumDescriptor* const kGpuModel = v1::GpuModel_descriptor();
      if (f.enum_type == kProgram) program = static_cast<v1::Program>(value);
      if (f.enum_type == kGpuModel) gpu_model = static_cast<v1::GpuModel>(value);
    }
  }
  void Message(int depth, const WireSchema::Field& f) override {
    if (depth != 0) return;
    in_body = f.oneof >= 0;  // the fields that follow are the body's
    if (in_body) body = static_cast<v1::UsageEvent::BodyCase>(f.descriptor->number());
  }

 private:
  bool in_body = false;
};

// One plain JSON event, turned into wire bytes without a message (json_wire.h): the same
// checks, errors and defaults as MessageFromJson + Finish give, which the gateway's tests compare
// on every input they have (ingest/tests/gateway_test.cc, tests/fuzz/fuzz_gateway.cc).
// Written into `g`, a new element of the request's vector (moving six strings into it per event
// was a measurable part of the gateway's time).
void FromPlainEvent(dom::element j, const HttpEventsOptions& options, GatewayEvent& g) {
  static const WireSchema& schema = WireSchema::Of(v1::UsageEvent::descriptor());
  if (!j.is_object()) {
    g.reason = reason::kMalformed;
    g.detail = "an event must be a JSON object";
    return;
  }
  UsageFacts facts;
  std::string& value = g.encoded.value;
  if (absl::Status st = EncodeJson(j, schema, &value, &facts); !st.ok()) {
    g.event_id = IdOf(j, false);
    g.reason = reason::kMalformed;
    g.detail = std::string(st.message());
    value.clear();
    return;
  }
  g.event_id.assign(facts.event_id);
  // Defaults appended: a later value of a field wins when the bytes are parsed.
  if (facts.schema_version == 0) {
    AppendVarintField(v1::UsageEvent::kSchemaVersionFieldNumber, 1, &value);
  }
  if (facts.csp_id.empty()) {
    facts.csp_id = options.csp;
    AppendStringField(v1::UsageEvent::kCspIdFieldNumber, options.csp, &value);
  }
  if (facts.csp_id != options.csp) {
    g.reason = reason::kCspTopicMismatch;
    g.detail = absl::StrCat("cspId \"", std::string(facts.csp_id.substr(0, 64)),
                            "\" is not this token's CSP (", options.csp,
                            "): a CSP publishes only its own usage");
    value.clear();
    return;
  }
  if (facts.body == v1::UsageEvent::kCloseMarker) {
    g.reason = reason::kMalformed;
    g.detail = "a close marker is written by the operator's `gpuledger settle close`, not a CSP";
    value.clear();
    return;
  }
  g.encoded.key = UsageEventKey(facts.body, facts.allocation_id, facts.program, facts.gpu_model,
                                facts.event_id);
}

// One event of a JSON body (a plain event or a structured CloudEvent).
void FromElement(dom::element j, bool cloudevent, const HttpEventsOptions& options,
                 GatewayEvent& g) {
  if (!cloudevent) return FromPlainEvent(j, options, g);
  g.event_id = IdOf(j, cloudevent);
  v1::UsageEvent e;
  Finish(FromStructured(j, options.csp, &e), e, options, &g);
}

}  // namespace

absl::Status UsageEventFromJsonText(std::string_view text, v1::UsageEvent* out) {
  if (absl::Status st = MessageFromJsonText(text, out); !st.ok()) return st;
  DefaultVersion(out);
  return absl::OkStatus();
}

absl::Status UsageEventFromCloudEvent(const CloudEventAttributes& a, std::string_view data,
                                      const std::string& csp, v1::UsageEvent* out) {
  if (absl::Status st = CheckAttributes(a); !st.ok()) return st;
  out->Clear();
  if (IsProtobuf(a.datacontenttype)) {
    if (!out->ParseFromArray(data.data(), static_cast<int>(data.size()))) {
      return absl::InvalidArgumentError("the data is not a UsageEvent in protobuf binary");
    }
  } else if (IsJson(a.datacontenttype)) {
    if (absl::Status st = MessageFromJsonText(data, out); !st.ok()) return st;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("datacontenttype \"",
                                                   a.datacontenttype.substr(0, 64),
                                                   "\": use application/json or "
                                                   "application/protobuf"));
  }
  return ApplyAttributes(a, csp, out);
}

namespace {

constexpr std::string_view kKafkaAttributePrefix = "ce_";

bool IsContentType(std::string_view key) {
  return absl::EqualsIgnoreCase(absl::string_view(key.data(), key.size()), "content-type");
}

}  // namespace

bool IsKafkaCloudEvent(const std::vector<std::pair<std::string, std::string>>& headers) {
  for (const auto& [key, value] : headers) {
    if (key.starts_with(kKafkaAttributePrefix)) return true;
    if (IsContentType(key) && BaseType(value).starts_with("application/cloudevents")) return true;
  }
  return false;
}

absl::Status UsageEventFromKafkaCloudEvent(
    const std::vector<std::pair<std::string, std::string>>& headers, std::string_view value,
    const std::string& csp, v1::UsageEvent* out) {
  std::vector<std::pair<std::string, std::string>> attributes;
  std::optional<std::string> content_type;
  for (const auto& [key, v] : headers) {
    if (key.starts_with(kKafkaAttributePrefix)) {
      attributes.emplace_back(key.substr(kKafkaAttributePrefix.size()), v);
    } else if (IsContentType(key)) {
      if (content_type) return absl::InvalidArgumentError("the content-type header is given twice");
      content_type = v;
    }
  }
  const std::string type = BaseType(content_type.value_or(""));
  if (type == "application/cloudevents-batch+json") {
    return absl::InvalidArgumentError(
        "a CloudEvents batch is not a Kafka message: send one CloudEvent a message");
  }
  if (type == "application/cloudevents+json") {
    if (!attributes.empty()) {
      return absl::InvalidArgumentError(
          "a structured CloudEvent (content-type application/cloudevents+json) has no ce_ headers; "
          "its attributes are in the value");
    }
    dom::element j;
    if (auto err = ThreadJsonParser().parse(value.data(), value.size()).get(j);
        err != simdjson::SUCCESS) {
      return absl::InvalidArgumentError(absl::StrCat("the structured CloudEvent is not JSON text (",
                                                     simdjson::error_message(err), ")"));
    }
    return FromStructured(j, csp, out);
  }
  bool binary = false;
  for (const auto& [name, v] : attributes) binary |= name == "specversion";
  if (!binary) {
    return absl::InvalidArgumentError(
        "ce_ headers without ce_specversion: a CloudEvent in binary mode has ce_specversion, "
        "ce_id, ce_source and ce_type; a protobuf UsageEvent has no ce_ headers");
  }
  CloudEventAttributes a;
  if (absl::Status st = AttributesOf(attributes, &a); !st.ok()) return st;
  a.datacontenttype = content_type.value_or("");
  return UsageEventFromCloudEvent(a, value, csp, out);
}

absl::StatusOr<std::vector<GatewayEvent>> ParseHttpEvents(
    std::string_view content_type, const std::vector<std::pair<std::string, std::string>>& ce,
    std::string_view body, const HttpEventsOptions& options) {
  const std::string type = BaseType(content_type);
  std::vector<GatewayEvent> out;
  auto too_many = [&](size_t n) {
    return absl::InvalidArgumentError(
        absl::StrCat(n, " events in one request; send at most ", options.max_events, " a request"));
  };
  // Binary mode: the attributes are headers, the body is the data.
  bool binary = false;
  for (const auto& [name, value] : ce) binary |= name == "specversion";
  if (binary) {
    CloudEventAttributes a;
    const absl::Status read = AttributesOf(ce, &a);
    a.datacontenttype = std::string(content_type);
    GatewayEvent g;
    g.event_id = a.id;
    v1::UsageEvent e;
    Finish(read.ok() ? UsageEventFromCloudEvent(a, body, options.csp, &e) : read, e, options, &g);
    out.push_back(std::move(g));
    return out;
  }
  const bool cloudevents =
      type == "application/cloudevents+json" || type == "application/cloudevents-batch+json";
  if (type != "application/json" && type != "application/x-ndjson" && !cloudevents) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Content-Type \"", std::string(content_type).substr(0, 64),
        "\": send application/json, application/x-ndjson, application/cloudevents+json, "
        "application/cloudevents-batch+json, or a CloudEvent in binary mode (ce-* headers)"));
  }
  dom::parser& parser = ThreadJsonParser();
  if (type == "application/x-ndjson") {
    for (absl::string_view line :
         absl::StrSplit(absl::string_view(body.data(), body.size()), '\n')) {
      if (absl::StripAsciiWhitespace(line).empty()) continue;
      if (out.size() == options.max_events) return too_many(out.size() + 1);
      dom::element j;
      if (parser.parse(line.data(), line.size()).get(j) != simdjson::SUCCESS) {
        GatewayEvent g;  // a line that is not JSON is refused alone
        g.reason = reason::kMalformed;
        g.detail = "this line is not JSON text";
        out.push_back(std::move(g));
        continue;
      }
      FromElement(j, false, options, out.emplace_back());
    }
  } else {
    dom::element j;
    if (auto err = parser.parse(body.data(), body.size()).get(j); err != simdjson::SUCCESS) {
      return absl::InvalidArgumentError(
          absl::StrCat("the body is not JSON text (", simdjson::error_message(err), ")"));
    }
    const bool batch = type == "application/cloudevents-batch+json";
    if (batch && !j.is_array()) {
      return absl::InvalidArgumentError("a CloudEvents batch is a JSON array of CloudEvents");
    }
    if (type == "application/cloudevents+json" && !j.is_object()) {
      return absl::InvalidArgumentError(
          "a structured CloudEvent is one JSON object; send an array as "
          "application/cloudevents-batch+json");
    }
    dom::array items;
    if (j.get(items) == simdjson::SUCCESS) {
      if (items.size() > options.max_events) return too_many(items.size());
      out.reserve(items.size());
      for (dom::element e : items) FromElement(e, cloudevents, options, out.emplace_back());
    } else {
      FromElement(j, cloudevents, options, out.emplace_back());
    }
  }
  if (out.empty()) return absl::InvalidArgumentError("the request holds no events");
  return out;
}

}  // namespace gpuledger::ingest
