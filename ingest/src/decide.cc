#include "ingest/decide.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/unknown_field_set.h>

#include <algorithm>
#include <optional>
#include <set>
#include <string_view>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/period.h"
#include "base/registration_number.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/gateway.h"
#include "ingest/limits.h"
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

bool PrintableAsciiWithoutSpace(std::string_view s) {
  for (char ch : s) {
    if (ch < 0x21 || ch > 0x7e) return false;
  }
  return true;
}

// An identifier: 1 to `max_bytes` bytes of printable ASCII without spaces (limits.h).
MaybeVerdict CheckId(const char* field, const std::string& id,
                     size_t max_bytes = limits::kIdBytesMax) {
  if (id.empty()) return Missing(field);
  if (id.size() > max_bytes)
    return Invalid(field, absl::StrCat("longer than ", max_bytes, " bytes"));
  if (!PrintableAsciiWithoutSpace(id)) {
    return Invalid(field, "must be printable ASCII without spaces (0x21 to 0x7e)");
  }
  return std::nullopt;
}

// An identifier that may be absent.
MaybeVerdict CheckOptionalId(const char* field, const std::string& id) {
  return id.empty() ? std::nullopt : CheckId(field, id);
}

// True for a legal CSP id: it names a Kafka topic and is not the registry's identity.
bool IsCspId(std::string_view id) {
  if (id.empty() || id.size() > limits::kCspIdBytesMax || id == kOperatorSourceId) return false;
  for (char ch : id) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

MaybeVerdict CheckCspId(const char* field, const std::string& id) {
  if (id.empty()) return Missing(field);
  if (!IsCspId(id)) {
    return Invalid(field, absl::StrCat("must be 1 to ", limits::kCspIdBytesMax,
                                       " ASCII letters, digits, '.', '_' or '-', and not '",
                                       kOperatorSourceId, "'"));
  }
  return std::nullopt;
}

// Decodes one UTF-8 sequence at `s[i]`; returns its code point and advances `i`, or -1 for an
// ill-formed sequence (overlong forms, surrogates and values above U+10FFFF included).
int32_t NextCodePoint(std::string_view s, size_t* i) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t lead = b(*i);
  int len = 0;
  int32_t cp = 0;
  if (lead < 0x80) {
    ++*i;
    return lead;
  } else if (lead >= 0xc2 && lead <= 0xdf) {
    len = 2, cp = lead & 0x1f;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    len = 3, cp = lead & 0x0f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    len = 4, cp = lead & 0x07;
  } else {
    return -1;
  }
  if (*i + len > s.size()) return -1;
  for (int k = 1; k < len; ++k) {
    if ((b(*i + k) & 0xc0) != 0x80) return -1;
    cp = (cp << 6) | (b(*i + k) & 0x3f);
  }
  static constexpr int32_t kMinOfLength[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMinOfLength[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return -1;
  *i += len;
  return cp;
}

// Free text shown to people: valid UTF-8 without control or bidirectional-control characters,
// at most `max_bytes` bytes (limits.h). May be empty.
MaybeVerdict CheckText(const char* field, const std::string& text, size_t max_bytes) {
  if (text.size() > max_bytes) {
    return Invalid(field, absl::StrCat("longer than ", max_bytes, " bytes"));
  }
  for (size_t i = 0; i < text.size();) {
    const size_t at = i;
    const int32_t cp = NextCodePoint(text, &i);
    if (cp < 0) return Invalid(field, absl::StrCat("not valid UTF-8 at byte ", at));
    const bool control = cp < 0x20 || (cp >= 0x7f && cp <= 0x9f);
    const bool bidi = (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
    if (control || bidi) {
      return Invalid(field, absl::StrCat("control character U+", absl::Hex(cp, absl::kZeroPad4),
                                         " at byte ", at, " (text must be printable)"));
    }
  }
  return std::nullopt;
}

// An instant: inside [kTimeMinMs, kTimeMaxMs).
MaybeVerdict CheckTime(const char* field, int64_t ms) {
  if (ms >= limits::kTimeMinMs && ms < limits::kTimeMaxMs) return std::nullopt;
  return Verdict{reason::kTimeOutOfRange,
                 absl::StrCat(field, " ", ms, " is outside [", limits::kTimeMinMs, ", ",
                              limits::kTimeMaxMs, ") (2020-01-01 to 2100-01-01 UTC)")};
}

// An instant that may be left at 0 ("not given": informational times, and effective dates that
// apply from the beginning).
MaybeVerdict CheckOptionalTime(const char* field, int64_t ms) {
  return ms == 0 ? std::nullopt : CheckTime(field, ms);
}

// A GPU count: 1 to kGpuCountMax (0 too where `zero_ok`).
MaybeVerdict CheckGpuCount(const char* field, uint32_t n, bool zero_ok = false) {
  if (n == 0 && !zero_ok) return Invalid(field, "must be at least 1");
  if (n > limits::kGpuCountMax) {
    return Invalid(field, absl::StrCat(n, " is over the limit of ", limits::kGpuCountMax));
  }
  return std::nullopt;
}

// An institution type named in a policy: set and known.
MaybeVerdict CheckType(const char* field, v1::InstitutionType type) {
  if (type == v1::INSTITUTION_TYPE_UNSPECIFIED) return Missing(field);
  if (!v1::InstitutionType_IsValid(type)) return Invalid(field, "unknown");
  return std::nullopt;
}

// A programme policy: a programme, known types each named at most once per list, bounds within
// 0..100% with min <= max, server sizes for every model at most once, and a server limit only
// with server sizes.
MaybeVerdict CheckProgrammePolicy(const v1::ProgrammePolicy& p) {
  if (p.program() == v1::PROGRAM_UNSPECIFIED) return Missing("programme_policy.program");
  if (!v1::Program_IsValid(p.program())) return Invalid("programme_policy.program", "unknown");
  if (auto v = CheckOptionalTime("programme_policy.effective_from_ms", p.effective_from_ms())) {
    return v;
  }
  std::set<int> seen;
  for (int t : p.eligible_types()) {
    if (auto v =
            CheckType("programme_policy.eligible_types", static_cast<v1::InstitutionType>(t))) {
      return v;
    }
    if (!seen.insert(t).second) {
      return Invalid("programme_policy.eligible_types", "a type is named twice");
    }
  }
  if (p.max_servers_per_institution() > limits::kGpuCountMax) {
    return Invalid("programme_policy.max_servers_per_institution",
                   absl::StrCat("over the limit of ", limits::kGpuCountMax));
  }
  seen.clear();
  for (const auto& s : p.server_sizes()) {
    if (s.gpu_model() == v1::GPU_MODEL_UNSPECIFIED) {
      return Missing("programme_policy.server_sizes.gpu_model");
    }
    if (!v1::GpuModel_IsValid(s.gpu_model())) {
      return Invalid("programme_policy.server_sizes.gpu_model", "unknown");
    }
    if (!seen.insert(s.gpu_model()).second) {
      return Invalid("programme_policy.server_sizes", "a GPU model is named twice");
    }
    if (s.gpus_per_server() == 0 || s.gpus_per_server() > limits::kGpusPerServerMax) {
      return Invalid("programme_policy.server_sizes.gpus_per_server",
                     absl::StrCat("must be 1 to ", limits::kGpusPerServerMax));
    }
  }
  if (p.max_servers_per_institution() > 0 && p.server_sizes().empty()) {
    return Missing("programme_policy.server_sizes (a server limit needs the GPUs per server)");
  }
  if (p.max_window_ms() < 0 || p.max_window_ms() > limits::kMaxWindowMsMax) {
    return Invalid("programme_policy.max_window_ms",
                   absl::StrCat("must be 0 (no limit) to ", limits::kMaxWindowMsMax, " ms"));
  }
  seen.clear();
  for (const auto& b : p.copay_bounds()) {
    if (auto v =
            CheckType("programme_policy.copay_bounds.institution_type", b.institution_type())) {
      return v;
    }
    if (!seen.insert(b.institution_type()).second) {
      return Invalid("programme_policy.copay_bounds", "a type is named twice");
    }
    if (b.max_copay_bp() > 10'000) {
      return Invalid("programme_policy.copay_bounds.max_copay_bp", "over 10,000 (100%)");
    }
    if (b.min_copay_bp() > b.max_copay_bp()) {
      return Invalid("programme_policy.copay_bounds.min_copay_bp", "above max_copay_bp");
    }
  }
  seen.clear();
  for (const auto& r : p.over_cap_rules()) {
    if (auto v =
            CheckType("programme_policy.over_cap_rules.institution_type", r.institution_type())) {
      return v;
    }
    if (!seen.insert(r.institution_type()).second) {
      return Invalid("programme_policy.over_cap_rules", "a type is named twice");
    }
    if (r.action() == v1::OVER_CAP_ACTION_UNSPECIFIED) {
      return Missing("programme_policy.over_cap_rules.action");
    }
    if (!v1::OverCapAction_IsValid(r.action())) {
      return Invalid("programme_policy.over_cap_rules.action", "unknown");
    }
    if (r.copay_bp() > 10'000) {
      return Invalid("programme_policy.over_cap_rules.copay_bp", "over 10,000 (100%)");
    }
    if (r.action() != v1::OVER_CAP_BILL_AT && r.copay_bp() != 0) {
      return Invalid("programme_policy.over_cap_rules.copay_bp", "only OVER_CAP_BILL_AT takes one");
    }
  }
  return std::nullopt;
}

MaybeVerdict CheckEventId(const std::string& id, const ValidationLimits& limits) {
  return CheckId("event_id", id, std::min(limits.max_event_id_bytes, limits::kIdBytesMax));
}

MaybeVerdict CheckInterval(int64_t start_ms, int64_t end_ms, const ValidationLimits& limits) {
  if (auto v = CheckTime("start_ms", start_ms)) return v;
  if (auto v = CheckTime("end_ms", end_ms)) return v;
  if (end_ms <= start_ms) {
    return Verdict{reason::kEmptyInterval,
                   absl::StrCat("end_ms ", end_ms, " is not after start_ms ", start_ms)};
  }
  const int64_t duration = end_ms - start_ms;  // both in range: no overflow
  if (duration > limits.max_interval_ms) {
    return Verdict{reason::kDurationTooLong,
                   absl::StrCat("interval of ", duration, " ms exceeds the limit of ",
                                limits.max_interval_ms, " ms")};
  }
  return std::nullopt;
}

MaybeVerdict CheckUsageInterval(const v1::UsageInterval& u, const ValidationLimits& limits) {
  if (auto v = CheckId("usage.allocation_id", u.allocation_id())) return v;
  if (u.gpu_model() == v1::GPU_MODEL_UNSPECIFIED) return Missing("usage.gpu_model");
  if (!v1::GpuModel_IsValid(u.gpu_model())) return Invalid("usage.gpu_model", "unknown model");
  if (auto v = CheckGpuCount("usage.gpu_count", u.gpu_count())) return v;
  if (auto v = CheckOptionalId("usage.node_id", u.node_id())) return v;
  return CheckInterval(u.start_ms(), u.end_ms(), limits);
}

MaybeVerdict CheckPoolFields(v1::Program program, v1::GpuModel model, uint32_t gpu_count,
                             const char* what, bool zero_ok = false) {
  if (program == v1::PROGRAM_UNSPECIFIED) return Missing(what);
  if (!v1::Program_IsValid(program)) return Invalid(what, "unknown program");
  if (model == v1::GPU_MODEL_UNSPECIFIED) return Missing(what);
  if (!v1::GpuModel_IsValid(model)) return Invalid(what, "unknown GPU model");
  return CheckGpuCount(what, gpu_count, zero_ok);
}

MaybeVerdict CheckUsageBody(const v1::UsageEvent& e, const ValidationLimits& limits) {
  switch (e.body_case()) {
    case v1::UsageEvent::kUsage:
      return CheckUsageInterval(e.usage(), limits);
    case v1::UsageEvent::kOwnUse: {
      const auto& o = e.own_use();
      if (auto v = CheckPoolFields(o.program(), o.gpu_model(), o.gpu_count(), "own_use")) return v;
      if (auto v = CheckOptionalId("own_use.node_id", o.node_id())) return v;
      return CheckInterval(o.start_ms(), o.end_ms(), limits);
    }
    case v1::UsageEvent::kOutage: {
      const auto& o = e.outage();
      if (auto v = CheckPoolFields(o.program(), o.gpu_model(), o.gpu_count(), "outage")) return v;
      if (auto v = CheckOptionalId("outage.allocation_id", o.allocation_id())) return v;
      if (auto v = CheckText("outage.cause", o.cause(), limits::kCauseBytesMax)) return v;
      if (!v1::OutageKind_IsValid(o.kind())) {
        return Invalid("outage.kind", "not OUTAGE_PLANNED or OUTAGE_UNPLANNED");
      }
      return CheckInterval(o.start_ms(), o.end_ms(), limits);
    }
    case v1::UsageEvent::kCorrection: {
      const auto& c = e.correction();
      if (auto v = CheckId("correction.target_event_id", c.target_event_id())) return v;
      if (auto v = CheckId("correction.allocation_id", c.allocation_id())) return v;
      if (auto v = CheckText("correction.reason", c.reason(), limits::kReasonBytesMax)) return v;
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
    case v1::UsageEvent::kOutageWithdrawal: {
      const auto& w = e.outage_withdrawal();
      if (auto v = CheckId("outage_withdrawal.target_event_id", w.target_event_id())) return v;
      if (auto v = CheckOptionalId("outage_withdrawal.allocation_id", w.allocation_id())) return v;
      if (auto v = CheckPoolFields(w.program(), w.gpu_model(), 1, "outage_withdrawal")) return v;
      if (auto v = CheckText("outage_withdrawal.reason", w.reason(), limits::kReasonBytesMax)) {
        return v;
      }
      if (w.target_event_id() == e.event_id()) {
        return Invalid("outage_withdrawal.target_event_id", "an event cannot withdraw itself");
      }
      return std::nullopt;
    }
    case v1::UsageEvent::kCloseMarker: {
      auto period = base::ParsePeriod(e.close_marker().period());
      if (!period.ok()) return Invalid("close_marker.period", "must be a month, YYYY-MM");
      return std::nullopt;
    }
    case v1::UsageEvent::BODY_NOT_SET:
      break;
  }
  return Missing(
      "body (one of usage, own_use, outage, correction, outage_withdrawal, close_marker)");
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
    // Printed with its bytes escaped: it is outside data of any length.
    return Verdict{reason::kCspTopicMismatch,
                   absl::StrCat("csp_id '", absl::CHexEscape(e.csp_id().substr(0, 80)),
                                "' arrived on the topic of '", topic_csp, "'")};
  }
  if (auto v = CheckId("producer_id", e.producer_id())) return v;
  // A close marker is the operator's, outside every metering sequence: producer_seq 0.
  if (e.producer_seq() == 0 && !e.has_close_marker()) {
    return Invalid("producer_seq", "must start at 1");
  }
  if (e.producer_seq() > limits::kProducerSeqMax) {
    return Invalid("producer_seq", absl::StrCat("over the limit of ", limits::kProducerSeqMax));
  }
  if (auto v = CheckOptionalTime("emitted_at_ms", e.emitted_at_ms())) return v;
  return CheckUsageBody(e, limits);
}

// The usage offsets of a close: each a partition of a usage topic (a CSP's), named once, at an
// offset from 0. Ingest waits for them: a partition it never reads would hold the close forever.
MaybeVerdict CheckCloseOffsets(const v1::PeriodClose& close, const TopicNames& topics) {
  if (static_cast<size_t>(close.usage_offsets_size()) > limits::kCloseUsageOffsetsMax) {
    return Invalid("period_close.usage_offsets",
                   absl::StrCat("more than ", limits::kCloseUsageOffsetsMax, " partitions"));
  }
  std::set<std::pair<std::string, int32_t>> seen;
  for (const auto& o : close.usage_offsets()) {
    const std::optional<std::string> csp = topics.CspOfUsage(o.topic());
    if (!csp || !IsCspId(*csp)) {
      return Invalid("period_close.usage_offsets.topic",
                     absl::StrCat("'", absl::CHexEscape(o.topic().substr(0, 200)),
                                  "' is not a usage topic (", topics.UsagePrefix(), "<csp>)"));
    }
    if (o.partition() < 0) return Invalid("period_close.usage_offsets.partition", "negative");
    if (o.offset() < 0) return Invalid("period_close.usage_offsets.offset", "negative");
    if (!seen.insert({o.topic(), o.partition()}).second) {
      return Invalid("period_close.usage_offsets",
                     absl::StrCat(o.topic(), "[", o.partition(), "] named twice"));
    }
  }
  return std::nullopt;
}

// A party of invoices: an id, a legal name, a registration number whose check digit is right,
// printable text of bounded length elsewhere.
MaybeVerdict CheckParty(const v1::Party& p) {
  if (auto v = CheckId("party.party_id", p.party_id())) return v;
  if (p.legal_name().empty()) return Missing("party.legal_name");
  if (auto v = CheckText("party.legal_name", p.legal_name(), limits::kNameBytesMax)) return v;
  if (p.registration_number().empty()) return Missing("party.registration_number");
  if (!base::ParseRegistrationNumber(p.registration_number())) {
    return Invalid("party.registration_number",
                   absl::StrCat("'", absl::CHexEscape(p.registration_number().substr(0, 40)),
                                "' is not a business registration number: ten digits, written "
                                "123-45-67890 or 1234567890, the last the check digit of the "
                                "first nine"));
  }
  const std::pair<const char*, const std::string*> texts[] = {
      {"party.representative", &p.representative()},
      {"party.address", &p.address()},
      {"party.business_type", &p.business_type()},
      {"party.business_item", &p.business_item()},
      {"party.billing_contact.name", &p.billing_contact().name()},
      {"party.billing_contact.department", &p.billing_contact().department()},
      {"party.billing_contact.email", &p.billing_contact().email()},
      {"party.billing_contact.phone", &p.billing_contact().phone()},
  };
  for (const auto& [field, text] : texts) {
    if (auto v = CheckText(field, *text, limits::kNameBytesMax)) return v;
  }
  if (!v1::TaxType_IsValid(p.tax_type())) {
    return Invalid("party.tax_type", "not TAX_TAXABLE, TAX_ZERO_RATED or TAX_EXEMPT");
  }
  return CheckOptionalTime("party.effective_from_ms", p.effective_from_ms());
}

MaybeVerdict CheckBillingTerms(const v1::BillingTerms& t) {
  if (auto v = CheckId("billing_terms.operator_party_id", t.operator_party_id())) return v;
  std::set<int> programs;
  for (const auto& r : t.issuers()) {
    if (r.program() == v1::PROGRAM_UNSPECIFIED) return Missing("billing_terms.issuers.program");
    if (!v1::Program_IsValid(r.program()))
      return Invalid("billing_terms.issuers.program", "unknown");
    if (!v1::InvoiceIssuer_IsValid(r.issuer())) {
      return Invalid("billing_terms.issuers.issuer", "not ISSUER_OPERATOR or ISSUER_CSP");
    }
    if (!programs.insert(r.program()).second) {
      return Invalid("billing_terms.issuers",
                     absl::StrCat(v1::Program_Name(r.program()), " named twice"));
    }
  }
  if (t.vat_bp() == 0) return Missing("billing_terms.vat_bp");
  if (t.vat_bp() > 10'000) return Invalid("billing_terms.vat_bp", "over 10,000 (100%)");
  if (!v1::VatRounding_IsValid(t.vat_rounding())) {
    return Invalid("billing_terms.vat_rounding",
                   "not VAT_ROUND_HALF_AWAY_FROM_ZERO or VAT_ROUND_TOWARD_ZERO");
  }
  if (t.payment_due_days() > 365) {
    return Invalid("billing_terms.payment_due_days", "over 365 days");
  }
  if (auto v = CheckText("billing_terms.payment_instructions", t.payment_instructions(),
                         limits::kReasonBytesMax)) {
    return v;
  }
  return CheckOptionalTime("billing_terms.effective_from_ms", t.effective_from_ms());
}

// Thresholds in basis points: each 1 to 10,000, strictly ascending, at most 10.
MaybeVerdict CheckThresholds(const char* field,
                             const google::protobuf::RepeatedField<uint32_t>& thresholds) {
  if (thresholds.size() > 10) return Invalid(field, "at most 10 thresholds");
  uint32_t last = 0;
  for (uint32_t t : thresholds) {
    if (t == 0 || t > 10'000) return Invalid(field, "each must be 1 to 10,000 basis points");
    if (t <= last) return Invalid(field, "must be strictly ascending");
    last = t;
  }
  return std::nullopt;
}

MaybeVerdict CheckBudget(const v1::Budget& b) {
  if (b.program() == v1::PROGRAM_UNSPECIFIED) return Missing("budget.program");
  if (!v1::Program_IsValid(b.program())) return Invalid("budget.program", "unknown");
  if (b.fiscal_year() == 0) return Missing("budget.fiscal_year");
  if (b.fiscal_year() < static_cast<uint32_t>(base::kFirstPeriod.year) ||
      b.fiscal_year() > static_cast<uint32_t>(base::kLastPeriod.year)) {
    return Invalid("budget.fiscal_year",
                   absl::StrCat("must be a year from ", base::kFirstPeriod.year, " to ",
                                base::kLastPeriod.year));
  }
  if (auto v = CheckOptionalId("budget.call_id", b.call_id())) return v;
  if (b.amount_krw() == 0) return Missing("budget.amount_krw");
  if (b.amount_krw() < 0) return Invalid("budget.amount_krw", "must be above 0 won");
  if (auto v = CheckThresholds("budget.alert_thresholds_bp", b.alert_thresholds_bp())) return v;
  if (auto v = CheckText("budget.note", b.note(), limits::kBudgetNoteBytesMax)) return v;
  return CheckOptionalTime("budget.effective_from_ms", b.effective_from_ms());
}

MaybeVerdict CheckAlertSettings(const v1::AlertSettings& a) {
  if (auto v = CheckThresholds("alert_settings.allocation_balance_thresholds_bp",
                               a.allocation_balance_thresholds_bp())) {
    return v;
  }
  if (a.csp_rejection_rate_bp() > 10'000) {
    return Invalid("alert_settings.csp_rejection_rate_bp", "must be 0 (no alert) to 10,000");
  }
  if (a.csp_rejection_min_events() > 1'000'000'000) {
    return Invalid("alert_settings.csp_rejection_min_events", "at most 1,000,000,000");
  }
  return CheckOptionalTime("alert_settings.effective_from_ms", a.effective_from_ms());
}

MaybeVerdict CheckRegistryBody(const v1::RegistryEvent& e) {
  switch (e.body_case()) {
    case v1::RegistryEvent::kInstitution: {
      const auto& i = e.institution();
      if (auto v = CheckId("institution.institution_id", i.institution_id())) return v;
      if (auto v = CheckText("institution.name", i.name(), limits::kNameBytesMax)) return v;
      if (i.type() == v1::INSTITUTION_TYPE_UNSPECIFIED) return Missing("institution.type");
      if (!v1::InstitutionType_IsValid(i.type())) return Invalid("institution.type", "unknown");
      return CheckOptionalTime("institution.effective_from_ms", i.effective_from_ms());
    }
    case v1::RegistryEvent::kAllocation: {
      const auto& a = e.allocation();
      if (auto v = CheckId("allocation.allocation_id", a.allocation_id())) return v;
      if (auto v = CheckId("allocation.institution_id", a.institution_id())) return v;
      if (auto v = CheckCspId("allocation.csp_id", a.csp_id())) return v;
      if (auto v = CheckPoolFields(a.program(), a.gpu_model(), a.gpu_count(), "allocation")) {
        return v;
      }
      if (auto v = CheckTime("allocation.start_ms", a.start_ms())) return v;
      if (auto v = CheckTime("allocation.end_ms", a.end_ms())) return v;
      if (a.end_ms() <= a.start_ms()) {
        return Verdict{reason::kEmptyInterval, "allocation end_ms is not after start_ms"};
      }
      if (a.gpu_ms_cap() < 0) return Invalid("allocation.gpu_ms_cap", "must not be negative");
      if (a.gpu_ms_cap() > limits::kGpuMsCapMax) {
        return Invalid("allocation.gpu_ms_cap",
                       absl::StrCat("over the limit of ", limits::kGpuMsCapMax, " GPU-ms"));
      }
      if (auto v = CheckOptionalId("allocation.call_id", a.call_id())) return v;
      if (auto v = CheckOptionalId("allocation.agency_id", a.agency_id())) return v;
      if (auto v = CheckOptionalId("allocation.project_id", a.project_id())) return v;
      return std::nullopt;
    }
    case v1::RegistryEvent::kAllocationAmendment: {
      const auto& a = e.allocation_amendment();
      if (auto v = CheckId("allocation_amendment.allocation_id", a.allocation_id())) return v;
      if (auto v = CheckTime("allocation_amendment.effective_from_ms", a.effective_from_ms())) {
        return v;
      }
      switch (a.change_case()) {
        case v1::AllocationAmendment::kNewEndMs:
          return CheckTime("allocation_amendment.new_end_ms", a.new_end_ms());
        case v1::AllocationAmendment::kNewGpuCount:
          return CheckGpuCount("allocation_amendment.new_gpu_count", a.new_gpu_count());
        case v1::AllocationAmendment::kRevoke:
          return std::nullopt;
        case v1::AllocationAmendment::kTransfer: {
          const auto& t = a.transfer();
          if (auto v = CheckId("allocation_amendment.transfer.new_allocation_id",
                               t.new_allocation_id())) {
            return v;
          }
          if (!t.to_csp_id().empty()) {
            if (auto v = CheckCspId("allocation_amendment.transfer.to_csp_id", t.to_csp_id())) {
              return v;
            }
          }
          if (auto v = CheckOptionalId("allocation_amendment.transfer.to_institution_id",
                                       t.to_institution_id())) {
            return v;
          }
          if (t.to_csp_id().empty() && t.to_institution_id().empty()) {
            return Missing("allocation_amendment.transfer.to_csp_id or to_institution_id");
          }
          if (t.new_allocation_id() == a.allocation_id()) {
            return Invalid("allocation_amendment.transfer.new_allocation_id",
                           "must differ from the allocation transferred");
          }
          return std::nullopt;
        }
        case v1::AllocationAmendment::CHANGE_NOT_SET:
          break;
      }
      return Missing("allocation_amendment change (new_end_ms, new_gpu_count, revoke or transfer)");
    }
    case v1::RegistryEvent::kRateCard: {
      const auto& r = e.rate_card();
      if (auto v = CheckPoolFields(r.program(), r.gpu_model(), 1, "rate_card")) return v;
      if (r.krw_per_gpu_hour() <= 0) return Invalid("rate_card.krw_per_gpu_hour", "must be > 0");
      if (r.krw_per_gpu_hour() > limits::kKrwPerGpuHourMax) {
        return Invalid("rate_card.krw_per_gpu_hour",
                       absl::StrCat("over the limit of ", limits::kKrwPerGpuHourMax, " won"));
      }
      return CheckOptionalTime("rate_card.effective_from_ms", r.effective_from_ms());
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
      return CheckOptionalTime("copay_policy.effective_from_ms", p.effective_from_ms());
    }
    case v1::RegistryEvent::kCspContract: {
      const auto& c = e.csp_contract();
      if (auto v = CheckCspId("csp_contract.csp_id", c.csp_id())) return v;
      if (c.own_use_cap_bp() > 10'000) {
        return Invalid("csp_contract.own_use_cap_bp", "over 10,000 (100%)");
      }
      if (!v1::OwnUseExcess_IsValid(c.own_use_excess())) {
        return Invalid("csp_contract.own_use_excess",
                       "not OWN_USE_EXCESS_REPORTED or OWN_USE_EXCESS_NETTED");
      }
      return CheckOptionalTime("csp_contract.effective_from_ms", c.effective_from_ms());
    }
    case v1::RegistryEvent::kGpuPool: {
      const auto& p = e.gpu_pool();
      if (auto v = CheckCspId("gpu_pool.csp_id", p.csp_id())) return v;
      // gpu_count 0 retires a pool, so it is allowed here.
      if (auto v = CheckPoolFields(p.program(), p.gpu_model(), p.gpu_count(), "gpu_pool", true)) {
        return v;
      }
      if (!v1::LeasePricing_IsValid(p.lease_pricing())) {
        return Invalid("gpu_pool.lease_pricing",
                       "not LEASE_PRICING_DELIVERED or LEASE_PRICING_RESERVED");
      }
      if (p.lease_pricing() == v1::LEASE_PRICING_RESERVED && p.program() != v1::LEASE_HPC &&
          p.program() != v1::LEASE_RESEARCH) {
        return Invalid("gpu_pool.lease_pricing",
                       "reserved-capacity pricing is for leased pools (LEASE_HPC, "
                       "LEASE_RESEARCH); the state owns GOV_ADVANCED GPUs");
      }
      return CheckOptionalTime("gpu_pool.effective_from_ms", p.effective_from_ms());
    }
    case v1::RegistryEvent::kProgrammePolicy:
      return CheckProgrammePolicy(e.programme_policy());
    case v1::RegistryEvent::kOverCapRelease: {
      const auto& r = e.over_cap_release();
      if (auto v = CheckId("over_cap_release.allocation_id", r.allocation_id())) return v;
      if (r.copay_bp() > 10'000) return Invalid("over_cap_release.copay_bp", "over 10,000 (100%)");
      return std::nullopt;
    }
    case v1::RegistryEvent::kValidationSettings: {
      const auto& v = e.validation_settings();
      constexpr int64_t kDayMs = 86'400'000;
      auto within = [](const char* field, int64_t ms, int64_t max_ms) -> MaybeVerdict {
        if (ms < 0 || ms > max_ms) {
          return Invalid(field, absl::StrCat("must be 0 (unchanged) or 1 to ", max_ms, " ms"));
        }
        return std::nullopt;
      };
      if (auto x =
              within("validation_settings.max_interval_ms", v.max_interval_ms(), 366 * kDayMs)) {
        return x;
      }
      if (auto x = within("validation_settings.max_future_skew_ms", v.max_future_skew_ms(),
                          7 * kDayMs)) {
        return x;
      }
      if (auto x = within("validation_settings.park_grace_ms", v.park_grace_ms(), 30 * kDayMs)) {
        return x;
      }
      if (v.max_event_id_bytes() > limits::kIdBytesMax) {
        return Invalid("validation_settings.max_event_id_bytes",
                       absl::StrCat("must be 0 (unchanged) or 1 to ", limits::kIdBytesMax));
      }
      return std::nullopt;
    }
    case v1::RegistryEvent::kRerating: {
      const auto& r = e.rerating();
      if (r.program() == v1::PROGRAM_UNSPECIFIED) return Missing("rerating.program");
      if (!v1::Program_IsValid(r.program())) return Invalid("rerating.program", "unknown");
      if (!v1::GpuModel_IsValid(r.gpu_model())) return Invalid("rerating.gpu_model", "unknown");
      if (auto v = CheckTime("rerating.from_ms", r.from_ms())) return v;
      if (auto v = CheckTime("rerating.to_ms", r.to_ms())) return v;
      if (r.to_ms() <= r.from_ms()) {
        return Verdict{reason::kEmptyInterval, "rerating to_ms is not after from_ms"};
      }
      return CheckText("rerating.reason", r.reason(), limits::kReasonBytesMax);
    }
    case v1::RegistryEvent::kParty:
      return CheckParty(e.party());
    case v1::RegistryEvent::kBillingTerms:
      return CheckBillingTerms(e.billing_terms());
    case v1::RegistryEvent::kBudget:
      return CheckBudget(e.budget());
    case v1::RegistryEvent::kAlertSettings:
      return CheckAlertSettings(e.alert_settings());
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
      "csp_contract, gpu_pool, period_close, programme_policy, over_cap_release, rerating, "
      "validation_settings, party, billing_terms, budget, alert_settings)");
}

void Reject(ledger::Candidate* c, const Verdict& v) {
  c->reason_code = v.code;
  c->reason_detail = v.detail;
}

// The field numbers of the first unknown field found in `msg` or any message inside it, as
// "RegistryEvent.institution #2"; empty if there is none. Bytes of another message type (a
// usage event on the registry topic) parse as a protobuf message of the wrong type with unknown
// or mistyped fields: they land here instead of being read as something they are not.
std::string FirstUnknownField(const google::protobuf::Message& msg) {
  const google::protobuf::Reflection* r = msg.GetReflection();
  const google::protobuf::UnknownFieldSet& unknown = r->GetUnknownFields(msg);
  if (!unknown.empty()) {
    return absl::StrCat(msg.GetDescriptor()->name(), " #", unknown.field(0).number());
  }
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  r->ListFields(msg, &fields);
  for (const google::protobuf::FieldDescriptor* f : fields) {
    if (f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE) continue;
    if (f->is_repeated()) {
      for (int i = 0; i < r->FieldSize(msg, f); ++i) {
        std::string inner = FirstUnknownField(r->GetRepeatedMessage(msg, f, i));
        if (!inner.empty()) return inner;
      }
    } else {
      std::string inner = FirstUnknownField(r->GetMessage(msg, f));
      if (!inner.empty()) return inner;
    }
  }
  return {};
}

// Decodes `payload` into `msg`; on success sets the canonical bytes. A payload that does not
// parse, or that carries fields this schema does not define, is not the message the topic
// carries: `why` says which.
template <typename Message>
bool Canonicalize(Message* msg, ledger::Candidate* c, std::string* why);

template <typename Message>
bool DecodeInto(const std::string& payload, Message* msg, ledger::Candidate* c, std::string* why) {
  if (!msg->ParseFromString(payload)) return false;
  return Canonicalize(msg, c, why);
}

// Sets the canonical bytes of a decoded `msg`, unless it carries fields this schema does not
// define (`why` says which).
template <typename Message>
bool Canonicalize(Message* msg, ledger::Candidate* c, std::string* why) {
  if (std::string unknown = FirstUnknownField(*msg); !unknown.empty()) {
    *why = absl::StrCat("; it carries field ", unknown, ", which this schema does not define");
    return false;
  }
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

bool RecordedHeader(std::string_view key) {
  // Printable ASCII only: the entry keeps the name as a protobuf string, which must be UTF-8.
  if (key.empty() || key.size() > 64 ||
      !std::all_of(key.begin(), key.end(), [](char ch) { return ch > ' ' && ch < 0x7f; })) {
    return false;
  }
  return key.starts_with("ce_") ||
         absl::EqualsIgnoreCase(absl::string_view(key.data(), key.size()), "content-type");
}

int64_t TimeOfRecord(const ledger::Candidate& c) {
  const int64_t ms = c.kafka_timestamp_type == v1::KAFKA_TIMESTAMP_LOG_APPEND_TIME
                         ? c.kafka_timestamp_ms
                         : c.recorded_at_ms;
  // Clamped, so that sums with it never overflow whatever a clock says.
  return std::clamp<int64_t>(ms, 0, limits::kTimeMaxMs);
}

Decoded Decode(RawMessage m, const ValidationLimits& limits, int64_t recorded_at_ms) {
  Decoded d;
  ledger::Candidate& c = d.candidate;
  c.payload = std::move(m.payload);
  c.headers = std::move(m.headers);
  c.topic = std::move(m.topic);
  c.partition = m.partition;
  c.offset = m.offset;
  c.kafka_timestamp_ms = m.kafka_timestamp_ms;
  c.kafka_timestamp_type = m.kafka_timestamp_type;
  c.recorded_at_ms = recorded_at_ms;

  std::string why;
  if (c.topic == limits.topics.Registry()) {
    c.source = v1::SOURCE_REGISTRY;
    c.source_id = kOperatorSourceId;
    v1::RegistryEvent e;
    if (!DecodeInto(c.payload, &e, &c, &why)) {
      Reject(&c, {reason::kMalformed, absl::StrCat("not a gpuledger.v1.RegistryEvent", why)});
      return d;
    }
    MaybeVerdict v;
    if (e.schema_version() != kSchemaVersion) {
      v = Verdict{reason::kUnknownSchemaVersion,
                  absl::StrCat("schema_version ", e.schema_version(), ", this build reads ",
                               kSchemaVersion)};
    } else if (!(v = CheckEventId(e.event_id(), limits))) {
      c.event_id = e.event_id();
      if (!(v = CheckOptionalTime("emitted_at_ms", e.emitted_at_ms()))) v = CheckRegistryBody(e);
      if (!v && e.has_period_close()) v = CheckCloseOffsets(e.period_close(), limits.topics);
    }
    if (v) Reject(&c, *v);
    d.event = std::move(e);
    return d;
  }

  const std::optional<std::string> csp = limits.topics.CspOfUsage(c.topic);
  if (!csp) {
    Reject(&c, {reason::kUnknownTopic, absl::StrCat("topic '", c.topic, "'")});
    return d;
  }
  c.source = v1::SOURCE_USAGE;
  if (!IsCspId(*csp)) {
    Reject(&c, {reason::kUnknownTopic,
                absl::StrCat("topic '", c.topic, "': '", *csp, "' cannot be a CSP id")});
    return d;
  }
  // Every message on a CSP's topic is that CSP's, readable and answerable by it, even when it
  // does not decode. The identity is the CSP of the topic, never the claimed csp_id: one CSP
  // cannot occupy another's event-id space.
  c.source_id = *csp;
  v1::UsageEvent e;
  if (IsKafkaCloudEvent(c.headers)) {
    // A CloudEvent (docs/FORMATS.md, "CloudEvents on Kafka"): the event it maps to is decided
    // as a protobuf message on the topic would be, and recorded beside the payload.
    if (absl::Status st = UsageEventFromKafkaCloudEvent(c.headers, c.payload, *csp, &e); !st.ok()) {
      Reject(&c, {reason::kMalformed,
                  absl::StrCat("not a gpuledger.v1.UsageEvent CloudEvent: ", st.message())});
      return d;
    }
    if (!Canonicalize(&e, &c, &why)) {
      Reject(&c, {reason::kMalformed, absl::StrCat("not a gpuledger.v1.UsageEvent", why)});
      return d;
    }
    c.decoded_event = c.canonical;
  } else if (!DecodeInto(c.payload, &e, &c, &why)) {
    Reject(&c, {reason::kMalformed, absl::StrCat("not a gpuledger.v1.UsageEvent", why)});
    return d;
  }
  if (!CheckEventId(e.event_id(), limits)) {
    c.event_id = e.event_id();
    if (!CheckId("producer_id", e.producer_id())) {
      c.producer_id = e.producer_id();
      c.producer_seq = e.producer_seq() <= limits::kProducerSeqMax ? e.producer_seq() : 0;
    }
  }
  if (MaybeVerdict v = CheckUsage(e, *csp, limits)) Reject(&c, *v);
  d.event = std::move(e);
  return d;
}

ledger::Candidate Decide(const RawMessage& m, const ValidationLimits& limits,
                         int64_t recorded_at_ms) {
  return Decode(m, limits, recorded_at_ms).candidate;
}

}  // namespace gpuledger::ingest
