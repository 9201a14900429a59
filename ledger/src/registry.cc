#include "ledger/registry.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

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

}  // namespace

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
  Timeline<uint32_t> grant;
  grant.Set(a.start_ms(), a.gpu_count());
  return CheckGrantWithinPool(a, nullptr, a.start_ms(), grant, a.end_ms());
}

std::optional<RegistryProblem> Registry::CheckGrantWithinPool(const v1::Allocation& a,
                                                              const Timeline<uint32_t>* current,
                                                              int64_t current_end,
                                                              const Timeline<uint32_t>& proposed,
                                                              int64_t proposed_end) const {
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
      const int64_t other_end = AllocationEndMs(other);
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
      return CheckGrantWithinPool(*alloc, grant, end, *grant, a.new_end_ms());
    case v1::AllocationAmendment::kNewGpuCount: {
      if (a.new_gpu_count() == 0) {
        return RegistryProblem{kInvalidAmendment, "new_gpu_count must be at least 1"};
      }
      if (grant == nullptr) return std::nullopt;
      Timeline<uint32_t> resized = *grant;
      resized.Set(a.effective_from_ms(), a.new_gpu_count());
      return CheckGrantWithinPool(*alloc, grant, end, resized, end);
    }
    case v1::AllocationAmendment::kRevoke:
      return std::nullopt;
    case v1::AllocationAmendment::CHANGE_NOT_SET:
      break;
  }
  return RegistryProblem{kInvalidAmendment, "no change (new_end_ms, new_gpu_count or revoke)"};
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
    case v1::RegistryEvent::kCopayPolicy: {
      const auto& p = e.copay_policy();
      return Contradicts(
          Find(copay_, static_cast<int>(p.institution_type())), p.effective_from_ms(), p.copay_bp(),
          absl::StrCat("co-pay policy ", v1::InstitutionType_Name(p.institution_type())));
    }
    case v1::RegistryEvent::kCspContract: {
      const auto& c = e.csp_contract();
      return Contradicts(Find(own_use_caps_, c.csp_id()), c.effective_from_ms(), c.own_use_cap_bp(),
                         absl::StrCat("contract of ", c.csp_id()));
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
    case v1::RegistryEvent::kGpuPool: {
      const auto& p = e.gpu_pool();
      return Contradicts(
          Find(pools_, std::tuple<std::string, int, int>{p.csp_id(), p.program(), p.gpu_model()}),
          p.effective_from_ms(), p.gpu_count(), absl::StrCat("GPU pool of ", p.csp_id()));
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
      break;
    }
    case v1::RegistryEvent::kAllocationAmendment: {
      const auto& a = e.allocation_amendment();
      if (a.has_new_end_ms()) allocation_end_[a.allocation_id()] = a.new_end_ms();
      if (a.has_revoke()) allocation_end_[a.allocation_id()] = a.effective_from_ms();
      if (a.has_new_gpu_count()) {
        allocation_gpus_[a.allocation_id()].Set(a.effective_from_ms(), a.new_gpu_count());
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
      break;
    }
    case v1::RegistryEvent::kPeriodClose: {
      auto period = base::ParsePeriod(e.period_close().period());
      if (period.ok()) last_closed_ = *period;
      break;
    }
    case v1::RegistryEvent::kGpuPool: {
      const auto& p = e.gpu_pool();
      pools_[{p.csp_id(), p.program(), p.gpu_model()}].Set(p.effective_from_ms(), p.gpu_count());
      break;
    }
    case v1::RegistryEvent::BODY_NOT_SET:
      break;
  }
}

const Timeline<uint32_t>* Registry::OwnUseCaps(const std::string& csp_id) const {
  return Find(own_use_caps_, csp_id);
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
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace gpuledger::ledger
