#include "ingest/decide.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "base/period.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/reasons.h"
#include "ingest/topics.h"

namespace gpuledger::ingest {

namespace v1 = gpuledger::v1;

namespace {

constexpr uint32_t kSchemaVersion = 1;

struct Verdict {
  const char* code;
  std::string detail;
};
using MaybeVerdict = std::optional<Verdict>;

MaybeVerdict Missing(const char* field) {
  return Verdict{reason::kMissingField, absl::StrCat(field, " is required")};
}

MaybeVerdict Invalid(const char* field, std::string why) {
  return Verdict{reason::kInvalidField, absl::StrCat(field, ": ", why)};
}

MaybeVerdict CheckEventId(const std::string& id, const ValidationLimits& limits) {
  if (id.empty()) return Missing("event_id");
  if (id.size() > limits.max_event_id_bytes) {
    return Invalid("event_id", absl::StrCat("longer than ", limits.max_event_id_bytes, " bytes"));
  }
  for (char ch : id) {
    if (ch < 0x21 || ch > 0x7e)
      return Invalid("event_id", "must be printable ASCII without spaces");
  }
  return std::nullopt;
}

MaybeVerdict CheckInterval(int64_t start_ms, int64_t end_ms, const ValidationLimits& limits) {
  if (end_ms <= start_ms) {
    return Verdict{reason::kEmptyInterval,
                   absl::StrCat("end_ms ", end_ms, " is not after start_ms ", start_ms)};
  }
  // Computed without overflow: both are int64 and end > start.
  const uint64_t duration = static_cast<uint64_t>(end_ms) - static_cast<uint64_t>(start_ms);
  if (duration > static_cast<uint64_t>(limits.max_interval_ms)) {
    return Verdict{reason::kDurationTooLong,
                   absl::StrCat("interval of ", duration, " ms exceeds the limit of ",
                                limits.max_interval_ms, " ms")};
  }
  return std::nullopt;
}

MaybeVerdict CheckUsageInterval(const v1::UsageInterval& u, const ValidationLimits& limits) {
  if (u.allocation_id().empty()) return Missing("usage.allocation_id");
  if (u.gpu_model() == v1::GPU_MODEL_UNSPECIFIED) return Missing("usage.gpu_model");
  if (!v1::GpuModel_IsValid(u.gpu_model())) return Invalid("usage.gpu_model", "unknown model");
  if (u.gpu_count() == 0) return Invalid("usage.gpu_count", "must be at least 1");
  return CheckInterval(u.start_ms(), u.end_ms(), limits);
}

MaybeVerdict CheckPoolFields(v1::Program program, v1::GpuModel model, uint32_t gpu_count,
                             const char* what) {
  if (program == v1::PROGRAM_UNSPECIFIED) return Missing(what);
  if (!v1::Program_IsValid(program)) return Invalid(what, "unknown program");
  if (model == v1::GPU_MODEL_UNSPECIFIED) return Missing(what);
  if (!v1::GpuModel_IsValid(model)) return Invalid(what, "unknown GPU model");
  if (gpu_count == 0) return Invalid(what, "gpu_count must be at least 1");
  return std::nullopt;
}

MaybeVerdict CheckUsageBody(const v1::UsageEvent& e, const ValidationLimits& limits) {
  switch (e.body_case()) {
    case v1::UsageEvent::kUsage:
      return CheckUsageInterval(e.usage(), limits);
    case v1::UsageEvent::kOwnUse: {
      const auto& o = e.own_use();
      if (auto v = CheckPoolFields(o.program(), o.gpu_model(), o.gpu_count(), "own_use")) return v;
      return CheckInterval(o.start_ms(), o.end_ms(), limits);
    }
    case v1::UsageEvent::kOutage: {
      const auto& o = e.outage();
      if (auto v = CheckPoolFields(o.program(), o.gpu_model(), o.gpu_count(), "outage")) return v;
      return CheckInterval(o.start_ms(), o.end_ms(), limits);
    }
    case v1::UsageEvent::kCorrection: {
      const auto& c = e.correction();
      if (c.target_event_id().empty()) return Missing("correction.target_event_id");
      if (c.allocation_id().empty()) return Missing("correction.allocation_id");
      if (c.has_replacement() && c.replacement().allocation_id() != c.allocation_id()) {
        return Invalid("correction.replacement.allocation_id",
                       "must equal correction.allocation_id (the target's allocation)");
      }
      if (c.target_event_id() == e.event_id()) {
        return Invalid("correction.target_event_id", "an event cannot correct itself");
      }
      if (c.has_replacement()) return CheckUsageInterval(c.replacement(), limits);
      return std::nullopt;
    }
    case v1::UsageEvent::BODY_NOT_SET:
      break;
  }
  return Missing("body (one of usage, own_use, outage, correction)");
}

MaybeVerdict CheckUsage(const v1::UsageEvent& e, const std::string& topic_csp,
                        const ValidationLimits& limits) {
  if (e.schema_version() != kSchemaVersion) {
    return Verdict{
        reason::kUnknownSchemaVersion,
        absl::StrCat("schema_version ", e.schema_version(), ", this build reads ", kSchemaVersion)};
  }
  if (auto v = CheckEventId(e.event_id(), limits)) return v;
  if (e.csp_id().empty()) return Missing("csp_id");
  if (e.csp_id() != topic_csp) {
    return Verdict{
        reason::kCspTopicMismatch,
        absl::StrCat("csp_id '", e.csp_id(), "' arrived on the topic of '", topic_csp, "'")};
  }
  if (e.producer_id().empty()) return Missing("producer_id");
  if (e.producer_seq() == 0) return Invalid("producer_seq", "must start at 1");
  return CheckUsageBody(e, limits);
}

MaybeVerdict CheckRegistryBody(const v1::RegistryEvent& e) {
  switch (e.body_case()) {
    case v1::RegistryEvent::kInstitution: {
      const auto& i = e.institution();
      if (i.institution_id().empty()) return Missing("institution.institution_id");
      if (i.type() == v1::INSTITUTION_TYPE_UNSPECIFIED) return Missing("institution.type");
      if (!v1::InstitutionType_IsValid(i.type())) return Invalid("institution.type", "unknown");
      return std::nullopt;
    }
    case v1::RegistryEvent::kAllocation: {
      const auto& a = e.allocation();
      if (a.allocation_id().empty()) return Missing("allocation.allocation_id");
      if (a.institution_id().empty()) return Missing("allocation.institution_id");
      if (a.csp_id().empty()) return Missing("allocation.csp_id");
      if (auto v = CheckPoolFields(a.program(), a.gpu_model(), a.gpu_count(), "allocation")) {
        return v;
      }
      if (a.end_ms() <= a.start_ms()) {
        return Verdict{reason::kEmptyInterval, "allocation end_ms is not after start_ms"};
      }
      if (a.gpu_ms_cap() < 0) return Invalid("allocation.gpu_ms_cap", "must not be negative");
      return std::nullopt;
    }
    case v1::RegistryEvent::kAllocationAmendment: {
      const auto& a = e.allocation_amendment();
      if (a.allocation_id().empty()) return Missing("allocation_amendment.allocation_id");
      if (a.change_case() == v1::AllocationAmendment::CHANGE_NOT_SET) {
        return Missing("allocation_amendment change (new_end_ms, new_gpu_count or revoke)");
      }
      return std::nullopt;
    }
    case v1::RegistryEvent::kRateCard: {
      const auto& r = e.rate_card();
      if (auto v = CheckPoolFields(r.program(), r.gpu_model(), 1, "rate_card")) return v;
      if (r.krw_per_gpu_hour() <= 0) return Invalid("rate_card.krw_per_gpu_hour", "must be > 0");
      return std::nullopt;
    }
    case v1::RegistryEvent::kCopayPolicy: {
      const auto& p = e.copay_policy();
      if (p.institution_type() == v1::INSTITUTION_TYPE_UNSPECIFIED) {
        return Missing("copay_policy.institution_type");
      }
      if (!v1::InstitutionType_IsValid(p.institution_type())) {
        return Invalid("copay_policy.institution_type", "unknown");
      }
      if (p.copay_bp() > 10'000) return Invalid("copay_policy.copay_bp", "over 10,000 (100%)");
      return std::nullopt;
    }
    case v1::RegistryEvent::kCspContract: {
      const auto& c = e.csp_contract();
      if (c.csp_id().empty()) return Missing("csp_contract.csp_id");
      if (c.own_use_cap_bp() > 10'000) {
        return Invalid("csp_contract.own_use_cap_bp", "over 10,000 (100%)");
      }
      return std::nullopt;
    }
    case v1::RegistryEvent::kGpuPool: {
      const auto& p = e.gpu_pool();
      if (p.csp_id().empty()) return Missing("gpu_pool.csp_id");
      // gpu_count 0 retires a pool, so it is allowed here.
      return CheckPoolFields(p.program(), p.gpu_model(), 1, "gpu_pool");
    }
    case v1::RegistryEvent::kPeriodClose: {
      if (e.period_close().period().empty()) return Missing("period_close.period");
      if (!base::ParsePeriod(e.period_close().period()).ok()) {
        return Invalid("period_close.period", "must be YYYY-MM");
      }
      return std::nullopt;
    }
    case v1::RegistryEvent::BODY_NOT_SET:
      break;
  }
  return Missing(
      "body (one of institution, allocation, allocation_amendment, rate_card, copay_policy, "
      "csp_contract, gpu_pool, period_close)");
}

void Reject(ledger::Candidate* c, const Verdict& v) {
  c->reason_code = v.code;
  c->reason_detail = v.detail;
}

// Decodes `payload` into `msg`; on success sets the canonical bytes.
template <typename Message>
bool DecodeInto(const std::string& payload, Message* msg, ledger::Candidate* c) {
  if (!msg->ParseFromString(payload)) return false;
  std::string canonical;
  google::protobuf::io::StringOutputStream raw(&canonical);
  {
    google::protobuf::io::CodedOutputStream out(&raw);
    out.SetSerializationDeterministic(true);
    msg->SerializeToCodedStream(&out);
  }
  c->canonical = std::move(canonical);
  return true;
}

}  // namespace

ledger::Candidate Decide(const RawMessage& m, const ValidationLimits& limits,
                         int64_t recorded_at_ms) {
  ledger::Candidate c;
  c.payload = m.payload;
  c.topic = m.topic;
  c.partition = m.partition;
  c.offset = m.offset;
  c.kafka_timestamp_ms = m.kafka_timestamp_ms;
  c.recorded_at_ms = recorded_at_ms;

  if (m.topic == limits.topics.Registry()) {
    c.source = v1::SOURCE_REGISTRY;
    v1::RegistryEvent e;
    if (!DecodeInto(m.payload, &e, &c)) {
      Reject(&c, {reason::kMalformed, "not a gpuledger.v1.RegistryEvent"});
      return c;
    }
    MaybeVerdict v;
    if (e.schema_version() != kSchemaVersion) {
      v = Verdict{reason::kUnknownSchemaVersion,
                  absl::StrCat("schema_version ", e.schema_version(), ", this build reads ",
                               kSchemaVersion)};
    } else if (!(v = CheckEventId(e.event_id(), limits))) {
      c.source_id = kOperatorSourceId;
      c.event_id = e.event_id();
      v = CheckRegistryBody(e);
    }
    if (v) Reject(&c, *v);
    return c;
  }

  const std::optional<std::string> csp = limits.topics.CspOfUsage(m.topic);
  if (!csp) {
    Reject(&c, {reason::kUnknownTopic, absl::StrCat("topic '", m.topic, "'")});
    return c;
  }
  c.source = v1::SOURCE_USAGE;
  v1::UsageEvent e;
  if (!DecodeInto(m.payload, &e, &c)) {
    Reject(&c, {reason::kMalformed, "not a gpuledger.v1.UsageEvent"});
    return c;
  }
  // The identity is the CSP of the topic, never the claimed csp_id: one CSP cannot occupy
  // another's event-id space.
  if (!CheckEventId(e.event_id(), limits)) {
    c.source_id = *csp;
    c.event_id = e.event_id();
    c.producer_id = e.producer_id();
    c.producer_seq = e.producer_seq();
  }
  if (MaybeVerdict v = CheckUsage(e, *csp, limits)) Reject(&c, *v);
  return c;
}

}  // namespace gpuledger::ingest
