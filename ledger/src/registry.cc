#include "ledger/registry.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "base/registration_number.h"

namespace gpuledger::ledger {

namespace v1 = gpuledger::v1;

namespace {

// A record for a key and instant that is already recorded with another value contradicts it.
template <typename T>
std::optional<RegistryProblem> Contradicts(const Timeline<T>* timeline, int64_t from_ms,
                                           const T& value, const std::string& what) {
  if (timeline == nullptr) return std::nullopt;
  auto existing = timeline->ExactlyAt(from_ms);
  if (existing.has_value() && !(*existing == value)) {
    return RegistryProblem{kRegistryConflict,
                           absl::StrCat(what, " already has a different value from ", from_ms,
                                        "; publish a record with a new effective date instead")};
  }
  return std::nullopt;
}

template <typename Map, typename Key>
const typename Map::mapped_type* Find(const Map& m, const Key& k) {
  auto it = m.find(k);
  return it == m.end() ? nullptr : &it->second;
}

// A party as kept: its registration number as ten digits (ingest checked it).
PartyVersion Normalized(const v1::Party& p) {
  PartyVersion v{p};
  if (auto digits = base::ParseRegistrationNumber(p.registration_number())) {
    v.party.set_registration_number(*digits);
  }
  return v;
}

std::string Percent(uint32_t bp) {
  return absl::StrCat(bp / 100, ".", absl::Dec(bp % 100, absl::kZeroPad2), "%");
}

std::string Days(int64_t ms) {
  constexpr int64_t kDay = 86'400'000;
  return ms % kDay == 0 ? absl::StrCat(ms / kDay, " days")
                        : absl::StrCat(ms / kDay, " days and ", ms % kDay, " ms");
}

std::string SizesOf(const v1::ProgrammePolicy& p) {
  std::string out;
  for (const auto& s : p.server_sizes()) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", v1::GpuModel_Name(s.gpu_model()), ": ",
                    s.gpus_per_server(), " GPUs per server");
  }
  return out;
}

// The first instant after `from_ms` where the timeline changes (INT64_MAX: never).
template <typename T>
int64_t NextChange(const Timeline<T>* timeline, int64_t from_ms) {
  if (timeline == nullptr) return INT64_MAX;
  std::vector<int64_t> changes;
  timeline->ChangesWithin(from_ms, INT64_MAX, &changes);
  return changes.empty() ? INT64_MAX : changes.front();
}

const v1::CopayBound* BoundOf(const v1::ProgrammePolicy& p, int type) {
  for (const auto& b : p.copay_bounds()) {
    if (b.institution_type() == type) return &b;
  }
  return nullptr;
}

}  // namespace

std::optional<RegistryProblem> Registry::CheckEligible(const v1::Allocation& a) const {
  const v1::ProgrammePolicy* policy = PolicyAt(a.program(), a.start_ms());
  if (policy == nullptr || policy->eligible_types().empty()) return std::nullopt;
  auto inst = InstitutionAt(a.institution_id(), a.start_ms());
  if (!inst) inst = InstitutionAt(a.institution_id(), INT64_MAX);
  if (!inst) return std::nullopt;  // never announced: CheckAllocation says so first
  std::string admitted;
  for (int t : policy->eligible_types()) {
    if (t == inst->type) return std::nullopt;
    absl::StrAppend(&admitted, admitted.empty() ? "" : ", ",
                    v1::InstitutionType_Name(static_cast<v1::InstitutionType>(t)));
  }
  return RegistryProblem{
      kIneligibleInstitution,
      absl::StrCat("allocation ", a.allocation_id(), ": institution ", a.institution_id(), " is ",
                   v1::InstitutionType_Name(inst->type), " at ", base::FormatKst(a.start_ms()),
                   ", and ", v1::Program_Name(a.program()), " admits only ", admitted,
                   " (its policy in force then); grant it on a programme its type may use")};
}

std::optional<RegistryProblem> Registry::CheckMetadata(const v1::Allocation& a) const {
  const v1::ProgrammePolicy* policy = PolicyAt(a.program(), a.start_ms());
  if (policy == nullptr || !policy->allocation_metadata_required()) return std::nullopt;
  std::string missing;
  for (const auto& [name, value] :
       {std::pair{"call_id", &a.call_id()}, std::pair{"agency_id", &a.agency_id()},
        std::pair{"project_id", &a.project_id()}}) {
    if (value->empty()) absl::StrAppend(&missing, missing.empty() ? "" : ", ", name);
  }
  if (missing.empty()) return std::nullopt;
  return RegistryProblem{
      kMissingAllocationMetadata,
      absl::StrCat("allocation ", a.allocation_id(), " names no ", missing, "; ",
                   v1::Program_Name(a.program()), "'s policy in force at ",
                   base::FormatKst(a.start_ms()),
                   " requires the call, agency and project of every allocation")};
}

int64_t Registry::WindowStart(const v1::Allocation& a) const {
  const v1::Allocation* first = FindAllocation(CapHolder(a.allocation_id()));
  return first == nullptr ? a.start_ms() : first->start_ms();
}

std::optional<RegistryProblem> Registry::CheckWindow(const v1::Allocation& a,
                                                     int64_t end_ms) const {
  const int64_t start = WindowStart(a);
  const v1::ProgrammePolicy* policy = PolicyAt(a.program(), start);
  if (policy == nullptr || policy->max_window_ms() <= 0) return std::nullopt;
  const int64_t window = end_ms - start;
  if (window <= policy->max_window_ms()) return std::nullopt;
  return RegistryProblem{
      kWindowTooLong,
      absl::StrCat("allocation ", a.allocation_id(), " would run from ", base::FormatKst(start),
                   start == a.start_ms() ? "" : " (where the allocation it continues began)",
                   " to ", base::FormatKst(end_ms), ", ", Days(window), "; ",
                   v1::Program_Name(a.program()), " allows at most ", Days(policy->max_window_ms()),
                   " with every extension: end it by ",
                   base::FormatKst(start + policy->max_window_ms()))};
}

int64_t Registry::EndOf(const v1::Allocation& a, const Ending* ending) const {
  const int64_t end = AllocationEndMs(a);
  return ending != nullptr && a.allocation_id() == ending->allocation_id
             ? std::min(end, ending->end_ms)
             : end;
}

std::optional<RegistryProblem> Registry::CheckServers(
    const v1::Allocation& a, const Timeline<uint32_t>* current, int64_t current_end,
    const Timeline<uint32_t>& proposed, int64_t proposed_end, const Ending* ending) const {
  const Timeline<PolicyVersion>* policies = Find(policies_, static_cast<int>(a.program()));
  if (policies == nullptr) return std::nullopt;
  const int64_t lo = a.start_ms();
  const int64_t hi = std::max(current_end, proposed_end);
  if (hi <= lo) return std::nullopt;
  struct Held {
    int64_t from, to;
    uint32_t gpus;
    int model;
  };
  std::vector<Held> others;
  std::vector<int64_t> instants{lo, current_end, proposed_end};
  if (const auto* ids = Find(institution_allocations_,
                             std::pair<std::string, int>{a.institution_id(), a.program()})) {
    for (const std::string& id : *ids) {
      if (id == a.allocation_id()) continue;
      const v1::Allocation& other = allocations_.at(id);
      const int64_t other_end = EndOf(other, ending);
      if (other_end <= lo || other.start_ms() >= hi) continue;
      allocation_gpus_.at(id).ForEachWithin(
          other.start_ms(), other_end, [&](int64_t from, int64_t to, uint32_t gpus) {
            others.push_back(Held{from, to, gpus, other.gpu_model()});
            instants.push_back(from);
            instants.push_back(to);
          });
    }
  }
  if (current != nullptr) current->ChangesWithin(lo, hi, &instants);
  proposed.ChangesWithin(lo, hi, &instants);
  policies->ChangesWithin(lo, hi, &instants);
  std::sort(instants.begin(), instants.end());
  instants.erase(std::unique(instants.begin(), instants.end()), instants.end());
  for (int64_t t : instants) {
    if (t < lo || t >= hi) continue;
    const int64_t before = current != nullptr && t < current_end ? current->At(t).value_or(0) : 0;
    const int64_t after = t < proposed_end ? proposed.At(t).value_or(0) : 0;
    if (after <= before) continue;
    const PolicyVersion* version = policies->Find(t);
    if (version == nullptr || version->policy.max_servers_per_institution() == 0) continue;
    const v1::ProgrammePolicy& policy = version->policy;
    // Server-equivalents in units of 1/L server, L the common multiple of the sizes: exact.
    __int128 l = 1;
    std::map<int, uint32_t> size;
    for (const auto& s : policy.server_sizes()) {
      size[s.gpu_model()] = s.gpus_per_server();
      l = std::lcm(static_cast<int64_t>(l), static_cast<int64_t>(s.gpus_per_server()));
    }
    if (!size.contains(a.gpu_model())) {
      return RegistryProblem{
          kOverServerLimit,
          absl::StrCat("allocation ", a.allocation_id(), ": ", v1::Program_Name(a.program()),
                       " limits servers per institution but its policy gives no server size for ",
                       v1::GpuModel_Name(a.gpu_model()), " (", SizesOf(policy),
                       "); the operator records one first")};
    }
    __int128 units = static_cast<__int128>(after) * (l / size[a.gpu_model()]);
    int64_t other_gpus = 0;
    for (const Held& h : others) {
      if (h.from > t || t >= h.to || !size.contains(h.model)) continue;
      units += static_cast<__int128>(h.gpus) * (l / size[h.model]);
      other_gpus += h.gpus;
    }
    if (units <= static_cast<__int128>(policy.max_servers_per_institution()) * l) continue;
    return RegistryProblem{
        kOverServerLimit,
        absl::StrCat("institution ", a.institution_id(), " would hold more than ",
                     policy.max_servers_per_institution(), " servers on ",
                     v1::Program_Name(a.program()), " at ", base::FormatKst(t), ": ", after,
                     " GPUs on allocation ", a.allocation_id(), " and ", other_gpus,
                     " on its other allocations (", SizesOf(policy),
                     "); grant fewer GPUs or end another allocation first")};
  }
  return std::nullopt;
}

std::optional<RegistryProblem> Registry::CheckCopayPolicy(const v1::CopayPolicy& p) const {
  const int type = p.institution_type();
  if (auto c = Contradicts(
          Find(copay_, type), p.effective_from_ms(), p.copay_bp(),
          absl::StrCat("co-pay policy ", v1::InstitutionType_Name(p.institution_type())))) {
    return c;
  }
  const int64_t from = p.effective_from_ms();
  const int64_t until = NextChange(Find(copay_, type), from);
  for (const auto& [program, timeline] : policies_) {
    std::optional<RegistryProblem> problem;
    timeline.ForEachWithin(from, until, [&](int64_t lo, int64_t, const PolicyVersion& v) {
      const v1::CopayBound* b = BoundOf(v.policy, type);
      if (problem || b == nullptr) return;
      if (p.copay_bp() >= b->min_copay_bp() && p.copay_bp() <= b->max_copay_bp()) return;
      problem = RegistryProblem{
          kCopayOutOfBounds,
          absl::StrCat("a co-pay of ", Percent(p.copay_bp()), " for ",
                       v1::InstitutionType_Name(p.institution_type()), " from ",
                       base::FormatKst(from), " is outside ", v1::Program_Name(v.policy.program()),
                       "'s bounds of ", Percent(b->min_copay_bp()), " to ",
                       Percent(b->max_copay_bp()), " (its policy in force from ",
                       base::FormatKst(lo), "); publish a co-pay within them")};
    });
    if (problem) return problem;
  }
  return std::nullopt;
}

std::optional<RegistryProblem> Registry::CheckProgrammePolicy(const v1::ProgrammePolicy& p) const {
  const Timeline<PolicyVersion>* timeline = Find(policies_, static_cast<int>(p.program()));
  if (auto c = Contradicts(timeline, p.effective_from_ms(), PolicyVersion{p},
                           absl::StrCat("programme policy of ", v1::Program_Name(p.program())))) {
    return c;
  }
  const int64_t from = p.effective_from_ms();
  const int64_t until = NextChange(timeline, from);
  for (const auto& b : p.copay_bounds()) {
    const auto* copays = Find(copay_, static_cast<int>(b.institution_type()));
    if (copays == nullptr) continue;
    std::optional<RegistryProblem> problem;
    copays->ForEachWithin(from, until, [&](int64_t lo, int64_t, uint32_t bp) {
      if (problem || (bp >= b.min_copay_bp() && bp <= b.max_copay_bp())) return;
      problem = RegistryProblem{
          kCopayOutOfBounds,
          absl::StrCat("the policy of ", v1::Program_Name(p.program()), " from ",
                       base::FormatKst(from), " bounds the co-pay of ",
                       v1::InstitutionType_Name(b.institution_type()), " to ",
                       Percent(b.min_copay_bp()), " to ", Percent(b.max_copay_bp()),
                       ", but the co-pay policy in force from ", base::FormatKst(lo), " is ",
                       Percent(bp), "; publish a co-pay within the bounds first")};
    });
    if (problem) return problem;
  }
  return std::nullopt;
}

std::optional<RegistryProblem> Registry::CheckAllocation(const v1::Allocation& a) const {
  if (!institutions_.contains(a.institution_id())) {
    return RegistryProblem{kUnknownInstitution,
                           absl::StrCat("allocation ", a.allocation_id(), " names institution '",
                                        a.institution_id(), "', which was never announced")};
  }
  if (const v1::Allocation* known = FindAllocation(a.allocation_id())) {
    if (known->SerializeAsString() != a.SerializeAsString()) {
      return RegistryProblem{kRegistryConflict,
                             absl::StrCat("allocation ", a.allocation_id(),
                                          " exists with other terms; change it with an "
                                          "AllocationAmendment")};
    }
    return std::nullopt;  // identical re-announcement: nothing changes
  }
  if (auto p = CheckEligible(a)) return p;
  if (auto p = CheckMetadata(a)) return p;
  if (auto p = CheckWindow(a, a.end_ms())) return p;
  Timeline<uint32_t> grant;
  grant.Set(a.start_ms(), a.gpu_count());
  if (auto p = CheckGrantWithinPool(a, nullptr, a.start_ms(), grant, a.end_ms())) return p;
  return CheckServers(a, nullptr, a.start_ms(), grant, a.end_ms());
}

std::optional<RegistryProblem> Registry::CheckGrantWithinPool(
    const v1::Allocation& a, const Timeline<uint32_t>* current, int64_t current_end,
    const Timeline<uint32_t>& proposed, int64_t proposed_end, const Ending* ending) const {
  const std::tuple<std::string, int, int> key{a.csp_id(), a.program(), a.gpu_model()};
  const Timeline<uint32_t>* pool = Find(pools_, key);
  if (pool == nullptr) return std::nullopt;
  const int64_t lo = a.start_ms();
  const int64_t hi = std::max(current_end, proposed_end);
  if (hi <= lo) return std::nullopt;
  // What the pool's other allocations grant, as changes at instants; and every instant in
  // [lo, hi) where something changes.
  std::map<int64_t, int64_t> others;
  std::vector<int64_t> instants{lo, current_end, proposed_end};
  if (const auto* ids = Find(pool_allocations_, key)) {
    for (const std::string& id : *ids) {
      if (id == a.allocation_id()) continue;
      const v1::Allocation& other = allocations_.at(id);
      const int64_t other_end = EndOf(other, ending);
      if (other_end <= lo || other.start_ms() >= hi) continue;  // never at the same time
      const Timeline<uint32_t>& g = allocation_gpus_.at(id);
      g.ForEachWithin(other.start_ms(), other_end, [&](int64_t from, int64_t to, uint32_t gpus) {
        others[from] += gpus;
        others[to] -= gpus;
      });
    }
  }
  for (const auto& [t, delta] : others) instants.push_back(t);
  if (current != nullptr) current->ChangesWithin(lo, hi, &instants);
  proposed.ChangesWithin(lo, hi, &instants);
  pool->ChangesWithin(lo, hi, &instants);
  std::sort(instants.begin(), instants.end());
  instants.erase(std::unique(instants.begin(), instants.end()), instants.end());

  int64_t held_by_others = 0;
  auto next_change = others.begin();
  for (int64_t t : instants) {
    if (t >= hi) break;
    for (; next_change != others.end() && next_change->first <= t; ++next_change) {
      held_by_others += next_change->second;
    }
    if (t < lo) continue;
    const int64_t before = current != nullptr && t < current_end ? current->At(t).value_or(0) : 0;
    const int64_t after = t < proposed_end ? proposed.At(t).value_or(0) : 0;
    if (after <= before) continue;  // this change grants no more here
    const std::optional<uint32_t> holds = pool->At(t);
    if (!holds.has_value() || held_by_others + after <= *holds) continue;
    return RegistryProblem{
        kGrantOverPool,
        absl::StrCat("allocation ", a.allocation_id(), " would hold ", after, " GPUs of the pool (",
                     a.csp_id(), ", ", v1::Program_Name(a.program()), ", ",
                     v1::GpuModel_Name(a.gpu_model()), ") at ", base::FormatKst(t),
                     ", where other allocations hold ", held_by_others, " and the pool has ",
                     *holds, ": grant at most ",
                     held_by_others >= *holds ? 0 : *holds - held_by_others,
                     " there, or record a larger pool (GpuPool) first")};
  }
  return std::nullopt;
}

std::optional<RegistryProblem> Registry::CheckAmendment(const v1::AllocationAmendment& a) const {
  const v1::Allocation* alloc = FindAllocation(a.allocation_id());
  if (alloc == nullptr) {
    return RegistryProblem{kUnknownAllocation, absl::StrCat("amendment of unknown allocation '",
                                                            a.allocation_id(), "'")};
  }
  if (const std::string* next = Find(transferred_to_, alloc->allocation_id())) {
    return RegistryProblem{
        kInvalidAmendment,
        absl::StrCat("allocation ", alloc->allocation_id(), " was transferred to ", *next, " from ",
                     base::FormatKst(AllocationEndMs(*alloc)), "; amend ", *next, " instead")};
  }
  const int64_t end = AllocationEndMs(*alloc);
  if (a.effective_from_ms() < alloc->start_ms() || a.effective_from_ms() >= end) {
    return RegistryProblem{
        kInvalidAmendment,
        absl::StrCat("effective_from_ms ", a.effective_from_ms(),
                     " is outside the allocation's window [", alloc->start_ms(), ", ", end, ")")};
  }
  const Timeline<uint32_t>* grant = Find(allocation_gpus_, alloc->allocation_id());
  switch (a.change_case()) {
    case v1::AllocationAmendment::kNewEndMs:
      if (a.new_end_ms() <= a.effective_from_ms()) {
        return RegistryProblem{kInvalidAmendment, "new_end_ms must be after effective_from_ms"};
      }
      if (a.new_end_ms() <= end || grant == nullptr) return std::nullopt;  // shortened
      if (auto p = CheckWindow(*alloc, a.new_end_ms())) return p;
      if (auto p = CheckGrantWithinPool(*alloc, grant, end, *grant, a.new_end_ms())) return p;
      return CheckServers(*alloc, grant, end, *grant, a.new_end_ms());
    case v1::AllocationAmendment::kNewGpuCount: {
      if (a.new_gpu_count() == 0) {
        return RegistryProblem{kInvalidAmendment, "new_gpu_count must be at least 1"};
      }
      if (grant == nullptr) return std::nullopt;
      Timeline<uint32_t> resized = *grant;
      resized.Set(a.effective_from_ms(), a.new_gpu_count());
      if (auto p = CheckGrantWithinPool(*alloc, grant, end, resized, end)) return p;
      return CheckServers(*alloc, grant, end, resized, end);
    }
    case v1::AllocationAmendment::kRevoke:
      return std::nullopt;
    case v1::AllocationAmendment::kTransfer:
      return CheckTransfer(*alloc, a);
    case v1::AllocationAmendment::CHANGE_NOT_SET:
      break;
  }
  return RegistryProblem{kInvalidAmendment,
                         "no change (new_end_ms, new_gpu_count, revoke or transfer)"};
}

v1::Allocation Registry::Successor(const v1::Allocation& from,
                                   const v1::AllocationAmendment& a) const {
  const v1::AllocationTransfer& t = a.transfer();
  v1::Allocation next = from;
  next.set_allocation_id(t.new_allocation_id());
  if (!t.to_csp_id().empty()) next.set_csp_id(t.to_csp_id());
  if (!t.to_institution_id().empty()) next.set_institution_id(t.to_institution_id());
  next.set_start_ms(a.effective_from_ms());
  next.set_end_ms(AllocationEndMs(from));
  const Timeline<uint32_t>* grant = Find(allocation_gpus_, from.allocation_id());
  next.set_gpu_count(grant == nullptr ? from.gpu_count()
                                      : grant->At(a.effective_from_ms()).value_or(0));
  return next;
}

Timeline<uint32_t> Registry::SuccessorGrant(const v1::Allocation& from, int64_t from_ms) const {
  Timeline<uint32_t> out;
  const Timeline<uint32_t>* grant = Find(allocation_gpus_, from.allocation_id());
  if (grant == nullptr) {
    out.Set(from_ms, from.gpu_count());
    return out;
  }
  grant->ForEachWithin(from_ms, INT64_MAX,
                       [&](int64_t lo, int64_t, uint32_t gpus) { out.Set(lo, gpus); });
  return out;
}

std::optional<RegistryProblem> Registry::CheckTransfer(const v1::Allocation& from,
                                                       const v1::AllocationAmendment& a) const {
  const v1::AllocationTransfer& t = a.transfer();
  if (FindAllocation(t.new_allocation_id()) != nullptr) {
    return RegistryProblem{
        kRegistryConflict,
        absl::StrCat("allocation ", t.new_allocation_id(),
                     " exists already; a transfer continues the allocation under a new id")};
  }
  const v1::Allocation next = Successor(from, a);
  if (next.csp_id() == from.csp_id() && next.institution_id() == from.institution_id()) {
    return RegistryProblem{
        kInvalidAmendment,
        absl::StrCat("the transfer of ", from.allocation_id(), " names its own CSP (",
                     from.csp_id(), ") and institution (", from.institution_id(),
                     "): a transfer moves an allocation to another CSP or institution")};
  }
  if (!institutions_.contains(next.institution_id())) {
    return RegistryProblem{
        kUnknownInstitution,
        absl::StrCat("allocation ", from.allocation_id(), " is transferred to institution '",
                     next.institution_id(), "', which was never announced")};
  }
  if (auto p = CheckEligible(next)) return p;
  const Timeline<uint32_t> grant = SuccessorGrant(from, a.effective_from_ms());
  const Ending ending{from.allocation_id(), a.effective_from_ms()};
  if (auto p =
          CheckGrantWithinPool(next, nullptr, next.start_ms(), grant, next.end_ms(), &ending)) {
    return p;
  }
  return CheckServers(next, nullptr, next.start_ms(), grant, next.end_ms(), &ending);
}

std::optional<RegistryProblem> Registry::Check(const v1::RegistryEvent& e) const {
  switch (e.body_case()) {
    case v1::RegistryEvent::kInstitution: {
      const auto& i = e.institution();
      return Contradicts(Find(institutions_, i.institution_id()), i.effective_from_ms(),
                         InstitutionVersion{i.name(), i.type()},
                         absl::StrCat("institution ", i.institution_id()));
    }
    case v1::RegistryEvent::kAllocation:
      return CheckAllocation(e.allocation());
    case v1::RegistryEvent::kAllocationAmendment:
      return CheckAmendment(e.allocation_amendment());
    case v1::RegistryEvent::kRateCard: {
      const auto& r = e.rate_card();
      return Contradicts(Find(rates_, std::pair<int, int>{r.program(), r.gpu_model()}),
                         r.effective_from_ms(), r.krw_per_gpu_hour(),
                         absl::StrCat("rate card ", v1::Program_Name(r.program()), "/",
                                      v1::GpuModel_Name(r.gpu_model())));
    }
    case v1::RegistryEvent::kCopayPolicy:
      return CheckCopayPolicy(e.copay_policy());
    case v1::RegistryEvent::kProgrammePolicy:
      return CheckProgrammePolicy(e.programme_policy());
    case v1::RegistryEvent::kOverCapRelease: {
      const auto& r = e.over_cap_release();
      if (FindAllocation(r.allocation_id()) == nullptr) {
        return RegistryProblem{kUnknownAllocation, absl::StrCat("release of unknown allocation '",
                                                                r.allocation_id(), "'")};
      }
      const uint32_t* known = Find(releases_, r.allocation_id());
      if (known != nullptr && *known != r.copay_bp()) {
        return RegistryProblem{
            kRegistryConflict,
            absl::StrCat("allocation ", r.allocation_id(), "'s held usage was released at ",
                         Percent(*known), " already; a release is decided once")};
      }
      return std::nullopt;
    }
    case v1::RegistryEvent::kCspContract: {
      const auto& c = e.csp_contract();
      if (auto p = Contradicts(Find(own_use_caps_, c.csp_id()), c.effective_from_ms(),
                               c.own_use_cap_bp(), absl::StrCat("contract of ", c.csp_id()))) {
        return p;
      }
      return Contradicts(Find(own_use_excess_, c.csp_id()), c.effective_from_ms(),
                         static_cast<int>(c.own_use_excess()),
                         absl::StrCat("contract of ", c.csp_id(), " (own_use_excess)"));
    }
    case v1::RegistryEvent::kPeriodClose: {
      auto period = base::ParsePeriod(e.period_close().period());
      if (!period.ok()) return RegistryProblem{kPeriodCloseOutOfOrder, period.status().ToString()};
      if (last_closed_ && *period <= *last_closed_) {
        return RegistryProblem{kPeriodAlreadyClosed,
                               absl::StrCat(period->ToString(), " is closed already (last closed: ",
                                            last_closed_->ToString(), ")")};
      }
      if (last_closed_ && *period != last_closed_->Next()) {
        return RegistryProblem{
            kPeriodCloseOutOfOrder,
            absl::StrCat("periods close in order: the next to close is ",
                         last_closed_->Next().ToString(), ", not ", period->ToString())};
      }
      if (e.emitted_at_ms() < period->EndMs()) {
        return RegistryProblem{
            kPeriodNotEnded,
            absl::StrCat(period->ToString(), " ends at ", base::FormatKst(period->EndMs()),
                         "; the close was emitted before that")};
      }
      return std::nullopt;
    }
    case v1::RegistryEvent::kRerating:            // re-prices what is recorded; contradicts nothing
    case v1::RegistryEvent::kValidationSettings:  // ingest's own limits, from their position
      return std::nullopt;
    case v1::RegistryEvent::kParty: {
      const auto& p = e.party();
      return Contradicts(Find(parties_, p.party_id()), p.effective_from_ms(), Normalized(p),
                         absl::StrCat("party ", p.party_id()));
    }
    case v1::RegistryEvent::kAlertSettings: {
      const auto& a = e.alert_settings();
      return Contradicts(&alert_settings_, a.effective_from_ms(), AlertSettingsVersion{a},
                         "the alert settings");
    }
    case v1::RegistryEvent::kBudget: {
      const auto& b = e.budget();
      return Contradicts(
          Find(budgets_, BudgetKey{b.program(), b.fiscal_year(), b.call_id()}),
          b.effective_from_ms(), BudgetVersion{b},
          absl::StrCat("the ", v1::Program_Name(b.program()), " budget of ", b.fiscal_year(),
                       b.call_id().empty() ? "" : " for call " + b.call_id()));
    }
    case v1::RegistryEvent::kBillingTerms: {
      const auto& t = e.billing_terms();
      return Contradicts(&billing_terms_, t.effective_from_ms(), BillingTermsVersion{t},
                         "the billing terms");
    }
    case v1::RegistryEvent::kGpuPool: {
      const auto& p = e.gpu_pool();
      const std::tuple<std::string, int, int> key{p.csp_id(), p.program(), p.gpu_model()};
      if (auto problem = Contradicts(Find(pools_, key), p.effective_from_ms(), p.gpu_count(),
                                     absl::StrCat("GPU pool of ", p.csp_id()))) {
        return problem;
      }
      return Contradicts(Find(pool_pricing_, key), p.effective_from_ms(),
                         static_cast<int>(p.lease_pricing()),
                         absl::StrCat("GPU pool of ", p.csp_id(), " (lease_pricing)"));
    }
    case v1::RegistryEvent::BODY_NOT_SET:
      break;
  }
  return std::nullopt;
}

void Registry::Apply(const v1::RegistryEvent& e) {
  switch (e.body_case()) {
    case v1::RegistryEvent::kInstitution: {
      const auto& i = e.institution();
      institutions_[i.institution_id()].Set(i.effective_from_ms(),
                                            InstitutionVersion{i.name(), i.type()});
      break;
    }
    case v1::RegistryEvent::kAllocation: {
      const auto& a = e.allocation();
      if (allocations_.contains(a.allocation_id())) break;  // identical re-announcement
      allocations_[a.allocation_id()] = a;
      allocation_end_[a.allocation_id()] = a.end_ms();
      allocation_gpus_[a.allocation_id()].Set(a.start_ms(), a.gpu_count());
      pool_allocations_[{a.csp_id(), a.program(), a.gpu_model()}].push_back(a.allocation_id());
      institution_allocations_[{a.institution_id(), a.program()}].push_back(a.allocation_id());
      break;
    }
    case v1::RegistryEvent::kAllocationAmendment: {
      const auto& a = e.allocation_amendment();
      if (a.has_new_end_ms()) allocation_end_[a.allocation_id()] = a.new_end_ms();
      if (a.has_revoke()) allocation_end_[a.allocation_id()] = a.effective_from_ms();
      if (a.has_new_gpu_count()) {
        allocation_gpus_[a.allocation_id()].Set(a.effective_from_ms(), a.new_gpu_count());
      }
      if (a.has_transfer()) {
        const v1::Allocation* from = FindAllocation(a.allocation_id());
        if (from == nullptr || allocations_.contains(a.transfer().new_allocation_id())) break;
        v1::Allocation next = Successor(*from, a);
        Timeline<uint32_t> grant = SuccessorGrant(*from, a.effective_from_ms());
        const std::string& id = next.allocation_id();
        cap_holder_[id] = CapHolder(from->allocation_id());
        transferred_from_[id] = from->allocation_id();
        transferred_to_[from->allocation_id()] = id;
        allocation_end_[from->allocation_id()] = a.effective_from_ms();
        allocation_end_[id] = next.end_ms();
        allocation_gpus_[id] = std::move(grant);
        pool_allocations_[{next.csp_id(), next.program(), next.gpu_model()}].push_back(id);
        institution_allocations_[{next.institution_id(), next.program()}].push_back(id);
        allocations_[id] = std::move(next);
      }
      break;
    }
    case v1::RegistryEvent::kRateCard: {
      const auto& r = e.rate_card();
      rates_[{r.program(), r.gpu_model()}].Set(r.effective_from_ms(), r.krw_per_gpu_hour());
      break;
    }
    case v1::RegistryEvent::kCopayPolicy: {
      const auto& p = e.copay_policy();
      copay_[p.institution_type()].Set(p.effective_from_ms(), p.copay_bp());
      break;
    }
    case v1::RegistryEvent::kCspContract: {
      const auto& c = e.csp_contract();
      own_use_caps_[c.csp_id()].Set(c.effective_from_ms(), c.own_use_cap_bp());
      own_use_excess_[c.csp_id()].Set(c.effective_from_ms(), static_cast<int>(c.own_use_excess()));
      break;
    }
    case v1::RegistryEvent::kProgrammePolicy: {
      const auto& p = e.programme_policy();
      policies_[p.program()].Set(p.effective_from_ms(), PolicyVersion{p});
      break;
    }
    case v1::RegistryEvent::kOverCapRelease:
      releases_[e.over_cap_release().allocation_id()] = e.over_cap_release().copay_bp();
      break;
    case v1::RegistryEvent::kPeriodClose: {
      auto period = base::ParsePeriod(e.period_close().period());
      if (period.ok()) last_closed_ = *period;
      break;
    }
    case v1::RegistryEvent::kRerating:            // settlement re-prices; nothing to remember
    case v1::RegistryEvent::kValidationSettings:  // the validator keeps them (ingest)
      break;
    case v1::RegistryEvent::kParty: {
      const auto& p = e.party();
      parties_[p.party_id()].Set(p.effective_from_ms(), Normalized(p));
      break;
    }
    case v1::RegistryEvent::kAlertSettings: {
      const auto& a = e.alert_settings();
      alert_settings_.Set(a.effective_from_ms(), AlertSettingsVersion{a});
      break;
    }
    case v1::RegistryEvent::kBudget: {
      const auto& b = e.budget();
      budgets_[BudgetKey{b.program(), b.fiscal_year(), b.call_id()}].Set(b.effective_from_ms(),
                                                                         BudgetVersion{b});
      break;
    }
    case v1::RegistryEvent::kBillingTerms: {
      const auto& t = e.billing_terms();
      billing_terms_.Set(t.effective_from_ms(), BillingTermsVersion{t});
      break;
    }
    case v1::RegistryEvent::kGpuPool: {
      const auto& p = e.gpu_pool();
      pools_[{p.csp_id(), p.program(), p.gpu_model()}].Set(p.effective_from_ms(), p.gpu_count());
      pool_pricing_[{p.csp_id(), p.program(), p.gpu_model()}].Set(
          p.effective_from_ms(), static_cast<int>(p.lease_pricing()));
      break;
    }
    case v1::RegistryEvent::BODY_NOT_SET:
      break;
  }
}

std::vector<const v1::Allocation*> Registry::AllocationsOn(v1::Program program,
                                                           v1::GpuModel model) const {
  std::vector<const v1::Allocation*> out;
  for (const auto& [id, a] : allocations_) {
    if (a.program() == program && (model == v1::GPU_MODEL_UNSPECIFIED || a.gpu_model() == model)) {
      out.push_back(&a);
    }
  }
  return out;
}

const std::vector<std::string>* Registry::AllocationIdsOnPool(const std::string& csp_id,
                                                              v1::Program program,
                                                              v1::GpuModel model) const {
  return Find(pool_allocations_, std::tuple<std::string, int, int>{csp_id, program, model});
}

const Timeline<uint32_t>* Registry::OwnUseCaps(const std::string& csp_id) const {
  return Find(own_use_caps_, csp_id);
}

const Timeline<uint32_t>* Registry::Grant(const std::string& allocation_id) const {
  return Find(allocation_gpus_, allocation_id);
}

bool Registry::NetsOwnUseExcessAt(const std::string& csp_id, int64_t t_ms) const {
  const Timeline<int>* t = Find(own_use_excess_, csp_id);
  return t != nullptr && t->At(t_ms).value_or(0) == v1::OWN_USE_EXCESS_NETTED;
}

bool Registry::ReservedAt(const std::string& csp_id, v1::Program program, v1::GpuModel model,
                          int64_t t_ms) const {
  const Timeline<int>* t =
      Find(pool_pricing_, std::tuple<std::string, int, int>{csp_id, program, model});
  return t != nullptr && t->At(t_ms).value_or(0) == v1::LEASE_PRICING_RESERVED;
}

const Timeline<int64_t>* Registry::Rates(v1::Program program, v1::GpuModel model) const {
  return Find(rates_, std::pair<int, int>{program, model});
}

const Timeline<uint32_t>* Registry::Pool(const std::string& csp_id, v1::Program program,
                                         v1::GpuModel model) const {
  return Find(pools_, std::tuple<std::string, int, int>{csp_id, program, model});
}

std::vector<std::tuple<std::string, v1::Program, v1::GpuModel>> Registry::Pools() const {
  std::vector<std::tuple<std::string, v1::Program, v1::GpuModel>> out;
  for (const auto& [key, timeline] : pools_) {
    out.emplace_back(std::get<0>(key), static_cast<v1::Program>(std::get<1>(key)),
                     static_cast<v1::GpuModel>(std::get<2>(key)));
  }
  return out;
}

const v1::Allocation* Registry::FindAllocation(const std::string& allocation_id) const {
  return Find(allocations_, allocation_id);
}

const std::string& Registry::CapHolder(const std::string& allocation_id) const {
  const std::string* first = Find(cap_holder_, allocation_id);
  return first == nullptr ? allocation_id : *first;
}

const std::string* Registry::TransferredFrom(const std::string& allocation_id) const {
  return Find(transferred_from_, allocation_id);
}

int64_t Registry::AllocationEndMs(const v1::Allocation& allocation) const {
  const int64_t* end = Find(allocation_end_, allocation.allocation_id());
  return end != nullptr ? *end : allocation.end_ms();
}

uint32_t Registry::MinGrantWithin(const v1::Allocation& allocation, int64_t from_ms,
                                  int64_t to_ms) const {
  const Timeline<uint32_t>* grant = Find(allocation_gpus_, allocation.allocation_id());
  if (grant == nullptr) return allocation.gpu_count();
  uint32_t least = grant->At(from_ms).value_or(allocation.gpu_count());
  std::vector<int64_t> changes;
  grant->ChangesWithin(from_ms, to_ms, &changes);
  for (int64_t t : changes) least = std::min(least, grant->At(t).value_or(least));
  return least;
}

std::optional<InstitutionVersion> Registry::InstitutionAt(const std::string& institution_id,
                                                          int64_t t_ms) const {
  const auto* timeline = Find(institutions_, institution_id);
  return timeline == nullptr ? std::nullopt : timeline->At(t_ms);
}

std::optional<int64_t> Registry::RateAt(v1::Program program, v1::GpuModel model,
                                        int64_t t_ms) const {
  const auto* timeline = Find(rates_, std::pair<int, int>{program, model});
  return timeline == nullptr ? std::nullopt : timeline->At(t_ms);
}

const v1::Party* Registry::PartyAt(const std::string& party_id, int64_t t_ms) const {
  const auto* timeline = Find(parties_, party_id);
  if (timeline == nullptr) return nullptr;
  const PartyVersion* v = timeline->Find(t_ms);
  return v == nullptr ? nullptr : &v->party;
}

const v1::BillingTerms* Registry::BillingTermsAt(int64_t t_ms) const {
  const BillingTermsVersion* v = billing_terms_.Find(t_ms);
  return v == nullptr ? nullptr : &v->terms;
}

const v1::ProgrammePolicy* Registry::PolicyAt(v1::Program program, int64_t t_ms) const {
  const auto* timeline = Find(policies_, static_cast<int>(program));
  if (timeline == nullptr) return nullptr;
  const PolicyVersion* v = timeline->Find(t_ms);
  return v == nullptr ? nullptr : &v->policy;
}

OverCapPricing Registry::OverCapAt(const v1::Allocation& allocation, v1::InstitutionType type,
                                   int64_t t_ms) const {
  OverCapPricing out;
  if (const v1::ProgrammePolicy* p = PolicyAt(allocation.program(), t_ms)) {
    for (const auto& r : p->over_cap_rules()) {
      if (r.institution_type() != type) continue;
      out.action = r.action();
      out.copay_bp = r.action() == v1::OVER_CAP_BILL_FULL ? 10'000 : r.copay_bp();
    }
  }
  if (out.action == v1::OVER_CAP_HOLD) {
    if (const uint32_t* released = Find(releases_, allocation.allocation_id())) {
      out.action = v1::OVER_CAP_BILL_AT;
      out.copay_bp = *released;
    }
  }
  return out;
}

std::optional<uint32_t> Registry::ReleaseOf(const std::string& allocation_id) const {
  const uint32_t* r = Find(releases_, allocation_id);
  return r == nullptr ? std::nullopt : std::optional<uint32_t>(*r);
}

std::optional<uint32_t> Registry::CopayAt(v1::InstitutionType type, int64_t t_ms) const {
  const auto* timeline = Find(copay_, static_cast<int>(type));
  return timeline == nullptr ? std::nullopt : timeline->At(t_ms);
}

std::optional<uint32_t> Registry::PoolAt(const std::string& csp_id, v1::Program program,
                                         v1::GpuModel model, int64_t t_ms) const {
  const auto* timeline = Find(pools_, std::tuple<std::string, int, int>{csp_id, program, model});
  return timeline == nullptr ? std::nullopt : timeline->At(t_ms);
}

std::vector<int64_t> Registry::PriceChangesWithin(const v1::Allocation& allocation,
                                                  v1::GpuModel model, int64_t lo_ms,
                                                  int64_t hi_ms) const {
  std::vector<int64_t> out;
  if (const auto* t = Find(rates_, std::pair<int, int>{allocation.program(), model})) {
    t->ChangesWithin(lo_ms, hi_ms, &out);
  }
  if (const auto* t = Find(institutions_, allocation.institution_id())) {
    t->ChangesWithin(lo_ms, hi_ms, &out);
  }
  for (const auto& [type, timeline] : copay_) timeline.ChangesWithin(lo_ms, hi_ms, &out);
  if (const auto* t = Find(policies_, static_cast<int>(allocation.program()))) {
    t->ChangesWithin(lo_ms, hi_ms, &out);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace gpuledger::ledger
