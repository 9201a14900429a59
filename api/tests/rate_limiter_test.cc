#include "api/rate_limiter.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace gpuledger::api {
namespace {

using Clock = RateLimiter::Clock;
using std::chrono::milliseconds;

// Requests admitted out of `n` made at once by `client` at `now`.
int Burst(RateLimiter& l, const std::string& client, Clock::time_point now, int n,
          int* retry_after_s) {
  int admitted = 0;
  for (int i = 0; i < n; ++i) admitted += l.Admit(client, now, retry_after_s) ? 1 : 0;
  return admitted;
}

TEST(RateLimiterTest, ABurstGetsTheBucketThenTheRate) {
  RateLimiter l(/*per_second=*/10, /*burst=*/20);
  const Clock::time_point t0 = Clock::now();
  int retry = 0;
  EXPECT_EQ(Burst(l, "10.0.0.1", t0, 100, &retry), 20);
  EXPECT_EQ(retry, 1);
  // 10 a second after that: 5 in half a second, 10 more in the next second.
  EXPECT_EQ(Burst(l, "10.0.0.1", t0 + milliseconds(500), 100, &retry), 5);
  EXPECT_EQ(Burst(l, "10.0.0.1", t0 + milliseconds(1'500), 100, &retry), 10);
  // Idle long enough, the bucket is full again, never fuller.
  EXPECT_EQ(Burst(l, "10.0.0.1", t0 + milliseconds(60'000), 100, &retry), 20);
}

TEST(RateLimiterTest, ClientsHaveBucketsOfTheirOwn) {
  RateLimiter l(5, 5);
  const Clock::time_point t0 = Clock::now();
  int retry = 0;
  EXPECT_EQ(Burst(l, "10.0.0.1", t0, 50, &retry), 5);
  EXPECT_EQ(Burst(l, "10.0.0.2", t0, 50, &retry), 5);
  EXPECT_EQ(l.clients(), 2u);
}

TEST(RateLimiterTest, RetryAfterIsWhenTheNextRequestWouldPass) {
  RateLimiter l(/*per_second=*/1, /*burst=*/1);
  const Clock::time_point t0 = Clock::now();
  int retry = 0;
  EXPECT_TRUE(l.Admit("a", t0, &retry));
  EXPECT_FALSE(l.Admit("a", t0, &retry));
  EXPECT_EQ(retry, 1);
  RateLimiter slow(/*per_second=*/1, /*burst=*/1);
  EXPECT_TRUE(slow.Admit("a", t0, &retry));
  EXPECT_FALSE(slow.Admit("a", t0 + milliseconds(100), &retry));
  EXPECT_EQ(retry, 1);  // 0.9 s, rounded up
  EXPECT_TRUE(slow.Admit("a", t0 + milliseconds(1'000), &retry));
}

TEST(RateLimiterTest, ZeroMeansNoLimit) {
  RateLimiter l(0, 0);
  int retry = 0;
  EXPECT_FALSE(l.enabled());
  EXPECT_EQ(Burst(l, "a", Clock::now(), 10'000, &retry), 10'000);
  EXPECT_EQ(l.clients(), 0u);
}

TEST(RateLimiterTest, ManyAddressesDoNotGrowWithoutBound) {
  RateLimiter l(100, 10);
  const Clock::time_point t0 = Clock::now();
  int retry = 0;
  for (int i = 0; i < 50'000; ++i) {
    // Each address makes one request; a second later its bucket is full again.
    ASSERT_TRUE(l.Admit("addr-" + std::to_string(i), t0 + milliseconds(i), &retry));
  }
  EXPECT_LT(l.clients(), 12'000u);
}

}  // namespace
}  // namespace gpuledger::api
