// Request rate limits per client address (issue 8: "request-size and rate limits hold under a
// burst"): a token bucket per address that holds `burst` requests and refills at `per_second`.
#pragma once

#include <chrono>
#include <mutex>
#include <string>
#include <unordered_map>

namespace gpuledger::api {

class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  // `per_second` 0: no limit. `burst` < 1 counts as 1.
  RateLimiter(int per_second, int burst);

  // Whether `client` may make one more request at `now` (and takes it from its bucket). If not,
  // `*retry_after_s` is the whole number of seconds (at least 1) after which it may.
  bool Admit(const std::string& client, Clock::time_point now, int* retry_after_s);

  bool enabled() const { return per_second_ > 0; }
  // Addresses with a bucket now (full buckets are forgotten once there are many).
  size_t clients() const;

 private:
  struct Bucket {
    double tokens = 0;
    Clock::time_point at;
  };
  // Above this many addresses, buckets that have refilled completely are dropped: a new bucket
  // starts full, so forgetting a full one changes nothing.
  static constexpr size_t kPruneAbove = 10'000;

  void Prune(Clock::time_point now);

  const double per_second_;
  const double burst_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Bucket> buckets_;
};

}  // namespace gpuledger::api
