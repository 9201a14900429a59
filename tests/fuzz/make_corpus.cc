// Writes the fuzzers' seed corpus (tests/fuzz/corpus/) from the fixture: every fixture message
// for fuzz_decide, the fixture's JSON lines for fuzz_json_lines, exports of the fixture ledger
// for fuzz_export, one request per route for fuzz_http, tokens files for fuzz_tokens, and POST
// /v1/events bodies for fuzz_gateway; plus a few edge cases each. Deterministic: the same fixture
// gives the same files. Usage: make_fuzz_corpus OUT_DIR

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "fuzz_support.h"
#include "google/protobuf/util/json_util.h"
#include "gpuledger/v1/usage.pb.h"
#include "ledger/export.h"
#include "testsupport/temp_dir.h"

namespace {

namespace fs = std::filesystem;
namespace fuzz = gpuledger::fuzz;
namespace ledger = gpuledger::ledger;

void Write(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

void DecideCorpus(const fs::path& dir) {
  int i = 0;
  for (const gpuledger::ingest::RawMessage& m : fuzz::FixtureMessages()) {
    const std::string input =
        std::string(1, static_cast<char>(fuzz::SelectorOfTopic(m.topic))) + m.payload;
    Write(dir, absl::StrCat("fixture-", absl::Dec(++i, absl::kZeroPad3)), input);
    if (i == 1) Write(dir, "registry-on-usage-topic", "\x01" + m.payload);
    if (i == 1) Write(dir, "registry-on-unknown-topic", "\x03" + m.payload);
    if (i == 50) Write(dir, "usage-truncated", input.substr(0, input.size() / 2));
    if (i == 50) Write(dir, "usage-on-registry-topic", "\x00" + m.payload);
  }
  // CloudEvents on Kafka (docs/FORMATS.md): a usage event of the fixture in binary mode with
  // JSON data, and in structured mode; and a binary one whose type is another.
  for (const gpuledger::ingest::RawMessage& m : fuzz::FixtureMessages()) {
    gpuledger::v1::UsageEvent e;
    if (m.topic == fuzz::TopicOfSelector(0) || !e.ParseFromString(m.payload)) continue;
    std::string data;
    fuzz::Require(google::protobuf::util::MessageToJsonString(e, &data).ok(), "event as JSON");
    gpuledger::ingest::RawMessage binary = m;
    binary.payload = data;
    binary.headers = {{"ce_specversion", "1.0"},
                      {"ce_type", "gpuledger.v1.UsageEvent"},
                      {"ce_id", e.event_id()},
                      {"ce_source", e.producer_id()},
                      {"content-type", "application/json"}};
    Write(dir, "cloudevent-binary", fuzz::FuzzInputOf(binary));
    binary.headers[1].second = "com.example.Other";
    Write(dir, "cloudevent-other-type", fuzz::FuzzInputOf(binary));
    gpuledger::ingest::RawMessage structured = m;
    structured.headers = {{"content-type", "application/cloudevents+json"}};
    structured.payload =
        absl::StrCat(R"({"specversion":"1.0","type":"gpuledger.v1.UsageEvent","id":")",
                     e.event_id(), R"(","source":")", e.producer_id(), R"(","data":)", data, "}");
    Write(dir, "cloudevent-structured", fuzz::FuzzInputOf(structured));
    break;
  }
  Write(dir, "empty-registry", std::string(1, '\0'));
  Write(dir, "empty-usage", "\x01");
  Write(dir, "bad-varint", std::string("\x02\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 12));
}

void JsonLinesCorpus(const fs::path& dir) {
  const std::string fixture = GPULEDGER_FUZZ_FIXTURE_DIR;
  Write(dir, "registry.jsonl", fuzz::ReadFileOrDie(fixture + "/registry.jsonl"));
  Write(dir, "usage.jsonl", fuzz::ReadFileOrDie(fixture + "/usage.jsonl"));
  Write(dir, "empty", "");
  Write(dir, "blank-lines", "\n \t\r\n\n");
  Write(dir, "empty-object", "{}\n");
  Write(dir, "not-json", "usage: 4 GPUs\n");
  Write(dir, "strings-for-numbers",
        "{\"schemaVersion\":\"1\",\"eventId\":\"e1\",\"cspId\":\"c\",\"producerSeq\":\"18446744073"
        "709551615\",\"usage\":{\"startMs\":\"-9223372036854775808\",\"endMs\":1e3}}\n");
  Write(dir, "unknown-field-and-enum",
        "{\"schemaVersion\":1,\"eventId\":\"e\\u0000\",\"cspId\":\"c\",\"x\":[1,{}],"
        "\"usage\":{\"gpuModel\":\"NO_SUCH_GPU\"}}\n");
  Write(dir, "two-bodies",
        "{\"schemaVersion\":1,\"eventId\":\"r\",\"institution\":{\"type\":\"ACADEMIA\"},"
        "\"periodClose\":{\"period\":\"2026-13\"}}\n");
}

void ExportCorpus(const fs::path& dir) {
  gpuledger::testing::TempDir tmp;
  fuzz::Require(fuzz::WriteFixtureLedger(tmp.Sub("ledger")).ok(), "the fixture ledger");
  ledger::LedgerOptions options;
  options.read_only = true;
  auto l = ledger::Ledger::Open(tmp.Sub("ledger"), options);
  fuzz::Require(l.ok(), "the fixture ledger reopens");
  auto export_of = [&](uint64_t from, uint64_t to) {
    std::ostringstream out;
    ledger::ExportOptions o;
    o.from_seq = from;
    o.to_seq = to;
    fuzz::Require(ledger::ExportLedger(**l, out, o).ok(), "the fixture exports");
    return out.str();
  };
  const std::string full = export_of(1, 0);
  Write(dir, "full", full);
  Write(dir, "slice-20-40", export_of(20, 40));
  Write(dir, "header-only", export_of((*l)->head().seq + 1, 0));
  Write(dir, "first-entry", export_of(1, 1));
  Write(dir, "truncated", full.substr(0, full.size() / 2));
}

void HttpCorpus(const fs::path& dir) {
  auto get = [](const std::string& target, const std::string& token) {
    return absl::StrCat("GET ", target, " HTTP/1.1\r\nHost: x\r\n",
                        token.empty() ? "" : absl::StrCat("Authorization: Bearer ", token, "\r\n"),
                        "\r\n");
  };
  const std::vector<std::pair<std::string, std::string>> requests = {
      {"healthz", get("/healthz", "")},
      {"readyz", get("/readyz", "")},
      {"root", get("/", "")},
      {"periods", get("/v1/periods", "fuzz-finance")},
      {"period", get("/v1/periods/2026-03", "fuzz-finance")},
      {"invoices", get("/v1/periods/2026-03/invoices", "fuzz-finance")},
      {"invoice-csv", get("/v1/periods/2026-03/invoices/inst-nari.csv", "fuzz-institution")},
      {"invoice-html", get("/v1/periods/2026-03/invoices/inst-nari.html", "fuzz-operator")},
      {"statements", get("/v1/periods/2026-03/statements", "fuzz-auditor")},
      {"statement", get("/v1/periods/2026-03/statements/csp-alpha.json", "fuzz-csp")},
      {"program", get("/v1/periods/2026-03/programs/GOV_ADVANCED", "fuzz-finance")},
      {"head", get("/v1/ledger/head", "fuzz-auditor")},
      {"entries", get("/v1/ledger/entries?from_seq=3&limit=5", "fuzz-auditor")},
      {"entry", get("/v1/ledger/entries/7", "fuzz-operator")},
      {"event", get("/v1/ledger/events/csp-alpha/csp-alpha-000737", "fuzz-operator")},
      {"export", get("/v1/ledger/export?from_seq=10&to_seq=40", "fuzz-auditor")},
      {"rejected", get("/v1/rejected?csp=csp-beta&limit=2&reason=EMPTY_INTERVAL", "fuzz-csp")},
      {"gaps", get("/v1/gaps?csp=csp-alpha", "fuzz-operator")},
      {"checkpoints", get("/v1/checkpoints?limit=3", "fuzz-auditor")},
      {"public-key", get("/v1/public-key", "fuzz-auditor")},
      {"metrics", get("/metrics", "fuzz-operator")},
      {"ui-invoices", get("/ui/invoices?period=2026-03&type=ACADEMIA", "fuzz-finance")},
      {"ui-invoice", get("/ui/invoices/2026-03/inst-nari", "fuzz-finance")},
      {"ui-statements", get("/ui/statements?period=2026-03", "fuzz-finance")},
      {"ui-login-page", get("/ui/login", "")},
      {"bad-escape", get("/v1/ledger/entries?limit=%zz", "fuzz-auditor")},
      {"bad-period", get("/v1/periods/2026-3x/invoices", "fuzz-finance")},
      {"no-token", get("/v1/ledger/head", "")},
      {"wrong-role", get("/v1/ledger/entries", "fuzz-institution")},
      {"head-method", "HEAD /v1/periods HTTP/1.1\r\nAuthorization: bearer fuzz-operator\r\n\r\n"},
      {"post-api", "POST /v1/periods HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"},
      {"cookie",
       "GET /ui/statements HTTP/1.1\r\nCookie: a=b; gpuledger_token=fuzz-auditor\r\n\r\n"},
      {"login-form",
       "POST /ui/login HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
       "Content-Length: 19\r\n\r\ntoken=fuzz-operator"},
      {"chunked",
       "POST /ui/login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\ntoken=\r\n0\r\n\r\n"},
      {"http10", "GET /healthz HTTP/1.0\r\n\r\n"},
      {"header-too-large",
       absl::StrCat("GET / HTTP/1.1\r\nX: ", std::string(9000, 'a'), "\r\n\r\n")},
      {"incomplete", "GET /v1/periods HTTP/1.1\r\nAuthoriz"},
      {"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"},
  };
  for (const auto& [name, bytes] : requests) Write(dir, name, bytes);
}

// Tokens files (`serve --tokens`): every role, comments, and each kind of line that grants
// nothing. The hashes are fixed strings: a hash's token is never needed here.
// Bodies of POST /v1/events: byte 0 even for application/json, odd for application/x-ndjson.
void GatewayCorpus(const fs::path& dir) {
  const std::string usage =
      fuzz::ReadFileOrDie(std::string(GPULEDGER_FUZZ_FIXTURE_DIR) + "/usage.jsonl");
  std::string array = "[";
  for (absl::string_view line : absl::StrSplit(usage, '\n', absl::SkipEmpty())) {
    absl::StrAppend(&array, array.size() > 1 ? "," : "", line);
  }
  array += "]";
  Write(dir, "fixture-array", "\x00" + array);
  Write(dir, "fixture-lines", "\x01" + usage);
  Write(
      dir, "one-object",
      std::string("\x00") +
          R"({"eventId":"e-1","usage":{"allocationId":"alloc-0001","gpuModel":"H200","gpuCount":1,"startMs":"2026-03-01T09:00:00+09:00","endMs":1772326800000}})");
  Write(
      dir, "odd-values",
      std::string("\x00") +
          R"([{"eventId":"a","producerSeq":1.0},{"eventId":"b","schemaVersion":-1},{"event_id":"c","eventId":"c"},{"cspId":"csp-beta"},{"closeMarker":{"period":"2026-03"}},{"usage":{},"ownUse":{}},{"outage":{"program":"GOV_ADVANCED","gpuModel":3,"kind":"OUTAGE_PLANNED"}},null,[],"x",{"usage":{"gpuCount":"4294967296"}}])");
  Write(dir, "not-json", std::string("\x00") + "[{\"eventId\":");
  Write(dir, "empty-array", std::string("\x00") + "[]");
}

void TokensCorpus(const fs::path& dir) {
  const std::string a = "sha256:" + std::string(64, 'a');
  const std::string b = "sha256:" + std::string(32, '0') + std::string(32, 'f');
  const std::string c = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  Write(dir, "every-role",
        absl::StrCat("# tokens for gpuledger serve\n", a, " operator ops team\n", b, " finance\n",
                     c, " auditor external auditor # comment\n", "sha256:", std::string(64, '1'),
                     " csp:csp-alpha\n", "sha256:", std::string(64, '2'),
                     " institution:inst-nari Nari Lab\n"));
  Write(dir, "empty", "");
  Write(dir, "comments-and-blanks", "# nothing\n\n   \t\n# more\n");
  Write(dir, "duplicate-hash", absl::StrCat(a, " operator\n", b, " finance\n", a, " auditor\n"));
  Write(dir, "upper-case-duplicate",
        absl::StrCat(c, " auditor\nsha256:0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
                     "0123456789ABCDEF operator\n"));
  Write(dir, "malformed-lines",
        absl::StrCat(a, " operator\nnot a token\nsha256:", std::string(63, 'a'), " finance\n",
                     "sha256:", std::string(64, 'g'), " finance\n", b, " root\n", b, "\n",
                     "sha512:", std::string(64, 'b'), " auditor\n", c, " csp:\n"));
  Write(dir, "crlf-and-tabs", absl::StrCat(a, "\toperator\r\n", b, "  finance  x  y \r\n"));
  Write(dir, "long-line",
        absl::StrCat(a, " operator ", std::string(2000, 'n'), "\n", b, " finance\n"));
  Write(dir, "no-final-newline", absl::StrCat(a, " operator"));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const fs::path out = argv[1];
  DecideCorpus(out / "decide");
  JsonLinesCorpus(out / "json_lines");
  ExportCorpus(out / "export");
  HttpCorpus(out / "http");
  TokensCorpus(out / "tokens");
  GatewayCorpus(out / "gateway");
  std::printf("wrote the seed corpus under %s\n", out.c_str());
  return 0;
}
