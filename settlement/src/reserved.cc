// Reservations: leased pools priced per reserved capacity (docs/SETTLEMENT.md, "Reserved
// capacity"). A reservation is computed when a statement is drafted, from the registry (pool
// records, rate cards) and the accepted outages as they are then; a closed month's reservation
// is what its statement billed (br/), and any change since comes as an adjustment row on the
// first open month's statement.

#include <algorithm>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "engine_internal.h"
#include "settlement/engine.h"

namespace gpuledger::settlement {

using namespace internal;  // NOLINT: the engine's own helpers

std::vector<PoolOutage> Engine::OutagesOf(const std::string& csp) const {
  std::vector<PoolOutage> out;
  store_->Scan(KeyBuilder(keys::kOutageById).Str(csp).key(),
               [&](std::string_view, std::string_view value) {
                 v1::StoredOutageEvent e;
                 if (!e.ParseFromArray(value.data(), static_cast<int>(value.size()))) return true;
                 const v1::OutageInterval& o = e.outage();
                 PoolOutage p{o.program(), o.gpu_model(), o.start_ms(), o.end_ms(), o.gpu_count()};
                 // An allocation's outage is on its allocation's pool (as CountOutage counts it).
                 if (!o.allocation_id().empty()) {
                   if (const v1::Allocation* a = registry_.FindAllocation(o.allocation_id())) {
                     p.program = a->program();
                     p.model = a->gpu_model();
                   }
                 }
                 if (p.start_ms < p.end_ms && p.gpus > 0) out.push_back(p);
                 return true;
               });
  return out;
}

absl::StatusOr<std::optional<v1::ReservedRow>> Engine::ReservedRowFor(
    const std::string& csp, int program, int model, Period period,
    const std::vector<PoolOutage>& outages) const {
  const auto prog = static_cast<v1::Program>(program);
  const auto gpu_model = static_cast<v1::GpuModel>(model);
  if (!registry_.ReservedAt(csp, prog, gpu_model, period.EndMs() - 1)) return std::nullopt;
  const auto* pool = registry_.Pool(csp, prog, gpu_model);
  const auto* rates = registry_.Rates(prog, gpu_model);
  const int64_t lo = period.StartMs();
  const int64_t hi = period.EndMs();
  // Cut the month where the pool's size, the rate or the GPUs out of service change.
  std::vector<PoolOutage> mine;
  std::vector<int64_t> cuts{lo, hi};
  for (const PoolOutage& o : outages) {
    if (o.program != program || o.model != model || o.end_ms <= lo || o.start_ms >= hi) continue;
    mine.push_back(o);
    if (o.start_ms > lo) cuts.push_back(o.start_ms);
    if (o.end_ms < hi) cuts.push_back(o.end_ms);
  }
  if (pool != nullptr) pool->ChangesWithin(lo, hi, &cuts);
  if (rates != nullptr) rates->ChangesWithin(lo, hi, &cuts);
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  __int128 reserved = 0, out_of_service = 0, unpriced = 0, numerator = 0;
  for (size_t i = 0; i + 1 < cuts.size(); ++i) {
    const int64_t a = cuts[i];
    const int64_t b = cuts[i + 1];
    const int64_t gpus = pool != nullptr ? pool->At(a).value_or(0) : 0;
    int64_t out = 0;
    for (const PoolOutage& o : mine) {
      if (o.start_ms <= a && o.end_ms > a) out = std::min<int64_t>(gpus, out + o.gpus);
    }
    reserved += GpuMsOf(gpus, a, b);
    out_of_service += GpuMsOf(out, a, b);
    const __int128 charged = GpuMsOf(gpus - out, a, b);
    const std::optional<int64_t> rate = rates != nullptr ? rates->At(a) : std::nullopt;
    if (rate) {
      numerator = SaturatingAdd(numerator, SaturatingMul(charged, *rate));
    } else {
      unpriced += charged;
    }
  }
  v1::ReservedRow row;
  row.set_program(prog);
  row.set_gpu_model(gpu_model);
  GPULEDGER_ASSIGN_OR_RETURN(int64_t r, base::CheckedNarrow(reserved, "reserved GPU-ms"));
  GPULEDGER_ASSIGN_OR_RETURN(int64_t o,
                             base::CheckedNarrow(out_of_service, "GPU-ms out of service"));
  GPULEDGER_ASSIGN_OR_RETURN(int64_t u, base::CheckedNarrow(unpriced, "unpriced reserved GPU-ms"));
  GPULEDGER_ASSIGN_OR_RETURN(int64_t charge, DivRound(numerator, base::kMsPerHour));
  row.set_reserved_gpu_ms(r);
  row.set_out_of_service_gpu_ms(o);
  row.set_charged_gpu_ms(r - o);  // o ≤ r: at most the pool's GPUs are out at any instant
  row.set_unpriced_gpu_ms(u);
  row.set_charge_krw(charge);
  return row;
}

absl::StatusOr<std::vector<v1::ReservedRow>> Engine::ReservationAdjustments(
    const std::string& csp, const std::vector<PoolOutage>& outages) const {
  std::vector<v1::ReservedRow> out;
  for (const std::string& closed : closed_) {
    GPULEDGER_ASSIGN_OR_RETURN(Period period, base::ParsePeriod(closed));
    // Every leased pool of the CSP, and every pool billed a reservation for that month.
    std::set<std::pair<int, int>> pools;
    for (const auto& [c, program, model] : registry_.Pools()) {
      if (c == csp && program != v1::GOV_ADVANCED) pools.insert({program, model});
    }
    std::map<std::pair<int, int>, v1::ReservedRow> billed;
    const std::string prefix = KeyBuilder(keys::kBilledReserved).Str(closed).Str(csp).Take();
    store_->Scan(prefix, [&](std::string_view, std::string_view value) {
      v1::ReservedRow b;
      if (b.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
        billed[{b.program(), b.gpu_model()}] = b;
        pools.insert({b.program(), b.gpu_model()});
      }
      return true;
    });
    for (const auto& [program, model] : pools) {
      GPULEDGER_ASSIGN_OR_RETURN(auto now, ReservedRowFor(csp, program, model, period, outages));
      const v1::ReservedRow was =
          billed.contains({program, model}) ? billed[{program, model}] : v1::ReservedRow{};
      const v1::ReservedRow is = now.value_or(v1::ReservedRow{});
      v1::ReservedRow d;
      d.set_program(static_cast<v1::Program>(program));
      d.set_gpu_model(static_cast<v1::GpuModel>(model));
      d.set_adjusts_period(closed);
      // Each side fitted 64 bits on its own; a difference of two such values may not.
      GPULEDGER_ASSIGN_OR_RETURN(
          int64_t reserved,
          base::CheckedSub(is.reserved_gpu_ms(), was.reserved_gpu_ms(), "reserved GPU-ms"));
      GPULEDGER_ASSIGN_OR_RETURN(
          int64_t out_of_service,
          base::CheckedSub(is.out_of_service_gpu_ms(), was.out_of_service_gpu_ms(),
                           "GPU-ms out of service"));
      GPULEDGER_ASSIGN_OR_RETURN(
          int64_t charged,
          base::CheckedSub(is.charged_gpu_ms(), was.charged_gpu_ms(), "charged GPU-ms"));
      GPULEDGER_ASSIGN_OR_RETURN(
          int64_t unpriced,
          base::CheckedSub(is.unpriced_gpu_ms(), was.unpriced_gpu_ms(), "unpriced GPU-ms"));
      GPULEDGER_ASSIGN_OR_RETURN(int64_t charge,
                                 base::CheckedSub(is.charge_krw(), was.charge_krw(), "the charge"));
      if (reserved == 0 && out_of_service == 0 && charged == 0 && unpriced == 0 && charge == 0) {
        continue;
      }
      d.set_reserved_gpu_ms(reserved);
      d.set_out_of_service_gpu_ms(out_of_service);
      d.set_charged_gpu_ms(charged);
      d.set_unpriced_gpu_ms(unpriced);
      d.set_charge_krw(charge);
      d.set_subsidy_krw(charge);  // the co-pay of the month's usage does not change
      out.push_back(std::move(d));
    }
  }
  return out;
}

}  // namespace gpuledger::settlement
