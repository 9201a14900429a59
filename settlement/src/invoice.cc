#include "settlement/invoice.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "base/assert.h"
#include "base/status.h"
#include "gpuledger/v1/registry.pb.h"

namespace gpuledger::settlement {

namespace v1 = gpuledger::v1;

namespace {

// (institution, allocation, model, rate, co-pay bp, institution type, kind) → GPU-ms.
using LineKey = std::tuple<std::string, std::string, int, int64_t, int64_t, int, int>;

// GPUs of `allocation` declared out of service at instant `t`.
template <typename Outages>
int64_t OutageGpusAt(const Outages* outages, int64_t t) {
  int64_t gpus = 0;
  if (outages == nullptr) return 0;
  for (const auto& o : *outages) {
    if (o.start_ms <= t && t < o.end_ms) gpus += o.gpus;
  }
  return gpus;
}

absl::Status PriceLine(InvoiceLine* line) {
  GPULEDGER_ASSIGN_OR_RETURN(line->list, base::ListPrice(line->gpu_ms, line->krw_per_gpu_hour));
  GPULEDGER_ASSIGN_OR_RETURN(line->copay, base::ApplyBasisPoints(line->list, line->copay_bp));
  line->subsidy = line->list - line->copay;
  GPULEDGER_ASSERT(line->list == line->copay + line->subsidy, "list = co-pay + subsidy");
  return absl::OkStatus();
}

}  // namespace

const char* LineKindName(LineKind kind) {
  switch (kind) {
    case LineKind::kUsage:
      return "usage";
    case LineKind::kBeyondCap:
      return "beyond_cap";
    case LineKind::kOutageCredit:
      return "outage_credit";
  }
  return "usage";
}

Rater::Rater(base::Period period, SettleOptions options) : period_(period), options_(options) {}

void Rater::ApplyRegistry(const v1::RegistryEvent& event) { registry_.Apply(event); }

void Rater::ApplyUsage(uint64_t seq, const std::string& source_id, const v1::UsageEvent& event) {
  const auto key = std::make_pair(source_id, event.event_id());
  switch (event.body_case()) {
    case v1::UsageEvent::kUsage:
      usage_[key] = Recorded{seq, source_id, event.event_id(), event.usage()};
      break;
    case v1::UsageEvent::kCorrection: {
      const auto& c = event.correction();
      auto it = usage_.find({source_id, c.target_event_id()});
      if (it == usage_.end()) {
        unpriced_.push_back(
            {seq, source_id, event.event_id(),
             absl::StrCat("correction of unknown usage event '", c.target_event_id(), "'")});
      } else {
        // The correction takes the target's place (and may itself be corrected later).
        usage_.erase(it);
        if (c.has_replacement()) {
          usage_[key] = Recorded{seq, source_id, event.event_id(), c.replacement()};
        }
      }
      break;
    }
    case v1::UsageEvent::kOutage:
      if (!event.outage().allocation_id().empty()) {
        const auto& o = event.outage();
        outages_[o.allocation_id()].push_back({o.start_ms(), o.end_ms(), o.gpu_count()});
      }
      break;
    default:
      break;  // own use and pool outages are for CSP statements, not co-pay invoices
  }
}

absl::StatusOr<SettlementRun> Rater::Finish(uint64_t covered_seq) const {
  SettlementRun run;
  run.period = period_;
  run.covered_seq = covered_seq;
  run.unpriced = unpriced_;
  std::map<LineKey, base::GpuMs> quantities;
  std::map<std::string, std::string> names;

  // Walk intervals in ledger order so that unpriced usage is listed in that order.
  std::vector<const Recorded*> ordered;
  for (const auto& [key, rec] : usage_) ordered.push_back(&rec);
  std::sort(ordered.begin(), ordered.end(),
            [](const Recorded* a, const Recorded* b) { return a->seq < b->seq; });

  // GPU-ms of each capped allocation used so far, in ledger order, over all periods.
  std::map<std::string, int64_t> cap_used;
  for (const Recorded* rec : ordered) {
    const auto& u = rec->interval;
    const v1::Allocation* alloc = registry_.FindAllocation(u.allocation_id());
    // The instant from which this interval is beyond its allocation's cap (end: never).
    int64_t cap_from = u.end_ms();
    if (alloc != nullptr && alloc->gpu_ms_cap() > 0) {
      int64_t& used = cap_used[alloc->allocation_id()];
      const int64_t gpus = u.gpu_count();
      const int64_t whole = gpus * (u.end_ms() - u.start_ms());
      const int64_t remaining = std::max<int64_t>(0, alloc->gpu_ms_cap() - used);
      // The cap is crossed at the last whole millisecond that still fits under it.
      const int64_t within_ms = whole <= remaining ? u.end_ms() - u.start_ms() : remaining / gpus;
      cap_from = u.start_ms() + within_ms;
      used += gpus * within_ms;
    }
    const int64_t lo = std::max(u.start_ms(), period_.StartMs());
    const int64_t hi = std::min(u.end_ms(), period_.EndMs());
    if (lo >= hi) continue;  // not in this period
    auto unpriced = [&](std::string why) {
      run.unpriced.push_back({rec->seq, rec->source_id, rec->event_id, std::move(why)});
    };
    if (alloc == nullptr) {
      unpriced(absl::StrCat("unknown allocation '", u.allocation_id(), "'"));
      continue;
    }
    const auto outages_it = outages_.find(alloc->allocation_id());
    const auto* outages = outages_it == outages_.end() ? nullptr : &outages_it->second;
    std::vector<int64_t> cuts = registry_.PriceChangesWithin(*alloc, u.gpu_model(), lo, hi);
    if (cap_from > lo && cap_from < hi) cuts.push_back(cap_from);
    if (outages != nullptr) {
      for (const auto& o : *outages) {
        for (int64_t t : {o.start_ms, o.end_ms}) {
          if (t > lo && t < hi) cuts.push_back(t);
        }
      }
    }
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    cuts.insert(cuts.begin(), lo);
    cuts.push_back(hi);
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
      const int64_t s = cuts[i];
      const auto inst = registry_.InstitutionAt(alloc->institution_id(), s);
      const auto rate = registry_.RateAt(alloc->program(), u.gpu_model(), s);
      const auto copay = inst ? registry_.CopayAt(inst->type, s) : std::nullopt;
      if (!inst || !rate || !copay) {
        unpriced(absl::StrCat(!inst   ? "no institution record for '"
                              : !rate ? "no rate card for the usage of '"
                                      : "no co-pay policy for the type of '",
                              alloc->institution_id(), "' at ", base::FormatKst(s)));
        continue;
      }
      names[alloc->institution_id()] = inst->name;
      const bool beyond_cap = s >= cap_from;
      const int64_t copay_bp = beyond_cap ? base::kBasisPointsPerUnit : *copay;
      const LineKind kind = beyond_cap ? LineKind::kBeyondCap : LineKind::kUsage;
      const int64_t duration = cuts[i + 1] - s;
      auto key = [&](LineKind k) {
        return LineKey{alloc->institution_id(),
                       alloc->allocation_id(),
                       u.gpu_model(),
                       *rate,
                       copay_bp,
                       inst->type,
                       static_cast<int>(k)};
      };
      quantities[key(kind)] += base::GpuMs{static_cast<int64_t>(u.gpu_count()) * duration};
      // Usage while the allocation was declared out of service is free: a credit line at the
      // same prices takes it back.
      const int64_t credited_gpus = std::min<int64_t>(u.gpu_count(), OutageGpusAt(outages, s));
      if (credited_gpus > 0) {
        quantities[key(LineKind::kOutageCredit)] += base::GpuMs{-credited_gpus * duration};
      }
    }
  }

  for (const auto& [key, qty] : quantities) {
    const auto& [institution_id, allocation_id, model, rate, copay_bp, type, kind] = key;
    if (run.invoices.empty() || run.invoices.back().institution_id != institution_id) {
      Invoice inv;
      inv.institution_id = institution_id;
      inv.institution_name = names[institution_id];
      inv.vat_bp = options_.vat_bp;
      run.invoices.push_back(std::move(inv));
    }
    Invoice& inv = run.invoices.back();
    InvoiceLine line;
    line.allocation_id = allocation_id;
    line.kind = static_cast<LineKind>(kind);
    line.program = registry_.FindAllocation(allocation_id)->program();
    line.gpu_model = static_cast<v1::GpuModel>(model);
    line.institution_type = static_cast<v1::InstitutionType>(type);
    line.krw_per_gpu_hour = base::Krw{rate};
    line.copay_bp = copay_bp;
    line.gpu_ms = qty;
    GPULEDGER_RETURN_IF_ERROR(PriceLine(&line));
    inv.gpu_ms += line.gpu_ms;
    inv.list += line.list;
    inv.copay += line.copay;
    inv.subsidy += line.subsidy;
    inv.lines.push_back(std::move(line));
  }
  for (Invoice& inv : run.invoices) {
    GPULEDGER_ASSIGN_OR_RETURN(inv.vat, base::ApplyBasisPoints(inv.copay, inv.vat_bp));
    inv.amount_due = inv.copay + inv.vat;
    GPULEDGER_ASSERT(inv.list == inv.copay + inv.subsidy, "invoice list = co-pay + subsidy");
    run.gpu_ms += inv.gpu_ms;
    run.list += inv.list;
    run.copay += inv.copay;
    run.subsidy += inv.subsidy;
  }
  return run;
}

absl::StatusOr<SettlementRun> SettlePeriod(const ledger::Ledger& ledger, base::Period period,
                                           const SettleOptions& options) {
  Rater rater(period, options);
  const uint64_t covered = ledger.head().seq;
  absl::Status st = ledger.Scan(1, [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
    if (e.seq > covered) return false;
    const auto& le = e.entry;
    if (le.outcome() != v1::ACCEPTED) return true;
    if (le.source() == v1::SOURCE_REGISTRY) {
      v1::RegistryEvent r;
      if (!r.ParseFromString(le.payload())) {
        return absl::DataLossError(absl::StrCat("accepted entry ", e.seq, " does not decode"));
      }
      rater.ApplyRegistry(r);
    } else if (le.source() == v1::SOURCE_USAGE) {
      v1::UsageEvent u;
      if (!u.ParseFromString(le.payload())) {
        return absl::DataLossError(absl::StrCat("accepted entry ", e.seq, " does not decode"));
      }
      rater.ApplyUsage(e.seq, le.source_id(), u);
    }
    return true;
  });
  GPULEDGER_RETURN_IF_ERROR(st);
  return rater.Finish(covered);
}

}  // namespace gpuledger::settlement
