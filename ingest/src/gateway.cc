#include "ingest/gateway.h"

#include <google/protobuf/util/json_util.h>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "ingest/reasons.h"

namespace gpuledger::ingest {

namespace v1 = gpuledger::v1;
using json = nlohmann::json;

namespace {

// Milliseconds since the epoch of an RFC 3339 time, refused unless whole milliseconds.
absl::StatusOr<int64_t> Rfc3339Ms(const std::string& text, const std::string& field) {
  absl::Time t;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, text, &t, &err)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": \"", text.substr(0, 64),
                     "\" is neither epoch milliseconds nor an RFC 3339 time (", err,
                     "); write e.g. 2026-03-01T09:00:00+09:00"));
  }
  const int64_t ms = absl::ToUnixMillis(t);
  if (absl::FromUnixMillis(ms) != t) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": \"", text.substr(0, 64),
                     "\" has a fraction below a millisecond; gpuledger "
                     "counts whole milliseconds (round it at the source)"));
  }
  return ms;
}

bool IsInteger(const std::string& s) {
  int64_t unused = 0;
  return absl::SimpleAtoi(s, &unused);
}

// Turns every RFC 3339 string in a time field (a name ending in Ms or _ms) into epoch ms.
absl::Status NormalizeTimes(json* j) {
  if (j->is_array()) {
    for (json& e : *j) {
      if (absl::Status st = NormalizeTimes(&e); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  if (!j->is_object()) return absl::OkStatus();
  for (auto it = j->begin(); it != j->end(); ++it) {
    json& v = it.value();
    if (v.is_string() && (absl::EndsWith(it.key(), "Ms") || absl::EndsWith(it.key(), "_ms"))) {
      const std::string& s = v.get_ref<const std::string&>();
      if (IsInteger(s)) continue;  // the JSON mapping's own form of an int64
      absl::StatusOr<int64_t> ms = Rfc3339Ms(s, it.key());
      if (!ms.ok()) return ms.status();
      v = *ms;
    } else if (v.is_object() || v.is_array()) {
      if (absl::Status st = NormalizeTimes(&v); !st.ok()) return st;
    }
  }
  return absl::OkStatus();
}

absl::Status FromJson(json* j, v1::UsageEvent* out) {
  if (!j->is_object()) return absl::InvalidArgumentError("an event must be a JSON object");
  if (absl::Status st = NormalizeTimes(j); !st.ok()) return st;
  const std::string text = j->dump();
  const auto st = google::protobuf::util::JsonStringToMessage(text, out);
  if (!st.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a UsageEvent in protobuf's JSON mapping: ", std::string(st.message())));
  }
  // The path (/v1/events) and the CloudEvent type name the schema's version.
  if (out->schema_version() == 0) out->set_schema_version(1);
  return absl::OkStatus();
}

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

std::string StringMember(const json& j, const char* name) {
  const auto it = j.find(name);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// The UsageEvent of a structured CloudEvent (one member of a batch, or a whole body).
absl::Status FromStructured(const json& j, const std::string& csp, v1::UsageEvent* out) {
  if (!j.is_object()) return absl::InvalidArgumentError("a CloudEvent must be a JSON object");
  CloudEventAttributes a;
  a.specversion = StringMember(j, "specversion");
  a.id = StringMember(j, "id");
  a.source = StringMember(j, "source");
  a.type = StringMember(j, "type");
  a.time = StringMember(j, "time");
  a.datacontenttype = StringMember(j, "datacontenttype");
  a.subject = StringMember(j, "subject");
  const auto data = j.find("data");
  const auto data_base64 = j.find("data_base64");
  if (data != j.end() && data_base64 != j.end()) {
    return absl::InvalidArgumentError("a CloudEvent has data or data_base64, not both");
  }
  if (data_base64 != j.end()) {
    std::string bytes;
    if (!data_base64->is_string() ||
        !absl::Base64Unescape(data_base64->get<std::string>(), &bytes)) {
      return absl::InvalidArgumentError("data_base64 is not base64 text");
    }
    return UsageEventFromCloudEvent(a, bytes, csp, out);
  }
  if (data == j.end()) return absl::InvalidArgumentError("the CloudEvent has no data");
  if (!a.datacontenttype.empty() && BaseType(a.datacontenttype) != "application/json") {
    return absl::InvalidArgumentError(absl::StrCat(
        "datacontenttype ", a.datacontenttype,
        " with JSON data; use application/json, or data_base64 for application/protobuf"));
  }
  a.datacontenttype = "application/json";
  return UsageEventFromCloudEvent(a, data->dump(), csp, out);
}

// Reads the event id (for the answer) from what is known of a refused event.
std::string IdOf(const json& j, bool cloudevent) {
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
  g->encoded = std::move(*encoded);
}

}  // namespace

absl::Status UsageEventFromJsonText(std::string_view text, v1::UsageEvent* out) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("not JSON text");
  return FromJson(&j, out);
}

absl::Status UsageEventFromCloudEvent(const CloudEventAttributes& a, std::string_view data,
                                      const std::string& csp, v1::UsageEvent* out) {
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
  out->Clear();
  if (IsProtobuf(a.datacontenttype)) {
    if (!out->ParseFromString(std::string(data))) {
      return absl::InvalidArgumentError("the data is not a UsageEvent in protobuf binary");
    }
    if (out->schema_version() == 0) out->set_schema_version(1);
  } else if (a.datacontenttype.empty() || BaseType(a.datacontenttype) == "application/json") {
    if (absl::Status st = UsageEventFromJsonText(data, out); !st.ok()) return st;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("datacontenttype \"",
                                                   a.datacontenttype.substr(0, 64),
                                                   "\": use application/json or "
                                                   "application/protobuf"));
  }
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
    for (const auto& [name, value] : ce) {
      if (name == "specversion") a.specversion = value;
      if (name == "id") a.id = value;
      if (name == "source") a.source = value;
      if (name == "type") a.type = value;
      if (name == "time") a.time = value;
      if (name == "subject") a.subject = value;
    }
    a.datacontenttype = std::string(content_type);
    GatewayEvent g;
    g.event_id = a.id;
    v1::UsageEvent e;
    Finish(UsageEventFromCloudEvent(a, body, options.csp, &e), e, options, &g);
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
  std::vector<json> items;
  if (type == "application/x-ndjson") {
    for (absl::string_view line :
         absl::StrSplit(absl::string_view(body.data(), body.size()), '\n')) {
      if (absl::StripAsciiWhitespace(line).empty()) continue;
      if (items.size() == options.max_events) return too_many(items.size() + 1);
      json j = json::parse(line.begin(), line.end(), nullptr, false);
      items.push_back(std::move(j));  // a bad line stays discarded: refused alone
    }
  } else {
    json j = json::parse(body, nullptr, false);
    if (j.is_discarded()) {
      return absl::InvalidArgumentError("the body is not JSON text");
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
    if (j.is_array()) {
      if (j.size() > options.max_events) return too_many(j.size());
      items.reserve(j.size());
      for (json& e : j) items.push_back(std::move(e));
    } else {
      items.push_back(std::move(j));
    }
  }
  if (items.empty()) return absl::InvalidArgumentError("the request holds no events");
  out.reserve(items.size());
  for (json& j : items) {
    GatewayEvent g;
    g.event_id = IdOf(j, cloudevents);
    v1::UsageEvent e;
    absl::Status st = j.is_discarded() ? absl::InvalidArgumentError("this line is not JSON text")
                      : cloudevents    ? FromStructured(j, options.csp, &e)
                                       : FromJson(&j, &e);
    Finish(st, e, options, &g);
    out.push_back(std::move(g));
  }
  return out;
}

}  // namespace gpuledger::ingest
