// The store's GPU-ms counters (keys.h: l/ lines, rd/ the daily roll-up, dk/ outages by kind,
// k/ cap used, w/ own use, d/ outages), summed in memory between flushes. Applying an entry only
// adds to a hash map; Flush() writes each counter that changed once, as its stored value plus
// the sum. The Engine flushes at Commit, before a close freezes documents, and before documents
// or reports are read, so that everything that reads the store sees what the old
// read-modify-write per interval gave.
//
// Owned by the Engine, used on the Engine's thread.
#pragma once

#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "settlement/store.h"

namespace gpuledger::settlement {

class Counters {
 public:
  explicit Counters(Store* store) : store_(store) {}

  void Add(const std::string& key, __int128 delta) {
    if (delta == 0) return;
    auto it = pending_.find(key);
    if (it == pending_.end()) it = pending_.emplace(key, Pending{}).first;
    it->second.delta += delta;
  }

  // The counter's value: as stored, plus what was added since the last flush.
  __int128 Get(const std::string& key) {
    auto it = pending_.find(key);
    if (it == pending_.end()) it = pending_.emplace(key, Pending{}).first;
    Pending& p = it->second;
    if (!p.stored_known) {
      p.stored = store_->GetInt(key);
      p.stored_known = true;
    }
    return p.stored + p.delta;
  }

  // Stages every changed counter in the store's batch (a counter that sums to 0 is deleted).
  void Flush() {
    for (auto& [key, p] : pending_) {
      if (p.delta == 0) continue;
      const __int128 stored = p.stored_known ? p.stored : store_->GetInt(key);
      store_->PutInt(key, stored + p.delta);
    }
    pending_.clear();
  }

  bool empty() const { return pending_.empty(); }

 private:
  struct Pending {
    __int128 delta = 0;
    __int128 stored = 0;
    bool stored_known = false;
  };
  Store* store_;
  absl::flat_hash_map<std::string, Pending> pending_;
};

}  // namespace gpuledger::settlement
