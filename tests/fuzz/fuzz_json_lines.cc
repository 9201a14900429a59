// Fuzzes what `gpuledger publish` reads from its files or stdin: JSON lines in the protobuf
// JSON mapping of UsageEvent or RegistryEvent, parsed by EncodeJsonLines() into wire events.
//
// Input: the bytes of the file, read once as usage and once as registry events.
// Properties: no crash or sanitizer report; a file that is accepted yields at most one event
// per line, each of which decodes as its kind and goes to that kind's topic.

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "fuzz_support.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/publisher.h"

namespace {

namespace ingest = gpuledger::ingest;
namespace v1 = gpuledger::v1;
using gpuledger::fuzz::Require;

void Check(const std::string& text, ingest::EventKind kind) {
  const ingest::PublishOptions options;
  std::istringstream in(text);
  auto events = ingest::EncodeJsonLines(in, kind, options);
  if (!events.ok()) {
    Require(!events.status().message().empty(), "a refused file says why");
    return;
  }
  size_t lines = 1;
  for (char ch : text) lines += ch == '\n' ? 1 : 0;
  Require(events->size() <= lines, "at most one event per line");
  for (const ingest::EncodedEvent& e : *events) {
    if (kind == ingest::EventKind::kUsage) {
      v1::UsageEvent u;
      Require(u.ParseFromString(e.value), "an encoded usage event decodes");
      Require(!u.csp_id().empty() && e.topic == options.topics.Usage(u.csp_id()),
              "a usage event goes to its CSP's topic");
    } else {
      v1::RegistryEvent r;
      Require(r.ParseFromString(e.value), "an encoded registry event decodes");
      Require(e.topic == options.topics.Registry(), "a registry event goes to the registry");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  Check(text, ingest::EventKind::kUsage);
  Check(text, ingest::EventKind::kRegistry);
  return 0;
}
