// Property tests on seeded random streams of registry and usage events. Each stream is applied
// three ways: "live" (in chunks, reopening the store between chunks and reading documents in
// between), "replay" (in one go into a fresh store) and "open" (the same entries without the
// period closes, so that every period's draft is the current truth). The documents are checked
// against each other and against a brute-force model of the stream (World below).
//
// Streams are generated as ingest would accept them: usage within its allocation's grant
// (counting the allocation's other live intervals), corrections of live, not yet corrected
// events of the same CSP with the same allocation, own use and pool outages on pools that exist,
// periods closed in order after they ended; a few refused entries are mixed in. A clock runs
// through the stream from March to June 2026 (KST); usage ends before the clock, and some of it
// arrives late, into closed periods.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/period.h"
#include "events.h"
#include "harness.h"
#include "settlement/engine.h"
#include "settlement/render.h"

namespace gpuledger::settlement {
namespace {

using base::Period;
using testing::Harness;
using namespace testing;  // NOLINT: the event builders

constexpr int kSeeds = 20;
constexpr int kSteps = 300;  // entries per stream, closes not counted (some come to nothing)
constexpr int64_t kMinute = 60'000;
constexpr int64_t kDay = 24 * kHour;
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
constexpr int64_t kVatBp = 1'000;

const Period kFeb{2026, 2};
const Period kMarch{2026, 3};
const Period kApril{2026, 4};
const Period kMay{2026, 5};
const Period kJune{2026, 6};
const Period kPeriods[] = {kFeb, kMarch, kApril, kMay, kJune};

const char* const kCsps[] = {"csp-a", "csp-b"};
const v1::GpuModel kModels[] = {v1::H200, v1::B200};

// One ledger entry of a stream.
struct Step {
  enum Kind { kRegistry, kUsage, kRejected, kClose };
  Kind kind = kRegistry;
  v1::RegistryEvent registry;  // kRegistry
  std::string csp;             // kUsage, kRejected: the publishing CSP
  v1::UsageEvent usage;        // kUsage, kRejected
  Period period;               // kClose
};

void Feed(Harness& h, const Step& s, bool closes) {
  switch (s.kind) {
    case Step::kRegistry:
      h.Registry(s.registry);
      break;
    case Step::kUsage:
      h.Usage(s.csp, s.usage);
      break;
    case Step::kRejected:
      h.Rejected(s.csp, s.usage);
      break;
    case Step::kClose:
      if (closes) h.Close(s.period);
      break;
  }
}

// ---- A brute-force model of a stream ----

using PoolKey = std::tuple<std::string, int, int>;  // CSP, programme, GPU model

struct AllocInfo {
  std::string csp;
  v1::Program program = v1::GOV_ADVANCED;
  v1::GpuModel model = v1::H200;
  int64_t gpus = 0;
  int64_t cap = 0;  // GPU-ms, 0: none
  // Its window, as amended by a transfer (which ends it, and starts the one continuing it).
  int64_t start = 0;
  int64_t end = kNever;
  std::string cap_holder;  // the allocation whose cap it draws on: the first of its transfers
};

// A live usage interval, with what the rules make of it when it is applied.
struct Interval {
  std::string allocation_id;
  int64_t gpus = 0;
  int64_t start = 0;
  int64_t end = 0;
  int64_t priced_from = kNever;  // a rate card is in force from here on
  int64_t cap_from = 0;          // beyond the allocation's cap from here on (end: never)
  int64_t cap_gpu_ms = 0;        // what it took from the cap
};

// An own-use or outage interval as published.
struct Span {
  std::string csp;
  std::string allocation_id;  // outages of an allocation
  int program = 0;
  int model = 0;
  int64_t gpus = 0;
  int64_t start = 0;
  int64_t end = 0;
  // Own use: [from, to) stretches with the won per GPU-hour in force there when it was
  // recorded (0: no rate card yet).
  std::vector<std::tuple<int64_t, int64_t, int64_t>> rated;
  std::string event_id;  // outages: what a withdrawal names
};

int64_t Overlap(int64_t start, int64_t end, Period p) {
  return std::max<int64_t>(0, std::min(end, p.EndMs()) - std::max(start, p.StartMs()));
}

// Every institution and co-pay policy of a stream is in force from 0 on, so usage is priced
// from where the rate card of its (programme, model) starts.
struct World {
  std::map<std::string, AllocInfo> allocations;
  std::map<std::pair<int, int>, std::map<int64_t, int64_t>> rates;  // (programme, model)
  std::map<PoolKey, std::map<int64_t, int64_t>> pools;
  std::map<std::string, std::map<int64_t, int64_t>> contracts;   // own-use cap by CSP
  std::map<std::string, std::map<int64_t, int64_t>> netting;     // OwnUseExcess by CSP
  std::map<std::string, int64_t> cap_used;                       // by cap holder
  std::map<std::string, uint32_t> releases;                      // OverCapRelease co-pay
  std::map<std::pair<std::string, std::string>, Interval> live;  // by (CSP, event id)
  std::vector<Span> own_use;
  std::vector<Span> outages;

  void Apply(const Step& s) {
    if (s.kind == Step::kRegistry) {
      const v1::RegistryEvent& e = s.registry;
      if (e.has_allocation() && !allocations.contains(e.allocation().allocation_id())) {
        const auto& a = e.allocation();
        allocations[a.allocation_id()] = {a.csp_id(),    a.program(),      a.gpu_model(),
                                          a.gpu_count(), a.gpu_ms_cap(),   a.start_ms(),
                                          a.end_ms(),    a.allocation_id()};
      }
      if (e.has_allocation_amendment() && e.allocation_amendment().has_transfer()) {
        const auto& m = e.allocation_amendment();
        auto from = allocations.find(m.allocation_id());
        if (from != allocations.end() && !allocations.contains(m.transfer().new_allocation_id())) {
          AllocInfo next = from->second;  // the same grant, end and cap holder
          if (!m.transfer().to_csp_id().empty()) next.csp = m.transfer().to_csp_id();
          next.start = m.effective_from_ms();
          from->second.end = m.effective_from_ms();
          allocations[m.transfer().new_allocation_id()] = next;
          Cut(m.allocation_id(), m.effective_from_ms());
        }
      }
      if (e.has_over_cap_release()) {
        releases.emplace(e.over_cap_release().allocation_id(), e.over_cap_release().copay_bp());
      }
      if (e.has_rate_card()) {
        const auto& r = e.rate_card();
        rates[{r.program(), r.gpu_model()}][r.effective_from_ms()] = r.krw_per_gpu_hour();
      }
      if (e.has_csp_contract()) {
        const auto& c = e.csp_contract();
        contracts[c.csp_id()][c.effective_from_ms()] = c.own_use_cap_bp();
        netting[c.csp_id()][c.effective_from_ms()] = c.own_use_excess();
      }
      if (e.has_gpu_pool()) {
        const auto& p = e.gpu_pool();
        pools[{p.csp_id(), p.program(), p.gpu_model()}][p.effective_from_ms()] = p.gpu_count();
      }
      return;
    }
    if (s.kind != Step::kUsage) return;
    const v1::UsageEvent& e = s.usage;
    if (e.has_usage()) Add(s.csp, e.event_id(), e.usage());
    if (e.has_correction()) {
      auto it = live.find({s.csp, e.correction().target_event_id()});
      if (it != live.end()) {
        const Interval& old = it->second;
        cap_used[allocations.at(old.allocation_id).cap_holder] -= old.cap_gpu_ms;
        live.erase(it);
      }
      if (e.correction().has_replacement()) Add(s.csp, e.event_id(), e.correction().replacement());
    }
    if (e.has_own_use()) {
      const auto& o = e.own_use();
      Span span{s.csp,        "",         o.program(), o.gpu_model(), o.gpu_count(),
                o.start_ms(), o.end_ms(), {},          e.event_id()};
      // Valued with the rate cards recorded so far, cut where they change.
      std::vector<int64_t> cuts{o.start_ms(), o.end_ms()};
      auto rate = rates.find({o.program(), o.gpu_model()});
      if (rate != rates.end()) {
        for (const auto& [t, krw] : rate->second) {
          if (t > o.start_ms() && t < o.end_ms()) cuts.push_back(t);
        }
      }
      std::sort(cuts.begin(), cuts.end());
      for (size_t i = 0; i + 1 < cuts.size(); ++i) {
        const int64_t krw = rate == rates.end() ? 0 : At(rate->second, cuts[i]).value_or(0);
        span.rated.emplace_back(cuts[i], cuts[i + 1], krw);
      }
      own_use.push_back(std::move(span));
    }
    if (e.has_outage()) {
      const auto& o = e.outage();
      outages.push_back({s.csp,
                         o.allocation_id(),
                         o.program(),
                         o.gpu_model(),
                         o.gpu_count(),
                         o.start_ms(),
                         o.end_ms(),
                         {},
                         e.event_id()});
    }
    if (e.has_outage_withdrawal()) {  // the outage was never declared: no credit, no row
      std::erase_if(outages, [&](const Span& o) {
        return o.csp == s.csp && o.event_id == e.outage_withdrawal().target_event_id();
      });
    }
  }

  // Usage counts against its allocation's cap in ledger order; the interval that crosses the cap
  // is split at the last whole millisecond that still fits under it.
  void Add(const std::string& csp, const std::string& id, const v1::UsageInterval& u) {
    const AllocInfo& a = allocations.at(u.allocation_id());
    Interval r;
    r.allocation_id = u.allocation_id();
    r.gpus = u.gpu_count();
    r.start = u.start_ms();
    r.end = u.end_ms();
    auto rate = rates.find({a.program, u.gpu_model()});
    if (rate != rates.end() && !rate->second.empty()) r.priced_from = rate->second.begin()->first;
    r.cap_from = r.end;
    if (a.cap > 0) {
      const int64_t remaining = std::max<int64_t>(0, a.cap - cap_used[a.cap_holder]);
      const int64_t within =
          r.gpus * (r.end - r.start) <= remaining ? r.end - r.start : remaining / r.gpus;
      r.cap_from = r.start + within;
      r.cap_gpu_ms = r.gpus * within;
      cap_used[a.cap_holder] += r.cap_gpu_ms;
    }
    live[{csp, id}] = r;
  }

  // The allocation ends at `end_ms` (a transfer): its usage after it stops counting, and what
  // that took from the cap is given back (docs/SETTLEMENT.md, "Revocations", "Transfers").
  void Cut(const std::string& allocation_id, int64_t end_ms) {
    const std::string& holder = allocations.at(allocation_id).cap_holder;
    for (auto& [who, r] : live) {
      if (r.allocation_id != allocation_id || r.end <= end_ms) continue;
      const int64_t from = std::max(r.start, end_ms);
      if (r.cap_gpu_ms > 0) {
        const int64_t within_end = r.start + r.cap_gpu_ms / r.gpus;
        if (within_end > from) {
          const int64_t back = r.gpus * (within_end - from);
          cap_used[holder] -= back;
          r.cap_gpu_ms -= back;
        }
      }
      r.end = from;
      r.cap_from = std::min(r.cap_from, r.end);
    }
  }

  // The most GPUs of `allocation_id` in use at once within [start, end), `except` aside.
  int64_t InUse(const std::string& allocation_id, int64_t start, int64_t end,
                const std::pair<std::string, std::string>* except) const {
    std::vector<std::pair<int64_t, int64_t>> edges;
    for (const auto& [who, r] : live) {
      if (r.allocation_id != allocation_id || r.end <= start || r.start >= end) continue;
      if (except != nullptr && who == *except) continue;
      edges.push_back({std::max(r.start, start), r.gpus});
      edges.push_back({std::min(r.end, end), -r.gpus});
    }
    std::sort(edges.begin(), edges.end());  // ends before starts at the same instant
    int64_t now = 0, most = 0;
    for (const auto& [t, delta] : edges) {
      now += delta;
      most = std::max(most, now);
    }
    return most;
  }

  static std::optional<int64_t> At(const std::map<int64_t, int64_t>& timeline, int64_t t) {
    auto v = timeline.upper_bound(t);
    if (v == timeline.begin()) return std::nullopt;
    return std::prev(v)->second;
  }
  template <typename Map, typename Key>
  static std::optional<int64_t> At(const Map& m, const Key& key, int64_t t) {
    auto it = m.find(key);
    return it == m.end() ? std::nullopt : At(it->second, t);
  }
  std::optional<int64_t> PoolAt(const PoolKey& key, int64_t t) const { return At(pools, key, t); }

  // Sum over `p` of pool GPUs × own-use cap (basis points) × time.
  __int128 AllowedOwnUse(const PoolKey& key, Period p) const {
    auto pool = pools.find(key);
    auto cap = contracts.find(std::get<0>(key));
    if (pool == pools.end() || cap == contracts.end()) return 0;
    std::vector<int64_t> cuts{p.StartMs(), p.EndMs()};
    for (const auto* timeline : {&pool->second, &cap->second}) {
      for (const auto& [t, v] : *timeline) {
        if (t > p.StartMs() && t < p.EndMs()) cuts.push_back(t);
      }
    }
    std::sort(cuts.begin(), cuts.end());
    __int128 total = 0;
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
      total += static_cast<__int128>(At(pool->second, cuts[i]).value_or(0)) *
               At(cap->second, cuts[i]).value_or(0) * (cuts[i + 1] - cuts[i]);
    }
    return total;
  }

  int64_t Capacity(const PoolKey& key, Period p) const {
    auto it = pools.find(key);
    if (it == pools.end()) return 0;
    int64_t total = 0;
    for (auto v = it->second.begin(); v != it->second.end(); ++v) {
      const auto next = std::next(v);
      total += v->second * Overlap(v->first, next == it->second.end() ? kNever : next->first, p);
    }
    return total;
  }

  // Σ GPU-ms × won per GPU-hour of a pool's own use in `p`, and its GPU-ms with no rate.
  std::pair<__int128, int64_t> OwnValue(const PoolKey& key, Period p) const {
    __int128 value = 0;
    int64_t unpriced = 0;
    for (const Span& s : own_use) {
      if (PoolKey{s.csp, s.program, s.model} != key) continue;
      for (const auto& [from, to, krw] : s.rated) {
        const int64_t gpu_ms = s.gpus * Overlap(from, to, p);
        value += static_cast<__int128>(gpu_ms) * krw;
        if (krw == 0) unpriced += gpu_ms;
      }
    }
    return {value, unpriced};
  }
  bool Nets(const std::string& csp, int64_t t) const {
    return At(netting, csp, t).value_or(0) == v1::OWN_USE_EXCESS_NETTED;
  }

  static int64_t Total(const std::vector<Span>& spans, const PoolKey& key, Period p) {
    int64_t total = 0;
    for (const Span& s : spans) {
      if (PoolKey{s.csp, s.program, s.model} == key) total += s.gpus * Overlap(s.start, s.end, p);
    }
    return total;
  }

  // The usage events with a stretch in `p` that no rate card prices.
  std::set<std::pair<std::string, std::string>> Unpriced(Period p) const {
    std::set<std::pair<std::string, std::string>> out;
    for (const auto& [who, r] : live) {
      if (Overlap(r.start, std::min(r.end, r.priced_from), p) > 0) out.insert(who);
    }
    return out;
  }

  // GPU-ms of the live intervals in `p`, priced within the cap, beyond it, and credited for
  // declared outages of their allocations (positive here).
  struct Quantities {
    int64_t usage = 0;
    int64_t beyond_cap = 0;
    int64_t credit = 0;
    int64_t unpriced = 0;
  };
  Quantities Expected(Period p) const {
    Quantities q;
    std::map<std::string, std::vector<Span>> priced;  // by allocation, clipped to `p`
    for (const auto& [who, r] : live) {
      const int64_t from = std::max(r.start, r.priced_from);
      q.unpriced += r.gpus * Overlap(r.start, std::min(r.end, r.priced_from), p);
      if (from >= r.end) continue;
      q.usage += r.gpus * Overlap(from, std::min(r.end, r.cap_from), p);
      q.beyond_cap += r.gpus * Overlap(std::max(from, r.cap_from), r.end, p);
      const int64_t lo = std::max(from, p.StartMs());
      const int64_t hi = std::min(r.end, p.EndMs());
      if (lo < hi)
        priced[r.allocation_id].push_back(Span{"", r.allocation_id, 0, 0, r.gpus, lo, hi, {}, ""});
    }
    // Credits per allocation and instant: min(GPUs of its priced usage, GPUs declared out).
    for (const auto& [allocation_id, spans] : priced) {
      std::vector<int64_t> cuts;
      for (const Span& u : spans) cuts.insert(cuts.end(), {u.start, u.end});
      for (const Span& o : outages) {
        if (o.allocation_id == allocation_id) cuts.insert(cuts.end(), {o.start, o.end});
      }
      std::sort(cuts.begin(), cuts.end());
      cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
      for (size_t i = 0; i + 1 < cuts.size(); ++i) {
        int64_t used = 0, out = 0;
        for (const Span& u : spans) {
          if (u.start <= cuts[i] && cuts[i] < u.end) used += u.gpus;
        }
        for (const Span& o : outages) {
          if (o.allocation_id == allocation_id && o.start <= cuts[i] && cuts[i] < o.end) {
            out += o.gpus;
          }
        }
        q.credit += std::min(used, out) * (cuts[i + 1] - cuts[i]);
      }
    }
    return q;
  }
};

// ---- The stream generator ----

class Generator {
 public:
  explicit Generator(uint64_t seed) : rng_(seed) {}

  std::vector<Step> Make() {
    Registry();
    const int64_t t0 = kMarch.StartMs() + 2 * kDay;
    const int64_t t1 = kJune.StartMs() + 8 * kDay;
    const int64_t close_march = kApril.StartMs() + Uniform(0, 8 * kDay);
    const int64_t close_april = Chance(70) ? kMay.StartMs() + Uniform(0, 8 * kDay) : kNever;
    std::optional<Period> closed;
    for (int i = 0; i < kSteps; ++i) {
      clock_ = t0 + (t1 - t0) * i / kSteps;
      if (!closed && clock_ >= close_march) closed = Close(kMarch);
      if (closed == kMarch && clock_ >= close_april) closed = Close(kApril);
      const int64_t r = Uniform(0, 100);
      if (r < 52) {
        NewUsage();
      } else if (r < 68) {
        NewCorrection();
      } else if (r < 78) {
        NewOwnUse();
      } else if (r < 90) {
        NewOutage();
      } else if (r < 93) {
        LateRegistry();
      } else if (r < 95) {
        NewRejected();
      } else if (r < 96) {
        NewTransfer();
      } else if (r < 97) {
        NewRelease();
      } else if (r < 98) {
        NewWithdrawal();
      } else {
        NewUsage();
      }
    }
    return std::move(steps_);
  }

 private:
  // [lo, hi); mt19937_64 is the same everywhere, the standard distributions are not.
  int64_t Uniform(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(rng_() % static_cast<uint64_t>(hi - lo));
  }
  bool Chance(int percent) { return Uniform(0, 100) < percent; }
  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[Uniform(0, static_cast<int64_t>(v.size()))];
  }
  std::string Id(const char* prefix) { return absl::StrCat(prefix, ++ids_); }
  // Mid-month instants (on the minute) at which registry records take effect.
  // Each is remembered, so that intervals can start or end exactly there.
  int64_t Instant(int64_t lo, int64_t hi) {
    instants_.push_back(Uniform(lo / kMinute, hi / kMinute) * kMinute);
    return instants_.back();
  }

  void Push(Step s) {
    world_.Apply(s);
    steps_.push_back(std::move(s));
  }
  void Reg(v1::RegistryEvent e) {
    e.set_event_id(Id("r"));
    Step s;
    s.kind = Step::kRegistry;
    s.registry = std::move(e);
    Push(std::move(s));
  }
  void Use(const std::string& csp, v1::UsageEvent e) {
    Step s;
    s.kind = Step::kUsage;
    s.csp = csp;
    s.usage = std::move(e);
    Push(std::move(s));
  }
  Period Close(Period p) {
    Step s;
    s.kind = Step::kClose;
    s.period = p;
    Push(std::move(s));
    return p;
  }

  void NewAllocation() {
    const std::string id = absl::StrCat("a", allocations_.size() + 1);
    const std::string inst = Pick(institutions_);
    const std::string csp = kCsps[Uniform(0, 2)];
    const bool lease = Chance(15);
    const v1::GpuModel model = lease ? v1::H200 : kModels[Uniform(0, 2)];
    v1::RegistryEvent e = Allocation(id, inst, csp, static_cast<uint32_t>(Uniform(4, 17)),
                                     lease ? v1::LEASE_HPC : v1::GOV_ADVANCED, model);
    if (Chance(40)) e.mutable_allocation()->set_gpu_ms_cap(Uniform(100 * kHour, 1'500 * kHour));
    Reg(e);
    allocations_.push_back(id);
  }

  // Rate cards of the same key may not be recorded twice at one instant with other values.
  void NewRate(int64_t krw, int64_t from, v1::Program program, v1::GpuModel model) {
    auto it = world_.rates.find({program, model});
    if (it == world_.rates.end() || !it->second.contains(from)) {
      Reg(Rate(krw, from, program, model));
    }
  }
  void NewPool(const std::string& csp, int64_t gpus, int64_t from, v1::GpuModel model) {
    auto it = world_.pools.find({csp, v1::GOV_ADVANCED, model});
    if (it == world_.pools.end() || !it->second.contains(from)) {
      Reg(Pool(csp, static_cast<uint32_t>(gpus), from, v1::GOV_ADVANCED, model));
    }
  }

  // The registry up front: institutions of five types (an SME may grow mid-month), co-pay
  // policies, rate cards with a mid-month change, allocations, pools and contracts.
  void Registry() {
    const int64_t lo = kMarch.StartMs() + 3 * kDay;
    const int64_t hi = kJune.StartMs() - 5 * kDay;
    Reg(Institution("uni", v1::ACADEMIA, 0));
    Reg(Institution("sme", v1::SME, 0));
    Reg(Institution("lab", v1::RESEARCH_INSTITUTE, 0));
    Reg(Institution("startup", v1::STARTUP, 0));
    if (Chance(50)) {
      const int64_t at = Instant(lo, hi);
      type_changes_.insert({"sme", at});
      Reg(Institution("sme", v1::MID_SIZED_ENTERPRISE, at));
    }
    if (Chance(30)) {
      const int64_t at = Instant(lo, hi);
      type_changes_.insert({"startup", at});
      Reg(Institution("startup", v1::SME, at));
    }
    Reg(Copay(v1::ACADEMIA, 0, 0));
    Reg(Copay(v1::SME, 900, 0));
    Reg(Copay(v1::RESEARCH_INSTITUTE, 500, 0));
    Reg(Copay(v1::STARTUP, 700, 0));
    Reg(Copay(v1::MID_SIZED_ENTERPRISE, 3'000, 0));
    if (Chance(40)) Reg(Copay(v1::STARTUP, 1'000, Instant(lo, hi)));
    // Usage beyond a cap, by type: SMEs and mid-sized companies pay the list price, startups
    // 20%, research institutes are refused, academia is held (no rule).
    for (v1::Program program : {v1::GOV_ADVANCED, v1::LEASE_HPC}) {
      v1::RegistryEvent e;
      auto* p = e.mutable_programme_policy();
      p->set_program(program);
      for (auto [type, action, bp] : {std::tuple{v1::SME, v1::OVER_CAP_BILL_FULL, 0u},
                                      {v1::MID_SIZED_ENTERPRISE, v1::OVER_CAP_BILL_FULL, 0u},
                                      {v1::STARTUP, v1::OVER_CAP_BILL_AT, 2'000u},
                                      {v1::RESEARCH_INSTITUTE, v1::OVER_CAP_REFUSE, 0u}}) {
        auto* r = p->add_over_cap_rules();
        r->set_institution_type(type);
        r->set_action(action);
        r->set_copay_bp(bp);
      }
      Reg(e);
    }
    NewRate(4'500, 0, v1::GOV_ADVANCED, v1::H200);
    NewRate(Uniform(4'600, 6'000), Instant(lo, hi), v1::GOV_ADVANCED, v1::H200);
    // B200 is sometimes priced only from some days into March: usage before is unpriced.
    NewRate(7'200, Chance(30) ? Instant(kMarch.StartMs(), lo + 10 * kDay) : 0, v1::GOV_ADVANCED,
            v1::B200);
    NewRate(3'900, 0, v1::LEASE_HPC, v1::H200);
    for (int i = 0; i < 6; ++i) NewAllocation();
    for (const char* csp : kCsps) {
      for (v1::GpuModel model : kModels) {
        NewPool(csp, Uniform(16, 65), 0, model);
        if (Chance(30)) NewPool(csp, Uniform(8, 65), Instant(lo, hi), model);
      }
      // Sometimes a cap so low that own use goes beyond it, late own use too.
      const int64_t cap_bp = Chance(40) ? Uniform(0, 100) : Uniform(500, 2'001);
      // Odd caps net the excess against the subsidy (no draw of its own: the stream stays).
      auto contract = [&](int64_t bp, int64_t from) {
        v1::RegistryEvent e = Contract(csp, static_cast<uint32_t>(bp), from);
        if (bp % 2 == 1) e.mutable_csp_contract()->set_own_use_excess(v1::OWN_USE_EXCESS_NETTED);
        Reg(e);
      };
      contract(cap_bp, 0);
      if (Chance(30)) contract(Uniform(0, 2'001), Instant(lo, hi));
    }
  }

  // A registry event in the middle of the stream: a rate, pool or institution type change ahead
  // of the clock, a B200 rate card made retroactive, a new allocation.
  void LateRegistry() {
    const int64_t from = Instant(clock_ + kHour, clock_ + 10 * kDay);
    switch (Uniform(0, 5)) {
      case 0:
        NewRate(Uniform(4'000, 8'000), from, v1::GOV_ADVANCED, kModels[Uniform(0, 2)]);
        break;
      case 1:
        NewPool(kCsps[Uniform(0, 2)], Uniform(8, 65), from, kModels[Uniform(0, 2)]);
        break;
      case 2:
        NewRate(7'000, kFeb.StartMs(), v1::GOV_ADVANCED, v1::B200);
        break;
      case 3: {
        const std::string& inst = Pick(institutions_);
        if (type_changes_.insert({inst, from}).second) {
          Reg(Institution(inst, Chance(50) ? v1::SME : v1::ACADEMIA, from));
        }
        break;
      }
      default:
        if (allocations_.size() < 9) NewAllocation();
        break;
    }
  }

  // An interval that ends before the clock: mostly recent, sometimes late (up to 40 days back),
  // sometimes across a month boundary.
  std::pair<int64_t, int64_t> RandomSpan(int64_t longest) {
    int64_t start, end;
    std::vector<int64_t> before;  // instants where a price, a period or a pool changes
    for (int64_t t : instants_) {
      if (t > kFeb.EndMs() - 5 * kDay && t < clock_ - kMinute) before.push_back(t);
    }
    if (!before.empty() && Chance(10)) {  // starting or ending exactly at such an instant
      const int64_t t = Pick(before);
      const int64_t d = Uniform(kMinute, kDay);
      if (Chance(50)) return {t, std::min(clock_, t + d)};
      return {t - d, t};
    }
    if (Chance(15)) {
      std::vector<int64_t> bounds;
      for (Period p : {kMarch, kApril, kMay, kJune}) {
        if (p.StartMs() < clock_) bounds.push_back(p.StartMs());
      }
      const int64_t b = Pick(bounds);
      start = b - Uniform(kMinute, 2 * kDay);
      end = std::min(clock_, b + Uniform(kMinute, 2 * kDay));
    } else {
      end = clock_ - (Chance(15) ? Uniform(0, 40 * kDay) : Uniform(0, 2 * kDay));
      start = end - Uniform(kMinute, longest);
      const int64_t earliest = kFeb.EndMs() - 5 * kDay;  // nothing before the periods looked at
      if (start < earliest) {
        end += earliest - start;
        start = earliest;
      }
    }
    if (Chance(50)) {  // whole minutes; otherwise odd milliseconds, for rounding
      start = start / kMinute * kMinute;
      end = std::max(start + kMinute, end / kMinute * kMinute);
    }
    return {start, end};
  }

  // An allocation moved to the other CSP (and sometimes another institution) from an instant a
  // few days either side of the clock: usage recorded after that instant is taken back.
  void NewTransfer() {
    const std::string id = Pick(allocations_);
    const AllocInfo& a = world_.allocations.at(id);
    const int64_t at = Instant(clock_ - 3 * kDay, clock_ + 5 * kDay);
    if (transferred_.contains(id) || at <= a.start || at >= a.end) return;
    v1::RegistryEvent e;
    auto* m = e.mutable_allocation_amendment();
    m->set_allocation_id(id);
    m->set_effective_from_ms(at);
    auto* t = m->mutable_transfer();
    t->set_new_allocation_id(absl::StrCat(id, "-t", transferred_.size() + 1));
    t->set_to_csp_id(a.csp == kCsps[0] ? kCsps[1] : kCsps[0]);
    if (Chance(50)) t->set_to_institution_id(Pick(institutions_));
    const std::string next = t->new_allocation_id();
    Reg(std::move(e));
    transferred_.insert(id);
    allocations_.push_back(next);
  }

  // The operator's decision on an allocation's held usage (at most one per allocation): billed
  // at a co-pay from 0% to 29%. Moves GPU-ms between line kinds, not in or out of them.
  void NewRelease() {
    const std::string& id = Pick(allocations_);
    if (!released_.insert(id).second) return;
    Reg(Release(id, static_cast<uint32_t>(Uniform(0, 30) * 100)));
  }

  // A declared outage withdrawn (a mistake): its credits and statement rows go.
  void NewWithdrawal() {
    if (world_.outages.empty()) return;
    const Span o = Pick(world_.outages);
    v1::UsageEvent e;
    e.set_event_id(Id("ow"));
    auto* w = e.mutable_outage_withdrawal();
    w->set_target_event_id(o.event_id);
    w->set_allocation_id(o.allocation_id);
    w->set_program(static_cast<v1::Program>(o.program));
    w->set_gpu_model(static_cast<v1::GpuModel>(o.model));
    w->set_reason("declared by mistake");
    Use(o.csp, std::move(e));
  }

  // [start, end) within the allocation's window (empty if they do not meet).
  static std::pair<int64_t, int64_t> Within(const AllocInfo& a, int64_t start, int64_t end) {
    return {std::max(start, a.start), std::min(end, a.end)};
  }

  void NewUsage() {
    const std::string& id = Pick(allocations_);
    const AllocInfo& a = world_.allocations.at(id);
    auto [start, end] = RandomSpan(3 * kDay);
    int64_t gpus = 0;
    const int64_t remaining = a.cap - world_.cap_used[a.cap_holder];
    if (a.cap > 0 && remaining > 0 && remaining <= 3 * kDay && Chance(30)) {
      // One GPU for exactly what is left of the cap (or a millisecond more or less).
      end = clock_ - Uniform(0, kDay);
      start = end - remaining - Uniform(-1, 2);
      gpus = 1;
    }
    std::tie(start, end) = Within(a, start, end);  // ingest refuses usage outside it
    if (end <= start) return;
    const int64_t free = a.gpus - world_.InUse(id, start, end, nullptr);
    if (free <= 0 || end <= start) return;
    if (gpus == 0) gpus = Uniform(1, free + 1);
    Use(a.csp, Usage(Id("u"), id, static_cast<uint32_t>(gpus), start, end, a.model));
    steps_.back().usage.mutable_usage()->set_node_id(Id("n"));
  }

  // An entry ingest refused (here: more GPUs than the grant); settlement must ignore it.
  void NewRejected() {
    const std::string& id = Pick(allocations_);
    const AllocInfo& a = world_.allocations.at(id);
    const auto [start, end] = RandomSpan(3 * kDay);
    Step s;
    s.kind = Step::kRejected;
    s.csp = a.csp;
    s.usage = Usage(Id("u"), id, static_cast<uint32_t>(a.gpus + 1), start, end, a.model);
    Push(std::move(s));
  }

  void NewCorrection() {
    if (world_.live.empty()) return;
    auto it = world_.live.begin();
    std::advance(it, Uniform(0, static_cast<int64_t>(world_.live.size())));
    const auto target = it->first;
    const Interval old = it->second;
    const AllocInfo& a = world_.allocations.at(old.allocation_id);
    if (Chance(30)) {
      Use(target.first, Correction(Id("c"), target.second, old.allocation_id, nullptr));
      return;
    }
    int64_t start, end;
    if (Chance(10)) {                    // the very same interval again: nothing changes
      if (old.end <= old.start) return;  // all of it taken back by a transfer
      v1::UsageEvent same = Usage(Id("x"), old.allocation_id, static_cast<uint32_t>(old.gpus),
                                  old.start, old.end, a.model);
      same.mutable_usage()->set_node_id(Id("n"));
      Use(target.first, Correction(Id("c"), target.second, old.allocation_id, &same));
      return;
    }
    if (Chance(60)) {  // the same interval, a little longer or shorter
      start = old.start + Uniform(-2 * kHour, 2 * kHour);
      end = std::min(clock_, old.end + Uniform(-2 * kHour, 2 * kHour));
      if (end <= start) end = start + kMinute;
      if (end > clock_) return;
    } else {
      std::tie(start, end) = RandomSpan(3 * kDay);
    }
    std::tie(start, end) = Within(a, start, end);
    if (end <= start) return;
    const int64_t free = a.gpus - world_.InUse(old.allocation_id, start, end, &target);
    if (free <= 0) return;
    v1::UsageEvent replacement =
        Usage(Id("x"), old.allocation_id, static_cast<uint32_t>(Uniform(1, free + 1)), start, end,
              a.model);
    replacement.mutable_usage()->set_node_id(Id("n"));
    Use(target.first, Correction(Id("c"), target.second, old.allocation_id, &replacement));
  }

  void NewOwnUse() {
    const std::string csp = kCsps[Uniform(0, 2)];
    const v1::GpuModel model = kModels[Uniform(0, 2)];
    const auto [start, end] = RandomSpan(2 * kDay);
    const auto pool = world_.PoolAt({csp, v1::GOV_ADVANCED, model}, start);
    if (!pool || *pool == 0) return;
    const auto gpus = static_cast<uint32_t>(Uniform(1, std::min<int64_t>(*pool, 8) + 1));
    Use(csp, OwnUse(Id("w"), gpus, start, end, v1::GOV_ADVANCED, model));
  }

  void NewOutage() {
    if (Chance(60)) {
      const std::string& id = Pick(allocations_);
      const AllocInfo& a = world_.allocations.at(id);
      auto [start, end] = RandomSpan(kDay);
      // Mostly over some of the allocation's usage, to credit it.
      std::vector<Interval> used;
      for (const auto& [who, r] : world_.live) {
        if (r.allocation_id == id) used.push_back(r);
      }
      if (!used.empty() && Chance(70)) {
        const Interval& r = Pick(used);
        start = r.start + Uniform(-kHour, r.end - r.start);
        end = std::min(clock_, start + Uniform(kMinute, kDay));
        if (Chance(30)) std::tie(start, end) = std::pair{r.start, r.end};  // exactly over it
      }
      std::tie(start, end) = Within(a, start, end);
      if (end <= start) return;
      Use(a.csp, Outage(Id("d"), id, static_cast<uint32_t>(Uniform(1, a.gpus + 1)), start, end,
                        "gpu-fault", a.program, a.model));
      return;
    }
    const std::string csp = kCsps[Uniform(0, 2)];
    const v1::GpuModel model = kModels[Uniform(0, 2)];
    const auto [start, end] = RandomSpan(kDay);
    const auto pool = world_.PoolAt({csp, v1::GOV_ADVANCED, model}, start);
    if (!pool || *pool == 0) return;
    Use(csp, Outage(Id("d"), "", static_cast<uint32_t>(Uniform(1, *pool + 1)), start, end,
                    Chance(50) ? "power" : "network", v1::GOV_ADVANCED, model));
  }

  std::mt19937_64 rng_;
  World world_;
  std::vector<Step> steps_;
  std::vector<std::string> allocations_;
  const std::vector<std::string> institutions_{"uni", "sme", "lab", "startup"};
  std::vector<int64_t> instants_{kMarch.StartMs(), kApril.StartMs(), kMay.StartMs(),
                                 kJune.StartMs()};
  std::set<std::pair<std::string, int64_t>> type_changes_;
  std::set<std::string> transferred_;
  std::set<std::string> released_;
  int64_t clock_ = 0;
  int ids_ = 0;
};

// ---- Running a stream ----

struct Outcome {
  uint64_t seed = 0;
  std::vector<Step> steps;
  World world;                             // after the whole stream
  std::map<Period, World> world_at_close;  // as of the entry before each close
  std::map<Period, v1::PeriodDocuments> live, replay, open;
  std::vector<v1::PeriodDocuments> reads;  // read from the live harness while it was fed
  std::vector<CloseRecord> live_closes, replay_closes;
  std::vector<std::string> filter_problems;  // one document asked for differs from it in all
};

// Each invoice and statement asked for alone is the one among all documents.
void CheckFilters(Harness& h, const std::map<Period, v1::PeriodDocuments>& all,
                  std::vector<std::string>* problems) {
  for (const auto& [p, d] : all) {
    for (const v1::Invoice& inv : AllInvoices(d)) {
      DocumentFilter f;
      f.institution_id = inv.institution_id();
      f.statements = false;
      f.programs = false;
      auto one = h.Docs(p, f);
      if (!one.ok() || AllInvoices(*one).size() != 1 || one->statements_size() != 0 ||
          InvoiceJson(AllInvoices(*one)[0]) != InvoiceJson(inv)) {
        problems->push_back(absl::StrCat(p.ToString(), " invoice/", inv.institution_id()));
      }
    }
    for (const v1::CspStatement& st : d.statements()) {
      DocumentFilter f;
      f.csp_id = st.csp_id();
      f.invoices = false;
      f.programs = false;
      auto one = h.Docs(p, f);
      if (!one.ok() || one->statements_size() != 1 || one->invoices_size() != 0 ||
          StatementJson(one->statements(0)) != StatementJson(st)) {
        problems->push_back(absl::StrCat(p.ToString(), " statement/", st.csp_id()));
      }
    }
  }
}

void ReadAll(Harness& h, std::map<Period, v1::PeriodDocuments>* out) {
  for (Period p : kPeriods) {
    auto d = h.Docs(p);
    EXPECT_TRUE(d.ok()) << p.ToString() << ": " << d.status();
    if (d.ok()) (*out)[p] = *std::move(d);
  }
}

Outcome Run(uint64_t seed) {
  Outcome o;
  o.seed = seed;
  o.steps = Generator(seed).Make();
  for (const Step& s : o.steps) {
    if (s.kind == Step::kClose) o.world_at_close[s.period] = o.world;
    o.world.Apply(s);
  }

  std::mt19937_64 rng(seed ^ 0x5eed);
  Harness live;
  for (size_t i = 0; i < o.steps.size();) {
    for (uint64_t chunk = 1 + rng() % 60; chunk > 0 && i < o.steps.size(); --chunk, ++i) {
      Feed(live, o.steps[i], /*closes=*/true);
      if (rng() % 12 == 0) {
        const Period p = kPeriods[rng() % std::size(kPeriods)];
        auto d = live.Docs(p);
        EXPECT_TRUE(d.ok()) << p.ToString() << ": " << d.status();
        if (d.ok()) o.reads.push_back(*std::move(d));
      }
    }
    live.Reopen();
  }
  ReadAll(live, &o.live);
  o.live_closes = live.engine().Closes();

  Harness replay;
  for (const Step& s : o.steps) Feed(replay, s, /*closes=*/true);
  ReadAll(replay, &o.replay);
  o.replay_closes = replay.engine().Closes();
  CheckFilters(replay, o.replay, &o.filter_problems);

  Harness open;
  for (const Step& s : o.steps) Feed(open, s, /*closes=*/false);
  ReadAll(open, &o.open);
  return o;
}

const std::vector<Outcome>& Outcomes() {
  static const std::vector<Outcome>* const all = [] {
    auto* v = new std::vector<Outcome>;
    for (int seed = 1; seed <= kSeeds; ++seed) v->push_back(Run(static_cast<uint64_t>(seed)));
    return v;
  }();
  return *all;
}

// ---- Helpers for the checks ----

struct Sum {
  int64_t gpu_ms = 0;
  int64_t list_krw = 0;
  int64_t copay_krw = 0;
  int64_t subsidy_krw = 0;

  template <typename T>  // v1::Totals or v1::InvoiceLine
  void Add(const T& x) {
    gpu_ms += x.gpu_ms();
    list_krw += x.list_krw();
    copay_krw += x.copay_krw();
    subsidy_krw += x.subsidy_krw();
  }
  template <typename T>
  static Sum Of(const T& x) {
    Sum s;
    s.Add(x);
    return s;
  }
  bool zero() const { return *this == Sum{}; }
  friend bool operator==(const Sum&, const Sum&) = default;
  friend std::ostream& operator<<(std::ostream& os, const Sum& s) {
    return os << "{gpu_ms " << s.gpu_ms << ", list " << s.list_krw << ", co-pay " << s.copay_krw
              << ", subsidy " << s.subsidy_krw << "}";
  }
};

using BySum = std::map<std::string, Sum>;

void DropZeros(BySum* m) {
  std::erase_if(*m, [](const auto& kv) { return kv.second.zero(); });
}

// The quantities an own-use adjustment carries, of one (CSP, programme, model).
struct OwnUseSum {
  int64_t own_use_gpu_ms = 0;
  int64_t excess_gpu_ms = 0;
  int64_t excess_value_krw = 0;
  int64_t value_krw = 0;
  int64_t unpriced_gpu_ms = 0;

  void Add(const v1::OwnUseRow& r) {
    own_use_gpu_ms += r.own_use_gpu_ms();
    excess_gpu_ms += r.excess_gpu_ms();
    excess_value_krw += r.excess_value_krw();
    value_krw += r.value_krw();
    unpriced_gpu_ms += r.unpriced_gpu_ms();
  }
  bool zero() const { return *this == OwnUseSum{}; }
  friend bool operator==(const OwnUseSum&, const OwnUseSum&) = default;
  friend std::ostream& operator<<(std::ostream& os, const OwnUseSum& s) {
    return os << "{own use " << s.own_use_gpu_ms << ", excess " << s.excess_gpu_ms
              << ", excess KRW " << s.excess_value_krw << ", value KRW " << s.value_krw
              << ", unpriced " << s.unpriced_gpu_ms << "}";
  }
};

PoolKey OwnUseKey(const v1::CspStatement& st, const v1::OwnUseRow& r) {
  return {st.csp_id(), r.program(), r.gpu_model()};
}

using OutageKey = std::tuple<std::string, int, int, std::string, std::string>;  // + scope, cause

OutageKey OutageKeyOf(const v1::CspStatement& st, const v1::OutageRow& r) {
  return {st.csp_id(), r.program(), r.gpu_model(), r.scope(), r.cause()};
}

// Rounded half away from zero; den > 0.
int64_t RoundDiv(__int128 num, int64_t den) {
  __int128 q = num / den;
  const __int128 r = num % den;
  if (2 * (r < 0 ? -r : r) >= den) q += num < 0 ? -1 : 1;
  return static_cast<int64_t>(q);
}

// The excess's share of the own use's value: round(value × excess / (own × 3,600,000)).
int64_t ExcessValue(__int128 value, int64_t excess, int64_t own) {
  if (own <= 0 || excess <= 0) return 0;
  const __int128 num = value * excess;
  const __int128 den = static_cast<__int128>(own) * kHour;
  return static_cast<int64_t>(num / den + (2 * (num % den) >= den ? 1 : 0));
}

// Where two texts first differ, with a little context, for failure messages.
std::string FirstDifference(const std::string& a, const std::string& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  const size_t from = i < 200 ? 0 : i - 200;
  return absl::StrCat("first difference at byte ", i, "\n--- one:\n", a.substr(from, 400),
                      "\n--- other:\n", b.substr(from, 400));
}

std::string Where(const Outcome& o, const std::string& what, Period p) {
  return absl::StrCat("seed ", o.seed, ", ", what, " ", p.ToString());
}

// Property 1 on one set of documents.
void CheckAddsUp(const v1::PeriodDocuments& d, const std::string& where, const World& w) {
  SCOPED_TRACE(where);
  Sum invoices, statements, programs;
  for (const v1::Invoice& inv : AllInvoices(d)) {
    SCOPED_TRACE(inv.institution_id());
    Sum sum;
    for (const v1::InvoiceLine& l : inv.lines()) {
      EXPECT_EQ(l.list_krw(), l.copay_krw() + l.subsidy_krw());
      const bool worthless = l.kind() == v1::LINE_KIND_HELD || l.kind() == v1::LINE_KIND_REFUSED ||
                             l.kind() == v1::LINE_KIND_UNPRICED;
      EXPECT_EQ(l.list_krw(),
                worthless ? 0
                          : RoundDiv(static_cast<__int128>(l.gpu_ms()) * l.krw_per_gpu_hour(),
                                     3'600'000));
      EXPECT_EQ(l.copay_krw(),
                RoundDiv(static_cast<__int128>(l.list_krw()) * l.copay_bp(), 10'000));
      EXPECT_EQ(l.adjusts_period(), "");
      EXPECT_NE(l.gpu_ms(), 0);
      EXPECT_EQ(l.gpu_ms() < 0, l.kind() == v1::LINE_KIND_OUTAGE_CREDIT);
      // The over-cap rule of the line's type (Registry() above).
      // Academia has no rule (held): billed only once the operator released the allocation's
      // held usage, at the release's co-pay.
      if (l.kind() == v1::LINE_KIND_BEYOND_CAP && l.institution_type() == v1::ACADEMIA) {
        auto release = w.releases.find(l.allocation_id());
        EXPECT_TRUE(release != w.releases.end()) << l.allocation_id();
        if (release != w.releases.end()) {
          EXPECT_EQ(l.copay_bp(), release->second);
        }
      } else if (l.kind() == v1::LINE_KIND_BEYOND_CAP) {
        EXPECT_EQ(l.copay_bp(), l.institution_type() == v1::STARTUP ? 2'000u : 10'000u);
        EXPECT_TRUE(l.institution_type() == v1::SME || l.institution_type() == v1::STARTUP ||
                    l.institution_type() == v1::MID_SIZED_ENTERPRISE);
      }
      if (l.kind() == v1::LINE_KIND_HELD) {
        EXPECT_EQ(l.institution_type(), v1::ACADEMIA);
      }
      if (l.kind() == v1::LINE_KIND_REFUSED) {
        EXPECT_EQ(l.institution_type(), v1::RESEARCH_INSTITUTE);
      }
      sum.Add(l);
    }
    for (const v1::InvoiceLine& l : inv.adjustments()) {
      EXPECT_EQ(l.list_krw(), l.copay_krw() + l.subsidy_krw());
      EXPECT_LT(l.adjusts_period(), d.period());
      EXPECT_FALSE(l.gpu_ms() == 0 && l.list_krw() == 0 && l.copay_krw() == 0);
      sum.Add(l);
    }
    EXPECT_EQ(sum, Sum::Of(inv.totals()));
    EXPECT_EQ(inv.totals().list_krw(), inv.totals().copay_krw() + inv.totals().subsidy_krw());
    EXPECT_EQ(static_cast<int64_t>(inv.vat_bp()), kVatBp);
    EXPECT_EQ(inv.vat_krw(),
              RoundDiv(static_cast<__int128>(inv.totals().copay_krw()) * kVatBp, 10'000));
    EXPECT_EQ(inv.amount_due_krw(), inv.totals().copay_krw() + inv.vat_krw());
    invoices.Add(inv.totals());
  }
  for (const v1::CspStatement& st : d.statements()) {
    SCOPED_TRACE(st.csp_id());
    Sum sum;
    for (const v1::DeliveredRow& r : st.delivered()) {
      EXPECT_EQ(r.adjusts_period(), "");
      sum.Add(r.totals());
    }
    for (const v1::DeliveredRow& r : st.adjustments()) {
      EXPECT_LT(r.adjusts_period(), d.period());
      sum.Add(r.totals());
    }
    EXPECT_EQ(sum, Sum::Of(st.totals()));
    statements.Add(st.totals());
  }
  for (const v1::ProgramSummary& ps : d.programs()) {
    SCOPED_TRACE(v1::Program_Name(ps.program()));
    Sum sum;
    int64_t usage = 0;
    for (const v1::TypeRow& r : ps.by_type()) {
      sum.Add(r.totals());
      usage += r.totals().gpu_ms();
    }
    for (const v1::TypeRow& r : ps.adjustments()) sum.Add(r.totals());
    EXPECT_EQ(sum, Sum::Of(ps.totals()));
    EXPECT_EQ(ps.usage_gpu_ms(), usage);
    programs.Add(ps.totals());
  }
  // The three views of the period share out the same lines.
  EXPECT_EQ(statements, invoices);
  EXPECT_EQ(programs, invoices);
}

// Property 3 on one set of documents: the identity, and (with a model) every quantity.
void CheckCapacity(const v1::PeriodDocuments& d, const World* w, const std::string& where) {
  SCOPED_TRACE(where);
  const Period p = *base::ParsePeriod(d.period());
  std::map<PoolKey, int64_t> usage;  // from the invoice lines of the same documents
  for (const v1::Invoice& inv : AllInvoices(d)) {
    for (const v1::InvoiceLine& l : inv.lines()) {
      usage[{l.csp_id(), l.program(), l.gpu_model()}] += l.gpu_ms();
    }
  }
  std::map<PoolKey, const v1::CapacityRow*> rows;
  for (const v1::CspStatement& st : d.statements()) {
    for (const v1::CapacityRow& c : st.capacity()) {
      const PoolKey key{st.csp_id(), c.program(), c.gpu_model()};
      SCOPED_TRACE(absl::StrCat(st.csp_id(), " ", v1::Program_Name(c.program()), " ",
                                v1::GpuModel_Name(c.gpu_model())));
      EXPECT_TRUE(rows.emplace(key, &c).second) << "two capacity rows";
      EXPECT_EQ(c.capacity_gpu_ms(), c.program_usage_gpu_ms() + c.own_use_gpu_ms() +
                                         c.outage_gpu_ms() + c.idle_gpu_ms());
      EXPECT_EQ(c.oversubscribed(), c.idle_gpu_ms() < 0);
      EXPECT_EQ(c.program_usage_gpu_ms(), usage[key]);
      if (w == nullptr) continue;
      EXPECT_EQ(c.capacity_gpu_ms(), w->Capacity(key, p));
      EXPECT_EQ(c.own_use_gpu_ms(), World::Total(w->own_use, key, p));
      EXPECT_EQ(c.outage_gpu_ms(), World::Total(w->outages, key, p));
    }
  }
  if (w == nullptr) return;
  // Own use against the contract cap: every government pool with capacity, and every pool
  // with own use, has a row.
  const int64_t last_ms = p.EndMs() - 1;
  for (const v1::CspStatement& st : d.statements()) {
    SCOPED_TRACE(st.csp_id());
    const int64_t cap_bp = World::At(w->contracts, st.csp_id(), last_ms).value_or(0);
    EXPECT_EQ(static_cast<int64_t>(st.own_use_cap_bp()), cap_bp);
    int64_t own = 0, hosted = 0, excess = 0, excess_krw = 0, own_value = 0, netted = 0;
    std::set<PoolKey> with_rows;
    for (const v1::OwnUseRow& r : st.own_use()) {
      const PoolKey key{st.csp_id(), r.program(), r.gpu_model()};
      SCOPED_TRACE(absl::StrCat("own use ", v1::GpuModel_Name(r.gpu_model())));
      with_rows.insert(key);
      EXPECT_EQ(r.own_use_gpu_ms(), World::Total(w->own_use, key, p));
      EXPECT_EQ(r.capacity_gpu_ms(), w->Capacity(key, p));
      EXPECT_EQ(static_cast<int64_t>(r.cap_bp()), cap_bp);
      EXPECT_EQ(r.allowed_gpu_ms(), RoundDiv(w->AllowedOwnUse(key, p), 10'000));
      EXPECT_EQ(r.excess_gpu_ms(), std::max<int64_t>(0, r.own_use_gpu_ms() - r.allowed_gpu_ms()));
      EXPECT_EQ(
          static_cast<int64_t>(r.share_bp()),
          r.capacity_gpu_ms() > 0
              ? RoundDiv(static_cast<__int128>(r.own_use_gpu_ms()) * 10'000, r.capacity_gpu_ms())
              : 0);
      const auto [value, unpriced] = w->OwnValue(key, p);
      EXPECT_EQ(r.value_krw(), RoundDiv(value, kHour));
      EXPECT_EQ(r.unpriced_gpu_ms(), unpriced);
      EXPECT_EQ(r.excess_value_krw(), ExcessValue(value, r.excess_gpu_ms(), r.own_use_gpu_ms()));
      EXPECT_EQ(r.netted(), w->Nets(std::get<0>(key), last_ms));
      own_value += r.value_krw();
      if (r.netted()) netted += r.excess_value_krw();
      own += r.own_use_gpu_ms();
      hosted += r.capacity_gpu_ms();
      excess += r.excess_gpu_ms();
      excess_krw += r.excess_value_krw();
    }
    EXPECT_EQ(st.own_use_gpu_ms(), own);
    EXPECT_EQ(st.hosted_capacity_gpu_ms(), hosted);
    EXPECT_EQ(st.own_use_excess_gpu_ms(), excess);
    EXPECT_EQ(st.own_use_excess_value_krw(), excess_krw);
    EXPECT_EQ(st.own_use_value_krw(), own_value);
    for (const v1::OwnUseRow& r : st.own_use_adjustments()) {
      if (r.netted()) netted += r.excess_value_krw();
    }
    EXPECT_EQ(st.own_use_netted_krw(), netted);
    EXPECT_EQ(st.payable_krw(), st.totals().subsidy_krw() - netted);
    EXPECT_EQ(static_cast<int64_t>(st.own_use_share_bp()),
              hosted > 0 ? RoundDiv(static_cast<__int128>(own) * 10'000, hosted) : 0);
    for (const auto& [key, timeline] : w->pools) {
      if (std::get<0>(key) == st.csp_id() && w->Capacity(key, p) > 0) {
        EXPECT_TRUE(with_rows.contains(key)) << "no own-use row for " << std::get<2>(key);
      }
    }
  }
  // A programme's capacity is that of its pools at every CSP.
  for (const v1::ProgramSummary& ps : d.programs()) {
    int64_t capacity = 0;
    for (const auto& [key, timeline] : w->pools) {
      if (std::get<1>(key) == ps.program()) capacity += w->Capacity(key, p);
    }
    EXPECT_EQ(ps.capacity_gpu_ms(), capacity) << v1::Program_Name(ps.program());
    EXPECT_EQ(static_cast<int64_t>(ps.utilisation_bp()),
              capacity > 0
                  ? std::max<int64_t>(
                        0, RoundDiv(static_cast<__int128>(ps.usage_gpu_ms()) * 10'000, capacity))
                  : 0);
  }
  // Every pool with capacity, own use or outages in the period has a row.
  std::vector<PoolKey> keys;
  for (const auto& [key, timeline] : w->pools) keys.push_back(key);
  for (const auto* spans : {&w->own_use, &w->outages}) {
    for (const Span& s : *spans) keys.push_back({s.csp, s.program, s.model});
  }
  for (const PoolKey& key : keys) {
    if (w->Capacity(key, p) == 0 && World::Total(w->own_use, key, p) == 0 &&
        World::Total(w->outages, key, p) == 0) {
      continue;
    }
    EXPECT_TRUE(rows.contains(key)) << "no capacity row for " << std::get<0>(key) << " "
                                    << std::get<1>(key) << " " << std::get<2>(key);
  }
}

// Property 5 on the own lines of one set of documents.
void CheckQuantities(const v1::PeriodDocuments& d, const World& w, const std::string& where) {
  SCOPED_TRACE(where);
  World::Quantities got;
  for (const v1::Invoice& inv : AllInvoices(d)) {
    for (const v1::InvoiceLine& l : inv.lines()) {
      switch (l.kind()) {
        case v1::LINE_KIND_USAGE:
          got.usage += l.gpu_ms();
          break;
        case v1::LINE_KIND_BEYOND_CAP:
        case v1::LINE_KIND_HELD:
        case v1::LINE_KIND_REFUSED:
          got.beyond_cap += l.gpu_ms();
          break;
        case v1::LINE_KIND_OUTAGE_CREDIT:
          got.credit -= l.gpu_ms();
          break;
        case v1::LINE_KIND_UNPRICED:
          got.unpriced += l.gpu_ms();
          break;
        default:
          ADD_FAILURE() << "line kind " << l.kind();
      }
    }
  }
  const World::Quantities want = w.Expected(*base::ParsePeriod(d.period()));
  EXPECT_EQ(got.usage + got.beyond_cap, want.usage + want.beyond_cap) << "usage + beyond_cap";
  EXPECT_EQ(got.usage, want.usage) << "usage within the cap";
  EXPECT_EQ(got.beyond_cap, want.beyond_cap) << "beyond the cap";
  EXPECT_EQ(got.credit, want.credit) << "outage credits";
  EXPECT_EQ(got.unpriced, want.unpriced) << "usage that could not be priced, on the invoices";
  // Usage that no rate card prices is listed, not dropped.
  std::set<std::pair<std::string, std::string>> unpriced;
  for (const v1::Unpriced& u : d.unpriced()) unpriced.insert({u.source_id(), u.event_id()});
  EXPECT_EQ(unpriced, w.Unpriced(*base::ParsePeriod(d.period()))) << "unpriced usage";
}

// ---- The properties ----

// 1. Every line prices to list = co-pay + subsidy; documents add up to their totals.
TEST(PropertyTest, EveryDocumentAddsUp) {
  for (const Outcome& o : Outcomes()) {
    for (const auto* docs : {&o.live, &o.replay, &o.open}) {
      for (const auto& [p, d] : *docs) CheckAddsUp(d, Where(o, "end", p), o.world);
    }
    for (const auto& d : o.reads)
      CheckAddsUp(d, absl::StrCat("seed ", o.seed, ", read ", d.period()), o.world);
  }
}

// 2. A store fed in chunks, reopened and read in between, ends byte-identical to a store fed in
// one go; closed periods carry the digests of their documents and never change once closed.
TEST(PropertyTest, ReplayEqualsLive) {
  int closed = 0;
  for (const Outcome& o : Outcomes()) {
    for (Period p : kPeriods) {
      SCOPED_TRACE(Where(o, "period", p));
      ASSERT_TRUE(o.live.contains(p) && o.replay.contains(p));
      const v1::PeriodDocuments& live = o.live.at(p);
      const v1::PeriodDocuments& replay = o.replay.at(p);
      const std::string a = PeriodJson(live);
      const std::string b = PeriodJson(replay);
      EXPECT_TRUE(a == b) << FirstDifference(a, b);
      EXPECT_EQ(live.closed(), replay.closed());
      EXPECT_EQ(live.closed(), o.world_at_close.contains(p));
      if (!live.closed()) {
        EXPECT_EQ(live.digests_size(), 0);
        continue;
      }
      ++closed;
      for (const auto* d : {&live, &replay}) {
        std::map<std::string, std::string> json;
        for (const auto& inv : d->invoices()) {
          json[absl::StrCat("invoice/", inv.institution_id())] = InvoiceJson(inv);
        }
        for (const auto& inv : d->nothing_owed()) {
          json[absl::StrCat("usage/", inv.institution_id())] = InvoiceJson(inv);
        }
        for (const auto& st : d->statements()) {
          json[absl::StrCat("statement/", st.csp_id())] = StatementJson(st);
        }
        for (const auto& ps : d->programs()) {
          json[absl::StrCat("program/", v1::Program_Name(ps.program()))] = ProgramJson(ps);
        }
        EXPECT_EQ(static_cast<size_t>(d->digests_size()), json.size());
        for (const auto& digest : d->digests()) {
          ASSERT_TRUE(json.contains(digest.document())) << digest.document();
          EXPECT_EQ(digest.sha256(), DigestHex(json[digest.document()])) << digest.document();
        }
      }
      EXPECT_EQ(live.digests_size(), replay.digests_size());
      for (int i = 0; i < std::min(live.digests_size(), replay.digests_size()); ++i) {
        EXPECT_EQ(live.digests(i).document(), replay.digests(i).document());
        EXPECT_EQ(live.digests(i).sha256(), replay.digests(i).sha256());
      }
    }
    // The close records agree, and frozen documents read while the stream went on are the
    // final ones.
    ASSERT_EQ(o.live_closes.size(), o.replay_closes.size()) << "seed " << o.seed;
    for (size_t i = 0; i < o.live_closes.size(); ++i) {
      const CloseRecord& a = o.live_closes[i];
      const CloseRecord& b = o.replay_closes[i];
      EXPECT_EQ(a.period, b.period);
      EXPECT_EQ(a.close_seq, b.close_seq);
      EXPECT_EQ(a.covered_seq, b.covered_seq);
      EXPECT_EQ(a.closed_at_ms, b.closed_at_ms);
      EXPECT_EQ(a.digests, b.digests);
    }
    for (const auto& d : o.reads) {
      if (!d.closed()) continue;
      const std::string a = PeriodJson(d);
      const std::string b = PeriodJson(o.live.at(*base::ParsePeriod(d.period())));
      EXPECT_TRUE(a == b) << "seed " << o.seed << ": " << d.period() << " changed after its close, "
                          << FirstDifference(a, b);
    }
  }
  EXPECT_GE(closed, kSeeds);  // the streams do close periods
}

// 3. On every capacity row, capacity = programme usage + own use + outage + idle, and it is
// oversubscribed when idle is negative; capacity, own use and outages are those of the stream.
TEST(PropertyTest, CapacityIdentity) {
  for (const Outcome& o : Outcomes()) {
    for (const auto& [p, d] : o.open) CheckCapacity(d, &o.world, Where(o, "open", p));
    for (const auto& [p, d] : o.replay) {
      const World& w = d.closed() ? o.world_at_close.at(p) : o.world;
      CheckCapacity(d, &w, Where(o, "replay", p));
    }
    for (const auto& [p, d] : o.live) CheckCapacity(d, nullptr, Where(o, "live", p));
    for (const auto& d : o.reads) {
      CheckCapacity(d, nullptr, absl::StrCat("seed ", o.seed, ", read ", d.period()));
    }
  }
}

// 4. For a closed period P: what P billed when it closed, plus every adjustment naming P on the
// later periods' documents (frozen, and the draft of the first open period), is P as the stream
// makes it now (the store that never closed anything), per institution.
TEST(PropertyTest, ClosesLoseNothingAndCountNothingTwice) {
  int adjusted = 0;
  for (const Outcome& o : Outcomes()) {
    std::optional<Period> first_open;
    for (Period p : kPeriods) {
      if (o.replay.at(p).closed()) first_open = p.Next();
    }
    for (Period p : kPeriods) {
      SCOPED_TRACE(Where(o, "period", p));
      const v1::PeriodDocuments& replay = o.replay.at(p);
      const v1::PeriodDocuments& open = o.open.at(p);
      EXPECT_FALSE(open.closed());
      for (const auto& inv : AllInvoices(open)) EXPECT_EQ(inv.adjustments_size(), 0);
      if (!replay.closed()) {
        // Only the first open period after the last close carries adjustments, and an open
        // period's own lines are the never-closed store's.
        for (const auto& inv : AllInvoices(replay)) {
          if (p != first_open) {
            EXPECT_EQ(inv.adjustments_size(), 0) << inv.institution_id();
          }
        }
        std::map<std::string, std::string> a, b;
        for (const auto& inv : AllInvoices(replay)) {
          for (const auto& l : inv.lines()) a[inv.institution_id()] += l.SerializeAsString();
        }
        for (const auto& inv : AllInvoices(open)) {
          for (const auto& l : inv.lines()) b[inv.institution_id()] += l.SerializeAsString();
        }
        std::erase_if(a, [](const auto& kv) { return kv.second.empty(); });
        std::erase_if(b, [](const auto& kv) { return kv.second.empty(); });
        EXPECT_TRUE(a == b) << "the lines of an open period differ from the never-closed store's";
        continue;
      }
      BySum billed, now;
      for (const auto& inv : AllInvoices(replay)) {
        for (const auto& l : inv.lines()) billed[inv.institution_id()].Add(l);
      }
      for (Period q : kPeriods) {
        if (q <= p || !(o.replay.at(q).closed() || q == first_open)) continue;
        for (const auto& inv : AllInvoices(o.replay.at(q))) {
          for (const auto& l : inv.adjustments()) {
            if (l.adjusts_period() != p.ToString()) continue;
            billed[inv.institution_id()].Add(l);
            ++adjusted;
          }
        }
      }
      for (const auto& inv : AllInvoices(open)) {
        for (const auto& l : inv.lines()) now[inv.institution_id()].Add(l);
      }
      DropZeros(&billed);
      DropZeros(&now);
      EXPECT_EQ(billed, now);
    }
  }
  EXPECT_GT(adjusted, kSeeds);  // late events did touch closed periods
}

// 4b. The same for what a CSP statement reports of a closed period P. Its frozen own-use rows
// plus every own-use adjustment naming P (on the later periods' statements, frozen, and the
// draft of the first open period) are, per (CSP, programme, model): in own use, P's own use in
// the store that never closed anything; in excess and the excess's value, that own use against
// the allowance and at the rate the pool was first billed with (P's frozen row, or for a pool
// without one, the first frozen adjustment): registry records recorded after a close do not
// reprice it. Each adjustment carries those parameters. Its frozen outage rows plus every outage
// adjustment naming P are P's outage rows in the never-closed store, per (CSP, programme, model,
// scope, cause). Only the first open period after the last close carries adjustments, each
// naming a closed period before it and changing something.
TEST(PropertyTest, LateOwnUseAndOutagesAreAdjustedNotLost) {
  int own_adjusted = 0, excess_adjusted = 0, outages_adjusted = 0;
  for (const Outcome& o : Outcomes()) {
    std::optional<Period> first_open;
    for (Period p : kPeriods) {
      if (o.replay.at(p).closed()) first_open = p.Next();
    }
    auto closed = [&](const std::string& period) {
      auto q = base::ParsePeriod(period);
      return q.ok() && o.replay.contains(*q) && o.replay.at(*q).closed();
    };
    for (Period p : kPeriods) {
      SCOPED_TRACE(Where(o, "period", p));
      for (const v1::CspStatement& st : o.open.at(p).statements()) {
        EXPECT_EQ(st.own_use_adjustments_size(), 0) << st.csp_id();
        EXPECT_EQ(st.outage_adjustments_size(), 0) << st.csp_id();
      }
      const v1::PeriodDocuments& d = o.replay.at(p);
      for (const v1::CspStatement& st : d.statements()) {
        SCOPED_TRACE(st.csp_id());
        if (!d.closed() && p != first_open) {
          EXPECT_EQ(st.own_use_adjustments_size(), 0);
          EXPECT_EQ(st.outage_adjustments_size(), 0);
        }
        for (const v1::OwnUseRow& r : st.own_use()) EXPECT_EQ(r.adjusts_period(), "");
        for (const v1::OutageRow& r : st.outages()) EXPECT_EQ(r.adjusts_period(), "");
        for (const v1::OwnUseRow& r : st.own_use_adjustments()) {
          EXPECT_LT(r.adjusts_period(), d.period());
          EXPECT_TRUE(closed(r.adjusts_period())) << r.adjusts_period();
          EXPECT_FALSE(r.own_use_gpu_ms() == 0 && r.excess_gpu_ms() == 0 &&
                       r.excess_value_krw() == 0);
        }
        for (const v1::OutageRow& r : st.outage_adjustments()) {
          EXPECT_LT(r.adjusts_period(), d.period());
          EXPECT_TRUE(closed(r.adjusts_period())) << r.adjusts_period();
          EXPECT_NE(r.gpu_ms(), 0);
        }
      }
    }
    for (Period p : kPeriods) {
      if (!o.replay.at(p).closed()) continue;
      SCOPED_TRACE(Where(o, "period", p));
      const std::string period = p.ToString();
      std::map<PoolKey, OwnUseSum> own_billed;
      std::map<OutageKey, int64_t> outages_billed, outages_now;
      // The row whose capacity, cap, allowance and rate each pool of P was first billed with:
      // P's frozen own-use row, else the first frozen adjustment naming P.
      std::map<PoolKey, const v1::OwnUseRow*> billed_with;
      // The adjustments naming P: frozen (with the period carrying them), and on the draft.
      std::vector<std::tuple<Period, PoolKey, const v1::OwnUseRow*>> adjustments;
      std::map<PoolKey, const v1::OwnUseRow*> on_draft;
      for (const v1::CspStatement& st : o.replay.at(p).statements()) {
        for (const v1::OwnUseRow& r : st.own_use()) {
          own_billed[OwnUseKey(st, r)].Add(r);
          billed_with.emplace(OwnUseKey(st, r), &r);
        }
        for (const v1::OutageRow& r : st.outages()) {
          outages_billed[OutageKeyOf(st, r)] += r.gpu_ms();
        }
      }
      for (Period q : kPeriods) {  // in order: the first frozen adjustment comes first
        if (q <= p || !(o.replay.at(q).closed() || q == first_open)) continue;
        for (const v1::CspStatement& st : o.replay.at(q).statements()) {
          for (const v1::OwnUseRow& r : st.own_use_adjustments()) {
            if (r.adjusts_period() != period) continue;
            const PoolKey key = OwnUseKey(st, r);
            own_billed[key].Add(r);
            adjustments.emplace_back(q, key, &r);
            if (o.replay.at(q).closed()) {
              billed_with.emplace(key, &r);
            } else {
              on_draft[key] = &r;
            }
            ++own_adjusted;
            if (r.excess_gpu_ms() != 0) ++excess_adjusted;
          }
          for (const v1::OutageRow& r : st.outage_adjustments()) {
            if (r.adjusts_period() != period) continue;
            outages_billed[OutageKeyOf(st, r)] += r.gpu_ms();
            ++outages_adjusted;
          }
        }
      }
      std::map<PoolKey, const v1::OwnUseRow*> now_rows;
      for (const v1::CspStatement& st : o.open.at(p).statements()) {
        for (const v1::OwnUseRow& r : st.own_use()) now_rows[OwnUseKey(st, r)] = &r;
        for (const v1::OutageRow& r : st.outages()) outages_now[OutageKeyOf(st, r)] += r.gpu_ms();
      }
      auto own_now = [&](const PoolKey& key) -> int64_t {
        auto it = now_rows.find(key);
        return it == now_rows.end() ? 0 : it->second->own_use_gpu_ms();
      };
      // What P's row of a pool is with the own use now and the parameters it was billed with
      // (not yet frozen: those of the draft's adjustment; not billed at all: those of now).
      auto expected = [&](const PoolKey& key) {
        const v1::OwnUseRow* with = nullptr;
        for (const auto* m : {&billed_with, &on_draft, &now_rows}) {
          if (with == nullptr && m->contains(key)) with = m->at(key);
        }
        OwnUseSum e;
        e.own_use_gpu_ms = own_now(key);
        if (with == nullptr) return e;
        e.excess_gpu_ms = std::max<int64_t>(0, e.own_use_gpu_ms - with->allowed_gpu_ms());
        const auto [value, unpriced] = o.world.OwnValue(key, p);
        e.excess_value_krw = ExcessValue(value, e.excess_gpu_ms, e.own_use_gpu_ms);
        e.value_krw = RoundDiv(value, kHour);
        e.unpriced_gpu_ms = unpriced;
        return e;
      };
      std::set<PoolKey> pools;
      for (const auto& [key, sum] : own_billed) pools.insert(key);
      for (const auto& [key, row] : now_rows) pools.insert(key);
      std::map<PoolKey, int64_t> own_use_billed, own_use_now;
      std::map<PoolKey, OwnUseSum> own_expected;
      for (const PoolKey& key : pools) {
        const OwnUseSum billed = own_billed.contains(key) ? own_billed.at(key) : OwnUseSum{};
        if (billed.own_use_gpu_ms != 0) own_use_billed[key] = billed.own_use_gpu_ms;
        if (own_now(key) != 0) own_use_now[key] = own_now(key);
        if (const OwnUseSum e = expected(key); !e.zero()) own_expected[key] = e;
      }
      std::erase_if(own_billed, [](const auto& kv) { return kv.second.zero(); });
      std::erase_if(outages_billed, [](const auto& kv) { return kv.second == 0; });
      std::erase_if(outages_now, [](const auto& kv) { return kv.second == 0; });
      EXPECT_EQ(own_use_billed, own_use_now) << "own use";
      EXPECT_EQ(own_billed, own_expected) << "own use, excess and its value as billed";
      EXPECT_EQ(outages_billed, outages_now) << "outages";
      // An adjustment's other fields are the parameters the pool was first billed with, and
      // the share of the own use then (billed before, plus the adjustment) in that capacity;
      // not billed before and not frozen yet, those of now.
      std::map<PoolKey, int64_t> own_then;
      for (const v1::CspStatement& st : o.replay.at(p).statements()) {
        for (const v1::OwnUseRow& r : st.own_use()) {
          own_then[OwnUseKey(st, r)] += r.own_use_gpu_ms();
        }
      }
      for (const auto& [q, key, r] : adjustments) {
        SCOPED_TRACE(absl::StrCat("own-use adjustment on ", q.ToString(), ", ", std::get<0>(key),
                                  " ", v1::GpuModel_Name(r->gpu_model())));
        own_then[key] += r->own_use_gpu_ms();
        const v1::OwnUseRow* with = r;  // the first frozen one sets them
        if (auto it = billed_with.find(key); it != billed_with.end() && it->second != r) {
          with = it->second;
        } else if (!o.replay.at(q).closed()) {
          auto now = now_rows.find(key);
          if (now == now_rows.end()) {
            ADD_FAILURE() << "neither billed before nor an own-use row now";
            continue;
          }
          with = now->second;
        }
        EXPECT_EQ(r->capacity_gpu_ms(), with->capacity_gpu_ms());
        EXPECT_EQ(r->cap_bp(), with->cap_bp());
        EXPECT_EQ(r->allowed_gpu_ms(), with->allowed_gpu_ms());
        EXPECT_EQ(r->netted(), with->netted());
        const int64_t share =
            with->capacity_gpu_ms() > 0
                ? RoundDiv(static_cast<__int128>(own_then[key]) * 10'000, with->capacity_gpu_ms())
                : 0;
        EXPECT_EQ(r->share_bp(), share);
      }
    }
  }
  // Late own use and outages did reach closed periods, and some moved the excess.
  EXPECT_GT(own_adjusted, kSeeds);
  EXPECT_GT(excess_adjusted, 0);
  EXPECT_GT(outages_adjusted, kSeeds);
}

// 5. Quantity is conserved: the GPU-ms on a period's usage and beyond-cap lines are those of
// the live intervals (after corrections) where they are priced, split at the cap in ledger
// order; outage credits are min(the allocation's usage GPUs, GPUs declared out) over time.
TEST(PropertyTest, QuantityIsConserved) {
  int64_t beyond = 0, credited = 0;
  for (const Outcome& o : Outcomes()) {
    for (const auto& [p, d] : o.open) {
      CheckQuantities(d, o.world, Where(o, "open", p));
      const World::Quantities q = o.world.Expected(p);
      beyond += q.beyond_cap;
      credited += q.credit;
    }
    for (const auto& [p, d] : o.replay) {
      CheckQuantities(d, d.closed() ? o.world_at_close.at(p) : o.world, Where(o, "replay", p));
    }
  }
  // The streams do cross caps and credit outages.
  EXPECT_GT(beyond, 0);
  EXPECT_GT(credited, 0);
}

// Not one of the five: an invoice or a statement asked for alone (the filtered read of
// Engine::Documents) is the same document as among all of the period's.
TEST(PropertyTest, OneDocumentIsTheSameAsAmongAll) {
  for (const Outcome& o : Outcomes()) {
    EXPECT_TRUE(o.filter_problems.empty()) << "seed " << o.seed << ": " << o.filter_problems.size()
                                           << " differ, first " << o.filter_problems.front();
  }
}

}  // namespace
}  // namespace gpuledger::settlement
