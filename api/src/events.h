// POST /v1/events: a CSP's usage events over HTTP, produced to its own topic (ingest/gateway.h).
// Split in two around the broker's acknowledgements, which the server awaits without holding a
// thread: PrepareEvents authenticates and takes the body apart, AnswerEvents says what became
// of each event.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "api/routes.h"
#include "api/service.h"
#include "ingest/gateway.h"

namespace gpuledger::api {

struct EventsOptions {
  bool enabled = false;  // serve --brokers was given
  ingest::TopicNames topics;
  size_t max_events = 1'000;
};

struct EventsCall {
  // Set when the request is answered without producing anything (refused whole).
  std::optional<HttpResponse> answer;
  std::string principal;  // the token's name, for the log
  std::string topic;      // the CSP's usage topic
  // Every event of the request; the encoded message of those not refused is moved to to_send.
  std::vector<ingest::GatewayEvent> events;
  std::vector<ingest::EncodedEvent> to_send;  // the events not refused, in order
};

EventsCall PrepareEvents(const HttpRequest& request, Service& service,
                         const EventsOptions& options);

// `deliveries`: one per call.to_send, in order.
HttpResponse AnswerEvents(const EventsCall& call, const std::vector<ingest::Delivery>& deliveries);

}  // namespace gpuledger::api
