// Turns one consumed Kafka message into a ledger Candidate: decodes it, checks every field against
// its bound (ingest/limits.h), and decides accept or reject with a reason code. Pure: the decision
// depends only on the message, `limits` and `recorded_at_ms`, all of which the ledger entry
// records, so replaying the ledger reproduces it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "gpuledger/v1/ledger.pb.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/topics.h"
#include "ledger/ledger.h"

namespace gpuledger::ingest {

// Whether ingest records a Kafka header of this name with the entry: the CloudEvents ones,
// `ce_...` and `content-type` (any case), printable ASCII of at most 64 bytes. Others carry
// nothing a decision reads.
bool RecordedHeader(std::string_view key);

// A consumed message, as far as decisions are concerned.
struct RawMessage {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
  int64_t kafka_timestamp_ms = -1;
  std::string payload;
  // Its headers that ingest records (RecordedHeader), in order.
  std::vector<std::pair<std::string, std::string>> headers{};
  // Whose clock `kafka_timestamp_ms` is. Ingest sets it from the message; only the broker's
  // log-append time is trusted for time checks (TimeOfRecord).
  gpuledger::v1::KafkaTimestampType kafka_timestamp_type =
      gpuledger::v1::KAFKA_TIMESTAMP_LOG_APPEND_TIME;
};

struct ValidationLimits {
  // Topic names in use (with their namespace prefix, if any). Default: production names.
  TopicNames topics;
  // Longest accepted usage, own-use or outage interval. Default: 31 days.
  int64_t max_interval_ms = 31LL * 86'400'000;
  // Longest accepted event id, in bytes. Default: 128.
  size_t max_event_id_bytes = 128;
  // Usage may end at most this far after the time its message was recorded (TimeOfRecord; clock
  // skew allowance); later is FUTURE_TIMESTAMP. Default: 15 minutes.
  int64_t max_future_skew_ms = 15LL * 60'000;
  // How long usage for an allocation the registry has not announced waits (PARKED), measured
  // in TimeOfRecord of later messages, before it is rejected UNKNOWN_ALLOCATION.
  // Default: 1 hour.
  int64_t park_grace_ms = 3'600'000;
};

// The time the CSP cannot set, which every time check uses (the future check, parking's grace
// period): the broker's log-append time when the topic stamps messages so (the topics gpuledger
// creates do, and docs/OPERATIONS.md requires it), else ingest's own clock when it consumed the
// message (`recorded_at_ms`). A producer's CreateTime is never trusted. Both are in the entry.
int64_t TimeOfRecord(const ledger::Candidate& c);

// A consumed message, decoded and decided: its ledger Candidate and the event its payload decoded
// to. The pair travels together through the validator, the ledger append and the ingest loop, so
// that each payload is parsed exactly once. Owned by whoever holds it; one thread at a time.
struct Decoded {
  ledger::Candidate candidate;
  // The event, when the payload decoded as the message type of its topic with no field this
  // schema does not define (whatever the decision after that); monostate when it did not
  // (MALFORMED, UNKNOWN_TOPIC).
  std::variant<std::monostate, gpuledger::v1::UsageEvent, gpuledger::v1::RegistryEvent> event;

  const gpuledger::v1::UsageEvent* usage() const {
    return std::get_if<gpuledger::v1::UsageEvent>(&event);
  }
  const gpuledger::v1::RegistryEvent* registry() const {
    return std::get_if<gpuledger::v1::RegistryEvent>(&event);
  }
};

// Decodes `message` and decides about it (structurally: accept, or reject with a reason code).
// `recorded_at_ms`: ingest's clock now; the time of record of a message without a log-append time.
Decoded Decode(RawMessage message, const ValidationLimits& limits, int64_t recorded_at_ms);

// Decode(...).candidate: the decision alone, for tests and tools.
ledger::Candidate Decide(const RawMessage& message, const ValidationLimits& limits,
                         int64_t recorded_at_ms);

}  // namespace gpuledger::ingest
