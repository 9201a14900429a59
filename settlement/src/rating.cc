// Rating: each accepted usage interval is clipped to periods, split where prices, co-pay or
// the institution's type change (and where it crosses its cap, caps_credits.cc), and added to
// the GPU-ms of its invoice lines; corrections take an interval back; own use counts per pool.

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "counters.h"
#include "engine_internal.h"
#include "settlement/engine.h"

namespace gpuledger::settlement {

using namespace internal;  // NOLINT: the engine's own helpers

void Engine::AddLine(const std::string& period, const std::string& line_key, __int128 gpu_ms) {
  if (gpu_ms == 0) return;
  const std::string key = LineKey(keys::kLine, period, line_key);
  counters_->Add(key, gpu_ms);
  if (IsClosed(period)) store_->Put(LineKey(keys::kTouchedLine, period, line_key), "");
}

void Engine::AddDaily(const std::string& rest, int64_t start_ms, int64_t end_ms, int64_t gpus) {
  for (int64_t t = start_ms; t < end_ms;) {
    const int64_t day = keys::KstDay(t);
    const int64_t day_end = std::min(end_ms, keys::KstDayStartMs(day + 1));
    counters_->Add(KeyBuilder(keys::kRollupDay).U32(static_cast<uint32_t>(day)).Raw(rest).Take(),
                   GpuMsOf(gpus, t, day_end));
    t = day_end;
  }
}

std::string Engine::UsageRollup(const v1::StoredInterval& rec, const std::string& line_key) const {
  LineId id;
  if (!DecodeLine(line_key, &id)) id.allocation_id = rec.interval().allocation_id();  // never
  const v1::Allocation* alloc = registry_.FindAllocation(id.allocation_id);
  return keys::RollupRest(rec.source_id(), alloc == nullptr ? 0 : alloc->program(),
                          rec.interval().gpu_model(), id.allocation_id, id.type,
                          keys::kMeasureUsed);
}

void Engine::AddUnpriced(const std::string& period, uint64_t seq, const std::string& source_id,
                         const std::string& event_id, const std::string& why,
                         v1::StoredInterval* rec, __int128 gpu_ms) {
  v1::Unpriced u;
  u.set_gpu_ms(static_cast<int64_t>(gpu_ms));  // one interval's, in one period: fits
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

// Usage partly outside the periods settlement knows: listed with the period nearest it.
void Engine::NoteUsageOutside(v1::StoredInterval* rec) {
  const v1::UsageInterval& u = rec->interval();
  const int64_t before = std::min(u.end_ms(), base::kFirstPeriodStartMs) - u.start_ms();
  const int64_t after = u.end_ms() - std::max(u.start_ms(), base::kLastPeriod.EndMs());
  AddUnpriced((u.start_ms() < base::kFirstPeriodStartMs ? base::kFirstPeriod : base::kLastPeriod)
                  .ToString(),
              rec->seq(), rec->source_id(), rec->event_id(), OutsideWhy("usage"), rec,
              static_cast<__int128>(u.gpu_count()) *
                  (std::max<int64_t>(0, before) + std::max<int64_t>(0, after)));
}

void Engine::AddInterval(uint64_t seq, const std::string& source_id, const std::string& event_id,
                         const v1::UsageInterval& u) {
  v1::StoredInterval rec;
  rec.set_seq(seq);
  rec.set_source_id(source_id);
  rec.set_event_id(event_id);
  *rec.mutable_interval() = u;
  const std::string id_key = KeyBuilder(keys::kInterval).Str(source_id).Str(event_id).Take();
  if (base::OutsideKnownPeriods(u.start_ms(), u.end_ms())) NoteUsageOutside(&rec);
  const v1::Allocation* alloc = registry_.FindAllocation(u.allocation_id());
  if (alloc == nullptr) {
    base::ForEachPeriodWithin(u.start_ms(), u.end_ms(), [&](Period p, int64_t lo, int64_t hi) {
      AddUnpriced(p.ToString(), seq, source_id, event_id,
                  absl::StrCat("unknown allocation '", u.allocation_id(), "'"), &rec,
                  GpuMsOf(u.gpu_count(), lo, hi));
    });
    store_->Put(id_key, rec.SerializeAsString());
    return;
  }
  // The instant from which this interval is beyond its allocation's cap (end: never).
  const int64_t cap_from = TakeCap(*alloc, u, &rec);
  PriceStretch(*alloc, cap_from, u.start_ms(), u.end_ms(), &rec);
  store_->Put(id_key, rec.SerializeAsString());
  // The index orders the allocation's intervals by start, so that credits and re-ratings read
  // only the usage near the instants they change.
  store_->Put(KeyBuilder(keys::kAllocationIndex)
                  .Str(alloc->allocation_id())
                  .I64(u.start_ms())
                  .Str(source_id)
                  .Str(event_id)
                  .key(),
              KeyBuilder().I64(u.end_ms()).key());
  {
    const std::string longest_key =
        KeyBuilder(keys::kLongestIndexed).Str(alloc->allocation_id()).Take();
    int64_t longest = 0;
    if (auto v = store_->Get(longest_key)) {
      KeyReader r(*v);
      if (!r.I64(&longest)) longest = 0;
    }
    // In 128 bits: the ledger may hold any int64 times (settlement takes what ingest recorded).
    const __int128 duration = static_cast<__int128>(u.end_ms()) - u.start_ms();
    const int64_t d = duration > INT64_MAX ? INT64_MAX : static_cast<int64_t>(duration);
    if (d > longest) store_->Put(longest_key, KeyBuilder().I64(d).key());
  }
  RecreditWithin(alloc->allocation_id(), u.start_ms(), u.end_ms());
}

// Why usage of `alloc` at `t` cannot be priced with the registry as it is now.
std::string Engine::UnpricedWhy(const v1::Allocation& alloc, v1::GpuModel model, int64_t t) const {
  const auto inst = registry_.InstitutionAt(alloc.institution_id(), t);
  const auto rate = registry_.RateAt(alloc.program(), model, t);
  return absl::StrCat(!inst   ? "no institution record for '"
                      : !rate ? "no rate card for the usage of '"
                              : "no co-pay policy for the type of '",
                      alloc.institution_id(), "' at ", base::FormatKst(t));
}

// Prices [lo, hi) of the interval in `rec` (of allocation `alloc`, beyond its cap from `cap_from`)
// with the registry as it is now, period by period and at every price change: appends the slices
// to `rec` and adds their GPU-ms to their lines and to the daily roll-up; a stretch
// that cannot be priced is listed with its reason and counts on an unpriced line.
void Engine::PriceStretch(const v1::Allocation& alloc, int64_t cap_from, int64_t lo_ms,
                          int64_t hi_ms, v1::StoredInterval* rec) {
  const v1::UsageInterval& u = rec->interval();
  const int64_t gpus = u.gpu_count();
  base::ForEachPeriodWithin(lo_ms, hi_ms, [&](Period p, int64_t lo, int64_t hi) {
    const std::string period = p.ToString();
    std::vector<int64_t> cuts = registry_.PriceChangesWithin(alloc, u.gpu_model(), lo, hi);
    if (cap_from > lo && cap_from < hi) cuts.push_back(cap_from);
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    cuts.insert(cuts.begin(), lo);
    cuts.push_back(hi);
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
      const int64_t s = cuts[i];
      const int64_t e = cuts[i + 1];
      const auto inst = registry_.InstitutionAt(alloc.institution_id(), s);
      const auto rate = registry_.RateAt(alloc.program(), u.gpu_model(), s);
      const auto copay = inst ? registry_.CopayAt(inst->type, s) : std::nullopt;
      LineId line{alloc.institution_id(),
                  alloc.allocation_id(),
                  u.gpu_model(),
                  0,
                  0,
                  inst ? inst->type : v1::INSTITUTION_TYPE_UNSPECIFIED,
                  v1::LINE_KIND_UNPRICED};
      if (!inst || !rate || !copay) {
        // Listed with the reason, and on the invoice as an unpriced line: GPU-ms, 0 won.
        AddUnpriced(period, rec->seq(), rec->source_id(), rec->event_id(),
                    UnpricedWhy(alloc, u.gpu_model(), s), rec, GpuMsOf(gpus, s, e));
      } else {
        line.rate = *rate;
        line.copay_bp = static_cast<int64_t>(*copay);
        line.kind = v1::LINE_KIND_USAGE;
        if (s >= cap_from) PriceBeyondCap(registry_.OverCapAt(alloc, inst->type, s), &line);
      }
      const std::string key = EncodeLine(line);
      const int n = rec->slices_size();
      if (n > 0 && rec->slices(n - 1).line_key() == key && rec->slices(n - 1).end_ms() == s &&
          rec->slices(n - 1).period() == period) {
        rec->mutable_slices(n - 1)->set_end_ms(e);
      } else {
        v1::StoredSlice* slice = rec->add_slices();
        slice->set_period(period);
        slice->set_start_ms(s);
        slice->set_end_ms(e);
        slice->set_line_key(key);
      }
      AddLine(period, key, GpuMsOf(gpus, s, e));
      AddDaily(keys::RollupRest(rec->source_id(), alloc.program(), u.gpu_model(),
                                alloc.allocation_id(), line.type, keys::kMeasureUsed),
               s, e, gpus);
    }
  });
}

// The operator's re-rating: the usage of the programme (and model) over [from, to) is priced
// again with the registry as it is now. What it took from its cap stays; credits follow.
void Engine::Rerate(const v1::Rerating& r) {
  for (const v1::Allocation* alloc : registry_.AllocationsOn(r.program(), r.gpu_model())) {
    std::vector<std::string> keys;
    for (auto& e : IndexedOverlapping(store_, alloc->allocation_id(), r.from_ms(), r.to_ms())) {
      keys.push_back(std::move(e.key));
    }
    for (const std::string& key : keys) {
      auto bytes = store_->Get(key);
      v1::StoredInterval rec;
      if (!bytes || !rec.ParseFromString(*bytes)) continue;
      RerateInterval(*alloc, r.from_ms(), r.to_ms(), &rec);
      store_->Put(key, rec.SerializeAsString());
    }
    if (!keys.empty()) RecreditWithin(alloc->allocation_id(), r.from_ms(), r.to_ms());
  }
  RerateOwnUse(r);
}

void Engine::RerateInterval(const v1::Allocation& alloc, int64_t from, int64_t to,
                            v1::StoredInterval* rec) {
  const v1::UsageInterval& u = rec->interval();
  const int64_t gpus = u.gpu_count();
  // It took [start, start + cap_gpu_ms / gpus) from the cap, whole (TakeCap); no cap: never
  // beyond it.
  const int64_t cap_from =
      alloc.gpu_ms_cap() <= 0 ? u.end_ms() : u.start_ms() + rec->cap_gpu_ms() / gpus;
  const v1::StoredInterval old = *rec;
  // Its unpriced records are written again below, from its slices as they now are.
  for (const auto& k : old.unpriced_keys()) store_->Delete(k);
  rec->clear_unpriced_keys();
  rec->clear_slices();
  if (base::OutsideKnownPeriods(u.start_ms(), u.end_ms())) NoteUsageOutside(rec);
  for (const auto& s : old.slices()) {
    auto keep = [&](int64_t a, int64_t b) {
      if (a >= b) return;
      v1::StoredSlice* t = rec->add_slices();
      *t = s;
      t->set_start_ms(a);
      t->set_end_ms(b);
      LineId id;
      if (DecodeLine(s.line_key(), &id) && id.kind == v1::LINE_KIND_UNPRICED) {
        AddUnpriced(s.period(), rec->seq(), rec->source_id(), rec->event_id(),
                    UnpricedWhy(alloc, u.gpu_model(), a), rec, GpuMsOf(gpus, a, b));
      }
    };
    const int64_t a = std::max(s.start_ms(), from);
    const int64_t b = std::min(s.end_ms(), to);
    if (a >= b) {
      keep(s.start_ms(), s.end_ms());
      continue;
    }
    keep(s.start_ms(), a);
    AddLine(s.period(), s.line_key(), -GpuMsOf(gpus, a, b));
    // The roll-up keeps the institution type of each stretch: taken back here, added again as
    // it is now priced.
    AddDaily(UsageRollup(*rec, s.line_key()), a, b, -gpus);
    PriceStretch(alloc, cap_from, a, b, rec);
    keep(b, s.end_ms());
  }
}

void Engine::RemoveInterval(const v1::StoredInterval& rec) {
  const int64_t gpus = rec.interval().gpu_count();
  for (const auto& s : rec.slices()) {
    AddLine(s.period(), s.line_key(), -GpuMsOf(gpus, s.start_ms(), s.end_ms()));
    AddDaily(UsageRollup(rec, s.line_key()), s.start_ms(), s.end_ms(), -gpus);
  }
  for (const auto& c : rec.credits()) AddLine(c.period(), c.line_key(), -PartGpuMs(c));
  for (const auto& k : rec.unpriced_keys()) store_->Delete(k);
  const std::string& allocation_id = rec.interval().allocation_id();
  if (rec.cap_gpu_ms() != 0) {
    const std::string cap_key =
        KeyBuilder(keys::kCapUsed).Str(registry_.CapHolder(allocation_id)).Take();
    counters_->Add(cap_key, -static_cast<__int128>(rec.cap_gpu_ms()));
  }
  store_->Delete(KeyBuilder(keys::kInterval).Str(rec.source_id()).Str(rec.event_id()).key());
  store_->Delete(KeyBuilder(keys::kAllocationIndex)
                     .Str(allocation_id)
                     .I64(rec.interval().start_ms())
                     .Str(rec.source_id())
                     .Str(rec.event_id())
                     .key());
  // Usage at the same instants may take the credits this interval had.
  if (!rec.credits().empty()) {
    RecreditWithin(allocation_id, rec.interval().start_ms(), rec.interval().end_ms());
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
  v1::StoredOwnUse rec;
  rec.set_csp_id(source_id);
  rec.set_program(o.program());
  rec.set_gpu_model(o.gpu_model());
  rec.set_gpu_count(o.gpu_count());
  base::ForEachPeriodWithin(o.start_ms(), o.end_ms(), [&](Period p, int64_t lo, int64_t hi) {
    const std::string rest = PoolRest(p.ToString(), source_id, o.program(), o.gpu_model());
    counters_->Add(absl::StrCat(keys::kOwnUse, rest), GpuMsOf(o.gpu_count(), lo, hi));
    AddDaily(keys::RollupRest(source_id, o.program(), o.gpu_model(), "", 0, keys::kMeasureOwnUse),
             lo, hi, o.gpu_count());
    ValueOwnUseSlices(&rec, lo, hi);
    // Own use of a closed period: an adjustment on the first open period's statement.
    if (IsClosed(p.ToString())) store_->Put(absl::StrCat(keys::kTouchedOwnUse, rest), "");
  });
  if (rec.slices_size() == 0) return;
  store_->Put(KeyBuilder(keys::kOwnUseRecord)
                  .U32(o.program())
                  .U32(o.gpu_model())
                  .I64(o.start_ms())
                  .Str(source_id)
                  .U64(seq)
                  .Take(),
              rec.SerializeAsString());
}

void Engine::ValueOwnUseSlices(v1::StoredOwnUse* rec, int64_t lo, int64_t hi) {
  const int64_t gpus = rec->gpu_count();
  __int128 value = 0, unpriced = 0;
  int64_t at = lo;
  auto slice = [&](int64_t from, int64_t to, std::optional<int64_t> krw) {
    if (from >= to) return;
    const __int128 gpu_ms = GpuMsOf(gpus, from, to);
    if (krw) {
      value = SaturatingAdd(value, SaturatingMul(gpu_ms, *krw));
    } else {
      unpriced += gpu_ms;
    }
    v1::StoredOwnUseSlice* s = rec->add_slices();
    s->set_start_ms(from);
    s->set_end_ms(to);
    s->set_priced(krw.has_value());
    s->set_krw_per_gpu_hour(krw.value_or(0));
  };
  if (const auto* rates = registry_.Rates(rec->program(), rec->gpu_model())) {
    rates->ForEachWithin(lo, hi, [&](int64_t from, int64_t to, int64_t krw) {
      slice(at, from, std::nullopt);
      slice(from, to, krw);
      at = to;
    });
  }
  slice(at, hi, std::nullopt);
  const std::string rest =
      PoolRest(base::PeriodOf(lo).ToString(), rec->csp_id(), rec->program(), rec->gpu_model());
  counters_->Add(absl::StrCat(keys::kOwnUseValue, rest), value);
  counters_->Add(absl::StrCat(keys::kOwnUseUnpriced, rest), unpriced);
}

// The re-rating of own use: each own-use slice of the programme (and model) inside [from, to)
// is valued again at the rate card as it is now, as usage is priced again. Own use is a few
// records a month (a CSP's own reports), so the programme's records are read whole.
void Engine::RerateOwnUse(const v1::Rerating& r) {
  KeyBuilder prefix(keys::kOwnUseRecord);
  prefix.U32(r.program());
  if (r.gpu_model() != v1::GPU_MODEL_UNSPECIFIED) prefix.U32(r.gpu_model());
  std::vector<std::pair<std::string, v1::StoredOwnUse>> touched;
  store_->Scan(prefix.key(), [&](std::string_view key, std::string_view value) {
    v1::StoredOwnUse rec;
    if (!rec.ParseFromArray(value.data(), static_cast<int>(value.size()))) return true;
    const auto& slices = rec.slices();
    if (!slices.empty() && slices[0].start_ms() < r.to_ms() &&
        slices[slices.size() - 1].end_ms() > r.from_ms()) {
      touched.emplace_back(std::string(key), std::move(rec));
    }
    return true;
  });
  for (auto& [key, rec] : touched) {
    const v1::StoredOwnUse old = rec;
    rec.clear_slices();
    for (const auto& s : old.slices()) {
      const int64_t a = std::max(s.start_ms(), r.from_ms());
      const int64_t b = std::min(s.end_ms(), r.to_ms());
      if (a >= b) {
        *rec.add_slices() = s;
        continue;
      }
      if (s.start_ms() < a) {
        v1::StoredOwnUseSlice* before = rec.add_slices();
        *before = s;
        before->set_end_ms(a);
      }
      // Takes back what [a, b) was valued at, then values it again.
      const std::string period = base::PeriodOf(a).ToString();
      const std::string rest = PoolRest(period, rec.csp_id(), rec.program(), rec.gpu_model());
      const __int128 gpu_ms = GpuMsOf(rec.gpu_count(), a, b);
      if (s.priced()) {
        counters_->Add(absl::StrCat(keys::kOwnUseValue, rest),
                       -SaturatingMul(gpu_ms, s.krw_per_gpu_hour()));
      } else {
        counters_->Add(absl::StrCat(keys::kOwnUseUnpriced, rest), -gpu_ms);
      }
      ValueOwnUseSlices(&rec, a, b);
      if (IsClosed(period)) store_->Put(absl::StrCat(keys::kTouchedOwnUse, rest), "");
      if (b < s.end_ms()) {
        v1::StoredOwnUseSlice* after = rec.add_slices();
        *after = s;
        after->set_start_ms(b);
      }
    }
    store_->Put(key, rec.SerializeAsString());
  }
}

}  // namespace gpuledger::settlement
