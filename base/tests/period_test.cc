#include "base/period.h"

#include <gtest/gtest.h>

#include <limits>

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

TEST(PeriodTest, KnownPeriodsBoundEveryLoop) {
  EXPECT_EQ(kFirstPeriod.StartMs(), kFirstPeriodStartMs);
  EXPECT_EQ(kLastPeriod.EndMs(), kPeriodsEndMs);
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  EXPECT_EQ(PeriodOf(kMax), kLastPeriod);
  EXPECT_EQ(PeriodOf(kMin), kFirstPeriod);
  int64_t n = 0;
  Period last;
  ForEachPeriodWithin(kMin, kMax, [&](Period p, int64_t lo, int64_t hi) {
    EXPECT_EQ(lo, p.StartMs());
    EXPECT_EQ(hi, p.EndMs());
    ++n;
    last = p;
  });
  EXPECT_EQ(n, kPeriodsMax);
  EXPECT_EQ(last, kLastPeriod);
  // An interval ending at the last millisecond: from its start to 9999-12, no further.
  const Period march{2026, 3};
  n = 0;
  ForEachPeriodWithin(march.StartMs() + 1, kMax, [&](Period p, int64_t lo, int64_t) {
    if (n++ == 0) {
      EXPECT_EQ(p, march);
      EXPECT_EQ(lo, march.StartMs() + 1);
    }
  });
  EXPECT_EQ(n, (9999 - 2026) * 12 + 10);
  EXPECT_TRUE(OutsideKnownPeriods(march.StartMs(), kMax));
  EXPECT_FALSE(OutsideKnownPeriods(march.StartMs(), march.EndMs()));
  ForEachPeriodWithin(kMax - 1, kMax, [&](Period, int64_t, int64_t) { ADD_FAILURE(); });
  EXPECT_EQ(FormatKst(kMax), "9223372036854775807ms");
  EXPECT_EQ(FormatUtc(kMin), "-9223372036854775808ms");
}

}  // namespace
}  // namespace gpuledger::base
