// Billing periods: calendar months in Korea Standard Time (UTC+09:00, no daylight saving).
// All instants are integer milliseconds since the Unix epoch, UTC.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace gpuledger::base {

inline constexpr int64_t kKstOffsetMs = 9LL * 3'600'000;

struct Period {
  int year = 1970;  // 1970..9999
  int month = 1;    // 1..12
  friend constexpr auto operator<=>(const Period&, const Period&) = default;

  // First instant of the month, 00:00 KST on day 1, as UTC milliseconds.
  int64_t StartMs() const;
  // First instant of the next month (exclusive end of this one).
  int64_t EndMs() const;
  Period Next() const;
  // "2026-03".
  std::string ToString() const;
};

// The periods settlement knows: 1970-01 .. 9999-12 (KST), and the instants they cover,
// [kFirstPeriodStartMs, kPeriodsEndMs). Every loop over periods is bounded by them: at most
// kPeriodsMax iterations whatever the instants (an interval ending at the last int64
// millisecond must not keep a loop running for billions of months).
inline constexpr Period kFirstPeriod{1970, 1};
inline constexpr Period kLastPeriod{9999, 12};
inline constexpr int64_t kFirstPeriodStartMs = -kKstOffsetMs;  // 1970-01-01T00:00+09:00
// 10000-01-01T00:00+09:00: 2,932,897 days after the epoch, less the KST offset.
inline constexpr int64_t kPeriodsEndMs = 2'932'897LL * 86'400'000 - kKstOffsetMs;
inline constexpr int64_t kPeriodsMax = (9999 - 1970 + 1) * 12;

// Calls f(period, lo, hi) for each period that [start_ms, end_ms) touches, in order, with
// [lo, hi) the part inside it (never empty). Instants outside the known periods are skipped:
// the caller reports them (OutsideKnownPeriods).
template <typename F>
void ForEachPeriodWithin(int64_t start_ms, int64_t end_ms, F f);

// The parts of [start_ms, end_ms) before kFirstPeriodStartMs or from kPeriodsEndMs on.
bool OutsideKnownPeriods(int64_t start_ms, int64_t end_ms);

// Parses "YYYY-MM". Fails with INVALID_ARGUMENT and a message naming the input otherwise.
absl::StatusOr<Period> ParsePeriod(std::string_view text);

// The period that contains instant `utc_ms`; kFirstPeriod before it and kLastPeriod after it.
Period PeriodOf(int64_t utc_ms);

// "2026-03-01T00:00:00.000+09:00": an instant as a person in Korea reads it.
std::string FormatKst(int64_t utc_ms);

// The KST calendar date of `utc_ms` plus `add_days`, "2026-04-01" (clamped to the known
// periods' dates), and its year.
std::string KstDate(int64_t utc_ms, int add_days = 0);
int KstYear(int64_t utc_ms);

// "2026-02-28T15:00:00.000Z".
std::string FormatUtc(int64_t utc_ms);

template <typename F>
void ForEachPeriodWithin(int64_t start_ms, int64_t end_ms, F f) {
  const int64_t start = start_ms < kFirstPeriodStartMs ? kFirstPeriodStartMs : start_ms;
  const int64_t end = end_ms > kPeriodsEndMs ? kPeriodsEndMs : end_ms;
  if (start >= end) return;
  Period p = PeriodOf(start);
  for (int64_t n = 0; n < kPeriodsMax; ++n, p = p.Next()) {
    const int64_t lo = start > p.StartMs() ? start : p.StartMs();
    const int64_t hi = end < p.EndMs() ? end : p.EndMs();
    if (lo < hi) f(p, lo, hi);
    if (p.EndMs() >= end) return;
  }
}

}  // namespace gpuledger::base
