// Gives memory that glibc's malloc holds free back to the system.
//
// glibc returns a freed block to the arena of the thread that allocated it and keeps the pages:
// in ingest, librdkafka's fetch buffers and messages are allocated on its threads and freed on
// the ingest thread, and RocksDB's blocks on its flush and compaction threads, so free memory
// piles up in arenas no one allocates from again (174 MiB of a 456 MiB resident set at 5M
// events, with everything RocksDB and the index hold within their bounds). malloc_trim(0)
// releases the free pages of every arena (docs/BENCHMARKS.md, "Memory"). It is not free: it walks
// every free chunk, and released pages fault in again when reused. Called every 2 s, it cut a
// 12M-event ingest's peak from 527 to 464 MiB but cost 13% more CPU; hence the 10 s default.
#pragma once

namespace gpuledger::base {

// Calls malloc_trim(0) at most once per `min_interval_ms` (process-wide); cheap to call often.
void ReleaseFreeMemory(int min_interval_ms = 10'000);

}  // namespace gpuledger::base
