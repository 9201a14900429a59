// An in-memory index of the intervals each allocation holds, in front of the validator's state
// store (HoldStore), so that the overlap scan of a usage event is a map lookup instead of a
// RocksDB seek through the store's write batch (about half of ingest's profile before it).
//
// Per allocation it keeps a range [floor, ceiling) of start times and every held interval that
// starts inside it, in the store's own key order (start, CSP, event id), so that a scan visits
// the same intervals in the same order as HoldStore::ScanIntervals and stops at the same one:
// decisions are exactly those of the store alone. A scan that overlaps the range but reaches
// past it first reads the missing part (never more than the scan's own range) from the store
// and widens the range; a scan wholly outside it reads the store alone. An allocation not in
// the index is read from the scan's start up to a few intervals past its end (kFillAheadMax)
// (the ceiling is infinite when the store has no more). Writes go to both, the store first.
//
// Bounded in bytes (gpuledger::limits::kRecentIntervalsBytes by default): over the bound, the least
// recently scanned allocation gives up its oldest intervals, and its floor rises past them; an
// allocation left with none leaves the index. Owned by the Validator; runs on its thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "hold_store.h"

namespace gpuledger::ingest {

class RecentIntervals {
 public:
  // An interval as a scan shows it; the views are valid during the visit only.
  struct View {
    int64_t start_ms = 0;
    int64_t end_ms = 0;
    uint32_t gpus = 0;
    std::string_view node_id;
    std::string_view csp;
    std::string_view event_id;
  };
  using Visit = absl::FunctionRef<bool(const View&)>;

  // `bytes_max`: the bound on the index's memory. 0: no index, every scan reads the store.
  explicit RecentIntervals(size_t bytes_max) : bytes_max_(bytes_max) {}

  // Visits the intervals of `allocation` with from_ms <= start < to_ms, in the store's key order,
  // until `visit` returns false; as HoldStore::ScanIntervals on `store` would.
  absl::Status Scan(const HoldStore& store, const std::string& allocation, int64_t from_ms,
                    int64_t to_ms, Visit visit);

  // Mirror the store's writes (call after staging them in the store).
  void Put(const std::string& allocation, const HoldStore::Interval& in);
  void Erase(const std::string& allocation, int64_t start_ms, std::string_view csp,
             std::string_view event_id);
  // Forgets everything (the store was wiped or replaced).
  void Clear();

  size_t bytes() const { return bytes_; }

 private:
  // Ordered as the store's keys: start (signed), CSP by length then bytes, event id bytes.
  struct Key {
    int64_t start_ms;
    std::string csp;
    std::string event_id;
    bool operator<(const Key& o) const;
  };
  struct Value {
    int64_t end_ms;
    uint32_t gpus;
    std::string node_id;
  };
  struct Entry {
    // Every interval of the allocation with floor_ms <= start < ceiling_ms is in `intervals`
    // (some outside that range may be too).
    int64_t floor_ms;
    int64_t ceiling_ms;
    std::map<Key, Value> intervals;
    std::list<std::string>::iterator lru;
  };

  static size_t IntervalBytes(const Key& k, const Value& v);
  size_t EntryBytes(const std::string& allocation) const;
  void Insert(Entry* e, Key k, Value v);
  // Reads the store's intervals with from_ms <= start < to_ms into `e`.
  absl::Status Fill(const HoldStore& store, const std::string& allocation, Entry* e,
                    int64_t from_ms, int64_t to_ms);
  void Drop(const std::string& allocation);
  void Shrink();

  size_t bytes_max_;
  size_t bytes_ = 0;
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> lru_;  // allocations, most recently scanned first
};

}  // namespace gpuledger::ingest
