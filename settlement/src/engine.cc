#include "settlement/engine.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "base/assert.h"
#include "base/money.h"
#include "base/status.h"
#include "gpuledger/v1/registry.pb.h"
#include "ledger/hash.h"
#include "settlement/render.h"

namespace gpuledger::settlement {

namespace v1 = gpuledger::v1;
using base::Period;

namespace {

constexpr char kSep = '\x1f';

std::string Pad(int64_t v, int width) { return absl::StrFormat("%0*d", width, v); }
std::string Seq(uint64_t seq) { return absl::StrFormat("%020d", seq); }

// A line's identity within a period. Encoded so that byte order is the order of lines on an
// invoice: institution, allocation, model, rate, co-pay rate, institution type, kind.
struct LineId {
  std::string institution_id;
  std::string allocation_id;
  int model = 0;
  int64_t rate = 0;
  int64_t copay_bp = 0;
  int type = 0;
  int kind = 0;
};

std::string EncodeLine(const LineId& l) {
  return absl::StrCat(l.institution_id, std::string(1, kSep), l.allocation_id, std::string(1, kSep),
                      Pad(l.model, 2), std::string(1, kSep), Pad(l.rate, 15), std::string(1, kSep),
                      Pad(l.copay_bp, 5), std::string(1, kSep), Pad(l.type, 2),
                      std::string(1, kSep), l.kind);
}

bool DecodeLine(std::string_view key, LineId* out) {
  std::vector<std::string> f = absl::StrSplit(std::string(key), kSep);
  if (f.size() != 7) return false;
  out->institution_id = f[0];
  out->allocation_id = f[1];
  return absl::SimpleAtoi(f[2], &out->model) && absl::SimpleAtoi(f[3], &out->rate) &&
         absl::SimpleAtoi(f[4], &out->copay_bp) && absl::SimpleAtoi(f[5], &out->type) &&
         absl::SimpleAtoi(f[6], &out->kind);
}

std::string CreditKeyOf(const std::string& usage_key) {
  std::string k = usage_key;
  k.back() = static_cast<char>('0' + v1::LINE_KIND_OUTAGE_CREDIT);
  return k;
}

std::string Key(std::string_view prefix, std::initializer_list<std::string_view> parts) {
  std::string out(prefix);
  bool first = true;
  for (std::string_view p : parts) {
    if (!first) out.push_back(kSep);
    out.append(p.data(), p.size());
    first = false;
  }
  return out;
}

// The periods that [start, end) touches, with the part of it inside each.
template <typename F>
void ForEachPeriod(int64_t start_ms, int64_t end_ms, F f) {
  for (Period p = base::PeriodOf(start_ms); p.StartMs() < end_ms; p = p.Next()) {
    const int64_t lo = std::max(start_ms, p.StartMs());
    const int64_t hi = std::min(end_ms, p.EndMs());
    if (lo < hi) f(p, lo, hi);
  }
}

absl::Status Price(v1::InvoiceLine* line) {
  GPULEDGER_ASSIGN_OR_RETURN(base::Krw list, base::ListPrice(base::GpuMs{line->gpu_ms()},
                                                             base::Krw{line->krw_per_gpu_hour()}));
  GPULEDGER_ASSIGN_OR_RETURN(base::Krw copay, base::ApplyBasisPoints(list, line->copay_bp()));
  line->set_list_krw(list.won);
  line->set_copay_krw(copay.won);
  line->set_subsidy_krw(list.won - copay.won);
  return absl::OkStatus();
}

void AddTo(v1::Totals* t, const v1::InvoiceLine& l) {
  t->set_gpu_ms(t->gpu_ms() + l.gpu_ms());
  t->set_list_krw(t->list_krw() + l.list_krw());
  t->set_copay_krw(t->copay_krw() + l.copay_krw());
  t->set_subsidy_krw(t->subsidy_krw() + l.subsidy_krw());
}

void AddTotals(v1::Totals* t, const v1::Totals& o) {
  t->set_gpu_ms(t->gpu_ms() + o.gpu_ms());
  t->set_list_krw(t->list_krw() + o.list_krw());
  t->set_copay_krw(t->copay_krw() + o.copay_krw());
  t->set_subsidy_krw(t->subsidy_krw() + o.subsidy_krw());
}

bool IsZero(const v1::InvoiceLine& l) {
  return l.gpu_ms() == 0 && l.list_krw() == 0 && l.copay_krw() == 0 && l.subsidy_krw() == 0;
}

absl::StatusOr<int64_t> DivRound(__int128 num, int64_t den) {
  return base::DivRoundHalfAwayFromZero(num, den);
}

}  // namespace

std::string DigestHex(const std::string& canonical_json) {
  return ledger::ToHex(ledger::Sha256(canonical_json));
}

Engine::Engine(Store* store, SettleOptions options) : store_(store), options_(options) {}
Engine::~Engine() = default;

absl::StatusOr<std::unique_ptr<Engine>> Engine::Open(Store* store, const SettleOptions& options) {
  std::unique_ptr<Engine> engine(new Engine(store, options));
  const std::string stamp = absl::StrCat("vat_bp=", options.vat_bp);
  if (auto existing = store->Get("s/options")) {
    if (*existing != stamp) {
      return absl::FailedPreconditionError(absl::StrCat(
          "settlement store ", store->path(), " was built with ", *existing, ", not ", stamp,
          "; use the same options or rebuild the store (delete it: it is derived data)"));
    }
  } else {
    store->Put("s/options", stamp);
  }
  if (auto applied = store->Get("s/applied")) {
    std::pair<std::string, std::string> parts = absl::StrSplit(*applied, ' ');
    if (!absl::SimpleAtoi(parts.first, &engine->applied_through_)) {
      return absl::DataLossError("settlement store: unreadable s/applied");
    }
    engine->applied_hash_ = parts.second;
  }
  absl::Status bad;
  store->Scan("r/", [&](std::string_view key, std::string_view value) {
    v1::RegistryEvent e;
    if (!e.ParseFromString(std::string(value))) {
      bad = absl::DataLossError(
          absl::StrCat("settlement store: bad registry record ", std::string(key)));
      return false;
    }
    engine->registry_.Apply(e);
    return true;
  });
  GPULEDGER_RETURN_IF_ERROR(bad);
  store->Scan("o/", [&](std::string_view key, std::string_view) {
    const std::string rest(key.substr(2));
    engine->allocations_with_outages_.insert(rest.substr(0, rest.find(kSep)));
    return true;
  });
  store->Scan("c/", [&](std::string_view key, std::string_view) {
    engine->closed_.insert(std::string(key.substr(2)));
    return true;
  });
  return engine;
}

absl::Status Engine::Commit() {
  store_->Put("s/applied", absl::StrCat(applied_through_, " ", applied_hash_));
  return store_->Commit();
}

absl::Status Engine::Apply(const ledger::StoredEntry& e) {
  if (e.seq != applied_through_ + 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "settlement applies entries in order: expected ", applied_through_ + 1, ", got ", e.seq));
  }
  const auto& le = e.entry;
  if (le.outcome() == v1::ACCEPTED) {
    if (le.source() == v1::SOURCE_REGISTRY) {
      GPULEDGER_RETURN_IF_ERROR(ApplyRegistry(e.seq, le.payload()));
    } else if (le.source() == v1::SOURCE_USAGE) {
      v1::UsageEvent u;
      if (!u.ParseFromString(le.payload())) {
        return absl::DataLossError(absl::StrCat("accepted entry ", e.seq, " does not decode"));
      }
      GPULEDGER_RETURN_IF_ERROR(ApplyUsage(e.seq, le.source_id(), u));
    }
  }
  applied_through_ = e.seq;
  applied_hash_ = ledger::ToHex(e.hash);
  return absl::OkStatus();
}

absl::Status Engine::ApplyRegistry(uint64_t seq, const std::string& bytes) {
  v1::RegistryEvent e;
  if (!e.ParseFromString(bytes)) {
    return absl::DataLossError(absl::StrCat("accepted entry ", seq, " does not decode"));
  }
  if (e.has_period_close()) {
    // Ingest accepts only closes the registry allows; a store never second-guesses the ledger,
    // but it does not close a period twice either.
    if (registry_.Check(e).has_value()) return absl::OkStatus();
    GPULEDGER_RETURN_IF_ERROR(Close(seq, e));
  }
  store_->Put(absl::StrCat("r/", Seq(seq)), bytes);
  registry_.Apply(e);
  if (e.has_allocation_amendment()) {
    const auto& a = e.allocation_amendment();
    if (a.has_revoke() || a.has_new_end_ms()) {
      if (const v1::Allocation* alloc = registry_.FindAllocation(a.allocation_id())) {
        Truncate(alloc->allocation_id(), registry_.AllocationEndMs(*alloc));
      }
    }
  }
  return absl::OkStatus();
}

void Engine::AddLine(const std::string& period, const std::string& line_key, int64_t gpu_ms) {
  if (gpu_ms == 0) return;
  const std::string key = Key("l/", {period, line_key});
  store_->PutInt(key, store_->GetInt(key) + gpu_ms);
  if (IsClosed(period)) store_->Put(Key("t/", {period, line_key}), "");
}

void Engine::AddDaily(const std::string& csp, int64_t start_ms, int64_t end_ms, int64_t gpus) {
  constexpr int64_t kDay = 24 * base::kMsPerHour;
  for (int64_t t = start_ms; t < end_ms;) {
    const Period p = base::PeriodOf(t);
    const int64_t day = (t - p.StartMs()) / kDay;
    const int64_t day_end = std::min(end_ms, p.StartMs() + (day + 1) * kDay);
    const std::string key = Key("y/", {p.ToString(), csp, Pad(day + 1, 2)});
    store_->PutInt(key, store_->GetInt(key) + gpus * (day_end - t));
    t = day_end;
  }
}

std::vector<int64_t> Engine::DailyUsage(Period period, const std::string& csp_id) {
  constexpr int64_t kDay = 24 * base::kMsPerHour;
  std::vector<int64_t> out((period.EndMs() - period.StartMs()) / kDay, 0);
  store_->Scan(Key("y/", {period.ToString(), csp_id, ""}),
               [&](std::string_view key, std::string_view value) {
                 int day = 0;
                 int64_t v = 0;
                 if (absl::SimpleAtoi(std::string(key.substr(key.size() - 2)), &day) &&
                     absl::SimpleAtoi(std::string(value), &v) && day >= 1 &&
                     day <= static_cast<int>(out.size())) {
                   out[day - 1] = v;
                 }
                 return true;
               });
  return out;
}

void Engine::AddUnpriced(const std::string& period, uint64_t seq, const std::string& source_id,
                         const std::string& event_id, const std::string& why,
                         v1::StoredInterval* rec) {
  v1::Unpriced u;
  u.set_seq(seq);
  u.set_source_id(source_id);
  u.set_event_id(event_id);
  u.set_why(why);
  const int n = rec == nullptr ? 0 : rec->unpriced_keys_size();
  const std::string key = Key("u/", {period, Seq(seq), Pad(n, 4)});
  store_->Put(key, u.SerializeAsString());
  if (rec != nullptr) rec->add_unpriced_keys(key);
}

void Engine::AddInterval(uint64_t seq, const std::string& source_id, const std::string& event_id,
                         const v1::UsageInterval& u) {
  v1::StoredInterval rec;
  rec.set_seq(seq);
  rec.set_source_id(source_id);
  rec.set_event_id(event_id);
  *rec.mutable_interval() = u;
  const std::string id_key = Key("i/", {source_id, event_id});
  const v1::Allocation* alloc = registry_.FindAllocation(u.allocation_id());
  if (alloc == nullptr) {
    ForEachPeriod(u.start_ms(), u.end_ms(), [&](Period p, int64_t, int64_t) {
      AddUnpriced(p.ToString(), seq, source_id, event_id,
                  absl::StrCat("unknown allocation '", u.allocation_id(), "'"), &rec);
    });
    store_->Put(id_key, rec.SerializeAsString());
    return;
  }
  const int64_t gpus = u.gpu_count();
  // The instant from which this interval is beyond its allocation's cap (end: never).
  int64_t cap_from = u.end_ms();
  if (alloc->gpu_ms_cap() > 0 && gpus > 0) {
    const std::string cap_key = absl::StrCat("k/", alloc->allocation_id());
    const int64_t used = store_->GetInt(cap_key);
    const int64_t whole = gpus * (u.end_ms() - u.start_ms());
    const int64_t remaining = std::max<int64_t>(0, alloc->gpu_ms_cap() - used);
    // The cap is crossed at the last whole millisecond that still fits under it.
    const int64_t within_ms = whole <= remaining ? u.end_ms() - u.start_ms() : remaining / gpus;
    cap_from = u.start_ms() + within_ms;
    rec.set_cap_gpu_ms(gpus * within_ms);
    store_->PutInt(cap_key, used + gpus * within_ms);
  }
  ForEachPeriod(u.start_ms(), u.end_ms(), [&](Period p, int64_t lo, int64_t hi) {
    const std::string period = p.ToString();
    std::vector<int64_t> cuts = registry_.PriceChangesWithin(*alloc, u.gpu_model(), lo, hi);
    if (cap_from > lo && cap_from < hi) cuts.push_back(cap_from);
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    cuts.insert(cuts.begin(), lo);
    cuts.push_back(hi);
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
      const int64_t s = cuts[i];
      const int64_t e = cuts[i + 1];
      const auto inst = registry_.InstitutionAt(alloc->institution_id(), s);
      const auto rate = registry_.RateAt(alloc->program(), u.gpu_model(), s);
      const auto copay = inst ? registry_.CopayAt(inst->type, s) : std::nullopt;
      if (!inst || !rate || !copay) {
        AddUnpriced(period, seq, source_id, event_id,
                    absl::StrCat(!inst   ? "no institution record for '"
                                 : !rate ? "no rate card for the usage of '"
                                         : "no co-pay policy for the type of '",
                                 alloc->institution_id(), "' at ", base::FormatKst(s)),
                    &rec);
        continue;
      }
      const bool beyond_cap = s >= cap_from;
      LineId line{alloc->institution_id(),
                  alloc->allocation_id(),
                  u.gpu_model(),
                  *rate,
                  beyond_cap ? base::kBasisPointsPerUnit : static_cast<int64_t>(*copay),
                  inst->type,
                  beyond_cap ? v1::LINE_KIND_BEYOND_CAP : v1::LINE_KIND_USAGE};
      const std::string key = EncodeLine(line);
      const int n = rec.slices_size();
      if (n > 0 && rec.slices(n - 1).line_key() == key && rec.slices(n - 1).end_ms() == s &&
          rec.slices(n - 1).period() == period) {
        rec.mutable_slices(n - 1)->set_end_ms(e);
      } else {
        v1::StoredSlice* slice = rec.add_slices();
        slice->set_period(period);
        slice->set_start_ms(s);
        slice->set_end_ms(e);
        slice->set_line_key(key);
      }
      AddLine(period, key, gpus * (e - s));
      AddDaily(source_id, s, e, gpus);
    }
  });
  Recredit(&rec);
  store_->Put(id_key, rec.SerializeAsString());
  store_->Put(Key("x/", {alloc->allocation_id(), source_id, event_id}), "");
}

void Engine::RemoveInterval(const v1::StoredInterval& rec) {
  const int64_t gpus = rec.interval().gpu_count();
  for (const auto& s : rec.slices()) {
    AddLine(s.period(), s.line_key(), -gpus * (s.end_ms() - s.start_ms()));
    AddDaily(rec.source_id(), s.start_ms(), s.end_ms(), -gpus);
  }
  for (const auto& c : rec.credits()) AddLine(c.period(), c.line_key(), -c.gpu_ms());
  for (const auto& k : rec.unpriced_keys()) store_->Delete(k);
  const std::string& allocation_id = rec.interval().allocation_id();
  if (rec.cap_gpu_ms() != 0) {
    const std::string cap_key = absl::StrCat("k/", allocation_id);
    store_->PutInt(cap_key, store_->GetInt(cap_key) - rec.cap_gpu_ms());
  }
  store_->Delete(Key("i/", {rec.source_id(), rec.event_id()}));
  store_->Delete(Key("x/", {allocation_id, rec.source_id(), rec.event_id()}));
}

// Recomputes the outage credits of an interval from its slices and every outage declared for
// its allocation so far: a slice's GPUs are credited up to the GPUs declared out at each instant.
void Engine::Recredit(v1::StoredInterval* rec) {
  for (const auto& c : rec->credits()) AddLine(c.period(), c.line_key(), -c.gpu_ms());
  rec->clear_credits();
  if (!allocations_with_outages_.contains(rec->interval().allocation_id())) return;
  std::vector<v1::StoredOutage> outages;
  store_->Scan(Key("o/", {rec->interval().allocation_id(), ""}),
               [&](std::string_view, std::string_view value) {
                 v1::StoredOutage o;
                 if (o.ParseFromString(std::string(value))) outages.push_back(o);
                 return true;
               });
  if (outages.empty()) return;
  const int64_t gpus = rec->interval().gpu_count();
  std::map<std::pair<std::string, std::string>, int64_t> credits;
  for (const auto& s : rec->slices()) {
    std::vector<int64_t> cuts{s.start_ms(), s.end_ms()};
    for (const auto& o : outages) {
      for (int64_t t : {o.start_ms(), o.end_ms()}) {
        if (t > s.start_ms() && t < s.end_ms()) cuts.push_back(t);
      }
    }
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
      int64_t out = 0;
      for (const auto& o : outages) {
        if (o.start_ms() <= cuts[i] && cuts[i] < o.end_ms()) out += o.gpu_count();
      }
      const int64_t credited = std::min(gpus, out);
      if (credited > 0) {
        credits[{s.period(), CreditKeyOf(s.line_key())}] -= credited * (cuts[i + 1] - cuts[i]);
      }
    }
  }
  for (const auto& [where, gpu_ms] : credits) {
    v1::StoredPart* part = rec->add_credits();
    part->set_period(where.first);
    part->set_line_key(where.second);
    part->set_gpu_ms(gpu_ms);
    AddLine(where.first, where.second, gpu_ms);
  }
}

// Usage of an allocation after its (amended) end stops counting.
void Engine::Truncate(const std::string& allocation_id, int64_t end_ms) {
  std::vector<std::string> keys;
  store_->Scan(Key("x/", {allocation_id, ""}), [&](std::string_view key, std::string_view) {
    keys.push_back(absl::StrCat("i/", std::string(key.substr(3 + allocation_id.size()))));
    return true;
  });
  for (const std::string& key : keys) {
    auto bytes = store_->Get(key);
    v1::StoredInterval rec;
    if (!bytes || !rec.ParseFromString(*bytes)) continue;
    if (rec.interval().end_ms() <= end_ms) continue;
    const int64_t gpus = rec.interval().gpu_count();
    v1::StoredInterval kept = rec;
    kept.clear_slices();
    for (const auto& s : rec.slices()) {
      if (s.end_ms() <= end_ms) {
        *kept.add_slices() = s;
        continue;
      }
      const int64_t from = std::max(s.start_ms(), end_ms);
      AddLine(s.period(), s.line_key(), -gpus * (s.end_ms() - from));
      AddDaily(rec.source_id(), from, s.end_ms(), -gpus);
      if (s.start_ms() < end_ms) {
        v1::StoredSlice* t = kept.add_slices();
        *t = s;
        t->set_end_ms(end_ms);
      }
    }
    Recredit(&kept);
    store_->Put(key, kept.SerializeAsString());
  }
}

absl::Status Engine::ApplyUsage(uint64_t seq, const std::string& source_id,
                                const v1::UsageEvent& event) {
  switch (event.body_case()) {
    case v1::UsageEvent::kUsage:
      AddInterval(seq, source_id, event.event_id(), event.usage());
      break;
    case v1::UsageEvent::kCorrection: {
      const auto& c = event.correction();
      auto bytes = store_->Get(Key("i/", {source_id, c.target_event_id()}));
      v1::StoredInterval target;
      if (!bytes || !target.ParseFromString(*bytes)) {
        const int64_t at = c.has_replacement() ? c.replacement().start_ms() : event.emitted_at_ms();
        AddUnpriced(base::PeriodOf(at).ToString(), seq, source_id, event.event_id(),
                    absl::StrCat("correction of unknown usage event '", c.target_event_id(), "'"),
                    nullptr);
        break;
      }
      // The correction takes the target's place (and may itself be corrected later).
      RemoveInterval(target);
      if (c.has_replacement()) AddInterval(seq, source_id, event.event_id(), c.replacement());
      break;
    }
    case v1::UsageEvent::kOwnUse: {
      const auto& o = event.own_use();
      ForEachPeriod(o.start_ms(), o.end_ms(), [&](Period p, int64_t lo, int64_t hi) {
        const std::string rest =
            Key("", {p.ToString(), source_id, Pad(o.program(), 2), Pad(o.gpu_model(), 2)});
        const std::string key = absl::StrCat("w/", rest);
        store_->PutInt(key, store_->GetInt(key) + int64_t{o.gpu_count()} * (hi - lo));
        // Own use of a closed period: an adjustment on the first open period's statement.
        if (IsClosed(p.ToString())) store_->Put(absl::StrCat("tw/", rest), "");
      });
      break;
    }
    case v1::UsageEvent::kOutage: {
      const auto& o = event.outage();
      v1::Program program = o.program();
      v1::GpuModel model = o.gpu_model();
      const v1::Allocation* alloc =
          o.allocation_id().empty() ? nullptr : registry_.FindAllocation(o.allocation_id());
      if (alloc != nullptr) {
        program = alloc->program();
        model = alloc->gpu_model();
      }
      const std::string scope = o.allocation_id().empty() ? "pool" : "allocation";
      ForEachPeriod(o.start_ms(), o.end_ms(), [&](Period p, int64_t lo, int64_t hi) {
        const std::string rest =
            Key("", {p.ToString(), source_id, Pad(program, 2), Pad(model, 2), scope, o.cause()});
        const std::string key = absl::StrCat("d/", rest);
        store_->PutInt(key, store_->GetInt(key) + int64_t{o.gpu_count()} * (hi - lo));
        if (IsClosed(p.ToString())) store_->Put(absl::StrCat("td/", rest), "");
      });
      if (alloc != nullptr) {
        v1::StoredOutage stored;
        stored.set_seq(seq);
        stored.set_start_ms(o.start_ms());
        stored.set_end_ms(o.end_ms());
        stored.set_gpu_count(o.gpu_count());
        store_->Put(Key("o/", {alloc->allocation_id(), Seq(seq)}), stored.SerializeAsString());
        allocations_with_outages_.insert(alloc->allocation_id());
        std::vector<std::string> keys;
        store_->Scan(
            Key("x/", {alloc->allocation_id(), ""}), [&](std::string_view key, std::string_view) {
              keys.push_back(
                  absl::StrCat("i/", std::string(key.substr(3 + alloc->allocation_id().size()))));
              return true;
            });
        for (const std::string& key : keys) {
          auto bytes = store_->Get(key);
          v1::StoredInterval rec;
          if (!bytes || !rec.ParseFromString(*bytes)) continue;
          if (rec.interval().end_ms() <= o.start_ms() || rec.interval().start_ms() >= o.end_ms()) {
            continue;
          }
          Recredit(&rec);
          store_->Put(key, rec.SerializeAsString());
        }
      }
      break;
    }
    default:
      break;
  }
  return absl::OkStatus();
}

absl::Status Engine::Close(uint64_t seq, const v1::RegistryEvent& event) {
  GPULEDGER_ASSIGN_OR_RETURN(Period period, base::ParsePeriod(event.period_close().period()));
  const std::string p = period.ToString();
  GPULEDGER_ASSIGN_OR_RETURN(v1::PeriodDocuments docs, Draft(period, DocumentFilter{}));
  docs.set_closed(true);
  docs.set_covered_seq(seq - 1);
  docs.set_close_seq(seq);
  docs.set_closed_at_ms(event.emitted_at_ms());
  for (const auto& inv : docs.invoices()) {
    auto* d = docs.add_digests();
    d->set_document(absl::StrCat("invoice/", inv.institution_id()));
    d->set_sha256(DigestHex(InvoiceJson(inv)));
  }
  for (const auto& st : docs.statements()) {
    auto* d = docs.add_digests();
    d->set_document(absl::StrCat("statement/", st.csp_id()));
    d->set_sha256(DigestHex(StatementJson(st)));
  }
  for (const auto& ps : docs.programs()) {
    auto* d = docs.add_digests();
    d->set_document(absl::StrCat("program/", v1::Program_Name(ps.program())));
    d->set_sha256(DigestHex(ProgramJson(ps)));
  }
  std::string frozen;
  google::protobuf::io::StringOutputStream sink(&frozen);
  {
    google::protobuf::io::CodedOutputStream out(&sink);
    out.SetSerializationDeterministic(true);
    docs.SerializeToCodedStream(&out);
  }
  store_->Put(absl::StrCat("f/", p), frozen);
  store_->Put(absl::StrCat("c/", p), absl::StrCat(seq));

  // What is billed now: this period's lines, and the adjustments it carries for earlier ones.
  auto bill = [&](const std::string& period, const std::string& institution_id,
                  const v1::InvoiceLine& l) {
    LineId id{institution_id, l.allocation_id(),    l.gpu_model(), l.krw_per_gpu_hour(),
              l.copay_bp(),   l.institution_type(), l.kind()};
    const std::string key = Key("b/", {period, EncodeLine(id)});
    v1::BilledLine b;
    if (auto bytes = store_->Get(key)) b.ParseFromString(*bytes);
    b.set_gpu_ms(b.gpu_ms() + l.gpu_ms());
    b.set_list_krw(b.list_krw() + l.list_krw());
    b.set_copay_krw(b.copay_krw() + l.copay_krw());
    b.set_subsidy_krw(b.subsidy_krw() + l.subsidy_krw());
    store_->Put(key, b.SerializeAsString());
  };
  for (const auto& inv : docs.invoices()) {
    for (const auto& l : inv.lines()) bill(p, inv.institution_id(), l);
    for (const auto& l : inv.adjustments()) bill(l.adjusts_period(), inv.institution_id(), l);
  }
  // Own use and outages as billed: this period's, plus the adjustments it carries.
  auto bill_own_use = [&](const std::string& period, const std::string& csp,
                          const v1::OwnUseRow& row) {
    const std::string key =
        Key("bw/", {period, csp, Pad(row.program(), 2), Pad(row.gpu_model(), 2)});
    v1::OwnUseRow b;
    if (auto bytes = store_->Get(key)) {
      b.ParseFromString(*bytes);
    } else {
      // First billing of this pool for the period: its capacity, allowance and rate are fixed
      // from now on, as prices are (docs/SETTLEMENT.md).
      b = row;
      b.clear_own_use_gpu_ms();
      b.clear_excess_gpu_ms();
      b.clear_excess_value_krw();
      b.clear_adjusts_period();
    }
    b.set_own_use_gpu_ms(b.own_use_gpu_ms() + row.own_use_gpu_ms());
    b.set_excess_gpu_ms(b.excess_gpu_ms() + row.excess_gpu_ms());
    b.set_excess_value_krw(b.excess_value_krw() + row.excess_value_krw());
    store_->Put(key, b.SerializeAsString());
  };
  auto bill_outage = [&](const std::string& period, const std::string& csp,
                         const v1::OutageRow& row) {
    const std::string key = Key("bd/", {period, csp, Pad(row.program(), 2), Pad(row.gpu_model(), 2),
                                        row.scope(), row.cause()});
    store_->PutInt(key, store_->GetInt(key) + row.gpu_ms());
  };
  for (const auto& st : docs.statements()) {
    for (const auto& row : st.own_use()) bill_own_use(p, st.csp_id(), row);
    for (const auto& row : st.own_use_adjustments()) {
      bill_own_use(row.adjusts_period(), st.csp_id(), row);
    }
    for (const auto& row : st.outages()) bill_outage(p, st.csp_id(), row);
    for (const auto& row : st.outage_adjustments()) {
      bill_outage(row.adjusts_period(), st.csp_id(), row);
    }
  }
  std::vector<std::string> touched;
  for (const char* prefix : {"t/", "tw/", "td/"}) {
    store_->Scan(prefix, [&](std::string_view key, std::string_view) {
      touched.emplace_back(key);
      return true;
    });
  }
  for (const auto& key : touched) store_->Delete(key);
  closed_.insert(p);
  return absl::OkStatus();
}

absl::StatusOr<v1::PeriodDocuments> Engine::Documents(Period period, const DocumentFilter& filter) {
  const std::string p = period.ToString();
  if (IsClosed(p)) {
    auto bytes = store_->Get(absl::StrCat("f/", p));
    v1::PeriodDocuments docs;
    if (!bytes || !docs.ParseFromString(*bytes)) {
      return absl::DataLossError(
          absl::StrCat("settlement store: frozen documents of ", p, " are missing or unreadable"));
    }
    {
      auto keep = [&](auto* list, auto pred) {
        auto* l = list;
        l->erase(std::remove_if(l->begin(), l->end(), [&](const auto& x) { return !pred(x); }),
                 l->end());
      };
      keep(docs.mutable_invoices(), [&](const v1::Invoice& i) {
        return filter.invoices &&
               (!filter.institution_id || i.institution_id() == *filter.institution_id);
      });
      keep(docs.mutable_statements(), [&](const v1::CspStatement& s) {
        return filter.statements && (!filter.csp_id || s.csp_id() == *filter.csp_id);
      });
      if (!filter.programs) docs.clear_programs();
    }
    return docs;
  }
  return Draft(period, filter);
}

absl::StatusOr<v1::OwnUseRow> Engine::OwnUseRowFor(const std::string& csp, int program, int model,
                                                   Period period, int64_t own) const {
  const auto prog = static_cast<v1::Program>(program);
  const auto gpu_model = static_cast<v1::GpuModel>(model);
  const int64_t last_ms = period.EndMs() - 1;
  const auto* pool = registry_.Pool(csp, prog, gpu_model);
  const auto* caps = registry_.OwnUseCaps(csp);
  int64_t capacity = 0;
  __int128 allowed_num = 0;
  if (pool != nullptr) {
    pool->ForEachWithin(period.StartMs(), period.EndMs(),
                        [&](int64_t from, int64_t to, uint32_t gpus) {
                          capacity += int64_t{gpus} * (to - from);
                          if (caps == nullptr) return;
                          caps->ForEachWithin(from, to, [&](int64_t a, int64_t b, uint32_t bp) {
                            allowed_num += static_cast<__int128>(gpus) * (b - a) * bp;
                          });
                        });
  }
  GPULEDGER_ASSIGN_OR_RETURN(int64_t allowed, DivRound(allowed_num, base::kBasisPointsPerUnit));
  int64_t share = 0;
  if (capacity > 0) {
    GPULEDGER_ASSIGN_OR_RETURN(
        share, DivRound(static_cast<__int128>(own) * base::kBasisPointsPerUnit, capacity));
  }
  v1::OwnUseRow row;
  row.set_program(prog);
  row.set_gpu_model(gpu_model);
  row.set_own_use_gpu_ms(own);
  row.set_capacity_gpu_ms(capacity);
  row.set_share_bp(static_cast<uint32_t>(share));
  row.set_cap_bp(caps != nullptr ? caps->At(last_ms).value_or(0) : 0);
  row.set_allowed_gpu_ms(allowed);
  row.set_excess_gpu_ms(std::max<int64_t>(0, own - allowed));
  const auto rate = registry_.RateAt(prog, gpu_model, last_ms);
  row.set_krw_per_gpu_hour(rate.value_or(0));
  if (rate) {
    GPULEDGER_ASSIGN_OR_RETURN(base::Krw value,
                               base::ListPrice(base::GpuMs{row.excess_gpu_ms()}, base::Krw{*rate}));
    row.set_excess_value_krw(value.won);
  }
  return row;
}

absl::StatusOr<v1::PeriodDocuments> Engine::Draft(Period period, const DocumentFilter& filter) {
  const std::string p = period.ToString();
  v1::PeriodDocuments docs;
  docs.set_period(p);
  docs.set_covered_seq(applied_through_);
  const int64_t last_ms = period.EndMs() - 1;
  // Only one institution's invoice wanted: read only its lines.
  const bool one_invoice = filter.institution_id && !filter.statements && !filter.programs;
  const std::string scope = one_invoice ? Key("", {*filter.institution_id, ""}) : "";

  auto make_line = [&](const LineId& id, int64_t gpu_ms) -> absl::StatusOr<v1::InvoiceLine> {
    v1::InvoiceLine line;
    line.set_allocation_id(id.allocation_id);
    line.set_kind(static_cast<v1::LineKind>(id.kind));
    line.set_gpu_model(static_cast<v1::GpuModel>(id.model));
    line.set_institution_type(static_cast<v1::InstitutionType>(id.type));
    line.set_krw_per_gpu_hour(id.rate);
    line.set_copay_bp(static_cast<uint32_t>(id.copay_bp));
    line.set_gpu_ms(gpu_ms);
    if (const v1::Allocation* a = registry_.FindAllocation(id.allocation_id)) {
      line.set_program(a->program());
      line.set_csp_id(a->csp_id());
    }
    GPULEDGER_RETURN_IF_ERROR(Price(&line));
    return line;
  };

  std::map<std::string, v1::Invoice> invoices;
  absl::Status error;
  store_->Scan(Key("l/", {p, scope}), [&](std::string_view key, std::string_view value) {
    LineId id;
    int64_t gpu_ms = 0;
    if (!DecodeLine(key.substr(3 + p.size()), &id) ||
        !absl::SimpleAtoi(std::string(value), &gpu_ms)) {
      error = absl::DataLossError(absl::StrCat("settlement store: bad line ", std::string(key)));
      return false;
    }
    auto line = make_line(id, gpu_ms);
    if (!line.ok()) {
      error = line.status();
      return false;
    }
    *invoices[id.institution_id].add_lines() = *std::move(line);
    return true;
  });
  GPULEDGER_RETURN_IF_ERROR(error);

  // Adjustments: on the first open period after the last close, for every closed period whose
  // lines changed since they were billed.
  const auto last_closed = registry_.last_closed();
  if (last_closed && period == last_closed->Next()) {
    store_->Scan("t/", [&](std::string_view key, std::string_view) {
      const std::string rest(key.substr(2));
      const size_t sep = rest.find(kSep);
      const std::string closed_period = rest.substr(0, sep);
      const std::string line_key = rest.substr(sep + 1);
      LineId id;
      if (!DecodeLine(line_key, &id)) {
        error = absl::DataLossError("settlement store: bad touched line");
        return false;
      }
      if (one_invoice && id.institution_id != *filter.institution_id) return true;
      auto now = make_line(id, store_->GetInt(Key("l/", {closed_period, line_key})));
      if (!now.ok()) {
        error = now.status();
        return false;
      }
      v1::BilledLine billed;
      if (auto bytes = store_->Get(Key("b/", {closed_period, line_key}))) {
        billed.ParseFromString(*bytes);
      }
      v1::InvoiceLine adj = *now;
      adj.set_gpu_ms(now->gpu_ms() - billed.gpu_ms());
      adj.set_list_krw(now->list_krw() - billed.list_krw());
      adj.set_copay_krw(now->copay_krw() - billed.copay_krw());
      adj.set_subsidy_krw(now->subsidy_krw() - billed.subsidy_krw());
      adj.set_adjusts_period(closed_period);
      if (!IsZero(adj)) *invoices[id.institution_id].add_adjustments() = std::move(adj);
      return true;
    });
    GPULEDGER_RETURN_IF_ERROR(error);
  }

  for (auto& [institution_id, inv] : invoices) {
    inv.set_period(p);
    inv.set_institution_id(institution_id);
    auto version = registry_.InstitutionAt(institution_id, last_ms);
    if (!version) version = registry_.InstitutionAt(institution_id, INT64_MAX);
    if (version) {
      inv.set_institution_name(version->name);
      inv.set_institution_type(version->type);
    }
    v1::Totals* t = inv.mutable_totals();
    for (const auto& l : inv.lines()) AddTo(t, l);
    for (const auto& l : inv.adjustments()) AddTo(t, l);
    GPULEDGER_ASSERT(t->list_krw() == t->copay_krw() + t->subsidy_krw(),
                     "invoice list = co-pay + subsidy");
    inv.set_vat_bp(static_cast<uint32_t>(options_.vat_bp));
    GPULEDGER_ASSIGN_OR_RETURN(base::Krw vat,
                               base::ApplyBasisPoints(base::Krw{t->copay_krw()}, options_.vat_bp));
    inv.set_vat_krw(vat.won);
    inv.set_amount_due_krw(t->copay_krw() + vat.won);
  }

  if (filter.invoices) {
    for (auto& [id, inv] : invoices) {
      if (filter.institution_id && id != *filter.institution_id) continue;
      *docs.add_invoices() = inv;
    }
  }

  // Unpriced usage of the period, in ledger order.
  if (!one_invoice) {
    store_->Scan(Key("u/", {p, ""}), [&](std::string_view, std::string_view value) {
      v1::Unpriced u;
      if (u.ParseFromString(std::string(value))) *docs.add_unpriced() = u;
      return true;
    });
  }
  if (!filter.statements && !filter.programs) return docs;

  // ---- CSP statements and programme summaries ----
  using PoolId = std::tuple<std::string, int, int>;  // CSP, programme, model
  std::map<PoolId, int64_t> usage, own_use, outage, capacity;
  std::map<std::string, v1::CspStatement> statements;
  std::map<std::tuple<std::string, int, std::string, int>, v1::Totals>
      delivered;  // csp,prog,inst,model
  std::map<std::tuple<std::string, std::string, int, std::string, int>, v1::Totals> adjusted;
  std::map<int, v1::ProgramSummary> programs;
  std::map<std::pair<int, int>, v1::Totals> by_type;                      // prog, type
  std::map<std::tuple<int, std::string, int>, v1::Totals> type_adjusted;  // prog, period, type
  for (const auto& [institution_id, inv] : invoices) {
    for (const auto& l : inv.lines()) {
      statements[l.csp_id()];
      programs[l.program()];
      AddTo(&delivered[{l.csp_id(), l.program(), institution_id, l.gpu_model()}], l);
      AddTo(&by_type[{l.program(), l.institution_type()}], l);
      usage[{l.csp_id(), l.program(), l.gpu_model()}] += l.gpu_ms();
    }
    for (const auto& l : inv.adjustments()) {
      statements[l.csp_id()];
      programs[l.program()];
      AddTo(&adjusted[{l.csp_id(), l.adjusts_period(), l.program(), institution_id, l.gpu_model()}],
            l);
      AddTo(&type_adjusted[{l.program(), l.adjusts_period(), l.institution_type()}], l);
    }
  }
  auto split = [](std::string_view key) {
    return std::vector<std::string>(absl::StrSplit(std::string(key), kSep));
  };
  store_->Scan(Key("w/", {p, ""}), [&](std::string_view key, std::string_view value) {
    auto f = split(key.substr(3 + p.size()));
    int prog = 0, model = 0;
    int64_t v = 0;
    if (f.size() == 3 && absl::SimpleAtoi(f[1], &prog) && absl::SimpleAtoi(f[2], &model) &&
        absl::SimpleAtoi(std::string(value), &v)) {
      statements[f[0]];
      own_use[{f[0], prog, model}] += v;
    }
    return true;
  });
  store_->Scan(Key("d/", {p, ""}), [&](std::string_view key, std::string_view value) {
    auto f = split(key.substr(3 + p.size()));
    int prog = 0, model = 0;
    int64_t v = 0;
    if (f.size() == 5 && absl::SimpleAtoi(f[1], &prog) && absl::SimpleAtoi(f[2], &model) &&
        absl::SimpleAtoi(std::string(value), &v)) {
      auto& st = statements[f[0]];
      v1::OutageRow* row = st.add_outages();
      row->set_program(static_cast<v1::Program>(prog));
      row->set_gpu_model(static_cast<v1::GpuModel>(model));
      row->set_scope(f[3]);
      row->set_cause(f[4]);
      row->set_gpu_ms(v);
      outage[{f[0], prog, model}] += v;
    }
    return true;
  });
  // Own use and outages recorded for closed periods after they closed.
  std::map<std::string, std::vector<v1::OwnUseRow>> own_use_adjusted;
  std::map<std::string, std::vector<v1::OutageRow>> outage_adjusted;
  if (last_closed && period == last_closed->Next()) {
    std::vector<std::string> own_keys, outage_keys;
    store_->Scan("tw/", [&](std::string_view key, std::string_view) {
      own_keys.emplace_back(key.substr(3));
      return true;
    });
    store_->Scan("td/", [&](std::string_view key, std::string_view) {
      outage_keys.emplace_back(key.substr(3));
      return true;
    });
    for (const std::string& rest : own_keys) {
      auto f = split(rest);
      int prog = 0, model = 0;
      if (f.size() != 4 || !absl::SimpleAtoi(f[2], &prog) || !absl::SimpleAtoi(f[3], &model)) {
        return absl::DataLossError("settlement store: bad own-use marker");
      }
      GPULEDGER_ASSIGN_OR_RETURN(Period closed_period, base::ParsePeriod(f[0]));
      const int64_t own_now = store_->GetInt(absl::StrCat("w/", rest));
      v1::OwnUseRow billed;
      v1::OwnUseRow row;
      if (auto bytes = store_->Get(absl::StrCat("bw/", rest))) {
        // Billed before: recompute with the capacity, allowance and rate it was billed with.
        billed.ParseFromString(*bytes);
        row = billed;
        row.set_own_use_gpu_ms(own_now);
        row.set_excess_gpu_ms(std::max<int64_t>(0, own_now - billed.allowed_gpu_ms()));
        int64_t share = 0;
        if (billed.capacity_gpu_ms() > 0) {
          GPULEDGER_ASSIGN_OR_RETURN(
              share, DivRound(static_cast<__int128>(own_now) * base::kBasisPointsPerUnit,
                              billed.capacity_gpu_ms()));
        }
        row.set_share_bp(static_cast<uint32_t>(share));
        GPULEDGER_ASSIGN_OR_RETURN(base::Krw value,
                                   base::ListPrice(base::GpuMs{row.excess_gpu_ms()},
                                                   base::Krw{billed.krw_per_gpu_hour()}));
        row.set_excess_value_krw(value.won);
      } else {
        GPULEDGER_ASSIGN_OR_RETURN(row, OwnUseRowFor(f[1], prog, model, closed_period, own_now));
      }
      row.set_own_use_gpu_ms(row.own_use_gpu_ms() - billed.own_use_gpu_ms());
      row.set_excess_gpu_ms(row.excess_gpu_ms() - billed.excess_gpu_ms());
      row.set_excess_value_krw(row.excess_value_krw() - billed.excess_value_krw());
      row.set_adjusts_period(f[0]);
      if (row.own_use_gpu_ms() == 0 && row.excess_gpu_ms() == 0 && row.excess_value_krw() == 0) {
        continue;
      }
      statements[f[1]];
      own_use_adjusted[f[1]].push_back(std::move(row));
    }
    for (const std::string& rest : outage_keys) {
      auto f = split(rest);
      int prog = 0, model = 0;
      if (f.size() != 6 || !absl::SimpleAtoi(f[2], &prog) || !absl::SimpleAtoi(f[3], &model)) {
        return absl::DataLossError("settlement store: bad outage marker");
      }
      const int64_t delta =
          store_->GetInt(absl::StrCat("d/", rest)) - store_->GetInt(absl::StrCat("bd/", rest));
      if (delta == 0) continue;
      v1::OutageRow row;
      row.set_program(static_cast<v1::Program>(prog));
      row.set_gpu_model(static_cast<v1::GpuModel>(model));
      row.set_scope(f[4]);
      row.set_cause(f[5]);
      row.set_gpu_ms(delta);
      row.set_adjusts_period(f[0]);
      statements[f[1]];
      outage_adjusted[f[1]].push_back(std::move(row));
    }
  }
  for (const auto& [csp, program, model] : registry_.Pools()) {
    int64_t cap = 0;
    registry_.Pool(csp, program, model)
        ->ForEachWithin(
            period.StartMs(), period.EndMs(),
            [&](int64_t from, int64_t to, uint32_t gpus) { cap += gpus * (to - from); });
    if (cap == 0) continue;
    capacity[{csp, program, model}] = cap;
    statements[csp];
    programs[program];
  }

  for (auto& [csp, st] : statements) {
    st.set_period(p);
    st.set_csp_id(csp);
    for (const auto& [key, totals] : delivered) {
      const auto& [c, prog, inst, model] = key;
      if (c != csp) continue;
      v1::DeliveredRow* row = st.add_delivered();
      row->set_program(static_cast<v1::Program>(prog));
      row->set_institution_id(inst);
      row->set_gpu_model(static_cast<v1::GpuModel>(model));
      *row->mutable_totals() = totals;
      AddTotals(st.mutable_totals(), totals);
    }
    for (const auto& [key, totals] : adjusted) {
      const auto& [c, adj_period, prog, inst, model] = key;
      if (c != csp) continue;
      v1::DeliveredRow* row = st.add_adjustments();
      row->set_program(static_cast<v1::Program>(prog));
      row->set_institution_id(inst);
      row->set_gpu_model(static_cast<v1::GpuModel>(model));
      *row->mutable_totals() = totals;
      row->set_adjusts_period(adj_period);
      AddTotals(st.mutable_totals(), totals);
    }
    // Every pool, plus whatever used GPUs of a (programme, model) without a pool record.
    std::set<std::pair<int, int>> pools;
    for (const auto* m : {&usage, &own_use, &outage, &capacity}) {
      for (const auto& [key, v] : *m) {
        if (std::get<0>(key) == csp) pools.insert({std::get<1>(key), std::get<2>(key)});
      }
    }
    const auto* caps = registry_.OwnUseCaps(csp);
    const std::optional<uint32_t> cap_bp = caps ? caps->At(last_ms) : std::nullopt;
    st.set_own_use_cap_bp(cap_bp.value_or(0));
    for (const auto& [prog, model] : pools) {
      const PoolId id{csp, prog, model};
      const int64_t cap = capacity.contains(id) ? capacity[id] : 0;
      const int64_t used = usage.contains(id) ? usage[id] : 0;
      const int64_t own = own_use.contains(id) ? own_use[id] : 0;
      const int64_t out = outage.contains(id) ? outage[id] : 0;
      v1::CapacityRow* row = st.add_capacity();
      row->set_program(static_cast<v1::Program>(prog));
      row->set_gpu_model(static_cast<v1::GpuModel>(model));
      row->set_capacity_gpu_ms(cap);
      row->set_program_usage_gpu_ms(used);
      row->set_own_use_gpu_ms(own);
      row->set_outage_gpu_ms(out);
      row->set_idle_gpu_ms(cap - used - own - out);
      row->set_oversubscribed(row->idle_gpu_ms() < 0);
      GPULEDGER_ASSERT(row->capacity_gpu_ms() == row->program_usage_gpu_ms() +
                                                     row->own_use_gpu_ms() + row->outage_gpu_ms() +
                                                     row->idle_gpu_ms(),
                       "capacity identity");
      // Own use: against the capacity of government-owned pools, and of any pool the CSP
      // reported own use on.
      if (own == 0 && prog != v1::GOV_ADVANCED) continue;
      if (own == 0 && cap == 0) continue;
      GPULEDGER_ASSIGN_OR_RETURN(v1::OwnUseRow own_row,
                                 OwnUseRowFor(csp, prog, model, period, own));
      v1::OwnUseRow* ou = st.add_own_use();
      *ou = std::move(own_row);
      st.set_own_use_gpu_ms(st.own_use_gpu_ms() + own);
      st.set_hosted_capacity_gpu_ms(st.hosted_capacity_gpu_ms() + cap);
      st.set_own_use_excess_gpu_ms(st.own_use_excess_gpu_ms() + ou->excess_gpu_ms());
      st.set_own_use_excess_value_krw(st.own_use_excess_value_krw() + ou->excess_value_krw());
    }
    if (st.hosted_capacity_gpu_ms() > 0) {
      GPULEDGER_ASSIGN_OR_RETURN(
          int64_t share,
          DivRound(static_cast<__int128>(st.own_use_gpu_ms()) * base::kBasisPointsPerUnit,
                   st.hosted_capacity_gpu_ms()));
      st.set_own_use_share_bp(static_cast<uint32_t>(share));
    }
    for (auto& row : own_use_adjusted[csp]) *st.add_own_use_adjustments() = std::move(row);
    for (auto& row : outage_adjusted[csp]) *st.add_outage_adjustments() = std::move(row);
    if (filter.statements && (!filter.csp_id || csp == *filter.csp_id)) {
      *docs.add_statements() = st;
    }
  }

  if (filter.programs) {
    for (auto& [prog, ps] : programs) {
      ps.set_period(p);
      ps.set_program(static_cast<v1::Program>(prog));
      for (const auto& [key, totals] : by_type) {
        if (key.first != prog) continue;
        v1::TypeRow* row = ps.add_by_type();
        row->set_institution_type(static_cast<v1::InstitutionType>(key.second));
        *row->mutable_totals() = totals;
        AddTotals(ps.mutable_totals(), totals);
        ps.set_usage_gpu_ms(ps.usage_gpu_ms() + totals.gpu_ms());
      }
      for (const auto& [key, totals] : type_adjusted) {
        const auto& [pr, adj_period, type] = key;
        if (pr != prog) continue;
        v1::TypeRow* row = ps.add_adjustments();
        row->set_institution_type(static_cast<v1::InstitutionType>(type));
        row->set_adjusts_period(adj_period);
        *row->mutable_totals() = totals;
        AddTotals(ps.mutable_totals(), totals);
      }
      for (const auto& [id, cap] : capacity) {
        if (std::get<1>(id) == prog) ps.set_capacity_gpu_ms(ps.capacity_gpu_ms() + cap);
      }
      if (ps.capacity_gpu_ms() > 0) {
        GPULEDGER_ASSIGN_OR_RETURN(int64_t u, DivRound(static_cast<__int128>(ps.usage_gpu_ms()) *
                                                           base::kBasisPointsPerUnit,
                                                       ps.capacity_gpu_ms()));
        ps.set_utilisation_bp(static_cast<uint32_t>(std::max<int64_t>(0, u)));
      }
      *docs.add_programs() = ps;
    }
  }
  return docs;
}

std::vector<CloseRecord> Engine::Closes() {
  std::vector<CloseRecord> out;
  for (const std::string& p : closed_) {
    auto bytes = store_->Get(absl::StrCat("f/", p));
    v1::PeriodDocuments docs;
    if (!bytes || !docs.ParseFromString(*bytes)) continue;
    CloseRecord r;
    r.period = *base::ParsePeriod(p);
    r.close_seq = docs.close_seq();
    r.covered_seq = docs.covered_seq();
    r.closed_at_ms = docs.closed_at_ms();
    for (const auto& d : docs.digests()) r.digests.emplace_back(d.document(), d.sha256());
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<uint64_t> CatchUp(const ledger::Ledger& ledger, Engine* engine,
                                 const CatchUpOptions& options) {
  const uint64_t head = ledger.head().seq;
  const uint64_t target = options.until_seq == 0 ? head : std::min(options.until_seq, head);
  const uint64_t from = engine->applied_through();
  if (from > head) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the settlement store has applied entries up to ", from, " but the ledger ends at ", head,
        ": the store belongs to another ledger; delete it (it is derived data) and settle again"));
  }
  if (from > 0) {
    GPULEDGER_ASSIGN_OR_RETURN(ledger::StoredEntry last, ledger.Get(from));
    if (ledger::ToHex(last.hash) != engine->applied_hash()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the settlement store's entry ", from,
          " has another hash than the ledger's: the store belongs to another ledger; delete it "
          "(it is derived data) and settle again"));
    }
  }
  if (from >= target) return uint64_t{0};
  uint64_t applied = 0;
  absl::Status st =
      ledger.Scan(from + 1, [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
        if (e.seq > target) return false;
        GPULEDGER_RETURN_IF_ERROR(engine->Apply(e));
        ++applied;
        if (applied % options.batch == 0) {
          GPULEDGER_RETURN_IF_ERROR(engine->Commit());
          if (options.progress) options.progress(e.seq, target);
        }
        return true;
      });
  GPULEDGER_RETURN_IF_ERROR(st);
  GPULEDGER_RETURN_IF_ERROR(engine->Commit());
  if (options.progress) options.progress(engine->applied_through(), target);
  return applied;
}

absl::StatusOr<Settlement> OpenSettlement(const std::string& store_path,
                                          const ledger::Ledger& ledger,
                                          const SettleOptions& options,
                                          const StoreOptions& store_options,
                                          const CatchUpOptions& catch_up) {
  Settlement s;
  GPULEDGER_ASSIGN_OR_RETURN(s.store, Store::Open(store_path, store_options));
  GPULEDGER_ASSIGN_OR_RETURN(s.engine, Engine::Open(s.store.get(), options));
  if (!store_options.read_only) {
    GPULEDGER_RETURN_IF_ERROR(CatchUp(ledger, s.engine.get(), catch_up).status());
  }
  return s;
}

}  // namespace gpuledger::settlement
