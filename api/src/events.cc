#include "events.h"

#include <spdlog/spdlog.h>

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
  for (const char c : s) {
    if (c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20 ||
        static_cast<unsigned char>(c) >= 0x80) {
      AppendJsonString(s, out);
      return;
    }
  }
  out->push_back('"');
  out->append(s);
  out->push_back('"');
}

}  // namespace

// Written by hand rather than through nlohmann::json: for a batch of events this answer was a
// fifth of the gateway's time (ops/bench/gateway.sh).
HttpResponse AnswerEvents(const EventsCall& call, const std::vector<ingest::Delivery>& deliveries) {
  size_t taken = 0, refused = 0, failed = 0, next = 0;
  std::string items;
  items.reserve(64 * call.events.size());
  for (const ingest::GatewayEvent& e : call.events) {
    items.append(items.empty() ? "\n  {\"eventId\": " : ",\n  {\"eventId\": ");
    AppendId(e.event_id, &items);
    if (!e.reason.empty()) {
      ++refused;
      absl::StrAppend(&items, ", \"status\": \"refused\", \"reason\": \"", e.reason,
                      "\", \"detail\": ");
      AppendJsonString(e.detail, &items);
    } else {
      const ingest::Delivery& d = deliveries.at(next++);
      if (d.status.ok()) {
        ++taken;
        absl::StrAppend(&items, ", \"status\": \"taken\", \"partition\": ", d.partition,
                        ", \"offset\": ", d.offset);
      } else {
        ++failed;
        items.append(", \"status\": \"failed\", \"detail\": ");
        AppendJsonString(absl::StrCat(std::string(d.status.message()),
                                      "; send it again (an event sent twice is recorded once)"),
                         &items);
      }
    }
    items.push_back('}');
  }
  HttpResponse r;
  r.status = failed > 0 ? 503 : refused > 0 ? 422 : 200;
  r.body = absl::StrCat("{\"topic\": ");
  AppendJsonString(call.topic, &r.body);
  absl::StrAppend(&r.body, ", \"taken\": ", taken, ", \"refused\": ", refused,
                  ", \"failed\": ", failed, ", \"events\": [", items, "\n]}\n");
  if (failed > 0) r.headers.emplace_back("Retry-After", "1");
  r.route = "/v1/events";
  if (refused + failed > 0) {
    spdlog::info("events from {}: {} taken, {} refused, {} failed", call.principal, taken, refused,
                 failed);
  }
  return r;
}

}  // namespace gpuledger::api
