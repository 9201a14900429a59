// Settlement as ledger entries are applied: the live drafts of every period, the frozen
// documents of closed periods and the adjustments that late events make to them.
//
// The rules are in docs/SETTLEMENT.md. In short: each accepted usage interval is priced when it
// is applied, in ledger order, with the registry as the ledger recorded it up to then; it is
// split at period bounds, rate-card, co-pay-policy and institution-type changes and where it
// crosses its allocation's GPU-hour cap; its GPU-ms are added to line totals kept per period.
// Documents are built from those totals, so reading a draft does not rescan the ledger. A
// PeriodClose entry freezes its period's documents as of the entry before it. Applying the
// same entries to a fresh store gives byte-identical documents.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/period.h"
#include "gpuledger/v1/settlement.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ledger/ledger.h"
#include "ledger/registry.h"
#include "settlement/reports.h"
#include "settlement/store.h"

namespace gpuledger::settlement {

class Counters;  // src/counters.h

struct SettleOptions {
  // VAT on the co-pay total, basis points. Default: 1,000 (10%). Fixed for a store: it is
  // recorded when the store is created, and a store with another value refuses to open.
  int64_t vat_bp = 1'000;
};

// A closed period as the store recorded it.
struct CloseRecord {
  base::Period period;
  uint64_t close_seq = 0;
  uint64_t covered_seq = 0;
  int64_t closed_at_ms = 0;
  std::vector<std::pair<std::string, std::string>> digests;  // (document, sha256 hex)
};

// Which documents to build.
struct DocumentFilter {
  std::optional<std::string> institution_id;  // only this institution's invoice
  std::optional<std::string> csp_id;          // only this CSP's statement
  bool invoices = true;
  bool statements = true;
  bool programs = true;
};

// The value of a pool's own use in a period as recorded (rating.cc): Σ GPU-ms × won per
// GPU-hour at the rate in force at each slice, and the GPU-ms with no rate in force.
struct OwnUseValue {
  __int128 numerator = 0;
  int64_t unpriced_gpu_ms = 0;
};

// An accepted outage on a CSP's pool, as reservations count it (reserved.cc).
struct PoolOutage {
  int program = 0;
  int model = 0;
  int64_t start_ms = 0;
  int64_t end_ms = 0;
  int64_t gpus = 0;
};

class Engine {
 public:
  // Loads the engine's state from `store` (which it does not own). A new store is stamped with
  // `options`; an existing one must have been made with the same options.
  static absl::StatusOr<std::unique_ptr<Engine>> Open(Store* store, const SettleOptions& options);
  ~Engine();

  // The last ledger entry applied (0: none), and its chain hash (hex; empty if none).
  uint64_t applied_through() const { return applied_through_; }
  std::string applied_hash() const;

  // Applies ledger entry `e`, which must be entry applied_through() + 1. Staged in the store
  // until Commit().
  absl::Status Apply(const ledger::StoredEntry& e);
  absl::Status Commit();

  // The documents of `period`: frozen if it is closed, otherwise a draft as of
  // applied_through(). Digests are set on closed periods only. A document that cannot be
  // computed (a sum or price beyond 64 bits, unreadable data of its own) is left out and named
  // with the reason in `errors`; every other document is built. Fails only if the one
  // institution's invoice or the one CSP's statement that `filter` names is such a document
  // (FAILED_PRECONDITION, with the reason), or the period's frozen documents are unreadable.
  absl::StatusOr<gpuledger::v1::PeriodDocuments> Documents(base::Period period,
                                                           const DocumentFilter& filter = {});
  // Usage GPU-ms of a CSP's allocations per KST day of `period` (index 0 = the 1st), as
  // reported (outage credits not subtracted). For charts; never for money.
  std::vector<int64_t> DailyUsage(base::Period period, const std::string& csp_id);

  // Reports over time (reports.h, docs/REPORTS.md), from the roll-ups as of applied_through().
  // Fails if a sum does not fit 64 bits (OUT_OF_RANGE) or the store is unreadable.
  absl::StatusOr<UsageReport> Usage(const UsageQuery& query);
  // The budgets of fiscal year `year` (every programme, or one), drawn down by each month's
  // documents (frozen if closed, drafts otherwise).
  absl::StatusOr<BudgetReport> Budgets(uint32_t year, std::optional<int> program = std::nullopt);

  // GPU-ms taken so far from the GPU-hour cap of `cap_holder` (Registry::CapHolder: the first
  // allocation of a chain of transfers).
  __int128 CapUsedGpuMs(const std::string& cap_holder);

  // Closed periods, oldest first.
  std::vector<CloseRecord> Closes();
  std::optional<base::Period> last_closed() const { return registry_.last_closed(); }
  const ledger::Registry& registry() const { return registry_; }

 private:
  explicit Engine(Store* store, SettleOptions options);

  absl::Status ApplyRegistry(uint64_t seq, const std::string& bytes);
  absl::Status ApplyUsage(uint64_t seq, const std::string& source_id,
                          const gpuledger::v1::UsageEvent& event);
  void ApplyCorrection(uint64_t seq, const std::string& source_id,
                       const gpuledger::v1::UsageEvent& event);
  void ApplyOwnUse(uint64_t seq, const std::string& source_id,
                   const gpuledger::v1::UsageEvent& event);
  void ApplyOutage(uint64_t seq, const std::string& source_id,
                   const gpuledger::v1::UsageEvent& event);
  void WithdrawOutage(uint64_t seq, const std::string& source_id,
                      const gpuledger::v1::UsageEvent& event);
  // Adds (sign 1) or takes back (sign -1) an outage's GPU-ms on its pool's statement rows.
  void CountOutage(const std::string& source_id, const gpuledger::v1::OutageInterval& o, int sign);
  // Recomputes the outage credits of the allocation's usage that overlaps [start_ms, end_ms):
  // after its usage changed there (nothing to do where no outage is declared), or, with
  // `outages_changed`, after an outage there was declared or withdrawn.
  void RecreditWithin(const std::string& allocation_id, int64_t start_ms, int64_t end_ms,
                      bool outages_changed = false);
  void AddInterval(uint64_t seq, const std::string& source_id, const std::string& event_id,
                   const gpuledger::v1::UsageInterval& interval);
  // Takes what fits of `interval` from its allocation's GPU-hour cap (recorded in `rec`); returns
  // the instant from which the interval is beyond the cap (its end: never).
  int64_t TakeCap(const gpuledger::v1::Allocation& allocation,
                  const gpuledger::v1::UsageInterval& interval, gpuledger::v1::StoredInterval* rec);
  void NoteUsageOutside(gpuledger::v1::StoredInterval* rec);
  std::string UnpricedWhy(const gpuledger::v1::Allocation& alloc, gpuledger::v1::GpuModel model,
                          int64_t t) const;
  void PriceStretch(const gpuledger::v1::Allocation& alloc, int64_t cap_from, int64_t lo_ms,
                    int64_t hi_ms, gpuledger::v1::StoredInterval* rec);
  // Values own use over [lo_ms, hi_ms), inside one period, slice by slice at the pool's rate
  // card as recorded so far: on the pool's value counters, and its slices to `rec`.
  void ValueOwnUseSlices(gpuledger::v1::StoredOwnUse* rec, int64_t lo_ms, int64_t hi_ms);
  void Rerate(const gpuledger::v1::Rerating& r);
  void RerateOwnUse(const gpuledger::v1::Rerating& r);
  void RerateInterval(const gpuledger::v1::Allocation& alloc, int64_t from, int64_t to,
                      gpuledger::v1::StoredInterval* rec);
  void RemoveInterval(const gpuledger::v1::StoredInterval& rec);
  void Truncate(const std::string& allocation_id, int64_t end_ms);
  // The operator released the allocation's held usage: its held slices are billed at `copay_bp`.
  void Release(const std::string& allocation_id, uint32_t copay_bp);
  void AddLine(const std::string& period, const std::string& line_key, __int128 gpu_ms);
  // Adds `gpus` × [start_ms, end_ms) to the daily roll-up (keys.h rd/) under `rest`
  // (keys::RollupRest), day by day.
  void AddDaily(const std::string& rest, int64_t start_ms, int64_t end_ms, int64_t gpus);
  // The roll-up fields of a usage slice of `rec` on line `line_key`.
  std::string UsageRollup(const gpuledger::v1::StoredInterval& rec,
                          const std::string& line_key) const;
  void AddUnpriced(const std::string& period, uint64_t seq, const std::string& source_id,
                   const std::string& event_id, const std::string& why,
                   gpuledger::v1::StoredInterval* rec, __int128 gpu_ms = 0);
  void NoteOutside(uint64_t seq, const std::string& source_id, const std::string& event_id,
                   std::string_view what, int64_t start_ms, int64_t end_ms);
  absl::Status Close(uint64_t seq, const gpuledger::v1::RegistryEvent& event);
  void NumberBills(base::Period period, int64_t closed_at_ms, gpuledger::v1::PeriodDocuments* docs);
  // The own-use row of a pool for a period with `own_use_gpu_ms` of own use.
  absl::StatusOr<gpuledger::v1::OwnUseRow> OwnUseRowFor(const std::string& csp, int program,
                                                        int model, base::Period period,
                                                        int64_t own_use_gpu_ms,
                                                        const OwnUseValue& value) const;
  // Reservations of leased pools (reserved.cc, docs/SETTLEMENT.md "Reserved capacity"). The
  // accepted outages of a CSP's pools, pool and allocation outages alike.
  std::vector<PoolOutage> OutagesOf(const std::string& csp) const;
  // The reserved row of a pool for a period, when its pool record in force at the period's last
  // millisecond prices it per reserved capacity; without its delivered usage.
  absl::StatusOr<std::optional<gpuledger::v1::ReservedRow>> ReservedRowFor(
      const std::string& csp, int program, int model, base::Period period,
      const std::vector<PoolOutage>& outages) const;
  // The CSP's reservations of closed periods as they are now less as billed: adjustment rows.
  absl::StatusOr<std::vector<gpuledger::v1::ReservedRow>> ReservationAdjustments(
      const std::string& csp, const std::vector<PoolOutage>& outages) const;
  // The own-use value of a pool and period (keys::PoolRest) as stored.
  absl::StatusOr<OwnUseValue> ReadOwnUseValue(const std::string& pool_rest) const;
  absl::StatusOr<gpuledger::v1::PeriodDocuments> Draft(base::Period period,
                                                       const DocumentFilter& filter);
  absl::Status DraftStatements(base::Period period, const DocumentFilter& filter,
                               const std::map<std::string, gpuledger::v1::Invoice>& invoices,
                               std::map<std::string, std::string>* errors,
                               gpuledger::v1::PeriodDocuments* docs);
  bool IsClosed(const std::string& period) const { return closed_.contains(period); }

  Store* store_;
  SettleOptions options_;
  ledger::Registry registry_;
  uint64_t applied_through_ = 0;
  ledger::Digest applied_hash_{};
  std::set<std::string> closed_;
  // Allocations with a declared outage (most have none: their intervals need no credit scan).
  std::set<std::string> allocations_with_outages_;
  // GPU-ms counters summed in memory, written to the store once per batch (at Commit).
  std::unique_ptr<Counters> counters_;
};

// How the ledger's entries reach the engine. Settle, serve and audit replay all catch up through
// CatchUp below: apply in ledger order, commit every `batch` entries (each commit atomic with the
// store's position), report progress after each commit and at the end.
struct CatchUpOptions {
  // Last entry to apply (0: the head at the call, or the end of the source).
  uint64_t until_seq = 0;
  // Entries per commit. Default: 20,000. Counters are summed in memory between commits, so a
  // larger batch writes less; serve uses a smaller one to hold its engine lock briefly.
  uint64_t batch = 20'000;
  // Called after each commit and once at the end with the last applied entry and the target
  // (0 if the source's end is not known in advance, as with an export stream).
  std::function<void(uint64_t applied, uint64_t target)> progress;
  // Read the source on a second thread ahead of the engine, when it has kReadAheadMin entries or
  // more to apply (or an end not known in advance). Default: true; false applies each entry as
  // the source hands it over, on the calling thread.
  bool read_ahead = true;
};

// Catch-ups shorter than this apply on the calling thread (a thread costs more than it saves).
inline constexpr uint64_t kReadAheadMin = 1'000;

// Visits entries in seq order from `from_seq`; stops when `visit` returns false.
using EntryVisitor = std::function<absl::StatusOr<bool>(const ledger::StoredEntry&)>;
using EntrySource = std::function<absl::Status(uint64_t from_seq, const EntryVisitor& visit)>;

// Applies the entries of `source` after engine->applied_through(), up to `target` (0: to the
// source's end), committing every options.batch entries. Returns how many it applied.
absl::StatusOr<uint64_t> CatchUp(const EntrySource& source, uint64_t target, Engine* engine,
                                 const CatchUpOptions& options = {});
// The same from a ledger, up to options.until_seq (0: the head at the call). Fails if the store
// was built from another ledger (its last applied entry's hash differs).
absl::StatusOr<uint64_t> CatchUp(const ledger::Ledger& ledger, Engine* engine,
                                 const CatchUpOptions& options = {});

// A store and its engine, opened together.
struct Settlement {
  std::unique_ptr<Store> store;
  std::unique_ptr<Engine> engine;
  bool rebuilt = false;  // the store had another format and was rebuilt from the ledger
};
// Opens (creating if missing) the store at `store_path` and brings it up to the ledger's head.
// A store written in another format (settlement/src/keys.h) is deleted and rebuilt (unless
// read-only: then Engine::Open refuses it).
absl::StatusOr<Settlement> OpenSettlement(const std::string& store_path,
                                          const ledger::Ledger& ledger,
                                          const SettleOptions& options,
                                          const StoreOptions& store_options = {},
                                          const CatchUpOptions& catch_up = {});

// The canonical JSON of a document and its SHA-256 (lower-case hex).
std::string DigestHex(const std::string& canonical_json);

}  // namespace gpuledger::settlement
