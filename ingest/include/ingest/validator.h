// The stateful half of ingest's decision: checks an event against the registry and against the
// usage already accepted, in ledger order. Decisions depend only on the ledger's order and
// content (including each message's recorded Kafka timestamp), never on the wall clock, so
// rebuilding a validator from the ledger and re-deciding reproduces every decision.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/decide.h"
#include "ledger/ledger.h"
#include "ledger/registry.h"

namespace gpuledger::ingest {

// Owned by the ingest loop; one thread.
class Validator {
 public:
  explicit Validator(ValidationLimits limits);

  // Rebuilds the state from every entry of `ledger`, in order (at ingest start).
  absl::Status Load(const ledger::Ledger& ledger);

  // Completes the decision about `c`, which Decide() produced: if Decide accepted it, checks it
  // against the registry and earlier usage and sets reason_code/reason_detail, or `park`. Does
  // not change the state.
  void Check(ledger::Candidate* c) const;

  // Updates the state with an entry the ledger recorded at `seq` (not for duplicates or
  // refused conflicts, which record nothing that counts).
  void Recorded(const ledger::Candidate& c, uint64_t seq);

  // Parked entries that can be decided now (their allocation was announced, or their grace
  // period passed), in seq order, each with resolves_seq set. For each: Check, append, Recorded.
  std::vector<ledger::Candidate> TakeResolvable() const;

  size_t parked() const { return parked_.size(); }
  const ledger::Registry& registry() const { return registry_; }

 private:
  using Identity = std::pair<std::string, std::string>;  // (CSP, event id)
  struct Held {
    int64_t end_ms;
    uint32_t gpus;
    std::string node_id;
    Identity holder;
  };
  // Own use and pool outages wait for their pool, not an allocation.
  struct PoolKey {
    gpuledger::v1::Program program;
    gpuledger::v1::GpuModel model;
    int64_t at_ms;
  };
  struct Parked {
    ledger::Candidate candidate;
    std::string allocation_id;
    std::optional<PoolKey> pool;
  };

  void CheckUsage(const gpuledger::v1::UsageEvent& e, ledger::Candidate* c) const;
  void CheckInterval(const std::string& csp, const gpuledger::v1::UsageInterval& u,
                     const Identity* replacing, ledger::Candidate* c) const;
  // The GPUs of a CSP's pool at `at_ms`; if it has none (yet), parks `c` (or, when `c` is the
  // resolution of a parked entry, rejects it UNKNOWN_POOL) and returns nullopt.
  std::optional<uint32_t> KnownPool(const std::string& csp, gpuledger::v1::Program program,
                                    gpuledger::v1::GpuModel model, int64_t at_ms,
                                    ledger::Candidate* c) const;
  void CheckCorrection(const gpuledger::v1::UsageEvent& e, ledger::Candidate* c) const;
  void Hold(const Identity& who, const gpuledger::v1::UsageInterval& u);
  void Release(const Identity& who);

  ValidationLimits limits_;
  ledger::Registry registry_;
  // Accepted intervals per allocation, by start.
  std::map<std::string, std::multimap<int64_t, Held>> intervals_;
  // The longest interval ever held per allocation: how far back an overlap can start.
  std::map<std::string, int64_t> longest_held_;
  // Events whose interval currently counts, and where it is.
  std::map<Identity, std::pair<std::string, int64_t>> holders_;  // → (allocation, start)
  std::set<Identity> retired_;                                   // corrected or cancelled
  std::map<uint64_t, Parked> parked_;                            // by seq
  // Indexes of parked_ (seqs): by the allocation or pool they wait for, and by Kafka time.
  using PoolIndexKey = std::tuple<std::string, int, int>;  // CSP, program, model
  std::map<std::string, std::set<uint64_t>> parked_by_allocation_;
  std::map<PoolIndexKey, std::set<uint64_t>> parked_by_pool_;
  std::set<std::pair<int64_t, uint64_t>> parked_by_time_;  // (Kafka time, seq)
  uint64_t registry_generation_ = 0;                       // registry events applied
  mutable uint64_t checked_generation_ = 0;                // as of the last look for announced ones
  std::map<Identity, std::string> parked_identities_;      // → allocation id
  int64_t latest_kafka_ms_ = -1;
};

}  // namespace gpuledger::ingest
