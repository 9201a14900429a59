#include "base/period.h"

#include <charconv>
#include <chrono>
#include <cstdio>

#include "absl/strings/str_format.h"

namespace gpuledger::base {
namespace {

constexpr int64_t kMsPerDay = 86'400'000;

int64_t DaysFromCivil(int year, int month, int day) {
  using namespace std::chrono;
  const sys_days d =
      year_month_day{std::chrono::year{year}, std::chrono::month{static_cast<unsigned>(month)},
                     std::chrono::day{static_cast<unsigned>(day)}};
  return d.time_since_epoch().count();
}

// Splits a UTC-ms instant shifted by `offset_ms` into civil fields.
std::string FormatWithOffset(int64_t utc_ms, int64_t offset_ms, std::string_view suffix) {
  using namespace std::chrono;
  // Years 0001..9999 UTC print as dates; other instants (which no calendar of ours covers, and
  // whose local time might not fit int64) as their milliseconds.
  constexpr int64_t kEarliest = -62'135'596'800'000 + 86'400'000;
  constexpr int64_t kLatest = 253'402'300'799'999 - 86'400'000;
  if (utc_ms < kEarliest || utc_ms > kLatest) return absl::StrFormat("%dms", utc_ms);
  const int64_t local = utc_ms + offset_ms;
  int64_t days = local / kMsPerDay;
  int64_t ms_of_day = local % kMsPerDay;
  if (ms_of_day < 0) {
    ms_of_day += kMsPerDay;
    --days;
  }
  const year_month_day ymd{sys_days{std::chrono::days{days}}};
  return absl::StrFormat("%04d-%02u-%02uT%02d:%02d:%02d.%03d%s", static_cast<int>(ymd.year()),
                         static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                         ms_of_day / 3'600'000, ms_of_day / 60'000 % 60, ms_of_day / 1000 % 60,
                         ms_of_day % 1000, suffix);
}

}  // namespace

int64_t Period::StartMs() const { return DaysFromCivil(year, month, 1) * kMsPerDay - kKstOffsetMs; }

int64_t Period::EndMs() const { return Next().StartMs(); }

Period Period::Next() const { return month == 12 ? Period{year + 1, 1} : Period{year, month + 1}; }

std::string Period::ToString() const { return absl::StrFormat("%04d-%02d", year, month); }

absl::StatusOr<Period> ParsePeriod(std::string_view text) {
  int year = 0;
  int month = 0;
  auto parse = [](std::string_view digits, int* out) {
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), *out);
    return ec == std::errc() && end == digits.data() + digits.size();
  };
  if (text.size() != 7 || text[4] != '-' || !parse(text.substr(0, 4), &year) ||
      !parse(text.substr(5, 2), &month) || year < 1970 || month < 1 || month > 12) {
    return absl::InvalidArgumentError(
        absl::StrFormat("period '%s' is not a month of the form YYYY-MM (e.g. 2026-03)", text));
  }
  return Period{year, month};
}

bool OutsideKnownPeriods(int64_t start_ms, int64_t end_ms) {
  return start_ms < end_ms && (start_ms < kFirstPeriodStartMs || end_ms > kPeriodsEndMs);
}

Period PeriodOf(int64_t utc_ms) {
  using namespace std::chrono;
  // Beyond the known periods the civil calendar of <chrono> is out of its range.
  if (utc_ms < kFirstPeriodStartMs) return kFirstPeriod;
  if (utc_ms >= kPeriodsEndMs) return kLastPeriod;
  const int64_t local = utc_ms + kKstOffsetMs;
  int64_t days = local / kMsPerDay;
  if (local % kMsPerDay < 0) --days;
  const year_month_day ymd{sys_days{std::chrono::days{days}}};
  return Period{static_cast<int>(ymd.year()), static_cast<int>(static_cast<unsigned>(ymd.month()))};
}

std::string FormatKst(int64_t utc_ms) { return FormatWithOffset(utc_ms, kKstOffsetMs, "+09:00"); }

namespace {
std::chrono::year_month_day KstCivil(int64_t utc_ms, int add_days) {
  using namespace std::chrono;
  int64_t t = utc_ms < kFirstPeriodStartMs ? kFirstPeriodStartMs : utc_ms;
  if (t >= kPeriodsEndMs) t = kPeriodsEndMs - 1;
  const int64_t local = t + kKstOffsetMs;
  int64_t day = local / kMsPerDay;
  if (local % kMsPerDay < 0) --day;
  return year_month_day{sys_days{std::chrono::days{day + add_days}}};
}
}  // namespace

std::string KstDate(int64_t utc_ms, int add_days) {
  const auto ymd = KstCivil(utc_ms, add_days);
  return absl::StrFormat("%04d-%02u-%02u", static_cast<int>(ymd.year()),
                         static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()));
}

int KstYear(int64_t utc_ms) { return static_cast<int>(KstCivil(utc_ms, 0).year()); }

std::string FormatUtc(int64_t utc_ms) { return FormatWithOffset(utc_ms, 0, "Z"); }

}  // namespace gpuledger::base
