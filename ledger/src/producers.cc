#include "ledger/producers.h"

#include <algorithm>

#include "base/limits.h"
#include "keys.h"

namespace gpuledger::ledger {

// Listed with every other memory bound in base/limits.h.
static_assert(ProducerProgress::kMaxRanges == limits::kProducerRangesMax);

void ProducerProgress::Add(uint64_t seq) {
  if (seq == 0 || seq <= contiguous_) return;
  if (seq == contiguous_ + 1) {
    contiguous_ = seq;
    while (!above_.empty() && above_.front().first == contiguous_ + 1) {
      contiguous_ = above_.front().second;
      above_.erase(above_.begin());
    }
    return;
  }
  // First range whose end is >= seq - 1 (it may absorb seq, or seq goes before it).
  auto it = std::lower_bound(above_.begin(), above_.end(), seq,
                             [](const SeqRange& r, uint64_t s) { return r.second + 1 < s; });
  if (it != above_.end() && it->first <= seq && seq <= it->second) return;  // already there
  if (it != above_.end() && it->second + 1 == seq) {
    it->second = seq;
    auto next = it + 1;
    if (next != above_.end() && next->first == seq + 1) {
      it->second = next->second;
      above_.erase(next);
    }
    return;
  }
  if (it != above_.end() && it->first == seq + 1) {
    it->first = seq;
    return;
  }
  if (above_.size() >= kMaxRanges) {
    overflowed_ = true;
    return;
  }
  above_.insert(it, {seq, seq});
}

uint64_t ProducerProgress::highest() const {
  return above_.empty() ? contiguous_ : above_.back().second;
}

std::vector<SeqRange> ProducerProgress::Missing() const {
  std::vector<SeqRange> out;
  uint64_t next = contiguous_ + 1;
  for (const SeqRange& r : above_) {
    if (r.first > next) out.push_back({next, r.first - 1});
    next = r.second + 1;
  }
  return out;
}

uint64_t ProducerProgress::MissingCount() const {
  uint64_t n = 0;
  for (const SeqRange& r : Missing()) n += r.second - r.first + 1;
  return n;
}

std::string ProducerProgress::Encode() const {
  std::string out;
  out.push_back(overflowed_ ? 1 : 0);
  keys::PutBe64(&out, contiguous_);
  for (const SeqRange& r : above_) {
    keys::PutBe64(&out, r.first);
    keys::PutBe64(&out, r.second);
  }
  return out;
}

absl::StatusOr<ProducerProgress> ProducerProgress::Decode(std::string_view bytes) {
  if (bytes.size() < 9 || (bytes.size() - 9) % 16 != 0) {
    return absl::DataLossError("producer progress record is damaged");
  }
  ProducerProgress p;
  p.overflowed_ = bytes[0] != 0;
  p.contiguous_ = keys::GetBe64(bytes.substr(1));
  for (size_t i = 9; i < bytes.size(); i += 16) {
    p.above_.push_back({keys::GetBe64(bytes.substr(i)), keys::GetBe64(bytes.substr(i + 8))});
  }
  return p;
}

}  // namespace gpuledger::ledger
