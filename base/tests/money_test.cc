#include "base/money.h"

#include <gtest/gtest.h>

#include <limits>

namespace gpuledger::base {
namespace {

TEST(MoneyTest, RoundsHalfAwayFromZero) {
  EXPECT_EQ(*DivRoundHalfAwayFromZero(5, 2), 3);
  EXPECT_EQ(*DivRoundHalfAwayFromZero(-5, 2), -3);
  EXPECT_EQ(*DivRoundHalfAwayFromZero(4, 2), 2);
  EXPECT_EQ(*DivRoundHalfAwayFromZero(7, 4), 2);    // 1.75
  EXPECT_EQ(*DivRoundHalfAwayFromZero(5, 4), 1);    // 1.25
  EXPECT_EQ(*DivRoundHalfAwayFromZero(-5, 4), -1);  // -1.25
  EXPECT_EQ(*DivRoundHalfAwayFromZero(-7, 4), -2);  // -1.75
  EXPECT_EQ(*DivRoundHalfAwayFromZero(1, 3), 0);
  EXPECT_EQ(*DivRoundHalfAwayFromZero(2, 3), 1);
  EXPECT_EQ(*DivRoundHalfAwayFromZero(0, 7), 0);
}

TEST(MoneyTest, ReversalNegatesExactly) {
  for (int64_t n = -100'000; n <= 100'000; n += 37) {
    EXPECT_EQ(*DivRoundHalfAwayFromZero(-n, 10'000), -*DivRoundHalfAwayFromZero(n, 10'000)) << n;
  }
}

TEST(MoneyTest, RejectsNonPositiveDenominatorAndOverflow) {
  EXPECT_FALSE(DivRoundHalfAwayFromZero(1, 0).ok());
  EXPECT_FALSE(DivRoundHalfAwayFromZero(1, -2).ok());
  const __int128 huge = static_cast<__int128>(std::numeric_limits<int64_t>::max()) * 4;
  EXPECT_EQ(DivRoundHalfAwayFromZero(huge, 2).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(MoneyTest, ListPriceOfOneGpuHour) {
  // 1 GPU for 1 hour at 3,000 won per GPU-hour.
  EXPECT_EQ(ListPrice(GpuMs{3'600'000}, Krw{3'000})->won, 3'000);
  // 1 GPU for 1 ms at 1,800 won/h = 0.0005 won -> rounds half up to... 0.0005 < 0.5 -> 0.
  EXPECT_EQ(ListPrice(GpuMs{1}, Krw{1'800})->won, 0);
  // 1,000 ms at 1,800 won/h = 0.5 won -> 1 (half away from zero).
  EXPECT_EQ(ListPrice(GpuMs{1'000}, Krw{1'800})->won, 1);
  EXPECT_EQ(ListPrice(GpuMs{-1'000}, Krw{1'800})->won, -1);
}

TEST(MoneyTest, ListPriceSurvivesAMonthOfAThousandGpusAtAHighRate) {
  // 1,000 GPUs × 31 days: gpu_ms × rate overflows int64 but not the 128-bit intermediate.
  const GpuMs month{1'000LL * 31 * 86'400'000};
  auto price = ListPrice(month, Krw{10'000'000});
  ASSERT_TRUE(price.ok());
  EXPECT_EQ(price->won, 1'000LL * 31 * 24 * 10'000'000);
}

TEST(MoneyTest, BasisPoints) {
  EXPECT_EQ(ApplyBasisPoints(Krw{10'000}, 1'000)->won, 1'000);
  EXPECT_EQ(ApplyBasisPoints(Krw{15}, 5'000)->won, 8);  // 7.5 -> 8
  EXPECT_EQ(ApplyBasisPoints(Krw{-15}, 5'000)->won, -8);
  EXPECT_EQ(ApplyBasisPoints(Krw{12'345}, 0)->won, 0);
}

TEST(MoneyTest, Formats) {
  EXPECT_EQ(FormatWon(Krw{0}), "0");
  EXPECT_EQ(FormatWon(Krw{999}), "999");
  EXPECT_EQ(FormatWon(Krw{1'000}), "1,000");
  EXPECT_EQ(FormatWon(Krw{-1'234'567}), "-1,234,567");
  EXPECT_EQ(FormatWon(Krw{std::numeric_limits<int64_t>::min()}), "-9,223,372,036,854,775,808");
  EXPECT_EQ(FormatGpuHours(GpuMs{3'600'000}), "1.000");
  EXPECT_EQ(FormatGpuHours(GpuMs{5'400'000}), "1.500");
  EXPECT_EQ(FormatGpuHours(GpuMs{1'800}), "0.001");  // 0.0005 h rounds half away from zero
  EXPECT_EQ(FormatGpuHours(GpuMs{-5'400'000}), "-1.500");
}

TEST(MoneyTest, CheckedSumsFailInsteadOfWrapping) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  EXPECT_EQ(*CheckedAdd(2, 3, "x"), 5);
  EXPECT_EQ(CheckedAdd(kMax, 1, "the total").status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(CheckedAdd(kMax, 1, "the total").status().message().find("the total"),
            std::string::npos);
  EXPECT_FALSE(CheckedSub(kMin, 1, "x").ok());
  EXPECT_EQ(*CheckedSub(kMax, kMax, "x"), 0);
  EXPECT_FALSE(CheckedMul(4'294'967'295, 2'678'400'000, "x").ok());  // 2^32-1 GPUs, 31 days
  EXPECT_EQ(*CheckedMul(-3, 4, "x"), -12);
  EXPECT_FALSE(CheckedNarrow(static_cast<__int128>(kMax) + 1, "x").ok());
  EXPECT_FALSE(CheckedNarrow(static_cast<__int128>(kMin) - 1, "x").ok());
  EXPECT_EQ(*CheckedNarrow(kMin, "x"), kMin);
}

}  // namespace
}  // namespace gpuledger::base
