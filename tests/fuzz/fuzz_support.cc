#include "fuzz_support.h"

#include <google/protobuf/stubs/logging.h>
#include <spdlog/spdlog.h>

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
