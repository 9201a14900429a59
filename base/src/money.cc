#include "base/money.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace gpuledger::base {

absl::StatusOr<int64_t> DivRoundHalfAwayFromZero(__int128 numerator, int64_t denominator) {
  if (denominator <= 0) {
    return absl::InvalidArgumentError("rounding denominator must be positive");
  }
  const bool negative = numerator < 0;
  const __int128 magnitude = negative ? -numerator : numerator;
  // Adding d/2 before truncating rounds exact halves up for even d (away from zero once the
  // sign is put back); for odd d there is no exact half and this rounds to nearest.
  const __int128 quotient = (magnitude + denominator / 2) / static_cast<__int128>(denominator);
  const __int128 result = negative ? -quotient : quotient;
  if (result > std::numeric_limits<int64_t>::max() ||
      result < std::numeric_limits<int64_t>::min()) {
    return absl::OutOfRangeError("amount does not fit in 64 bits");
  }
  return static_cast<int64_t>(result);
}

absl::StatusOr<Krw> ListPrice(GpuMs quantity, Krw per_gpu_hour) {
  auto won = DivRoundHalfAwayFromZero(
      static_cast<__int128>(quantity.ms) * static_cast<__int128>(per_gpu_hour.won), kMsPerHour);
  if (!won.ok()) return won.status();
  return Krw{*won};
}

absl::StatusOr<Krw> ApplyBasisPoints(Krw amount, int64_t basis_points) {
  auto won = DivRoundHalfAwayFromZero(
      static_cast<__int128>(amount.won) * static_cast<__int128>(basis_points), kBasisPointsPerUnit);
  if (!won.ok()) return won.status();
  return Krw{*won};
}

absl::StatusOr<Krw> ApplyBasisPointsTowardZero(Krw amount, int64_t basis_points) {
  if (basis_points < 0) return absl::InvalidArgumentError("basis points must not be negative");
  // C++ integer division truncates toward zero; the product of two 64-bit values fits 128.
  const __int128 won = static_cast<__int128>(amount.won) * basis_points / kBasisPointsPerUnit;
  if (won > std::numeric_limits<int64_t>::max() || won < std::numeric_limits<int64_t>::min()) {
    return absl::OutOfRangeError("amount does not fit in 64 bits");
  }
  return Krw{static_cast<int64_t>(won)};
}

namespace {
absl::Status TooLarge(std::string_view what) {
  return absl::OutOfRangeError(absl::StrCat(std::string(what), " does not fit in 64 bits"));
}
}  // namespace

absl::StatusOr<int64_t> CheckedAdd(int64_t a, int64_t b, std::string_view what) {
  int64_t out = 0;
  if (__builtin_add_overflow(a, b, &out)) return TooLarge(what);
  return out;
}

absl::StatusOr<int64_t> CheckedSub(int64_t a, int64_t b, std::string_view what) {
  int64_t out = 0;
  if (__builtin_sub_overflow(a, b, &out)) return TooLarge(what);
  return out;
}

absl::StatusOr<int64_t> CheckedMul(int64_t a, int64_t b, std::string_view what) {
  int64_t out = 0;
  if (__builtin_mul_overflow(a, b, &out)) return TooLarge(what);
  return out;
}

absl::StatusOr<int64_t> CheckedNarrow(__int128 v, std::string_view what) {
  if (v > std::numeric_limits<int64_t>::max() || v < std::numeric_limits<int64_t>::min()) {
    return TooLarge(what);
  }
  return static_cast<int64_t>(v);
}

std::string FormatWon(Krw amount) {
  // Work on the unsigned magnitude so that INT64_MIN formats correctly.
  const bool negative = amount.won < 0;
  uint64_t magnitude =
      negative ? 0 - static_cast<uint64_t>(amount.won) : static_cast<uint64_t>(amount.won);
  std::string digits = absl::StrCat(magnitude);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return negative ? "-" + out : out;
}

std::string FormatGpuHours(GpuMs quantity) {
  // Thousandths of a GPU-hour = gpu_ms / 3,600.
  auto milli_hours = DivRoundHalfAwayFromZero(quantity.ms, kMsPerHour / 1000);
  const int64_t v = milli_hours.ok() ? *milli_hours : 0;
  const bool negative = v < 0;
  const uint64_t magnitude = negative ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
  std::string frac = absl::StrCat(magnitude % 1000);
  frac.insert(0, 3 - frac.size(), '0');
  return absl::StrCat(negative ? "-" : "", magnitude / 1000, ".", frac);
}

}  // namespace gpuledger::base
