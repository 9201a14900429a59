// Export of the ledger as a length-delimited protobuf stream of gpuledger.v1.ExportRecord:
// one ExportHeader, then ExportedEntry records in seq order, each Checkpoint right after the
// entry it covers. An auditor verifies it with `gpuledger ledger verify --export FILE
// --public-key KEY.pem` and nothing else.
#pragma once

#include <cstdint>
#include <functional>
#include <istream>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gpuledger/v1/ledger.pb.h"
#include "ledger/ledger.h"

namespace gpuledger::ledger {

struct ExportOptions {
  // First entry to export. Default: 1. On a signed ledger a slice starts right after a signed
  // checkpoint (the last one before from_seq; entry 1 if there is none), which it carries in
  // its header with the key rotations before it: that checkpoint vouches for the slice's
  // previous hash, so the slice verifies on its own with the first published key.
  uint64_t from_seq = 1;
  // Last entry to export; 0 means the head. Default: 0. On a signed ledger a slice ends at a
  // signed checkpoint (the first one at or after to_seq, if there is one), so that it verifies
  // without an unsigned tail. ExportSummary says where the slice starts and ends.
  uint64_t to_seq = 0;
  // Called every `progress_every` entries with the last seq written. Default: none.
  std::function<void(uint64_t)> progress;
  uint64_t progress_every = 100'000;
};

struct ExportSummary {
  uint64_t first_seq = 0;
  uint64_t last_seq = 0;
  uint64_t entries = 0;
  uint64_t checkpoints = 0;
};

absl::StatusOr<ExportSummary> ExportLedger(const Ledger& ledger, std::ostream& out,
                                           const ExportOptions& options);

// The same export, pulled piece by piece (e.g. to stream it over HTTP without holding it).
class ExportWriter {
 public:
  // Fails like ExportLedger if the range is empty or past the head.
  static absl::StatusOr<std::unique_ptr<ExportWriter>> Start(const Ledger& ledger,
                                                             const ExportOptions& options);
  // Appends the next records (about `max_bytes`) to `*out`; false once everything is written.
  absl::StatusOr<bool> Next(std::string* out, size_t max_bytes = 256 << 10);
  const ExportSummary& summary() const { return summary_; }

 private:
  ExportWriter(const Ledger& ledger) : ledger_(ledger) {}
  const Ledger& ledger_;
  ExportSummary summary_;
  std::map<uint64_t, std::vector<gpuledger::v1::Checkpoint>> checkpoints_;
  std::string header_;
  uint64_t next_seq_ = 0;
  bool header_written_ = false;
};

// Calls `visit` for each entry of an export stream, in order, with seq, bytes, stored hash and
// the decoded entry. Checks the header and that seqs are consecutive, not the chain: verify the
// export first (VerifyExport) when it matters.
absl::Status ReadExport(std::istream& in,
                        const std::function<absl::Status(const StoredEntry&)>& visit);

}  // namespace gpuledger::ledger
