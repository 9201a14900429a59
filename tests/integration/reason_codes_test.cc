// Issue 4's table: one event per reason code, published to a real Kafka broker, ingested, and
// each found in the ledger with exactly the reason it was built to provoke.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "base/period.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/ingestor.h"
#include "ingest/publisher.h"
#include "ingest/reasons.h"
#include "ledger/verify.h"
#include "testsupport/kafka_test.h"

namespace gpuledger {
namespace {

namespace v1 = gpuledger::v1;
namespace reason = ingest::reason;
constexpr int64_t kHour = 3'600'000;
constexpr int64_t kT0 = 1'772'000'000'000;  // early March 2026

struct Case {
  std::string event_id;
  std::string want;  // reason code, "" for accepted
};

class ReasonCodesTest : public testing::KafkaTest {
 protected:
  ReasonCodesTest() : KafkaTest("rc") {}

  void Publish(const std::vector<ingest::EncodedEvent>& events) {
    ingest::PublishOptions po;
    po.brokers = brokers_;
    po.topics = topics_;
    auto r = ingest::Publish(events, po);
    ASSERT_TRUE(r.ok()) << r.status();
  }

  ingest::IngestStats Ingest(ledger::Ledger& l) {
    ingest::IngestOptions o;
    o.brokers = brokers_;
    o.group_id = "reason-codes";
    o.stop_at_end = true;
    o.publish_rejected = false;
    o.limits.topics = topics_;
    o.limits.park_grace_ms = 1;  // any later message ends a parked event's wait
    std::atomic<bool> stop{false};
    auto stats = ingest::RunIngest(o, l, stop);
    EXPECT_TRUE(stats.ok()) << stats.status();
    return stats.ok() ? *stats : ingest::IngestStats{};
  }

  ingest::EncodedEvent Registry(const std::string& id, std::function<void(v1::RegistryEvent*)> f) {
    v1::RegistryEvent e;
    e.set_schema_version(1);
    e.set_event_id(id);
    f(&e);
    return {topics_.Registry(), id, e.SerializeAsString()};
  }

  // A valid usage event of csp-a on allocation a1, for `mutate` to break in one way.
  ingest::EncodedEvent Usage(const std::string& id, std::function<void(v1::UsageEvent*)> mutate,
                             const std::string& csp_topic = "csp-a") {
    v1::UsageEvent e;
    e.set_schema_version(1);
    e.set_event_id(id);
    e.set_csp_id("csp-a");
    e.set_producer_id("meter");
    e.set_producer_seq(++seq_);
    auto* u = e.mutable_usage();
    u->set_allocation_id("a1");
    u->set_gpu_model(v1::H200);
    u->set_gpu_count(1);
    u->set_start_ms(kT0 + seq_ * kHour);
    u->set_end_ms(kT0 + seq_ * kHour + kHour / 2);
    u->set_node_id(absl::StrCat("node-", seq_));
    mutate(&e);
    return {topics_.Usage(csp_topic), "a1", e.SerializeAsString()};
  }

  static v1::Allocation Alloc(const std::string& id, const std::string& csp, uint32_t gpus) {
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

  uint64_t seq_ = 0;
};

TEST_F(ReasonCodesTest, EveryReasonCodeThroughTheRealBroker) {
  std::vector<Case> cases;
  std::vector<ingest::EncodedEvent> registry;
  auto reg = [&](const std::string& id, const std::string& want, auto fill) {
    registry.push_back(Registry(id, fill));
    cases.push_back({id, want});
  };
  reg("r-inst", "", [](auto* e) {
    auto* i = e->mutable_institution();
    i->set_institution_id("uni");
    i->set_name("University");
    i->set_type(v1::ACADEMIA);
  });
  reg("r-a1", "", [](auto* e) { *e->mutable_allocation() = Alloc("a1", "csp-a", 4); });
  reg("r-b1", "", [](auto* e) { *e->mutable_allocation() = Alloc("b1", "csp-b", 4); });
  reg("r-pool", "", [](auto* e) {
    auto* p = e->mutable_gpu_pool();
    p->set_csp_id("csp-a");
    p->set_program(v1::GOV_ADVANCED);
    p->set_gpu_model(v1::H200);
    p->set_gpu_count(64);
  });
  reg("r-conflict", reason::kRegistryConflict,
      [](auto* e) { *e->mutable_allocation() = Alloc("a1", "csp-a", 8); });
  reg("r-ghost-inst", reason::kUnknownInstitution, [](auto* e) {
    auto a = Alloc("z1", "csp-a", 1);
    a.set_institution_id("nobody");
    *e->mutable_allocation() = a;
  });
  reg("r-amend-unknown", reason::kUnknownAllocation, [](auto* e) {
    auto* a = e->mutable_allocation_amendment();
    a->set_allocation_id("nope");
    a->set_effective_from_ms(kT0);
    a->set_revoke(true);
  });
  reg("r-amend-bad", reason::kInvalidAmendment, [](auto* e) {
    auto* a = e->mutable_allocation_amendment();
    a->set_allocation_id("a1");
    a->set_effective_from_ms(kT0 - kHour);
    a->set_revoke(true);
  });
  reg("r-over-pool", reason::kGrantOverPool,
      [](auto* e) { *e->mutable_allocation() = Alloc("a2", "csp-a", 61); });  // 4 + 61 > 64
  // Programme policy: the HPC lease admits SMEs, at most 2 servers of 8 H100s, 120 days, and
  // an SME co-pay under 10%.
  reg("r-policy", "", [](auto* e) {
    auto* p = e->mutable_programme_policy();
    p->set_program(v1::LEASE_HPC);
    p->add_eligible_types(v1::SME);
    p->set_max_servers_per_institution(2);
    auto* size = p->add_server_sizes();
    size->set_gpu_model(v1::H100);
    size->set_gpus_per_server(8);
    p->set_max_window_ms(120 * 24 * kHour);
    auto* bound = p->add_copay_bounds();
    bound->set_institution_type(v1::SME);
    bound->set_max_copay_bp(999);
  });
  reg("r-sme", "", [](auto* e) {
    auto* i = e->mutable_institution();
    i->set_institution_id("sme");
    i->set_name("Small company");
    i->set_type(v1::SME);
  });
  auto hpc = [](const char* id, const char* institution, uint32_t gpus, int64_t days) {
    return [=](v1::RegistryEvent* e) {
      auto a = Alloc(id, "csp-a", gpus);
      a.set_institution_id(institution);
      a.set_program(v1::LEASE_HPC);
      a.set_gpu_model(v1::H100);
      a.set_end_ms(kT0 + days * 24 * kHour);
      *e->mutable_allocation() = a;
    };
  };
  reg("r-hpc-ok", "", hpc("h1", "sme", 16, 120));
  reg("r-ineligible", reason::kIneligibleInstitution, hpc("h2", "uni", 1, 30));
  reg("r-servers", reason::kOverServerLimit, hpc("h3", "sme", 1, 30));  // 16 + 1 > 2 x 8
  reg("r-window", reason::kWindowTooLong, hpc("h4", "sme", 1, 121));
  reg("r-policy-research", "", [](auto* e) {
    auto* p = e->mutable_programme_policy();
    p->set_program(v1::LEASE_RESEARCH);
    p->set_allocation_metadata_required(true);
  });
  reg("r-no-call", reason::kMissingAllocationMetadata, [](auto* e) {
    auto a = Alloc("rs1", "csp-a", 1);
    a.set_program(v1::LEASE_RESEARCH);
    a.set_agency_id("NIPA");
    a.set_project_id("proj-1");
    *e->mutable_allocation() = a;
  });
  reg("r-copay", reason::kCopayOutOfBounds, [](auto* e) {
    e->mutable_copay_policy()->set_institution_type(v1::SME);
    e->mutable_copay_policy()->set_copay_bp(1'500);
  });
  reg("r-release", "", [](auto* e) {
    e->mutable_over_cap_release()->set_allocation_id("a1");
    e->mutable_over_cap_release()->set_copay_bp(0);
  });
  reg("r-release-unknown", reason::kUnknownAllocation,
      [](auto* e) { e->mutable_over_cap_release()->set_allocation_id("nope"); });
  reg("r-no-body", reason::kMissingField, [](auto*) {});
  // Period closes: in order, each after its end.
  auto close = [](const char* period, int64_t emitted_at_ms) {
    return [=](v1::RegistryEvent* e) {
      e->set_emitted_at_ms(emitted_at_ms);
      e->mutable_period_close()->set_period(period);
    };
  };
  const int64_t may = base::Period{2026, 5}.StartMs();
  reg("r-close-early", reason::kPeriodNotEnded, close("2026-04", may - 1));
  reg("r-close", "", close("2026-04", may));
  reg("r-close-again", reason::kPeriodAlreadyClosed, close("2026-04", may));
  reg("r-close-gap", reason::kPeriodCloseOutOfOrder,
      close("2026-06", base::Period{2026, 7}.StartMs()));
  ASSERT_NO_FATAL_FAILURE(Publish(registry));
  auto ledger = ledger::Ledger::Open(dir_.Sub("ledger"), {});
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  Ingest(**ledger);

  std::vector<ingest::EncodedEvent> usage;
  auto use = [&](const std::string& id, const std::string& want, auto mutate,
                 const std::string& topic = "csp-a") {
    usage.push_back(Usage(id, mutate, topic));
    cases.push_back({id, want});
  };
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  use("ok-1", "", [](auto* e) { e->mutable_usage()->set_node_id("shared"); });
  use("ok-2", "", [](auto*) {});
  use("schema", reason::kUnknownSchemaVersion, [](auto* e) { e->set_schema_version(2); });
  use("no-alloc", reason::kMissingField,
      [](auto* e) { e->mutable_usage()->clear_allocation_id(); });
  use("zero-gpus", reason::kInvalidField, [](auto* e) { e->mutable_usage()->set_gpu_count(0); });
  use("mismatch", reason::kCspTopicMismatch, [](auto* e) { e->set_csp_id("csp-b"); });
  use("empty", reason::kEmptyInterval,
      [](auto* e) { e->mutable_usage()->set_end_ms(e->usage().start_ms()); });
  use("too-long", reason::kDurationTooLong,
      [](auto* e) { e->mutable_usage()->set_end_ms(e->usage().start_ms() + 32 * 24 * kHour); });
  use("future", reason::kFutureTimestamp, [&](auto* e) {
    e->mutable_usage()->set_start_ms(now_ms + 24 * kHour);
    e->mutable_usage()->set_end_ms(now_ms + 25 * kHour);
  });
  // A producer stamps the future usage with a CreateTime after its end: the topic (created by
  // publish) stamps LogAppendTime, so the broker's clock decides, not the producer's.
  use("future-stamped", reason::kFutureTimestamp, [&](auto* e) {
    e->mutable_usage()->set_start_ms(now_ms + 24 * kHour);
    e->mutable_usage()->set_end_ms(now_ms + 25 * kHour);
  });
  usage.back().create_time_ms = now_ms + 26 * kHour;
  use("year-1000", reason::kTimeOutOfRange, [](auto* e) {
    e->mutable_usage()->set_start_ms(-30'610'224'000'000);
    e->mutable_usage()->set_end_ms(-30'610'224'000'000 + kHour);
  });
  use("other-csp", reason::kAllocationOfOtherCsp,
      [](auto* e) { e->mutable_usage()->set_allocation_id("b1"); });
  use("model", reason::kWrongGpuModel,
      [](auto* e) { e->mutable_usage()->set_gpu_model(v1::B200); });
  use("window", reason::kOutsideAllocationWindow,
      [](auto* e) { e->mutable_usage()->set_start_ms(kT0 - kHour); });
  use("overlap", reason::kOverlappingInterval, [](auto* e) {
    e->mutable_usage()->set_node_id("shared");
    e->mutable_usage()->set_start_ms(kT0 + 1 * kHour + 60'000);  // inside ok-1
    e->mutable_usage()->set_end_ms(kT0 + 1 * kHour + 120'000);
  });
  use("over-grant", reason::kGpusOverGrant, [](auto* e) { e->mutable_usage()->set_gpu_count(5); });
  use("pool", reason::kUnknownPool, [](auto* e) {
    auto* o = e->mutable_own_use();
    o->set_program(v1::GOV_ADVANCED);
    o->set_gpu_model(v1::B200);
    o->set_gpu_count(1);
    o->set_start_ms(kT0);
    o->set_end_ms(kT0 + kHour);
  });
  use("pool-size", reason::kGpusOverPool, [](auto* e) {
    auto* o = e->mutable_own_use();
    o->set_program(v1::GOV_ADVANCED);
    o->set_gpu_model(v1::H200);
    o->set_gpu_count(65);
    o->set_start_ms(kT0);
    o->set_end_ms(kT0 + kHour);
  });
  // ok-1 runs 1 GPU of the 64-GPU pool at kT0 + 1 h: all 64 for the CSP would displace it.
  use("own-displaces", reason::kOwnUseDisplacesProgramme, [](auto* e) {
    auto* o = e->mutable_own_use();
    o->set_program(v1::GOV_ADVANCED);
    o->set_gpu_model(v1::H200);
    o->set_gpu_count(64);
    o->set_start_ms(kT0);
    o->set_end_ms(kT0 + 3 * kHour);
  });
  auto correct = [](const std::string& target) {
    return [target](v1::UsageEvent* e) {
      auto replacement = e->usage();
      e->mutable_correction()->set_target_event_id(target);
      e->mutable_correction()->set_allocation_id("a1");
      *e->mutable_correction()->mutable_replacement() = replacement;
    };
  };
  use("fix-unknown", reason::kUnknownCorrectionTarget, correct("never-sent"));
  use("fix-1", "", correct("ok-2"));
  use("fix-2", reason::kAlreadyCorrected, correct("ok-2"));
  use("ghost", reason::kUnknownAllocation,
      [](auto* e) { e->mutable_usage()->set_allocation_id("never-announced"); });
  // ok-1's id again with other content; and bytes that are no protobuf at all.
  usage.push_back(Usage("ok-1", [](auto* e) { e->mutable_usage()->set_gpu_count(3); }));
  usage.push_back({topics_.Usage("csp-a"), "a1", std::string("\xff\xfe\xfd garbage", 11)});
  ASSERT_NO_FATAL_FAILURE(Publish(usage));
  Ingest(**ledger);
  // A later message ends the parked event's grace period (1 ms of Kafka time).
  ASSERT_NO_FATAL_FAILURE(Publish({Usage("tick", [](auto*) {})}));
  Ingest(**ledger);

  // The last entry of each identity holds its final decision.
  std::map<std::string, v1::LedgerEntry> final_entry;
  std::set<std::string> reasons_seen;
  ASSERT_TRUE((*ledger)
                  ->Scan(1,
                         [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
                           if (e.entry.outcome() == v1::REJECTED) {
                             reasons_seen.insert(e.entry.reason_code());
                           }
                           if (e.entry.reason_code() != ledger::kConflictingDuplicate) {
                             final_entry[e.entry.event_id()] = e.entry;
                           }
                           return true;
                         })
                  .ok());
  for (const Case& c : cases) {
    ASSERT_TRUE(final_entry.contains(c.event_id)) << c.event_id;
    const v1::LedgerEntry& e = final_entry[c.event_id];
    EXPECT_EQ(e.reason_code(), c.want) << c.event_id << ": " << e.reason_detail();
    EXPECT_EQ(e.outcome(), c.want.empty() ? v1::ACCEPTED : v1::REJECTED) << c.event_id;
  }
  EXPECT_NE(final_entry["ghost"].resolves_seq(), 0u) << "the ghost usage was parked first";
  // The broker stamped every message itself: the producer's CreateTime is not what was kept.
  const v1::LedgerEntry& stamped = final_entry["future-stamped"];
  EXPECT_EQ(stamped.kafka_timestamp_type(), v1::KAFKA_TIMESTAMP_LOG_APPEND_TIME);
  EXPECT_LT(stamped.kafka_timestamp_ms(), now_ms + kHour);
  // Bytes that do not decode on csp-a's topic are csp-a's to see, without an event id.
  bool garbage_is_csp_a = false;
  ASSERT_TRUE((*ledger)
                  ->Scan(1,
                         [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
                           if (e.entry.reason_code() == reason::kMalformed) {
                             garbage_is_csp_a =
                                 e.entry.source_id() == "csp-a" && e.entry.event_id().empty();
                           }
                           return true;
                         })
                  .ok());
  EXPECT_TRUE(garbage_is_csp_a);
  // Every code in the table has a case here, except UNKNOWN_TOPIC: the consumer subscribes only
  // to gpuledger topics, so it cannot arise through a broker (its unit test covers it).
  for (const auto& r : reason::AllReasons()) {
    if (std::string(r.code) == reason::kUnknownTopic) continue;
    EXPECT_TRUE(reasons_seen.contains(std::string(r.code))) << r.code << " has no case";
  }
  auto report = ledger::Verify(**ledger);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok) << report->problem;
}

}  // namespace
}  // namespace gpuledger
