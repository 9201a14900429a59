#include "sim/fleet.h"

#include <algorithm>
#include <map>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace gpuledger::sim {

namespace v1 = gpuledger::v1;

namespace {

constexpr int64_t kMinute = 60'000;
constexpr int64_t kHour = 60 * kMinute;
constexpr int64_t kDay = 24 * kHour;
// The programmes' rules the fleet is drawn under (published as ProgrammePolicy records).
constexpr int kGpusPerServer = 8;
constexpr int kHpcMaxServers = 2;
constexpr int64_t kGovMaxWindowDays = 123;  // 4 calendar months at most

// Integer draws only: std:: distributions differ between standard libraries, and the same seed
// must give the same month everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed) : g_(seed) {}
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : g_() % n; }
  int64_t Between(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(Below(hi - lo + 1)); }
  bool PerMillion(int ppm) { return Below(1'000'000) < static_cast<uint64_t>(ppm); }
  bool Percent(int pct) { return Below(100) < static_cast<uint64_t>(pct); }

 private:
  std::mt19937_64 g_;
};

struct Pool {
  std::string csp;
  v1::Program program;
  v1::GpuModel model;
  int gpus = 0;
  int free = 0;
};

struct Alloc {
  std::string id;
  std::string csp;
  v1::Program program;
  v1::GpuModel model;
  int gpus = 0;
  int64_t start_ms = 0;
  int64_t end_ms = 0;
};

class Generator {
 public:
  Generator(const FleetOptions& o, const std::function<void(const SimMessage&)>& emit,
            const std::function<void(double)>& progress)
      : o_(o), emit_(emit), progress_(progress), rng_(o.seed) {}

  SimStats Run() {
    Registry();
    // A later month of a series draws its own usage: the registry's draws are the first month's.
    if (Later()) rng_ = Rng(o_.seed + 0x9E3779B97F4A7C15ULL * MonthsAfterFirst());
    Usage();
    for (const SimMessage& m : late_) Emit(m);
    stats_.late = late_.size();
    if (progress_) progress_(1.0);
    return stats_;
  }

 private:
  base::Period First() const { return o_.series_start.value_or(o_.period); }
  bool Later() const { return First() != o_.period; }
  uint64_t MonthsAfterFirst() const {
    return static_cast<uint64_t>((o_.period.year - First().year) * 12 + o_.period.month -
                                 First().month);
  }
  // Ids of the month's own producers and events in a later month of a series (the first month
  // keeps the names a single month has).
  std::string MonthTag() const { return Later() ? absl::StrCat("-", o_.period.ToString()) : ""; }

  void Emit(const SimMessage& m) {
    ++stats_.messages;
    emit_(m);
  }

  void Reg(v1::RegistryEvent e) {
    e.set_schema_version(1);
    e.set_event_id(absl::StrFormat("sim-reg-%06d", ++reg_seq_));
    e.set_emitted_at_ms(First().StartMs() - 100 * kDay);
    SimMessage m;
    m.registry = true;
    m.key = e.event_id();
    m.value = e.SerializeAsString();
    ++stats_.registry_events;
    Emit(m);
  }

  void Registry() {
    const int64_t from = First().StartMs() - 365 * kDay;
    for (auto [type, bp] : {std::pair{v1::ACADEMIA, 0},
                            {v1::RESEARCH_INSTITUTE, 0},
                            {v1::PUBLIC_AGENCY, 0},
                            {v1::SME, 900},
                            {v1::STARTUP, 900},
                            {v1::MID_SIZED_ENTERPRISE, 3'000},
                            {v1::LARGE_ENTERPRISE, 5'000}}) {
      v1::RegistryEvent e;
      e.mutable_copay_policy()->set_institution_type(type);
      e.mutable_copay_policy()->set_copay_bp(bp);
      e.mutable_copay_policy()->set_effective_from_ms(from);
      Reg(e);
    }
    // The programmes' rules (docs/PROGRAMMES.md): who may use what, at most 2 servers of 8 H100s
    // per institution on the HPC lease, short-term state GPUs (4 months at most), co-pay bounds
    // (academia and research free, SMEs and startups under 10%), and usage beyond a cap held
    // for a decision, except industry's, billed in full.
    for (v1::Program program : {v1::GOV_ADVANCED, v1::LEASE_HPC, v1::LEASE_RESEARCH}) {
      v1::RegistryEvent e;
      auto* p = e.mutable_programme_policy();
      p->set_program(program);
      p->set_effective_from_ms(from);
      if (program == v1::LEASE_HPC) {
        p->add_eligible_types(v1::SME);
        p->add_eligible_types(v1::STARTUP);
        p->set_max_servers_per_institution(kHpcMaxServers);
        auto* size = p->add_server_sizes();
        size->set_gpu_model(v1::H100);
        size->set_gpus_per_server(kGpusPerServer);
      } else if (program == v1::LEASE_RESEARCH) {
        p->add_eligible_types(v1::ACADEMIA);
        p->add_eligible_types(v1::RESEARCH_INSTITUTE);
      } else {
        p->set_max_window_ms(kGovMaxWindowDays * kDay);
      }
      for (auto [type, max_bp] : {std::pair{v1::ACADEMIA, 0u},
                                  {v1::RESEARCH_INSTITUTE, 0u},
                                  {v1::SME, 999u},
                                  {v1::STARTUP, 999u}}) {
        auto* b = p->add_copay_bounds();
        b->set_institution_type(type);
        b->set_max_copay_bp(max_bp);
      }
      for (v1::InstitutionType type :
           {v1::SME, v1::STARTUP, v1::MID_SIZED_ENTERPRISE, v1::LARGE_ENTERPRISE}) {
        auto* r = p->add_over_cap_rules();
        r->set_institution_type(type);
        r->set_action(v1::OVER_CAP_BILL_FULL);
      }
      p->set_allocation_metadata_required(true);  // every allocation names its call
      Reg(e);
    }
    auto rate = [&](v1::Program p, v1::GpuModel m, int64_t krw, int64_t at) {
      v1::RegistryEvent e;
      auto* r = e.mutable_rate_card();
      r->set_program(p);
      r->set_gpu_model(m);
      r->set_krw_per_gpu_hour(krw);
      r->set_effective_from_ms(at);
      Reg(e);
    };
    rate(v1::GOV_ADVANCED, v1::H200, 4'800, from);
    rate(v1::GOV_ADVANCED, v1::B200, 7'900, from);
    rate(v1::LEASE_HPC, v1::H100, 3'600, from);
    rate(v1::LEASE_RESEARCH, v1::H200, 5'100, from);
    // A mid-month price change: usage is split there.
    rate(v1::GOV_ADVANCED, v1::H200, 5'000, First().StartMs() + 15 * kDay);

    const int csps = std::max(1, o_.csps);
    for (int c = 0; c < csps; ++c) {
      const std::string csp = absl::StrFormat("csp-%02d", c + 1);
      csp_ids_.push_back(csp);
      v1::RegistryEvent e;
      e.mutable_csp_contract()->set_csp_id(csp);
      e.mutable_csp_contract()->set_own_use_cap_bp(static_cast<uint32_t>(rng_.Between(10, 15)) *
                                                   100);
      e.mutable_csp_contract()->set_effective_from_ms(from);
      Reg(e);
    }
    auto split = [&](v1::Program p, v1::GpuModel m, int total, int first, int count) {
      for (int i = 0; i < count; ++i) {
        const int gpus = total / count + (i < total % count ? 1 : 0);
        if (gpus == 0) continue;
        Pool pool{csp_ids_[(first + i) % csps], p, m, gpus, gpus};
        v1::RegistryEvent e;
        auto* g = e.mutable_gpu_pool();
        g->set_csp_id(pool.csp);
        g->set_program(p);
        g->set_gpu_model(m);
        g->set_gpu_count(static_cast<uint32_t>(gpus));
        g->set_effective_from_ms(from);
        // The research lease is paid per reserved capacity, the HPC lease per GPU-hour
        // delivered: both ways the state pays a CSP for a leased pool appear in a month.
        if (p == v1::LEASE_RESEARCH) g->set_lease_pricing(v1::LEASE_PRICING_RESERVED);
        Reg(e);
        pools_.push_back(pool);
      }
    };
    split(v1::GOV_ADVANCED, v1::H200, o_.gov_h200, 0, csps);
    split(v1::GOV_ADVANCED, v1::B200, o_.gov_b200, 0, csps);
    split(v1::LEASE_HPC, v1::H100, o_.lease_hpc_h100, 0, std::max(1, csps / 2));
    split(v1::LEASE_RESEARCH, v1::H200, o_.lease_research_h200, csps / 2,
          std::max(1, csps - csps / 2));

    // Alerts (docs/ALERTS.md): allocations' caps 80% and 95% used; a CSP's day with 5% of its
    // events rejected (100 or more that day).
    {
      v1::RegistryEvent e;
      auto* a = e.mutable_alert_settings();
      a->set_effective_from_ms(from);
      a->add_allocation_balance_thresholds_bp(8'000);
      a->add_allocation_balance_thresholds_bp(9'500);
      a->set_csp_rejection_rate_bp(500);
      a->set_csp_rejection_min_events(100);
      Reg(e);
    }

    // Institutions in the survey's proportions: 273 academia, 115 industry, 17 research/other.
    for (int i = 0; i < o_.institutions; ++i) {
      const uint64_t r = rng_.Below(405);
      v1::InstitutionType type;
      if (r < 273) {
        type = v1::ACADEMIA;
      } else if (r < 273 + 12) {
        type = v1::RESEARCH_INSTITUTE;
      } else if (r < 273 + 17) {
        type = v1::PUBLIC_AGENCY;
      } else {
        const uint64_t k = rng_.Below(100);
        type = k < 60   ? v1::SME
               : k < 85 ? v1::STARTUP
               : k < 95 ? v1::MID_SIZED_ENTERPRISE
                        : v1::LARGE_ENTERPRISE;
      }
      const std::string id = absl::StrFormat("inst-%04d", i + 1);
      v1::RegistryEvent e;
      auto* inst = e.mutable_institution();
      inst->set_institution_id(id);
      inst->set_name(
          absl::StrCat("Institution ", i + 1, " (", v1::InstitutionType_Name(type), ")"));
      inst->set_type(type);
      inst->set_effective_from_ms(from);
      Reg(e);
      ++stats_.institutions;
      const int n = rng_.Percent(80) ? 1 : 2;
      for (int a = 0; a < n; ++a) Allocate(id, type);
    }
    Budgets(from);
  }

  // The year's budgets (docs/REPORTS.md), sized from what was granted: each programme's
  // allocations over the fiscal year at their list price, busy utilisation_pct of the time, 90%
  // of it subsidised (the research lease: its reserved pools in full), plus a tenth. Alerts at
  // half, 80%, 90% and all of it.
  void Budgets(int64_t from) {
    const int year = First().year;
    const int64_t y0 = base::Period{year, 1}.StartMs(), y1 = base::Period{year, 12}.EndMs();
    auto rate = [](v1::GpuModel m) -> int64_t {
      return m == v1::B200 ? 7'900 : m == v1::H100 ? 3'600 : 4'800;
    };
    std::map<int, __int128> won;  // program → Σ GPU-ms × won per GPU-hour
    for (const Alloc& a : allocs_) {
      const int64_t lo = std::max(a.start_ms, y0), hi = std::min(a.end_ms, y1);
      if (hi <= lo) continue;
      won[a.program] += static_cast<__int128>(a.gpus) * (hi - lo) *
                        (a.program == v1::LEASE_RESEARCH ? 5'100 : rate(a.model));
    }
    for (const Pool& p : pools_) {
      if (p.program == v1::LEASE_RESEARCH) won[p.program] = 0;
    }
    for (const Pool& p : pools_) {
      if (p.program == v1::LEASE_RESEARCH) {
        won[p.program] += static_cast<__int128>(p.gpus) * (y1 - y0) * 5'100 * 100 /
                          std::max(1, o_.utilisation_pct * 90 / 100);
      }
    }
    const int64_t share = std::clamp(o_.utilisation_pct, 1, 100) * 90 / 100;
    for (v1::Program program : {v1::GOV_ADVANCED, v1::LEASE_HPC, v1::LEASE_RESEARCH}) {
      const __int128 krw = won[program] / kHour * share / 100 * 11 / 10;
      v1::RegistryEvent e;
      auto* b = e.mutable_budget();
      b->set_program(program);
      b->set_fiscal_year(static_cast<uint32_t>(year));
      b->set_amount_krw(std::max<int64_t>(1, static_cast<int64_t>(krw)));
      b->set_effective_from_ms(from);
      for (uint32_t t : {5'000u, 8'000u, 9'000u, 10'000u}) b->add_alert_thresholds_bp(t);
      Reg(e);
    }
  }

  void Allocate(const std::string& institution, v1::InstitutionType type) {
    const bool industry_small = type == v1::SME || type == v1::STARTUP;
    v1::Program program;
    int gpus;
    if (industry_small) {
      program = rng_.Percent(60) ? v1::LEASE_HPC : v1::GOV_ADVANCED;
      gpus = static_cast<int>(rng_.Between(1, 16));  // single GPUs up to 2 servers
    } else if (type == v1::ACADEMIA) {
      program = rng_.Percent(60) ? v1::GOV_ADVANCED : v1::LEASE_RESEARCH;
      gpus = static_cast<int>(rng_.Between(1, 8)) * 8;
    } else if (type == v1::RESEARCH_INSTITUTE) {
      program = rng_.Percent(50) ? v1::GOV_ADVANCED : v1::LEASE_RESEARCH;
      gpus = static_cast<int>(rng_.Between(8, 64)) * 8;  // large blocks
    } else {
      program = v1::GOV_ADVANCED;
      gpus = static_cast<int>(rng_.Between(2, 16)) * 8;
    }
    const v1::GpuModel want = program == v1::LEASE_HPC        ? v1::H100
                              : program == v1::LEASE_RESEARCH ? v1::H200
                              : rng_.Below(10'000) < 6'400    ? v1::H200
                                                              : v1::B200;
    // The pool of that kind with the most room.
    Pool* best = nullptr;
    for (Pool& p : pools_) {
      if (p.program == program && p.model == want && (best == nullptr || p.free > best->free)) {
        best = &p;
      }
    }
    if (best == nullptr || best->free == 0) return;
    gpus = std::min(gpus, best->free);
    if (program == v1::LEASE_HPC) {  // at most 2 servers per institution, all allocations
      int& held = hpc_gpus_[institution];
      gpus = std::min(gpus, kHpcMaxServers * kGpusPerServer - held);
      if (gpus <= 0) return;
      held += gpus;
    }
    best->free -= gpus;
    Alloc a;
    a.id = absl::StrFormat("alloc-%05d", static_cast<int>(allocs_.size()) + 1);
    a.csp = best->csp;
    a.program = program;
    a.model = want;
    a.gpus = gpus;
    if (program == v1::GOV_ADVANCED) {  // short-term calls: at most 4 months
      a.start_ms = First().StartMs() - rng_.Between(0, 60) * kDay;
      a.end_ms = a.start_ms + rng_.Between(30, 120) * kDay;
    } else {
      a.start_ms = First().StartMs() - rng_.Between(0, 120) * kDay;
      a.end_ms = a.start_ms + rng_.Between(90, 365) * kDay;
    }
    v1::RegistryEvent e;
    auto* r = e.mutable_allocation();
    r->set_allocation_id(a.id);
    r->set_institution_id(institution);
    r->set_program(program);
    r->set_csp_id(a.csp);
    r->set_gpu_model(want);
    r->set_gpu_count(static_cast<uint32_t>(gpus));
    r->set_start_ms(a.start_ms);
    r->set_end_ms(a.end_ms);
    if (program == v1::GOV_ADVANCED && rng_.Percent(30)) {
      r->set_gpu_ms_cap(static_cast<int64_t>(gpus) * 300 * kHour);
    }
    // The call it was granted in: on the state's GPUs, SMEs and startups come through the 2026
    // second call (short-term needs), the others through the first; each lease is its own call.
    r->set_call_id(program == v1::GOV_ADVANCED ? (industry_small ? "gov-2026-2" : "gov-2026-1")
                   : program == v1::LEASE_HPC  ? "lease-hpc-2026"
                                               : "lease-research-2026");
    r->set_agency_id("NIPA");
    r->set_project_id(absl::StrCat("proj-", a.id.substr(std::string_view("alloc-").size())));
    Reg(e);
    allocs_.push_back(a);
    ++stats_.allocations;
  }

  v1::UsageEvent Base(const std::string& csp, const std::string& producer, int64_t emitted) {
    v1::UsageEvent e;
    e.set_schema_version(1);
    e.set_csp_id(csp);
    e.set_producer_id(producer);
    e.set_producer_seq(++producer_seq_[producer]);
    e.set_emitted_at_ms(emitted);
    return e;
  }

  void Send(const std::string& csp, const std::string& key, const v1::UsageEvent& e, bool late) {
    SimMessage m;
    m.csp_id = csp;
    m.key = key;
    m.value = e.SerializeAsString();
    if (late) {
      late_.push_back(std::move(m));
    } else {
      Emit(m);
    }
  }

  bool Done() const {
    return o_.max_usage_events > 0 && stats_.usage_events >= o_.max_usage_events;
  }

  void Usage() {
    const int64_t p0 = o_.period.StartMs();
    const int64_t p1 = o_.period.EndMs();
    const int64_t step = std::max(1, o_.interval_minutes) * kMinute;
    const int util = std::clamp(o_.utilisation_pct, 1, 100);
    size_t done = 0;
    for (const Alloc& a : allocs_) {
      if (progress_ && ++done % 16 == 0) progress_(static_cast<double>(done) / allocs_.size());
      const int64_t w0 = std::max(a.start_ms, p0);
      const int64_t w1 = std::min(a.end_ms, p1);
      if (w0 >= w1) continue;
      const std::string producer = absl::StrCat(a.csp, "-meter-", a.id, MonthTag());
      const int nodes = (a.gpus + 7) / 8;
      for (int k = 0; k < nodes && !Done(); ++k) {
        const uint32_t gpus = static_cast<uint32_t>(std::min(8, a.gpus - 8 * k));
        const std::string node = absl::StrCat(a.id, "-n", k);
        int64_t t = w0 + rng_.Between(0, 24) * kHour;
        while (t < w1 && !Done()) {
          const int64_t busy = rng_.Between(2, 48) * kHour;
          const int64_t busy_end = std::min(w1, t + busy);
          for (int64_t s = t; s < busy_end && !Done(); s += step) {
            const int64_t e = std::min(busy_end, s + step);
            v1::UsageEvent ev = Base(a.csp, producer, e);
            ev.set_event_id(absl::StrCat(node, "-", s / kMinute));
            auto* u = ev.mutable_usage();
            u->set_allocation_id(a.id);
            u->set_gpu_model(a.model);
            u->set_gpu_count(gpus);
            u->set_start_ms(s);
            u->set_end_ms(e);
            u->set_node_id(node);
            const bool late = rng_.PerMillion(o_.late_ppm);
            if (late) ev.set_emitted_at_ms(p1 + rng_.Between(2, 10) * kDay);
            Send(a.csp, a.id, ev, late);
            ++stats_.usage_events;
            if (rng_.PerMillion(o_.duplicates_ppm)) {  // a retry: the same bytes
              Send(a.csp, a.id, ev, late);
              ++stats_.duplicates;
            }
            if (rng_.PerMillion(o_.conflicts_ppm)) {  // the id reused with other content
              v1::UsageEvent c = ev;
              c.mutable_usage()->set_end_ms(e - 1'000);
              Send(a.csp, a.id, c, late);
              ++stats_.conflicts;
            }
            if (rng_.PerMillion(o_.overlaps_ppm)) {  // a second interval on the same node
              v1::UsageEvent x = Base(a.csp, producer, e);
              x.set_event_id(absl::StrCat(node, "-", s / kMinute, "-overlap"));
              *x.mutable_usage() = ev.usage();
              Send(a.csp, a.id, x, false);
              ++stats_.overlaps;
            }
            if (rng_.PerMillion(o_.malformed_ppm)) {
              SimMessage m;
              m.csp_id = a.csp;
              m.key = a.id;
              const int n = static_cast<int>(rng_.Between(1, 48));
              for (int i = 0; i < n; ++i) m.value.push_back(static_cast<char>(rng_.Below(256)));
              Emit(m);
              ++stats_.malformed;
            }
          }
          t = busy_end + busy * (100 - util) / util * rng_.Between(50, 150) / 100 + kMinute;
        }
      }
      // Now and then an allocation's GPU fails for a few hours: its usage then is credited.
      if (rng_.Percent(2)) {
        const int64_t s = w0 + rng_.Below(static_cast<uint64_t>(w1 - w0)) / kHour * kHour;
        v1::UsageEvent ev = Base(a.csp, producer, std::min(w1, s + 6 * kHour));
        ev.set_event_id(absl::StrCat(a.id, "-outage-", s / kMinute));
        auto* o = ev.mutable_outage();
        o->set_allocation_id(a.id);
        o->set_program(a.program);
        o->set_gpu_model(a.model);
        o->set_gpu_count(1);
        o->set_start_ms(s);
        o->set_end_ms(std::min(w1, s + rng_.Between(1, 6) * kHour));
        o->set_cause("gpu-xid-79");
        if (o->end_ms() > o->start_ms()) {
          Send(a.csp, a.id, ev, false);
          ++stats_.outage_events;
        }
      }
      if (Done()) break;
    }
    // Own use of the government GPUs each CSP hosts, and pool outages.
    for (const Pool& p : pools_) {
      const std::string producer = absl::StrCat(p.csp, "-meter-pools", MonthTag());
      const std::string key =
          absl::StrCat("pool:", v1::Program_Name(p.program), ":", v1::GpuModel_Name(p.model));
      if (p.program == v1::GOV_ADVANCED) {
        const int pct = static_cast<int>(rng_.Between(3, 12));
        const int desired = std::max(1, p.gpus * pct / 100);
        for (int64_t d = p0; d < p1; d += kDay) {
          // The state's users come first: only GPUs no allocation holds that day are the CSP's
          // to use (OWN_USE_DISPLACES_PROGRAMME otherwise).
          int granted = 0;
          for (const Alloc& a : allocs_) {
            if (a.csp == p.csp && a.program == p.program && a.model == p.model &&
                a.start_ms < d + 20 * kHour && a.end_ms > d + 2 * kHour) {
              granted += a.gpus;
            }
          }
          const int gpus = std::min(desired, p.gpus - granted);
          if (gpus <= 0) continue;
          v1::UsageEvent ev = Base(p.csp, producer, d + 20 * kHour);
          ev.set_event_id(absl::StrCat(p.csp, "-own-", v1::GpuModel_Name(p.model), "-", d / kDay));
          auto* o = ev.mutable_own_use();
          o->set_program(p.program);
          o->set_gpu_model(p.model);
          o->set_gpu_count(static_cast<uint32_t>(gpus));
          o->set_start_ms(d + 2 * kHour);
          o->set_end_ms(d + 20 * kHour);
          o->set_node_id(absl::StrCat(p.csp, "-own"));
          Send(p.csp, key, ev, false);
          ++stats_.own_use_events;
        }
      }
      for (int i = 0; i < 2; ++i) {
        const int64_t s = p0 + rng_.Between(0, 27) * kDay + rng_.Between(0, 23) * kHour;
        v1::UsageEvent ev = Base(p.csp, producer, s + 12 * kHour);
        ev.set_event_id(absl::StrCat(p.csp, "-pool-outage-", v1::Program_Name(p.program), "-",
                                     v1::GpuModel_Name(p.model), MonthTag(), "-", i));
        auto* o = ev.mutable_outage();
        o->set_program(p.program);
        o->set_gpu_model(p.model);
        o->set_gpu_count(static_cast<uint32_t>(std::min(8, p.gpus)));
        o->set_start_ms(s);
        o->set_end_ms(s + rng_.Between(1, 12) * kHour);
        o->set_cause(i == 0 ? "power-maintenance" : "network");
        Send(p.csp, key, ev, false);
        ++stats_.outage_events;
      }
    }
  }

  const FleetOptions& o_;
  const std::function<void(const SimMessage&)>& emit_;
  const std::function<void(double)>& progress_;
  Rng rng_;
  SimStats stats_;
  int reg_seq_ = 0;
  std::vector<std::string> csp_ids_;
  std::vector<Pool> pools_;
  std::vector<Alloc> allocs_;
  std::map<std::string, uint64_t> producer_seq_;
  std::map<std::string, int> hpc_gpus_;  // GPUs each institution holds on the HPC lease
  std::vector<SimMessage> late_;
};

}  // namespace

FleetOptions Scaled(FleetOptions o, double factor) {
  auto s = [factor](int v) { return std::max(1, static_cast<int>(v * factor)); };
  o.gov_h200 = s(o.gov_h200);
  o.gov_b200 = s(o.gov_b200);
  o.lease_hpc_h100 = s(o.lease_hpc_h100);
  o.lease_research_h200 = s(o.lease_research_h200);
  o.institutions = s(o.institutions);
  return o;
}

SimStats Generate(const FleetOptions& options, const std::function<void(const SimMessage&)>& emit,
                  const std::function<void(double)>& progress) {
  return Generator(options, emit, progress).Run();
}

}  // namespace gpuledger::sim
