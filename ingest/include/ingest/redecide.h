// An auditor's re-decision of a ledger (issue 16, item 6): every entry's input is decided again,
// from the ledger alone, by the same code ingest runs (Decode, then the Validator), and the
// decision is compared with the one recorded. The validation limits come from the
// ValidationSettings records in the ledger, in ledger order, so no configuration is needed;
// a ledger that never recorded any is decided with the defaults.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ingest/decide.h"
#include "ledger/ledger.h"

namespace gpuledger::ingest {

// One entry whose recorded decision is not the one made again.
struct Redecision {
  uint64_t seq = 0;
  std::string recorded;  // "ACCEPTED", "PARKED" or the reason code
  std::string decided;   // the same, decided again
  std::string detail;    // the detail of the decision made again
};

struct RedecideReport {
  uint64_t entries = 0;  // entries read (up to the head at the start)
  uint64_t agree = 0;
  uint64_t differ = 0;
  // CONFLICTING_DUPLICATE is decided by the ledger's identity index, not by Decode or the
  // validator: such entries agree when the ledger recorded the identity at an earlier entry.
  uint64_t duplicates_checked = 0;
  std::vector<Redecision> differences;  // the first `max_listed`
};

struct RedecideOptions {
  // Topic names as ingest used them (the prefix matters: UNKNOWN_TOPIC, CSP_TOPIC_MISMATCH).
  TopicNames topics;
  size_t max_listed = 100;
  // Called every `progress_every` entries with the entries done and the head.
  uint64_t progress_every = 100'000;
  std::function<void(uint64_t, uint64_t)> progress;
};

// Re-decides every committed entry of `ledger` in order. The validator's state follows the
// ledger's recorded decisions (as ingest's does), so one difference does not cascade.
absl::StatusOr<RedecideReport> Redecide(const ledger::Ledger& ledger,
                                        const RedecideOptions& options);

}  // namespace gpuledger::ingest
