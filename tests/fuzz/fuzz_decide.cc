// Fuzzes ingest's decision about one consumed Kafka message: arbitrary payload bytes on the
// registry topic, a CSP's usage topic or an unknown topic, decoded and decided by Decode() and
// then checked by a Validator that holds the fixture's registry and usage (what ingest does
// for each message, without Kafka or the ledger).
//
// Input: one byte choosing the topic and whether CloudEvents headers follow (fuzz_support.h:
// MessageOfFuzzInput), then the message payload.
// Properties: no crash or sanitizer report; the decision is deterministic; a decoded message's
// canonical bytes are a fixed point (re-encoding them gives the same bytes and decision).

#include <cstddef>
#include <cstdint>
#include <memory>

#include "fuzz_support.h"
#include "ingest/reasons.h"

namespace {

using gpuledger::fuzz::Require;
namespace ingest = gpuledger::ingest;
namespace ledger = gpuledger::ledger;

ingest::Validator& FixtureValidator() {
  static ingest::Validator* validator = [] {
    auto* v = new ingest::Validator(ingest::ValidationLimits{});
    Require(gpuledger::fuzz::Replay(gpuledger::fuzz::FixtureMessages(), v, nullptr).ok(),
            "the fixture replays");
    return v;
  }();
  return *validator;
}

ledger::Candidate DecideAndCheck(const ingest::RawMessage& m) {
  ingest::Decoded d = ingest::Decode(m, ingest::ValidationLimits{}, gpuledger::fuzz::kKafkaMs);
  FixtureValidator().Check(&d);
  return d.candidate;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const ingest::RawMessage m = gpuledger::fuzz::MessageOfFuzzInput(data, size);

  const ledger::Candidate c = DecideAndCheck(m);
  const ledger::Candidate again = DecideAndCheck(m);
  Require(again.reason_code == c.reason_code && again.reason_detail == c.reason_detail &&
              again.park == c.park && again.canonical == c.canonical,
          "the same message is decided the same way twice");
  Require(c.reason_code.empty() || !c.reason_detail.empty(), "a rejection says why");
  const bool decoded =
      c.reason_code != ingest::reason::kMalformed && c.reason_code != ingest::reason::kUnknownTopic;
  Require(c.decoded_event.empty() || c.decoded_event == c.canonical,
          "a CloudEvent's recorded event is its canonical bytes");
  Require(c.headers == m.headers, "the headers are recorded as consumed");
  if (decoded) {
    // The canonical bytes are a protobuf message: on the topic without CloudEvents headers.
    ingest::RawMessage canonical = m;
    canonical.payload = c.canonical;
    canonical.headers.clear();
    const ledger::Candidate d = DecideAndCheck(canonical);
    Require(d.canonical == c.canonical, "canonical bytes re-encode to themselves");
    Require(d.reason_code == c.reason_code && d.park == c.park,
            "the canonical bytes are decided as the original");
  }
  return 0;
}
