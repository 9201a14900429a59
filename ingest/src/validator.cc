#include "ingest/validator.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/period.h"
#include "base/status.h"
#include "gpuledger/v1/registry.pb.h"
#include "hold_store.h"
#include "ingest/reasons.h"
#include "recent_intervals.h"

namespace gpuledger::ingest {

namespace v1 = gpuledger::v1;

namespace {

void Reject(ledger::Candidate* c, const char* code, std::string detail) {
  c->reason_code = code;
  c->reason_detail = std::move(detail);
  c->park = false;
}

}  // namespace

// An entry read back from the ledger, with its event decoded as its source's message type when
// it counts for something (accepted or parked); rejected entries are not decoded.
Decoded DecodedFromEntry(const v1::LedgerEntry& e) {
  Decoded d;
  ledger::Candidate& c = d.candidate;
  c.source = e.source();
  c.payload = e.payload();
  for (const v1::KafkaHeader& h : e.headers()) c.headers.emplace_back(h.key(), h.value());
  c.decoded_event = e.decoded_event();
  c.topic = e.topic();
  c.partition = e.partition();
  c.offset = e.offset();
  c.kafka_timestamp_ms = e.kafka_timestamp_ms();
  c.kafka_timestamp_type = e.kafka_timestamp_type();
  c.recorded_at_ms = e.recorded_at_ms();
  c.source_id = e.source_id();
  c.event_id = e.event_id();
  c.producer_id = e.producer_id();
  c.producer_seq = e.producer_seq();
  c.reason_code = e.reason_code();
  c.reason_detail = e.reason_detail();
  c.park = e.outcome() == v1::PARKED;
  c.resolves_seq = e.resolves_seq();
  if (e.outcome() == v1::PARKED ||
      (e.outcome() == v1::ACCEPTED && e.source() == v1::SOURCE_USAGE)) {
    if (v1::UsageEvent u; u.ParseFromString(ledger::EventBytes(e))) d.event = std::move(u);
  } else if (e.outcome() == v1::ACCEPTED && e.source() == v1::SOURCE_REGISTRY) {
    if (v1::RegistryEvent r; r.ParseFromString(ledger::EventBytes(e))) d.event = std::move(r);
  }
  return d;
}

namespace {

// The interval an event would make count, if any: a usage body or a correction's replacement.
const v1::UsageInterval* IntervalOf(const v1::UsageEvent& e) {
  if (e.has_usage()) return &e.usage();
  if (e.has_correction() && e.correction().has_replacement()) return &e.correction().replacement();
  return nullptr;
}

// What an outage hit, as a key of Validator::outages_: an allocation, or a CSP's pool. Ids are
// printable ASCII (Decide), so the NUL separators cannot occur inside them.
std::string OutageKey(const std::string& csp, const v1::OutageInterval& o) {
  if (!o.allocation_id().empty())
    return absl::StrCat("a", csp, std::string(1, '\0'), o.allocation_id());
  return absl::StrCat("p", csp, std::string(1, '\0'), o.program(), std::string(1, '\0'),
                      o.gpu_model());
}

// The most GPUs out of service at once if `o` joined `spans` (each [start, end)), with the
// instant it happens. Ends sort before starts at the same instant: back to back is not at once.
std::pair<int64_t, int64_t> PeakOutage(const std::vector<OutageSpan>& spans,
                                       const v1::OutageInterval& o) {
  std::vector<std::pair<int64_t, int64_t>> edges{{o.start_ms(), o.gpu_count()},
                                                 {o.end_ms(), -int64_t{o.gpu_count()}}};
  for (const auto& s : spans) {
    if (s.end_ms <= o.start_ms() || s.start_ms >= o.end_ms()) continue;
    edges.push_back({std::max(s.start_ms, o.start_ms()), s.gpus});
    edges.push_back({std::min(s.end_ms, o.end_ms()), -int64_t{s.gpus}});
  }
  std::sort(edges.begin(), edges.end());
  int64_t out = 0, peak = 0, at = o.start_ms();
  for (const auto& [t, delta] : edges) {
    out += delta;
    if (out > peak) peak = out, at = t;
  }
  return {peak, at};
}

}  // namespace

Validator::Validator(ValidationLimits limits, size_t recent_intervals_bytes)
    : limits_(std::move(limits)),
      recent_(std::make_unique<RecentIntervals>(recent_intervals_bytes)) {
  auto store = HoldStore::Open("");
  if (!store.ok()) {
    // Only an in-memory RocksDB that cannot start: nothing can be decided.
    spdlog::critical("validator: {}", store.status().ToString());
    std::abort();
  }
  store_ = std::move(*store);
}

Validator::~Validator() = default;

void Validator::NoteError(const absl::Status& st) const {
  if (!st.ok() && error_.ok()) error_ = st;
}

absl::Status Validator::Load(const ledger::Ledger& ledger, const std::string& state_dir) {
  recent_->Clear();  // of the store it replaces or wipes
  if (!state_dir.empty()) {
    GPULEDGER_ASSIGN_OR_RETURN(store_, HoldStore::Open(state_dir));
  }
  const ledger::Head head = ledger.head();
  GPULEDGER_ASSIGN_OR_RETURN(std::optional<HoldStore::Marker> marker, store_->GetMarker());
  if (marker.has_value() && marker->seq > 0) {
    bool same = marker->seq <= head.seq;
    if (same) {
      GPULEDGER_ASSIGN_OR_RETURN(ledger::StoredEntry at, ledger.Get(marker->seq));
      same = at.hash == marker->hash;
    }
    if (!same) {
      spdlog::warn(
          "validator state store {} does not match the ledger (its marker: seq {}; ledger head "
          "{}): the ledger lost its tail, or the store is another ledger's; rebuilding it",
          store_->path(), marker->seq, head.seq);
      marker.reset();
    }
  }
  if (!marker.has_value()) {
    GPULEDGER_RETURN_IF_ERROR(store_->Wipe());
    longest_held_.clear();
  } else {
    GPULEDGER_RETURN_IF_ERROR(store_->ScanLongest(
        [this](const std::string& allocation, int64_t ms) { longest_held_[allocation] = ms; }));
  }
  const uint64_t stored_through = marker.has_value() ? marker->seq : 0;
  if (head.seq > stored_through) {
    spdlog::info("validator: bringing its state store up to the ledger: entries {} to {}",
                 stored_through + 1, head.seq);
  }
  // Written every so many replayed entries, so that the staged batch stays small.
  constexpr uint64_t kReplayCommitEvery = 100'000;
  GPULEDGER_RETURN_IF_ERROR(
      ledger.Scan(1, [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
        replaying_stored_ = e.seq <= stored_through;
        Recorded(DecodedFromEntry(e.entry), e.seq);
        if (e.seq > stored_through && e.seq % kReplayCommitEvery == 0) {
          GPULEDGER_RETURN_IF_ERROR(Persist(ledger::Head{e.seq, e.hash}));
        }
        return true;
      }));
  replaying_stored_ = false;
  GPULEDGER_RETURN_IF_ERROR(error_);
  if (head.seq > stored_through || !marker.has_value()) return Persist(head);
  return absl::OkStatus();
}

absl::Status Validator::Persist(const ledger::Head& head) {
  GPULEDGER_RETURN_IF_ERROR(error_);
  return store_->Commit(HoldStore::Marker{head.seq, head.hash});
}

absl::Status Validator::Drain() { return store_->Wait(); }

ledger::StoreMemory Validator::StateStoreMemory() const { return store_->Memory(); }

size_t Validator::RecentIntervalsBytes() const { return recent_->bytes(); }

void Validator::Check(Decoded* d) const {
  ledger::Candidate* c = &d->candidate;
  if (!c->reason_code.empty()) return;  // Decode already rejected it
  c->park = false;
  if (c->source == v1::SOURCE_REGISTRY) {
    const v1::RegistryEvent* e = d->registry();
    if (e == nullptr) return;  // Decode accepted it, so it decoded; cannot happen
    if (auto problem = registry_.Check(*e)) {
      c->reason_code = problem->code;
      c->reason_detail = problem->detail;
    }
    return;
  }
  if (const v1::UsageEvent* e = d->usage()) CheckUsage(*e, c);
}

void Validator::CheckUsage(const v1::UsageEvent& e, ledger::Candidate* c) const {
  const std::string& csp = c->source_id;
  int64_t end_ms = 0;
  switch (e.body_case()) {
    case v1::UsageEvent::kUsage:
      end_ms = e.usage().end_ms();
      break;
    case v1::UsageEvent::kOwnUse:
      end_ms = e.own_use().end_ms();
      break;
    case v1::UsageEvent::kOutage:
      end_ms = e.outage().end_ms();
      break;
    case v1::UsageEvent::kCorrection:
      end_ms = e.correction().has_replacement() ? e.correction().replacement().end_ms() : 0;
      break;
    case v1::UsageEvent::kOutageWithdrawal:
      break;
    case v1::UsageEvent::kCloseMarker: {
      // Written by `settle close` after the period ended; one from before cuts nothing.
      auto period = base::ParsePeriod(e.close_marker().period());
      const int64_t recorded_ms = TimeOfRecord(*c);
      if (period.ok() && recorded_ms < period->EndMs()) {
        Reject(c, reason::kPeriodNotEnded,
               absl::StrCat("a close marker of ", period->ToString(), ", which ends at ",
                            base::FormatKst(period->EndMs()), ", recorded before that"));
      }
      return;
    }
    case v1::UsageEvent::BODY_NOT_SET:
      return;
  }
  // Against a time the CSP cannot set (TimeOfRecord). end_ms and the time of record are both
  // bounded far inside int64 (limits.h), so the difference cannot overflow.
  const int64_t recorded_ms = TimeOfRecord(*c);
  if (end_ms > recorded_ms + limits_.max_future_skew_ms) {
    Reject(c, reason::kFutureTimestamp,
           absl::StrCat("interval ends at ", end_ms, ", ", end_ms - recorded_ms,
                        " ms after its message was recorded (allowed skew ",
                        limits_.max_future_skew_ms, " ms)"));
    return;
  }
  switch (e.body_case()) {
    case v1::UsageEvent::kUsage:
      return CheckInterval(csp, e.usage(), nullptr, c);
    case v1::UsageEvent::kCorrection:
      return CheckCorrection(e, c);
    case v1::UsageEvent::kOwnUse: {
      const auto& o = e.own_use();
      auto pool = KnownPool(csp, o.program(), o.gpu_model(), o.start_ms(), c);
      if (!pool.has_value()) return;
      return CheckOwnUse(csp, o, *pool, c);
    }
    case v1::UsageEvent::kOutage:
      return CheckOutage(csp, e.outage(), c);
    case v1::UsageEvent::kOutageWithdrawal:
      return CheckWithdrawal(e, c);
    case v1::UsageEvent::kCloseMarker:
    case v1::UsageEvent::BODY_NOT_SET:
      return;
  }
}

void Validator::CheckWithdrawal(const v1::UsageEvent& e, ledger::Candidate* c) const {
  const auto& w = e.outage_withdrawal();
  const auto it = outage_events_.find(Identity{c->source_id, w.target_event_id()});
  if (it == outage_events_.end()) {
    return Reject(c, reason::kUnknownCorrectionTarget,
                  absl::StrCat("no accepted outage ", w.target_event_id(), " of ", c->source_id));
  }
  const AcceptedOutage& o = it->second;
  if (o.withdrawn) {
    return Reject(c, reason::kAlreadyCorrected,
                  absl::StrCat("outage ", w.target_event_id(), " was already withdrawn"));
  }
  if (o.allocation_id != w.allocation_id() || o.program != w.program() ||
      o.model != w.gpu_model()) {
    return Reject(c, reason::kInvalidField,
                  absl::StrCat("outage_withdrawal names allocation '", w.allocation_id(), "', ",
                               v1::Program_Name(w.program()), "/", v1::GpuModel_Name(w.gpu_model()),
                               "; the outage is of '", o.allocation_id, "', ",
                               v1::Program_Name(static_cast<v1::Program>(o.program)), "/",
                               v1::GpuModel_Name(static_cast<v1::GpuModel>(o.model))));
  }
}

const v1::Allocation* Validator::FitAllocation(const std::string& csp,
                                               const std::string& allocation_id, v1::GpuModel model,
                                               int64_t start_ms, int64_t end_ms,
                                               ledger::Candidate* c) const {
  const v1::Allocation* alloc = registry_.FindAllocation(allocation_id);
  if (alloc == nullptr) {
    if (c->resolves_seq != 0) {
      Reject(c, reason::kUnknownAllocation,
             absl::StrCat("allocation '", allocation_id,
                          "' was not announced within the grace period of ", limits_.park_grace_ms,
                          " ms"));
    } else {
      c->park = true;
      c->reason_detail = absl::StrCat("waiting for allocation ", allocation_id);
    }
    return nullptr;
  }
  if (alloc->csp_id() != csp) {
    Reject(c, reason::kAllocationOfOtherCsp,
           absl::StrCat("allocation ", allocation_id, " is hosted by ", alloc->csp_id()));
    return nullptr;
  }
  if (model != alloc->gpu_model()) {
    Reject(c, reason::kWrongGpuModel,
           absl::StrCat(v1::GpuModel_Name(model), " reported, allocation is ",
                        v1::GpuModel_Name(alloc->gpu_model())));
    return nullptr;
  }
  const int64_t window_end = registry_.AllocationEndMs(*alloc);
  if (start_ms < alloc->start_ms() || end_ms > window_end) {
    Reject(c, reason::kOutsideAllocationWindow,
           absl::StrCat("[", start_ms, ", ", end_ms, ") is not inside [", alloc->start_ms(), ", ",
                        window_end, ")"));
    return nullptr;
  }
  return alloc;
}

void Validator::CheckOutage(const std::string& csp, const v1::OutageInterval& o,
                            ledger::Candidate* c) const {
  int64_t capacity = 0;
  std::string what;
  if (!o.allocation_id().empty()) {
    const v1::Allocation* alloc =
        FitAllocation(csp, o.allocation_id(), o.gpu_model(), o.start_ms(), o.end_ms(), c);
    if (alloc == nullptr) return;
    if (o.program() != alloc->program()) {
      return Reject(c, reason::kInvalidField,
                    absl::StrCat("outage.program ", v1::Program_Name(o.program()),
                                 ", allocation is ", v1::Program_Name(alloc->program())));
    }
    capacity = registry_.MinGrantWithin(*alloc, o.start_ms(), o.end_ms());
    what = absl::StrCat("the grant of ", o.allocation_id(), " is ", capacity);
  } else {
    auto pool = KnownPool(csp, o.program(), o.gpu_model(), o.start_ms(), c);
    if (!pool.has_value()) return;
    capacity = *pool;
    what = absl::StrCat("the pool holds ", capacity);
  }
  const char* over = o.allocation_id().empty() ? reason::kGpusOverPool : reason::kGpusOverGrant;
  if (o.gpu_count() > capacity) {
    return Reject(c, over, absl::StrCat("outage of ", o.gpu_count(), " GPUs, ", what));
  }
  static const std::vector<OutageSpan> kNone;
  const auto it = outages_.find(OutageKey(csp, o));
  const auto [peak, at] = PeakOutage(it == outages_.end() ? kNone : it->second, o);
  if (peak > capacity) {
    return Reject(c, over,
                  absl::StrCat(peak, " GPUs out of service at ", at,
                               " with the outages already accepted, ", what));
  }
}

std::optional<uint32_t> Validator::KnownPool(const std::string& csp, v1::Program program,
                                             v1::GpuModel model, int64_t at_ms,
                                             ledger::Candidate* c) const {
  auto pool = registry_.PoolAt(csp, program, model, at_ms);
  if (pool.has_value() && *pool > 0) return pool;
  const std::string name = absl::StrCat(v1::Program_Name(program), "/", v1::GpuModel_Name(model));
  if (c->resolves_seq == 0) {
    // The registry topic may simply not have been read that far yet.
    c->park = true;
    c->reason_detail = absl::StrCat("waiting for the ", name, " pool of ", csp);
  } else {
    Reject(c, reason::kUnknownPool, absl::StrCat(csp, " hosts no ", name, " pool at ", at_ms));
  }
  return std::nullopt;
}

void Validator::CheckCorrection(const v1::UsageEvent& e, ledger::Candidate* c) const {
  const Identity target{c->source_id, e.correction().target_event_id()};
  if (auto p = parked_identities_.find(target); p != parked_identities_.end()) {
    // Wait with the target: it is decided first (lower seq) when its allocation appears.
    if (c->resolves_seq == 0) {
      c->park = true;
      c->reason_detail = absl::StrCat("waiting for parked event ", target.second);
      return;
    }
  }
  auto holder = store_->GetHolder(target.first, target.second);
  if (!holder.ok()) {
    NoteError(holder.status());
    return Reject(c, reason::kUnknownCorrectionTarget, "validator state store unreadable");
  }
  if (holder->has_value() && (*holder)->retired) {
    return Reject(c, reason::kAlreadyCorrected,
                  absl::StrCat("event ", target.second, " was already corrected or cancelled"));
  }
  if (!holder->has_value()) {
    return Reject(c, reason::kUnknownCorrectionTarget,
                  absl::StrCat("no accepted usage event ", target.second, " of ", target.first));
  }
  if ((*holder)->allocation != e.correction().allocation_id()) {
    return Reject(c, reason::kInvalidField,
                  absl::StrCat("correction.allocation_id '", e.correction().allocation_id(),
                               "' is not the target's allocation '", (*holder)->allocation, "'"));
  }
  if (e.correction().has_replacement()) {
    CheckInterval(c->source_id, e.correction().replacement(), &target, c);
  }
}

void Validator::CheckInterval(const std::string& csp, const v1::UsageInterval& u,
                              const Identity* replacing, ledger::Candidate* c) const {
  const v1::Allocation* alloc =
      FitAllocation(csp, u.allocation_id(), u.gpu_model(), u.start_ms(), u.end_ms(), c);
  if (alloc == nullptr) return;
  const uint32_t grant = registry_.MinGrantWithin(*alloc, u.start_ms(), u.end_ms());
  if (u.gpu_count() > grant) {
    return Reject(c, reason::kGpusOverGrant,
                  absl::StrCat(u.gpu_count(), " GPUs, the grant is ", grant));
  }
  // Every accepted interval of the allocation that overlaps [start, end).
  std::vector<std::pair<int64_t, int64_t>> edges;  // (instant, +gpus / -gpus)
  edges.push_back({u.start_ms(), u.gpu_count()});
  edges.push_back({u.end_ms(), -static_cast<int64_t>(u.gpu_count())});
  if (auto longest = longest_held_.find(u.allocation_id()); longest != longest_held_.end()) {
    // Only intervals that start within the longest one held can reach into [start, end).
    std::string overlap;
    absl::Status st = recent_->Scan(
        *store_, u.allocation_id(), u.start_ms() - longest->second, u.end_ms(),
        [&](const RecentIntervals::View& h) {
          if (h.end_ms <= u.start_ms()) return true;
          if (replacing != nullptr && h.csp == replacing->first &&
              h.event_id == replacing->second) {
            return true;
          }
          if (h.node_id == u.node_id()) {
            overlap = std::string(h.event_id);
            return false;
          }
          edges.push_back({std::max(h.start_ms, u.start_ms()), h.gpus});
          edges.push_back({std::min(h.end_ms, u.end_ms()), -static_cast<int64_t>(h.gpus)});
          return true;
        });
    if (!st.ok()) {
      NoteError(st);
      return Reject(c, reason::kOverlappingInterval, "validator state store unreadable");
    }
    if (!overlap.empty()) {
      return Reject(c, reason::kOverlappingInterval,
                    absl::StrCat("overlaps event ", overlap, " on node '", u.node_id(), "'"));
    }
  }
  // Ends sort before starts at the same instant: [a, b) and [b, c) do not overlap.
  std::sort(edges.begin(), edges.end());
  int64_t in_use = 0;
  for (const auto& [t, delta] : edges) {
    in_use += delta;
    if (in_use > grant) {
      return Reject(c, reason::kGpusOverGrant,
                    absl::StrCat(in_use, " GPUs in use at ", t,
                                 " with the allocation's other "
                                 "intervals, the grant is ",
                                 grant));
    }
  }
}

void Validator::CheckOwnUse(const std::string& csp, const v1::OwnUseInterval& o, uint32_t pool_gpus,
                            ledger::Candidate* c) const {
  if (o.gpu_count() > pool_gpus) {
    return Reject(c, reason::kGpusOverPool,
                  absl::StrCat(o.gpu_count(), " GPUs, the pool holds ", pool_gpus));
  }
  const int64_t lo = o.start_ms(), hi = o.end_ms();
  // What else runs on the pool within [lo, hi), as changes at instants: (instant, programme
  // GPUs, own-use GPUs). Instants where the pool's size changes carry no change of their own.
  struct Change {
    int64_t at;
    int64_t programme;
    int64_t own;
  };
  std::vector<Change> changes{{lo, 0, 0}};
  auto add = [&](int64_t from, int64_t to, int64_t programme, int64_t own) {
    from = std::max(from, lo);
    to = std::min(to, hi);
    if (from >= to) return;
    changes.push_back({from, programme, own});
    changes.push_back({to, -programme, -own});
  };
  const PoolIndexKey key{csp, o.program(), o.gpu_model()};
  if (auto it = own_use_.find(key); it != own_use_.end()) {
    for (const OutageSpan& s : it->second) add(s.start_ms, s.end_ms, 0, s.gpus);
  }
  if (const auto* ids = registry_.AllocationIdsOnPool(csp, o.program(), o.gpu_model())) {
    for (const std::string& id : *ids) {
      const v1::Allocation* alloc = registry_.FindAllocation(id);
      if (alloc == nullptr || alloc->start_ms() >= hi || registry_.AllocationEndMs(*alloc) <= lo) {
        continue;
      }
      const auto longest = longest_held_.find(id);
      if (longest == longest_held_.end()) continue;  // no usage recorded on it
      // Only intervals that start within the longest one held can reach into [lo, hi).
      absl::Status st =
          recent_->Scan(*store_, id, lo - longest->second, hi, [&](const RecentIntervals::View& h) {
            add(h.start_ms, h.end_ms, h.gpus, 0);
            return true;
          });
      if (!st.ok()) {
        NoteError(st);
        return Reject(c, reason::kOwnUseDisplacesProgramme, "validator state store unreadable");
      }
    }
  }
  std::vector<int64_t> pool_changes;
  if (const auto* pool = registry_.Pool(csp, o.program(), o.gpu_model())) {
    pool->ChangesWithin(lo, hi, &pool_changes);
  }
  for (int64_t t : pool_changes) changes.push_back({t, 0, 0});
  std::sort(changes.begin(), changes.end(),
            [](const Change& a, const Change& b) { return a.at < b.at; });
  int64_t programme = 0, own = 0;
  for (size_t i = 0; i < changes.size();) {
    const int64_t t = changes[i].at;
    if (t >= hi) break;
    // Every change at t first: [a, b) and [b, c) are not at once.
    for (; i < changes.size() && changes[i].at == t; ++i) {
      programme += changes[i].programme;
      own += changes[i].own;
    }
    const int64_t holds = registry_.PoolAt(csp, o.program(), o.gpu_model(), t).value_or(0);
    const int64_t gpus = o.gpu_count();
    if (own + gpus > holds) {
      return Reject(c, reason::kGpusOverPool,
                    absl::StrCat(gpus, " GPUs with the ", own, " of own use already accepted at ",
                                 base::FormatKst(t), ", the pool holds ", holds));
    }
    if (programme + own + gpus > holds) {
      return Reject(c, reason::kOwnUseDisplacesProgramme,
                    absl::StrCat("at ", base::FormatKst(t), " programme users ran ", programme,
                                 " GPUs and own use already accepted is ", own, " of the pool's ",
                                 holds, ": at most ", std::max<int64_t>(0, holds - programme - own),
                                 " GPUs of own use fit there (the state's users come first)"));
    }
  }
}

void Validator::Hold(const Identity& who, const v1::UsageInterval& u) {
  int64_t& longest = longest_held_[u.allocation_id()];
  if (u.end_ms() - u.start_ms() > longest) {
    longest = u.end_ms() - u.start_ms();
    if (!replaying_stored_) store_->PutLongest(u.allocation_id(), longest);
  }
  if (replaying_stored_) return;
  const HoldStore::Interval held{u.start_ms(), u.end_ms(), u.gpu_count(),
                                 u.node_id(),  who.first,  who.second};
  store_->PutInterval(u.allocation_id(), held);
  recent_->Put(u.allocation_id(), held);
  store_->PutHolder(who.first, who.second,
                    HoldStore::Holder{false, u.allocation_id(), u.start_ms()});
}

void Validator::Release(const Identity& who) {
  if (replaying_stored_) return;
  auto holder = store_->GetHolder(who.first, who.second);
  if (!holder.ok()) return NoteError(holder.status());
  if (holder->has_value() && !(*holder)->retired) {
    store_->DeleteInterval((*holder)->allocation, (*holder)->start_ms, who.first, who.second);
    recent_->Erase((*holder)->allocation, (*holder)->start_ms, who.first, who.second);
    store_->PutHolder(who.first, who.second, HoldStore::Holder{true, "", 0});
  }
}

void Validator::Recorded(const Decoded& d, uint64_t seq) {
  const ledger::Candidate& c = d.candidate;
  latest_record_ms_ = std::max(latest_record_ms_, TimeOfRecord(c));
  if (c.resolves_seq != 0) {
    if (auto p = parked_.find(c.resolves_seq); p != parked_.end()) {
      const Parked& parked = p->second;
      const ledger::Candidate& candidate = parked.decoded.candidate;
      parked_identities_.erase({candidate.source_id, candidate.event_id});
      auto drop = [&](auto& index, const auto& key) {
        if (auto it = index.find(key); it != index.end()) {
          it->second.erase(p->first);
          if (it->second.empty()) index.erase(it);
        }
      };
      if (parked.pool) {
        drop(parked_by_pool_,
             PoolIndexKey{candidate.source_id, parked.pool->program, parked.pool->model});
      } else {
        drop(parked_by_allocation_, parked.allocation_id);
      }
      parked_by_time_.erase({TimeOfRecord(candidate), p->first});
      parked_.erase(p);
    }
  }
  if (c.park) {
    std::string allocation;
    std::optional<PoolKey> pool;
    if (const v1::UsageEvent* parked_event = d.usage()) {
      const v1::UsageEvent& e = *parked_event;
      if (const v1::UsageInterval* u = IntervalOf(e)) allocation = u->allocation_id();
      if (e.has_outage()) allocation = e.outage().allocation_id();
      if (e.has_own_use()) {
        pool = PoolKey{e.own_use().program(), e.own_use().gpu_model(), e.own_use().start_ms()};
      } else if (e.has_outage() && allocation.empty()) {
        pool = PoolKey{e.outage().program(), e.outage().gpu_model(), e.outage().start_ms()};
      }
      if (e.has_correction()) {
        auto t = parked_identities_.find({c.source_id, e.correction().target_event_id()});
        if (t != parked_identities_.end()) allocation = t->second;
      }
    }
    parked_[seq] = Parked{d, allocation, pool};
    parked_identities_[{c.source_id, c.event_id}] = allocation;
    if (pool) {
      parked_by_pool_[PoolIndexKey{c.source_id, pool->program, pool->model}].insert(seq);
    } else {
      parked_by_allocation_[allocation].insert(seq);
    }
    parked_by_time_.insert({TimeOfRecord(c), seq});
    return;
  }
  if (!c.reason_code.empty()) return;
  if (c.source == v1::SOURCE_REGISTRY) {
    if (const v1::RegistryEvent* e = d.registry()) {
      if (e->has_validation_settings()) {
        const auto& v = e->validation_settings();
        if (v.max_interval_ms() > 0) limits_.max_interval_ms = v.max_interval_ms();
        if (v.max_future_skew_ms() > 0) limits_.max_future_skew_ms = v.max_future_skew_ms();
        if (v.park_grace_ms() > 0) limits_.park_grace_ms = v.park_grace_ms();
        if (v.max_event_id_bytes() > 0) limits_.max_event_id_bytes = v.max_event_id_bytes();
        limits_from_seq_ = seq;
      }
      registry_.Apply(*e);
      ++registry_generation_;
    }
    return;
  }
  if (d.usage() == nullptr) return;
  const v1::UsageEvent& e = *d.usage();
  const Identity who{c.source_id, c.event_id};
  if (e.has_usage()) Hold(who, e.usage());
  if (e.has_own_use()) {
    const auto& o = e.own_use();
    own_use_[PoolIndexKey{c.source_id, o.program(), o.gpu_model()}].push_back(
        OutageSpan{o.start_ms(), o.end_ms(), o.gpu_count()});
  }
  if (e.has_outage()) {
    const auto& o = e.outage();
    const std::string key = OutageKey(c.source_id, o);
    const OutageSpan span{o.start_ms(), o.end_ms(), o.gpu_count()};
    outages_[key].push_back(span);
    outage_events_[who] =
        AcceptedOutage{key, span, o.allocation_id(), o.program(), o.gpu_model(), false};
  }
  if (e.has_outage_withdrawal()) {
    auto it = outage_events_.find({c.source_id, e.outage_withdrawal().target_event_id()});
    if (it != outage_events_.end() && !it->second.withdrawn) {
      it->second.withdrawn = true;
      std::vector<OutageSpan>& spans = outages_[it->second.key];
      const OutageSpan& gone = it->second.span;
      auto at = std::find_if(spans.begin(), spans.end(), [&](const OutageSpan& s) {
        return s.start_ms == gone.start_ms && s.end_ms == gone.end_ms && s.gpus == gone.gpus;
      });
      if (at != spans.end()) spans.erase(at);
    }
  }
  if (e.has_correction()) {
    Release({c.source_id, e.correction().target_event_id()});
    if (e.correction().has_replacement()) Hold(who, e.correction().replacement());
  }
}

// Indexed so that the cost per message does not grow with the number parked: parked events
// are looked at when the registry changed (by the allocation or pool they wait for) or when the
// oldest of them passes the grace period.
std::vector<Decoded> Validator::TakeResolvable() const {
  std::set<uint64_t> ready;
  if (registry_generation_ != checked_generation_) {
    checked_generation_ = registry_generation_;
    for (const auto& [allocation, seqs] : parked_by_allocation_) {
      if (registry_.FindAllocation(allocation) != nullptr) ready.insert(seqs.begin(), seqs.end());
    }
    for (const auto& [key, seqs] : parked_by_pool_) {
      for (uint64_t seq : seqs) {
        const Parked& p = parked_.at(seq);
        auto gpus = registry_.PoolAt(p.decoded.candidate.source_id, p.pool->program, p.pool->model,
                                     p.pool->at_ms);
        if (gpus.has_value() && *gpus > 0) ready.insert(seq);
      }
    }
  }
  for (auto it = parked_by_time_.begin();
       it != parked_by_time_.end() && latest_record_ms_ - it->first >= limits_.park_grace_ms;
       ++it) {
    ready.insert(it->second);
  }
  std::vector<Decoded> out;
  out.reserve(ready.size());
  for (uint64_t seq : ready) {
    Decoded d = parked_.at(seq).decoded;
    ledger::Candidate& c = d.candidate;
    c.park = false;
    c.reason_code.clear();
    c.reason_detail.clear();
    c.resolves_seq = seq;
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace gpuledger::ingest
