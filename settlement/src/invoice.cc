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

// (institution, allocation, model, rate, co-pay bp, institution type) → GPU-ms.
using LineKey = std::tuple<std::string, std::string, int, int64_t, int64_t, int>;

absl::Status PriceLine(InvoiceLine* line) {
  GPULEDGER_ASSIGN_OR_RETURN(line->list, base::ListPrice(line->gpu_ms, line->krw_per_gpu_hour));
  GPULEDGER_ASSIGN_OR_RETURN(line->copay, base::ApplyBasisPoints(line->list, line->copay_bp));
  line->subsidy = line->list - line->copay;
  GPULEDGER_ASSERT(line->list == line->copay + line->subsidy, "list = co-pay + subsidy");
  return absl::OkStatus();
}

}  // namespace

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
    default:
      break;  // own use and outages are for CSP statements, not co-pay invoices
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

  for (const Recorded* rec : ordered) {
    const auto& u = rec->interval;
    const int64_t lo = std::max(u.start_ms(), period_.StartMs());
    const int64_t hi = std::min(u.end_ms(), period_.EndMs());
    if (lo >= hi) continue;  // not in this period
    auto unpriced = [&](std::string why) {
      run.unpriced.push_back({rec->seq, rec->source_id, rec->event_id, std::move(why)});
    };
    const v1::Allocation* alloc = registry_.FindAllocation(u.allocation_id());
    if (alloc == nullptr) {
      unpriced(absl::StrCat("unknown allocation '", u.allocation_id(), "'"));
      continue;
    }
    std::vector<int64_t> cuts = registry_.PriceChangesWithin(*alloc, u.gpu_model(), lo, hi);
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
      const LineKey key{alloc->institution_id(),
                        alloc->allocation_id(),
                        u.gpu_model(),
                        *rate,
                        *copay,
                        inst->type};
      quantities[key] += base::GpuMs{static_cast<int64_t>(u.gpu_count()) * (cuts[i + 1] - s)};
    }
  }

  for (const auto& [key, qty] : quantities) {
    const auto& [institution_id, allocation_id, model, rate, copay_bp, type] = key;
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
