// Reference data as of a ledger position: institutions, allocations (with amendments), rate
// cards, co-pay policies, CSP contracts and GPU pools, each effective-dated. Built by applying
// accepted registry events in ledger order; used by ingest to check usage and by settlement to
// price it, so both see the same registry.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "base/period.h"
#include "gpuledger/v1/registry.pb.h"
#include "ledger/timeline.h"

namespace gpuledger::ledger {

struct InstitutionVersion {
  std::string name;
  gpuledger::v1::InstitutionType type = gpuledger::v1::INSTITUTION_TYPE_UNSPECIFIED;
  friend bool operator==(const InstitutionVersion&, const InstitutionVersion&) = default;
};

// A programme's policy as recorded (compared by its bytes: a second record at the same instant
// with other terms contradicts the first).
struct PolicyVersion {
  gpuledger::v1::ProgrammePolicy policy;
  friend bool operator==(const PolicyVersion& a, const PolicyVersion& b) {
    return a.policy.SerializeAsString() == b.policy.SerializeAsString();
  }
};

// A party or the billing terms as recorded (compared by their bytes, as policies are). A
// party's registration number is kept as its ten digits.
struct PartyVersion {
  gpuledger::v1::Party party;
  friend bool operator==(const PartyVersion& a, const PartyVersion& b) {
    return a.party.SerializeAsString() == b.party.SerializeAsString();
  }
};
struct BillingTermsVersion {
  gpuledger::v1::BillingTerms terms;
  friend bool operator==(const BillingTermsVersion& a, const BillingTermsVersion& b) {
    return a.terms.SerializeAsString() == b.terms.SerializeAsString();
  }
};

// A budget as recorded (compared by its bytes).
struct BudgetVersion {
  gpuledger::v1::Budget budget;
  friend bool operator==(const BudgetVersion& a, const BudgetVersion& b) {
    return a.budget.SerializeAsString() == b.budget.SerializeAsString();
  }
};
struct AlertSettingsVersion {
  gpuledger::v1::AlertSettings settings;
  friend bool operator==(const AlertSettingsVersion& a, const AlertSettingsVersion& b) {
    return a.settings.SerializeAsString() == b.settings.SerializeAsString();
  }
};
// A budget's identity: programme, fiscal year, call ("" for the programme's whole year).
using BudgetKey = std::tuple<int, uint32_t, std::string>;

// How usage beyond an allocation's cap is priced at an instant.
struct OverCapPricing {
  gpuledger::v1::OverCapAction action = gpuledger::v1::OVER_CAP_HOLD;
  uint32_t copay_bp = 0;  // for OVER_CAP_BILL_AT (10,000 for OVER_CAP_BILL_FULL)
};

// Why a registry event cannot be applied: a reason code and a detail for people.
struct RegistryProblem {
  std::string code;
  std::string detail;
};

// Reason codes of registry events (see docs/REASON_CODES.md).
inline constexpr char kRegistryConflict[] = "REGISTRY_CONFLICT";
inline constexpr char kUnknownInstitution[] = "UNKNOWN_INSTITUTION";
inline constexpr char kUnknownAllocation[] = "UNKNOWN_ALLOCATION";
inline constexpr char kInvalidAmendment[] = "INVALID_AMENDMENT";
inline constexpr char kGrantOverPool[] = "GRANT_OVER_POOL";
inline constexpr char kIneligibleInstitution[] = "INELIGIBLE_INSTITUTION";
inline constexpr char kOverServerLimit[] = "OVER_SERVER_LIMIT";
inline constexpr char kWindowTooLong[] = "WINDOW_TOO_LONG";
inline constexpr char kMissingAllocationMetadata[] = "MISSING_ALLOCATION_METADATA";
inline constexpr char kCopayOutOfBounds[] = "COPAY_OUT_OF_BOUNDS";
inline constexpr char kPeriodAlreadyClosed[] = "PERIOD_ALREADY_CLOSED";
inline constexpr char kPeriodCloseOutOfOrder[] = "PERIOD_CLOSE_OUT_OF_ORDER";
inline constexpr char kPeriodNotEnded[] = "PERIOD_NOT_ENDED";

// Not thread-safe; owned by one ingest loop or one settlement run.
class Registry {
 public:
  // Checks `event` (structurally valid) against the state: contradictions with what is
  // recorded, references to unknown institutions or allocations, impossible amendments, and
  // grants beyond a pool: an allocation, a resize or an extension that would take the GPUs
  // granted on a (CSP, program, model) pool, all its allocations together, above what the pool
  // holds at some instant (only where a pool record is in force: without one, capacity is not
  // known and usage on the allocation is checked against its grant alone).
  std::optional<RegistryProblem> Check(const gpuledger::v1::RegistryEvent& event) const;
  // Applies an accepted event. Events that Check refuses must not be applied.
  void Apply(const gpuledger::v1::RegistryEvent& event);

  const gpuledger::v1::Allocation* FindAllocation(const std::string& allocation_id) const;
  // The allocations on `program` of `model` (GPU_MODEL_UNSPECIFIED: of every model), in order of
  // allocation id.
  std::vector<const gpuledger::v1::Allocation*> AllocationsOn(gpuledger::v1::Program program,
                                                              gpuledger::v1::GpuModel model) const;
  // The ids of the allocations on a CSP's (program, model) pool, in the order announced (null:
  // none).
  const std::vector<std::string>* AllocationIdsOnPool(const std::string& csp_id,
                                                      gpuledger::v1::Program program,
                                                      gpuledger::v1::GpuModel model) const;
  // GPUs granted to an allocation over time, with its amendments (null: unknown allocation).
  const Timeline<uint32_t>* Grant(const std::string& allocation_id) const;
  // The allocation's exclusive end after every amendment so far (revocations, extensions,
  // transfers).
  int64_t AllocationEndMs(const gpuledger::v1::Allocation& allocation) const;
  // The allocation whose GPU-hour cap `allocation_id` draws on: the first of its chain of
  // transfers (AllocationTransfer), itself if it continues none. Usage of every allocation of
  // a chain counts against one cap.
  const std::string& CapHolder(const std::string& allocation_id) const;
  // The allocation that `allocation_id` continues after a transfer (null: none).
  const std::string* TransferredFrom(const std::string& allocation_id) const;
  // The fewest GPUs granted at any instant in [from_ms, to_ms).
  uint32_t MinGrantWithin(const gpuledger::v1::Allocation& allocation, int64_t from_ms,
                          int64_t to_ms) const;
  std::optional<InstitutionVersion> InstitutionAt(const std::string& institution_id,
                                                  int64_t t_ms) const;
  // Won per GPU-hour in force at t for (program, model).
  std::optional<int64_t> RateAt(gpuledger::v1::Program program, gpuledger::v1::GpuModel model,
                                int64_t t_ms) const;
  // The programme's policy in force at t (null: none recorded yet).
  const gpuledger::v1::ProgrammePolicy* PolicyAt(gpuledger::v1::Program program,
                                                 int64_t t_ms) const;
  // How the allocation's usage beyond its cap is priced at t, for an institution of `type`:
  // the over-cap rule of the programme's policy in force at t (OVER_CAP_HOLD without one); a
  // held allocation that the operator released (OverCapRelease) is billed at the release's
  // co-pay.
  OverCapPricing OverCapAt(const gpuledger::v1::Allocation& allocation,
                           gpuledger::v1::InstitutionType type, int64_t t_ms) const;
  // The co-pay of the operator's OverCapRelease of an allocation, if one is recorded.
  std::optional<uint32_t> ReleaseOf(const std::string& allocation_id) const;
  // Co-pay basis points in force at t for an institution type.
  std::optional<uint32_t> CopayAt(gpuledger::v1::InstitutionType type, int64_t t_ms) const;
  // GPUs a CSP hosts for (program, model) at t.
  std::optional<uint32_t> PoolAt(const std::string& csp_id, gpuledger::v1::Program program,
                                 gpuledger::v1::GpuModel model, int64_t t_ms) const;

  // Own-use cap of a CSP's contract, basis points, over time (null: no contract recorded).
  const Timeline<uint32_t>* OwnUseCaps(const std::string& csp_id) const;
  // Whether the CSP's contract in force at t nets the own-use excess against the subsidy.
  bool NetsOwnUseExcessAt(const std::string& csp_id, int64_t t_ms) const;
  // Whether the CSP's (program, model) pool record in force at t prices it per reserved
  // capacity (LEASE_PRICING_RESERVED).
  bool ReservedAt(const std::string& csp_id, gpuledger::v1::Program program,
                  gpuledger::v1::GpuModel model, int64_t t_ms) const;
  // Won per GPU-hour of (program, model) over time (null: no rate card recorded).
  const Timeline<int64_t>* Rates(gpuledger::v1::Program program,
                                 gpuledger::v1::GpuModel model) const;
  // GPUs a CSP hosts for (program, model) over time (null: no such pool).
  const Timeline<uint32_t>* Pool(const std::string& csp_id, gpuledger::v1::Program program,
                                 gpuledger::v1::GpuModel model) const;
  // Every (CSP, program, model) that has a pool record, in that order.
  std::vector<std::tuple<std::string, gpuledger::v1::Program, gpuledger::v1::GpuModel>> Pools()
      const;
  // The party record of `party_id` in force at t (null: none).
  const gpuledger::v1::Party* PartyAt(const std::string& party_id, int64_t t_ms) const;
  // The billing terms in force at t (null: none recorded yet).
  const gpuledger::v1::BillingTerms* BillingTermsAt(int64_t t_ms) const;
  // The alert settings in force at t (null: none recorded yet).
  const gpuledger::v1::AlertSettings* AlertSettingsAt(int64_t t_ms) const {
    const AlertSettingsVersion* v = alert_settings_.Find(t_ms);
    return v == nullptr ? nullptr : &v->settings;
  }
  // Every budget recorded, in key order, each with its versions (oldest first).
  const std::map<BudgetKey, Timeline<BudgetVersion>>& budgets() const { return budgets_; }
  // The last closed billing period, if any (periods close in order).
  std::optional<base::Period> last_closed() const { return last_closed_; }

  // Instants inside (lo, hi) where the price of an allocation's usage may change: its rate
  // card, its institution's type, any co-pay policy, or its programme's policy.
  std::vector<int64_t> PriceChangesWithin(const gpuledger::v1::Allocation& allocation,
                                          gpuledger::v1::GpuModel model, int64_t lo_ms,
                                          int64_t hi_ms) const;

 private:
  std::optional<RegistryProblem> CheckAllocation(const gpuledger::v1::Allocation& a) const;
  std::optional<RegistryProblem> CheckAmendment(const gpuledger::v1::AllocationAmendment& a) const;
  // A transfer of `from` (the amendment `a`): a new id, another CSP or institution, and the
  // continuing allocation checked as a grant from the transfer's date, `from` ending then.
  std::optional<RegistryProblem> CheckTransfer(const gpuledger::v1::Allocation& from,
                                               const gpuledger::v1::AllocationAmendment& a) const;
  // The allocation that continues `from` after the transfer `a`, and its grant over time.
  gpuledger::v1::Allocation Successor(const gpuledger::v1::Allocation& from,
                                      const gpuledger::v1::AllocationAmendment& a) const;
  Timeline<uint32_t> SuccessorGrant(const gpuledger::v1::Allocation& from, int64_t from_ms) const;
  // Where the allocation's window began: the start of the first allocation of its chain of
  // transfers (WINDOW_TOO_LONG counts from there).
  int64_t WindowStart(const gpuledger::v1::Allocation& a) const;
  std::optional<RegistryProblem> CheckCopayPolicy(const gpuledger::v1::CopayPolicy& p) const;
  std::optional<RegistryProblem> CheckProgrammePolicy(
      const gpuledger::v1::ProgrammePolicy& p) const;
  // INELIGIBLE_INSTITUTION if the allocation's institution type may not use its programme, under
  // the policy in force at the allocation's start.
  std::optional<RegistryProblem> CheckEligible(const gpuledger::v1::Allocation& a) const;
  // WINDOW_TOO_LONG if [a.start, end_ms) is longer than the policy in force at a.start allows.
  // MISSING_ALLOCATION_METADATA if the policy in force at a.start requires a call, agency and
  // project and `a` lacks one.
  std::optional<RegistryProblem> CheckMetadata(const gpuledger::v1::Allocation& a) const;
  std::optional<RegistryProblem> CheckWindow(const gpuledger::v1::Allocation& a,
                                             int64_t end_ms) const;
  // OVER_SERVER_LIMIT if giving `a` the grant `proposed` over [a.start, proposed_end) instead of
  // `current` (as in CheckGrantWithinPool) would take its institution over the programme's
  // server limit at an instant where it grants more than before.
  // An allocation taken to end earlier than recorded, for a check of the transfer that ends it.
  struct Ending {
    std::string_view allocation_id;
    int64_t end_ms;
  };
  // The allocation's end, or `ending`'s if it is the one ending.
  int64_t EndOf(const gpuledger::v1::Allocation& a, const Ending* ending) const;
  std::optional<RegistryProblem> CheckServers(const gpuledger::v1::Allocation& a,
                                              const Timeline<uint32_t>* current,
                                              int64_t current_end,
                                              const Timeline<uint32_t>& proposed,
                                              int64_t proposed_end,
                                              const Ending* ending = nullptr) const;
  // GRANT_OVER_POOL if giving allocation `a` the grant `proposed` over [a.start, proposed_end)
  // instead of `current` over [a.start, current_end) (null and a.start for a new allocation)
  // would exceed its pool at an instant where it grants more than before. `ending` (a transfer's
  // source) counts only until its new end.
  std::optional<RegistryProblem> CheckGrantWithinPool(const gpuledger::v1::Allocation& a,
                                                      const Timeline<uint32_t>* current,
                                                      int64_t current_end,
                                                      const Timeline<uint32_t>& proposed,
                                                      int64_t proposed_end,
                                                      const Ending* ending = nullptr) const;

  std::map<std::string, gpuledger::v1::Allocation> allocations_;
  std::map<std::string, int64_t> allocation_end_;              // after amendments
  std::map<std::string, Timeline<uint32_t>> allocation_gpus_;  // effective-dated grant
  std::map<std::string, Timeline<InstitutionVersion>> institutions_;
  std::map<std::pair<int, int>, Timeline<int64_t>> rates_;  // (program, model)
  std::map<int, Timeline<uint32_t>> copay_;                 // institution type
  std::map<std::string, Timeline<uint32_t>> own_use_caps_;  // csp id
  std::map<std::string, Timeline<int>> own_use_excess_;     // csp id → OwnUseExcess
  std::map<std::tuple<std::string, int, int>, Timeline<uint32_t>> pools_;    // csp, program, model
  std::map<std::tuple<std::string, int, int>, Timeline<int>> pool_pricing_;  // LeasePricing
  // Allocation ids by the pool they draw on (csp, program, model), in ledger order.
  std::map<std::tuple<std::string, int, int>, std::vector<std::string>> pool_allocations_;
  std::map<int, Timeline<PolicyVersion>> policies_;  // program
  // Allocation ids by (institution, program), in ledger order.
  std::map<std::pair<std::string, int>, std::vector<std::string>> institution_allocations_;
  std::map<std::string, uint32_t> releases_;               // allocation id -> co-pay bp
  std::map<std::string, Timeline<PartyVersion>> parties_;  // party id
  Timeline<BillingTermsVersion> billing_terms_;
  std::map<BudgetKey, Timeline<BudgetVersion>> budgets_;
  Timeline<AlertSettingsVersion> alert_settings_;
  // Transfers: a continuing allocation's id -> the first of its chain, and -> the one it
  // continues.
  std::map<std::string, std::string> cap_holder_;
  std::map<std::string, std::string> transferred_from_;
  std::map<std::string, std::string> transferred_to_;  // the reverse
  std::optional<base::Period> last_closed_;
};

}  // namespace gpuledger::ledger
