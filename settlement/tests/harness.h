// Feeds accepted registry and usage events to a settlement Engine on a fresh store, as ledger
// entries 1, 2, 3, ... would be, without Kafka or a ledger.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gpuledger/v1/ledger.pb.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ledger/hash.h"
#include "settlement/engine.h"
#include "settlement/render.h"
#include "testsupport/temp_dir.h"

namespace gpuledger::settlement::testing {

namespace v1 = gpuledger::v1;

// Every institution's lines of a period: its invoice, or its lines if it owes nothing (by
// institution id), for sums that must count every institution.
inline std::vector<v1::Invoice> AllInvoices(const v1::PeriodDocuments& d) {
  std::vector<v1::Invoice> out(d.invoices().begin(), d.invoices().end());
  out.insert(out.end(), d.nothing_owed().begin(), d.nothing_owed().end());
  std::sort(out.begin(), out.end(), [](const v1::Invoice& a, const v1::Invoice& b) {
    return a.institution_id() < b.institution_id();
  });
  return out;
}

// An invoice's JSON without what the close adds to its bills (number, issue and due dates):
// the numbers are a sequence over every institution's invoices, so another tenant's invoice
// moves them by design.
inline std::string UnnumberedJson(v1::Invoice inv) {
  for (auto& b : *inv.mutable_bills()) {
    b.clear_number();
    b.clear_issue_date();
    b.clear_due_date();
  }
  return InvoiceJson(inv);
}

class Harness {
 public:
  explicit Harness(SettleOptions options = {}) : options_(options) { Open(); }

  // Returns the seq the event took.
  uint64_t Registry(const v1::RegistryEvent& e) {
    return Apply(v1::SOURCE_REGISTRY, "operator", e.SerializeAsString());
  }
  uint64_t Usage(const std::string& csp, const v1::UsageEvent& e) {
    return Apply(v1::SOURCE_USAGE, csp, e.SerializeAsString());
  }
  // A rejected entry: settlement must ignore it.
  uint64_t Rejected(const std::string& csp, const v1::UsageEvent& e) {
    return Apply(v1::SOURCE_USAGE, csp, e.SerializeAsString(), v1::REJECTED);
  }
  uint64_t Close(const base::Period& p) {
    v1::RegistryEvent e;
    e.set_event_id("close-" + p.ToString());
    e.set_emitted_at_ms(p.EndMs());
    e.mutable_period_close()->set_period(p.ToString());
    return Registry(e);
  }

  absl::StatusOr<v1::PeriodDocuments> Docs(const base::Period& p,
                                           const DocumentFilter& filter = {}) {
    return engine_->Documents(p, filter);
  }

  // Commits, closes and reopens the store: state must survive.
  void Reopen() {
    EXPECT_TRUE(engine_->Commit().ok());
    engine_.reset();
    store_.reset();
    Open();
  }
  Engine& engine() { return *engine_; }
  Store& store() { return *store_; }
  uint64_t seq() const { return seq_; }
  // Every entry applied, in order (a ledger's entries, for readers of the ledger in tests).
  const std::vector<ledger::StoredEntry>& entries() const { return entries_; }

 private:
  void Open() {
    StoreOptions so;
    so.sync = false;
    auto store = Store::Open(dir_.Sub("store"), so);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    auto engine = Engine::Open(store_.get(), options_);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = *std::move(engine);
  }

  uint64_t Apply(v1::Source source, const std::string& source_id, const std::string& payload,
                 v1::Outcome outcome = v1::ACCEPTED) {
    ledger::StoredEntry e;
    e.seq = ++seq_;
    e.entry.set_source(source);
    e.entry.set_source_id(source_id);
    e.entry.set_payload(payload);
    e.entry.set_outcome(outcome);
    e.bytes = e.entry.SerializeAsString();
    e.hash = ledger::Sha256(absl::StrCat(e.seq, e.bytes));
    entries_.push_back(e);
    absl::Status st = engine_->Apply(e);
    EXPECT_TRUE(st.ok()) << st;
    return e.seq;
  }

  SettleOptions options_;
  gpuledger::testing::TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Engine> engine_;
  uint64_t seq_ = 0;
  std::vector<ledger::StoredEntry> entries_;
};

}  // namespace gpuledger::settlement::testing
