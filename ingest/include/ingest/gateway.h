// Usage events that arrive over HTTP (`POST /v1/events`, served by `gpuledger serve --brokers`)
// or as CloudEvents: how they become the UsageEvent messages a CSP would otherwise write to its
// Kafka topic itself. Nothing here decides about an event: the gateway only turns what it is
// given into the wire message (or refuses what is not a usage event of this CSP at all), and
// ingest decides about every message on the topic the same way whoever wrote it. The formats
// are in docs/FORMATS.md ("Over HTTP" and "CloudEvents").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/kafka_config.h"
#include "ingest/publisher.h"
#include "ingest/topics.h"

namespace gpuledger::ingest {

// The CloudEvents `type` of a usage event, and the `specversion` accepted.
inline constexpr char kCloudEventType[] = "gpuledger.v1.UsageEvent";
inline constexpr char kCloudEventSpecVersion[] = "1.0";

// A CloudEvent's context attributes as far as gpuledger reads them (from an HTTP or Kafka
// binding's headers, or a structured envelope's members).
struct CloudEventAttributes {
  std::string specversion;
  std::string id;
  std::string source;
  std::string type;
  std::string time;             // RFC 3339, optional
  std::string datacontenttype;  // optional; application/json when absent
  std::string subject;          // optional, not used
};

// The UsageEvent of a CloudEvent whose data is `data` (JSON text, or protobuf binary when
// datacontenttype is application/protobuf or application/x-protobuf). `csp`: the CSP the
// transport vouches for (the token's, or the topic's). Mapping (docs/FORMATS.md):
//   id -> eventId, source -> producerId, time -> emittedAtMs, each only where the data has
//   none (and must agree with it where it has one); cspId <- `csp` where the data has none.
// Refuses a CloudEvent that is not a gpuledger usage event (specversion, type, missing id or
// source) with InvalidArgument.
absl::Status UsageEventFromCloudEvent(const CloudEventAttributes& attributes, std::string_view data,
                                      const std::string& csp, gpuledger::v1::UsageEvent* out);

// The CloudEvents Kafka binding (docs/FORMATS.md, "CloudEvents on Kafka"): a message on a usage
// topic is a CloudEvent when it has a `ce_specversion` header (binary mode: the `ce_` headers
// are the attributes, `content-type` the datacontenttype, the value the data) or a
// `content-type` of application/cloudevents+json (structured mode: the value is the envelope).
// `headers`: the message's headers as ingest records them (RecordedHeader in decide.h).
bool IsKafkaCloudEvent(const std::vector<std::pair<std::string, std::string>>& headers);

// The UsageEvent of a message IsKafkaCloudEvent says is one; `csp`: the CSP of its topic.
// InvalidArgument for what is not a usage CloudEvent (a header twice, an attribute name that is
// not one, `ce_` headers without `ce_specversion`, a batch, and whatever
// UsageEventFromCloudEvent refuses).
absl::Status UsageEventFromKafkaCloudEvent(
    const std::vector<std::pair<std::string, std::string>>& headers, std::string_view value,
    const std::string& csp, gpuledger::v1::UsageEvent* out);

// The UsageEvent of one JSON object (protobuf's JSON mapping; a time field, named ...Ms, may be
// an RFC 3339 string such as "2026-03-01T09:00:00+09:00" instead of epoch milliseconds, to the
// millisecond).
absl::Status UsageEventFromJsonText(std::string_view json, gpuledger::v1::UsageEvent* out);

// One event of an HTTP request: taken apart and encoded for its CSP's topic, or refused.
struct GatewayEvent {
  std::string event_id;  // as far as it could be read; "" if not
  // Empty: `encoded` is the message to produce. Otherwise why it is refused: MALFORMED (not a
  // usage event: bad JSON, an unknown field, not a CloudEvent of gpuledger's type) or
  // CSP_TOPIC_MISMATCH (names another CSP than the token's), with `detail`.
  std::string reason;
  std::string detail;
  // The message's key and value; `encoded.topic` is left empty: every event of a request goes to
  // its CSP's usage topic, options.topics.Usage(options.csp) (a copy of the name an event was a
  // measurable part of the gateway's time).
  EncodedEvent encoded;
};

struct HttpEventsOptions {
  std::string csp;  // the CSP of the token: every event is published as this CSP
  TopicNames topics;
  size_t max_events = 1'000;  // a batch with more is refused whole
};

// The events of an HTTP request body, by its Content-Type:
//   application/json                    one event object, or an array of them
//   application/x-ndjson                one event object per line
//   application/cloudevents+json        one CloudEvent (structured mode)
//   application/cloudevents-batch+json  an array of CloudEvents (batched mode)
//   anything else with ce-* headers     one CloudEvent (binary mode): the headers are its
//                                       attributes, the body its data
// `ce_headers`: the request's ce-* headers, lower-case names without the prefix ("id", ...).
// An error (InvalidArgument) refuses the whole body: not JSON at all, an unknown content type,
// no events, or more than max_events. Otherwise one GatewayEvent per event, in order.
absl::StatusOr<std::vector<GatewayEvent>> ParseHttpEvents(
    std::string_view content_type,
    const std::vector<std::pair<std::string, std::string>>& ce_headers, std::string_view body,
    const HttpEventsOptions& options);

// What the broker said about one produced message.
struct Delivery {
  absl::Status status;  // OK: acknowledged by every in-sync replica
  int32_t partition = -1;
  int64_t offset = -1;
};

struct EventProducerOptions {
  std::string brokers;
  KafkaConfig kafka_config;
  // How long a message may wait for its acknowledgement before it is reported failed
  // (librdkafka's message.timeout.ms). Default: 10 s.
  int delivery_timeout_ms = 10'000;
  // How long librdkafka gathers messages into a batch (linger.ms; `--kafka-config` overrides it).
  // 5 ms, librdkafka's own default: with many requests in flight the batches are then large
  // enough that the broker spends on each event what it spends on kcat's (docs/BENCHMARKS.md,
  // 2026-12-06); 1 ms made about three small batches a request and cost more at every load.
  int linger_ms = 5;
};

// A long-lived idempotent producer (acks=all) that reports each batch's deliveries once every
// message of it is acknowledged or has failed: what the HTTP gateway answers from.
class EventProducer {
 public:
  static absl::StatusOr<std::unique_ptr<EventProducer>> Create(const EventProducerOptions& options);
  ~EventProducer();
  using Done = std::function<void(std::vector<Delivery>)>;
  // Queues `events` to `topic` in order (their own `topic` is not read: a request's events all
  // go to its CSP's topic) and calls `done` (on the producer's own thread) with one Delivery per
  // event, in the same order, when the last is settled. Never blocks for long: a full queue
  // fails the rest of the batch at once (retryable). The topic is created the first time.
  void Produce(const std::string& topic, const std::vector<EncodedEvent>& events, Done done);
  // Whether a broker answered lately (a metadata request within the last few seconds).
  bool BrokerReachable() const;

 private:
  struct Impl;
  explicit EventProducer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpuledger::ingest
