#include "base/period.h"

#include <gtest/gtest.h>

namespace gpuledger::base {
namespace {

TEST(PeriodTest, MonthStartsAtMidnightKst) {
  const Period march{2026, 3};
  // 2026-03-01T00:00+09:00 = 2026-02-28T15:00Z.
  EXPECT_EQ(FormatUtc(march.StartMs()), "2026-02-28T15:00:00.000Z");
  EXPECT_EQ(FormatKst(march.StartMs()), "2026-03-01T00:00:00.000+09:00");
  EXPECT_EQ(march.EndMs(), (Period{2026, 4}).StartMs());
  EXPECT_EQ((Period{2026, 12}).Next(), (Period{2027, 1}));
}

TEST(PeriodTest, PeriodOfInstantNearBoundary) {
  const Period march{2026, 3};
  EXPECT_EQ(PeriodOf(march.StartMs()), march);
  EXPECT_EQ(PeriodOf(march.StartMs() - 1), (Period{2026, 2}));
  EXPECT_EQ(PeriodOf(march.EndMs() - 1), march);
  EXPECT_EQ(PeriodOf(0), (Period{1970, 1}));
}

TEST(PeriodTest, ParsesAndRejects) {
  EXPECT_EQ(*ParsePeriod("2026-03"), (Period{2026, 3}));
  EXPECT_EQ(ParsePeriod("2026-3").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParsePeriod("2026-13").ok());
  EXPECT_FALSE(ParsePeriod("2026-00").ok());
  EXPECT_FALSE(ParsePeriod("").ok());
  EXPECT_FALSE(ParsePeriod("abcd-ef").ok());
  EXPECT_EQ((Period{2026, 3}).ToString(), "2026-03");
}

}  // namespace
}  // namespace gpuledger::base
