#include "recent_intervals.h"

#include <algorithm>
#include <limits>

namespace gpuledger::ingest {

namespace {

// What a string holds on the heap beyond its own object (nothing while it fits inline), with
// malloc's own overhead per block.
constexpr size_t kMallocOverheadBytes = 16;
size_t HeapBytes(const std::string& s) {
  static const size_t kInline = std::string().capacity();
  return s.capacity() > kInline ? s.capacity() + 1 + kMallocOverheadBytes : 0;
}

// A red-black tree node's header (colour, parent, left, right), a hash-table node's and a list
// node's links: what each map, unordered_map and list element costs beyond its value.
constexpr size_t kTreeNodeBytes = 32 + kMallocOverheadBytes;
constexpr size_t kHashNodeBytes = 16 + kMallocOverheadBytes;
constexpr size_t kListNodeBytes = 16 + kMallocOverheadBytes;

// How many intervals past a scan's end a new entry reads ahead (so that the next scans, later in
// time, find them in memory) before it stops and sets its ceiling there; never more than a
// quarter of the bound holds, at about kIntervalBytesTypical each.
constexpr size_t kFillAheadMax = 1024;
constexpr size_t kIntervalBytesTypical = 256;

}  // namespace

bool RecentIntervals::Key::operator<(const Key& o) const {
  if (start_ms != o.start_ms) return start_ms < o.start_ms;
  // The store prefixes the CSP with its length (big-endian), so shorter CSPs sort first.
  if (csp.size() != o.csp.size()) return csp.size() < o.csp.size();
  if (const int c = csp.compare(o.csp); c != 0) return c < 0;
  return event_id < o.event_id;  // bytewise, as RocksDB's comparator
}

size_t RecentIntervals::IntervalBytes(const Key& k, const Value& v) {
  return kTreeNodeBytes + sizeof(std::pair<const Key, Value>) + HeapBytes(k.csp) +
         HeapBytes(k.event_id) + HeapBytes(v.node_id);
}

size_t RecentIntervals::EntryBytes(const std::string& allocation) const {
  // The allocation id is held twice: as the hash map's key and in the LRU list.
  return kHashNodeBytes + sizeof(std::pair<const std::string, Entry>) + kListNodeBytes +
         sizeof(std::string) + 2 * HeapBytes(allocation);
}

void RecentIntervals::Insert(Entry* e, Key k, Value v) {
  const size_t add = IntervalBytes(k, v);
  if (e->intervals.emplace(std::move(k), std::move(v)).second) bytes_ += add;
}

absl::Status RecentIntervals::Fill(const HoldStore& store, const std::string& allocation, Entry* e,
                                   int64_t from_ms, int64_t to_ms) {
  return store.ScanIntervals(allocation, from_ms, to_ms, [&](const HoldStore::Interval& in) {
    Insert(e, Key{in.start_ms, in.csp, in.event_id}, Value{in.end_ms, in.gpus, in.node_id});
    return true;
  });
}

void RecentIntervals::Drop(const std::string& allocation) {
  auto it = entries_.find(allocation);
  if (it == entries_.end()) return;
  for (const auto& [k, v] : it->second.intervals) bytes_ -= IntervalBytes(k, v);
  bytes_ -= EntryBytes(allocation);
  lru_.erase(it->second.lru);
  entries_.erase(it);
}

absl::Status RecentIntervals::Scan(const HoldStore& store, const std::string& allocation,
                                   int64_t from_ms, int64_t to_ms, Visit visit) {
  if (from_ms >= to_ms) return absl::OkStatus();  // as the store: an empty range
  auto direct = [&] {
    return store.ScanIntervals(allocation, from_ms, to_ms, [&](const HoldStore::Interval& in) {
      return visit(View{in.start_ms, in.end_ms, in.gpus, in.node_id, in.csp, in.event_id});
    });
  };
  if (bytes_max_ == 0) return direct();
  auto it = entries_.find(allocation);
  if (it == entries_.end()) {
    it = entries_.try_emplace(allocation).first;
    Entry& e = it->second;
    lru_.push_front(allocation);
    e.lru = lru_.begin();
    bytes_ += EntryBytes(allocation);
    // From the scan's start up, with at most kFillAheadMax intervals past its end: after a
    // restart the store may hold far more of this allocation than any scan needs.
    e.floor_ms = from_ms;
    e.ceiling_ms = std::numeric_limits<int64_t>::max();
    const size_t ahead_max = std::min(kFillAheadMax, bytes_max_ / 4 / kIntervalBytesTypical);
    size_t ahead = 0;
    absl::Status st =
        store.ScanIntervals(allocation, from_ms, e.ceiling_ms, [&](const HoldStore::Interval& in) {
          if (in.start_ms >= to_ms && ++ahead > ahead_max) {
            e.ceiling_ms = in.start_ms;  // this one and those after it are not read
            return false;
          }
          Insert(&e, Key{in.start_ms, in.csp, in.event_id}, Value{in.end_ms, in.gpus, in.node_id});
          return true;
        });
    if (!st.ok()) {
      Drop(allocation);  // partly read: it would claim intervals it does not have
      return st;
    }
  } else {
    Entry& e = it->second;
    if (e.lru != lru_.begin()) lru_.splice(lru_.begin(), lru_, e.lru);
    // Wholly outside what the index holds: reading the store is the least work.
    if (to_ms <= e.floor_ms || from_ms >= e.ceiling_ms) return direct();
    absl::Status st;
    if (from_ms < e.floor_ms) {
      st = Fill(store, allocation, &e, from_ms, e.floor_ms);
      if (st.ok()) e.floor_ms = from_ms;
    }
    if (st.ok() && to_ms > e.ceiling_ms) {
      st = Fill(store, allocation, &e, e.ceiling_ms, to_ms);
      if (st.ok()) e.ceiling_ms = to_ms;
    }
    if (!st.ok()) {
      Drop(allocation);
      return st;
    }
  }
  const Entry& e = it->second;
  View view;
  for (auto i = e.intervals.lower_bound(Key{from_ms, {}, {}});
       i != e.intervals.end() && i->first.start_ms < to_ms; ++i) {
    view.start_ms = i->first.start_ms;
    view.end_ms = i->second.end_ms;
    view.gpus = i->second.gpus;
    view.node_id = i->second.node_id;
    view.csp = i->first.csp;
    view.event_id = i->first.event_id;
    if (!visit(view)) break;
  }
  Shrink();
  return absl::OkStatus();
}

void RecentIntervals::Put(const std::string& allocation, const HoldStore::Interval& in) {
  auto it = entries_.find(allocation);
  // Not in the index, or outside its range: the store has it, and a scan that needs it reads it.
  if (it == entries_.end() || in.start_ms < it->second.floor_ms ||
      in.start_ms >= it->second.ceiling_ms) {
    return;
  }
  Entry& e = it->second;
  Key k{in.start_ms, in.csp, in.event_id};
  if (auto old = e.intervals.find(k); old != e.intervals.end()) {
    bytes_ -= IntervalBytes(old->first, old->second);
    e.intervals.erase(old);
  }
  Insert(&e, std::move(k), Value{in.end_ms, in.gpus, in.node_id});
  Shrink();
}

void RecentIntervals::Erase(const std::string& allocation, int64_t start_ms, std::string_view csp,
                            std::string_view event_id) {
  auto it = entries_.find(allocation);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  auto i = e.intervals.find(Key{start_ms, std::string(csp), std::string(event_id)});
  if (i == e.intervals.end()) return;
  bytes_ -= IntervalBytes(i->first, i->second);
  e.intervals.erase(i);
}

void RecentIntervals::Clear() {
  entries_.clear();
  lru_.clear();
  bytes_ = 0;
}

// Oldest first: the least recently scanned allocation's lowest intervals.
void RecentIntervals::Shrink() {
  while (bytes_ > bytes_max_ && !lru_.empty()) {
    auto it = entries_.find(lru_.back());
    Entry& e = it->second;
    if (e.intervals.empty() || e.floor_ms >= e.ceiling_ms) {
      Drop(it->first);
      continue;
    }
    auto first = e.intervals.begin();
    // Every interval after it stays, so the index is still complete from just past its start.
    e.floor_ms = std::max(e.floor_ms, first->first.start_ms + 1);
    bytes_ -= IntervalBytes(first->first, first->second);
    e.intervals.erase(first);
  }
}

}  // namespace gpuledger::ingest
