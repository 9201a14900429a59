// Caps and credits: what an interval takes from its allocation's GPU-hour cap, the outage
// credits of the usage an outage overlaps, and usage taken back when an allocation is revoked
// or shortened.

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "counters.h"
#include "engine_internal.h"
#include "settlement/engine.h"

namespace gpuledger::settlement {

using namespace internal;  // NOLINT: the engine's own helpers

int64_t Engine::TakeCap(const v1::Allocation& alloc, const v1::UsageInterval& u,
                        v1::StoredInterval* rec) {
  const int64_t gpus = u.gpu_count();
  if (alloc.gpu_ms_cap() <= 0 || gpus <= 0 || u.end_ms() <= u.start_ms()) return u.end_ms();
  // In 128 bits: 2^32 GPUs over the int64 time line never overflow.
  // Allocations continued by a transfer share the cap of the first of their chain.
  const std::string cap_key =
      KeyBuilder(keys::kCapUsed).Str(registry_.CapHolder(alloc.allocation_id())).Take();
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

namespace {

// Which usage an allocation's out-of-service GPUs credit first at an instant: usage billed
// within the cap, then usage billed beyond it, then held or refused usage (0 won either way).
// Unpriced usage is never credited: -1.
int CreditRank(const std::string& line_key) {
  LineId id;
  if (!DecodeLine(line_key, &id)) return -1;  // never: we wrote it
  switch (id.kind) {
    case v1::LINE_KIND_USAGE:
      return 0;
    case v1::LINE_KIND_BEYOND_CAP:
      return 1;
    case v1::LINE_KIND_HELD:
    case v1::LINE_KIND_REFUSED:
      return 2;
    default:
      return -1;
  }
}

// The GPUs still to credit over time: a step function, value from each key to the next.
class OutLevels {
 public:
  OutLevels(const std::vector<v1::StoredOutage>& outages, int64_t lo, int64_t hi) {
    std::vector<int64_t> cuts{lo, hi};
    for (const auto& o : outages) {
      for (int64_t t : {o.start_ms(), o.end_ms()}) {
        if (t > lo && t < hi) cuts.push_back(t);
      }
    }
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
      int64_t out = 0;  // at most 2^32 outages of 2^32 GPUs each: fits
      for (const auto& o : outages) {
        if (o.start_ms() <= cuts[i] && cuts[i] < o.end_ms()) out += o.gpu_count();
      }
      level_[cuts[i]] = out;
    }
    level_[hi] = 0;
  }

  // Takes up to `gpus` GPUs at each instant of [s, e) (within [lo, hi)); returns the GPU-ms
  // taken.
  __int128 Take(int64_t gpus, int64_t s, int64_t e) {
    Split(s);
    Split(e);
    __int128 taken = 0;
    for (auto it = level_.find(s); it != level_.end() && it->first < e; ++it) {
      const int64_t next = std::next(it)->first;
      const int64_t credited = std::min(gpus, it->second);
      if (credited <= 0) continue;
      it->second -= credited;
      taken += GpuMsOf(credited, it->first, next);
    }
    return taken;
  }

 private:
  void Split(int64_t t) {
    auto it = level_.upper_bound(t);
    if (it == level_.begin()) return;  // before lo: never (callers clip)
    const auto prev = std::prev(it);
    if (prev->first != t) level_.emplace_hint(it, t, prev->second);
  }
  std::map<int64_t, int64_t> level_;
};

}  // namespace

// Recomputes the outage credits of the allocation's usage over [start_ms, end_ms), after an
// outage, a withdrawal, new or removed usage or a change of line. At each instant the GPUs
// declared out are credited at most once across all the allocation's usage: to usage billed
// within the cap first, then beyond it, then held or refused usage; among equals in the order
// of (CSP, event id). Unpriced usage is neither credited nor uses a credit.
void Engine::RecreditWithin(const std::string& allocation_id, int64_t start_ms, int64_t end_ms,
                            bool outages_changed) {
  if (end_ms <= start_ms || !allocations_with_outages_.contains(allocation_id)) return;
  std::vector<v1::StoredOutage> outages;
  store_->Scan(KeyBuilder(keys::kOutageRecord).Str(allocation_id).key(),
               [&](std::string_view, std::string_view value) {
                 v1::StoredOutage o;
                 if (o.ParseFromString(std::string(value))) outages.push_back(o);
                 return true;
               });
  // Usage changed where no outage is declared: no credit there changes (none is due there, and
  // none was given, unless an outage there was just withdrawn).
  if (!outages_changed &&
      std::none_of(outages.begin(), outages.end(), [&](const v1::StoredOutage& o) {
        return o.start_ms() < end_ms && o.end_ms() > start_ms;
      })) {
    return;
  }
  struct Entry {
    std::string key;
    int64_t start_ms = 0, end_ms = 0;
    v1::StoredInterval rec;
    bool loaded = false;
  };
  // The usage whose credits may change, and the stretch it spans: every credit it gets is
  // decided by usage overlapping that stretch.
  int64_t lo = INT64_MAX, hi = INT64_MIN;
  for (const auto& e : IndexedOverlapping(store_, allocation_id, start_ms, end_ms)) {
    lo = std::min(lo, e.start_ms);
    hi = std::max(hi, e.end_ms);
  }
  if (lo >= hi) return;
  std::vector<Entry> entries;
  for (auto& e : IndexedOverlapping(store_, allocation_id, lo, hi)) {
    entries.push_back(Entry{std::move(e.key), e.start_ms, e.end_ms, {}, false});
  }
  // Among usage of the same kind, credits go in the order of (CSP, event id): the i/ key's.
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.key < b.key; });
  std::erase_if(entries, [&](const Entry& e) { return e.end_ms <= lo || e.start_ms >= hi; });
  for (auto& e : entries) {
    auto bytes = store_->Get(e.key);
    e.loaded = bytes && e.rec.ParseFromString(*bytes);
    if (!e.loaded) e.rec.Clear();
  }
  struct SliceRef {
    int rank;
    size_t entry;
    int slice;
  };
  std::vector<SliceRef> order;
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& slices = entries[i].rec.slices();
    for (int j = 0; j < slices.size(); ++j) {
      const int rank = CreditRank(slices[j].line_key());
      if (rank >= 0) order.push_back({rank, i, j});
    }
  }
  std::stable_sort(order.begin(), order.end(),
                   [](const SliceRef& a, const SliceRef& b) { return a.rank < b.rank; });
  OutLevels levels(outages, lo, hi);
  std::vector<std::map<std::pair<std::string, std::string>, __int128>> credits(entries.size());
  for (const SliceRef& ref : order) {
    const auto& rec = entries[ref.entry].rec;
    const auto& s = rec.slices(ref.slice);
    const int64_t from = std::max(s.start_ms(), lo);
    const int64_t to = std::min(s.end_ms(), hi);
    if (from >= to) continue;
    const __int128 taken = levels.Take(rec.interval().gpu_count(), from, to);
    if (taken != 0) credits[ref.entry][{s.period(), CreditKeyOf(s.line_key())}] -= taken;
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    auto& e = entries[i];
    if (e.end_ms <= start_ms || e.start_ms >= end_ms || !e.loaded) continue;
    std::map<std::pair<std::string, std::string>, __int128> old;
    for (const auto& c : e.rec.credits()) old[{c.period(), c.line_key()}] += PartGpuMs(c);
    if (old == credits[i]) continue;
    for (const auto& c : e.rec.credits()) AddLine(c.period(), c.line_key(), -PartGpuMs(c));
    e.rec.clear_credits();
    for (const auto& [where, gpu_ms] : credits[i]) {
      v1::StoredPart* part = e.rec.add_credits();
      part->set_period(where.first);
      part->set_line_key(where.second);
      part->set_gpu_ms_i128(keys::EncodeI128(gpu_ms));
      AddLine(where.first, where.second, gpu_ms);
    }
    store_->Put(e.key, e.rec.SerializeAsString());
  }
}

// Usage of an allocation after its (amended) end stops counting, and gives back its cap.
void Engine::Truncate(const std::string& allocation_id, int64_t end_ms) {
  for (const std::string& key : IntervalKeysOf(store_, allocation_id)) {
    auto bytes = store_->Get(key);
    v1::StoredInterval rec;
    if (!bytes || !rec.ParseFromString(*bytes)) continue;
    if (rec.interval().end_ms() <= end_ms) continue;
    const int64_t gpus = rec.interval().gpu_count();
    v1::StoredInterval kept = rec;
    // What it took from the cap after the new end is given back: the cap counts usage that is
    // billed, not usage taken back. (It took [start, start + cap_gpu_ms / gpus) whole.)
    if (rec.cap_gpu_ms() > 0 && gpus > 0) {
      const int64_t within_end = rec.interval().start_ms() + rec.cap_gpu_ms() / gpus;
      const int64_t from = std::max(rec.interval().start_ms(), end_ms);
      if (within_end > from) {
        const int64_t back = gpus * (within_end - from);  // at most cap_gpu_ms: fits
        counters_->Add(KeyBuilder(keys::kCapUsed).Str(registry_.CapHolder(allocation_id)).Take(),
                       -static_cast<__int128>(back));
        kept.set_cap_gpu_ms(rec.cap_gpu_ms() - back);
      }
    }
    kept.clear_slices();
    for (const auto& s : rec.slices()) {
      if (s.end_ms() <= end_ms) {
        *kept.add_slices() = s;
        continue;
      }
      const int64_t from = std::max(s.start_ms(), end_ms);
      AddLine(s.period(), s.line_key(), -GpuMsOf(gpus, from, s.end_ms()));
      AddDaily(UsageRollup(rec, s.line_key()), from, s.end_ms(), -gpus);
      if (s.start_ms() < end_ms) {
        v1::StoredSlice* t = kept.add_slices();
        *t = s;
        t->set_end_ms(end_ms);
      }
    }
    store_->Put(key, kept.SerializeAsString());
  }
  RecreditWithin(allocation_id, end_ms, INT64_MAX);
}

// An outage's GPU-ms on its pool's statement rows, per period (adjustments for closed ones).
void Engine::CountOutage(const std::string& source_id, const v1::OutageInterval& o, int sign) {
  v1::Program program = o.program();
  v1::GpuModel model = o.gpu_model();
  if (!o.allocation_id().empty()) {
    if (const v1::Allocation* alloc = registry_.FindAllocation(o.allocation_id())) {
      program = alloc->program();
      model = alloc->gpu_model();
    }
  }
  const std::string scope = o.allocation_id().empty() ? "pool" : "allocation";
  const bool planned = o.kind() == v1::OUTAGE_PLANNED;
  base::ForEachPeriodWithin(o.start_ms(), o.end_ms(), [&](Period p, int64_t lo, int64_t hi) {
    const std::string rest = OutageRest(p.ToString(), source_id, program, model, scope, o.cause());
    const std::string key = absl::StrCat(keys::kOutage, rest);
    counters_->Add(key, sign * GpuMsOf(o.gpu_count(), lo, hi));
    if (IsClosed(p.ToString())) store_->Put(absl::StrCat(keys::kTouchedOutage, rest), "");
    counters_->Add(KeyBuilder(keys::kOutageByKind)
                       .Raw(PoolRest(p.ToString(), source_id, program, model))
                       .U32(planned ? v1::OUTAGE_PLANNED : v1::OUTAGE_UNPLANNED)
                       .Take(),
                   sign * GpuMsOf(o.gpu_count(), lo, hi));
    AddDaily(
        keys::RollupRest(source_id, program, model, "", 0,
                         planned ? keys::kMeasurePlannedOutage : keys::kMeasureUnplannedOutage),
        lo, hi, sign * static_cast<int64_t>(o.gpu_count()));
  });
}

// An outage counts on its pool's statement; one declared for an allocation also credits the
// usage it overlaps, recorded before or after it.
void Engine::ApplyOutage(uint64_t seq, const std::string& source_id, const v1::UsageEvent& event) {
  const auto& o = event.outage();
  NoteOutside(seq, source_id, event.event_id(), "an outage", o.start_ms(), o.end_ms());
  CountOutage(source_id, o, 1);
  v1::StoredOutageEvent by_id;
  by_id.set_seq(seq);
  *by_id.mutable_outage() = o;
  store_->Put(KeyBuilder(keys::kOutageById).Str(source_id).Str(event.event_id()).key(),
              by_id.SerializeAsString());
  const v1::Allocation* alloc =
      o.allocation_id().empty() ? nullptr : registry_.FindAllocation(o.allocation_id());
  if (alloc == nullptr) return;
  v1::StoredOutage stored;
  stored.set_seq(seq);
  stored.set_start_ms(o.start_ms());
  stored.set_end_ms(o.end_ms());
  stored.set_gpu_count(o.gpu_count());
  store_->Put(KeyBuilder(keys::kOutageRecord).Str(alloc->allocation_id()).U64(seq).key(),
              stored.SerializeAsString());
  allocations_with_outages_.insert(alloc->allocation_id());
  RecreditWithin(alloc->allocation_id(), o.start_ms(), o.end_ms(), true);
}

// A withdrawn outage stops counting: its statement rows and the credits it gave are taken back
// (closed periods: adjustments). Ingest accepts a withdrawal only of an accepted outage, once.
void Engine::WithdrawOutage(uint64_t seq, const std::string& source_id,
                            const v1::UsageEvent& event) {
  const std::string by_id_key = KeyBuilder(keys::kOutageById)
                                    .Str(source_id)
                                    .Str(event.outage_withdrawal().target_event_id())
                                    .Take();
  auto bytes = store_->Get(by_id_key);
  v1::StoredOutageEvent target;
  if (!bytes || !target.ParseFromString(*bytes)) {
    AddUnpriced(base::PeriodOf(event.emitted_at_ms()).ToString(), seq, source_id, event.event_id(),
                absl::StrCat("withdrawal of unknown outage '",
                             event.outage_withdrawal().target_event_id(), "'"),
                nullptr);
    return;
  }
  const v1::OutageInterval& o = target.outage();
  CountOutage(source_id, o, -1);
  store_->Delete(by_id_key);
  const v1::Allocation* alloc =
      o.allocation_id().empty() ? nullptr : registry_.FindAllocation(o.allocation_id());
  if (alloc == nullptr) return;
  store_->Delete(
      KeyBuilder(keys::kOutageRecord).Str(alloc->allocation_id()).U64(target.seq()).key());
  RecreditWithin(alloc->allocation_id(), o.start_ms(), o.end_ms(), true);
}

}  // namespace gpuledger::settlement

namespace gpuledger::settlement {

using namespace internal;  // NOLINT: the engine's own helpers

// Held slices of the allocation's usage move to lines billed at the release's co-pay; their
// outage credits follow. Closed periods get adjustment lines as for any late change.
void Engine::Release(const std::string& allocation_id, uint32_t copay_bp) {
  ledger::OverCapPricing released;
  released.action = v1::OVER_CAP_BILL_AT;
  released.copay_bp = copay_bp;
  int64_t from = INT64_MAX, to = INT64_MIN;
  for (const std::string& key : IntervalKeysOf(store_, allocation_id)) {
    auto bytes = store_->Get(key);
    v1::StoredInterval rec;
    if (!bytes || !rec.ParseFromString(*bytes)) continue;
    bool changed = false;
    for (auto& s : *rec.mutable_slices()) {
      LineId id;
      if (!DecodeLine(s.line_key(), &id) || id.kind != v1::LINE_KIND_HELD) continue;
      const __int128 gpu_ms = GpuMsOf(rec.interval().gpu_count(), s.start_ms(), s.end_ms());
      AddLine(s.period(), s.line_key(), -gpu_ms);
      PriceBeyondCap(released, &id);
      s.set_line_key(EncodeLine(id));
      AddLine(s.period(), s.line_key(), gpu_ms);
      changed = true;
    }
    if (!changed) continue;
    store_->Put(key, rec.SerializeAsString());
    from = std::min(from, rec.interval().start_ms());
    to = std::max(to, rec.interval().end_ms());
  }
  RecreditWithin(allocation_id, from, to);
}

}  // namespace gpuledger::settlement
