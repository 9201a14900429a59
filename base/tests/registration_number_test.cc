#include "base/registration_number.h"

#include <gtest/gtest.h>

#include "base/money.h"
#include "base/period.h"

namespace gpuledger::base {
namespace {

TEST(RegistrationNumberTest, AcceptsAPublishedNumberInEitherForm) {
  // 124-81-00998 is a listed company's published number: the rule must accept it.
  EXPECT_EQ(ParseRegistrationNumber("124-81-00998"), "1248100998");
  EXPECT_EQ(ParseRegistrationNumber("1248100998"), "1248100998");
  EXPECT_EQ(FormatRegistrationNumber("1248100998"), "124-81-00998");
}

TEST(RegistrationNumberTest, RefusesAWrongCheckDigitAndEveryMalformedForm) {
  for (int last = 0; last <= 9; ++last) {
    if (last == 8) continue;
    const std::string n = "124810099" + std::to_string(last);
    EXPECT_FALSE(ParseRegistrationNumber(n).has_value()) << n;
  }
  for (const char* bad : {"", "124-8100998", "12-481-00998", "124 81 00998", "12481009981",
                          "124-81-0099", "a248100998", "124_81_00998", "１２４8100998"}) {
    EXPECT_FALSE(ParseRegistrationNumber(bad).has_value()) << bad;
  }
}

TEST(RegistrationNumberTest, TheCheckDigitCountsTheNinthDigitsTens) {
  // Ninth digit 9: 9 × 5 = 45 adds 4 more; a rule that forgot it would want 2, not 8.
  EXPECT_EQ(RegistrationCheckDigit("124810099"), 8);
  // Every number made with the computed digit parses.
  for (const char* nine : {"000000000", "123456789", "999999999", "220810553", "101820000"}) {
    const std::string n = std::string(nine) + std::to_string(RegistrationCheckDigit(nine));
    EXPECT_TRUE(ParseRegistrationNumber(n).has_value()) << n;
  }
}

TEST(VatRoundingTest, TowardZeroTruncatesBothSigns) {
  EXPECT_EQ(ApplyBasisPointsTowardZero(Krw{99'999}, 1'000)->won, 9'999);
  EXPECT_EQ(ApplyBasisPointsTowardZero(Krw{-99'999}, 1'000)->won, -9'999);
  EXPECT_EQ(ApplyBasisPoints(Krw{99'995}, 1'000)->won, 10'000);  // half away from zero: 9,999.5
  EXPECT_EQ(ApplyBasisPointsTowardZero(Krw{99'995}, 1'000)->won, 9'999);
  EXPECT_FALSE(ApplyBasisPointsTowardZero(Krw{INT64_MAX}, 10'001).ok());
}

TEST(KstDateTest, DatesAreKoreanCalendarDays) {
  // 2026-03-31T15:00Z is 2026-04-01T00:00 KST.
  const int64_t april_first_kst = 1'774'969'200'000;
  EXPECT_EQ(KstDate(april_first_kst), "2026-04-01");
  EXPECT_EQ(KstDate(april_first_kst - 1), "2026-03-31");
  EXPECT_EQ(KstDate(april_first_kst, 30), "2026-05-01");
  EXPECT_EQ(KstYear(april_first_kst), 2026);
  EXPECT_EQ(KstDate(Period{2026, 12}.EndMs() - 1, 1), "2027-01-01");
}

}  // namespace
}  // namespace gpuledger::base
