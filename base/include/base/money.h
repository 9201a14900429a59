// Money and quantity types. Money is whole Korean won in an int64; quantity is integer
// GPU-milliseconds. No floating point ever touches either.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace gpuledger::base {

// An amount in whole Korean won. May be negative (adjustments, credits).
struct Krw {
  int64_t won = 0;
  friend constexpr auto operator<=>(Krw, Krw) = default;
  constexpr Krw operator+(Krw o) const { return Krw{won + o.won}; }
  constexpr Krw operator-(Krw o) const { return Krw{won - o.won}; }
  constexpr Krw operator-() const { return Krw{-won}; }
  Krw& operator+=(Krw o) {
    won += o.won;
    return *this;
  }
};

// A quantity of GPU time: GPU count × duration, in milliseconds.
struct GpuMs {
  int64_t ms = 0;
  friend constexpr auto operator<=>(GpuMs, GpuMs) = default;
  constexpr GpuMs operator+(GpuMs o) const { return GpuMs{ms + o.ms}; }
  constexpr GpuMs operator-(GpuMs o) const { return GpuMs{ms - o.ms}; }
  GpuMs& operator+=(GpuMs o) {
    ms += o.ms;
    return *this;
  }
};

inline constexpr int64_t kMsPerHour = 3'600'000;
inline constexpr int64_t kBasisPointsPerUnit = 10'000;

// The one rounding rule: numerator / denominator rounded to the nearest integer, ties away
// from zero (so 2.5 -> 3 and -2.5 -> -3: a reversal negates an amount exactly).
// `denominator` must be positive. Fails with OUT_OF_RANGE if the result does not fit int64.
absl::StatusOr<int64_t> DivRoundHalfAwayFromZero(__int128 numerator, int64_t denominator);

// list_krw = round(gpu_ms × krw_per_gpu_hour / 3,600,000).
absl::StatusOr<Krw> ListPrice(GpuMs quantity, Krw per_gpu_hour);

// share = round(amount × basis_points / 10,000). Used for co-pay and VAT.
absl::StatusOr<Krw> ApplyBasisPoints(Krw amount, int64_t basis_points);

// share = amount × basis_points / 10,000 truncated toward zero (Korean 절사, for VAT where the
// billing terms ask for it).
absl::StatusOr<Krw> ApplyBasisPointsTowardZero(Krw amount, int64_t basis_points);

// Checked arithmetic for every money and quantity sum: the result, or OUT_OF_RANGE naming
// `what` when it does not fit in 64 bits. Never wraps (signed overflow is undefined behaviour
// in C++; a wrapped sum is a negative price).
absl::StatusOr<int64_t> CheckedAdd(int64_t a, int64_t b, std::string_view what);
absl::StatusOr<int64_t> CheckedSub(int64_t a, int64_t b, std::string_view what);
absl::StatusOr<int64_t> CheckedMul(int64_t a, int64_t b, std::string_view what);
// A 128-bit intermediate (a sum of GPU-ms) narrowed to 64 bits.
absl::StatusOr<int64_t> CheckedNarrow(__int128 v, std::string_view what);

// "1,234,567" (with a leading '-' for negatives): how people read won.
std::string FormatWon(Krw amount);

// GPU-hours with exactly 3 decimals, for display only ("12.345"); truncation-free:
// rounded half away from zero at the third decimal.
std::string FormatGpuHours(GpuMs quantity);

}  // namespace gpuledger::base
