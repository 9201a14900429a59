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

absl::Status RecentIntervals::Scan(const HoldStore& store, const std::string& allocation,
                                   int64_t from_ms, int64_t to_ms, Visit visit) {
  if (from_ms >= to_ms) return absl::OkStatus();  // as the store: an empty range
  if (bytes_max_ == 0) {
    return store.ScanIntervals(allocation, from_ms, to_ms, [&](const HoldStore::Interval& in) {
      return visit(View{in.start_ms, in.end_ms, in.gpus, in.node_id, in.csp, in.event_id});
    });
  }
  auto [it, created] = entries_.try_emplace(allocation);
  Entry& e = it->second;
  if (created) {
    e.floor_ms = std::numeric_limits<int64_t>::max();  // nothing known yet
    lru_.push_front(allocation);
    e.lru = lru_.begin();
    bytes_ += EntryBytes(allocation);
  } else if (e.lru != lru_.begin()) {
    lru_.splice(lru_.begin(), lru_, e.lru);
  }
  if (from_ms < e.floor_ms) {
    absl::Status st =
        store.ScanIntervals(allocation, from_ms, e.floor_ms, [&](const HoldStore::Interval& in) {
          Insert(&e, Key{in.start_ms, in.csp, in.event_id}, Value{in.end_ms, in.gpus, in.node_id});
          return true;
        });
    if (!st.ok()) {
      // Partly read: the entry would claim intervals it does not have.
      Clear();
      return st;
    }
    e.floor_ms = from_ms;
  }
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
  // Not in the index, or below its floor: the store has it, and a scan that needs it reads it.
  if (it == entries_.end() || in.start_ms < it->second.floor_ms) return;
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
    if (e.intervals.empty()) {
      bytes_ -= EntryBytes(it->first);
      lru_.pop_back();
      entries_.erase(it);
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
