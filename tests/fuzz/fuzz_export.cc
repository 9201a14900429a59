// Fuzzes what an auditor's tools read from an export file: VerifyExport() (`gpuledger ledger
// verify --export`: the length-delimited ExportRecord stream, the hash chain through
// ChainCheck, checkpoints and their signatures) without a key and with the fixture's operator
// key, and ReadExport() (`gpuledger audit replay`).
//
// Input: the bytes of an export file.
// Properties: no crash or sanitizer report; a refused export names its problem; an export that
// verifies with the key also verifies without it, and ReadExport() then visits exactly the
// entries verified.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>

#include "fuzz_support.h"
#include "ledger/export.h"
#include "ledger/signing.h"
#include "ledger/verify.h"

namespace {

namespace ledger = gpuledger::ledger;
using gpuledger::fuzz::Require;

const ledger::SignatureVerifier& OperatorKey() {
  static const ledger::SignatureVerifier* key = [] {
    auto k = ledger::SignatureVerifier::FromPublicKeyFile(std::string(GPULEDGER_FUZZ_FIXTURE_DIR) +
                                                          "/operator-pub.pem");
    Require(k.ok(), "the fixture's public key loads");
    return k->release();
  }();
  return *key;
}

ledger::VerifyReport Verify(const std::string& bytes, const ledger::SignatureVerifier* key) {
  std::istringstream in(bytes);
  auto report = ledger::VerifyExport(in, key);
  Require(report.ok(), "VerifyExport reports on any bytes");
  Require(report->ok || !report->problem.empty(), "a refused export names its problem");
  return *std::move(report);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const ledger::VerifyReport with_key = Verify(bytes, &OperatorKey());
  const ledger::VerifyReport without_key = Verify(bytes, nullptr);
  if (with_key.ok) Require(without_key.ok, "what verifies with the key verifies without it");

  std::istringstream in(bytes);
  uint64_t visited = 0;
  const absl::Status read = ledger::ReadExport(in, [&](const ledger::StoredEntry&) {
    ++visited;
    return absl::OkStatus();
  });
  if (without_key.ok) {
    Require(read.ok(), "a verified export reads");
    Require(visited == without_key.entries_checked, "reading visits the verified entries");
  }
  return 0;
}
