// The engine: opening a store, applying ledger entries in order, committing, catching up.
// The stages live beside it: rating.cc, caps_credits.cc, close.cc, documents.cc.

#include "settlement/engine.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/limits.h"
#include "base/process_memory.h"
#include "base/status.h"
#include "counters.h"
#include "engine_internal.h"
#include "gpuledger/v1/registry.pb.h"
#include "keys.h"
#include "ledger/hash.h"

namespace gpuledger::settlement {

using namespace internal;  // NOLINT: the engine's own helpers

std::string DigestHex(const std::string& canonical_json) {
  return ledger::ToHex(ledger::Sha256(canonical_json));
}

Engine::Engine(Store* store, SettleOptions options)
    : store_(store), options_(options), counters_(std::make_unique<Counters>(store)) {}
Engine::~Engine() = default;

std::string Engine::applied_hash() const {
  return applied_through_ == 0 ? std::string() : ledger::ToHex(applied_hash_);
}

namespace {
bool StoreNeedsRebuild(Store* store) {
  if (auto format = store->Get(keys::kFormatKey)) return *format != keys::kFormatValue;
  bool empty = true;
  store->Scan("", [&](std::string_view, std::string_view) {
    empty = false;
    return false;
  });
  return !empty;
}
}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> Engine::Open(Store* store, const SettleOptions& options) {
  std::unique_ptr<Engine> engine(new Engine(store, options));
  if (StoreNeedsRebuild(store)) {
    const auto format = store->Get(keys::kFormatKey);
    return absl::FailedPreconditionError(absl::StrCat(
        "settlement store ", store->path(), " has the format '",
        format.value_or("gpuledger-settlement/1"), "', not '", keys::kFormatValue,
        "'; it is derived data: `gpuledger settle` rebuilds it from the ledger (or delete it)"));
  }
  store->Put(keys::kFormatKey, keys::kFormatValue);
  const std::string stamp = absl::StrCat("vat_bp=", options.vat_bp);
  if (auto existing = store->Get(keys::kOptionsKey)) {
    if (*existing != stamp) {
      return absl::FailedPreconditionError(absl::StrCat(
          "settlement store ", store->path(), " was built with ", *existing, ", not ", stamp,
          "; use the same options or rebuild the store (delete it: it is derived data)"));
    }
  } else {
    store->Put(keys::kOptionsKey, stamp);
  }
  if (auto applied = store->Get(keys::kAppliedKey)) {
    KeyReader r(*applied);
    const bool readable = r.U64(&engine->applied_through_) &&
                          (r.Done() ? engine->applied_through_ == 0
                                    : ledger::FromBytes(r.rest(), &engine->applied_hash_));
    if (!readable) return absl::DataLossError("settlement store: unreadable s/applied");
  }
  absl::Status bad;
  store->Scan(keys::kRegistry, [&](std::string_view key, std::string_view value) {
    v1::RegistryEvent e;
    if (!e.ParseFromString(std::string(value))) {
      KeyReader r(key);
      uint64_t seq = 0;
      (void)(r.Prefix(keys::kRegistry) && r.U64(&seq));
      bad = absl::DataLossError(
          absl::StrCat("settlement store: bad registry record of ledger entry ", seq));
      return false;
    }
    engine->registry_.Apply(e);
    return true;
  });
  GPULEDGER_RETURN_IF_ERROR(bad);
  store->Scan(keys::kOutageRecord, [&](std::string_view key, std::string_view) {
    KeyReader r(key);
    std::string allocation_id;
    if (!r.Prefix(keys::kOutageRecord) || !r.Str(&allocation_id)) {
      bad = absl::DataLossError("settlement store: bad outage record key");
      return false;
    }
    engine->allocations_with_outages_.insert(std::move(allocation_id));
    return true;
  });
  GPULEDGER_RETURN_IF_ERROR(bad);
  store->Scan(keys::kClose, [&](std::string_view key, std::string_view) {
    KeyReader r(key);
    std::string period;
    if (!r.Prefix(keys::kClose) || !r.Str(&period) || !r.Done()) {
      bad = absl::DataLossError("settlement store: bad close record key");
      return false;
    }
    engine->closed_.insert(std::move(period));
    return true;
  });
  GPULEDGER_RETURN_IF_ERROR(bad);
  return engine;
}

absl::Status Engine::Commit() {
  counters_->Flush();
  std::string applied = keys::EncodeU64(applied_through_);
  if (applied_through_ > 0) applied.append(ledger::ToBytes(applied_hash_));
  store_->Put(keys::kAppliedKey, applied);
  return store_->Commit();
}
absl::Status Engine::Apply(const ledger::StoredEntry& e) {
  if (e.seq != applied_through_ + 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "settlement applies entries in order: expected ", applied_through_ + 1, ", got ", e.seq));
  }
  const auto& le = e.entry;
  if (le.outcome() == v1::ACCEPTED) {
    if (le.source() == v1::SOURCE_REGISTRY) {
      GPULEDGER_RETURN_IF_ERROR(ApplyRegistry(e.seq, ledger::EventBytes(le)));
    } else if (le.source() == v1::SOURCE_USAGE) {
      v1::UsageEvent u;
      if (!u.ParseFromString(ledger::EventBytes(le))) {
        return absl::DataLossError(absl::StrCat("accepted entry ", e.seq, " does not decode"));
      }
      GPULEDGER_RETURN_IF_ERROR(ApplyUsage(e.seq, le.source_id(), u));
    }
  }
  applied_through_ = e.seq;
  applied_hash_ = e.hash;
  return absl::OkStatus();
}

absl::Status Engine::ApplyRegistry(uint64_t seq, const std::string& bytes) {
  v1::RegistryEvent e;
  if (!e.ParseFromString(bytes)) {
    return absl::DataLossError(absl::StrCat("accepted entry ", seq, " does not decode"));
  }
  if (e.has_period_close()) {
    // Ingest accepts only closes the registry allows; a store never second-guesses the ledger,
    // but it does not close a period twice either.
    if (registry_.Check(e).has_value()) return absl::OkStatus();
    GPULEDGER_RETURN_IF_ERROR(Close(seq, e));
  }
  store_->Put(KeyBuilder(keys::kRegistry).U64(seq).key(), bytes);
  registry_.Apply(e);
  if (e.has_allocation_amendment()) {
    const auto& a = e.allocation_amendment();
    if (a.has_revoke() || a.has_new_end_ms() || a.has_transfer()) {
      if (const v1::Allocation* alloc = registry_.FindAllocation(a.allocation_id())) {
        Truncate(alloc->allocation_id(), registry_.AllocationEndMs(*alloc));
      }
    }
  }
  if (e.has_over_cap_release()) {
    Release(e.over_cap_release().allocation_id(), e.over_cap_release().copay_bp());
  }
  if (e.has_rerating()) Rerate(e.rerating());
  return absl::OkStatus();
}

absl::Status Engine::ApplyUsage(uint64_t seq, const std::string& source_id,
                                const v1::UsageEvent& event) {
  switch (event.body_case()) {
    case v1::UsageEvent::kUsage:
      AddInterval(seq, source_id, event.event_id(), event.usage());
      break;
    case v1::UsageEvent::kCorrection:
      ApplyCorrection(seq, source_id, event);
      break;
    case v1::UsageEvent::kOwnUse:
      ApplyOwnUse(seq, source_id, event);
      break;
    case v1::UsageEvent::kOutage:
      ApplyOutage(seq, source_id, event);
      break;
    case v1::UsageEvent::kOutageWithdrawal:
      WithdrawOutage(seq, source_id, event);
      break;
    default:
      break;
  }
  return absl::OkStatus();
}

std::vector<CloseRecord> Engine::Closes() {
  std::vector<CloseRecord> out;
  for (const std::string& p : closed_) {
    auto bytes = store_->Get(absl::StrCat(keys::kFrozen, KeyBuilder().Str(p).key()));
    v1::PeriodDocuments docs;
    auto period = base::ParsePeriod(p);
    if (!bytes || !docs.ParseFromString(*bytes) || !period.ok()) continue;
    CloseRecord r;
    r.period = *period;
    r.close_seq = docs.close_seq();
    r.covered_seq = docs.covered_seq();
    r.closed_at_ms = docs.closed_at_ms();
    for (const auto& d : docs.digests()) r.digests.emplace_back(d.document(), d.sha256());
    out.push_back(std::move(r));
  }
  return out;
}

namespace {

// Reads the source's entries (the ledger's RocksDB scan and the parse of each entry) on a second
// thread, in batches, ahead of the engine that applies them: at most
// limits::kCatchUpReadAheadBytesMax in the queue between the two.
class ReadAhead {
 public:
  ReadAhead(const EntrySource& source, uint64_t from_seq, uint64_t target)
      : thread_([this, &source, from_seq, target] { Read(source, from_seq, target); }) {}
  ~ReadAhead() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  // The next batch, in seq order; false at the source's end or after an error (status()).
  bool Next(std::vector<ledger::StoredEntry>* batch) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !queue_.empty() || done_; });
    if (queue_.empty()) return false;
    *batch = std::move(queue_.front().first);
    queued_bytes_ -= queue_.front().second;
    queue_.pop_front();
    cv_.notify_all();
    return true;
  }
  absl::Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

 private:
  void Read(const EntrySource& source, uint64_t from_seq, uint64_t target) {
    std::vector<ledger::StoredEntry> batch;
    size_t bytes = 0;
    absl::Status st = source(from_seq, [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
      if (target != 0 && e.seq > target) return false;
      batch.push_back(e);
      // The serialized entry, and about as much again for its parsed copy.
      bytes += sizeof(ledger::StoredEntry) + 2 * e.bytes.size();
      if (batch.size() < gpuledger::limits::kCatchUpReadAheadBatchEntries) return true;
      const bool more = Push(&batch, bytes);
      bytes = 0;
      return more;
    });
    if (st.ok() && !batch.empty()) Push(&batch, bytes);
    std::lock_guard<std::mutex> lock(mu_);
    status_ = st;
    done_ = true;
    cv_.notify_all();
  }

  // Queues `*batch` once there is room; false when the engine stopped reading.
  bool Push(std::vector<ledger::StoredEntry>* batch, size_t bytes) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      return stop_ || queue_.empty() ||
             queued_bytes_ + bytes <= gpuledger::limits::kCatchUpReadAheadBytesMax;
    });
    if (stop_) return false;
    queue_.emplace_back(std::move(*batch), bytes);
    batch->clear();
    queued_bytes_ += bytes;
    cv_.notify_all();
    return true;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::vector<ledger::StoredEntry>, size_t>> queue_;
  size_t queued_bytes_ = 0;
  bool stop_ = false;  // the engine stopped (an error, or the end)
  bool done_ = false;  // the source returned, with status_
  absl::Status status_;
  std::thread thread_;  // last: started once the rest is initialised
};

}  // namespace

absl::StatusOr<uint64_t> CatchUp(const EntrySource& source, uint64_t target, Engine* engine,
                                 const CatchUpOptions& options) {
  const uint64_t batch = std::max<uint64_t>(1, options.batch);
  const uint64_t from = engine->applied_through() + 1;
  uint64_t applied = 0;
  auto apply = [&](const ledger::StoredEntry& e) -> absl::Status {
    GPULEDGER_RETURN_IF_ERROR(engine->Apply(e));
    if (++applied % batch == 0) {
      GPULEDGER_RETURN_IF_ERROR(engine->Commit());
      base::ReleaseFreeMemory();
      if (options.progress) options.progress(e.seq, target);
    }
    return absl::OkStatus();
  };
  // A few entries (serve's refreshes) are applied as they are read; more are read ahead.
  const bool read_ahead = options.read_ahead && (target == 0 || target >= from + kReadAheadMin);
  if (read_ahead) {
    ReadAhead reader(source, from, target);
    std::vector<ledger::StoredEntry> entries;
    while (reader.Next(&entries)) {
      for (const ledger::StoredEntry& e : entries) GPULEDGER_RETURN_IF_ERROR(apply(e));
    }
    GPULEDGER_RETURN_IF_ERROR(reader.status());
  } else {
    GPULEDGER_RETURN_IF_ERROR(
        source(from, [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
          if (target != 0 && e.seq > target) return false;
          GPULEDGER_RETURN_IF_ERROR(apply(e));
          return true;
        }));
  }
  GPULEDGER_RETURN_IF_ERROR(engine->Commit());
  if (options.progress) options.progress(engine->applied_through(), target);
  return applied;
}

absl::StatusOr<uint64_t> CatchUp(const ledger::Ledger& ledger, Engine* engine,
                                 const CatchUpOptions& options) {
  const uint64_t head = ledger.head().seq;
  const uint64_t target = options.until_seq == 0 ? head : std::min(options.until_seq, head);
  const uint64_t from = engine->applied_through();
  if (from > head) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the settlement store has applied entries up to ", from, " but the ledger ends at ", head,
        ": the store belongs to another ledger; delete it (it is derived data) and settle again"));
  }
  if (from > 0) {
    GPULEDGER_ASSIGN_OR_RETURN(ledger::StoredEntry last, ledger.Get(from));
    if (ledger::ToHex(last.hash) != engine->applied_hash()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the settlement store's entry ", from,
          " has another hash than the ledger's: the store belongs to another ledger; delete it "
          "(it is derived data) and settle again"));
    }
  }
  if (from >= target) return uint64_t{0};
  return CatchUp(
      [&](uint64_t from_seq, const EntryVisitor& visit) { return ledger.Scan(from_seq, visit); },
      target, engine, options);
}

absl::StatusOr<Settlement> OpenSettlement(const std::string& store_path,
                                          const ledger::Ledger& ledger,
                                          const SettleOptions& options,
                                          const StoreOptions& store_options,
                                          const CatchUpOptions& catch_up) {
  Settlement s;
  GPULEDGER_ASSIGN_OR_RETURN(s.store, Store::Open(store_path, store_options));
  if (!store_options.read_only && StoreNeedsRebuild(s.store.get())) {
    // A store of another format (keys.h) is derived data: rebuilt from the ledger.
    s.store.reset();
    GPULEDGER_RETURN_IF_ERROR(Store::Destroy(store_path));
    GPULEDGER_ASSIGN_OR_RETURN(s.store, Store::Open(store_path, store_options));
    s.rebuilt = true;
  }
  GPULEDGER_ASSIGN_OR_RETURN(s.engine, Engine::Open(s.store.get(), options));
  if (!store_options.read_only) {
    GPULEDGER_RETURN_IF_ERROR(CatchUp(ledger, s.engine.get(), catch_up).status());
  }
  return s;
}

}  // namespace gpuledger::settlement
