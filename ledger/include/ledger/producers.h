// Which sequence numbers of one CSP producer have arrived, to report gaps: events the CSP
// sent (it numbers them 1, 2, 3, ...) that never reached the ledger.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace gpuledger::ledger {

using SeqRange = std::pair<uint64_t, uint64_t>;  // [first, last], inclusive

class ProducerProgress {
 public:
  // Most disjoint ranges kept above the contiguous prefix; past it the tracker stops recording
  // out-of-order arrivals and says so (overflowed()).
  static constexpr size_t kMaxRanges = 65'536;

  // Records that producer sequence number `seq` (>= 1) arrived.
  void Add(uint64_t seq);

  // Every seq in 1..contiguous() has arrived.
  uint64_t contiguous() const { return contiguous_; }
  // The highest seq that arrived (0 if none).
  uint64_t highest() const;
  // The ranges between contiguous()+1 and highest() that have not arrived.
  std::vector<SeqRange> Missing() const;
  // Total count of missing sequence numbers.
  uint64_t MissingCount() const;
  bool overflowed() const { return overflowed_; }

  std::string Encode() const;
  static absl::StatusOr<ProducerProgress> Decode(std::string_view bytes);

 private:
  uint64_t contiguous_ = 0;
  std::vector<SeqRange> above_;  // sorted, disjoint, non-adjacent, all > contiguous_ + 1
  bool overflowed_ = false;
};

}  // namespace gpuledger::ledger
