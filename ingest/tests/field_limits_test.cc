// Issue 14, items 1, 3 and 8: every id, free-text, time and count field from outside has a
// written bound (ingest/limits.h) that Decide enforces with a reason code. Each case names the
// field and the hostile value; the same table is run against usage and registry events.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <string>

#include "absl/strings/str_cat.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/decide.h"
#include "ingest/limits.h"
#include "ingest/reasons.h"
#include "ingest/topics.h"

namespace gpuledger::ingest {
namespace {

namespace v1 = gpuledger::v1;

constexpr int64_t kT0 = 1'772'000'000'000;  // early March 2026
constexpr int64_t kDay = 86'400'000;
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

v1::UsageEvent Usage() {
  v1::UsageEvent e;
  e.set_schema_version(1);
  e.set_event_id("evt-1");
  e.set_csp_id("csp-a");
  e.set_producer_id("meter-1");
  e.set_producer_seq(1);
  auto* u = e.mutable_usage();
  u->set_allocation_id("alloc-1");
  u->set_gpu_model(v1::H200);
  u->set_gpu_count(8);
  u->set_start_ms(kT0);
  u->set_end_ms(kT0 + 3'600'000);
  u->set_node_id("node-1");
  return e;
}

v1::UsageEvent Outage() {
  v1::UsageEvent e = Usage();
  auto* o = e.mutable_outage();
  o->set_program(v1::GOV_ADVANCED);
  o->set_gpu_model(v1::H200);
  o->set_gpu_count(2);
  o->set_start_ms(kT0);
  o->set_end_ms(kT0 + 3'600'000);
  o->set_cause("power");
  return e;
}

v1::UsageEvent CorrectionEvent() {
  v1::UsageEvent e = Usage();
  const v1::UsageInterval replacement = e.usage();
  auto* c = e.mutable_correction();
  c->set_target_event_id("evt-0");
  c->set_allocation_id("alloc-1");
  c->set_reason("meter double-counted node-1");
  *c->mutable_replacement() = replacement;
  return e;
}

v1::RegistryEvent Registry() {
  v1::RegistryEvent r;
  r.set_schema_version(1);
  r.set_event_id("reg-1");
  r.set_emitted_at_ms(kT0);
  return r;
}

v1::RegistryEvent Institution() {
  v1::RegistryEvent r = Registry();
  auto* i = r.mutable_institution();
  i->set_institution_id("inst-1");
  i->set_name("나리대학교 산학협력단");  // Korean names are welcome
  i->set_type(v1::ACADEMIA);
  return r;
}

v1::RegistryEvent Allocation() {
  v1::RegistryEvent r = Registry();
  auto* a = r.mutable_allocation();
  a->set_allocation_id("alloc-1");
  a->set_institution_id("inst-1");
  a->set_program(v1::GOV_ADVANCED);
  a->set_csp_id("csp-a");
  a->set_gpu_model(v1::H200);
  a->set_gpu_count(8);
  a->set_start_ms(kT0);
  a->set_end_ms(kT0 + 90 * kDay);
  return r;
}

// A transfer of alloc-1 to another CSP and institution (both named: a test may clear one).
v1::RegistryEvent Transfer() {
  v1::RegistryEvent r = Registry();
  auto* a = r.mutable_allocation_amendment();
  a->set_allocation_id("alloc-1");
  a->set_effective_from_ms(kT0 + kDay);
  a->mutable_transfer()->set_new_allocation_id("alloc-2");
  a->mutable_transfer()->set_to_csp_id("csp-b");
  a->mutable_transfer()->set_to_institution_id("inst-2");
  return r;
}

v1::RegistryEvent RateCard() {
  v1::RegistryEvent r = Registry();
  auto* c = r.mutable_rate_card();
  c->set_program(v1::GOV_ADVANCED);
  c->set_gpu_model(v1::H200);
  c->set_krw_per_gpu_hour(4'500);
  c->set_effective_from_ms(kT0);
  return r;
}

std::string DecideUsage(const v1::UsageEvent& e) {
  const ledger::Candidate c =
      Decide(RawMessage{TopicNames().Usage("csp-a"), 0, 1, kT0 + 10 * kDay, e.SerializeAsString()},
             {}, kT0 + 10 * kDay);
  return c.reason_code;
}

std::string DecideRegistry(const v1::RegistryEvent& r) {
  const ledger::Candidate c =
      Decide(RawMessage{TopicNames().Registry(), 0, 1, kT0, r.SerializeAsString()}, {}, kT0);
  return c.reason_code;
}

// Strings no id may hold, with the reason each gets: separators and control bytes (0x1f is the
// byte the settlement store once joined keys with), a space, non-ASCII, and one byte too many
// are INVALID_FIELD; invalid UTF-8 in a proto3 string does not even parse (MALFORMED).
const std::pair<std::string, const char*> kBadIds[] = {
    {std::string("a\x1f"
                 "b"),
     reason::kInvalidField},
    {std::string("a\0b", 3), reason::kInvalidField},
    {"a b", reason::kInvalidField},
    {"a\tb", reason::kInvalidField},
    {"가", reason::kInvalidField},
    {std::string(limits::kIdBytesMax + 1, 'x'), reason::kInvalidField},
    {"\xff", reason::kMalformed},
};

// Strings no free text may hold: control bytes (C0, DEL, C1), a right-to-left override and the
// Unicode maximum exceeded are INVALID_FIELD; invalid UTF-8 (a lone continuation byte, an
// overlong '/', a surrogate) is MALFORMED.
const std::pair<std::string, const char*> kBadTexts[] = {
    {std::string("power\x1f"
                 "x"),
     reason::kInvalidField},
    {std::string("a\0b", 3), reason::kInvalidField},
    {"line\nbreak", reason::kInvalidField},
    {"\x7f", reason::kInvalidField},
    {"\xc2\x85", reason::kInvalidField},
    {"\xe2\x80\xae"
     "evil",
     reason::kInvalidField},
    {"\xe2\x81\xa6"
     "isolate",
     reason::kInvalidField},
    {"\x80", reason::kMalformed},
    {"\xc0\xaf", reason::kMalformed},
    {"\xed\xa0\x80", reason::kMalformed},
};

TEST(FieldLimitsTest, TheGoodEventsOfThisTestAreAccepted) {
  EXPECT_EQ(DecideUsage(Usage()), "");
  EXPECT_EQ(DecideUsage(Outage()), "");
  EXPECT_EQ(DecideUsage(CorrectionEvent()), "");
  EXPECT_EQ(DecideRegistry(Institution()), "");
  EXPECT_EQ(DecideRegistry(Allocation()), "");
  EXPECT_EQ(DecideRegistry(Transfer()), "");
  EXPECT_EQ(DecideRegistry(RateCard()), "");
}

TEST(FieldLimitsTest, EveryIdFieldRefusesSeparatorsControlsAndLengthWithItsName) {
  const std::pair<const char*, std::function<v1::UsageEvent(const std::string&)>> usage_fields[] = {
      {"usage.allocation_id",
       [](const std::string& v) {
         auto e = Usage();
         e.mutable_usage()->set_allocation_id(v);
         return e;
       }},
      {"usage.node_id",
       [](const std::string& v) {
         auto e = Usage();
         e.mutable_usage()->set_node_id(v);
         return e;
       }},
      {"producer_id",
       [](const std::string& v) {
         auto e = Usage();
         e.set_producer_id(v);
         return e;
       }},
      {"outage.allocation_id",
       [](const std::string& v) {
         auto e = Outage();
         e.mutable_outage()->set_allocation_id(v);
         return e;
       }},
      {"correction.target_event_id",
       [](const std::string& v) {
         auto e = CorrectionEvent();
         e.mutable_correction()->set_target_event_id(v);
         return e;
       }},
  };
  for (const auto& [field, make] : usage_fields) {
    for (const auto& [bad, want] : kBadIds) {
      const v1::UsageEvent e = make(bad);
      const ledger::Candidate c =
          Decide(RawMessage{TopicNames().Usage("csp-a"), 0, 1, kT0 + kDay, e.SerializeAsString()},
                 {}, kT0 + kDay);
      EXPECT_EQ(c.reason_code, want) << field << " = '" << bad << "'";
      if (want == reason::kInvalidField) {
        EXPECT_NE(c.reason_detail.find(field), std::string::npos) << c.reason_detail;
      }
    }
  }
  const std::pair<const char*, std::function<v1::RegistryEvent(const std::string&)>>
      registry_fields[] = {
          {"institution.institution_id",
           [](const std::string& v) {
             auto r = Institution();
             r.mutable_institution()->set_institution_id(v);
             return r;
           }},
          {"allocation.allocation_id",
           [](const std::string& v) {
             auto r = Allocation();
             r.mutable_allocation()->set_allocation_id(v);
             return r;
           }},
          {"allocation.institution_id",
           [](const std::string& v) {
             auto r = Allocation();
             r.mutable_allocation()->set_institution_id(v);
             return r;
           }},
          {"allocation.csp_id",
           [](const std::string& v) {
             auto r = Allocation();
             r.mutable_allocation()->set_csp_id(v);
             return r;
           }},
          {"allocation.call_id",
           [](const std::string& v) {
             auto r = Allocation();
             r.mutable_allocation()->set_call_id(v);
             return r;
           }},
          {"allocation.agency_id",
           [](const std::string& v) {
             auto r = Allocation();
             r.mutable_allocation()->set_agency_id(v);
             return r;
           }},
          {"allocation.project_id",
           [](const std::string& v) {
             auto r = Allocation();
             r.mutable_allocation()->set_project_id(v);
             return r;
           }},
          {"allocation_amendment.transfer.new_allocation_id",
           [](const std::string& v) {
             auto r = Transfer();
             r.mutable_allocation_amendment()->mutable_transfer()->set_new_allocation_id(v);
             return r;
           }},
          {"allocation_amendment.transfer.to_csp_id",
           [](const std::string& v) {
             auto r = Transfer();
             r.mutable_allocation_amendment()->mutable_transfer()->set_to_csp_id(v);
             return r;
           }},
          {"allocation_amendment.transfer.to_institution_id",
           [](const std::string& v) {
             auto r = Transfer();
             r.mutable_allocation_amendment()->mutable_transfer()->set_to_institution_id(v);
             return r;
           }},
      };
  for (const auto& [field, make] : registry_fields) {
    for (const auto& [bad, want] : kBadIds) {
      EXPECT_EQ(DecideRegistry(make(bad)), want) << field << " = '" << bad << "'";
    }
  }
}

TEST(FieldLimitsTest, EveryFreeTextFieldRefusesControlsInvalidUtf8AndLength) {
  for (const auto& [bad, want] : kBadTexts) {
    auto outage = Outage();
    outage.mutable_outage()->set_cause(bad);
    EXPECT_EQ(DecideUsage(outage), want) << "cause '" << bad << "'";
    auto correction = CorrectionEvent();
    correction.mutable_correction()->set_reason(bad);
    EXPECT_EQ(DecideUsage(correction), want) << "reason '" << bad << "'";
    auto institution = Institution();
    institution.mutable_institution()->set_name(bad);
    EXPECT_EQ(DecideRegistry(institution), want) << "name '" << bad << "'";
  }
  auto outage = Outage();
  outage.mutable_outage()->set_cause(std::string(limits::kCauseBytesMax + 1, 'x'));
  EXPECT_EQ(DecideUsage(outage), reason::kInvalidField);
  outage.mutable_outage()->set_cause(std::string(limits::kCauseBytesMax, 'x'));
  EXPECT_EQ(DecideUsage(outage), "");
  auto institution = Institution();
  institution.mutable_institution()->set_name(std::string(limits::kNameBytesMax + 1, 'x'));
  EXPECT_EQ(DecideRegistry(institution), reason::kInvalidField);
  // Every valid UTF-8 form that is printable passes: 2, 3 and 4-byte sequences, emoji, Hangul.
  institution.mutable_institution()->set_name("Ünïversität 大學 한국 \xf0\x9f\x98\x80");
  EXPECT_EQ(DecideRegistry(institution), "");
}

TEST(FieldLimitsTest, TimesOutsideTheProgrammesCenturyAreRejectedWithTheirReason) {
  // The instants the hostile cases used: the last int64 millisecond, the year 1000, -1, 0.
  const int64_t year_1000_ms = -30'610'224'000'000;
  auto outage = Outage();
  outage.mutable_outage()->set_end_ms(kInt64Max);
  EXPECT_EQ(DecideUsage(outage), reason::kTimeOutOfRange);
  outage = Outage();
  outage.mutable_outage()->set_start_ms(year_1000_ms);
  outage.mutable_outage()->set_end_ms(year_1000_ms + 3'600'000);
  EXPECT_EQ(DecideUsage(outage), reason::kTimeOutOfRange);
  auto usage = Usage();
  usage.mutable_usage()->set_start_ms(-1);
  EXPECT_EQ(DecideUsage(usage), reason::kTimeOutOfRange);
  usage = Usage();
  usage.set_emitted_at_ms(kInt64Max);
  EXPECT_EQ(DecideUsage(usage), reason::kTimeOutOfRange);
  auto own = Usage();
  auto* o = own.mutable_own_use();
  o->set_program(v1::GOV_ADVANCED);
  o->set_gpu_model(v1::H200);
  o->set_gpu_count(1);
  o->set_start_ms(limits::kTimeMaxMs - 1000);
  o->set_end_ms(limits::kTimeMaxMs);
  EXPECT_EQ(DecideUsage(own), reason::kTimeOutOfRange);
  o->set_start_ms(limits::kTimeMinMs - 1);
  o->set_end_ms(limits::kTimeMinMs + 1000);
  EXPECT_EQ(DecideUsage(own), reason::kTimeOutOfRange);

  auto allocation = Allocation();
  allocation.mutable_allocation()->set_end_ms(kInt64Max);
  EXPECT_EQ(DecideRegistry(allocation), reason::kTimeOutOfRange);
  auto rate = RateCard();
  rate.mutable_rate_card()->set_effective_from_ms(std::numeric_limits<int64_t>::min());
  EXPECT_EQ(DecideRegistry(rate), reason::kTimeOutOfRange);
  v1::RegistryEvent amendment = Registry();
  amendment.mutable_allocation_amendment()->set_allocation_id("alloc-1");
  amendment.mutable_allocation_amendment()->set_effective_from_ms(kT0 + kDay);
  amendment.mutable_allocation_amendment()->set_new_end_ms(kInt64Max);
  EXPECT_EQ(DecideRegistry(amendment), reason::kTimeOutOfRange);
  amendment.mutable_allocation_amendment()->set_new_end_ms(kT0 + 100 * kDay);
  EXPECT_EQ(DecideRegistry(amendment), "");
  // An effective date of 0 means "from the beginning" and stays allowed.
  rate.mutable_rate_card()->set_effective_from_ms(0);
  EXPECT_EQ(DecideRegistry(rate), "");
}

TEST(FieldLimitsTest, CountsAndPricesOverTheirLimitsAreRejected) {
  const uint32_t huge = std::numeric_limits<uint32_t>::max();  // 4,294,967,295
  auto outage = Outage();
  outage.mutable_outage()->set_gpu_count(huge);
  EXPECT_EQ(DecideUsage(outage), reason::kInvalidField);
  auto usage = Usage();
  usage.mutable_usage()->set_gpu_count(limits::kGpuCountMax + 1);
  EXPECT_EQ(DecideUsage(usage), reason::kInvalidField);
  usage.mutable_usage()->set_gpu_count(limits::kGpuCountMax);
  EXPECT_EQ(DecideUsage(usage), "");
  usage.set_producer_seq(std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(DecideUsage(usage), reason::kInvalidField);

  auto allocation = Allocation();
  allocation.mutable_allocation()->set_gpu_count(huge);
  EXPECT_EQ(DecideRegistry(allocation), reason::kInvalidField);
  allocation = Allocation();
  allocation.mutable_allocation()->set_gpu_ms_cap(kInt64Max);
  EXPECT_EQ(DecideRegistry(allocation), reason::kInvalidField);
  auto rate = RateCard();
  rate.mutable_rate_card()->set_krw_per_gpu_hour(kInt64Max);
  EXPECT_EQ(DecideRegistry(rate), reason::kInvalidField);
  rate.mutable_rate_card()->set_krw_per_gpu_hour(limits::kKrwPerGpuHourMax);
  EXPECT_EQ(DecideRegistry(rate), "");
  v1::RegistryEvent pool = Registry();
  auto* p = pool.mutable_gpu_pool();
  p->set_csp_id("csp-a");
  p->set_program(v1::GOV_ADVANCED);
  p->set_gpu_model(v1::H200);
  p->set_gpu_count(huge);
  EXPECT_EQ(DecideRegistry(pool), reason::kInvalidField);
  p->set_gpu_count(0);  // retires the pool
  EXPECT_EQ(DecideRegistry(pool), "");
  v1::RegistryEvent resize = Registry();
  resize.mutable_allocation_amendment()->set_allocation_id("alloc-1");
  resize.mutable_allocation_amendment()->set_effective_from_ms(kT0 + kDay);
  resize.mutable_allocation_amendment()->set_new_gpu_count(huge);
  EXPECT_EQ(DecideRegistry(resize), reason::kInvalidField);
}

// Item 2: a producer's CreateTime decides nothing. The time of record is the broker's
// log-append time, or ingest's own clock when a message carries only a CreateTime or none.
TEST(FieldLimitsTest, TheTimeOfRecordIsNeverTheProducersClock) {
  const std::string payload = Usage().SerializeAsString();
  RawMessage m{TopicNames().Usage("csp-a"), 0, 1, kT0 + 40 * kDay, payload};
  m.kafka_timestamp_type = v1::KAFKA_TIMESTAMP_CREATE_TIME;
  EXPECT_EQ(TimeOfRecord(Decide(m, {}, kT0 + kDay)), kT0 + kDay);
  m.kafka_timestamp_ms = -1;
  EXPECT_EQ(TimeOfRecord(Decide(m, {}, kT0 + kDay)), kT0 + kDay);
  m.kafka_timestamp_type = v1::KAFKA_TIMESTAMP_NONE;
  EXPECT_EQ(TimeOfRecord(Decide(m, {}, kT0 + kDay)), kT0 + kDay);
  m.kafka_timestamp_type = v1::KAFKA_TIMESTAMP_LOG_APPEND_TIME;
  m.kafka_timestamp_ms = kT0 + 2 * kDay;
  const ledger::Candidate c = Decide(m, {}, kT0 + kDay);
  EXPECT_EQ(TimeOfRecord(c), kT0 + 2 * kDay);
  EXPECT_EQ(c.kafka_timestamp_type, v1::KAFKA_TIMESTAMP_LOG_APPEND_TIME);
  // Whatever a clock says, the time of record stays inside the bounded range.
  m.kafka_timestamp_ms = kInt64Max;
  EXPECT_EQ(TimeOfRecord(Decide(m, {}, kT0)), limits::kTimeMaxMs);
  m.kafka_timestamp_ms = std::numeric_limits<int64_t>::min();
  EXPECT_EQ(TimeOfRecord(Decide(m, {}, kT0)), 0);
}

}  // namespace
}  // namespace gpuledger::ingest
