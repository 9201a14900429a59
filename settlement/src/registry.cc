#include "settlement/registry.h"

#include <algorithm>

namespace gpuledger::settlement {

namespace v1 = gpuledger::v1;

void Registry::Apply(const v1::RegistryEvent& e) {
  switch (e.body_case()) {
    case v1::RegistryEvent::kInstitution: {
      const auto& i = e.institution();
      institutions_[i.institution_id()].Set(i.effective_from_ms(),
                                            InstitutionVersion{i.name(), i.type()});
      break;
    }
    case v1::RegistryEvent::kAllocation:
      allocations_[e.allocation().allocation_id()] = e.allocation();
      break;
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
    case v1::RegistryEvent::kGpuPool: {
      const auto& p = e.gpu_pool();
      pools_[{p.csp_id(), p.program(), p.gpu_model()}].Set(p.effective_from_ms(), p.gpu_count());
      break;
    }
    case v1::RegistryEvent::BODY_NOT_SET:
      break;
  }
}

const v1::Allocation* Registry::FindAllocation(const std::string& allocation_id) const {
  auto it = allocations_.find(allocation_id);
  return it == allocations_.end() ? nullptr : &it->second;
}

std::optional<InstitutionVersion> Registry::InstitutionAt(const std::string& institution_id,
                                                          int64_t t_ms) const {
  auto it = institutions_.find(institution_id);
  if (it == institutions_.end()) return std::nullopt;
  return it->second.At(t_ms);
}

std::optional<int64_t> Registry::RateAt(v1::Program program, v1::GpuModel model,
                                        int64_t t_ms) const {
  auto it = rates_.find({program, model});
  if (it == rates_.end()) return std::nullopt;
  return it->second.At(t_ms);
}

std::optional<uint32_t> Registry::CopayAt(v1::InstitutionType type, int64_t t_ms) const {
  auto it = copay_.find(type);
  if (it == copay_.end()) return std::nullopt;
  return it->second.At(t_ms);
}

std::vector<int64_t> Registry::PriceChangesWithin(const v1::Allocation& allocation,
                                                  v1::GpuModel model, int64_t lo_ms,
                                                  int64_t hi_ms) const {
  std::vector<int64_t> out;
  if (auto it = rates_.find({allocation.program(), model}); it != rates_.end()) {
    it->second.ChangesWithin(lo_ms, hi_ms, &out);
  }
  if (auto it = institutions_.find(allocation.institution_id()); it != institutions_.end()) {
    it->second.ChangesWithin(lo_ms, hi_ms, &out);
  }
  for (const auto& [type, timeline] : copay_) timeline.ChangesWithin(lo_ms, hi_ms, &out);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace gpuledger::settlement
