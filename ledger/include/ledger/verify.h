// Whole-ledger verification: chain continuity, head, dedup index.
#pragma once

#include <cstdint>
#include <string>

#include "ledger/ledger.h"

namespace gpuledger::ledger {

struct VerifyReport {
  bool ok = true;
  uint64_t entries_checked = 0;
  uint64_t dedup_records_checked = 0;
  Head head;
  // When !ok: the first sequence number found bad (0 if the problem is not an entry) and
  // what is wrong with it.
  uint64_t first_bad_seq = 0;
  std::string problem;
};

// Reads every entry from seq 1: each key equals its entry's seq, seqs are dense, each stored
// hash equals ChainHash(previous, seq, bytes), the last one equals the head; every dedup record
// points at an entry with that identity and content, and every identity-bearing entry that is
// not a conflict is in the index.
absl::StatusOr<VerifyReport> Verify(const Ledger& ledger);

}  // namespace gpuledger::ledger
