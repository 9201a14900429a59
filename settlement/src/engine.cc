#include "settlement/engine.h"

#include <algorithm>
#include <limits>
#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/assert.h"
#include "base/money.h"
#include "base/status.h"
#include "counters.h"
#include "gpuledger/v1/registry.pb.h"
#include "keys.h"
#include "ledger/hash.h"
#include "settlement/render.h"

namespace gpuledger::settlement {

namespace v1 = gpuledger::v1;
using base::Period;
using keys::KeyBuilder;
using keys::KeyReader;

namespace {

// A line's identity within a period. Encoded (keys.h) so that byte order is the order of lines
// on an invoice: institution, allocation, model, rate, co-pay rate, institution type, kind.
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
  return KeyBuilder()
      .Str(l.institution_id)
      .Str(l.allocation_id)
      .U32(static_cast<uint32_t>(l.model))
      .I64(l.rate)
      .I64(l.copay_bp)
      .U32(static_cast<uint32_t>(l.type))
      .U32(static_cast<uint32_t>(l.kind))
      .Take();
}

bool DecodeLine(KeyReader* r, LineId* out) {
  uint32_t model = 0, type = 0, kind = 0;
  if (!r->Str(&out->institution_id) || !r->Str(&out->allocation_id) || !r->U32(&model) ||
      !r->I64(&out->rate) || !r->I64(&out->copay_bp) || !r->U32(&type) || !r->U32(&kind)) {
    return false;
  }
  out->model = static_cast<int>(model);
  out->type = static_cast<int>(type);
  out->kind = static_cast<int>(kind);
  return true;
}

bool DecodeLine(std::string_view encoded, LineId* out) {
  KeyReader r(encoded);
  return DecodeLine(&r, out) && r.Done();
}

std::string CreditKeyOf(const std::string& usage_key) {
  LineId id;
  if (!DecodeLine(usage_key, &id)) return usage_key;  // never: we wrote it
  id.kind = v1::LINE_KIND_OUTAGE_CREDIT;
  return EncodeLine(id);
}

// `prefix` period line.
std::string LineKey(std::string_view prefix, std::string_view period, std::string_view line) {
  return KeyBuilder(prefix).Str(period).Raw(line).Take();
}

// A pool of a period (own use, outages): period csp program model.
std::string PoolRest(std::string_view period, std::string_view csp, int program, int model) {
  return KeyBuilder()
      .Str(period)
      .Str(csp)
      .U32(static_cast<uint32_t>(program))
      .U32(static_cast<uint32_t>(model))
      .Take();
}

std::string OutageRest(std::string_view period, std::string_view csp, int program, int model,
                       std::string_view scope, std::string_view cause) {
  return KeyBuilder().Raw(PoolRest(period, csp, program, model)).Str(scope).Str(cause).Take();
}

struct PoolFields {
  std::string period;
  std::string csp;
  int program = 0;
  int model = 0;
  std::string scope;  // outages only
  std::string cause;  // outages only
};

bool DecodePool(std::string_view rest, bool outage, PoolFields* out) {
  KeyReader r(rest);
  uint32_t prog = 0, model = 0;
  if (!r.Str(&out->period) || !r.Str(&out->csp) || !r.U32(&prog) || !r.U32(&model)) return false;
  out->program = static_cast<int>(prog);
  out->model = static_cast<int>(model);
  if (outage && (!r.Str(&out->scope) || !r.Str(&out->cause))) return false;
  return r.Done();
}

// The GPU-ms of `gpus` GPUs over [start_ms, end_ms): 128 bits never overflow here.
__int128 GpuMsOf(int64_t gpus, int64_t start_ms, int64_t end_ms) {
  return static_cast<__int128>(gpus) *
         (static_cast<__int128>(end_ms) - static_cast<__int128>(start_ms));
}

__int128 PartGpuMs(const v1::StoredPart& part) {
  return keys::DecodeI128(part.gpu_ms_i128()).value_or(0);  // we wrote it: 16 bytes
}

// The keys of the stored intervals of an allocation (x/ allocation source event → i/ source
// event).
std::vector<std::string> IntervalKeysOf(Store* store, const std::string& allocation_id) {
  const std::string prefix = KeyBuilder(keys::kAllocationIndex).Str(allocation_id).Take();
  std::vector<std::string> out;
  store->Scan(prefix, [&](std::string_view key, std::string_view) {
    out.push_back(absl::StrCat(keys::kInterval, std::string(key.substr(prefix.size()))));
    return true;
  });
  return out;
}

std::string OutsideWhy(std::string_view what) {
  return absl::StrCat(std::string(what), " outside the periods settlement knows (",
                      base::kFirstPeriod.ToString(), " to ", base::kLastPeriod.ToString(),
                      " KST) is not counted");
}

absl::Status Price(v1::InvoiceLine* line) {
  GPULEDGER_ASSIGN_OR_RETURN(base::Krw list, base::ListPrice(base::GpuMs{line->gpu_ms()},
                                                             base::Krw{line->krw_per_gpu_hour()}));
  GPULEDGER_ASSIGN_OR_RETURN(base::Krw copay, base::ApplyBasisPoints(list, line->copay_bp()));
  line->set_list_krw(list.won);
  line->set_copay_krw(copay.won);
  GPULEDGER_ASSIGN_OR_RETURN(int64_t subsidy,
                             base::CheckedSub(list.won, copay.won, "the line's subsidy"));
  line->set_subsidy_krw(subsidy);
  return absl::OkStatus();
}

absl::Status AddTotals(v1::Totals* t, const v1::Totals& o) {
  GPULEDGER_ASSIGN_OR_RETURN(int64_t gpu_ms, base::CheckedAdd(t->gpu_ms(), o.gpu_ms(), "GPU-ms"));
  GPULEDGER_ASSIGN_OR_RETURN(int64_t list,
                             base::CheckedAdd(t->list_krw(), o.list_krw(), "the list total"));
  GPULEDGER_ASSIGN_OR_RETURN(int64_t copay,
                             base::CheckedAdd(t->copay_krw(), o.copay_krw(), "the co-pay total"));
  GPULEDGER_ASSIGN_OR_RETURN(
      int64_t subsidy, base::CheckedAdd(t->subsidy_krw(), o.subsidy_krw(), "the subsidy total"));
  t->set_gpu_ms(gpu_ms);
  t->set_list_krw(list);
  t->set_copay_krw(copay);
  t->set_subsidy_krw(subsidy);
  return absl::OkStatus();
}

v1::Totals TotalsOf(const v1::InvoiceLine& l) {
  v1::Totals t;
  t.set_gpu_ms(l.gpu_ms());
  t.set_list_krw(l.list_krw());
  t.set_copay_krw(l.copay_krw());
  t.set_subsidy_krw(l.subsidy_krw());
  return t;
}

absl::Status AddTo(v1::Totals* t, const v1::InvoiceLine& l) { return AddTotals(t, TotalsOf(l)); }

bool IsZero(const v1::InvoiceLine& l) {
  return l.gpu_ms() == 0 && l.list_krw() == 0 && l.copay_krw() == 0 && l.subsidy_krw() == 0;
}

absl::StatusOr<int64_t> DivRound(__int128 num, int64_t den) {
  return base::DivRoundHalfAwayFromZero(num, den);
}

// A failed sum or price of one document: the first reason is kept.
void NoteError(std::map<std::string, std::string>* errors, const std::string& document,
               const absl::Status& status) {
  if (status.ok()) return;
  errors->emplace(document, std::string(status.message()));
}

std::string InvoiceDoc(std::string_view institution_id) {
  return absl::StrCat("invoice/", std::string(institution_id));
}
std::string StatementDoc(std::string_view csp_id) {
  return absl::StrCat("statement/", std::string(csp_id));
}
std::string ProgramDoc(int program) {
  return absl::StrCat("program/", v1::Program_Name(static_cast<v1::Program>(program)));
}

}  // namespace

std::string DigestHex(const std::string& canonical_json) {
  return ledger::ToHex(ledger::Sha256(canonical_json));
}

Engine::Engine(Store* store, SettleOptions options)
    : store_(store), options_(options), counters_(std::make_unique<Counters>(store)) {}
Engine::~Engine() = default;

std::string Engine::applied_hash() const {
  return applied_through_ == 0 ? std::string() : ledger::ToHex(applied_hash_);
}

namespace {
bool StoreNeedsRebuild(Store* store) {
  if (auto format = store->Get(keys::kFormatKey)) return *format != keys::kFormatValue;
  bool empty = true;
  store->Scan("", [&](std::string_view, std::string_view) {
    empty = false;
    return false;
  });
  return !empty;
}
}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Open(Store* store, const SettleOptions& options) {
  std::unique_ptr<Engine> engine(new Engine(store, options));
  if (StoreNeedsRebuild(store)) {
    const auto format = store->Get(keys::kFormatKey);
    return absl::FailedPreconditionError(absl::StrCat(
        "settlement store ", store->path(), " has the format '",
        format.value_or("gpuledger-settlement/1"), "', not '", keys::kFormatValue,
        "'; it is derived data: `gpuledger settle` rebuilds it from the ledger (or delete it)"));
  }
  store->Put(keys::kFormatKey, keys::kFormatValue);
  const std::string stamp = absl::StrCat("vat_bp=", options.vat_bp);
  if (auto existing = store->Get(keys::kOptionsKey)) {
    if (*existing != stamp) {
      return absl::FailedPreconditionError(absl::StrCat(
          "settlement store ", store->path(), " was built with ", *existing, ", not ", stamp,
          "; use the same options or rebuild the store (delete it: it is derived data)"));
    }
  } else {
    store->Put(keys::kOptionsKey, stamp);
  }
  if (auto applied = store->Get(keys::kAppliedKey)) {
    KeyReader r(*applied);
    const bool readable = r.U64(&engine->applied_through_) &&
                          (r.Done() ? engine->applied_through_ == 0
                                    : ledger::FromBytes(r.rest(), &engine->applied_hash_));
    if (!readable) return absl::DataLossError("settlement store: unreadable s/applied");
  }
  absl::Status bad;
  store->Scan(keys::kRegistry, [&](std::string_view key, std::string_view value) {
    v1::RegistryEvent e;
    if (!e.ParseFromString(std::string(value))) {
      KeyReader r(key);
      uint64_t seq = 0;
      (void)(r.Prefix(keys::kRegistry) && r.U64(&seq));
      bad = absl::DataLossError(
          absl::StrCat("settlement store: bad registry record of ledger entry ", seq));
      return false;
    }
    engine->registry_.Apply(e);
    return true;
  });
  GPULEDGER_RETURN_IF_ERROR(bad);
  store->Scan(keys::kOutageRecord, [&](std::string_view key, std::string_view) {
    KeyReader r(key);
    std::string allocation_id;
    if (!r.Prefix(keys::kOutageRecord) || !r.Str(&allocation_id)) {
      bad = absl::DataLossError("settlement store: bad outage record key");
      return false;
    }
    engine->allocations_with_outages_.insert(std::move(allocation_id));
    return true;
  });
  GPULEDGER_RETURN_IF_ERROR(bad);
  store->Scan(keys::kClose, [&](std::string_view key, std::string_view) {
    KeyReader r(key);
    std::string period;
    if (!r.Prefix(keys::kClose) || !r.Str(&period) || !r.Done()) {
      bad = absl::DataLossError("settlement store: bad close record key");
      return false;
    }
    engine->closed_.insert(std::move(period));
    return true;
  });
  GPULEDGER_RETURN_IF_ERROR(bad);
  return engine;
}

absl::Status Engine::Commit() {
  counters_->Flush();
  std::string applied = keys::EncodeU64(applied_through_);
  if (applied_through_ > 0) applied.append(ledger::ToBytes(applied_hash_));
  store_->Put(keys::kAppliedKey, applied);
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
  applied_hash_ = e.hash;
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
  store_->Put(KeyBuilder(keys::kRegistry).U64(seq).key(), bytes);
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

void Engine::AddLine(const std::string& period, const std::string& line_key, __int128 gpu_ms) {
  if (gpu_ms == 0) return;
  const std::string key = LineKey(keys::kLine, period, line_key);
  counters_->Add(key, gpu_ms);
  if (IsClosed(period)) store_->Put(LineKey(keys::kTouchedLine, period, line_key), "");
}

void Engine::AddDaily(const std::string& csp, int64_t start_ms, int64_t end_ms, int64_t gpus) {
  constexpr int64_t kDay = 24 * base::kMsPerHour;
  for (int64_t t = start_ms; t < end_ms;) {
    const Period p = base::PeriodOf(t);
    const int64_t day = (t - p.StartMs()) / kDay;
    const int64_t day_end = std::min(end_ms, p.StartMs() + (day + 1) * kDay);
    const std::string key = KeyBuilder(keys::kDaily)
                                .Str(p.ToString())
                                .Str(csp)
                                .U32(static_cast<uint32_t>(day + 1))
                                .Take();
    counters_->Add(key, GpuMsOf(gpus, t, day_end));
    t = day_end;
  }
}

std::vector<int64_t> Engine::DailyUsage(Period period, const std::string& csp_id) {
  counters_->Flush();
  constexpr int64_t kDay = 24 * base::kMsPerHour;
  std::vector<int64_t> out((period.EndMs() - period.StartMs()) / kDay, 0);
  const std::string prefix = KeyBuilder(keys::kDaily).Str(period.ToString()).Str(csp_id).Take();
  store_->Scan(prefix, [&](std::string_view key, std::string_view value) {
    KeyReader r(key.substr(prefix.size()));
    uint32_t day = 0;
    const auto v = keys::DecodeI128(value);
    if (r.U32(&day) && r.Done() && v && day >= 1 && day <= out.size()) {
      // For charts: a sum beyond 64 bits is shown at the largest value.
      constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
      constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
      out[day - 1] = *v > kMax ? kMax : *v < kMin ? kMin : static_cast<int64_t>(*v);
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
  const std::string key =
      KeyBuilder(keys::kUnpriced).Str(period).U64(seq).U32(static_cast<uint32_t>(n)).Take();
  store_->Put(key, u.SerializeAsString());
  if (rec != nullptr) rec->add_unpriced_keys(key);
}

int64_t Engine::TakeCap(const v1::Allocation& alloc, const v1::UsageInterval& u,
                        v1::StoredInterval* rec) {
  const int64_t gpus = u.gpu_count();
  if (alloc.gpu_ms_cap() <= 0 || gpus <= 0 || u.end_ms() <= u.start_ms()) return u.end_ms();
  // In 128 bits: 2^32 GPUs over the int64 time line never overflow.
  const std::string cap_key = KeyBuilder(keys::kCapUsed).Str(alloc.allocation_id()).Take();
  const __int128 used = counters_->Get(cap_key);
  const __int128 duration = static_cast<__int128>(u.end_ms()) - u.start_ms();
  const __int128 whole = gpus * duration;
  const __int128 remaining = std::max<__int128>(0, alloc.gpu_ms_cap() - used);
  // The cap is crossed at the last whole millisecond that still fits under it.
  const __int128 within_ms = whole <= remaining ? duration : remaining / gpus;
  // At most the remaining cap: fits the cap's int64.
  rec->set_cap_gpu_ms(static_cast<int64_t>(gpus * within_ms));
  counters_->Add(cap_key, gpus * within_ms);
  return static_cast<int64_t>(u.start_ms() + within_ms);
}

void Engine::AddInterval(uint64_t seq, const std::string& source_id, const std::string& event_id,
                         const v1::UsageInterval& u) {
  v1::StoredInterval rec;
  rec.set_seq(seq);
  rec.set_source_id(source_id);
  rec.set_event_id(event_id);
  *rec.mutable_interval() = u;
  const std::string id_key = KeyBuilder(keys::kInterval).Str(source_id).Str(event_id).Take();
  if (base::OutsideKnownPeriods(u.start_ms(), u.end_ms())) {
    AddUnpriced((u.start_ms() < base::kFirstPeriodStartMs ? base::kFirstPeriod : base::kLastPeriod)
                    .ToString(),
                seq, source_id, event_id, OutsideWhy("usage"), &rec);
  }
  const v1::Allocation* alloc = registry_.FindAllocation(u.allocation_id());
  if (alloc == nullptr) {
    base::ForEachPeriodWithin(u.start_ms(), u.end_ms(), [&](Period p, int64_t, int64_t) {
      AddUnpriced(p.ToString(), seq, source_id, event_id,
                  absl::StrCat("unknown allocation '", u.allocation_id(), "'"), &rec);
    });
    store_->Put(id_key, rec.SerializeAsString());
    return;
  }
  const int64_t gpus = u.gpu_count();
  // The instant from which this interval is beyond its allocation's cap (end: never).
  const int64_t cap_from = TakeCap(*alloc, u, &rec);
  base::ForEachPeriodWithin(u.start_ms(), u.end_ms(), [&](Period p, int64_t lo, int64_t hi) {
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
      AddLine(period, key, GpuMsOf(gpus, s, e));
      AddDaily(source_id, s, e, gpus);
    }
  });
  Recredit(&rec);
  store_->Put(id_key, rec.SerializeAsString());
  store_->Put(KeyBuilder(keys::kAllocationIndex)
                  .Str(alloc->allocation_id())
                  .Str(source_id)
                  .Str(event_id)
                  .key(),
              "");
}

void Engine::RemoveInterval(const v1::StoredInterval& rec) {
  const int64_t gpus = rec.interval().gpu_count();
  for (const auto& s : rec.slices()) {
    AddLine(s.period(), s.line_key(), -GpuMsOf(gpus, s.start_ms(), s.end_ms()));
    AddDaily(rec.source_id(), s.start_ms(), s.end_ms(), -gpus);
  }
  for (const auto& c : rec.credits()) AddLine(c.period(), c.line_key(), -PartGpuMs(c));
  for (const auto& k : rec.unpriced_keys()) store_->Delete(k);
  const std::string& allocation_id = rec.interval().allocation_id();
  if (rec.cap_gpu_ms() != 0) {
    const std::string cap_key = KeyBuilder(keys::kCapUsed).Str(allocation_id).Take();
    counters_->Add(cap_key, -static_cast<__int128>(rec.cap_gpu_ms()));
  }
  store_->Delete(KeyBuilder(keys::kInterval).Str(rec.source_id()).Str(rec.event_id()).key());
  store_->Delete(KeyBuilder(keys::kAllocationIndex)
                     .Str(allocation_id)
                     .Str(rec.source_id())
                     .Str(rec.event_id())
                     .key());
}

// Recomputes the outage credits of an interval from its slices and every outage declared for
// its allocation so far: a slice's GPUs are credited up to the GPUs declared out at each instant.
void Engine::Recredit(v1::StoredInterval* rec) {
  for (const auto& c : rec->credits()) AddLine(c.period(), c.line_key(), -PartGpuMs(c));
  rec->clear_credits();
  if (!allocations_with_outages_.contains(rec->interval().allocation_id())) return;
  std::vector<v1::StoredOutage> outages;
  store_->Scan(KeyBuilder(keys::kOutageRecord).Str(rec->interval().allocation_id()).key(),
               [&](std::string_view, std::string_view value) {
                 v1::StoredOutage o;
                 if (o.ParseFromString(std::string(value))) outages.push_back(o);
                 return true;
               });
  if (outages.empty()) return;
  const int64_t gpus = rec->interval().gpu_count();
  std::map<std::pair<std::string, std::string>, __int128> credits;
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
      int64_t out = 0;  // at most 2^32 outages of 2^32 GPUs each: fits
      for (const auto& o : outages) {
        if (o.start_ms() <= cuts[i] && cuts[i] < o.end_ms()) out += o.gpu_count();
      }
      const int64_t credited = std::min(gpus, out);
      if (credited > 0) {
        credits[{s.period(), CreditKeyOf(s.line_key())}] -= GpuMsOf(credited, cuts[i], cuts[i + 1]);
      }
    }
  }
  for (const auto& [where, gpu_ms] : credits) {
    v1::StoredPart* part = rec->add_credits();
    part->set_period(where.first);
    part->set_line_key(where.second);
    part->set_gpu_ms_i128(keys::EncodeI128(gpu_ms));
    AddLine(where.first, where.second, gpu_ms);
  }
}

// Usage of an allocation after its (amended) end stops counting.
void Engine::Truncate(const std::string& allocation_id, int64_t end_ms) {
  for (const std::string& key : IntervalKeysOf(store_, allocation_id)) {
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
      AddLine(s.period(), s.line_key(), -GpuMsOf(gpus, from, s.end_ms()));
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

// Own use or an outage partly outside the known periods: listed (with the period nearest it)
// rather than dropped silently.
void Engine::NoteOutside(uint64_t seq, const std::string& source_id, const std::string& event_id,
                         std::string_view what, int64_t start_ms, int64_t end_ms) {
  if (!base::OutsideKnownPeriods(start_ms, end_ms)) return;
  const Period nearest =
      start_ms < base::kFirstPeriodStartMs ? base::kFirstPeriod : base::kLastPeriod;
  AddUnpriced(nearest.ToString(), seq, source_id, event_id, OutsideWhy(what), nullptr);
}

absl::Status Engine::ApplyUsage(uint64_t seq, const std::string& source_id,
                                const v1::UsageEvent& event) {
  switch (event.body_case()) {
    case v1::UsageEvent::kUsage:
      AddInterval(seq, source_id, event.event_id(), event.usage());
      break;
    case v1::UsageEvent::kCorrection:
      ApplyCorrection(seq, source_id, event);
      break;
    case v1::UsageEvent::kOwnUse:
      ApplyOwnUse(seq, source_id, event);
      break;
    case v1::UsageEvent::kOutage:
      ApplyOutage(seq, source_id, event);
      break;
    default:
      break;
  }
  return absl::OkStatus();
}

// A correction takes its target's place (and may itself be corrected later).
void Engine::ApplyCorrection(uint64_t seq, const std::string& source_id,
                             const v1::UsageEvent& event) {
  const auto& c = event.correction();
  auto bytes =
      store_->Get(KeyBuilder(keys::kInterval).Str(source_id).Str(c.target_event_id()).key());
  v1::StoredInterval target;
  if (!bytes || !target.ParseFromString(*bytes)) {
    const int64_t at = c.has_replacement() ? c.replacement().start_ms() : event.emitted_at_ms();
    AddUnpriced(base::PeriodOf(at).ToString(), seq, source_id, event.event_id(),
                absl::StrCat("correction of unknown usage event '", c.target_event_id(), "'"),
                nullptr);
    return;
  }
  RemoveInterval(target);
  if (c.has_replacement()) AddInterval(seq, source_id, event.event_id(), c.replacement());
}

void Engine::ApplyOwnUse(uint64_t seq, const std::string& source_id, const v1::UsageEvent& event) {
  const auto& o = event.own_use();
  NoteOutside(seq, source_id, event.event_id(), "own use", o.start_ms(), o.end_ms());
  base::ForEachPeriodWithin(o.start_ms(), o.end_ms(), [&](Period p, int64_t lo, int64_t hi) {
    const std::string rest = PoolRest(p.ToString(), source_id, o.program(), o.gpu_model());
    const std::string key = absl::StrCat(keys::kOwnUse, rest);
    counters_->Add(key, GpuMsOf(o.gpu_count(), lo, hi));
    // Own use of a closed period: an adjustment on the first open period's statement.
    if (IsClosed(p.ToString())) store_->Put(absl::StrCat(keys::kTouchedOwnUse, rest), "");
  });
}

// An outage counts on its pool's statement; one declared for an allocation also credits the
// usage it overlaps, recorded before or after it.
void Engine::ApplyOutage(uint64_t seq, const std::string& source_id, const v1::UsageEvent& event) {
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
  NoteOutside(seq, source_id, event.event_id(), "an outage", o.start_ms(), o.end_ms());
  base::ForEachPeriodWithin(o.start_ms(), o.end_ms(), [&](Period p, int64_t lo, int64_t hi) {
    const std::string rest = OutageRest(p.ToString(), source_id, program, model, scope, o.cause());
    const std::string key = absl::StrCat(keys::kOutage, rest);
    counters_->Add(key, GpuMsOf(o.gpu_count(), lo, hi));
    if (IsClosed(p.ToString())) store_->Put(absl::StrCat(keys::kTouchedOutage, rest), "");
  });
  if (alloc == nullptr) return;
  v1::StoredOutage stored;
  stored.set_seq(seq);
  stored.set_start_ms(o.start_ms());
  stored.set_end_ms(o.end_ms());
  stored.set_gpu_count(o.gpu_count());
  store_->Put(KeyBuilder(keys::kOutageRecord).Str(alloc->allocation_id()).U64(seq).key(),
              stored.SerializeAsString());
  allocations_with_outages_.insert(alloc->allocation_id());
  for (const std::string& key : IntervalKeysOf(store_, alloc->allocation_id())) {
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

absl::Status Engine::Close(uint64_t seq, const v1::RegistryEvent& event) {
  GPULEDGER_ASSIGN_OR_RETURN(Period period, base::ParsePeriod(event.period_close().period()));
  const std::string p = period.ToString();
  counters_->Flush();  // the documents read the counters from the store
  // Documents that cannot be computed are frozen as errors (docs.errors); the others close.
  GPULEDGER_ASSIGN_OR_RETURN(v1::PeriodDocuments docs, Draft(period, DocumentFilter{}));
  docs.set_closed(true);
  docs.set_covered_seq(seq - 1);
  docs.set_close_seq(seq);
  docs.set_closed_at_ms(event.emitted_at_ms());
  for (const auto& inv : docs.invoices()) {
    auto* d = docs.add_digests();
    d->set_document(InvoiceDoc(inv.institution_id()));
    d->set_sha256(DigestHex(InvoiceJson(inv)));
  }
  for (const auto& st : docs.statements()) {
    auto* d = docs.add_digests();
    d->set_document(StatementDoc(st.csp_id()));
    d->set_sha256(DigestHex(StatementJson(st)));
  }
  for (const auto& ps : docs.programs()) {
    auto* d = docs.add_digests();
    d->set_document(ProgramDoc(ps.program()));
    d->set_sha256(DigestHex(ProgramJson(ps)));
  }
  std::string frozen;
  google::protobuf::io::StringOutputStream sink(&frozen);
  {
    google::protobuf::io::CodedOutputStream out(&sink);
    out.SetSerializationDeterministic(true);
    docs.SerializeToCodedStream(&out);
  }
  const std::string period_key = KeyBuilder().Str(p).Take();
  store_->Put(absl::StrCat(keys::kFrozen, period_key), frozen);
  store_->Put(absl::StrCat(keys::kClose, period_key), keys::EncodeU64(seq));

  // What is billed now: this period's lines, and the adjustments it carries for earlier ones.
  auto bill = [&](const std::string& period, const std::string& institution_id,
                  const v1::InvoiceLine& l) {
    LineId id{institution_id, l.allocation_id(),    l.gpu_model(), l.krw_per_gpu_hour(),
              l.copay_bp(),   l.institution_type(), l.kind()};
    const std::string key = LineKey(keys::kBilledLine, period, EncodeLine(id));
    v1::BilledLine b;
    if (auto bytes = store_->Get(key)) b.ParseFromString(*bytes);
    // Each sum fitted the document it was billed on; the running sums of one line are
    // differences of such values, kept in 64 bits as the adjustments that carry them are.
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
        absl::StrCat(keys::kBilledOwnUse, PoolRest(period, csp, row.program(), row.gpu_model()));
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
    const std::string key = absl::StrCat(
        keys::kBilledOutage,
        OutageRest(period, csp, row.program(), row.gpu_model(), row.scope(), row.cause()));
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
  // A document that could not be computed billed nothing: what it would have billed stays
  // pending, as adjustments on the next open period (which fail the same way until a
  // correction makes them computable). Its touched marks are kept, and its own lines of this
  // period are marked touched.
  std::set<std::string> failed_institutions, failed_csps;
  for (const auto& e : docs.errors()) {
    const std::string_view doc = e.document();
    if (doc.starts_with("invoice/")) failed_institutions.emplace(doc.substr(8));
    if (doc.starts_with("statement/")) failed_csps.emplace(doc.substr(10));
  }
  for (const std::string& inst : failed_institutions) {
    const std::string prefix = KeyBuilder(keys::kLine).Str(p).Str(inst).Take();
    std::vector<std::string> lines;
    store_->Scan(prefix, [&](std::string_view key, std::string_view) {
      lines.emplace_back(key.substr(std::string_view(keys::kLine).size()));
      return true;
    });
    for (const auto& rest : lines) store_->Put(absl::StrCat(keys::kTouchedLine, rest), "");
  }
  for (const std::string& csp : failed_csps) {
    for (const auto& from_to : {std::pair{keys::kOwnUse, keys::kTouchedOwnUse},
                                std::pair{keys::kOutage, keys::kTouchedOutage}}) {
      // Not a structured binding: lambdas capture these (clang 14 cannot capture bindings).
      const char* from = from_to.first;
      const char* to = from_to.second;
      const std::string prefix = KeyBuilder(from).Str(p).Str(csp).Take();
      std::vector<std::string> rests;
      store_->Scan(prefix, [&](std::string_view key, std::string_view) {
        rests.emplace_back(key.substr(std::string_view(from).size()));
        return true;
      });
      for (const auto& rest : rests) store_->Put(absl::StrCat(to, rest), "");
    }
  }
  std::vector<std::string> touched;
  store_->Scan(keys::kTouchedLine, [&](std::string_view key, std::string_view) {
    KeyReader r(key);
    std::string closed_period, institution;
    const bool keep = r.Prefix(keys::kTouchedLine) && r.Str(&closed_period) &&
                      r.Str(&institution) && failed_institutions.contains(institution);
    if (!keep) touched.emplace_back(key);
    return true;
  });
  for (const char* prefix : {keys::kTouchedOwnUse, keys::kTouchedOutage}) {
    store_->Scan(prefix, [&](std::string_view key, std::string_view) {
      KeyReader r(key);
      std::string closed_period, csp;
      const bool keep =
          r.Prefix(prefix) && r.Str(&closed_period) && r.Str(&csp) && failed_csps.contains(csp);
      if (!keep) touched.emplace_back(key);
      return true;
    });
  }
  for (const auto& key : touched) store_->Delete(key);
  closed_.insert(p);
  return absl::OkStatus();
}

namespace {

// Keeps the errors of the documents `filter` asks for.
void KeepErrors(const DocumentFilter& filter, v1::PeriodDocuments* docs) {
  auto* errors = docs->mutable_errors();
  errors->erase(
      std::remove_if(errors->begin(), errors->end(),
                     [&](const v1::DocumentError& e) {
                       std::string_view d = e.document();
                       if (d.starts_with("invoice/")) {
                         return !filter.invoices ||
                                (filter.institution_id && d.substr(8) != *filter.institution_id);
                       }
                       if (d.starts_with("statement/")) {
                         return !filter.statements ||
                                (filter.csp_id && d.substr(10) != *filter.csp_id);
                       }
                       if (d.starts_with("program/")) return !filter.programs;
                       return false;
                     }),
      errors->end());
}

// The one document asked for, if it cannot be computed: its error.
absl::Status OneDocumentError(const DocumentFilter& filter, const v1::PeriodDocuments& docs) {
  for (const auto& e : docs.errors()) {
    const bool asked =
        (filter.institution_id && e.document() == InvoiceDoc(*filter.institution_id)) ||
        (filter.csp_id && e.document() == StatementDoc(*filter.csp_id));
    if (asked) {
      return absl::FailedPreconditionError(
          absl::StrCat(e.document(), " of ", docs.period(), " cannot be computed: ", e.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::PeriodDocuments> Engine::Documents(Period period, const DocumentFilter& filter) {
  counters_->Flush();
  const std::string p = period.ToString();
  v1::PeriodDocuments docs;
  if (IsClosed(p)) {
    auto bytes = store_->Get(absl::StrCat(keys::kFrozen, KeyBuilder().Str(p).key()));
    if (!bytes || !docs.ParseFromString(*bytes)) {
      return absl::DataLossError(
          absl::StrCat("settlement store: frozen documents of ", p, " are missing or unreadable"));
    }
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
  } else {
    GPULEDGER_ASSIGN_OR_RETURN(docs, Draft(period, filter));
  }
  KeepErrors(filter, &docs);
  GPULEDGER_RETURN_IF_ERROR(OneDocumentError(filter, docs));
  return docs;
}

absl::StatusOr<v1::OwnUseRow> Engine::OwnUseRowFor(const std::string& csp, int program, int model,
                                                   Period period, int64_t own) const {
  const auto prog = static_cast<v1::Program>(program);
  const auto gpu_model = static_cast<v1::GpuModel>(model);
  const int64_t last_ms = period.EndMs() - 1;
  const auto* pool = registry_.Pool(csp, prog, gpu_model);
  const auto* caps = registry_.OwnUseCaps(csp);
  __int128 capacity128 = 0;
  __int128 allowed_num = 0;
  if (pool != nullptr) {
    pool->ForEachWithin(period.StartMs(), period.EndMs(),
                        [&](int64_t from, int64_t to, uint32_t gpus) {
                          capacity128 += GpuMsOf(gpus, from, to);
                          if (caps == nullptr) return;
                          caps->ForEachWithin(from, to, [&](int64_t a, int64_t b, uint32_t bp) {
                            allowed_num += GpuMsOf(gpus, a, b) * bp;
                          });
                        });
  }
  GPULEDGER_ASSIGN_OR_RETURN(int64_t capacity,
                             base::CheckedNarrow(capacity128, "the pool's capacity GPU-ms"));
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
  GPULEDGER_ASSIGN_OR_RETURN(int64_t over,
                             base::CheckedSub(own, allowed, "own use beyond the cap"));
  row.set_excess_gpu_ms(std::max<int64_t>(0, over));
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
  // Document → why it cannot be computed. Such a document is left out and named in
  // docs.errors; every other document is built as usual (one tenant never fails another's).
  std::map<std::string, std::string> errors;
  auto store_damage = [&](std::string_view what) {
    NoteError(&errors, "store",
              absl::DataLossError(absl::StrCat("settlement store: ", std::string(what))));
  };

  auto make_line = [&](const LineId& id, __int128 gpu_ms) -> absl::StatusOr<v1::InvoiceLine> {
    v1::InvoiceLine line;
    line.set_allocation_id(id.allocation_id);
    line.set_kind(static_cast<v1::LineKind>(id.kind));
    line.set_gpu_model(static_cast<v1::GpuModel>(id.model));
    line.set_institution_type(static_cast<v1::InstitutionType>(id.type));
    line.set_krw_per_gpu_hour(id.rate);
    line.set_copay_bp(static_cast<uint32_t>(id.copay_bp));
    GPULEDGER_ASSIGN_OR_RETURN(int64_t q, base::CheckedNarrow(gpu_ms, "the line's GPU-ms"));
    line.set_gpu_ms(q);
    if (const v1::Allocation* a = registry_.FindAllocation(id.allocation_id)) {
      line.set_program(a->program());
      line.set_csp_id(a->csp_id());
    }
    GPULEDGER_RETURN_IF_ERROR(Price(&line));
    return line;
  };
  auto line_error = [&](const LineId& id, std::string_view period_of_line, const absl::Status& st) {
    NoteError(
        &errors, InvoiceDoc(id.institution_id),
        absl::Status(st.code(), absl::StrCat("the ", std::string(period_of_line),
                                             " line of allocation '", id.allocation_id, "' at ",
                                             id.rate, " won per GPU-hour: ", st.message())));
  };

  std::map<std::string, v1::Invoice> invoices;
  const std::string lines_of_period = KeyBuilder(keys::kLine).Str(p).Take();
  const std::string scope =
      one_invoice ? KeyBuilder().Raw(lines_of_period).Str(*filter.institution_id).Take()
                  : lines_of_period;
  store_->Scan(scope, [&](std::string_view key, std::string_view value) {
    LineId id;
    if (!DecodeLine(key.substr(lines_of_period.size()), &id)) {
      store_damage(absl::StrCat("an unreadable line key in ", p));
      return true;
    }
    const auto gpu_ms = keys::DecodeI128(value);
    auto line = gpu_ms ? make_line(id, *gpu_ms)
                       : absl::DataLossError("settlement store: unreadable GPU-ms of the line");
    if (!line.ok()) {
      line_error(id, p, line.status());
      return true;
    }
    *invoices[id.institution_id].add_lines() = *std::move(line);
    return true;
  });

  // Adjustments: on the first open period after the last close, for every closed period whose
  // lines changed since they were billed.
  const auto last_closed = registry_.last_closed();
  if (last_closed && period == last_closed->Next()) {
    std::vector<std::pair<std::string, std::string>> touched;  // (closed period, line)
    store_->Scan(keys::kTouchedLine, [&](std::string_view key, std::string_view) {
      KeyReader r(key);
      std::string closed_period;
      if (!r.Prefix(keys::kTouchedLine) || !r.Str(&closed_period)) {
        store_damage("an unreadable touched-line key");
        return true;
      }
      touched.emplace_back(std::move(closed_period), std::string(r.rest()));
      return true;
    });
    for (const auto& touched_line : touched) {
      const std::string& closed_period = touched_line.first;
      const std::string& line_key = touched_line.second;
      LineId id;
      if (!DecodeLine(line_key, &id)) {
        store_damage("an unreadable touched line");
        continue;
      }
      if (one_invoice && id.institution_id != *filter.institution_id) continue;
      auto adj = [&]() -> absl::StatusOr<v1::InvoiceLine> {
        const auto value = store_->Get(LineKey(keys::kLine, closed_period, line_key));
        const auto gpu_ms = value ? keys::DecodeI128(*value) : std::optional<__int128>(0);
        if (!gpu_ms) return absl::DataLossError("settlement store: unreadable GPU-ms of the line");
        GPULEDGER_ASSIGN_OR_RETURN(v1::InvoiceLine now, make_line(id, *gpu_ms));
        v1::BilledLine billed;
        if (auto bytes = store_->Get(LineKey(keys::kBilledLine, closed_period, line_key))) {
          if (!billed.ParseFromString(*bytes)) {
            return absl::DataLossError("settlement store: unreadable billed line");
          }
        }
        v1::InvoiceLine out = now;
        GPULEDGER_ASSIGN_OR_RETURN(int64_t g,
                                   base::CheckedSub(now.gpu_ms(), billed.gpu_ms(), "GPU-ms"));
        GPULEDGER_ASSIGN_OR_RETURN(
            int64_t l, base::CheckedSub(now.list_krw(), billed.list_krw(), "the list price"));
        GPULEDGER_ASSIGN_OR_RETURN(
            int64_t c, base::CheckedSub(now.copay_krw(), billed.copay_krw(), "the co-pay"));
        GPULEDGER_ASSIGN_OR_RETURN(
            int64_t s, base::CheckedSub(now.subsidy_krw(), billed.subsidy_krw(), "the subsidy"));
        out.set_gpu_ms(g);
        out.set_list_krw(l);
        out.set_copay_krw(c);
        out.set_subsidy_krw(s);
        out.set_adjusts_period(closed_period);
        return out;
      }();
      if (!adj.ok()) {
        line_error(id, absl::StrCat(closed_period, " adjustment"), adj.status());
        continue;
      }
      if (!IsZero(*adj)) *invoices[id.institution_id].add_adjustments() = *std::move(adj);
    }
  }

  for (auto& entry : invoices) {
    const std::string& institution_id = entry.first;
    v1::Invoice& inv = entry.second;
    const std::string doc = InvoiceDoc(institution_id);
    if (errors.contains(doc)) continue;
    inv.set_period(p);
    inv.set_institution_id(institution_id);
    auto version = registry_.InstitutionAt(institution_id, last_ms);
    if (!version) version = registry_.InstitutionAt(institution_id, INT64_MAX);
    if (version) {
      inv.set_institution_name(version->name);
      inv.set_institution_type(version->type);
    }
    absl::Status st = [&]() -> absl::Status {
      v1::Totals* t = inv.mutable_totals();
      for (const auto& l : inv.lines()) GPULEDGER_RETURN_IF_ERROR(AddTo(t, l));
      for (const auto& l : inv.adjustments()) GPULEDGER_RETURN_IF_ERROR(AddTo(t, l));
      GPULEDGER_ASSERT(t->list_krw() == t->copay_krw() + t->subsidy_krw(),
                       "invoice list = co-pay + subsidy");
      inv.set_vat_bp(static_cast<uint32_t>(options_.vat_bp));
      GPULEDGER_ASSIGN_OR_RETURN(
          base::Krw vat, base::ApplyBasisPoints(base::Krw{t->copay_krw()}, options_.vat_bp));
      inv.set_vat_krw(vat.won);
      GPULEDGER_ASSIGN_OR_RETURN(int64_t due,
                                 base::CheckedAdd(t->copay_krw(), vat.won, "the amount due"));
      inv.set_amount_due_krw(due);
      return absl::OkStatus();
    }();
    NoteError(&errors, doc, st);
  }
  // Lines of an invoice that cannot be computed reach no statement or summary either: they are
  // not billed at close and come back as adjustments of the next open period.
  for (auto it = invoices.begin(); it != invoices.end();) {
    it = errors.contains(InvoiceDoc(it->first)) ? invoices.erase(it) : std::next(it);
  }

  if (filter.invoices) {
    for (auto& [id, inv] : invoices) {
      if (filter.institution_id && id != *filter.institution_id) continue;
      *docs.add_invoices() = inv;
    }
  }

  // Unpriced usage of the period, in ledger order.
  if (!one_invoice) {
    store_->Scan(KeyBuilder(keys::kUnpriced).Str(p).key(),
                 [&](std::string_view, std::string_view value) {
                   v1::Unpriced u;
                   if (u.ParseFromString(std::string(value))) {
                     *docs.add_unpriced() = u;
                   } else {
                     store_damage(absl::StrCat("an unreadable unpriced record in ", p));
                   }
                   return true;
                 });
  }
  if (filter.statements || filter.programs) {
    GPULEDGER_RETURN_IF_ERROR(DraftStatements(period, filter, invoices, &errors, &docs));
  }
  for (const auto& [document, message] : errors) {
    v1::DocumentError* e = docs.add_errors();
    e->set_document(document);
    e->set_message(message);
  }
  return docs;
}

// CSP statements and programme summaries of a period, from its invoices (those that could be
// computed), own use, outages and pools. A sum that does not fit fails its statement or summary
// alone (into `errors`).
absl::Status Engine::DraftStatements(Period period, const DocumentFilter& filter,
                                     const std::map<std::string, v1::Invoice>& invoices,
                                     std::map<std::string, std::string>* errors,
                                     v1::PeriodDocuments* docs) {
  const std::string p = period.ToString();
  const int64_t last_ms = period.EndMs() - 1;
  const auto last_closed = registry_.last_closed();
  auto statement_error = [&](const std::string& csp, const absl::Status& st) {
    NoteError(errors, StatementDoc(csp), st);
  };
  auto program_error = [&](int program, const absl::Status& st) {
    NoteError(errors, ProgramDoc(program), st);
  };
  auto store_damage = [&](std::string_view what) {
    NoteError(errors, "store",
              absl::DataLossError(absl::StrCat("settlement store: ", std::string(what))));
  };
  // map[key] += v, or the document's error.
  auto add = [](auto* map, const auto& key, int64_t v, std::string_view what) -> absl::Status {
    GPULEDGER_ASSIGN_OR_RETURN(int64_t sum, base::CheckedAdd((*map)[key], v, what));
    (*map)[key] = sum;
    return absl::OkStatus();
  };

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
      statement_error(
          l.csp_id(),
          AddTo(&delivered[{l.csp_id(), l.program(), institution_id, l.gpu_model()}], l));
      program_error(l.program(), AddTo(&by_type[{l.program(), l.institution_type()}], l));
      statement_error(l.csp_id(), add(&usage, PoolId{l.csp_id(), l.program(), l.gpu_model()},
                                      l.gpu_ms(), "programme usage GPU-ms"));
    }
    for (const auto& l : inv.adjustments()) {
      statements[l.csp_id()];
      programs[l.program()];
      statement_error(l.csp_id(), AddTo(&adjusted[{l.csp_id(), l.adjusts_period(), l.program(),
                                                   institution_id, l.gpu_model()}],
                                        l));
      program_error(
          l.program(),
          AddTo(&type_adjusted[{l.program(), l.adjusts_period(), l.institution_type()}], l));
    }
  }
  const size_t own_use_skip = std::string_view(keys::kOwnUse).size();
  store_->Scan(
      KeyBuilder(keys::kOwnUse).Str(p).key(), [&](std::string_view key, std::string_view value) {
        PoolFields f;
        if (!DecodePool(key.substr(own_use_skip), false, &f)) {
          store_damage("an unreadable own-use key");
          return true;
        }
        statements[f.csp];
        const auto v = keys::DecodeI128(value);
        auto gpu_ms = v ? base::CheckedNarrow(*v, "own-use GPU-ms")
                        : absl::DataLossError("settlement store: unreadable own use");
        if (!gpu_ms.ok()) {
          statement_error(f.csp, gpu_ms.status());
        } else {
          statement_error(
              f.csp, add(&own_use, PoolId{f.csp, f.program, f.model}, *gpu_ms, "own-use GPU-ms"));
        }
        return true;
      });
  const size_t outage_skip = std::string_view(keys::kOutage).size();
  store_->Scan(
      KeyBuilder(keys::kOutage).Str(p).key(), [&](std::string_view key, std::string_view value) {
        PoolFields f;
        if (!DecodePool(key.substr(outage_skip), true, &f)) {
          store_damage("an unreadable outage key");
          return true;
        }
        auto& st = statements[f.csp];
        const auto v = keys::DecodeI128(value);
        auto gpu_ms = v ? base::CheckedNarrow(*v, "outage GPU-ms")
                        : absl::DataLossError("settlement store: unreadable outage");
        if (!gpu_ms.ok()) {
          statement_error(f.csp, gpu_ms.status());
          return true;
        }
        v1::OutageRow* row = st.add_outages();
        row->set_program(static_cast<v1::Program>(f.program));
        row->set_gpu_model(static_cast<v1::GpuModel>(f.model));
        row->set_scope(f.scope);
        row->set_cause(f.cause);
        row->set_gpu_ms(*gpu_ms);
        statement_error(f.csp,
                        add(&outage, PoolId{f.csp, f.program, f.model}, *gpu_ms, "outage GPU-ms"));
        return true;
      });
  // Own use and outages recorded for closed periods after they closed.
  std::map<std::string, std::vector<v1::OwnUseRow>> own_use_adjusted;
  std::map<std::string, std::vector<v1::OutageRow>> outage_adjusted;
  if (last_closed && period == last_closed->Next()) {
    std::vector<std::string> own_keys, outage_keys;
    store_->Scan(keys::kTouchedOwnUse, [&](std::string_view key, std::string_view) {
      own_keys.emplace_back(key.substr(std::string_view(keys::kTouchedOwnUse).size()));
      return true;
    });
    store_->Scan(keys::kTouchedOutage, [&](std::string_view key, std::string_view) {
      outage_keys.emplace_back(key.substr(std::string_view(keys::kTouchedOutage).size()));
      return true;
    });
    for (const std::string& rest : own_keys) {
      PoolFields f;
      if (!DecodePool(rest, false, &f)) {
        store_damage("an unreadable own-use marker");
        continue;
      }
      statements[f.csp];
      auto row = [&]() -> absl::StatusOr<std::optional<v1::OwnUseRow>> {
        GPULEDGER_ASSIGN_OR_RETURN(Period closed_period, base::ParsePeriod(f.period));
        const auto own128 = keys::DecodeI128(
            store_->Get(absl::StrCat(keys::kOwnUse, rest)).value_or(keys::EncodeI128(0)));
        if (!own128) return absl::DataLossError("settlement store: unreadable own use");
        GPULEDGER_ASSIGN_OR_RETURN(int64_t own_now, base::CheckedNarrow(*own128, "own-use GPU-ms"));
        v1::OwnUseRow billed;
        v1::OwnUseRow row;
        if (auto bytes = store_->Get(absl::StrCat(keys::kBilledOwnUse, rest))) {
          // Billed before: recompute with the capacity, allowance and rate it was billed with.
          if (!billed.ParseFromString(*bytes)) {
            return absl::DataLossError("settlement store: unreadable billed own use");
          }
          row = billed;
          row.set_own_use_gpu_ms(own_now);
          GPULEDGER_ASSIGN_OR_RETURN(
              int64_t over,
              base::CheckedSub(own_now, billed.allowed_gpu_ms(), "own use beyond the cap"));
          row.set_excess_gpu_ms(std::max<int64_t>(0, over));
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
          GPULEDGER_ASSIGN_OR_RETURN(
              row, OwnUseRowFor(f.csp, f.program, f.model, closed_period, own_now));
        }
        GPULEDGER_ASSIGN_OR_RETURN(
            int64_t own_delta,
            base::CheckedSub(row.own_use_gpu_ms(), billed.own_use_gpu_ms(), "own-use GPU-ms"));
        GPULEDGER_ASSIGN_OR_RETURN(int64_t excess_delta,
                                   base::CheckedSub(row.excess_gpu_ms(), billed.excess_gpu_ms(),
                                                    "own use beyond the cap"));
        GPULEDGER_ASSIGN_OR_RETURN(
            int64_t value_delta, base::CheckedSub(row.excess_value_krw(), billed.excess_value_krw(),
                                                  "the value of own use beyond the cap"));
        row.set_own_use_gpu_ms(own_delta);
        row.set_excess_gpu_ms(excess_delta);
        row.set_excess_value_krw(value_delta);
        row.set_adjusts_period(f.period);
        if (own_delta == 0 && excess_delta == 0 && value_delta == 0) return std::nullopt;
        return row;
      }();
      if (!row.ok()) {
        statement_error(f.csp, row.status());
      } else if (*row) {
        own_use_adjusted[f.csp].push_back(**std::move(row));
      }
    }
    for (const std::string& rest : outage_keys) {
      PoolFields f;
      if (!DecodePool(rest, true, &f)) {
        store_damage("an unreadable outage marker");
        continue;
      }
      statements[f.csp];
      const auto now = keys::DecodeI128(
          store_->Get(absl::StrCat(keys::kOutage, rest)).value_or(keys::EncodeI128(0)));
      const auto billed = keys::DecodeI128(
          store_->Get(absl::StrCat(keys::kBilledOutage, rest)).value_or(keys::EncodeI128(0)));
      if (!now || !billed) {
        statement_error(f.csp, absl::DataLossError("settlement store: unreadable outage total"));
        continue;
      }
      auto delta = base::CheckedNarrow(*now - *billed, "an outage adjustment's GPU-ms");
      if (!delta.ok()) {
        statement_error(f.csp, delta.status());
        continue;
      }
      if (*delta == 0) continue;
      v1::OutageRow row;
      row.set_program(static_cast<v1::Program>(f.program));
      row.set_gpu_model(static_cast<v1::GpuModel>(f.model));
      row.set_scope(f.scope);
      row.set_cause(f.cause);
      row.set_gpu_ms(*delta);
      row.set_adjusts_period(f.period);
      outage_adjusted[f.csp].push_back(std::move(row));
    }
  }
  for (const auto& [csp, program, model] : registry_.Pools()) {
    __int128 cap = 0;
    registry_.Pool(csp, program, model)
        ->ForEachWithin(
            period.StartMs(), period.EndMs(),
            [&](int64_t from, int64_t to, uint32_t gpus) { cap += GpuMsOf(gpus, from, to); });
    if (cap == 0) continue;
    statements[csp];
    programs[program];
    auto fits = base::CheckedNarrow(cap, "the pool's capacity GPU-ms");
    if (!fits.ok()) {
      statement_error(csp, fits.status());
      program_error(program, fits.status());
      continue;
    }
    capacity[{csp, program, model}] = *fits;
  }

  for (auto& [csp, st] : statements) {
    if (errors->contains(StatementDoc(csp))) continue;
    absl::Status built = [&, &csp = csp, &st = st]() -> absl::Status {
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
        GPULEDGER_RETURN_IF_ERROR(AddTotals(st.mutable_totals(), totals));
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
        GPULEDGER_RETURN_IF_ERROR(AddTotals(st.mutable_totals(), totals));
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
      auto get = [](const std::map<PoolId, int64_t>& m, const PoolId& id) {
        auto it = m.find(id);
        return it == m.end() ? int64_t{0} : it->second;
      };
      for (const auto& [prog, model] : pools) {
        const PoolId id{csp, prog, model};
        const int64_t cap = get(capacity, id);
        const int64_t used = get(usage, id);
        const int64_t own = get(own_use, id);
        const int64_t out = get(outage, id);
        v1::CapacityRow* row = st.add_capacity();
        row->set_program(static_cast<v1::Program>(prog));
        row->set_gpu_model(static_cast<v1::GpuModel>(model));
        row->set_capacity_gpu_ms(cap);
        row->set_program_usage_gpu_ms(used);
        row->set_own_use_gpu_ms(own);
        row->set_outage_gpu_ms(out);
        GPULEDGER_ASSIGN_OR_RETURN(
            int64_t idle,
            base::CheckedNarrow(static_cast<__int128>(cap) - used - own - out, "idle GPU-ms"));
        row->set_idle_gpu_ms(idle);
        row->set_oversubscribed(row->idle_gpu_ms() < 0);
        // Exact in 128 bits, whatever the values.
        GPULEDGER_ASSERT(static_cast<__int128>(row->capacity_gpu_ms()) ==
                             static_cast<__int128>(row->program_usage_gpu_ms()) +
                                 row->own_use_gpu_ms() + row->outage_gpu_ms() + row->idle_gpu_ms(),
                         "capacity identity");
        // Own use: against the capacity of government-owned pools, and of any pool the CSP
        // reported own use on.
        if (own == 0 && prog != v1::GOV_ADVANCED) continue;
        if (own == 0 && cap == 0) continue;
        GPULEDGER_ASSIGN_OR_RETURN(v1::OwnUseRow own_row,
                                   OwnUseRowFor(csp, prog, model, period, own));
        v1::OwnUseRow* ou = st.add_own_use();
        *ou = std::move(own_row);
        GPULEDGER_ASSIGN_OR_RETURN(int64_t own_sum,
                                   base::CheckedAdd(st.own_use_gpu_ms(), own, "own-use GPU-ms"));
        st.set_own_use_gpu_ms(own_sum);
        GPULEDGER_ASSIGN_OR_RETURN(int64_t hosted, base::CheckedAdd(st.hosted_capacity_gpu_ms(),
                                                                    cap, "hosted capacity GPU-ms"));
        st.set_hosted_capacity_gpu_ms(hosted);
        GPULEDGER_ASSIGN_OR_RETURN(int64_t excess,
                                   base::CheckedAdd(st.own_use_excess_gpu_ms(), ou->excess_gpu_ms(),
                                                    "own use beyond the cap"));
        st.set_own_use_excess_gpu_ms(excess);
        GPULEDGER_ASSIGN_OR_RETURN(
            int64_t value, base::CheckedAdd(st.own_use_excess_value_krw(), ou->excess_value_krw(),
                                            "the value of own use beyond the cap"));
        st.set_own_use_excess_value_krw(value);
      }
      if (st.hosted_capacity_gpu_ms() > 0) {
        GPULEDGER_ASSIGN_OR_RETURN(
            int64_t share,
            DivRound(static_cast<__int128>(st.own_use_gpu_ms()) * base::kBasisPointsPerUnit,
                     st.hosted_capacity_gpu_ms()));
        st.set_own_use_share_bp(static_cast<uint32_t>(share));
      }
      return absl::OkStatus();
    }();
    if (!built.ok()) {
      statement_error(csp, built);
      continue;
    }
    for (auto& row : own_use_adjusted[csp]) *st.add_own_use_adjustments() = std::move(row);
    for (auto& row : outage_adjusted[csp]) *st.add_outage_adjustments() = std::move(row);
    if (filter.statements && (!filter.csp_id || csp == *filter.csp_id)) {
      *docs->add_statements() = st;
    }
  }

  if (filter.programs) {
    for (auto& [prog, ps] : programs) {
      if (errors->contains(ProgramDoc(prog))) continue;
      absl::Status built = [&, prog = prog, &ps = ps]() -> absl::Status {
        ps.set_period(p);
        ps.set_program(static_cast<v1::Program>(prog));
        for (const auto& [key, totals] : by_type) {
          if (key.first != prog) continue;
          v1::TypeRow* row = ps.add_by_type();
          row->set_institution_type(static_cast<v1::InstitutionType>(key.second));
          *row->mutable_totals() = totals;
          GPULEDGER_RETURN_IF_ERROR(AddTotals(ps.mutable_totals(), totals));
          GPULEDGER_ASSIGN_OR_RETURN(
              int64_t used, base::CheckedAdd(ps.usage_gpu_ms(), totals.gpu_ms(), "usage GPU-ms"));
          ps.set_usage_gpu_ms(used);
        }
        for (const auto& [key, totals] : type_adjusted) {
          const auto& [pr, adj_period, type] = key;
          if (pr != prog) continue;
          v1::TypeRow* row = ps.add_adjustments();
          row->set_institution_type(static_cast<v1::InstitutionType>(type));
          row->set_adjusts_period(adj_period);
          *row->mutable_totals() = totals;
          GPULEDGER_RETURN_IF_ERROR(AddTotals(ps.mutable_totals(), totals));
        }
        for (const auto& [id, cap] : capacity) {
          if (std::get<1>(id) != prog) continue;
          GPULEDGER_ASSIGN_OR_RETURN(
              int64_t sum, base::CheckedAdd(ps.capacity_gpu_ms(), cap, "capacity GPU-ms"));
          ps.set_capacity_gpu_ms(sum);
        }
        if (ps.capacity_gpu_ms() > 0) {
          GPULEDGER_ASSIGN_OR_RETURN(int64_t u, DivRound(static_cast<__int128>(ps.usage_gpu_ms()) *
                                                             base::kBasisPointsPerUnit,
                                                         ps.capacity_gpu_ms()));
          ps.set_utilisation_bp(static_cast<uint32_t>(std::max<int64_t>(0, u)));
        }
        return absl::OkStatus();
      }();
      if (!built.ok()) {
        program_error(prog, built);
        continue;
      }
      *docs->add_programs() = ps;
    }
  }
  return absl::OkStatus();
}

std::vector<CloseRecord> Engine::Closes() {
  std::vector<CloseRecord> out;
  for (const std::string& p : closed_) {
    auto bytes = store_->Get(absl::StrCat(keys::kFrozen, KeyBuilder().Str(p).key()));
    v1::PeriodDocuments docs;
    auto period = base::ParsePeriod(p);
    if (!bytes || !docs.ParseFromString(*bytes) || !period.ok()) continue;
    CloseRecord r;
    r.period = *period;
    r.close_seq = docs.close_seq();
    r.covered_seq = docs.covered_seq();
    r.closed_at_ms = docs.closed_at_ms();
    for (const auto& d : docs.digests()) r.digests.emplace_back(d.document(), d.sha256());
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<uint64_t> CatchUp(const EntrySource& source, uint64_t target, Engine* engine,
                                 const CatchUpOptions& options) {
  const uint64_t batch = std::max<uint64_t>(1, options.batch);
  uint64_t applied = 0;
  GPULEDGER_RETURN_IF_ERROR(source(engine->applied_through() + 1,
                                   [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
                                     if (target != 0 && e.seq > target) return false;
                                     GPULEDGER_RETURN_IF_ERROR(engine->Apply(e));
                                     if (++applied % batch == 0) {
                                       GPULEDGER_RETURN_IF_ERROR(engine->Commit());
                                       if (options.progress) options.progress(e.seq, target);
                                     }
                                     return true;
                                   }));
  GPULEDGER_RETURN_IF_ERROR(engine->Commit());
  if (options.progress) options.progress(engine->applied_through(), target);
  return applied;
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
  return CatchUp(
      [&](uint64_t from_seq, const EntryVisitor& visit) { return ledger.Scan(from_seq, visit); },
      target, engine, options);
}

absl::StatusOr<Settlement> OpenSettlement(const std::string& store_path,
                                          const ledger::Ledger& ledger,
                                          const SettleOptions& options,
                                          const StoreOptions& store_options,
                                          const CatchUpOptions& catch_up) {
  Settlement s;
  GPULEDGER_ASSIGN_OR_RETURN(s.store, Store::Open(store_path, store_options));
  if (!store_options.read_only && StoreNeedsRebuild(s.store.get())) {
    // A store of another format (keys.h) is derived data: rebuilt from the ledger.
    s.store.reset();
    GPULEDGER_RETURN_IF_ERROR(Store::Destroy(store_path));
    GPULEDGER_ASSIGN_OR_RETURN(s.store, Store::Open(store_path, store_options));
    s.rebuilt = true;
  }
  GPULEDGER_ASSIGN_OR_RETURN(s.engine, Engine::Open(s.store.get(), options));
  if (!store_options.read_only) {
    GPULEDGER_RETURN_IF_ERROR(CatchUp(ledger, s.engine.get(), catch_up).status());
  }
  return s;
}

}  // namespace gpuledger::settlement
