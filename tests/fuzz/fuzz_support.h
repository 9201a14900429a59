// Shared by the fuzzers and the corpus maker: the fixture (a small sample month as JSON lines,
// tests/fuzz/fixture/) turned into wire messages and decided as ingest decides them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "ingest/decide.h"
#include "ingest/validator.h"
#include "ledger/ledger.h"

namespace gpuledger::fuzz {

// The Kafka timestamp of every fixture and fuzzed message: after the fixture's last event, so
// that none is FUTURE_TIMESTAMP for its own sake.
inline constexpr int64_t kKafkaMs = 1'775'300'000'000;

// The fixture's messages in ledger order (registry first, then usage), encoded for the wire
// as `gpuledger publish` encodes them. Aborts if the fixture does not parse.
std::vector<ingest::RawMessage> FixtureMessages();

// The first byte of a fuzzed message selects its topic (its value modulo this many); the rest
// is the payload. kTopics[0] is the registry, then two CSPs' usage topics, then a topic that
// is neither.
std::string TopicOfSelector(uint8_t selector);
uint8_t SelectorOfTopic(const std::string& topic);

// A fuzzed Kafka message: the selector byte (its topic, above); when its top bit is set, a byte
// giving the number of headers (modulo 8), then per header a byte choosing its name (ce_...,
// content-type, or one ingest does not keep) and a length byte with that many value bytes;
// then the payload. What is cut short ends there. FuzzInputOf writes a message back so.
ingest::RawMessage MessageOfFuzzInput(const uint8_t* data, size_t size);
std::string FuzzInputOf(const ingest::RawMessage& message);

// Decides `messages` in order as ingest does (Decide, Check, then Recorded with consecutive
// seqs); with `ledger`, also appends and commits each decision there.
absl::Status Replay(const std::vector<ingest::RawMessage>& messages, ingest::Validator* validator,
                    ledger::Ledger* ledger);

// A ledger at `path` holding the fixture as ingest records it: signed with the fixture's
// operator key (fixture/operator.pem), a checkpoint every 16 entries, closed on return.
absl::Status WriteFixtureLedger(const std::string& path);

// Bytes of a file; aborts if it cannot be read.
std::string ReadFileOrDie(const std::string& path);

// Aborts with `what` when `ok` is false: a property a fuzzer checks did not hold.
void Require(bool ok, std::string_view what);

}  // namespace gpuledger::fuzz
