#include "base/process_memory.h"

#include <malloc.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <fstream>

// jemalloc's control interface. Weak, so that this library links with or without jemalloc: the
// address is non-null only when the process runs on jemalloc (cli/CMakeLists.txt links it).
extern "C" int mallctl(const char* name, void* oldp, size_t* oldlenp, void* newp, size_t newlen)
    __attribute__((weak));

namespace gpuledger::base {
namespace {

bool OnJemalloc() { return &mallctl != nullptr; }

uint64_t JemallocStat(const char* name) {
  size_t value = 0;
  size_t len = sizeof(value);
  if (mallctl(name, &value, &len, nullptr, 0) != 0) return 0;
  return value;
}

}  // namespace

const char* AllocatorName() { return OnJemalloc() ? "jemalloc" : "glibc"; }

ProcessMemory ReadProcessMemory() {
  ProcessMemory m;
  std::ifstream statm("/proc/self/statm");
  uint64_t size_pages = 0;
  uint64_t resident_pages = 0;
  if (statm >> size_pages >> resident_pages) {
    m.rss = resident_pages * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  }
  if (OnJemalloc()) {
    // jemalloc's statistics are a snapshot refreshed by writing "epoch".
    uint64_t epoch = 1;
    size_t len = sizeof(epoch);
    mallctl("epoch", &epoch, &len, &epoch, sizeof(epoch));
    const uint64_t allocated = JemallocStat("stats.allocated");
    const uint64_t resident = JemallocStat("stats.resident");
    m.heap_in_use = allocated;
    m.heap_free = resident > allocated ? resident - allocated : 0;
  } else {
    const struct mallinfo2 mi = ::mallinfo2();
    m.heap_in_use = mi.uordblks + mi.hblkhd;
    m.heap_free = mi.fordblks;
  }
  return m;
}

void ReleaseFreeMemory(int min_interval_ms) {
  if (OnJemalloc()) return;
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
