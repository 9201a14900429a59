// An effective-dated value: each record applies from its instant until the next one.
#pragma once

#include <cstdint>
#include <iterator>
#include <map>
#include <optional>
#include <vector>

namespace gpuledger::ledger {

template <typename T>
class Timeline {
 public:
  // Records `value` from `from_ms` on. A later Set with the same instant replaces the earlier
  // one (records are applied in ledger order, so the ledger decides).
  void Set(int64_t from_ms, T value) { by_from_[from_ms] = std::move(value); }

  // The value in force at `t_ms`, or nullopt before the first record.
  std::optional<T> At(int64_t t_ms) const {
    auto it = by_from_.upper_bound(t_ms);
    if (it == by_from_.begin()) return std::nullopt;
    return std::prev(it)->second;
  }

  // The value in force at `t_ms` without a copy (null before the first record); valid until the
  // next Set.
  const T* Find(int64_t t_ms) const {
    auto it = by_from_.upper_bound(t_ms);
    if (it == by_from_.begin()) return nullptr;
    return &std::prev(it)->second;
  }

  // Appends every change instant strictly inside (lo_ms, hi_ms) to `out`.
  void ChangesWithin(int64_t lo_ms, int64_t hi_ms, std::vector<int64_t>* out) const {
    for (auto it = by_from_.upper_bound(lo_ms); it != by_from_.end() && it->first < hi_ms; ++it) {
      out->push_back(it->first);
    }
  }

  // The value recorded at exactly `from_ms`, if any.
  std::optional<T> ExactlyAt(int64_t from_ms) const {
    auto it = by_from_.find(from_ms);
    if (it == by_from_.end()) return std::nullopt;
    return it->second;
  }

  // Calls f(from_ms, to_ms, value) for each stretch of [lo_ms, hi_ms) that has a value, in
  // order.
  template <typename F>
  void ForEachWithin(int64_t lo_ms, int64_t hi_ms, F f) const {
    auto it = by_from_.upper_bound(lo_ms);
    int64_t from = lo_ms;
    if (it != by_from_.begin()) {
      auto cur = std::prev(it);
      for (; it != by_from_.end() && it->first < hi_ms; cur = it, ++it) {
        if (from < it->first) f(from, it->first, cur->second);
        from = it->first;
      }
      if (from < hi_ms) f(from, hi_ms, cur->second);
      return;
    }
    // Nothing before lo: start at the first record inside the range.
    for (; it != by_from_.end() && it->first < hi_ms; ++it) {
      auto next = std::next(it);
      const int64_t to = next == by_from_.end() || next->first > hi_ms ? hi_ms : next->first;
      f(it->first, to, it->second);
    }
  }

  bool empty() const { return by_from_.empty(); }

 private:
  std::map<int64_t, T> by_from_;
};

}  // namespace gpuledger::ledger
