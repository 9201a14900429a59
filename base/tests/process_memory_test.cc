#include "base/process_memory.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>

namespace gpuledger::base {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

TEST(ProcessMemoryTest, NamesTheAllocatorTheBuildLinked) {
#ifdef GPULEDGER_WITH_JEMALLOC
  EXPECT_STREQ(AllocatorName(), "jemalloc");
#else
  EXPECT_STREQ(AllocatorName(), "glibc");
#endif
}

TEST(ProcessMemoryTest, SeesAnAllocationInUseAndResident) {
  constexpr size_t kBytes = 64 << 20;
  const ProcessMemory before = ReadProcessMemory();
  EXPECT_GT(before.rss, 0u);
  auto block = std::make_unique<char[]>(kBytes);
  std::memset(block.get(), 1, kBytes);  // touch every page
  const ProcessMemory during = ReadProcessMemory();
  EXPECT_GE(during.rss, before.rss + kBytes / 2);
  // The sanitizers' allocator answers neither glibc's nor jemalloc's statistics.
  if (!kSanitized) {
    EXPECT_GE(during.heap_in_use, before.heap_in_use + kBytes);
  }
  block.reset();
  ReleaseFreeMemory(0);
  const ProcessMemory after = ReadProcessMemory();
  if (!kSanitized) {
    EXPECT_LE(after.heap_in_use + kBytes, during.heap_in_use + kBytes / 64);
  }
}

}  // namespace
}  // namespace gpuledger::base
