// The writer of LedgerTest.ReadOnlyOpenSeesEveryCommitMadeBeforeItBegan: opens the ledger
// (recovering what the previous writer left in the write-ahead log), commits four batches of N
// entries each, publishes each committed head in the shared file, and then either exits without
// closing anything, as a SIGKILLed ingest does ("crash"), or closes the ledger, which flushes
// every column family and drops the write-ahead log ("close").
//
//   crashing_writer LEDGER_DIR SHARED_HEAD_FILE ENTRIES_PER_BATCH crash|close
#include <fcntl.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "ledger/ledger.h"

int main(int argc, char** argv) {
  using gpuledger::ledger::Candidate;
  using gpuledger::ledger::Ledger;
  if (argc != 5 || std::atoi(argv[3]) <= 0 ||
      (std::string_view(argv[4]) != "crash" && std::string_view(argv[4]) != "close")) {
    std::fprintf(stderr, "usage: %s LEDGER_DIR SHARED_HEAD_FILE ENTRIES_PER_BATCH crash|close\n",
                 argv[0]);
    return 2;
  }
  const int per_batch = std::atoi(argv[3]);
  const int fd = ::open(argv[2], O_RDWR);
  void* m = fd < 0 ? MAP_FAILED
                   : ::mmap(nullptr, sizeof(std::atomic<uint64_t>), PROT_READ | PROT_WRITE,
                            MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) {
    std::perror(argv[2]);
    return 3;
  }
  auto* committed = static_cast<std::atomic<uint64_t>*>(m);
  auto l = Ledger::Open(argv[1], {});
  if (!l.ok()) {
    std::fprintf(stderr, "writer: %s\n", l.status().ToString().c_str());
    return 4;
  }
  const std::string topic = "gpuledger.usage.csp-a";
  const auto offsets = (*l)->Offsets();
  auto at = offsets.find({topic, 0});
  int64_t offset = at == offsets.end() ? 0 : at->second;
  for (int batch = 0; batch < 4; ++batch) {
    for (int i = 0; i < per_batch; ++i, ++offset) {
      Candidate c;
      c.source = gpuledger::v1::SOURCE_USAGE;
      c.payload = absl::StrCat("p", offset);
      c.topic = topic;
      c.partition = 0;
      c.offset = offset;
      c.recorded_at_ms = 1000 + offset;
      c.source_id = "csp-a";
      c.event_id = absl::StrCat("e", offset);
      auto appended = (*l)->Append(c);
      absl::Status advanced = (*l)->AdvanceOffset({topic, 0}, offset + 1);
      if (!appended.ok() || !advanced.ok()) {
        std::fprintf(stderr, "writer: append %lld failed\n", static_cast<long long>(offset));
        return 5;
      }
    }
    absl::Status s = (*l)->Commit();
    if (!s.ok()) {
      std::fprintf(stderr, "writer: %s\n", s.ToString().c_str());
      return 6;
    }
    committed->store((*l)->head().seq);
  }
  if (std::string_view(argv[4]) == "close") return 0;  // flushes every column family
  std::fflush(stderr);
  std::_Exit(0);  // no close, no flush: the next writer recovers the write-ahead log
}
