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

// Parses "YYYY-MM". Fails with INVALID_ARGUMENT and a message naming the input otherwise.
absl::StatusOr<Period> ParsePeriod(std::string_view text);

// The period that contains instant `utc_ms`.
Period PeriodOf(int64_t utc_ms);

// "2026-03-01T00:00:00.000+09:00": an instant as a person in Korea reads it.
std::string FormatKst(int64_t utc_ms);

// "2026-02-28T15:00:00.000Z".
std::string FormatUtc(int64_t utc_ms);

}  // namespace gpuledger::base
