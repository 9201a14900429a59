// The validator's record of accepted usage intervals, kept in RocksDB instead of memory so that
// ingest's memory does not grow with the number of events (issue 7): the intervals each
// allocation holds (for the overlap and grant checks), which event holds which interval (for
// corrections) and which events were corrected or cancelled.
//
// It is derived from the ledger and may be deleted: at start the validator replays the ledger
// entries after the store's marker (every entry when there is none). Writes are staged in a
// WriteBatchWithIndex, so reads see them at once, and written (not synced) after the ledger's
// own synced commit: Commit hands the batch to a thread that writes it while the validator goes
// on (reads see it until then), and the next Commit, Wait or the destructor collects that write.
// After a crash the marker is older than the ledger head and the difference is replayed. A marker
// ahead of the ledger, or naming another entry than the ledger's at that seq, means the store
// belongs to another ledger: it is wiped and rebuilt.
//
// On-disk keys (all big-endian; strings length-prefixed):
//   'i' alloc start csp event_id -> end(8) gpus(4) node_id       an interval held
//   'h' csp event_id             -> 'H' alloc start(8) | 'R'       who holds it; or retired
//   'l' alloc                    -> longest interval held (8)
//   "m"                          -> seq(8) chain hash(32)          applied through
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ledger/ledger.h"
#include "ledger/rocks_options.h"

namespace rocksdb {
class Iterator;
}

namespace gpuledger::ingest {

class HoldStore {
 public:
  struct Interval {
    int64_t start_ms = 0;
    int64_t end_ms = 0;
    uint32_t gpus = 0;
    std::string node_id;
    std::string csp;
    std::string event_id;
  };
  struct Holder {
    bool retired = false;
    std::string allocation;  // when holding
    int64_t start_ms = 0;
  };
  struct Marker {
    uint64_t seq = 0;
    ledger::Digest hash{};
  };

  // An empty path: in memory (RocksDB's memory environment), for tests and tools.
  static absl::StatusOr<std::unique_ptr<HoldStore>> Open(const std::string& path);
  ~HoldStore();

  const std::string& path() const { return path_; }

  absl::StatusOr<std::optional<Marker>> GetMarker() const;
  // Deletes everything (committed and staged).
  absl::Status Wipe();
  // Starts writing what is staged, with the marker, unsynced, on another thread. Fails with the
  // error of the previous write if that one failed (and every call after: the store is behind).
  absl::Status Commit(const Marker& marker);
  // Waits for the write Commit started; its error, if any.
  absl::Status Wait();

  void PutInterval(const std::string& allocation, const Interval& in);
  void DeleteInterval(const std::string& allocation, int64_t start_ms, std::string_view csp,
                      std::string_view event_id);
  // Intervals of `allocation` with from_ms <= start < to_ms, staged or committed, by start.
  absl::Status ScanIntervals(const std::string& allocation, int64_t from_ms, int64_t to_ms,
                             const std::function<bool(const Interval&)>& visit) const;

  void PutHolder(std::string_view csp, std::string_view event_id, const Holder& h);
  absl::StatusOr<std::optional<Holder>> GetHolder(std::string_view csp,
                                                  std::string_view event_id) const;

  void PutLongest(const std::string& allocation, int64_t ms);
  absl::Status ScanLongest(const std::function<void(const std::string&, int64_t)>& visit) const;

  // What RocksDB holds in memory for the store.
  ledger::StoreMemory Memory() const;

 private:
  struct Impl;
  // `base` (owned) with the batch being written, if any, and the staged one over it.
  rocksdb::Iterator* Overlaid(rocksdb::Iterator* base) const;
  explicit HoldStore(std::unique_ptr<Impl> impl, std::string path);
  std::unique_ptr<Impl> impl_;
  std::string path_;
};

}  // namespace gpuledger::ingest
