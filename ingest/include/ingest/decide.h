// Turns one consumed Kafka message into a ledger Candidate: decodes it, checks it, and decides
// accept or reject with a reason code. Pure: the decision depends only on the message and
// `limits`, never on the wall clock, so replaying the ledger reproduces it.
#pragma once

#include <cstdint>
#include <string>

#include "ingest/topics.h"
#include "ledger/ledger.h"

namespace gpuledger::ingest {

// A consumed message, as far as decisions are concerned.
struct RawMessage {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
  int64_t kafka_timestamp_ms = -1;
  std::string payload;
};

struct ValidationLimits {
  // Topic names in use (with their namespace prefix, if any). Default: production names.
  TopicNames topics;
  // Longest accepted usage, own-use or outage interval. Default: 31 days.
  int64_t max_interval_ms = 31LL * 86'400'000;
  // Longest accepted event id, in bytes. Default: 128.
  size_t max_event_id_bytes = 128;
  // Usage may end at most this far after the Kafka timestamp of its message (clock skew
  // allowance); later is FUTURE_TIMESTAMP. Default: 15 minutes.
  int64_t max_future_skew_ms = 15LL * 60'000;
  // How long usage for an allocation the registry has not announced waits (PARKED), measured
  // in Kafka timestamps of later messages, before it is rejected UNKNOWN_ALLOCATION.
  // Default: 1 hour.
  int64_t park_grace_ms = 3'600'000;
};

// `recorded_at_ms` is stored in the candidate as information only.
ledger::Candidate Decide(const RawMessage& message, const ValidationLimits& limits,
                         int64_t recorded_at_ms);

}  // namespace gpuledger::ingest
