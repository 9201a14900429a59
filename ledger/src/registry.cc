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
  switch (a.change_case()) {
    case v1::AllocationAmendment::kNewEndMs:
      if (a.new_end_ms() <= a.effective_from_ms()) {
        return RegistryProblem{kInvalidAmendment, "new_end_ms must be after effective_from_ms"};
      }
      return std::nullopt;
    case v1::AllocationAmendment::kNewGpuCount:
      if (a.new_gpu_count() == 0) {
        return RegistryProblem{kInvalidAmendment, "new_gpu_count must be at least 1"};
      }
      return std::nullopt;
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
