#include "events.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace gpuledger::api {

using json = nlohmann::json;

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
  for (const ingest::GatewayEvent& e : call.events) {
    if (e.reason.empty()) call.to_send.push_back(e.encoded);
  }
  return call;
}

HttpResponse AnswerEvents(const EventsCall& call, const std::vector<ingest::Delivery>& deliveries) {
  json items = json::array();
  size_t taken = 0, refused = 0, failed = 0, next = 0;
  for (const ingest::GatewayEvent& e : call.events) {
    json item = {{"eventId", e.event_id}};
    if (!e.reason.empty()) {
      ++refused;
      item["status"] = "refused";
      item["reason"] = e.reason;
      item["detail"] = e.detail;
    } else {
      const ingest::Delivery& d = deliveries.at(next++);
      if (d.status.ok()) {
        ++taken;
        item["status"] = "taken";
        item["topic"] = e.encoded.topic;
        item["partition"] = d.partition;
        item["offset"] = d.offset;
      } else {
        ++failed;
        item["status"] = "failed";
        item["detail"] = absl::StrCat(std::string(d.status.message()),
                                      "; send it again (an event sent twice is recorded once)");
      }
    }
    items.push_back(std::move(item));
  }
  HttpResponse r;
  r.status = failed > 0 ? 503 : refused > 0 ? 422 : 200;
  r.body = json{{"taken", taken}, {"refused", refused}, {"failed", failed}, {"events", items}}.dump(
               -1, ' ', false, json::error_handler_t::replace) +
           "\n";
  if (failed > 0) r.headers.emplace_back("Retry-After", "1");
  r.route = "/v1/events";
  if (refused + failed > 0) {
    spdlog::info("events from {}: {} taken, {} refused, {} failed", call.principal, taken, refused,
                 failed);
  }
  return r;
}

}  // namespace gpuledger::api
