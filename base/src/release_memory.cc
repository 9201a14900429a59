#include "base/release_memory.h"

#include <malloc.h>

#include <atomic>
#include <chrono>
#include <cstdint>

namespace gpuledger::base {

void ReleaseFreeMemory(int min_interval_ms) {
  static std::atomic<int64_t> last_ms{0};
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  int64_t last = last_ms.load(std::memory_order_relaxed);
  if (now - last < min_interval_ms) return;
  if (!last_ms.compare_exchange_strong(last, now, std::memory_order_relaxed)) return;
  ::malloc_trim(0);
}

}  // namespace gpuledger::base
