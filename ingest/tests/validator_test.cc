#include "ingest/validator.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "base/period.h"
#include "google/protobuf/util/json_util.h"
#include "gpuledger/v1/registry.pb.h"
#include "ingest/reasons.h"
#include "ingest/redecide.h"
#include "ledger/verify.h"
#include "testsupport/temp_dir.h"

namespace gpuledger::ingest {
namespace {

namespace v1 = gpuledger::v1;
constexpr int64_t kHour = 3'600'000;
constexpr int64_t kT0 = 1'772'000'000'000;  // early March 2026

// Drives a Validator the way the ingest loop does, over an in-memory ledger.
class Harness {
 public:
  // `recent_intervals_bytes`: the bound of the validator's index of recent intervals.
  explicit Harness(size_t recent_intervals_bytes = gpuledger::limits::kRecentIntervalsBytes)
      : recent_bytes_(recent_intervals_bytes),
        validator_(std::make_unique<Validator>(Limits(), recent_intervals_bytes)) {
    auto l = ledger::Ledger::Open(dir_.Sub("db"), {});
    EXPECT_TRUE(l.ok()) << l.status();
    ledger_ = std::move(*l);
  }

  static ValidationLimits Limits() {
    ValidationLimits limits;
    limits.park_grace_ms = 2 * kHour;
    return limits;
  }

  // Records one message and any resolutions it triggers; returns the message's entry.
  v1::LedgerEntry Send(const google::protobuf::Message& event, bool registry,
                       int64_t kafka_ms = kT0 + 48 * kHour) {
    RawMessage raw{registry ? TopicNames().Registry() : TopicNames().Usage(usage_csp_), 0,
                   offset_++, kafka_ms, event.SerializeAsString()};
    raw.kafka_timestamp_type = registry ? v1::KAFKA_TIMESTAMP_LOG_APPEND_TIME : usage_ts_type_;
    Decoded c = Decode(raw, validator_->limits(), now_ms_);
    validator_->Check(&c);
    const uint64_t seq = Append(c);
    for (Decoded& r : validator_->TakeResolvable()) {
      validator_->Check(&r);
      Append(r);
    }
    EXPECT_TRUE(validator_->status().ok()) << validator_->status();
    EXPECT_TRUE(ledger_->Commit().ok());
    if (persist_) {
      EXPECT_TRUE(validator_->Persist(ledger_->head()).ok());
    }
    return seq == 0 ? v1::LedgerEntry() : ledger_->Get(seq)->entry;
  }

  uint64_t Append(const Decoded& c) {
    auto r = ledger_->Append(c.candidate);
    EXPECT_TRUE(r.ok()) << r.status();
    if (r->kind != ledger::AppendKind::kAppended) return r->seq;
    validator_->Recorded(c, r->seq);
    return r->seq;
  }

  std::string Reg(std::function<void(v1::RegistryEvent*)> fill) {
    v1::RegistryEvent e;
    e.set_schema_version(1);
    e.set_event_id(absl::StrCat("reg-", ++reg_));
    fill(&e);
    const auto entry = Send(e, true, kT0);
    return entry.reason_code();
  }

  void StandardRegistry() {
    ASSERT_EQ(Reg([](auto* e) {
                auto* i = e->mutable_institution();
                i->set_institution_id("uni");
                i->set_type(v1::ACADEMIA);
              }),
              "");
    ASSERT_EQ(Reg([](auto* e) { *e->mutable_allocation() = Alloc("a1", 4); }), "");
    ASSERT_EQ(Reg([](auto* e) {
                auto* p = e->mutable_gpu_pool();
                p->set_csp_id("csp-a");
                p->set_program(v1::GOV_ADVANCED);
                p->set_gpu_model(v1::H200);
                p->set_gpu_count(64);
              }),
              "");
  }

  static v1::Allocation Alloc(const std::string& id, uint32_t gpus, std::string csp = "csp-a") {
    v1::Allocation a;
    a.set_allocation_id(id);
    a.set_institution_id("uni");
    a.set_program(v1::GOV_ADVANCED);
    a.set_csp_id(csp);
    a.set_gpu_model(v1::H200);
    a.set_gpu_count(gpus);
    a.set_start_ms(kT0);
    a.set_end_ms(kT0 + 30 * 24 * kHour);
    return a;
  }

  v1::UsageEvent Usage(const std::string& alloc, uint32_t gpus, int64_t start, int64_t end,
                       const std::string& node = "n1") {
    v1::UsageEvent e;
    e.set_schema_version(1);
    e.set_event_id(absl::StrCat("u-", ++usage_));
    e.set_csp_id(usage_csp_);
    e.set_producer_id("m");
    e.set_producer_seq(usage_);
    auto* u = e.mutable_usage();
    u->set_allocation_id(alloc);
    u->set_gpu_model(v1::H200);
    u->set_gpu_count(gpus);
    u->set_start_ms(start);
    u->set_end_ms(end);
    u->set_node_id(node);
    return e;
  }

  std::string UsageReason(const v1::UsageEvent& e) { return Send(e, false).reason_code(); }

  // As ingest does at a restart: a new validator over the state store at `state_dir`, brought
  // up to the ledger. With `persist`, its state is written after each commit, as ingest does.
  void Restart(const std::string& state_dir, bool persist) {
    validator_.reset();  // closes the store first: one process at a time holds it
    validator_ = std::make_unique<Validator>(Limits(), recent_bytes_);
    const absl::Status st = validator_->Load(*ledger_, state_dir);
    EXPECT_TRUE(st.ok()) << st;
    persist_ = persist;
  }
  void CloseValidator() { validator_.reset(); }
  // The ingest host's wall clock, which Decide stamps as recorded_at_ms: the time of record of
  // a message without a log-append time.
  void SetWallClock(int64_t now_ms) { now_ms_ = now_ms; }
  // How usage messages are stamped from now on (default: the broker's log-append time).
  void SetUsageTimestampType(v1::KafkaTimestampType type) { usage_ts_type_ = type; }
  // The CSP whose usage topic usage comes from, and who reports it (default csp-a).
  void SetUsageCsp(const std::string& csp) { usage_csp_ = csp; }

  ledger::Ledger& ledger() { return *ledger_; }
  Validator& validator() { return *validator_; }

 private:
  testing::TempDir dir_;
  size_t recent_bytes_;
  std::unique_ptr<ledger::Ledger> ledger_;
  std::unique_ptr<Validator> validator_;
  bool persist_ = false;
  int64_t now_ms_ = 0;
  v1::KafkaTimestampType usage_ts_type_ = v1::KAFKA_TIMESTAMP_LOG_APPEND_TIME;
  std::string usage_csp_ = "csp-a";
  int64_t offset_ = 0;
  int reg_ = 0;
  int usage_ = 0;
};

TEST(ValidatorTest, RejectsUsageThatDoesNotFitTheAllocation) {
  Harness h;
  h.StandardRegistry();
  const int64_t t = kT0 + kHour;
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 2, t, t + kHour)), "");
  auto other_model = h.Usage("a1", 1, t, t + kHour, "n2");
  other_model.mutable_usage()->set_gpu_model(v1::B200);
  EXPECT_EQ(h.UsageReason(other_model), reason::kWrongGpuModel);
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 1, kT0 - kHour, kT0 + kHour, "n3")),
            reason::kOutsideAllocationWindow);
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 5, t, t + kHour, "n4")), reason::kGpusOverGrant);
  // Same node, overlapping time: double billing.
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 1, t + kHour / 2, t + 2 * kHour, "n1")),
            reason::kOverlappingInterval);
  // Other node, but 2 + 3 GPUs at once exceeds the grant of 4.
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 3, t + kHour / 2, t + 2 * kHour, "n5")),
            reason::kGpusOverGrant);
  // Adjacent intervals do not overlap.
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 4, t + kHour, t + 2 * kHour, "n1")), "");
  // Ends after its message was written plus the allowed skew.
  const int64_t late = kT0 + 48 * kHour;
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 1, late, late + kHour, "n6")), reason::kFutureTimestamp);
}

// The limits that decide are data in the ledger (issue 16, item 6): a ValidationSettings record
// changes them from its position, for this run and for any validator rebuilt from the ledger,
// whatever its command line says. 0 keeps a limit.
TEST(ValidatorTest, ValidationSettingsInTheLedgerDecide) {
  Harness h;
  h.StandardRegistry();
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 1, kT0, kT0 + 3 * kHour)), "");  // 31 days allowed
  ASSERT_EQ(h.Reg([](auto* e) {
    e->mutable_validation_settings()->set_max_interval_ms(2 * kHour);
    e->mutable_validation_settings()->set_park_grace_ms(0);  // unchanged
  }),
            "");
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 1, kT0 + 3 * kHour, kT0 + 5 * kHour)), "");  // 2 h
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 1, kT0 + 5 * kHour, kT0 + 7 * kHour + 1)),
            reason::kDurationTooLong);
  // A validator rebuilt from the ledger, with the command line's 31 days, decides the same.
  h.Restart("", false);
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 1, kT0 + 8 * kHour, kT0 + 11 * kHour)),
            reason::kDurationTooLong);
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 1, kT0 + 11 * kHour, kT0 + 13 * kHour)), "");
  // Out of bounds: refused when decoded, and the limit in force stays.
  EXPECT_EQ(h.Reg([](auto* e) {
    e->mutable_validation_settings()->set_max_interval_ms(367LL * 24 * kHour);
  }),
            reason::kInvalidField);
  EXPECT_EQ(h.Reg([](auto* e) { e->mutable_validation_settings()->set_max_event_id_bytes(129); }),
            reason::kInvalidField);
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 1, kT0 + 13 * kHour, kT0 + 16 * kHour)),
            reason::kDurationTooLong);
}

// Parties of invoices (issue 17): the registration number's check digit is checked, text is
// printable, a second record at the same instant with other details contradicts the first.
TEST(ValidatorTest, PartiesNeedARegistrationNumberWithItsCheckDigit) {
  Harness h;
  auto party = [](const std::string& number, const std::string& name = "(주)대한바이오") {
    return [=](v1::RegistryEvent* e) {
      auto* p = e->mutable_party();
      p->set_party_id("sme");
      p->set_legal_name(name);
      p->set_registration_number(number);
      p->set_representative("김대한");
    };
  };
  EXPECT_EQ(h.Reg(party("124-81-00999")), reason::kInvalidField);  // check digit is 8
  EXPECT_EQ(h.Reg(party("12481009")), reason::kInvalidField);
  EXPECT_EQ(h.Reg(party("")), reason::kMissingField);
  EXPECT_EQ(h.Reg(party("124-81-00998", "")), reason::kMissingField);
  EXPECT_EQ(h.Reg(party("124-81-00998", "bad\x1bname")), reason::kInvalidField);
  EXPECT_EQ(h.Reg(party("124-81-00998")), "");
  EXPECT_EQ(h.Reg(party("1248100998")), "");  // the same number, written without hyphens
  EXPECT_EQ(h.Reg(party("1234567891")), ledger::kRegistryConflict);
}

TEST(ValidatorTest, BillingTermsAreChecked) {
  Harness h;
  auto terms = [](std::function<void(v1::BillingTerms*)> change) {
    return [=](v1::RegistryEvent* e) {
      auto* t = e->mutable_billing_terms();
      t->set_operator_party_id("nipa");
      t->set_vat_bp(1'000);
      t->set_payment_due_days(30);
      change(t);
    };
  };
  EXPECT_EQ(h.Reg(terms([](auto* t) { t->set_vat_bp(0); })), reason::kMissingField);
  EXPECT_EQ(h.Reg(terms([](auto* t) { t->set_vat_bp(10'001); })), reason::kInvalidField);
  EXPECT_EQ(h.Reg(terms([](auto* t) { t->set_payment_due_days(366); })), reason::kInvalidField);
  EXPECT_EQ(h.Reg(terms([](auto* t) { t->clear_operator_party_id(); })), reason::kMissingField);
  EXPECT_EQ(h.Reg(terms([](auto* t) {
    for (int i = 0; i < 2; ++i) {
      auto* r = t->add_issuers();
      r->set_program(v1::GOV_ADVANCED);
      r->set_issuer(v1::ISSUER_CSP);
    }
  })),
            reason::kInvalidField);
  EXPECT_EQ(h.Reg(terms([](auto* t) { t->set_vat_rounding(static_cast<v1::VatRounding>(7)); })),
            reason::kInvalidField);
  EXPECT_EQ(h.Reg(terms([](auto*) {})), "");
}

// Issue 18: budgets per programme, fiscal year and call; a second record at the same instant
// with another amount contradicts the first.
TEST(ValidatorTest, BudgetsAreChecked) {
  Harness h;
  auto budget = [](std::function<void(v1::Budget*)> change) {
    return [=](v1::RegistryEvent* e) {
      auto* b = e->mutable_budget();
      b->set_program(v1::GOV_ADVANCED);
      b->set_fiscal_year(2026);
      b->set_amount_krw(240'000'000'000);
      b->add_alert_thresholds_bp(8'000);
      b->add_alert_thresholds_bp(10'000);
      change(b);
    };
  };
  EXPECT_EQ(h.Reg(budget([](auto* b) { b->clear_program(); })), reason::kMissingField);
  EXPECT_EQ(h.Reg(budget([](auto* b) { b->set_fiscal_year(0); })), reason::kMissingField);
  EXPECT_EQ(h.Reg(budget([](auto* b) { b->set_fiscal_year(1969); })), reason::kInvalidField);
  EXPECT_EQ(h.Reg(budget([](auto* b) { b->set_amount_krw(0); })), reason::kMissingField);
  EXPECT_EQ(h.Reg(budget([](auto* b) { b->set_amount_krw(-1); })), reason::kInvalidField);
  EXPECT_EQ(h.Reg(budget([](auto* b) { b->add_alert_thresholds_bp(9'000); })),
            reason::kInvalidField);  // not ascending
  EXPECT_EQ(h.Reg(budget([](auto* b) { b->set_alert_thresholds_bp(1, 10'001); })),
            reason::kInvalidField);
  EXPECT_EQ(h.Reg(budget([](auto* b) { b->set_call_id("bad id"); })), reason::kInvalidField);
  EXPECT_EQ(h.Reg(budget([](auto* b) { b->set_note(std::string(257, 'x')); })),
            reason::kInvalidField);
  EXPECT_EQ(h.Reg(budget([](auto*) {})), "");
  EXPECT_EQ(h.Reg(budget([](auto* b) { b->set_call_id("gov-2026-2"); })), "");
  EXPECT_EQ(h.Reg(budget([](auto* b) { b->set_amount_krw(1); })), ledger::kRegistryConflict);
}

TEST(ValidatorTest, AlertSettingsAreChecked) {
  Harness h;
  auto settings = [](std::function<void(v1::AlertSettings*)> change) {
    return [=](v1::RegistryEvent* e) {
      auto* a = e->mutable_alert_settings();
      a->add_allocation_balance_thresholds_bp(8'000);
      a->set_csp_rejection_rate_bp(500);
      a->set_csp_rejection_min_events(10);
      change(a);
    };
  };
  EXPECT_EQ(h.Reg(settings([](auto* a) { a->add_allocation_balance_thresholds_bp(8'000); })),
            reason::kInvalidField);
  EXPECT_EQ(h.Reg(settings([](auto* a) { a->set_csp_rejection_rate_bp(10'001); })),
            reason::kInvalidField);
  EXPECT_EQ(h.Reg(settings([](auto*) {})), "");
  EXPECT_EQ(h.Reg(settings([](auto* a) { a->set_csp_rejection_rate_bp(1); })),
            ledger::kRegistryConflict);
}

TEST(ValidatorTest, RejectsUsageOfAnotherCspsAllocation) {
  Harness h;
  h.StandardRegistry();
  ASSERT_EQ(h.Reg([](auto* e) { *e->mutable_allocation() = Harness::Alloc("b1", 4, "csp-b"); }),
            "");
  EXPECT_EQ(h.UsageReason(h.Usage("b1", 1, kT0, kT0 + kHour)), reason::kAllocationOfOtherCsp);
}

TEST(ValidatorTest, AmendmentsMoveTheWindowAndTheGrant) {
  Harness h;
  h.StandardRegistry();
  const int64_t cut = kT0 + 10 * kHour;
  ASSERT_EQ(h.Reg([&](auto* e) {
    auto* a = e->mutable_allocation_amendment();
    a->set_allocation_id("a1");
    a->set_effective_from_ms(cut);
    a->set_revoke(true);
  }),
            "");
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 1, cut - kHour, cut)), "");
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 1, cut, cut + kHour)), reason::kOutsideAllocationWindow);
  EXPECT_EQ(h.Reg([&](auto* e) {
    auto* a = e->mutable_allocation_amendment();
    a->set_allocation_id("a1");
    a->set_effective_from_ms(cut + kHour);  // after the revocation: nothing to amend
    a->set_new_gpu_count(8);
  }),
            reason::kInvalidAmendment);
  EXPECT_EQ(h.Reg([&](auto* e) {
    auto* a = e->mutable_allocation_amendment();
    a->set_allocation_id("nope");
    a->set_effective_from_ms(cut);
    a->set_revoke(true);
  }),
            reason::kUnknownAllocation);
}

TEST(ValidatorTest, RefusesContradictoryRegistryRecords) {
  Harness h;
  h.StandardRegistry();
  // Identical re-announcement: fine. Other terms under the same id: refused.
  EXPECT_EQ(h.Reg([](auto* e) { *e->mutable_allocation() = Harness::Alloc("a1", 4); }), "");
  EXPECT_EQ(h.Reg([](auto* e) { *e->mutable_allocation() = Harness::Alloc("a1", 8); }),
            reason::kRegistryConflict);
  EXPECT_EQ(h.Reg([](auto* e) {
    auto a = Harness::Alloc("a9", 1);
    a.set_institution_id("ghost");
    *e->mutable_allocation() = a;
  }),
            reason::kUnknownInstitution);
  auto rate = [](int64_t krw) {
    return [krw](v1::RegistryEvent* e) {
      auto* r = e->mutable_rate_card();
      r->set_program(v1::GOV_ADVANCED);
      r->set_gpu_model(v1::H200);
      r->set_krw_per_gpu_hour(krw);
      r->set_effective_from_ms(kT0);
    };
  };
  EXPECT_EQ(h.Reg(rate(4'500)), "");
  EXPECT_EQ(h.Reg(rate(4'500)), "");
  EXPECT_EQ(h.Reg(rate(5'000)), reason::kRegistryConflict);
  // A contract with the same cap but the other rule for its excess, from the same instant.
  auto contract = [](v1::OwnUseExcess rule) {
    return [rule](v1::RegistryEvent* e) {
      auto* c = e->mutable_csp_contract();
      c->set_csp_id("csp-a");
      c->set_own_use_cap_bp(1'000);
      c->set_own_use_excess(rule);
      c->set_effective_from_ms(kT0);
    };
  };
  EXPECT_EQ(h.Reg(contract(v1::OWN_USE_EXCESS_NETTED)), "");
  EXPECT_EQ(h.Reg(contract(v1::OWN_USE_EXCESS_NETTED)), "");
  EXPECT_EQ(h.Reg(contract(v1::OWN_USE_EXCESS_REPORTED)), reason::kRegistryConflict);
  // A pool of the same size priced the other way from the same instant.
  auto pool = [](v1::LeasePricing pricing) {
    return [pricing](v1::RegistryEvent* e) {
      auto* p = e->mutable_gpu_pool();
      p->set_csp_id("csp-a");
      p->set_program(v1::LEASE_HPC);
      p->set_gpu_model(v1::H200);
      p->set_gpu_count(8);
      p->set_lease_pricing(pricing);
      p->set_effective_from_ms(kT0);
    };
  };
  EXPECT_EQ(h.Reg(pool(v1::LEASE_PRICING_RESERVED)), "");
  EXPECT_EQ(h.Reg(pool(v1::LEASE_PRICING_RESERVED)), "");
  EXPECT_EQ(h.Reg(pool(v1::LEASE_PRICING_DELIVERED)), reason::kRegistryConflict);
}

TEST(ValidatorTest, OwnUseAndOutagesNeedAPool) {
  Harness h;
  h.StandardRegistry();
  v1::UsageEvent own;
  own.set_schema_version(1);
  own.set_event_id("own-1");
  own.set_csp_id("csp-a");
  own.set_producer_id("m");
  own.set_producer_seq(1);
  auto* o = own.mutable_own_use();
  o->set_program(v1::GOV_ADVANCED);
  o->set_gpu_model(v1::H200);
  o->set_gpu_count(65);
  o->set_start_ms(kT0);
  o->set_end_ms(kT0 + kHour);
  EXPECT_EQ(h.UsageReason(own), reason::kGpusOverPool);
  // No B200 pool (yet): own use waits for the registry, like usage for an unknown allocation.
  own.set_event_id("own-2");
  o->set_gpu_model(v1::B200);
  o->set_gpu_count(1);
  const v1::LedgerEntry parked = h.Send(own, false);
  EXPECT_EQ(parked.outcome(), v1::PARKED);
  // The pool is announced: the parked own use is decided and accepted.
  ASSERT_EQ(h.Reg([](auto* e) {
    auto* p = e->mutable_gpu_pool();
    p->set_csp_id("csp-a");
    p->set_program(v1::GOV_ADVANCED);
    p->set_gpu_model(v1::B200);
    p->set_gpu_count(8);
    p->set_effective_from_ms(0);
  }),
            "");
  EXPECT_EQ(h.validator().parked(), 0u);
  // Never announced: rejected once the grace period has passed in Kafka time.
  own.set_event_id("own-3");
  o->set_program(v1::LEASE_HPC);
  EXPECT_EQ(h.Send(own, false).outcome(), v1::PARKED);
  v1::UsageEvent later = own;
  later.set_event_id("own-4");
  const v1::LedgerEntry after = h.Send(later, false, kT0 + 51 * kHour);
  EXPECT_EQ(h.validator().parked(), 1u);  // own-4 itself waits now
  auto resolution = h.ledger().Get(after.seq() + 1);
  ASSERT_TRUE(resolution.ok());
  EXPECT_EQ(resolution->entry.reason_code(), reason::kUnknownPool);
}

// The state's users come first (issue 16, item 3): own use is checked at every instant against
// the pool less the programme usage recorded on the pool's allocations and the own use already
// accepted, on both sides of the limit, and after a restart rebuilt from the ledger.
TEST(ValidatorTest, OwnUseNeverDisplacesProgrammeUsers) {
  Harness h;
  h.StandardRegistry();  // a 64-GPU pool; a1 is granted 4 GPUs
  ASSERT_EQ(h.Reg([](auto* e) { *e->mutable_allocation() = Harness::Alloc("a2", 8); }), "");
  int own_seq = 0;
  auto own = [&](uint32_t gpus, int64_t start, int64_t end) {
    v1::UsageEvent e;
    e.set_schema_version(1);
    e.set_event_id(absl::StrCat("own-", ++own_seq));
    e.set_csp_id("csp-a");
    e.set_producer_id("pools");
    e.set_producer_seq(own_seq);
    auto* o = e.mutable_own_use();
    o->set_program(v1::GOV_ADVANCED);
    o->set_gpu_model(v1::H200);
    o->set_gpu_count(gpus);
    o->set_start_ms(start);
    o->set_end_ms(end);
    o->set_node_id("own");
    return h.UsageReason(e);
  };
  const int64_t t = kT0;
  // Programme users: 4 GPUs on a1 for 2 hours, 8 on a2 in the second hour.
  ASSERT_EQ(h.UsageReason(h.Usage("a1", 4, t, t + 2 * kHour)), "");
  ASSERT_EQ(h.UsageReason(h.Usage("a2", 8, t + kHour, t + 2 * kHour)), "");
  // First hour: 64 − 4 = 60 GPUs are free; 61 would displace a user, and 61 with a 30-minute
  // stretch before a1's usage starts too.
  EXPECT_EQ(own(61, t, t + kHour), reason::kOwnUseDisplacesProgramme);
  EXPECT_EQ(own(61, t - kHour / 2, t + kHour / 2), reason::kOwnUseDisplacesProgramme);
  EXPECT_EQ(own(60, t, t + kHour), "");
  // Now full in the first hour; the second hour has 64 − 12 = 52 free (back to back is not at
  // once), and own use already accepted counts.
  EXPECT_EQ(own(1, t + kHour - 1, t + kHour + 1), reason::kOwnUseDisplacesProgramme);
  EXPECT_EQ(own(53, t + kHour, t + 2 * kHour), reason::kOwnUseDisplacesProgramme);
  EXPECT_EQ(own(52, t + kHour, t + 2 * kHour), "");
  // Reaching past the users' end does not help: the first instant decides.
  EXPECT_EQ(own(5, t + 90 * 60'000, t + 3 * kHour), reason::kOwnUseDisplacesProgramme);
  // After t + 2 h no programme user runs: the CSP's own use alone over the pool is
  // GPUS_OVER_POOL, not a displacement.
  EXPECT_EQ(own(13, t + 2 * kHour, t + 3 * kHour), "");
  EXPECT_EQ(own(52, t + 2 * kHour, t + 3 * kHour), reason::kGpusOverPool);
  EXPECT_EQ(own(51, t + 2 * kHour, t + 3 * kHour), "");
  // A correction that takes usage back frees its GPUs for own use.
  v1::UsageEvent cancel;
  cancel.set_schema_version(1);
  cancel.set_event_id("cancel-a2");
  cancel.set_csp_id("csp-a");
  cancel.set_producer_id("m");
  cancel.set_producer_seq(100);
  cancel.mutable_correction()->set_target_event_id("u-2");
  cancel.mutable_correction()->set_allocation_id("a2");
  ASSERT_EQ(h.UsageReason(cancel), "");
  EXPECT_EQ(own(9, t + kHour, t + 2 * kHour), reason::kOwnUseDisplacesProgramme);  // 4+52+9
  EXPECT_EQ(own(8, t + kHour, t + 2 * kHour), "");
  // A validator rebuilt from the ledger decides the same: own use and usage both count.
  h.Restart("", false);
  EXPECT_EQ(own(1, t, t + 2 * kHour), reason::kOwnUseDisplacesProgramme);
  EXPECT_EQ(own(1, t + 3 * kHour, t + 4 * kHour), "");
}

// Programme rule (issue 16): the grants on a pool never exceed what it holds at any instant.
TEST(ValidatorTest, GrantsFitTheirPoolAtEveryInstant) {
  Harness h;
  h.StandardRegistry();  // a1: 4 GPUs for 30 days; the pool: 64 H200 from the epoch
  const int64_t end = kT0 + 30 * 24 * kHour;
  auto alloc = [&](const std::string& id, uint32_t gpus, int64_t from, int64_t to) {
    return h.Reg([&](auto* e) {
      v1::Allocation a = Harness::Alloc(id, gpus);
      a.set_start_ms(from);
      a.set_end_ms(to);
      *e->mutable_allocation() = a;
    });
  };
  auto amend = [&](const std::string& id, int64_t from, auto set) {
    return h.Reg([&](auto* e) {
      auto* a = e->mutable_allocation_amendment();
      a->set_allocation_id(id);
      a->set_effective_from_ms(from);
      set(a);
    });
  };
  // Up to the pool exactly, not one GPU more.
  EXPECT_EQ(alloc("a2", 60, kT0, end), "");
  EXPECT_EQ(alloc("a3", 1, kT0 + kHour, kT0 + 2 * kHour), reason::kGrantOverPool);
  // The same GPU once the others' windows have ended.
  EXPECT_EQ(alloc("a3", 1, end, end + kHour), "");
  // An identical re-announcement changes nothing, so it is not refused.
  EXPECT_EQ(alloc("a2", 60, kT0, end), "");
  // Resizes: up is refused while the pool is full, down frees GPUs from that instant on.
  const int64_t cut = kT0 + 10 * kHour;
  EXPECT_EQ(amend("a1", cut, [](auto* a) { a->set_new_gpu_count(5); }), reason::kGrantOverPool);
  EXPECT_EQ(amend("a1", cut, [](auto* a) { a->set_new_gpu_count(3); }), "");
  EXPECT_EQ(alloc("a4", 1, cut - kHour, cut + kHour), reason::kGrantOverPool);
  EXPECT_EQ(alloc("a4", 1, cut, cut + kHour), "");
  // Extensions: only the added stretch is checked. a3 holds the GPU a4 would need after `end`.
  EXPECT_EQ(amend("a4", cut, [&](auto* a) { a->set_new_end_ms(end); }), "");
  EXPECT_EQ(amend("a4", cut, [&](auto* a) { a->set_new_end_ms(end + kHour); }), "");
  EXPECT_EQ(alloc("a5", 63, end, end + 2 * kHour), reason::kGrantOverPool);  // a3 and a4 hold 2
  EXPECT_EQ(alloc("a5", 62, end, end + 2 * kHour), "");
  EXPECT_EQ(alloc("a7", 2, end + kHour, end + 2 * kHour), "");  // with a5: 64 again
  EXPECT_EQ(amend("a3", end, [&](auto* a) { a->set_new_end_ms(end + 3 * kHour); }),
            reason::kGrantOverPool);  // a5 and a7 hold all 64 in [end + 1 h, end + 2 h)
  EXPECT_EQ(amend("a3", end + 2 * kHour - 1, [&](auto* a) { a->set_new_end_ms(end + 3 * kHour); }),
            reason::kInvalidAmendment);  // its window ends at end + 1 h
  // A larger pool from an instant makes room from then on only.
  ASSERT_EQ(h.Reg([&](auto* e) {
    auto* p = e->mutable_gpu_pool();
    p->set_csp_id("csp-a");
    p->set_program(v1::GOV_ADVANCED);
    p->set_gpu_model(v1::H200);
    p->set_gpu_count(80);
    p->set_effective_from_ms(kT0 + 20 * 24 * kHour);
  }),
            "");
  EXPECT_EQ(alloc("a6", 16, kT0 + 19 * 24 * kHour, end), reason::kGrantOverPool);
  EXPECT_EQ(alloc("a6", 16, kT0 + 20 * 24 * kHour, end), "");
  // No pool recorded for B200: its capacity is not known, so the grant is not checked.
  EXPECT_EQ(h.Reg([&](auto* e) {
    v1::Allocation a = Harness::Alloc("b1", 4096);
    a.set_gpu_model(v1::B200);
    *e->mutable_allocation() = a;
  }),
            "");
  // Usage on the accepted grants is decided as before.
  const int64_t day21 = kT0 + 21 * 24 * kHour;
  EXPECT_EQ(h.Send(h.Usage("a6", 16, day21, day21 + kHour), false, day21 + 2 * kHour).reason_code(),
            "");
}

// A close marker is recorded (and settles nothing) once its month has ended by the time of
// record; one recorded before that cuts nothing: PERIOD_NOT_ENDED.
TEST(ValidatorTest, ACloseMarkerIsRecordedOnlyAfterItsMonthEnds) {
  Harness h;
  h.StandardRegistry();
  const base::Period march{2026, 3};
  v1::UsageEvent marker;
  marker.set_schema_version(1);
  marker.set_csp_id("csp-a");
  marker.set_producer_id("gpuledger-settle-close");
  marker.mutable_close_marker()->set_period(march.ToString());
  marker.set_event_id("close-marker-early");
  EXPECT_EQ(h.Send(marker, false, march.EndMs() - 1).reason_code(), reason::kPeriodNotEnded);
  marker.set_event_id("close-marker-after");
  const v1::LedgerEntry after = h.Send(marker, false, march.EndMs());
  EXPECT_EQ(after.reason_code(), "");
  EXPECT_EQ(after.outcome(), v1::ACCEPTED);
}

TEST(ValidatorTest, PeriodsCloseInOrderAfterTheyEnd) {
  Harness h;
  h.StandardRegistry();
  auto close = [&](const std::string& period, int64_t emitted_at_ms) {
    return h.Reg([&](auto* e) {
      e->set_emitted_at_ms(emitted_at_ms);
      e->mutable_period_close()->set_period(period);
    });
  };
  const int64_t april = base::Period{2026, 4}.StartMs();
  EXPECT_EQ(close("2026-03", april - 1), reason::kPeriodNotEnded);
  EXPECT_EQ(close("2026-03", april), "");
  EXPECT_EQ(close("2026-03", april + kHour), reason::kPeriodAlreadyClosed);
  EXPECT_EQ(close("2026-02", april + kHour), reason::kPeriodAlreadyClosed);
  EXPECT_EQ(close("2026-05", base::Period{2026, 6}.StartMs()), reason::kPeriodCloseOutOfOrder);
  EXPECT_EQ(close("2026-04", base::Period{2026, 6}.StartMs()), "");
  EXPECT_EQ(close("2026-13", base::Period{2027, 6}.StartMs()), reason::kInvalidField);
}

TEST(ValidatorTest, CorrectionsNeedALiveTarget) {
  Harness h;
  h.StandardRegistry();
  const auto u = h.Usage("a1", 2, kT0, kT0 + kHour);
  ASSERT_EQ(h.UsageReason(u), "");
  auto correction = [&](const std::string& id, const std::string& target, uint32_t gpus) {
    v1::UsageEvent e = h.Usage("a1", gpus, kT0, kT0 + kHour);
    e.set_event_id(id);
    auto replacement = e.usage();
    e.mutable_correction()->set_target_event_id(target);
    e.mutable_correction()->set_allocation_id("a1");
    if (gpus > 0) *e.mutable_correction()->mutable_replacement() = replacement;
    return e;
  };
  // Replacing the interval does not overlap with the interval it replaces.
  EXPECT_EQ(h.UsageReason(correction("c1", u.event_id(), 4)), "");
  EXPECT_EQ(h.UsageReason(correction("c2", u.event_id(), 1)), reason::kAlreadyCorrected);
  EXPECT_EQ(h.UsageReason(correction("c3", "never-sent", 1)), reason::kUnknownCorrectionTarget);
  auto misdirected = correction("c5", "c1", 0);
  misdirected.mutable_correction()->set_allocation_id("other");
  EXPECT_EQ(h.UsageReason(misdirected), reason::kInvalidField);
  EXPECT_EQ(h.UsageReason(correction("c4", "c1", 0)), "");  // cancel the correction
  // Its GPUs are free again.
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 4, kT0, kT0 + kHour, "n9")), "");
}

TEST(ValidatorTest, UsageBeforeItsAllocationIsParkedThenDecided) {
  Harness h;
  h.StandardRegistry();
  const auto early = h.Usage("a2", 1, kT0, kT0 + kHour);
  const v1::LedgerEntry parked = h.Send(early, false);
  EXPECT_EQ(parked.outcome(), v1::PARKED);
  EXPECT_EQ(h.validator().parked(), 1u);
  ASSERT_EQ(h.Reg([](auto* e) { *e->mutable_allocation() = Harness::Alloc("a2", 2); }), "");
  // The allocation entry is followed by the resolution of the parked usage.
  const uint64_t head = h.ledger().head().seq;
  const auto resolution = h.ledger().Get(head)->entry;
  EXPECT_EQ(resolution.resolves_seq(), parked.seq());
  EXPECT_EQ(resolution.outcome(), v1::ACCEPTED);
  EXPECT_EQ(resolution.event_id(), early.event_id());
  EXPECT_EQ(h.validator().parked(), 0u);
  // A resend of the parked event is a duplicate of the resolution.
  EXPECT_EQ(h.Send(early, false).seq(), resolution.seq());
  auto report = ledger::Verify(h.ledger());
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok) << report->problem;
}

TEST(ValidatorTest, ParkedUsageIsRejectedWhenTheGracePeriodPasses) {
  Harness h;
  h.StandardRegistry();
  const v1::LedgerEntry parked =
      h.Send(h.Usage("ghost", 1, kT0, kT0 + kHour), false, kT0 + 2 * kHour);
  ASSERT_EQ(parked.outcome(), v1::PARKED);
  // A message written 2 h later (Kafka time) ends the grace period.
  h.Send(h.Usage("a1", 1, kT0, kT0 + kHour), false, kT0 + 4 * kHour);
  const auto last = h.ledger().Get(h.ledger().head().seq)->entry;
  EXPECT_EQ(last.resolves_seq(), parked.seq());
  EXPECT_EQ(last.reason_code(), reason::kUnknownAllocation);
}

// The accepted intervals live in a state store on disk (memory stays flat however many events
// there are); a restart reads them back, replays what the store had not written yet, and
// rebuilds a store written for another ledger.
TEST(ValidatorTest, StateStoreSurvivesRestartsCatchesUpAndIsRebuiltForAnotherLedger) {
  testing::TempDir dir;
  const std::string state = dir.Sub("state");
  const int64_t t = kT0 + 5 * kHour;
  std::string held_by_first;
  {
    Harness h;
    h.StandardRegistry();
    h.Restart(state, /*persist=*/true);  // a store made from a ledger with entries
    const auto u1 = h.Usage("a1", 2, t, t + kHour, "n1");
    ASSERT_EQ(h.UsageReason(u1), "");
    h.Restart(state, true);
    // The interval comes back from the store.
    EXPECT_EQ(h.UsageReason(h.Usage("a1", 1, t + 10 * 60'000, t + kHour, "n1")),
              reason::kOverlappingInterval);
    EXPECT_EQ(h.UsageReason(h.Usage("a1", 3, t, t + kHour, "n2")), reason::kGpusOverGrant);
    // A cancellation the store never writes (a crash after the ledger's commit) ...
    h.Restart(state, /*persist=*/false);
    v1::UsageEvent cancel = h.Usage("a1", 1, 0, 0);
    cancel.clear_usage();
    cancel.mutable_correction()->set_target_event_id(u1.event_id());
    cancel.mutable_correction()->set_allocation_id("a1");
    ASSERT_EQ(h.UsageReason(cancel), "");
    // ... is replayed from the ledger at the next start.
    h.Restart(state, true);
    v1::UsageEvent again = cancel;
    again.set_event_id("cancel-again");
    again.set_producer_seq(again.producer_seq() + 1000);
    EXPECT_EQ(h.UsageReason(again), reason::kAlreadyCorrected);
    EXPECT_EQ(h.UsageReason(h.Usage("a1", 2, t, t + kHour, "n1")), "");
    const auto u4 = h.Usage("a1", 4, t + 2 * kHour, t + 3 * kHour, "n2");
    ASSERT_EQ(h.UsageReason(u4), "");
    held_by_first = u4.event_id();
    h.CloseValidator();
  }
  // Another ledger, the same store directory: its held intervals are not this ledger's.
  Harness other;
  other.StandardRegistry();
  other.Restart(state, true);
  EXPECT_EQ(other.UsageReason(other.Usage("a1", 4, t + 2 * kHour, t + 3 * kHour, "n2")), "");
  EXPECT_EQ(other.UsageReason(other.Usage("a1", 1, t + 2 * kHour, t + 3 * kHour, "n3")),
            reason::kGpusOverGrant);
  EXPECT_FALSE(held_by_first.empty());
}

// Clock skew (issue 8, item 6): the ingest host's clock an hour ahead or behind, or stepped
// either way mid-stream, changes no decision; decisions follow Kafka's timestamps and the
// ledger's order only.
TEST(ValidatorTest, TheIngestHostsClockChangesNoDecision) {
  const int64_t wall = kT0 + 50 * kHour;
  auto decisions = [&](const std::function<int64_t(int)>& clock) {
    Harness h;
    h.SetWallClock(clock(0));
    h.StandardRegistry();
    std::vector<std::string> out;
    for (int i = 0; i < 60; ++i) {
      h.SetWallClock(clock(i));
      // Intervals that end shortly before the true wall clock, so that a clock an hour behind
      // would see them as from the future if anything compared them with it.
      const int64_t t = wall - kHour - (i % 9) * 10 * 60'000;
      // Unknown allocations (parked, then decided), overlaps, grants exceeded, and intervals
      // ending after their message was written (FUTURE_TIMESTAMP against Kafka's time).
      const std::string alloc = i % 7 == 0 ? "ghost" : "a1";
      const int64_t kafka = i % 11 == 0 ? t : wall + i * 60'000;
      const auto entry =
          h.Send(h.Usage(alloc, 1 + i % 4, t, t + kHour, absl::StrCat("n", i % 3)), false, kafka);
      out.push_back(absl::StrCat(v1::Outcome_Name(entry.outcome()), " ", entry.reason_code()));
    }
    return out;
  };
  const auto truth = decisions([&](int) { return wall; });
  EXPECT_GT(std::count_if(truth.begin(), truth.end(),
                          [](const std::string& d) { return d != "ACCEPTED "; }),
            5);  // the stream exercises more than acceptance
  EXPECT_EQ(decisions([&](int) { return wall + kHour; }), truth);
  EXPECT_EQ(decisions([&](int) { return wall - kHour; }), truth);
  EXPECT_EQ(decisions([&](int i) { return i < 30 ? wall : wall + kHour; }), truth);
  EXPECT_EQ(decisions([&](int i) { return i < 30 ? wall : wall - kHour; }), truth);
}

// Issue 14, item 2: a producer's CreateTime decides nothing. A month-ahead usage event stamped
// after its own end, or stamped -1, is still from the future by the time of record (here
// ingest's clock, as on a topic that carries CreateTime).
TEST(ValidatorTest, AProducersCreateTimeCannotMakeFutureUsageCurrent) {
  Harness h;
  h.StandardRegistry();
  h.SetUsageTimestampType(v1::KAFKA_TIMESTAMP_CREATE_TIME);
  const int64_t now = kT0 + 48 * kHour;
  h.SetWallClock(now);
  const int64_t ahead = now + 20 * 24 * kHour;  // inside the allocation, weeks ahead
  const auto stamped_after =
      h.Send(h.Usage("a1", 1, ahead, ahead + kHour), false, ahead + 2 * kHour);
  EXPECT_EQ(stamped_after.reason_code(), reason::kFutureTimestamp) << stamped_after.reason_detail();
  const auto stamped_none = h.Send(h.Usage("a1", 1, ahead, ahead + kHour, "n2"), false, -1);
  EXPECT_EQ(stamped_none.reason_code(), reason::kFutureTimestamp) << stamped_none.reason_detail();
  // Usage that has ended is accepted whatever the producer stamped.
  EXPECT_EQ(h.Send(h.Usage("a1", 1, now - kHour, now, "n3"), false, -1).reason_code(), "");
  EXPECT_EQ(
      h.Send(h.Usage("a1", 1, now - kHour, now, "n4"), false, kT0 - 100 * kHour).reason_code(), "");
}

// Issue 14, item 2: one message stamped far ahead used to end every CSP's parked events at once
// (and across restarts); one stamped -1 used to wait for ever. Parking follows the time of
// record only.
TEST(ValidatorTest, ParkingFollowsTheTimeOfRecordNotTheProducersStamp) {
  Harness h;
  h.StandardRegistry();
  h.SetUsageTimestampType(v1::KAFKA_TIMESTAMP_CREATE_TIME);
  const int64_t now = kT0 + 48 * kHour;
  h.SetWallClock(now);
  const auto waiting = h.Send(h.Usage("later", 1, kT0 + kHour, kT0 + 2 * kHour), false, -1);
  ASSERT_EQ(waiting.outcome(), v1::PARKED);
  // A hostile stamp: the year 2099. The parked event keeps waiting.
  const int64_t far = 4'070'908'800'000;
  h.Send(h.Usage("a1", 1, kT0 + kHour, kT0 + 2 * kHour), false, far);
  EXPECT_EQ(h.validator().parked(), 1u);
  h.Restart("", false);
  EXPECT_EQ(h.validator().parked(), 1u);
  // The allocation is announced within the grace period: the usage is accepted.
  ASSERT_EQ(h.Reg([](auto* e) { *e->mutable_allocation() = Harness::Alloc("later", 2); }), "");
  EXPECT_EQ(h.validator().parked(), 0u);
  std::string resolution;
  ASSERT_TRUE(h.ledger()
                  .Scan(1,
                        [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
                          if (e.entry.resolves_seq() == waiting.seq()) {
                            resolution = v1::Outcome_Name(e.entry.outcome());
                          }
                          return true;
                        })
                  .ok());
  EXPECT_EQ(resolution, "ACCEPTED");
  // Stamped -1 and never announced: it expires once the clock of record passes the grace period.
  const auto ghost = h.Send(h.Usage("ghost", 1, kT0 + kHour, kT0 + 2 * kHour), false, -1);
  ASSERT_EQ(ghost.outcome(), v1::PARKED);
  h.SetWallClock(now + Harness::Limits().park_grace_ms);
  h.Send(h.Usage("a1", 1, kT0 + 3 * kHour, kT0 + 4 * kHour), false, -1);
  EXPECT_EQ(h.validator().parked(), 0u);
}

v1::UsageEvent OutageEvent(const std::string& id, const std::string& alloc, uint32_t gpus,
                           int64_t start, int64_t end) {
  v1::UsageEvent e;
  e.set_schema_version(1);
  e.set_event_id(id);
  e.set_csp_id("csp-a");
  e.set_producer_id("m");
  e.set_producer_seq(1000 + id.size());
  auto* o = e.mutable_outage();
  o->set_allocation_id(alloc);
  o->set_program(v1::GOV_ADVANCED);
  o->set_gpu_model(v1::H200);
  o->set_gpu_count(gpus);
  o->set_start_ms(start);
  o->set_end_ms(end);
  o->set_cause("power");
  return e;
}

// Issue 14, item 8: outages get the checks usage gets: the allocation's window, model, program
// and grant, the pool's size, and never more GPUs out of service at once than there are.
TEST(ValidatorTest, OutagesFitTheirAllocationOrPoolAndEachOther) {
  Harness h;
  h.StandardRegistry();  // a1: 4 GPUs for 30 days from kT0; pool of csp-a: 64 H200
  const int64_t t = kT0 + kHour;
  auto reason_of = [&](const v1::UsageEvent& e) { return h.Send(e, false).reason_code(); };
  EXPECT_EQ(reason_of(OutageEvent("o1", "a1", 3, t, t + kHour)), "");
  EXPECT_EQ(reason_of(OutageEvent("o2", "a1", 5, t + 3 * kHour, t + 4 * kHour)),
            reason::kGpusOverGrant);
  // 3 + 2 out of a grant of 4 at once; back to back is fine.
  EXPECT_EQ(reason_of(OutageEvent("o3", "a1", 2, t + kHour / 2, t + 2 * kHour)),
            reason::kGpusOverGrant);
  EXPECT_EQ(reason_of(OutageEvent("o4", "a1", 4, t + kHour, t + 2 * kHour)), "");
  EXPECT_EQ(reason_of(OutageEvent("o5", "a1", 1, kT0 - kHour, kT0 + kHour)),
            reason::kOutsideAllocationWindow);
  auto b200 = OutageEvent("o6", "a1", 1, t + 5 * kHour, t + 6 * kHour);
  b200.mutable_outage()->set_gpu_model(v1::B200);
  EXPECT_EQ(reason_of(b200), reason::kWrongGpuModel);
  auto lease = OutageEvent("o7", "a1", 1, t + 5 * kHour, t + 6 * kHour);
  lease.mutable_outage()->set_program(v1::LEASE_HPC);
  EXPECT_EQ(reason_of(lease), reason::kInvalidField);
  // The pool: 64 GPUs.
  EXPECT_EQ(reason_of(OutageEvent("p1", "", 65, t, t + kHour)), reason::kGpusOverPool);
  EXPECT_EQ(reason_of(OutageEvent("p2", "", 40, t, t + kHour)), "");
  EXPECT_EQ(reason_of(OutageEvent("p3", "", 30, t + kHour / 2, t + kHour)), reason::kGpusOverPool);
  EXPECT_EQ(reason_of(OutageEvent("p4", "", 24, t + kHour / 2, t + kHour)), "");
  // Its kind: planned, unplanned or unspecified; nothing else.
  auto odd = OutageEvent("p6", "", 1, t + 2 * kHour, t + 3 * kHour);
  odd.mutable_outage()->set_kind(static_cast<v1::OutageKind>(3));
  EXPECT_EQ(reason_of(odd), reason::kInvalidField);
  auto planned = OutageEvent("p7", "", 1, t + 2 * kHour, t + 3 * kHour);
  planned.mutable_outage()->set_kind(v1::OUTAGE_PLANNED);
  EXPECT_EQ(reason_of(planned), "");
  // After a restart the accepted outages still count.
  h.Restart("", false);
  EXPECT_EQ(reason_of(OutageEvent("p5", "", 1, t, t + kHour)), reason::kGpusOverPool);
  EXPECT_EQ(reason_of(OutageEvent("o8", "a1", 1, t, t + kHour)), "");
  EXPECT_EQ(reason_of(OutageEvent("o9", "a1", 1, t, t + kHour)), reason::kGpusOverGrant);
}

v1::UsageEvent Withdrawal(const std::string& id, const std::string& target,
                          const std::string& alloc) {
  v1::UsageEvent e;
  e.set_schema_version(1);
  e.set_event_id(id);
  e.set_csp_id("csp-a");
  e.set_producer_id("m");
  e.set_producer_seq(2000 + id.size());
  auto* w = e.mutable_outage_withdrawal();
  w->set_target_event_id(target);
  w->set_allocation_id(alloc);
  w->set_program(v1::GOV_ADVANCED);
  w->set_gpu_model(v1::H200);
  w->set_reason("declared by mistake");
  return e;
}

// Issue 16: a mistaken outage can be withdrawn, once, by the CSP that declared it; its GPUs are
// then free for another outage, also after a restart.
TEST(ValidatorTest, AnOutageIsWithdrawnOnceAndFreesItsGpus) {
  Harness h;
  h.StandardRegistry();  // a1: 4 GPUs; pool of csp-a: 64 H200
  const int64_t t = kT0 + kHour;
  auto reason_of = [&](const v1::UsageEvent& e) { return h.Send(e, false).reason_code(); };
  ASSERT_EQ(reason_of(OutageEvent("o1", "a1", 4, t, t + kHour)), "");
  ASSERT_EQ(reason_of(OutageEvent("p1", "", 64, t, t + kHour)), "");
  EXPECT_EQ(reason_of(OutageEvent("o2", "a1", 1, t, t + kHour)), reason::kGpusOverGrant);
  EXPECT_EQ(reason_of(Withdrawal("w0", "nope", "a1")), reason::kUnknownCorrectionTarget);
  EXPECT_EQ(reason_of(Withdrawal("w1", "o1", "other")), reason::kInvalidField);
  EXPECT_EQ(reason_of(Withdrawal("w2", "o1", "a1")), "");
  EXPECT_EQ(reason_of(Withdrawal("w3", "o1", "a1")), reason::kAlreadyCorrected);
  EXPECT_EQ(reason_of(OutageEvent("o3", "a1", 1, t, t + kHour)), "");
  // A pool outage, after a restart that rebuilds the state from the ledger.
  h.Restart("", false);
  EXPECT_EQ(reason_of(Withdrawal("w4", "o1", "a1")), reason::kAlreadyCorrected);
  EXPECT_EQ(reason_of(OutageEvent("p2", "", 1, t, t + kHour)), reason::kGpusOverPool);
  EXPECT_EQ(reason_of(Withdrawal("w5", "p1", "")), "");
  EXPECT_EQ(reason_of(OutageEvent("p3", "", 64, t, t + kHour)), "");
  // Usage events are not outages: a withdrawal of one is refused.
  const v1::UsageEvent u = h.Usage("a1", 1, t + 2 * kHour, t + 3 * kHour);
  ASSERT_EQ(h.UsageReason(u), "");
  EXPECT_EQ(reason_of(Withdrawal("w6", u.event_id(), "a1")), reason::kUnknownCorrectionTarget);
}

// The over-grant sweep's order at one instant (a mutant that sorted starts before ends survived
// every other test): two back-to-back intervals beside one that spans both, exactly at the
// grant, are accepted; one GPU more at any instant is not.
TEST(ValidatorTest, BackToBackIntervalsBesideASpanningOneFitExactlyTheGrant) {
  Harness h;
  h.StandardRegistry();  // a1: 4 GPUs
  const int64_t t = kT0 + 5 * kHour;
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 2, t, t + 2 * kHour, "span")), "");
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 2, t, t + kHour, "first")), "");
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 2, t + kHour, t + 2 * kHour, "second")), "");
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 1, t + kHour - 1, t + kHour + 1, "extra")),
            reason::kGpusOverGrant);
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 1, t + 2 * kHour - 1, t + 2 * kHour, "edge")),
            reason::kGpusOverGrant);
  EXPECT_EQ(h.UsageReason(h.Usage("a1", 2, t + 2 * kHour, t + 3 * kHour, "after")), "");
}

TEST(ValidatorTest, RebuildingFromTheLedgerReproducesEveryDecision) {
  Harness h;
  h.StandardRegistry();
  for (int i = 0; i < 40; ++i) {
    const int64_t t = kT0 + (i % 7) * kHour;
    h.Send(h.Usage(i % 5 == 0 ? "later" : "a1", 1 + i % 3, t, t + kHour, absl::StrCat("n", i % 4)),
           false);
  }
  ASSERT_EQ(h.Reg([](auto* e) { *e->mutable_allocation() = Harness::Alloc("later", 1); }), "");
  // Re-decide every consumed message in ledger order with a validator rebuilt step by step.
  Validator replay(Harness::Limits());
  int checked = 0;
  ASSERT_TRUE(h.ledger()
                  .Scan(1,
                        [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
                          const auto& le = e.entry;
                          RawMessage raw{le.topic(), le.partition(), le.offset(),
                                         le.kafka_timestamp_ms(), le.payload()};
                          raw.kafka_timestamp_type = le.kafka_timestamp_type();
                          Decoded d = Decode(raw, Harness::Limits(), le.recorded_at_ms());
                          ledger::Candidate& c = d.candidate;
                          c.resolves_seq = le.resolves_seq();
                          replay.Check(&d);
                          const auto outcome = !c.reason_code.empty() ? v1::REJECTED
                                               : c.park               ? v1::PARKED
                                                                      : v1::ACCEPTED;
                          EXPECT_EQ(outcome, le.outcome()) << "seq " << e.seq;
                          EXPECT_EQ(c.reason_code, le.reason_code()) << "seq " << e.seq;
                          c.recorded_at_ms = le.recorded_at_ms();
                          replay.Recorded(d, e.seq);
                          ++checked;
                          return true;
                        })
                  .ok());
  EXPECT_EQ(static_cast<uint64_t>(checked), h.ledger().head().seq);
}

// The index of recent intervals in front of the state store changes no decision, whatever its
// bound: a random stream of usage (overlapping, on shared nodes, over and under the grant),
// corrections, cancellations, duplicates, usage parked for a late allocation and a restart
// mid-way is recorded byte for byte the same with no index (the store alone), with bounds so
// small that every check evicts or keeps a part, and with the default bound. GPULEDGER_TEST_SEED=N
// reruns a seed.
TEST(ValidatorTest, RecentIntervalIndexOfAnyBoundDecidesAsTheStoreAlone) {
  uint64_t seed = std::random_device{}();
  if (const char* env = std::getenv("GPULEDGER_TEST_SEED")) seed = std::strtoull(env, nullptr, 10);
  std::cout << "seed " << seed << " (rerun with GPULEDGER_TEST_SEED=" << seed << ")\n";
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::mt19937_64 rng(seed);
  auto pick = [&](uint64_t n) { return static_cast<int64_t>(rng() % n); };

  const size_t bounds[] = {0, 1, 2048, 16384, gpuledger::limits::kRecentIntervalsBytes};
  std::vector<std::unique_ptr<Harness>> hs;
  std::vector<std::unique_ptr<testing::TempDir>> state_dirs;
  for (size_t bytes : bounds) {
    hs.push_back(std::make_unique<Harness>(bytes));
    state_dirs.push_back(std::make_unique<testing::TempDir>());
  }
  auto all = [&](auto&& f) {
    for (auto& h : hs) f(*h);
  };
  all([](Harness& h) {
    h.StandardRegistry();
    ASSERT_EQ(h.Reg([](auto* e) { *e->mutable_allocation() = Harness::Alloc("a2", 2); }), "");
    ASSERT_EQ(h.Reg([](auto* e) { *e->mutable_allocation() = Harness::Alloc("a3", 8); }), "");
  });
  const std::string allocations[] = {"a1", "a2", "a3", "late"};
  const int64_t durations[] = {kHour, kHour, kHour, 2 * kHour, 3 * kHour, 12 * kHour};
  std::vector<v1::UsageEvent> sent;
  constexpr int kSteps = 400;
  for (int step = 0; step < kSteps; ++step) {
    if (step == kSteps / 2) {
      for (size_t i = 0; i < hs.size(); ++i) hs[i]->Restart(state_dirs[i]->Sub("state"), true);
    }
    if (step == kSteps * 3 / 5) {
      all([](Harness& h) {
        ASSERT_EQ(h.Reg([](auto* e) { *e->mutable_allocation() = Harness::Alloc("late", 3); }), "");
      });
    }
    const int64_t kind = pick(100);
    v1::UsageEvent e;
    if (kind < 8 && !sent.empty()) {
      e = sent[pick(sent.size())];  // sent again: a duplicate (or a correction's)
    } else if (kind < 20 && !sent.empty()) {
      const v1::UsageEvent& target = sent[pick(sent.size())];
      const int64_t start = kT0 + pick(44) * kHour;
      e = hs[0]->Usage(target.has_usage() ? target.usage().allocation_id() : "a1", 1 + pick(3),
                       start, start + durations[pick(6)], absl::StrCat("n", pick(4)));
      auto replacement = e.usage();
      auto* c = e.mutable_correction();
      c->set_target_event_id(target.event_id());
      c->set_allocation_id(replacement.allocation_id());
      if (pick(3) != 0) *c->mutable_replacement() = replacement;  // else a cancellation
    } else {
      const int64_t start = kT0 + pick(44) * kHour + (pick(4) == 0 ? kHour / 2 : 0);
      e = hs[0]->Usage(allocations[pick(4)], 1 + pick(3), start, start + durations[pick(6)],
                       absl::StrCat("n", pick(5)));
    }
    sent.push_back(e);
    all([&](Harness& h) { h.Send(e, false); });
  }

  Harness& store_alone = *hs[0];
  for (size_t i = 1; i < hs.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("bound ", bounds[i], " bytes"));
    ASSERT_EQ(hs[i]->ledger().head().seq, store_alone.ledger().head().seq);
    for (uint64_t seq = 1; seq <= store_alone.ledger().head().seq; ++seq) {
      const auto want = store_alone.ledger().Get(seq);
      const auto got = hs[i]->ledger().Get(seq);
      ASSERT_TRUE(want.ok() && got.ok());
      ASSERT_EQ(got->entry.reason_code(), want->entry.reason_code()) << "seq " << seq;
      ASSERT_EQ(got->entry.reason_detail(), want->entry.reason_detail()) << "seq " << seq;
      ASSERT_EQ(got->bytes, want->bytes) << "seq " << seq;
    }
    EXPECT_EQ(hs[i]->ledger().head().hash, store_alone.ledger().head().hash);
  }
  // The stream exercised what the index must get right.
  std::map<std::string, int> reasons;
  for (uint64_t seq = 1; seq <= store_alone.ledger().head().seq; ++seq) {
    ++reasons[store_alone.ledger().Get(seq)->entry.reason_code()];
  }
  EXPECT_GT(reasons[""], 20);
  EXPECT_GT(reasons[reason::kOverlappingInterval], 5);
  EXPECT_GT(reasons[reason::kGpusOverGrant], 5);
}

// Issue 16: the programmes' rules as ProgrammePolicy records, each on both sides of its limit.
class PolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    h_.StandardRegistry();  // uni (ACADEMIA) and a1 on GOV_ADVANCED
    for (const auto& institution :
         {std::pair{"sme", v1::SME}, {"sme2", v1::SME}, {"lab", v1::RESEARCH_INSTITUTE}}) {
      ASSERT_EQ(h_.Reg([&](auto* e) {
        auto* i = e->mutable_institution();
        i->set_institution_id(institution.first);
        i->set_type(institution.second);
      }),
                "");
    }
  }
  std::string Policy(std::function<void(v1::ProgrammePolicy*)> fill) {
    return h_.Reg([&](auto* e) { fill(e->mutable_programme_policy()); });
  }
  std::string Alloc(const std::string& id, const std::string& institution, v1::Program program,
                    v1::GpuModel model, uint32_t gpus, int64_t from, int64_t to) {
    return h_.Reg([&](auto* e) {
      v1::Allocation a = Harness::Alloc(id, gpus);
      a.set_institution_id(institution);
      a.set_program(program);
      a.set_gpu_model(model);
      a.set_start_ms(from);
      a.set_end_ms(to);
      *e->mutable_allocation() = a;
    });
  }
  std::string Amend(const std::string& id, int64_t from,
                    std::function<void(v1::AllocationAmendment*)> set) {
    return h_.Reg([&](auto* e) {
      auto* a = e->mutable_allocation_amendment();
      a->set_allocation_id(id);
      a->set_effective_from_ms(from);
      set(a);
    });
  }
  std::string Copay(v1::InstitutionType type, uint32_t bp, int64_t from) {
    return h_.Reg([&](auto* e) {
      e->mutable_copay_policy()->set_institution_type(type);
      e->mutable_copay_policy()->set_copay_bp(bp);
      e->mutable_copay_policy()->set_effective_from_ms(from);
    });
  }
  static constexpr int64_t kDay = 24 * kHour;
  Harness h_;
};

TEST_F(PolicyTest, AProgrammeAdmitsOnlyItsEligibleTypesFromThePolicysDate) {
  const int64_t from = kT0 + 10 * kDay;
  ASSERT_EQ(Policy([&](auto* p) {
              p->set_program(v1::LEASE_RESEARCH);
              p->set_effective_from_ms(from);
              p->add_eligible_types(v1::ACADEMIA);
              p->add_eligible_types(v1::RESEARCH_INSTITUTE);
            }),
            "");
  const int64_t end = from + 30 * kDay;
  EXPECT_EQ(Alloc("r1", "uni", v1::LEASE_RESEARCH, v1::H200, 8, from, end), "");
  EXPECT_EQ(Alloc("r2", "lab", v1::LEASE_RESEARCH, v1::H200, 8, from, end), "");
  EXPECT_EQ(Alloc("r3", "sme", v1::LEASE_RESEARCH, v1::H200, 8, from, end),
            reason::kIneligibleInstitution);
  // Before the policy's date the programme had no such rule.
  EXPECT_EQ(Alloc("r4", "sme", v1::LEASE_RESEARCH, v1::H200, 8, from - 1, end), "");
  // A programme without a policy admits every type.
  EXPECT_EQ(Alloc("r5", "sme", v1::LEASE_HPC, v1::H100, 8, from, end), "");
}

TEST_F(PolicyTest, AnInstitutionHoldsAtMostItsServersAcrossItsAllocations) {
  ASSERT_EQ(Policy([](auto* p) {
              p->set_program(v1::LEASE_HPC);
              p->set_max_servers_per_institution(2);
              auto* h100 = p->add_server_sizes();
              h100->set_gpu_model(v1::H100);
              h100->set_gpus_per_server(8);
              auto* b200 = p->add_server_sizes();
              b200->set_gpu_model(v1::B200);
              b200->set_gpus_per_server(4);
            }),
            "");
  const int64_t end = kT0 + 30 * kDay;
  // Two servers exactly, in two allocations; one GPU more is refused, for this institution only.
  EXPECT_EQ(Alloc("h1", "sme", v1::LEASE_HPC, v1::H100, 10, kT0, end), "");
  EXPECT_EQ(Alloc("h2", "sme", v1::LEASE_HPC, v1::H100, 6, kT0, end), "");
  EXPECT_EQ(Alloc("h3", "sme", v1::LEASE_HPC, v1::H100, 1, kT0 + kDay, kT0 + 2 * kDay),
            reason::kOverServerLimit);
  EXPECT_EQ(Alloc("h3", "sme2", v1::LEASE_HPC, v1::H100, 16, kT0, end), "");
  // After the others end, and after a resize down frees a server.
  EXPECT_EQ(Alloc("h4", "sme", v1::LEASE_HPC, v1::H100, 16, end, end + kDay), "");
  EXPECT_EQ(Amend("h1", kT0 + 5 * kDay, [](auto* a) { a->set_new_gpu_count(9); }), "");
  EXPECT_EQ(Alloc("h5", "sme", v1::LEASE_HPC, v1::H100, 1, kT0 + 4 * kDay, kT0 + 6 * kDay),
            reason::kOverServerLimit);  // h1 holds 10 until day 5
  EXPECT_EQ(Alloc("h5", "sme", v1::LEASE_HPC, v1::H100, 1, kT0 + 5 * kDay, kT0 + 6 * kDay), "");
  // A resize up: refused while h5 holds the last GPU, allowed once it has ended.
  EXPECT_EQ(Amend("h2", kT0 + 5 * kDay, [](auto* a) { a->set_new_gpu_count(7); }),
            reason::kOverServerLimit);
  EXPECT_EQ(Amend("h2", kT0 + 6 * kDay, [](auto* a) { a->set_new_gpu_count(7); }), "");
  // Extensions: into the stretch where h4 holds both servers, refused; sme2's, allowed.
  EXPECT_EQ(Amend("h1", kT0 + 5 * kDay, [&](auto* a) { a->set_new_end_ms(end + 1); }),
            reason::kOverServerLimit);
  EXPECT_EQ(Amend("h3", kT0 + 5 * kDay, [&](auto* a) { a->set_new_end_ms(end + kDay); }), "");
  // Servers of different sizes add up exactly: 8 H100 (1 server) + 4 B200 (1 server).
  EXPECT_EQ(Alloc("m1", "lab", v1::LEASE_HPC, v1::H100, 8, kT0, end), "");
  EXPECT_EQ(Alloc("m2", "lab", v1::LEASE_HPC, v1::B200, 4, kT0, end), "");
  EXPECT_EQ(Alloc("m3", "lab", v1::LEASE_HPC, v1::B200, 1, kT0, end), reason::kOverServerLimit);
  // A model the policy gives no server size for cannot be counted: refused with the reason.
  EXPECT_EQ(Alloc("m4", "uni", v1::LEASE_HPC, v1::H200, 1, kT0, end), reason::kOverServerLimit);
}

// Issue 16, item 4: where the programme's policy says so, every allocation names its call,
// agency and project; each missing one is refused, before the policy's date nothing is.
TEST_F(PolicyTest, AllocationsNameTheirCallAgencyAndProjectWhereThePolicyRequires) {
  const int64_t from = kT0 + 10 * kDay;
  ASSERT_EQ(Policy([&](auto* p) {
              p->set_program(v1::LEASE_RESEARCH);
              p->set_effective_from_ms(from);
              p->set_allocation_metadata_required(true);
            }),
            "");
  auto alloc = [&](const std::string& id, int64_t start, const std::string& call,
                   const std::string& agency, const std::string& project) {
    return h_.Reg([&](auto* e) {
      v1::Allocation a = Harness::Alloc(id, 8);
      a.set_program(v1::LEASE_RESEARCH);
      a.set_start_ms(start);
      a.set_end_ms(start + 30 * kDay);
      a.set_call_id(call);
      a.set_agency_id(agency);
      a.set_project_id(project);
      *e->mutable_allocation() = a;
    });
  };
  EXPECT_EQ(alloc("m1", from, "research-2026", "NIPA", "proj-1"), "");
  EXPECT_EQ(alloc("m2", from, "", "NIPA", "proj-2"), reason::kMissingAllocationMetadata);
  EXPECT_EQ(alloc("m2", from, "research-2026", "", "proj-2"), reason::kMissingAllocationMetadata);
  EXPECT_EQ(alloc("m2", from, "research-2026", "NIPA", ""), reason::kMissingAllocationMetadata);
  EXPECT_EQ(alloc("m2", from, "research-2026", "NIPA", "proj-2"), "");
  // Before the policy's date, and on a programme whose policy does not require it: none needed.
  EXPECT_EQ(alloc("m3", from - 1, "", "", ""), "");
  EXPECT_EQ(Alloc("m4", "uni", v1::GOV_ADVANCED, v1::H200, 1, from, from + kDay), "");
}

TEST_F(PolicyTest, AnAllocationRunsAtMostTheLongestWindowWithItsExtensions) {
  ASSERT_EQ(Policy([](auto* p) {
              p->set_program(v1::GOV_ADVANCED);
              p->set_max_window_ms(120 * kDay);
            }),
            "");
  EXPECT_EQ(Alloc("w1", "sme", v1::GOV_ADVANCED, v1::H200, 1, kT0, kT0 + 120 * kDay), "");
  EXPECT_EQ(Alloc("w2", "sme", v1::GOV_ADVANCED, v1::H200, 1, kT0, kT0 + 120 * kDay + 1),
            reason::kWindowTooLong);
  EXPECT_EQ(Alloc("w2", "sme", v1::GOV_ADVANCED, v1::H200, 1, kT0, kT0 + 90 * kDay), "");
  EXPECT_EQ(Amend("w2", kT0 + kDay, [](auto* a) { a->set_new_end_ms(kT0 + 121 * kDay); }),
            reason::kWindowTooLong);
  EXPECT_EQ(Amend("w2", kT0 + kDay, [](auto* a) { a->set_new_end_ms(kT0 + 120 * kDay); }), "");
  EXPECT_EQ(Amend("w1", kT0 + kDay, [](auto* a) { a->set_new_end_ms(kT0 + 60 * kDay); }), "");
}

// Issue 16, item 4: a transfer moves an allocation to another CSP or institution from a date.
// The allocation continuing it is a grant from then on, checked against the receiving pool, the
// receiving institution's eligibility and servers; the window still counts from the first start.
TEST_F(PolicyTest, ATransferMovesAnAllocationToAnotherCspOrInstitutionFromItsDate) {
  auto transfer = [&](const std::string& id, int64_t from, const std::string& next,
                      const std::string& csp, const std::string& institution) {
    return Amend(id, from, [&](auto* a) {
      a->mutable_transfer()->set_new_allocation_id(next);
      a->mutable_transfer()->set_to_csp_id(csp);
      a->mutable_transfer()->set_to_institution_id(institution);
    });
  };
  auto pool = [&](const std::string& csp, v1::Program program, v1::GpuModel model, uint32_t gpus) {
    return h_.Reg([&](auto* e) {
      auto* p = e->mutable_gpu_pool();
      p->set_csp_id(csp);
      p->set_program(program);
      p->set_gpu_model(model);
      p->set_gpu_count(gpus);
    });
  };
  const int64_t end = kT0 + 60 * kDay;
  // To another CSP: csp-b's pool holds 8, and b1 holds 1 of them until day 20.
  ASSERT_EQ(pool("csp-b", v1::GOV_ADVANCED, v1::H200, 8), "");
  ASSERT_EQ(h_.Reg([&](auto* e) {
    v1::Allocation a = Harness::Alloc("b1", 1, "csp-b");
    a.set_end_ms(kT0 + 20 * kDay);
    *e->mutable_allocation() = a;
  }),
            "");
  ASSERT_EQ(Alloc("t1", "sme", v1::GOV_ADVANCED, v1::H200, 8, kT0, end), "");
  EXPECT_EQ(transfer("t1", kT0 + 20 * kDay - 1, "t2", "csp-b", ""), reason::kGrantOverPool);
  EXPECT_EQ(transfer("t1", kT0 + 20 * kDay, "t1", "csp-b", ""), reason::kInvalidField);
  EXPECT_EQ(transfer("t1", kT0 + 20 * kDay, "a1", "csp-b", ""), reason::kRegistryConflict);
  EXPECT_EQ(transfer("t1", kT0 + 20 * kDay, "t2", "csp-a", "sme"), reason::kInvalidAmendment);
  EXPECT_EQ(transfer("t1", kT0 + 20 * kDay, "t2", "", "nobody"), reason::kUnknownInstitution);
  EXPECT_EQ(transfer("t1", kT0 + 20 * kDay, "t2", "csp-b", ""), "");  // exactly the 8 free
  // t1 ends at the transfer; t2 continues it, by csp-b only.
  const int64_t day21 = kT0 + 21 * kDay;
  auto use = [&](const v1::UsageEvent& e) {
    return h_.Send(e, false, kT0 + 22 * kDay).reason_code();
  };
  EXPECT_EQ(use(h_.Usage("t1", 8, kT0 + 19 * kDay, kT0 + 20 * kDay)), "");
  EXPECT_EQ(use(h_.Usage("t1", 1, day21, day21 + kHour)), reason::kOutsideAllocationWindow);
  EXPECT_EQ(use(h_.Usage("t2", 1, day21, day21 + kHour)), reason::kAllocationOfOtherCsp);
  h_.SetUsageCsp("csp-b");
  EXPECT_EQ(use(h_.Usage("t2", 8, day21, day21 + kHour)), "");
  EXPECT_EQ(use(h_.Usage("t2", 1, kT0 + 19 * kDay, kT0 + 20 * kDay)),
            reason::kOutsideAllocationWindow);
  h_.SetUsageCsp("csp-a");
  // A transferred allocation is amended through the one continuing it.
  EXPECT_EQ(Amend("t1", kT0 + kDay, [](auto* a) { a->set_new_gpu_count(4); }),
            reason::kInvalidAmendment);
  EXPECT_EQ(transfer("t1", kT0 + kDay, "t3", "", "sme2"), reason::kInvalidAmendment);
  // To another institution on the same CSP: the pool is full, but t2's own GPUs pass on.
  EXPECT_EQ(transfer("t2", kT0 + 25 * kDay, "t3", "", "sme2"), "");
  EXPECT_EQ(Amend("t3", kT0 + 30 * kDay, [](auto* a) { a->set_new_gpu_count(9); }),
            reason::kGrantOverPool);

  // Eligibility of the receiving institution, and the window from the first allocation's start.
  ASSERT_EQ(Policy([](auto* p) {
              p->set_program(v1::LEASE_RESEARCH);
              p->add_eligible_types(v1::ACADEMIA);
              p->add_eligible_types(v1::RESEARCH_INSTITUTE);
              p->set_max_window_ms(120 * kDay);
            }),
            "");
  ASSERT_EQ(Alloc("r1", "uni", v1::LEASE_RESEARCH, v1::H200, 8, kT0, kT0 + 100 * kDay), "");
  EXPECT_EQ(transfer("r1", kT0 + 10 * kDay, "r2", "", "sme"), reason::kIneligibleInstitution);
  EXPECT_EQ(transfer("r1", kT0 + 10 * kDay, "r2", "", "lab"), "");
  EXPECT_EQ(Amend("r2", kT0 + 20 * kDay, [](auto* a) { a->set_new_end_ms(kT0 + 120 * kDay + 1); }),
            reason::kWindowTooLong);
  EXPECT_EQ(Amend("r2", kT0 + 20 * kDay, [](auto* a) { a->set_new_end_ms(kT0 + 120 * kDay); }), "");

  // Servers of the receiving institution; an institution's own allocation moving to another CSP
  // is not counted twice.
  ASSERT_EQ(Policy([](auto* p) {
              p->set_program(v1::LEASE_HPC);
              p->set_max_servers_per_institution(2);
              auto* size = p->add_server_sizes();
              size->set_gpu_model(v1::H100);
              size->set_gpus_per_server(8);
            }),
            "");
  ASSERT_EQ(Alloc("h1", "sme2", v1::LEASE_HPC, v1::H100, 16, kT0, end), "");
  ASSERT_EQ(Alloc("h2", "sme", v1::LEASE_HPC, v1::H100, 8, kT0, end), "");
  ASSERT_EQ(Alloc("h3", "sme", v1::LEASE_HPC, v1::H100, 8, kT0, end), "");
  EXPECT_EQ(transfer("h2", kT0 + 5 * kDay, "h4", "", "sme2"), reason::kOverServerLimit);
  EXPECT_EQ(transfer("h3", kT0 + 5 * kDay, "h5", "csp-b", ""), "");
  EXPECT_EQ(transfer("h2", kT0 + 5 * kDay, "h4", "", "lab"), "");

  // Usage of the continuing allocation read before the transfer waits for it, then counts.
  h_.SetUsageCsp("csp-b");
  const v1::LedgerEntry parked =
      h_.Send(h_.Usage("r3", 1, kT0 + 30 * kDay, kT0 + 30 * kDay + kHour), false, kT0 + 31 * kDay);
  EXPECT_EQ(parked.outcome(), v1::PARKED);
  EXPECT_EQ(transfer("r2", kT0 + 30 * kDay, "r3", "csp-b", ""), "");
  const v1::LedgerEntry resolved = h_.ledger().Get(h_.ledger().head().seq)->entry;
  EXPECT_EQ(resolved.resolves_seq(), parked.seq());
  EXPECT_EQ(resolved.outcome(), v1::ACCEPTED)
      << resolved.reason_code() << ": " << resolved.reason_detail();
  h_.SetUsageCsp("csp-a");
}

TEST_F(PolicyTest, CopayPoliciesStayWithinTheProgrammesBounds) {
  // Before any bound: SMEs at 15% from kT0 - 10 days, then 9.99% from kT0.
  EXPECT_EQ(Copay(v1::SME, 1'500, kT0 - 10 * kDay), "");
  EXPECT_EQ(Copay(v1::SME, 999, kT0), "");
  ASSERT_EQ(Policy([](auto* p) {
              p->set_program(v1::LEASE_HPC);
              p->set_effective_from_ms(kT0);
              auto* b = p->add_copay_bounds();
              b->set_institution_type(v1::SME);
              b->set_max_copay_bp(999);
            }),
            "");
  // Under 10%: 9.99% is in, 10% is out, from the policy's date on only.
  EXPECT_EQ(Copay(v1::SME, 1'000, kT0 + kDay), reason::kCopayOutOfBounds);
  EXPECT_EQ(Copay(v1::SME, 500, kT0 + kDay), "");
  EXPECT_EQ(Copay(v1::SME, 1'200, kT0 - 5 * kDay), "");  // in force until kT0 only
  // Types without a bound are free.
  EXPECT_EQ(Copay(v1::LARGE_ENTERPRISE, 10'000, kT0 + kDay), "");
  // A later policy whose bounds exclude the co-pay in force is refused; one that includes it is
  // not.
  EXPECT_EQ(Policy([](auto* p) {
              p->set_program(v1::LEASE_HPC);
              p->set_effective_from_ms(kT0 + 2 * kDay);
              auto* b = p->add_copay_bounds();
              b->set_institution_type(v1::SME);
              b->set_max_copay_bp(499);
            }),
            reason::kCopayOutOfBounds);
  EXPECT_EQ(Policy([](auto* p) {
              p->set_program(v1::LEASE_HPC);
              p->set_effective_from_ms(kT0 + 2 * kDay);
              auto* b = p->add_copay_bounds();
              b->set_institution_type(v1::SME);
              b->set_max_copay_bp(500);
            }),
            "");
}

TEST_F(PolicyTest, PoliciesAndReleasesAreCheckedWhenDecoded) {
  EXPECT_EQ(Policy([](auto* p) { p->set_max_window_ms(kDay); }), reason::kMissingField);
  EXPECT_EQ(Policy([](auto* p) {
              p->set_program(v1::LEASE_HPC);
              p->set_max_servers_per_institution(2);
            }),
            reason::kMissingField);  // a server limit needs server sizes
  EXPECT_EQ(Policy([](auto* p) {
              p->set_program(v1::LEASE_HPC);
              p->add_eligible_types(v1::SME);
              p->add_eligible_types(v1::SME);
            }),
            reason::kInvalidField);
  EXPECT_EQ(Policy([](auto* p) {
              p->set_program(v1::LEASE_HPC);
              auto* b = p->add_copay_bounds();
              b->set_institution_type(v1::SME);
              b->set_min_copay_bp(500);
              b->set_max_copay_bp(499);
            }),
            reason::kInvalidField);
  EXPECT_EQ(Policy([](auto* p) {
              p->set_program(v1::LEASE_HPC);
              auto* r = p->add_over_cap_rules();
              r->set_institution_type(v1::SME);
              r->set_action(v1::OVER_CAP_HOLD);
              r->set_copay_bp(100);
            }),
            reason::kInvalidField);  // only OVER_CAP_BILL_AT takes a co-pay
  EXPECT_EQ(Policy([](auto* p) {
              p->set_program(v1::LEASE_HPC);
              p->add_over_cap_rules()->set_institution_type(v1::SME);
            }),
            reason::kMissingField);  // the action
  EXPECT_EQ(Policy([](auto* p) { p->set_program(v1::LEASE_HPC); }), "");
  EXPECT_EQ(Policy([](auto* p) {
              p->set_program(v1::LEASE_HPC);
              p->set_max_window_ms(kDay);
            }),
            reason::kRegistryConflict);  // another policy at the same instant
  auto release = [&](const std::string& id, uint32_t bp) {
    return h_.Reg([&](auto* e) {
      e->mutable_over_cap_release()->set_allocation_id(id);
      e->mutable_over_cap_release()->set_copay_bp(bp);
    });
  };
  EXPECT_EQ(release("nope", 0), reason::kUnknownAllocation);
  EXPECT_EQ(release("a1", 10'001), reason::kInvalidField);
  EXPECT_EQ(release("a1", 1'000), "");
  EXPECT_EQ(release("a1", 1'000), "");  // the same decision again changes nothing
  EXPECT_EQ(release("a1", 2'000), reason::kRegistryConflict);
}

// Issue 16, item 6: an auditor decides every entry again from the ledger alone and finds the
// recorded decisions: accepted, each kind of rejection, parked and resolved, a conflicting
// duplicate, and decisions taken under limits recorded in the ledger. A forged entry (accepted
// where the grant says no, or rejected as malformed though it decodes) is found, with its seq.
TEST(RedecideTest, EveryRecordedDecisionIsMadeAgainFromTheLedgerAlone) {
  Harness h;
  h.StandardRegistry();
  ASSERT_EQ(h.UsageReason(h.Usage("a1", 2, kT0, kT0 + kHour)), "");
  ASSERT_EQ(h.UsageReason(h.Usage("a1", 5, kT0, kT0 + kHour, "n2")), reason::kGpusOverGrant);
  ASSERT_EQ(h.UsageReason(h.Usage("a1", 1, kT0 + 60 * kHour, kT0 + 61 * kHour, "n3")),
            reason::kFutureTimestamp);
  // Usage for an allocation not announced yet waits, and is decided when it is.
  ASSERT_EQ(h.Send(h.Usage("a2", 1, kT0, kT0 + kHour), false).outcome(), v1::PARKED);
  ASSERT_EQ(h.Reg([](auto* e) { *e->mutable_allocation() = Harness::Alloc("a2", 2); }), "");
  // The limits change in the ledger: a 3-hour interval is too long from here on.
  ASSERT_EQ(
      h.Reg([](auto* e) { e->mutable_validation_settings()->set_max_interval_ms(2 * kHour); }), "");
  ASSERT_EQ(h.UsageReason(h.Usage("a1", 1, kT0 + 2 * kHour, kT0 + 5 * kHour)),
            reason::kDurationTooLong);
  // The same event id with other content.
  v1::UsageEvent again = h.Usage("a1", 1, kT0 + 6 * kHour, kT0 + 7 * kHour);
  ASSERT_EQ(h.UsageReason(again), "");
  again.mutable_usage()->set_gpu_count(2);
  ASSERT_EQ(h.UsageReason(again), reason::kConflictingDuplicate);
  ASSERT_TRUE(h.ledger().Commit().ok());

  RedecideOptions options;
  auto report = Redecide(h.ledger(), options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->entries, h.ledger().head().seq);
  EXPECT_EQ(report->differ, 0u) << report->differences[0].seq << ": "
                                << report->differences[0].recorded << " vs "
                                << report->differences[0].decided;
  EXPECT_EQ(report->agree, report->entries);
  EXPECT_EQ(report->duplicates_checked, 1u);

  // Forged entries, appended as if ingest had decided them.
  auto forge = [&](const v1::UsageEvent& e, const std::string& reason_code) {
    RawMessage raw{TopicNames().Usage("csp-a"), 0,
                   static_cast<int64_t>(9'000 + h.ledger().head().seq), kT0 + 48 * kHour,
                   e.SerializeAsString()};
    Decoded d = Decode(raw, ValidationLimits{}, 0);
    d.candidate.reason_code = reason_code;
    d.candidate.reason_detail = reason_code.empty() ? "" : "forged";
    auto appended = h.ledger().Append(d.candidate);
    EXPECT_TRUE(appended.ok()) << appended.status();
    EXPECT_TRUE(h.ledger().Commit().ok());
    return appended.ok() ? appended->seq : 0;
  };
  const uint64_t over = forge(h.Usage("a1", 5, kT0 + 8 * kHour, kT0 + 9 * kHour, "n7"), "");
  const uint64_t malformed =
      forge(h.Usage("a1", 1, kT0 + 10 * kHour, kT0 + 11 * kHour), reason::kMalformed);
  report = Redecide(h.ledger(), options);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->differ, 2u);
  ASSERT_EQ(report->differences.size(), 2u);
  EXPECT_EQ(report->differences[0].seq, over);
  EXPECT_EQ(report->differences[0].recorded, "ACCEPTED");
  EXPECT_EQ(report->differences[0].decided, reason::kGpusOverGrant);
  EXPECT_EQ(report->differences[1].seq, malformed);
  EXPECT_EQ(report->differences[1].recorded, reason::kMalformed);
  EXPECT_EQ(report->differences[1].decided, "ACCEPTED");
  EXPECT_EQ(report->agree, report->entries - 2);

  // CloudEvents on Kafka: an entry whose recorded event is what its payload and headers decode
  // to agrees; one whose recorded event was swapped for another (what settlement would read) is
  // found.
  auto cloudevent = [&](const v1::UsageEvent& e, const std::string* swapped) {
    v1::UsageEvent data = e;
    data.clear_event_id();
    data.clear_producer_id();
    std::string json;
    EXPECT_TRUE(google::protobuf::util::MessageToJsonString(data, &json).ok());
    RawMessage raw{TopicNames().Usage("csp-a"), 0,
                   static_cast<int64_t>(9'000 + h.ledger().head().seq), kT0 + 48 * kHour, json};
    raw.headers = {{"ce_specversion", "1.0"},
                   {"ce_type", "gpuledger.v1.UsageEvent"},
                   {"ce_id", e.event_id()},
                   {"ce_source", e.producer_id()},
                   {"content-type", "application/json"}};
    Decoded d = Decode(raw, ValidationLimits{}, 0);
    EXPECT_EQ(d.candidate.reason_code, "") << d.candidate.reason_detail;
    EXPECT_FALSE(d.candidate.decoded_event.empty());
    if (swapped != nullptr) d.candidate.decoded_event = *swapped;
    auto appended = h.ledger().Append(d.candidate);
    EXPECT_TRUE(appended.ok()) << appended.status();
    EXPECT_TRUE(h.ledger().Commit().ok());
    return appended.ok() ? appended->seq : 0;
  };
  cloudevent(h.Usage("a1", 1, kT0 + 12 * kHour, kT0 + 13 * kHour), nullptr);
  v1::UsageEvent other = h.Usage("a1", 1, kT0 + 14 * kHour, kT0 + 15 * kHour);
  v1::UsageEvent bigger = other;
  bigger.mutable_usage()->set_gpu_count(2);
  const std::string bigger_bytes = bigger.SerializeAsString();
  const uint64_t swapped = cloudevent(other, &bigger_bytes);
  report = Redecide(h.ledger(), options);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->differ, 3u);
  EXPECT_EQ(report->differences[2].seq, swapped);
  EXPECT_EQ(report->differences[2].recorded, "ACCEPTED");
  EXPECT_EQ(report->differences[2].decided, "DECODED_EVENT_DIFFERS");
  EXPECT_EQ(report->agree, report->entries - 3);
}

}  // namespace
}  // namespace gpuledger::ingest
