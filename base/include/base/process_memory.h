// The process's memory as the allocator sees it, and giving free memory back to the system.
//
// gpuledger is linked with jemalloc (RocksDB's recommended allocator) unless built without it
// (-DGPULEDGER_JEMALLOC=OFF, and always in the sanitized build). With glibc's malloc, a freed
// block goes back to the arena of the thread that allocated it and the arena keeps the pages: in
// ingest, librdkafka's messages are allocated on its threads and freed on the ingest thread, and
// RocksDB's blocks on its flush and compaction threads, so free memory piled up in arenas no one
// allocates from again (up to 230 MiB of a 519 MiB resident set at 12M events, with everything
// RocksDB and the index hold within their bounds; docs/BENCHMARKS.md, "Memory"). jemalloc gives
// unused pages back itself (its background thread purges them after a decay time); with glibc,
// ReleaseFreeMemory calls malloc_trim(0) now and then.
#pragma once

#include <cstdint>

namespace gpuledger::base {

struct ProcessMemory {
  uint64_t rss = 0;          // resident set (/proc/self/statm)
  uint64_t heap_in_use = 0;  // what the program has allocated and not freed
  uint64_t heap_free = 0;    // what the allocator holds resident beyond that (free, metadata)
};

// "jemalloc" or "glibc": the allocator this process runs on.
const char* AllocatorName();

ProcessMemory ReadProcessMemory();

// With glibc: calls malloc_trim(0) at most once per `min_interval_ms` (process-wide). It walks
// every free chunk and released pages fault in again when reused: every 2 s it cut a 12M-event
// ingest's peak from 527 to 464 MiB for 13% more CPU, hence the 10 s default. With jemalloc: does
// nothing (its background thread purges). Cheap to call often.
void ReleaseFreeMemory(int min_interval_ms = 10'000);

}  // namespace gpuledger::base
