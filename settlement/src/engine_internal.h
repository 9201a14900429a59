// Helpers shared by the settlement engine's files (engine.cc, rating.cc, caps_credits.cc,
// close.cc, documents.cc): GPU-ms arithmetic, pricing a line, checked sums of totals, and the
// names of documents in `errors`. Private to the settlement module.
#pragma once

#include <algorithm>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "base/money.h"
#include "base/period.h"
#include "base/status.h"
#include "gpuledger/v1/settlement.pb.h"
#include "keys.h"
#include "ledger/registry.h"
#include "settlement/store.h"

namespace gpuledger::settlement {

namespace v1 = gpuledger::v1;
using base::Period;

namespace internal {

using keys::DecodeLine;
using keys::DecodePool;
using keys::EncodeLine;
using keys::KeyBuilder;
using keys::KeyReader;
using keys::LineId;
using keys::LineKey;
using keys::OutageRest;
using keys::PoolFields;
using keys::PoolRest;

// The outage-credit line of a usage or beyond-cap line.
// The credit line of a usage line. Held and refused usage is worth 0 won, so is its credit: a
// credit line at rate 0 (its GPU-ms shown, no money).
inline std::string CreditKeyOf(const std::string& usage_key) {
  LineId id;
  if (!DecodeLine(usage_key, &id)) return usage_key;  // never: we wrote it
  if (id.kind == v1::LINE_KIND_HELD || id.kind == v1::LINE_KIND_REFUSED) id.rate = 0;
  id.kind = v1::LINE_KIND_OUTAGE_CREDIT;
  return EncodeLine(id);
}

// The line of usage beyond its allocation's cap, by the over-cap rule in force: held or
// refused (0 won, co-pay 0), or billed at the rule's (or the release's) co-pay.
inline void PriceBeyondCap(const ledger::OverCapPricing& rule, LineId* line) {
  switch (rule.action) {
    case v1::OVER_CAP_REFUSE:
      line->kind = v1::LINE_KIND_REFUSED;
      line->copay_bp = 0;
      return;
    case v1::OVER_CAP_BILL_AT:
    case v1::OVER_CAP_BILL_FULL:
      line->kind = v1::LINE_KIND_BEYOND_CAP;
      line->copay_bp = rule.copay_bp;
      return;
    default:
      line->kind = v1::LINE_KIND_HELD;
      line->copay_bp = 0;
      return;
  }
}

// The GPU-ms of `gpus` GPUs over [start_ms, end_ms): 128 bits never overflow here.
inline __int128 GpuMsOf(int64_t gpus, int64_t start_ms, int64_t end_ms) {
  return static_cast<__int128>(gpus) *
         (static_cast<__int128>(end_ms) - static_cast<__int128>(start_ms));
}

inline __int128 PartGpuMs(const v1::StoredPart& part) {
  return keys::DecodeI128(part.gpu_ms_i128()).value_or(0);  // we wrote it: 16 bytes
}

// The allocation index: x/ allocation i64 start source event → i64 end, in order of start, and
// xl/ allocation → the longest interval it ever indexed (so that a scan by time knows how far
// back an interval overlapping an instant can start).
struct IndexedInterval {
  std::string key;  // i/ source event
  int64_t start_ms = 0;
  int64_t end_ms = 0;
};

inline int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t out = 0;
  if (__builtin_add_overflow(a, b, &out)) return b > 0 ? INT64_MAX : INT64_MIN;
  return out;
}

// Money numerators (GPU-ms × won per GPU-hour) are kept below 2^100, far above any real month
// (10^6 GPUs × a month × 10^8 won is under 2^80) and far below where sums of them could
// overflow 128 bits; a hostile value saturates there, and the document that would show it fails
// as "does not fit" instead.
inline constexpr __int128 kMoneyNumeratorMax = static_cast<__int128>(1) << 100;

// a × b, clamped to ±kMoneyNumeratorMax. Checked by division, not __builtin_mul_overflow: on
// 128 bits clang calls __muloti4 from compiler-rt, which a libgcc link does not have.
inline __int128 SaturatingMul(__int128 a, int64_t b) {
  if (a == 0 || b == 0) return 0;
  const bool negative = (a < 0) != (b < 0);
  const __int128 abs_a = a < 0 ? -a : a;  // callers pass |a| < 2^127
  const __int128 abs_b = b < 0 ? -static_cast<__int128>(b) : static_cast<__int128>(b);
  if (abs_a > kMoneyNumeratorMax / abs_b) {
    return negative ? -kMoneyNumeratorMax : kMoneyNumeratorMax;
  }
  const __int128 product = abs_a * abs_b;  // at most 2^100
  return negative ? -product : product;
}

inline __int128 SaturatingAdd(__int128 a, __int128 b) {
  const __int128 out = a + b;  // both within ±2^100: cannot overflow
  return std::clamp(out, -kMoneyNumeratorMax, kMoneyNumeratorMax);
}

// The intervals of an allocation that start in [from_ms, to_ms), in order of start.
inline std::vector<IndexedInterval> IndexedStarting(Store* store, const std::string& allocation_id,
                                                    int64_t from_ms, int64_t to_ms) {
  const std::string prefix = KeyBuilder(keys::kAllocationIndex).Str(allocation_id).Take();
  std::vector<IndexedInterval> out;
  store->Scan(prefix, KeyBuilder(prefix).I64(from_ms).key(),
              [&](std::string_view key, std::string_view value) {
                KeyReader k(key.substr(prefix.size()));
                KeyReader v(value);
                IndexedInterval e;
                if (!k.I64(&e.start_ms) || !v.I64(&e.end_ms)) return true;  // never: we wrote it
                if (e.start_ms >= to_ms) return false;
                e.key = absl::StrCat(keys::kInterval, std::string(k.rest()));
                out.push_back(std::move(e));
                return true;
              });
  return out;
}

// The intervals of an allocation that overlap [from_ms, to_ms), in order of start.
inline std::vector<IndexedInterval> IndexedOverlapping(Store* store,
                                                       const std::string& allocation_id,
                                                       int64_t from_ms, int64_t to_ms) {
  int64_t longest = 0;
  if (auto v = store->Get(KeyBuilder(keys::kLongestIndexed).Str(allocation_id).key())) {
    KeyReader r(*v);
    if (!r.I64(&longest)) longest = 0;  // never: we wrote it
  }
  std::vector<IndexedInterval> out =
      IndexedStarting(store, allocation_id, SaturatingAdd(from_ms, -longest), to_ms);
  std::erase_if(out, [&](const IndexedInterval& e) { return e.end_ms <= from_ms; });
  return out;
}

// The keys of the stored intervals of an allocation.
inline std::vector<std::string> IntervalKeysOf(Store* store, const std::string& allocation_id) {
  std::vector<std::string> out;
  for (auto& e : IndexedStarting(store, allocation_id, INT64_MIN, INT64_MAX)) {
    out.push_back(std::move(e.key));
  }
  return out;
}

inline std::string OutsideWhy(std::string_view what) {
  return absl::StrCat(std::string(what), " outside the periods settlement knows (",
                      base::kFirstPeriod.ToString(), " to ", base::kLastPeriod.ToString(),
                      " KST) is not counted");
}

// List price, co-pay and subsidy of a line; held, refused and unpriced usage is worth 0 won to
// anyone.
inline absl::Status Price(v1::InvoiceLine* line) {
  if (line->kind() == v1::LINE_KIND_HELD || line->kind() == v1::LINE_KIND_REFUSED ||
      line->kind() == v1::LINE_KIND_UNPRICED) {
    line->set_list_krw(0);
    line->set_copay_krw(0);
    line->set_subsidy_krw(0);
    return absl::OkStatus();
  }
  GPULEDGER_ASSIGN_OR_RETURN(base::Krw list, base::ListPrice(base::GpuMs{line->gpu_ms()},
                                                             base::Krw{line->krw_per_gpu_hour()}));
  GPULEDGER_ASSIGN_OR_RETURN(base::Krw copay, base::ApplyBasisPoints(list, line->copay_bp()));
  line->set_list_krw(list.won);
  line->set_copay_krw(copay.won);
  GPULEDGER_ASSIGN_OR_RETURN(int64_t subsidy,
                             base::CheckedSub(list.won, copay.won, "the line's subsidy"));
  line->set_subsidy_krw(subsidy);
  return absl::OkStatus();
}

inline absl::Status AddTotals(v1::Totals* t, const v1::Totals& o) {
  GPULEDGER_ASSIGN_OR_RETURN(int64_t gpu_ms, base::CheckedAdd(t->gpu_ms(), o.gpu_ms(), "GPU-ms"));
  GPULEDGER_ASSIGN_OR_RETURN(int64_t list,
                             base::CheckedAdd(t->list_krw(), o.list_krw(), "the list total"));
  GPULEDGER_ASSIGN_OR_RETURN(int64_t copay,
                             base::CheckedAdd(t->copay_krw(), o.copay_krw(), "the co-pay total"));
  GPULEDGER_ASSIGN_OR_RETURN(
      int64_t subsidy, base::CheckedAdd(t->subsidy_krw(), o.subsidy_krw(), "the subsidy total"));
  t->set_gpu_ms(gpu_ms);
  t->set_list_krw(list);
  t->set_copay_krw(copay);
  t->set_subsidy_krw(subsidy);
  return absl::OkStatus();
}

inline v1::Totals TotalsOf(const v1::InvoiceLine& l) {
  v1::Totals t;
  t.set_gpu_ms(l.gpu_ms());
  t.set_list_krw(l.list_krw());
  t.set_copay_krw(l.copay_krw());
  t.set_subsidy_krw(l.subsidy_krw());
  return t;
}

inline absl::Status AddTo(v1::Totals* t, const v1::InvoiceLine& l) {
  return AddTotals(t, TotalsOf(l));
}

inline bool IsZero(const v1::InvoiceLine& l) {
  return l.gpu_ms() == 0 && l.list_krw() == 0 && l.copay_krw() == 0 && l.subsidy_krw() == 0;
}

inline absl::StatusOr<int64_t> DivRound(__int128 num, int64_t den) {
  return base::DivRoundHalfAwayFromZero(num, den);
}

// A failed sum or price of one document: the first reason is kept.
inline void NoteError(std::map<std::string, std::string>* errors, const std::string& document,
                      const absl::Status& status) {
  if (status.ok()) return;
  errors->emplace(document, std::string(status.message()));
}

inline std::string InvoiceDoc(std::string_view institution_id) {
  return absl::StrCat("invoice/", std::string(institution_id));
}
// An institution's lines of a period that owe nothing (no invoice issued).
inline std::string UsageDoc(std::string_view institution_id) {
  return absl::StrCat("usage/", std::string(institution_id));
}
inline std::string StatementDoc(std::string_view csp_id) {
  return absl::StrCat("statement/", std::string(csp_id));
}
inline std::string ProgramDoc(int program) {
  return absl::StrCat("program/", v1::Program_Name(static_cast<v1::Program>(program)));
}

}  // namespace internal
}  // namespace gpuledger::settlement
