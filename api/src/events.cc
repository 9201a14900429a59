#include "events.h"

#include <spdlog/spdlog.h>

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "access_log.h"

namespace gpuledger::api {

EventsCall PrepareEvents(const HttpRequest& req, Service& svc, const EventsOptions& options) {
  EventsCall call;
  auto refuse = [&](HttpResponse r) {
    r.route = "/v1/events";
    call.answer = std::move(r);
    return std::move(call);
  };
  if (req.method != "POST") {
    HttpResponse r = Error(405, "method_not_allowed", "use POST to publish usage events");
    r.headers.emplace_back("Allow", "POST");
    return refuse(std::move(r));
  }
  std::optional<Principal> who;
  if (absl::StartsWithIgnoreCase(req.authorization, "bearer ")) {
    who = svc.tokens().Authenticate(req.authorization.substr(7));
  }
  if (!who) {
    HttpResponse r = Error(401, "unauthorized",
                           "a CSP's bearer token is required (Authorization: Bearer <token>)");
    r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"gpuledger\"");
    return refuse(std::move(r));
  }
  call.principal = who->name;
  if (who->role != Role::kCsp) {
    return refuse(Error(403, "forbidden",
                        absl::StrCat("role ", who->RoleString(),
                                     " may not publish usage: only a CSP's token does, as that "
                                     "CSP (registry events are published by the operator with "
                                     "`gpuledger publish --registry`)")));
  }
  if (!options.enabled) {
    return refuse(Error(503, "ingest_over_http_off",
                        "this server does not take events over HTTP: the operator starts "
                        "`gpuledger serve` with --brokers to turn it on; until then publish to "
                        "Kafka (docs/OPERATIONS.md)"));
  }
  ingest::HttpEventsOptions parse;
  parse.csp = who->scope_id;
  parse.topics = options.topics;
  parse.max_events = options.max_events;
  absl::StatusOr<std::vector<ingest::GatewayEvent>> events =
      ingest::ParseHttpEvents(req.content_type, req.cloudevent_headers, req.body, parse);
  if (!events.ok()) {
    return refuse(Error(events.status().code() == absl::StatusCode::kInvalidArgument &&
                                absl::StartsWith(events.status().message(), "Content-Type")
                            ? 415
                            : 400,
                        "bad_events", std::string(events.status().message())));
  }
  call.events = *std::move(events);
  call.topic = options.topics.Usage(who->scope_id);
  call.to_send.reserve(call.events.size());
  for (ingest::GatewayEvent& e : call.events) {
    if (e.reason.empty()) call.to_send.push_back(std::move(e.encoded));
  }
  return call;
}

namespace {

// Most ids need no escaping: copied as they are; others as AppendJsonString (access_log.h)
// writes them: quotes, backslashes and control characters escaped, bytes that are not UTF-8
// replaced (the answer is always valid JSON).
void AppendId(std::string_view s, std::string* out) {
  bool plain = true;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    plain &= u >= 0x20 && u < 0x7f && c != '"' && c != '\\';
  }
  if (!plain) {
    AppendJsonString(s, out);
    return;
  }
  const size_t at = out->size();
  out->resize(at + s.size() + 2);
  char* p = out->data() + at;
  p[0] = '"';
  std::memcpy(p + 1, s.data(), s.size());
  p[s.size() + 1] = '"';
}

}  // namespace

// Written by hand rather than through nlohmann::json: for a batch of events this answer was a
// fifth of the gateway's time (ops/bench/gateway.sh). The counts first, then every event's
// entry straight into the body.
HttpResponse AnswerEvents(const EventsCall& call, const std::vector<ingest::Delivery>& deliveries) {
  size_t taken = 0, refused = 0, failed = 0;
  for (const ingest::GatewayEvent& e : call.events) refused += e.reason.empty() ? 0 : 1;
  for (const ingest::Delivery& d : deliveries) (d.status.ok() ? taken : failed) += 1;
  HttpResponse r;
  r.status = failed > 0 ? 503 : refused > 0 ? 422 : 200;
  std::string& body = r.body;
  body.reserve(96 + call.topic.size() + 96 * call.events.size());
  body.append("{\"topic\": ");
  AppendJsonString(call.topic, &body);
  absl::StrAppend(&body, ", \"taken\": ", taken, ", \"refused\": ", refused,
                  ", \"failed\": ", failed, ", \"events\": [");
  size_t next = 0;
  for (const ingest::GatewayEvent& e : call.events) {
    body.append(&e == call.events.data() ? "\n  {\"eventId\": " : ",\n  {\"eventId\": ");
    AppendId(e.event_id, &body);
    if (!e.reason.empty()) {
      absl::StrAppend(&body, ", \"status\": \"refused\", \"reason\": \"", e.reason,
                      "\", \"detail\": ");
      AppendJsonString(e.detail, &body);
    } else {
      const ingest::Delivery& d = deliveries.at(next++);
      if (d.status.ok()) {
        absl::StrAppend(&body, ", \"status\": \"taken\", \"partition\": ", d.partition,
                        ", \"offset\": ", d.offset);
      } else {
        body.append(", \"status\": \"failed\", \"detail\": ");
        AppendJsonString(absl::StrCat(std::string(d.status.message()),
                                      "; send it again (an event sent twice is recorded once)"),
                         &body);
      }
    }
    body.push_back('}');
  }
  body.append("\n]}\n");
  if (failed > 0) r.headers.emplace_back("Retry-After", "1");
  r.route = "/v1/events";
  if (refused + failed > 0) {
    spdlog::info("events from {}: {} taken, {} refused, {} failed", call.principal, taken, refused,
                 failed);
  }
  return r;
}

}  // namespace gpuledger::api
