// The alert monitor: conditions evaluated against the settled state, each crossing raised once
// and recorded, with its deliveries.
//
// State store keys (a settlement::Store of its own; ids are printable ASCII, fields joined with
// 0x1f):
//   c/<condition>            → "<crossings> <1 if it holds now>"
//   a/<alert id>             → the alert as JSON, with "order" and "published"
//   u/<u64 order>            → alert id (raised, not published yet)
//   q/<alert id>␟<sub id>    → the delivery as JSON
//   qp/<alert id>␟<sub id>   → "" (deliveries pending)
//   p/<period>               → "" (a close whose alerts were raised)
//   r/<csp>␟<YYYY-MM-DD>     → "<accepted> <rejected>" usage entries of a KST day
//   s/cursor                 → the last ledger entry counted for rejection rates
//   s/order                  → the next order

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "alerts/alerts.h"
#include "base/period.h"
#include "base/status.h"
#include "settlement/render.h"
#include "settlement/reports.h"
#include "settlement/store.h"
#include "spdlog/spdlog.h"

namespace gpuledger::alerts {

namespace v1 = gpuledger::v1;
using json = nlohmann::ordered_json;

namespace {

constexpr char kSep = '\x1f';
constexpr int64_t kDayMs = 86'400'000;
constexpr int64_t kKstMs = 9 * 3'600'000;

std::string Be64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i, v >>= 8) out[i] = static_cast<char>(v & 0xff);
  return out;
}

std::string KstDayOf(int64_t utc_ms) {
  const int64_t t = utc_ms + kKstMs;
  const int64_t day = t >= 0 ? t / kDayMs : -((-t + kDayMs - 1) / kDayMs);
  return settlement::FormatDay(day);
}

std::string Iso(int64_t ms) { return base::FormatKst(ms); }

// A number of the state store (this file wrote it); a damaged one reads as 0.
template <typename T>
T Number(const std::string& text) {
  T v{};
  if (!absl::SimpleAtoi(text, &v)) return T{};
  return v;
}

json AlertObj(const Alert& a) {
  return {{"id", a.id},
          {"type", a.type},
          {"timestamp", Iso(a.raised_at_ms)},
          {"audience", a.audience.empty() ? json(nullptr) : json(a.audience)},
          {"raised_at_seq", a.raised_at_seq},
          {"data", json::parse(a.data_json, nullptr, false)}};
}

Alert AlertOf(const json& j) {
  Alert a;
  a.id = j.value("id", "");
  a.type = j.value("type", "");
  a.audience =
      j.contains("audience") && j["audience"].is_string() ? j["audience"].get<std::string>() : "";
  a.raised_at_seq = j.value("raised_at_seq", uint64_t{0});
  a.raised_at_ms = j.value("raised_at_ms", int64_t{0});
  a.data_json = j.contains("data") ? j["data"].dump() : "{}";
  return a;
}

json DeliveryObj(const Delivery& d) {
  return {{"alert_id", d.alert_id},
          {"subscription_id", d.subscription_id},
          {"status", DeliveryStatusName(d.status)},
          {"attempts", d.attempts},
          {"next_attempt_ms", d.next_attempt_ms},
          {"last_error", d.last_error},
          {"delivered_at_ms", d.delivered_at_ms}};
}

Delivery DeliveryOf(const json& j) {
  Delivery d;
  d.alert_id = j.value("alert_id", "");
  d.subscription_id = j.value("subscription_id", "");
  const std::string s = j.value("status", "pending");
  d.status = s == "delivered"  ? DeliveryStatus::kDelivered
             : s == "given_up" ? DeliveryStatus::kGivenUp
                               : DeliveryStatus::kPending;
  d.attempts = j.value("attempts", 0);
  d.next_attempt_ms = j.value("next_attempt_ms", int64_t{0});
  d.last_error = j.value("last_error", "");
  d.delivered_at_ms = j.value("delivered_at_ms", int64_t{0});
  return d;
}

// A condition as it stands now.
struct Condition {
  std::string key;
  std::string type;
  std::string audience;
  json data;
  bool holds = false;
};

}  // namespace

std::string Alert::Payload() const { return AlertObj(*this).dump() + "\n"; }

const char* DeliveryStatusName(DeliveryStatus s) {
  switch (s) {
    case DeliveryStatus::kPending:
      return "pending";
    case DeliveryStatus::kDelivered:
      return "delivered";
    case DeliveryStatus::kGivenUp:
      return "given_up";
  }
  return "";
}

bool Receives(const Subscription& s, const Alert& a) {
  if (!s.types.empty() && std::find(s.types.begin(), s.types.end(), a.type) == s.types.end()) {
    return false;
  }
  if (s.role == "operator" || s.role == "finance" || s.role == "auditor") return true;
  return !a.audience.empty() && s.role == a.audience;
}

struct Monitor::Impl {
  std::unique_ptr<settlement::Store> store;
  MonitorOptions options;

  uint64_t NextOrder() {
    uint64_t n = 0;
    if (auto v = store->Get("s/order")) n = Number<uint64_t>(*v);
    store->Put("s/order", std::to_string(n + 1));
    return n;
  }

  // Records the condition's state; returns the alert id if it crossed (held now, not before).
  std::optional<std::string> Crossed(const Condition& c) {
    const std::string key = absl::StrCat("c/", c.key);
    int crossings = 0;
    int active = 0;
    if (auto v = store->Get(key)) {
      std::vector<std::string> parts = absl::StrSplit(*v, ' ');
      if (parts.size() == 2) {
        crossings = Number<int>(parts[0]);
        active = Number<int>(parts[1]);
      }
    }
    if (c.holds == (active == 1)) return std::nullopt;
    if (c.holds) ++crossings;
    store->Put(key, absl::StrCat(crossings, " ", c.holds ? 1 : 0));
    if (!c.holds) return std::nullopt;
    return absl::StrCat(c.key, "#", crossings);
  }

  void Raise(const Condition& c, const std::string& id, uint64_t seq, int64_t now_ms,
             const std::vector<Subscription>& subscriptions, std::vector<Alert>* raised) {
    Alert a;
    a.id = id;
    a.type = c.type;
    a.audience = c.audience;
    a.raised_at_seq = seq;
    a.raised_at_ms = now_ms;
    a.data_json = c.data.dump();
    const uint64_t order = NextOrder();
    json stored = AlertObj(a);
    stored["raised_at_ms"] = now_ms;
    stored["order"] = order;
    stored["published"] = false;
    store->Put(absl::StrCat("a/", id), stored.dump());
    store->Put(absl::StrCat("u/", Be64(order)), id);
    for (const Subscription& s : subscriptions) {
      if (!Receives(s, a)) continue;
      Delivery d;
      d.alert_id = id;
      d.subscription_id = s.id;
      d.next_attempt_ms = now_ms;
      const std::string k = absl::StrCat(id, std::string(1, kSep), s.id);
      store->Put(absl::StrCat("q/", k), DeliveryObj(d).dump());
      store->Put(absl::StrCat("qp/", k), "");
    }
    spdlog::info("alert raised: {} ({}){}", id, c.type,
                 c.audience.empty() ? "" : absl::StrCat(", for ", c.audience));
    raised->push_back(std::move(a));
  }

  std::optional<Alert> FindAlert(const std::string& id) {
    auto v = store->Get(absl::StrCat("a/", id));
    if (!v) return std::nullopt;
    json j = json::parse(*v, nullptr, false);
    if (j.is_discarded()) return std::nullopt;
    return AlertOf(j);
  }
};

Monitor::Monitor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Monitor::~Monitor() = default;

absl::StatusOr<std::unique_ptr<Monitor>> Monitor::Open(const std::string& path,
                                                       const MonitorOptions& options) {
  auto impl = std::make_unique<Impl>();
  settlement::StoreOptions so;
  GPULEDGER_ASSIGN_OR_RETURN(impl->store, settlement::Store::Open(path, so));
  impl->options = options;
  return std::unique_ptr<Monitor>(new Monitor(std::move(impl)));
}

absl::StatusOr<std::vector<Alert>> Monitor::Evaluate(settlement::Engine& engine,
                                                     const settlement::EntrySource& entries,
                                                     const std::vector<Subscription>& subscriptions,
                                                     int64_t now_ms) {
  settlement::Store& st = *impl_->store;
  const ledger::Registry& registry = engine.registry();
  const uint64_t seq = engine.applied_through();
  std::vector<Condition> conditions;

  // Budgets: each threshold of each budget of each year that has one.
  std::vector<uint32_t> years;
  for (const auto& [key, timeline] : registry.budgets()) {
    if (std::find(years.begin(), years.end(), std::get<1>(key)) == years.end()) {
      years.push_back(std::get<1>(key));
    }
  }
  for (uint32_t year : years) {
    GPULEDGER_ASSIGN_OR_RETURN(settlement::BudgetReport report, engine.Budgets(year));
    for (const settlement::BudgetRow& b : report.budgets) {
      for (uint32_t t : b.alert_thresholds_bp) {
        Condition c;
        c.key = absl::StrCat("budget/", b.program, "/", year, "/", b.call_id, "/", t);
        c.type = kBudgetThreshold;
        c.holds = std::find(b.thresholds_crossed_bp.begin(), b.thresholds_crossed_bp.end(), t) !=
                  b.thresholds_crossed_bp.end();
        c.data = {{"program", b.program},          {"fiscal_year", year},
                  {"call_id", b.call_id},          {"threshold_bp", t},
                  {"amount_krw", b.amount_krw},    {"drawn_krw", b.drawn_krw},
                  {"drawn_bp", b.drawn_bp},        {"remaining_krw", b.remaining_krw},
                  {"forecast_krw", b.forecast_krw}};
        conditions.push_back(std::move(c));
      }
    }
  }

  // Allocations' GPU-hour caps: the share used past each threshold of the settings in force.
  const v1::AlertSettings* settings = registry.AlertSettingsAt(INT64_MAX);
  if (settings != nullptr && settings->allocation_balance_thresholds_bp_size() > 0) {
    for (int program : {v1::GOV_ADVANCED, v1::LEASE_HPC, v1::LEASE_RESEARCH}) {
      for (const v1::Allocation* a :
           registry.AllocationsOn(static_cast<v1::Program>(program), v1::GPU_MODEL_UNSPECIFIED)) {
        if (a->gpu_ms_cap() <= 0 || registry.CapHolder(a->allocation_id()) != a->allocation_id()) {
          continue;
        }
        const __int128 used = engine.CapUsedGpuMs(a->allocation_id());
        for (uint32_t t : settings->allocation_balance_thresholds_bp()) {
          Condition c;
          c.key = absl::StrCat("allocation/", a->allocation_id(), "/", t);
          c.type = kAllocationBalance;
          c.audience = absl::StrCat("institution:", a->institution_id());
          c.holds = used * 10'000 >= static_cast<__int128>(t) * a->gpu_ms_cap();
          const int64_t used64 =
              used > a->gpu_ms_cap() ? a->gpu_ms_cap() : static_cast<int64_t>(used);
          c.data = {{"allocation_id", a->allocation_id()},
                    {"institution_id", a->institution_id()},
                    {"threshold_bp", t},
                    {"cap_gpu_ms", a->gpu_ms_cap()},
                    {"used_gpu_ms", used64},
                    {"remaining_gpu_ms", a->gpu_ms_cap() - used64}};
          conditions.push_back(std::move(c));
        }
      }
    }
  }

  // CSPs' rejected share of a KST day's usage events: count the entries not counted yet.
  uint64_t cursor = 0;
  if (auto v = st.Get("s/cursor")) cursor = Number<uint64_t>(*v);
  if (seq > cursor) {
    std::map<std::string, std::pair<int64_t, int64_t>> counts;  // r/ key → accepted, rejected
    absl::Status scanned =
        entries(cursor + 1, [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
          if (e.seq > seq) return false;
          if (e.entry.source() != v1::SOURCE_USAGE) return true;
          if (e.entry.outcome() != v1::ACCEPTED && e.entry.outcome() != v1::REJECTED) return true;
          auto& c = counts[absl::StrCat("r/", e.entry.source_id(), std::string(1, kSep),
                                        KstDayOf(e.entry.recorded_at_ms()))];
          (e.entry.outcome() == v1::ACCEPTED ? c.first : c.second) += 1;
          return true;
        });
    GPULEDGER_RETURN_IF_ERROR(scanned);
    for (const auto& [key, add] : counts) {
      int64_t accepted = 0, rejected = 0;
      if (auto v = st.Get(key)) {
        std::vector<std::string> parts = absl::StrSplit(*v, ' ');
        if (parts.size() == 2) {
          accepted = Number<int64_t>(parts[0]);
          rejected = Number<int64_t>(parts[1]);
        }
      }
      st.Put(key, absl::StrCat(accepted + add.first, " ", rejected + add.second));
    }
    st.Put("s/cursor", std::to_string(seq));
  }
  if (settings != nullptr && settings->csp_rejection_rate_bp() > 0) {
    st.Scan("r/", [&](std::string_view key, std::string_view value) {
      std::vector<std::string> id = absl::StrSplit(std::string(key.substr(2)), kSep);
      std::vector<std::string> parts = absl::StrSplit(std::string(value), ' ');
      int64_t accepted = 0, rejected = 0;
      if (id.size() != 2 || parts.size() != 2 || !absl::SimpleAtoi(parts[0], &accepted) ||
          !absl::SimpleAtoi(parts[1], &rejected)) {
        return true;
      }
      const int64_t total = accepted + rejected;
      Condition c;
      c.key = absl::StrCat("rejections/", id[0], "/", id[1]);
      c.type = kCspRejectionRate;
      c.audience = absl::StrCat("csp:", id[0]);
      c.holds = total > 0 && total >= settings->csp_rejection_min_events() &&
                static_cast<__int128>(rejected) * 10'000 >=
                    static_cast<__int128>(settings->csp_rejection_rate_bp()) * total;
      c.data = {{"csp_id", id[0]},
                {"day", id[1]},
                {"accepted", accepted},
                {"rejected", rejected},
                {"rejected_bp", total == 0 ? 0 : rejected * 10'000 / total},
                {"threshold_bp", settings->csp_rejection_rate_bp()}};
      conditions.push_back(std::move(c));
      return true;
    });
  }

  std::vector<Alert> raised;
  for (const Condition& c : conditions) {
    if (auto id = impl_->Crossed(c)) impl_->Raise(c, *id, seq, now_ms, subscriptions, &raised);
  }

  // Closes: the month, each invoice made final and each adjustment issued, once per close.
  for (const settlement::CloseRecord& close : engine.Closes()) {
    const std::string period = close.period.ToString();
    const std::string done = absl::StrCat("p/", period);
    if (st.Get(done)) continue;
    GPULEDGER_ASSIGN_OR_RETURN(v1::PeriodDocuments docs, engine.Documents(close.period));
    std::vector<Condition> events;
    Condition closed;
    closed.key = absl::StrCat("closed/", period);
    closed.type = kPeriodClosed;
    closed.holds = true;
    closed.data = {{"period", period},
                   {"close_seq", close.close_seq},
                   {"covered_seq", close.covered_seq},
                   {"invoices", docs.invoices_size()},
                   {"nothing_owed", docs.nothing_owed_size()},
                   {"statements", docs.statements_size()}};
    events.push_back(std::move(closed));
    for (const v1::Invoice& inv : docs.invoices()) {
      Condition c;
      c.key = absl::StrCat("invoice/", period, "/", inv.institution_id());
      c.type = kInvoiceFinal;
      c.audience = absl::StrCat("institution:", inv.institution_id());
      c.holds = true;
      json numbers = json::array();
      for (const auto& b : inv.bills()) numbers.push_back(b.number());
      c.data = {{"period", period},
                {"institution_id", inv.institution_id()},
                {"numbers", numbers},
                {"copay_krw", inv.totals().copay_krw()},
                {"amount_due_krw", inv.amount_due_krw()}};
      events.push_back(std::move(c));
      if (inv.adjustments_size() == 0) continue;
      Condition adj;
      adj.key = absl::StrCat("adjustment/", period, "/", inv.institution_id());
      adj.type = kAdjustmentIssued;
      adj.audience = c.audience;
      adj.holds = true;
      json adjusts = json::array();
      int64_t copay = 0, subsidy = 0;
      for (const auto& l : inv.adjustments()) {
        if (std::find(adjusts.begin(), adjusts.end(), l.adjusts_period()) == adjusts.end()) {
          adjusts.push_back(l.adjusts_period());
        }
        copay += l.copay_krw();
        subsidy += l.subsidy_krw();
      }
      adj.data = {{"period", period},
                  {"institution_id", inv.institution_id()},
                  {"adjusts_periods", adjusts},
                  {"copay_krw", copay},
                  {"subsidy_krw", subsidy}};
      events.push_back(std::move(adj));
    }
    for (const Condition& c : events) {
      if (auto id = impl_->Crossed(c)) impl_->Raise(c, *id, seq, now_ms, subscriptions, &raised);
    }
    st.Put(done, "");
  }
  GPULEDGER_RETURN_IF_ERROR(st.Commit());
  return raised;
}

std::vector<Alert> Monitor::Unpublished() {
  std::vector<Alert> out;
  impl_->store->Scan("u/", [&](std::string_view, std::string_view id) {
    if (auto a = impl_->FindAlert(std::string(id))) out.push_back(std::move(*a));
    return true;
  });
  return out;
}

absl::Status Monitor::MarkPublished(const std::vector<std::string>& alert_ids) {
  settlement::Store& st = *impl_->store;
  for (const std::string& id : alert_ids) {
    auto v = st.Get(absl::StrCat("a/", id));
    if (!v) continue;
    json j = json::parse(*v, nullptr, false);
    if (j.is_discarded()) continue;
    j["published"] = true;
    st.Put(absl::StrCat("a/", id), j.dump());
    st.Delete(absl::StrCat("u/", Be64(j.value("order", uint64_t{0}))));
  }
  return st.Commit();
}

std::vector<std::pair<Delivery, Alert>> Monitor::Due(int64_t now_ms) {
  std::vector<std::pair<Delivery, Alert>> out;
  settlement::Store& st = *impl_->store;
  std::vector<std::string> pending;
  st.Scan("qp/", [&](std::string_view key, std::string_view) {
    pending.emplace_back(key.substr(3));
    return true;
  });
  for (const std::string& k : pending) {
    auto v = st.Get(absl::StrCat("q/", k));
    if (!v) continue;
    json j = json::parse(*v, nullptr, false);
    if (j.is_discarded()) continue;
    Delivery d = DeliveryOf(j);
    if (d.next_attempt_ms > now_ms) continue;
    if (auto a = impl_->FindAlert(d.alert_id)) out.emplace_back(std::move(d), std::move(*a));
  }
  return out;
}

absl::Status Monitor::RecordAttempt(const Delivery& delivered, bool ok, const std::string& error,
                                    int64_t now_ms) {
  settlement::Store& st = *impl_->store;
  Delivery d = delivered;
  const std::string k = absl::StrCat(d.alert_id, std::string(1, kSep), d.subscription_id);
  ++d.attempts;
  if (ok) {
    d.status = DeliveryStatus::kDelivered;
    d.delivered_at_ms = now_ms;
    d.last_error.clear();
    st.Delete(absl::StrCat("qp/", k));
  } else {
    d.last_error = error;
    if (d.attempts >= impl_->options.max_attempts) {
      d.status = DeliveryStatus::kGivenUp;
      st.Delete(absl::StrCat("qp/", k));
      spdlog::error(
          "alert {} could not be delivered to subscription {} after {} attempts (last: {}); "
          "given up: `gpuledger alerts list` shows it",
          d.alert_id, d.subscription_id, d.attempts, error);
    } else {
      int64_t backoff = impl_->options.first_backoff_ms;
      for (int i = 1; i < d.attempts && backoff < impl_->options.max_backoff_ms; ++i) backoff *= 2;
      backoff = std::min(backoff, impl_->options.max_backoff_ms);
      d.next_attempt_ms = now_ms + backoff;
      spdlog::warn("alert {} to subscription {}: attempt {} failed ({}); next in {} ms", d.alert_id,
                   d.subscription_id, d.attempts, error, backoff);
    }
  }
  st.Put(absl::StrCat("q/", k), DeliveryObj(d).dump());
  return st.Commit();
}

std::vector<Alert> Monitor::Alerts() {
  std::vector<std::pair<uint64_t, Alert>> ordered;
  impl_->store->Scan("a/", [&](std::string_view, std::string_view value) {
    json j = json::parse(value, nullptr, false);
    if (!j.is_discarded()) ordered.emplace_back(j.value("order", uint64_t{0}), AlertOf(j));
    return true;
  });
  std::sort(ordered.begin(), ordered.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<Alert> out;
  for (auto& [order, a] : ordered) out.push_back(std::move(a));
  return out;
}

std::vector<Delivery> Monitor::Deliveries() {
  std::vector<Delivery> out;
  impl_->store->Scan("q/", [&](std::string_view, std::string_view value) {
    json j = json::parse(value, nullptr, false);
    if (!j.is_discarded()) out.push_back(DeliveryOf(j));
    return true;
  });
  return out;
}

absl::StatusOr<std::vector<Subscription>> LoadSubscriptions(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the subscriptions file ", path));
  json j = json::parse(in, nullptr, false);
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", why, " (docs/ALERTS.md shows the file's form)"));
  };
  if (j.is_discarded() || !j.is_object() || !j.contains("subscriptions") ||
      !j["subscriptions"].is_array()) {
    return bad("not a JSON object with a \"subscriptions\" array");
  }
  std::vector<Subscription> out;
  for (size_t i = 0; i < j["subscriptions"].size(); ++i) {
    const json& e = j["subscriptions"][i];
    const std::string where = absl::StrCat("subscription ", i + 1);
    if (!e.is_object()) return bad(absl::StrCat(where, " is not an object"));
    Subscription s;
    for (auto [field, out_field] : {std::pair{"id", &s.id}, std::pair{"url", &s.url},
                                    std::pair{"secret", &s.secret}, std::pair{"role", &s.role}}) {
      if (!e.contains(field) || !e[field].is_string() || e[field].get<std::string>().empty()) {
        return bad(absl::StrCat(where, " has no \"", field, "\""));
      }
      *out_field = e[field].get<std::string>();
    }
    if (!Sign(s.secret, "x", 0, "").ok()) {
      return bad(absl::StrCat(where, " (", s.id, "): the secret is not whsec_<base64>"));
    }
    if (!s.url.starts_with("http://") && !s.url.starts_with("https://")) {
      return bad(absl::StrCat(where, " (", s.id, "): the url is not http:// or https://"));
    }
    const bool role_ok = s.role == "operator" || s.role == "finance" || s.role == "auditor" ||
                         (s.role.starts_with("institution:") && s.role.size() > 12) ||
                         (s.role.starts_with("csp:") && s.role.size() > 4);
    if (!role_ok) {
      return bad(absl::StrCat(where, " (", s.id,
                              "): role is operator, finance, auditor, institution:<id> or "
                              "csp:<id>"));
    }
    if (e.contains("types")) {
      if (!e["types"].is_array()) return bad(absl::StrCat(where, ": \"types\" is not an array"));
      for (const auto& t : e["types"]) {
        const std::string type = t.is_string() ? t.get<std::string>() : "";
        bool known = false;
        for (const char* k : {kBudgetThreshold, kAllocationBalance, kPeriodClosed, kInvoiceFinal,
                              kAdjustmentIssued, kCspRejectionRate}) {
          known = known || type == k;
        }
        if (!known) return bad(absl::StrCat(where, ": unknown alert type '", type, "'"));
        s.types.push_back(type);
      }
    }
    for (const Subscription& other : out) {
      if (other.id == s.id) return bad(absl::StrCat("subscription id '", s.id, "' is used twice"));
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace gpuledger::alerts
