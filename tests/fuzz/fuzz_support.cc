#include "fuzz_support.h"

#include <google/protobuf/stubs/logging.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>

#include "ingest/publisher.h"
#include "ledger/signing.h"

namespace gpuledger::fuzz {

namespace {

// The decoders log what they refuse (protobuf directly, RocksDB through spdlog); over millions
// of inputs that would be most of a fuzzer's work and output.
[[maybe_unused]] const bool kQuiet = [] {
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  spdlog::set_level(spdlog::level::off);
  return true;
}();

const char* const kTopics[] = {"gpuledger.registry", "gpuledger.usage.csp-alpha",
                               "gpuledger.usage.csp-beta", "gpuledger.other"};
constexpr uint8_t kTopicCount = 4;

std::vector<ingest::EncodedEvent> Encode(const std::string& file, ingest::EventKind kind) {
  std::istringstream in(ReadFileOrDie(std::string(GPULEDGER_FUZZ_FIXTURE_DIR) + "/" + file));
  auto events = ingest::EncodeJsonLines(in, kind, ingest::PublishOptions{});
  Require(events.ok(), "the fixture's JSON lines encode");
  return *std::move(events);
}

}  // namespace

void Require(bool ok, std::string_view what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz property violated: %.*s\n", static_cast<int>(what.size()),
               what.data());
  std::abort();
}

absl::Status WriteFixtureLedger(const std::string& path) {
  auto signer =
      ledger::Signer::FromPrivateKeyFile(std::string(GPULEDGER_FUZZ_FIXTURE_DIR) + "/operator.pem");
  if (!signer.ok()) return signer.status();
  ledger::LedgerOptions options;
  options.sync_commits = false;
  options.signer = std::move(*signer);
  options.checkpoint_interval = 16;
  auto l = ledger::Ledger::Open(path, options);
  if (!l.ok()) return l.status();
  ingest::Validator validator{ingest::ValidationLimits{}};
  return Replay(FixtureMessages(), &validator, l->get());
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    std::abort();
  }
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string TopicOfSelector(uint8_t selector) { return kTopics[selector % kTopicCount]; }

namespace {

constexpr uint8_t kWithHeaders = 0x80;
// The header names a fuzzed message may carry (a byte picks one, modulo their number).
constexpr const char* kHeaderNames[] = {"ce_specversion", "ce_id",      "ce_source",
                                        "ce_type",        "ce_time",    "content-type",
                                        "Content-Type",   "ce_subject", "ce_datacontenttype",
                                        "ce_Bad-Name",    "traceparent"};
constexpr size_t kHeaderNameCount = sizeof kHeaderNames / sizeof kHeaderNames[0];

}  // namespace

ingest::RawMessage MessageOfFuzzInput(const uint8_t* data, size_t size) {
  ingest::RawMessage m;
  size_t i = 0;
  const uint8_t selector = size > 0 ? data[i++] : 0;
  m.topic = TopicOfSelector(selector & ~kWithHeaders);
  m.offset = 1;
  m.kafka_timestamp_ms = kKafkaMs;
  if ((selector & kWithHeaders) != 0 && i < size) {
    const int count = data[i++] % 8;
    for (int h = 0; h < count && i + 2 <= size; ++h) {
      const std::string name = kHeaderNames[data[i++] % kHeaderNameCount];
      const size_t wanted = data[i++];
      const size_t len = std::min<size_t>(wanted, size - i);
      std::string value(reinterpret_cast<const char*>(data) + i, len);
      i += len;
      // As ingest's consumer keeps them (decode_ahead.cc).
      if (ingest::RecordedHeader(name)) m.headers.emplace_back(name, std::move(value));
    }
  }
  m.payload.assign(reinterpret_cast<const char*>(data) + i, size - i);
  return m;
}

std::string FuzzInputOf(const ingest::RawMessage& m) {
  std::string out(
      1, static_cast<char>(SelectorOfTopic(m.topic) | (m.headers.empty() ? 0 : kWithHeaders)));
  if (!m.headers.empty()) {
    Require(m.headers.size() < 8, "at most 7 headers");
    out.push_back(static_cast<char>(m.headers.size()));
    for (const auto& [name, value] : m.headers) {
      size_t index = 0;
      while (index < kHeaderNameCount && name != kHeaderNames[index]) ++index;
      Require(index < kHeaderNameCount && value.size() < 256, "a header a fuzz input can hold");
      out.push_back(static_cast<char>(index));
      out.push_back(static_cast<char>(value.size()));
      out.append(value);
    }
  }
  return out + m.payload;
}

uint8_t SelectorOfTopic(const std::string& topic) {
  for (uint8_t i = 0; i < kTopicCount; ++i) {
    if (topic == kTopics[i]) return i;
  }
  return kTopicCount - 1;
}

std::vector<ingest::RawMessage> FixtureMessages() {
  std::vector<ingest::RawMessage> out;
  int64_t offset = 0;
  for (const auto& [file, kind] : {std::pair{"registry.jsonl", ingest::EventKind::kRegistry},
                                   std::pair{"usage.jsonl", ingest::EventKind::kUsage}}) {
    for (ingest::EncodedEvent& e : Encode(file, kind)) {
      out.push_back({e.topic, 0, offset++, kKafkaMs, std::move(e.value)});
    }
  }
  return out;
}

absl::Status Replay(const std::vector<ingest::RawMessage>& messages, ingest::Validator* validator,
                    ledger::Ledger* ledger) {
  uint64_t seq = 0;
  auto record = [&](const ingest::Decoded& c) -> absl::Status {
    if (ledger == nullptr) {
      validator->Recorded(c, ++seq);
      return absl::OkStatus();
    }
    absl::StatusOr<ledger::AppendResult> r = ledger->Append(c.candidate);
    if (!r.ok()) return r.status();
    if (r->kind == ledger::AppendKind::kAppended) validator->Recorded(c, r->seq);
    return absl::OkStatus();
  };
  for (const ingest::RawMessage& m : messages) {
    ingest::Decoded c = ingest::Decode(m, ingest::ValidationLimits{}, kKafkaMs);
    validator->Check(&c);
    if (absl::Status st = record(c); !st.ok()) return st;
    for (ingest::Decoded& r : validator->TakeResolvable()) {
      validator->Check(&r);
      if (absl::Status st = record(r); !st.ok()) return st;
    }
    if (ledger != nullptr) {
      if (absl::Status st = ledger->Commit(); !st.ok()) return st;
    }
  }
  return validator->status();
}

}  // namespace gpuledger::fuzz
