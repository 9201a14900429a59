// The stateful half of ingest's decision: checks an event against the registry and against the
// usage already accepted, in ledger order. Decisions depend only on the ledger's order and
// content (including each message's time of record, TimeOfRecord in decide.h, which the entry
// keeps), never on the wall clock at the time of checking, so
// rebuilding a validator from the ledger and re-deciding reproduces every decision.
//
// Its memory does not grow with the number of events: the accepted intervals, who holds them
// and which events were corrected live in a RocksDB state store (HoldStore, derived from the
// ledger); in memory are the registry, the parked entries, one figure per allocation and an
// index of recent intervals bounded in bytes (RecentIntervals).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "base/limits.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/decide.h"
#include "ingest/limits.h"
#include "ledger/ledger.h"
#include "ledger/registry.h"

namespace gpuledger::ingest {

class HoldStore;
class RecentIntervals;

// An accepted outage's (or own use's) [start, end) and GPUs.
struct OutageSpan {
  int64_t start_ms;
  int64_t end_ms;
  uint32_t gpus;
};

// An entry as ingest recorded it: its candidate (with the recorded decision) and, for accepted
// and parked entries, the event its payload decodes to. What Validator::Recorded takes.
Decoded DecodedFromEntry(const gpuledger::v1::LedgerEntry& e);

// Owned by the ingest loop; one thread.
class Validator {
 public:
  // Starts with an empty state store in memory. `recent_intervals_bytes`: the bound on the
  // in-memory index of recent intervals in front of the state store (src/recent_intervals.h);
  // 0 reads the store for every usage event. Decisions do not depend on it.
  explicit Validator(ValidationLimits limits,
                     size_t recent_intervals_bytes = gpuledger::limits::kRecentIntervalsBytes);
  ~Validator();

  // Opens the state store at `state_dir` (empty: keeps the one in memory) and brings it up to
  // `ledger`'s head: replays the entries after its marker (all of them into a new or foreign
  // store), and from every entry rebuilds the registry and the parked entries (at ingest start).
  absl::Status Load(const ledger::Ledger& ledger, const std::string& state_dir = "");

  // Writes the state staged since the last call to the state store, marked as of `head` (the
  // ledger's committed head), on the store's writer thread. Call after each ledger commit.
  // Fails if the previous write failed.
  absl::Status Persist(const ledger::Head& head);
  // Waits for the last Persist's write: before a clean stop, so that its error is not lost.
  absl::Status Drain();

  // What the state store holds in memory (RocksDB's accounting), and the index of recent
  // intervals in front of it.
  ledger::StoreMemory StateStoreMemory() const;
  size_t RecentIntervalsBytes() const;

  // The limits that decide now: the constructor's, changed by the ValidationSettings records
  // in the ledger (accepted, in ledger order; Load replays them), and the entry of the last one
  // (0: none). Decode() takes them too.
  const ValidationLimits& limits() const { return limits_; }
  uint64_t limits_from_seq() const { return limits_from_seq_; }

  // The first error reading the state store, if any: the decisions since are not to be trusted
  // (the caller stops without committing them).
  const absl::Status& status() const { return error_; }

  // Completes the decision about `d`, which Decode() produced: if Decode accepted it, checks its
  // event against the registry and earlier usage and sets the candidate's
  // reason_code/reason_detail, or `park`. Does not change the state.
  void Check(Decoded* d) const;

  // Updates the state with an entry the ledger recorded at `seq` (not for duplicates or
  // refused conflicts, which record nothing that counts).
  void Recorded(const Decoded& d, uint64_t seq);

  // Parked entries that can be decided now (their allocation was announced, or their grace
  // period passed), in seq order, each with resolves_seq set. For each: Check, append, Recorded.
  std::vector<Decoded> TakeResolvable() const;

  size_t parked() const { return parked_.size(); }
  const ledger::Registry& registry() const { return registry_; }

 private:
  using Identity = std::pair<std::string, std::string>;  // (CSP, event id)
  // Own use and pool outages wait for their pool, not an allocation.
  struct PoolKey {
    gpuledger::v1::Program program;
    gpuledger::v1::GpuModel model;
    int64_t at_ms;
  };
  struct Parked {
    Decoded decoded;
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
  // An outage withdrawal: its target is an accepted outage of the same CSP, not withdrawn yet,
  // with the same allocation (or pool) as the withdrawal names.
  void CheckWithdrawal(const gpuledger::v1::UsageEvent& e, ledger::Candidate* c) const;
  // The allocation `allocation_id` if it is announced, hosted by `csp`, of `model`, and its
  // window holds [start_ms, end_ms); otherwise parks `c` (not announced yet) or rejects it, and
  // returns nullptr.
  const gpuledger::v1::Allocation* FitAllocation(const std::string& csp,
                                                 const std::string& allocation_id,
                                                 gpuledger::v1::GpuModel model, int64_t start_ms,
                                                 int64_t end_ms, ledger::Candidate* c) const;
  // An outage of an allocation (its window, model, program and grant) or of a pool (its size),
  // and with the outages already accepted on the same allocation or pool never more GPUs out
  // of service at once than there are.
  void CheckOutage(const std::string& csp, const gpuledger::v1::OutageInterval& o,
                   ledger::Candidate* c) const;
  // Own use of a pool holding `pool_gpus` at its start: with the CSP's own use already accepted
  // on the pool, never more than the pool holds (GPUS_OVER_POOL); and the state's priority: at
  // every instant, the programme usage recorded on the pool's allocations, the own use already
  // accepted and this one fit the pool (OWN_USE_DISPLACES_PROGRAMME).
  void CheckOwnUse(const std::string& csp, const gpuledger::v1::OwnUseInterval& o,
                   uint32_t pool_gpus, ledger::Candidate* c) const;
  void Hold(const Identity& who, const gpuledger::v1::UsageInterval& u);
  void Release(const Identity& who);
  void NoteError(const absl::Status& st) const;

  ValidationLimits limits_;
  uint64_t limits_from_seq_ = 0;  // the ValidationSettings entry in force (0: none)
  ledger::Registry registry_;
  // Accepted intervals, their holders and the retired (corrected or cancelled) events.
  std::unique_ptr<HoldStore> store_;
  // The intervals of recently checked allocations, in front of store_.
  std::unique_ptr<RecentIntervals> recent_;
  // While Load replays entries the state store already reflects: holds are not written again.
  bool replaying_stored_ = false;
  mutable absl::Status error_;
  // The longest interval ever held per allocation: how far back an overlap can start.
  std::map<std::string, int64_t> longest_held_;
  std::map<uint64_t, Parked> parked_;  // by seq
  // Indexes of parked_ (seqs): by the allocation or pool they wait for, and by Kafka time.
  using PoolIndexKey = std::tuple<std::string, int, int>;  // CSP, program, model
  std::map<std::string, std::set<uint64_t>> parked_by_allocation_;
  std::map<PoolIndexKey, std::set<uint64_t>> parked_by_pool_;
  std::set<std::pair<int64_t, uint64_t>> parked_by_time_;  // (time of record, seq)
  uint64_t registry_generation_ = 0;                       // registry events applied
  mutable uint64_t checked_generation_ = 0;                // as of the last look for announced ones
  std::map<Identity, std::string> parked_identities_;      // → allocation id
  // Accepted outages by what they hit (OutageKey): [start, end) and GPUs. Outages are few (a
  // handful per pool and month) next to usage, so they stay in memory; Load rebuilds them.
  std::map<std::string, std::vector<OutageSpan>> outages_;
  // The same outages by (CSP, event id), for withdrawals; withdrawn ones stay, marked.
  struct AcceptedOutage {
    std::string key;  // in outages_
    OutageSpan span;
    std::string allocation_id;
    int program = 0;
    int model = 0;
    bool withdrawn = false;
  };
  std::map<Identity, AcceptedOutage> outage_events_;
  // Accepted own use by pool (CSP, program, model). Like outages, a handful per pool and day;
  // Load rebuilds them.
  std::map<PoolIndexKey, std::vector<OutageSpan>> own_use_;
  int64_t latest_record_ms_ = -1;  // the latest time of record seen (parking's clock)
};

}  // namespace gpuledger::ingest
