// Fuzzes what `gpuledger serve` does with the bytes a client sends: Beast's request parser with
// the server's limits, the decoding of the target, query string, cookie and login form, token
// lookup, routing and every handler, over a small ledger built from the fixture (signed, with
// checkpoints) and its settlement store. ParseRequest() is the server's own parsing step; no
// socket is involved.
//
// Input: the raw bytes of one HTTP/1.1 request (tokens the fixture accepts: see kTokens).
// Properties: no crash, exception or sanitizer report; every answer is a valid status, and no
// request makes the server answer 5xx (an internal error) on this healthy fixture.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "api/auth.h"
#include "api/routes.h"
#include "api/server.h"
#include "api/service.h"
#include "fuzz_support.h"
#include "testsupport/temp_dir.h"

namespace {

namespace api = gpuledger::api;
using gpuledger::fuzz::Require;

// Tokens of the fixture's token file, one per kind of role (the corpus uses them).
constexpr std::pair<const char*, const char*> kTokens[] = {
    {"fuzz-operator", "operator"},
    {"fuzz-finance", "finance"},
    {"fuzz-auditor", "auditor"},
    {"fuzz-csp", "csp:csp-alpha"},
    {"fuzz-institution", "institution:inst-nari"},
};

// Owns the fixture's files and the service over them, for the process's lifetime.
struct Fixture {
  gpuledger::testing::TempDir dir;
  std::unique_ptr<api::Service> service;

  Fixture() {
    Require(!dir.path().empty(), "a temporary directory");
    Require(gpuledger::fuzz::WriteFixtureLedger(dir.Sub("ledger")).ok(), "the fixture ledger");
    {
      std::ofstream tokens(dir.Sub("tokens"));
      for (const auto& [token, role] : kTokens) {
        tokens << "sha256:" << api::HashToken(token) << " " << role << " " << token << "\n";
      }
    }
    // Only its owner may use a tokens file (serve refuses it otherwise).
    std::filesystem::permissions(dir.Sub("tokens"), std::filesystem::perms::owner_read |
                                                        std::filesystem::perms::owner_write);
    api::ServiceOptions options;
    options.db = dir.Sub("ledger");
    options.secondary = dir.Sub("secondary");
    options.tokens_file = dir.Sub("tokens");
    auto s = api::Service::Open(options);
    Require(s.ok(), "the service opens over the fixture ledger");
    service = std::move(*s);
  }
  ~Fixture() { service.reset(); }  // before the directory is removed
};

api::Service& FixtureService() {
  static Fixture fixture;
  return *fixture.service;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  api::Service& service = FixtureService();
  const api::ServerOptions options;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  api::ParsedRequest parsed = api::ParseRequest(bytes, options, false);
  if (!parsed.complete) return 0;
  if (!parsed.request) {
    Require(parsed.error.status >= 400 && parsed.error.status < 500, "a bad request is a 4xx");
    return 0;
  }
  api::HttpResponse res = api::Handle(*parsed.request, service);
  Require(res.status >= 200 && res.status < 600, "a valid status");
  // The server answers /metrics itself, before Handle (which calls reaching it a 500).
  if (parsed.request->path != "/metrics") Require(res.status < 500, "no internal error");
  if (res.stream) {  // the export, streamed in chunks
    std::string chunk;
    for (int i = 0; i < 1'000; ++i) {
      chunk.clear();
      auto more = res.stream->Next(&chunk, 4'096);
      Require(more.ok(), "the export streams");
      if (!*more) break;
    }
  }
  return 0;
}
