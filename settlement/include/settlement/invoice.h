// Co-pay invoices: what each institution owes for a period, and what the state pays.
//
// The rules (docs/SETTLEMENT.md): usage is split at the period's bounds (months in KST) and at
// every rate-card, co-pay-policy and institution-type change; each slice is priced at what is
// in force at its start; slices with the same (allocation, GPU model, rate, co-pay rate) form
// one line; per line list_krw = round(gpu_ms × rate / 3,600,000),
// copay_krw = round(list_krw × copay_bp / 10,000), subsidy_krw = list_krw − copay_krw, with
// rounding half away from zero; totals are sums of lines; VAT is applied once to the co-pay
// total.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/money.h"
#include "base/period.h"
#include "gpuledger/v1/common.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ledger/ledger.h"
#include "ledger/registry.h"

namespace gpuledger::settlement {

enum class LineKind {
  kUsage,         // usage within the allocation's GPU-hour cap (or with no cap)
  kBeyondCap,     // usage beyond the cap, counted in ledger order: co-pay 100%
  kOutageCredit,  // usage during a declared outage of the allocation: credited (negative)
};

// "usage", "beyond_cap", "outage_credit".
const char* LineKindName(LineKind kind);

struct InvoiceLine {
  std::string allocation_id;
  LineKind kind = LineKind::kUsage;
  gpuledger::v1::Program program = gpuledger::v1::PROGRAM_UNSPECIFIED;
  gpuledger::v1::GpuModel gpu_model = gpuledger::v1::GPU_MODEL_UNSPECIFIED;
  gpuledger::v1::InstitutionType institution_type = gpuledger::v1::INSTITUTION_TYPE_UNSPECIFIED;
  base::Krw krw_per_gpu_hour;
  int64_t copay_bp = 0;
  base::GpuMs gpu_ms;
  base::Krw list;
  base::Krw copay;
  base::Krw subsidy;
};

struct Invoice {
  std::string institution_id;
  std::string institution_name;
  std::vector<InvoiceLine> lines;  // sorted by (allocation, model, rate, co-pay rate)
  base::GpuMs gpu_ms;
  base::Krw list;
  base::Krw copay;
  base::Krw subsidy;
  int64_t vat_bp = 0;
  base::Krw vat;         // round(copay × vat_bp / 10,000)
  base::Krw amount_due;  // copay + vat
};

// Usage that could not be priced, with why; listed on the run so that nothing vanishes.
struct Unpriced {
  uint64_t seq = 0;
  std::string source_id;
  std::string event_id;
  std::string why;
};

struct SettlementRun {
  base::Period period;
  uint64_t covered_seq = 0;        // ledger entries 1..covered_seq were read
  std::vector<Invoice> invoices;   // sorted by institution id
  std::vector<Unpriced> unpriced;  // in ledger order
  base::GpuMs gpu_ms;
  base::Krw list;
  base::Krw copay;
  base::Krw subsidy;
};

struct SettleOptions {
  // VAT on the co-pay total, basis points. Default: 1,000 (10%).
  int64_t vat_bp = 1'000;
};

// Prices one period from events applied in ledger order. Not thread-safe.
class Rater {
 public:
  explicit Rater(base::Period period, SettleOptions options = {});

  void ApplyRegistry(const gpuledger::v1::RegistryEvent& event);
  // An accepted usage event of CSP `source_id` at ledger position `seq`.
  void ApplyUsage(uint64_t seq, const std::string& source_id,
                  const gpuledger::v1::UsageEvent& event);
  absl::StatusOr<SettlementRun> Finish(uint64_t covered_seq) const;

 private:
  struct Recorded {
    uint64_t seq;
    std::string source_id;
    std::string event_id;
    gpuledger::v1::UsageInterval interval;
  };
  base::Period period_;
  SettleOptions options_;
  ledger::Registry registry_;
  struct Outage {
    int64_t start_ms;
    int64_t end_ms;
    uint32_t gpus;
  };
  // Live usage intervals by (CSP, event id); a correction replaces or removes one.
  std::map<std::pair<std::string, std::string>, Recorded> usage_;
  // Declared outages by allocation.
  std::map<std::string, std::vector<Outage>> outages_;
  std::vector<Unpriced> unpriced_;
};

// Reads the ledger from seq 1 to its head and prices `period`.
absl::StatusOr<SettlementRun> SettlePeriod(const ledger::Ledger& ledger, base::Period period,
                                           const SettleOptions& options);

}  // namespace gpuledger::settlement
