// Reference data as of a ledger position: institutions, allocations, rate cards, co-pay
// policies, CSP contracts and GPU pools, each effective-dated. Built by applying accepted
// registry events in ledger order.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "gpuledger/v1/registry.pb.h"
#include "settlement/timeline.h"

namespace gpuledger::settlement {

struct InstitutionVersion {
  std::string name;
  gpuledger::v1::InstitutionType type = gpuledger::v1::INSTITUTION_TYPE_UNSPECIFIED;
};

// Not thread-safe; owned by one settlement run.
class Registry {
 public:
  void Apply(const gpuledger::v1::RegistryEvent& event);

  const gpuledger::v1::Allocation* FindAllocation(const std::string& allocation_id) const;
  std::optional<InstitutionVersion> InstitutionAt(const std::string& institution_id,
                                                  int64_t t_ms) const;
  // Won per GPU-hour in force at t for (program, model).
  std::optional<int64_t> RateAt(gpuledger::v1::Program program, gpuledger::v1::GpuModel model,
                                int64_t t_ms) const;
  // Co-pay basis points in force at t for an institution type.
  std::optional<uint32_t> CopayAt(gpuledger::v1::InstitutionType type, int64_t t_ms) const;

  // Instants inside (lo, hi) where the price of an allocation's usage may change: its rate
  // card, its institution's type, or any co-pay policy.
  std::vector<int64_t> PriceChangesWithin(const gpuledger::v1::Allocation& allocation,
                                          gpuledger::v1::GpuModel model, int64_t lo_ms,
                                          int64_t hi_ms) const;

 private:
  std::map<std::string, gpuledger::v1::Allocation> allocations_;
  std::map<std::string, Timeline<InstitutionVersion>> institutions_;
  std::map<std::pair<int, int>, Timeline<int64_t>> rates_;                 // (program, model)
  std::map<int, Timeline<uint32_t>> copay_;                                // institution type
  std::map<std::string, Timeline<uint32_t>> own_use_caps_;                 // csp id
  std::map<std::tuple<std::string, int, int>, Timeline<uint32_t>> pools_;  // csp, program, model
};

}  // namespace gpuledger::settlement
