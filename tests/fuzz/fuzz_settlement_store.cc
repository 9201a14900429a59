// Fuzzes what settlement reads back from its store (settlement/src/keys.h): records of any key
// and value, written over a store settled from the fixture month, then read the ways `settle`,
// `settle status`, `audit replay` and `serve` read them (Engine::Open, the documents of every
// period around the fixture's, one invoice and one statement alone, daily usage, closes).
//
// Input: records, each [1 byte: record kind (a key prefix of keys.h)][2 bytes BE: key length]
// [key bytes after the prefix][2 bytes BE: value length][value bytes], until the input ends.
// The store's own records are staged over the fixture's and rolled back after each input.
// Properties: no crash, sanitizer report or invariant abort on any bytes; Engine::Open either
// opens or names what it refuses; when it opens, a period's documents are either built (a
// document that cannot be computed is named in `errors` with a reason) or refused with a reason.

#include <stdlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "ledger/ledger.h"
#include "settlement/engine.h"
#include "settlement/store.h"

namespace {

namespace settlement = gpuledger::settlement;
namespace ledger = gpuledger::ledger;
using gpuledger::fuzz::Require;

constexpr const char* kPrefixes[] = {
    "s/applied", "r/", "c/",  "f/",  "l/", "t/",  "b/",  "rd/", "u/", "i/",       "k/",       "x/",
    "o/",        "w/", "tw/", "bw/", "d/", "td/", "bd/", "dk/", "n/", "s/format", "s/options"};

struct Fixture {
  std::unique_ptr<ledger::Ledger> ledger;
  std::unique_ptr<settlement::Store> store;
};

std::string& FixtureDir() {
  static std::string dir = "/tmp/fuzz-settlement-store.XXXXXX";
  return dir;
}

Fixture& TheFixture() {
  static Fixture* f = [] {
    auto* out = new Fixture;
    std::string& dir = FixtureDir();
    Require(::mkdtemp(dir.data()) != nullptr, "a temporary directory");
    // The files go when the process exits (the open databases are never closed: no flush).
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(FixtureDir(), ec);
    });
    Require(gpuledger::fuzz::WriteFixtureLedger(dir + "/ledger").ok(), "the fixture ledger");
    ledger::LedgerOptions lo;
    lo.read_only = true;
    lo.create_if_missing = false;
    auto l = ledger::Ledger::Open(dir + "/ledger", lo);
    Require(l.ok(), "the fixture ledger opens");
    out->ledger = *std::move(l);
    settlement::StoreOptions so;
    so.sync = false;
    auto s = settlement::OpenSettlement(dir + "/store", *out->ledger, {}, so);
    Require(s.ok(), "the fixture settles");
    out->store = std::move(s->store);
    return out;
  }();
  return *f;
}

void ReadEverything(settlement::Store* store) {
  auto engine = settlement::Engine::Open(store, {});
  if (!engine.ok()) {
    Require(!engine.status().message().empty(), "a refused store says why");
    return;
  }
  for (int month = 1; month <= 6; ++month) {
    const gpuledger::base::Period p{2026, month};
    auto docs = (*engine)->Documents(p);
    if (!docs.ok()) {
      Require(!docs.status().message().empty(), "refused documents say why");
      continue;
    }
    for (const auto& e : docs->errors()) {
      Require(!e.document().empty() && !e.message().empty(), "a failed document says why");
    }
    std::vector<const gpuledger::v1::Invoice*> every;
    for (const auto& inv : docs->invoices()) every.push_back(&inv);
    for (const auto& inv : docs->nothing_owed()) every.push_back(&inv);
    for (const auto* invp : every) {
      const auto& inv = *invp;
      // Drafts are built from the records; a frozen period is whatever bytes its record holds.
      Require(docs->closed() ||
                  static_cast<__int128>(inv.totals().list_krw()) ==
                      static_cast<__int128>(inv.totals().copay_krw()) + inv.totals().subsidy_krw(),
              "a draft invoice's list = co-pay + subsidy");
      settlement::DocumentFilter one;
      one.institution_id = inv.institution_id();
      one.statements = one.programs = false;
      (void)(*engine)->Documents(p, one);
    }
    for (const auto& st : docs->statements()) {
      settlement::DocumentFilter one;
      one.csp_id = st.csp_id();
      one.invoices = one.programs = false;
      (void)(*engine)->Documents(p, one);
      (void)(*engine)->DailyUsage(p, st.csp_id());
    }
  }
  (void)(*engine)->Closes();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Fixture& f = TheFixture();
  size_t i = 0;
  auto take = [&](size_t n) {
    std::string out(reinterpret_cast<const char*>(data) + i, std::min(n, size - i));
    i += out.size();
    return out;
  };
  auto length = [&] {
    const std::string b = take(2);
    return b.size() < 2 ? size_t{0}
                        : (size_t{static_cast<uint8_t>(b[0])} << 8) | static_cast<uint8_t>(b[1]);
  };
  while (i < size) {
    const uint8_t kind = static_cast<uint8_t>(take(1)[0]);
    const std::string key = kPrefixes[kind % std::size(kPrefixes)] + take(length());
    const std::string value = take(length());
    f.store->Put(key, value);
  }
  ReadEverything(f.store.get());
  f.store->Rollback();
  return 0;
}
