// Documents: invoices, CSP statements and programme summaries of a period, built from the
// store's totals (frozen ones for a closed period), with the adjustments of closed periods on
// the first open one; and daily usage for charts.

#include <algorithm>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "base/assert.h"
#include "base/status.h"
#include "counters.h"
#include "engine_internal.h"
#include "settlement/engine.h"

namespace gpuledger::settlement {

using namespace internal;  // NOLINT: the engine's own helpers

std::vector<int64_t> Engine::DailyUsage(Period period, const std::string& csp_id) {
  counters_->Flush();
  const int64_t first_day = keys::KstDay(period.StartMs());
  std::vector<int64_t> out(keys::KstDay(period.EndMs()) - first_day, 0);
  for (size_t i = 0; i < out.size(); ++i) {
    const std::string prefix =
        KeyBuilder(keys::kRollupDay).U32(static_cast<uint32_t>(first_day + i)).Str(csp_id).Take();
    __int128 sum = 0;
    store_->Scan(prefix, [&](std::string_view key, std::string_view value) {
      keys::RollupFields f;
      const auto v = keys::DecodeI128(value);
      if (v && keys::DecodeRollup(key, &f) && f.measure == keys::kMeasureUsed) sum += *v;
      return true;
    });
    // For charts: a sum beyond 64 bits is shown at the largest value.
    constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
    constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
    out[i] = sum > kMax ? kMax : sum < kMin ? kMin : static_cast<int64_t>(sum);
  }
  return out;
}

namespace {

// Keeps the errors of the documents `filter` asks for.
void KeepErrors(const DocumentFilter& filter, v1::PeriodDocuments* docs) {
  auto* errors = docs->mutable_errors();
  errors->erase(
      std::remove_if(errors->begin(), errors->end(),
                     [&](const v1::DocumentError& e) {
                       std::string_view d = e.document();
                       if (d.starts_with("invoice/")) {
                         return !filter.invoices ||
                                (filter.institution_id && d.substr(8) != *filter.institution_id);
                       }
                       if (d.starts_with("statement/")) {
                         return !filter.statements ||
                                (filter.csp_id && d.substr(10) != *filter.csp_id);
                       }
                       if (d.starts_with("program/")) return !filter.programs;
                       return false;
                     }),
      errors->end());
}

// The one document asked for, if it cannot be computed: its error.
absl::Status OneDocumentError(const DocumentFilter& filter, const v1::PeriodDocuments& docs) {
  for (const auto& e : docs.errors()) {
    const bool asked =
        (filter.institution_id && e.document() == InvoiceDoc(*filter.institution_id)) ||
        (filter.csp_id && e.document() == StatementDoc(*filter.csp_id));
    if (asked) {
      return absl::FailedPreconditionError(
          absl::StrCat(e.document(), " of ", docs.period(), " cannot be computed: ", e.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::PeriodDocuments> Engine::Documents(Period period, const DocumentFilter& filter) {
  counters_->Flush();
  const std::string p = period.ToString();
  v1::PeriodDocuments docs;
  if (IsClosed(p)) {
    auto bytes = store_->Get(absl::StrCat(keys::kFrozen, KeyBuilder().Str(p).key()));
    if (!bytes || !docs.ParseFromString(*bytes)) {
      return absl::DataLossError(
          absl::StrCat("settlement store: frozen documents of ", p, " are missing or unreadable"));
    }
    auto keep = [&](auto* list, auto pred) {
      auto* l = list;
      l->erase(std::remove_if(l->begin(), l->end(), [&](const auto& x) { return !pred(x); }),
               l->end());
    };
    auto wanted = [&](const v1::Invoice& i) {
      return filter.invoices &&
             (!filter.institution_id || i.institution_id() == *filter.institution_id);
    };
    keep(docs.mutable_invoices(), wanted);
    keep(docs.mutable_nothing_owed(), wanted);
    keep(docs.mutable_statements(), [&](const v1::CspStatement& s) {
      return filter.statements && (!filter.csp_id || s.csp_id() == *filter.csp_id);
    });
    if (!filter.programs) docs.clear_programs();
  } else {
    GPULEDGER_ASSIGN_OR_RETURN(docs, Draft(period, filter));
  }
  KeepErrors(filter, &docs);
  GPULEDGER_RETURN_IF_ERROR(OneDocumentError(filter, docs));
  return docs;
}

absl::Status ValueOwnUse(const OwnUseValue& value, v1::OwnUseRow* row);

absl::StatusOr<OwnUseValue> Engine::ReadOwnUseValue(const std::string& pool_rest) const {
  const auto num = keys::DecodeI128(
      store_->Get(absl::StrCat(keys::kOwnUseValue, pool_rest)).value_or(keys::EncodeI128(0)));
  const auto unpriced = keys::DecodeI128(
      store_->Get(absl::StrCat(keys::kOwnUseUnpriced, pool_rest)).value_or(keys::EncodeI128(0)));
  if (!num || !unpriced) return absl::DataLossError("settlement store: unreadable own-use value");
  OwnUseValue out;
  out.numerator = *num;
  GPULEDGER_ASSIGN_OR_RETURN(out.unpriced_gpu_ms,
                             base::CheckedNarrow(*unpriced, "unpriced own-use GPU-ms"));
  return out;
}

absl::StatusOr<v1::OwnUseRow> Engine::OwnUseRowFor(const std::string& csp, int program, int model,
                                                   Period period, int64_t own,
                                                   const OwnUseValue& value) const {
  const auto prog = static_cast<v1::Program>(program);
  const auto gpu_model = static_cast<v1::GpuModel>(model);
  const int64_t last_ms = period.EndMs() - 1;
  const auto* pool = registry_.Pool(csp, prog, gpu_model);
  const auto* caps = registry_.OwnUseCaps(csp);
  __int128 capacity128 = 0;
  __int128 allowed_num = 0;
  if (pool != nullptr) {
    pool->ForEachWithin(period.StartMs(), period.EndMs(),
                        [&](int64_t from, int64_t to, uint32_t gpus) {
                          capacity128 += GpuMsOf(gpus, from, to);
                          if (caps == nullptr) return;
                          caps->ForEachWithin(from, to, [&](int64_t a, int64_t b, uint32_t bp) {
                            allowed_num += GpuMsOf(gpus, a, b) * bp;
                          });
                        });
  }
  GPULEDGER_ASSIGN_OR_RETURN(int64_t capacity,
                             base::CheckedNarrow(capacity128, "the pool's capacity GPU-ms"));
  GPULEDGER_ASSIGN_OR_RETURN(int64_t allowed, DivRound(allowed_num, base::kBasisPointsPerUnit));
  int64_t share = 0;
  if (capacity > 0) {
    GPULEDGER_ASSIGN_OR_RETURN(
        share, DivRound(static_cast<__int128>(own) * base::kBasisPointsPerUnit, capacity));
  }
  v1::OwnUseRow row;
  row.set_program(prog);
  row.set_gpu_model(gpu_model);
  row.set_own_use_gpu_ms(own);
  row.set_capacity_gpu_ms(capacity);
  row.set_share_bp(static_cast<uint32_t>(share));
  row.set_cap_bp(caps != nullptr ? caps->At(last_ms).value_or(0) : 0);
  row.set_allowed_gpu_ms(allowed);
  row.set_netted(registry_.NetsOwnUseExcessAt(csp, last_ms));
  GPULEDGER_RETURN_IF_ERROR(ValueOwnUse(value, &row));
  return row;
}

// The row's excess from its own use and allowance, and the values of its own use and excess
// (docs/SETTLEMENT.md, "CSP settlement statements"): own use slice by slice at the rate in
// force when it was recorded; the excess as the same share of that value as of the own use, so
// that no slice of the month counts as more "over the cap" than another.
absl::Status ValueOwnUse(const OwnUseValue& value, v1::OwnUseRow* row) {
  GPULEDGER_ASSIGN_OR_RETURN(
      int64_t over,
      base::CheckedSub(row->own_use_gpu_ms(), row->allowed_gpu_ms(), "own use beyond the cap"));
  row->set_excess_gpu_ms(std::max<int64_t>(0, over));
  GPULEDGER_ASSIGN_OR_RETURN(int64_t krw, DivRound(value.numerator, base::kMsPerHour));
  row->set_value_krw(krw);
  row->set_unpriced_gpu_ms(value.unpriced_gpu_ms);
  int64_t excess_krw = 0;
  if (row->excess_gpu_ms() > 0 && row->own_use_gpu_ms() > 0 && value.numerator > 0) {
    // value.numerator is at most 2^100 (SaturatingMul) and positive, the excess positive: the
    // product fits 128 bits exactly when the numerator is at most (2^127 − 1) / excess.
    constexpr __int128 kI128Max =
        static_cast<__int128>((static_cast<unsigned __int128>(1) << 127) - 1);
    if (value.numerator > kI128Max / row->excess_gpu_ms()) {
      return absl::OutOfRangeError("the value of own use beyond the cap does not fit");
    }
    const __int128 num = value.numerator * row->excess_gpu_ms();
    // Half away from zero; the denominator is below 2^86 and num is positive.
    const __int128 den = static_cast<__int128>(row->own_use_gpu_ms()) * base::kMsPerHour;
    const __int128 rounded = num / den + (2 * (num % den) >= den ? 1 : 0);
    GPULEDGER_ASSIGN_OR_RETURN(excess_krw,
                               base::CheckedNarrow(rounded, "the value of own use beyond the cap"));
  }
  row->set_excess_value_krw(excess_krw);
  return absl::OkStatus();
}

namespace {

void NoteStoreDamage(std::map<std::string, std::string>* errors, std::string_view what) {
  NoteError(errors, "store",
            absl::DataLossError(absl::StrCat("settlement store: ", std::string(what))));
}

// The invoices of one open period, as Draft builds them: the period's lines from the store, the
// adjustments of closed periods (on the first open period after the last close), then each
// invoice's totals, VAT and amount due. A document that cannot be computed goes to `errors`
// instead and is left out; every other one is built as usual (one tenant never fails another's).
class InvoiceDraft {
 public:
  InvoiceDraft(const ledger::Registry& registry, Store* store, Period period,
               std::optional<std::string> only_institution,
               std::map<std::string, std::string>* errors)
      : registry_(registry),
        store_(store),
        period_(period),
        p_(period.ToString()),
        only_(std::move(only_institution)),
        errors_(errors) {}

  // The period's lines (only one institution's when only that invoice is asked for).
  void ReadLines() {
    const std::string lines_of_period = KeyBuilder(keys::kLine).Str(p_).Take();
    const std::string scope =
        only_ ? KeyBuilder().Raw(lines_of_period).Str(*only_).Take() : lines_of_period;
    store_->Scan(scope, [&](std::string_view key, std::string_view value) {
      LineId id;
      if (!DecodeLine(key.substr(lines_of_period.size()), &id)) {
        NoteStoreDamage(errors_, absl::StrCat("an unreadable line key in ", p_));
        return true;
      }
      const auto gpu_ms = keys::DecodeI128(value);
      auto line = gpu_ms ? LineOf(id, *gpu_ms)
                         : absl::DataLossError("settlement store: unreadable GPU-ms of the line");
      if (!line.ok()) {
        LineError(id, p_, line.status());
        return true;
      }
      *invoices_[id.institution_id].add_lines() = *std::move(line);
      return true;
    });
  }

  // For every line of a closed period that changed since it was billed: the difference, as an
  // adjustment line of this period.
  void ReadAdjustments() {
    std::vector<std::pair<std::string, std::string>> touched;  // (closed period, line)
    store_->Scan(keys::kTouchedLine, [&](std::string_view key, std::string_view) {
      KeyReader r(key);
      std::string closed_period;
      if (!r.Prefix(keys::kTouchedLine) || !r.Str(&closed_period)) {
        NoteStoreDamage(errors_, "an unreadable touched-line key");
        return true;
      }
      touched.emplace_back(std::move(closed_period), std::string(r.rest()));
      return true;
    });
    for (const auto& [closed_period, line_key] : touched) {
      LineId id;
      if (!DecodeLine(line_key, &id)) {
        NoteStoreDamage(errors_, "an unreadable touched line");
        continue;
      }
      if (only_ && id.institution_id != *only_) continue;
      auto adj = AdjustmentOf(id, closed_period, line_key);
      if (!adj.ok()) {
        LineError(id, absl::StrCat(closed_period, " adjustment"), adj.status());
        continue;
      }
      if (!IsZero(*adj)) *invoices_[id.institution_id].add_adjustments() = *std::move(adj);
    }
  }

  // Each invoice's name, type, totals, VAT and amount due. Returns the invoices that could be
  // computed: lines of one that cannot reach no statement or summary either; they are not billed
  // at close and come back as adjustments of the next open period.
  std::map<std::string, v1::Invoice> Finish(int64_t default_vat_bp) {
    const int64_t last_ms = period_.EndMs() - 1;
    for (auto& [institution_id, inv] : invoices_) {
      const std::string doc = InvoiceDoc(institution_id);
      if (errors_->contains(doc)) continue;
      inv.set_period(p_);
      inv.set_institution_id(institution_id);
      auto version = registry_.InstitutionAt(institution_id, last_ms);
      if (!version) version = registry_.InstitutionAt(institution_id, INT64_MAX);
      if (version) {
        inv.set_institution_name(version->name);
        inv.set_institution_type(version->type);
      }
      if (const v1::Party* recipient = registry_.PartyAt(institution_id, last_ms)) {
        *inv.mutable_recipient() = *recipient;
      }
      NoteError(errors_, doc, Total(&inv));
      if (!errors_->contains(doc)) NoteError(errors_, doc, Bill(default_vat_bp, &inv));
      if (!errors_->contains(doc)) NoteError(errors_, doc, Balances(&inv));
    }
    for (auto it = invoices_.begin(); it != invoices_.end();) {
      it = errors_->contains(InvoiceDoc(it->first)) ? invoices_.erase(it) : std::next(it);
    }
    return std::move(invoices_);
  }

 private:
  // A priced line of `gpu_ms` with identity `id`.
  absl::StatusOr<v1::InvoiceLine> LineOf(const LineId& id, __int128 gpu_ms) const {
    v1::InvoiceLine line;
    line.set_allocation_id(id.allocation_id);
    line.set_kind(static_cast<v1::LineKind>(id.kind));
    line.set_gpu_model(static_cast<v1::GpuModel>(id.model));
    line.set_institution_type(static_cast<v1::InstitutionType>(id.type));
    line.set_krw_per_gpu_hour(id.rate);
    line.set_copay_bp(static_cast<uint32_t>(id.copay_bp));
    GPULEDGER_ASSIGN_OR_RETURN(int64_t q, base::CheckedNarrow(gpu_ms, "the line's GPU-ms"));
    line.set_gpu_ms(q);
    if (const v1::Allocation* a = registry_.FindAllocation(id.allocation_id)) {
      line.set_program(a->program());
      line.set_csp_id(a->csp_id());
    }
    GPULEDGER_RETURN_IF_ERROR(Price(&line));
    return line;
  }

  // The line as it stands now, less what was billed for it at `closed_period`'s close.
  absl::StatusOr<v1::InvoiceLine> AdjustmentOf(const LineId& id, const std::string& closed_period,
                                               const std::string& line_key) const {
    const auto value = store_->Get(LineKey(keys::kLine, closed_period, line_key));
    const auto gpu_ms = value ? keys::DecodeI128(*value) : std::optional<__int128>(0);
    if (!gpu_ms) return absl::DataLossError("settlement store: unreadable GPU-ms of the line");
    GPULEDGER_ASSIGN_OR_RETURN(v1::InvoiceLine now, LineOf(id, *gpu_ms));
    v1::BilledLine billed;
    if (auto bytes = store_->Get(LineKey(keys::kBilledLine, closed_period, line_key))) {
      if (!billed.ParseFromString(*bytes)) {
        return absl::DataLossError("settlement store: unreadable billed line");
      }
    }
    v1::InvoiceLine out = now;
    GPULEDGER_ASSIGN_OR_RETURN(int64_t g,
                               base::CheckedSub(now.gpu_ms(), billed.gpu_ms(), "GPU-ms"));
    GPULEDGER_ASSIGN_OR_RETURN(
        int64_t l, base::CheckedSub(now.list_krw(), billed.list_krw(), "the list price"));
    GPULEDGER_ASSIGN_OR_RETURN(int64_t c,
                               base::CheckedSub(now.copay_krw(), billed.copay_krw(), "the co-pay"));
    GPULEDGER_ASSIGN_OR_RETURN(
        int64_t s, base::CheckedSub(now.subsidy_krw(), billed.subsidy_krw(), "the subsidy"));
    out.set_gpu_ms(g);
    out.set_list_krw(l);
    out.set_copay_krw(c);
    out.set_subsidy_krw(s);
    out.set_adjusts_period(closed_period);
    return out;
  }

  // Totals of lines and adjustments.
  static absl::Status Total(v1::Invoice* inv) {
    v1::Totals* t = inv->mutable_totals();
    for (const auto& l : inv->lines()) GPULEDGER_RETURN_IF_ERROR(AddTo(t, l));
    for (const auto& l : inv->adjustments()) GPULEDGER_RETURN_IF_ERROR(AddTo(t, l));
    GPULEDGER_ASSERT(t->list_krw() == t->copay_krw() + t->subsidy_krw(),
                     "invoice list = co-pay + subsidy");
    return absl::OkStatus();
  }

  // The invoice's bills (docs/SETTLEMENT.md, "Invoices"): its co-pay split by who issues each
  // programme's invoices under the billing terms in force at the period's end, VAT on each
  // bill by the recipient's tax type and the terms' rounding; bills of 0 won left out unless
  // the terms ask for them. Without terms: one bill, the operator's, VAT at `default_vat_bp`
  // rounded half away from zero. Numbers and dates are set at close.
  absl::Status Bill(int64_t default_vat_bp, v1::Invoice* inv) const {
    const int64_t last_ms = period_.EndMs() - 1;
    const v1::BillingTerms* terms = registry_.BillingTermsAt(last_ms);
    const int64_t vat_bp = terms != nullptr ? terms->vat_bp() : default_vat_bp;
    const v1::VatRounding rounding =
        terms != nullptr ? terms->vat_rounding() : v1::VAT_ROUND_HALF_AWAY_FROM_ZERO;
    const v1::TaxType tax = inv->recipient().tax_type() == v1::TAX_TYPE_UNSPECIFIED
                                ? v1::TAX_TAXABLE
                                : inv->recipient().tax_type();
    const int64_t applied_bp = tax == v1::TAX_TAXABLE ? vat_bp : 0;
    inv->set_vat_bp(static_cast<uint32_t>(vat_bp));

    struct Acc {
      v1::InvoiceIssuer role = v1::ISSUER_OPERATOR;
      std::set<int> programs;
      int64_t supply = 0;
    };
    std::map<std::string, Acc> by_issuer;  // issuer party id → its lines' co-pay
    const std::string operator_party = terms != nullptr ? terms->operator_party_id() : "operator";
    auto add = [&](const v1::InvoiceLine& l) -> absl::Status {
      v1::InvoiceIssuer role = v1::ISSUER_OPERATOR;
      if (terms != nullptr) {
        for (const auto& r : terms->issuers()) {
          if (r.program() == l.program()) role = r.issuer();
        }
      }
      if (l.csp_id().empty()) role = v1::ISSUER_OPERATOR;  // a line of no known allocation
      Acc& acc = by_issuer[role == v1::ISSUER_CSP ? l.csp_id() : operator_party];
      acc.role = role;
      acc.programs.insert(l.program());
      GPULEDGER_ASSIGN_OR_RETURN(acc.supply,
                                 base::CheckedAdd(acc.supply, l.copay_krw(), "a bill's supply"));
      return absl::OkStatus();
    };
    for (const auto& l : inv->lines()) GPULEDGER_RETURN_IF_ERROR(add(l));
    for (const auto& l : inv->adjustments()) GPULEDGER_RETURN_IF_ERROR(add(l));

    const bool keep_zero = terms != nullptr && terms->invoice_nothing_owed();
    int64_t vat_sum = 0;
    for (const auto& [party_id, acc] : by_issuer) {
      auto vat = rounding == v1::VAT_ROUND_TOWARD_ZERO
                     ? base::ApplyBasisPointsTowardZero(base::Krw{acc.supply}, applied_bp)
                     : base::ApplyBasisPoints(base::Krw{acc.supply}, applied_bp);
      if (!vat.ok()) return vat.status();
      if (acc.supply == 0 && vat->won == 0 && !keep_zero) continue;
      v1::Bill* b = inv->add_bills();
      b->set_issuer_party_id(party_id);
      b->set_issuer_role(acc.role);
      if (const v1::Party* issuer = registry_.PartyAt(party_id, last_ms)) {
        *b->mutable_issuer() = *issuer;
      }
      for (int program : acc.programs) b->add_programs(static_cast<v1::Program>(program));
      b->set_tax_type(tax);
      b->set_vat_bp(static_cast<uint32_t>(applied_bp));
      b->set_vat_rounding(rounding);
      b->set_supply_krw(acc.supply);
      b->set_vat_krw(vat->won);
      GPULEDGER_ASSIGN_OR_RETURN(int64_t total,
                                 base::CheckedAdd(acc.supply, vat->won, "a bill's total"));
      b->set_total_krw(total);
      if (terms != nullptr) b->set_payment_instructions(terms->payment_instructions());
      GPULEDGER_ASSIGN_OR_RETURN(vat_sum, base::CheckedAdd(vat_sum, vat->won, "the VAT"));
    }
    inv->set_vat_krw(vat_sum);
    GPULEDGER_ASSIGN_OR_RETURN(
        int64_t due, base::CheckedAdd(inv->totals().copay_krw(), vat_sum, "the amount due"));
    inv->set_amount_due_krw(due);
    return absl::OkStatus();
  }

  // The caps the invoice's allocations draw on: cap, used, remaining (k/ counters, flushed
  // before drafting).
  absl::Status Balances(v1::Invoice* inv) const {
    std::set<std::string> holders;
    for (const auto* list : {&inv->lines(), &inv->adjustments()}) {
      for (const auto& l : *list) {
        if (registry_.FindAllocation(l.allocation_id()) != nullptr) {
          holders.insert(registry_.CapHolder(l.allocation_id()));
        }
      }
    }
    for (const std::string& holder : holders) {
      const v1::Allocation* a = registry_.FindAllocation(holder);
      if (a == nullptr || a->gpu_ms_cap() <= 0) continue;
      const auto used = keys::DecodeI128(
          store_->Get(KeyBuilder(keys::kCapUsed).Str(holder).Take()).value_or(keys::EncodeI128(0)));
      if (!used) return absl::DataLossError("settlement store: unreadable cap counter");
      GPULEDGER_ASSIGN_OR_RETURN(int64_t u, base::CheckedNarrow(*used, "a cap's GPU-ms used"));
      v1::AllocationBalance* b = inv->add_balances();
      b->set_allocation_id(holder);
      b->set_cap_gpu_ms(a->gpu_ms_cap());
      b->set_used_gpu_ms(u);
      GPULEDGER_ASSIGN_OR_RETURN(int64_t remaining,
                                 base::CheckedSub(a->gpu_ms_cap(), u, "a cap's GPU-ms remaining"));
      b->set_remaining_gpu_ms(remaining);
    }
    return absl::OkStatus();
  }

  void LineError(const LineId& id, std::string_view period_of_line, const absl::Status& st) {
    NoteError(
        errors_, InvoiceDoc(id.institution_id),
        absl::Status(st.code(), absl::StrCat("the ", std::string(period_of_line),
                                             " line of allocation '", id.allocation_id, "' at ",
                                             id.rate, " won per GPU-hour: ", st.message())));
  }

  const ledger::Registry& registry_;
  Store* store_;
  const Period period_;
  const std::string p_;
  const std::optional<std::string> only_;
  std::map<std::string, std::string>* errors_;
  std::map<std::string, v1::Invoice> invoices_;
};

}  // namespace

absl::StatusOr<v1::PeriodDocuments> Engine::Draft(Period period, const DocumentFilter& filter) {
  const std::string p = period.ToString();
  v1::PeriodDocuments docs;
  docs.set_period(p);
  docs.set_covered_seq(applied_through_);
  // Only one institution's invoice wanted: read only its lines.
  const bool one_invoice = filter.institution_id && !filter.statements && !filter.programs;
  // Document → why it cannot be computed (named in docs.errors, left out of docs).
  std::map<std::string, std::string> errors;

  InvoiceDraft draft(registry_, store_, period, one_invoice ? filter.institution_id : std::nullopt,
                     &errors);
  draft.ReadLines();
  const auto last_closed = registry_.last_closed();
  if (last_closed && period == last_closed->Next()) draft.ReadAdjustments();
  const std::map<std::string, v1::Invoice> invoices = draft.Finish(options_.vat_bp);
  if (filter.invoices) {
    for (const auto& [id, inv] : invoices) {
      if (filter.institution_id && id != *filter.institution_id) continue;
      // An institution that owes nothing gets no invoice (no bill): its lines are kept apart.
      *(inv.bills().empty() ? docs.add_nothing_owed() : docs.add_invoices()) = inv;
    }
  }

  // Unpriced usage of the period, in ledger order.
  if (!one_invoice) {
    store_->Scan(KeyBuilder(keys::kUnpriced).Str(p).key(),
                 [&](std::string_view, std::string_view value) {
                   v1::Unpriced u;
                   if (u.ParseFromString(std::string(value))) {
                     *docs.add_unpriced() = u;
                   } else {
                     NoteStoreDamage(&errors, absl::StrCat("an unreadable unpriced record in ", p));
                   }
                   return true;
                 });
  }
  if (filter.statements || filter.programs) {
    GPULEDGER_RETURN_IF_ERROR(DraftStatements(period, filter, invoices, &errors, &docs));
  }
  for (const auto& [document, message] : errors) {
    v1::DocumentError* e = docs.add_errors();
    e->set_document(document);
    e->set_message(message);
  }
  return docs;
}

// CSP statements and programme summaries of a period, from its invoices (those that could be
// computed), own use, outages and pools. A sum that does not fit fails its statement or summary
// alone (into `errors`).
absl::Status Engine::DraftStatements(Period period, const DocumentFilter& filter,
                                     const std::map<std::string, v1::Invoice>& invoices,
                                     std::map<std::string, std::string>* errors,
                                     v1::PeriodDocuments* docs) {
  const std::string p = period.ToString();
  const int64_t last_ms = period.EndMs() - 1;
  const auto last_closed = registry_.last_closed();
  auto statement_error = [&](const std::string& csp, const absl::Status& st) {
    NoteError(errors, StatementDoc(csp), st);
  };
  auto program_error = [&](int program, const absl::Status& st) {
    NoteError(errors, ProgramDoc(program), st);
  };
  auto store_damage = [&](std::string_view what) { NoteStoreDamage(errors, what); };
  // map[key] += v, or the document's error.
  auto add = [](auto* map, const auto& key, int64_t v, std::string_view what) -> absl::Status {
    GPULEDGER_ASSIGN_OR_RETURN(int64_t sum, base::CheckedAdd((*map)[key], v, what));
    (*map)[key] = sum;
    return absl::OkStatus();
  };

  using PoolId = std::tuple<std::string, int, int>;  // CSP, programme, model
  std::map<PoolId, int64_t> usage, own_use, outage, capacity;
  std::map<std::string, v1::CspStatement> statements;
  std::map<std::tuple<std::string, int, std::string, int>, v1::Totals>
      delivered;  // csp,prog,inst,model
  std::map<std::tuple<std::string, std::string, int, std::string, int>, v1::Totals> adjusted;
  std::map<int, v1::ProgramSummary> programs;
  std::map<std::pair<int, int>, v1::Totals> by_type;                      // prog, type
  std::map<std::tuple<int, std::string, int>, v1::Totals> type_adjusted;  // prog, period, type
  for (const auto& [institution_id, inv] : invoices) {
    for (const auto& l : inv.lines()) {
      statements[l.csp_id()];
      programs[l.program()];
      statement_error(
          l.csp_id(),
          AddTo(&delivered[{l.csp_id(), l.program(), institution_id, l.gpu_model()}], l));
      program_error(l.program(), AddTo(&by_type[{l.program(), l.institution_type()}], l));
      statement_error(l.csp_id(), add(&usage, PoolId{l.csp_id(), l.program(), l.gpu_model()},
                                      l.gpu_ms(), "programme usage GPU-ms"));
    }
    for (const auto& l : inv.adjustments()) {
      statements[l.csp_id()];
      programs[l.program()];
      statement_error(l.csp_id(), AddTo(&adjusted[{l.csp_id(), l.adjusts_period(), l.program(),
                                                   institution_id, l.gpu_model()}],
                                        l));
      program_error(
          l.program(),
          AddTo(&type_adjusted[{l.program(), l.adjusts_period(), l.institution_type()}], l));
    }
  }
  const size_t own_use_skip = std::string_view(keys::kOwnUse).size();
  store_->Scan(
      KeyBuilder(keys::kOwnUse).Str(p).key(), [&](std::string_view key, std::string_view value) {
        PoolFields f;
        if (!DecodePool(key.substr(own_use_skip), false, &f)) {
          store_damage("an unreadable own-use key");
          return true;
        }
        statements[f.csp];
        const auto v = keys::DecodeI128(value);
        auto gpu_ms = v ? base::CheckedNarrow(*v, "own-use GPU-ms")
                        : absl::DataLossError("settlement store: unreadable own use");
        if (!gpu_ms.ok()) {
          statement_error(f.csp, gpu_ms.status());
        } else {
          statement_error(
              f.csp, add(&own_use, PoolId{f.csp, f.program, f.model}, *gpu_ms, "own-use GPU-ms"));
        }
        return true;
      });
  const size_t outage_skip = std::string_view(keys::kOutage).size();
  store_->Scan(
      KeyBuilder(keys::kOutage).Str(p).key(), [&](std::string_view key, std::string_view value) {
        PoolFields f;
        if (!DecodePool(key.substr(outage_skip), true, &f)) {
          store_damage("an unreadable outage key");
          return true;
        }
        auto& st = statements[f.csp];
        const auto v = keys::DecodeI128(value);
        auto gpu_ms = v ? base::CheckedNarrow(*v, "outage GPU-ms")
                        : absl::DataLossError("settlement store: unreadable outage");
        if (!gpu_ms.ok()) {
          statement_error(f.csp, gpu_ms.status());
          return true;
        }
        v1::OutageRow* row = st.add_outages();
        row->set_program(static_cast<v1::Program>(f.program));
        row->set_gpu_model(static_cast<v1::GpuModel>(f.model));
        row->set_scope(f.scope);
        row->set_cause(f.cause);
        row->set_gpu_ms(*gpu_ms);
        statement_error(f.csp,
                        add(&outage, PoolId{f.csp, f.program, f.model}, *gpu_ms, "outage GPU-ms"));
        return true;
      });
  // Own use and outages recorded for closed periods after they closed.
  std::map<std::string, std::vector<v1::OwnUseRow>> own_use_adjusted;
  std::map<std::string, std::vector<v1::OutageRow>> outage_adjusted;
  if (last_closed && period == last_closed->Next()) {
    std::vector<std::string> own_keys, outage_keys;
    store_->Scan(keys::kTouchedOwnUse, [&](std::string_view key, std::string_view) {
      own_keys.emplace_back(key.substr(std::string_view(keys::kTouchedOwnUse).size()));
      return true;
    });
    store_->Scan(keys::kTouchedOutage, [&](std::string_view key, std::string_view) {
      outage_keys.emplace_back(key.substr(std::string_view(keys::kTouchedOutage).size()));
      return true;
    });
    for (const std::string& rest : own_keys) {
      PoolFields f;
      if (!DecodePool(rest, false, &f)) {
        store_damage("an unreadable own-use marker");
        continue;
      }
      statements[f.csp];
      auto row = [&]() -> absl::StatusOr<std::optional<v1::OwnUseRow>> {
        GPULEDGER_ASSIGN_OR_RETURN(Period closed_period, base::ParsePeriod(f.period));
        const auto own128 = keys::DecodeI128(
            store_->Get(absl::StrCat(keys::kOwnUse, rest)).value_or(keys::EncodeI128(0)));
        if (!own128) return absl::DataLossError("settlement store: unreadable own use");
        GPULEDGER_ASSIGN_OR_RETURN(int64_t own_now, base::CheckedNarrow(*own128, "own-use GPU-ms"));
        GPULEDGER_ASSIGN_OR_RETURN(OwnUseValue value_now, ReadOwnUseValue(rest));
        v1::OwnUseRow billed;
        v1::OwnUseRow row;
        if (auto bytes = store_->Get(absl::StrCat(keys::kBilledOwnUse, rest))) {
          // Billed before: recompute with the capacity, allowance and rate it was billed with.
          if (!billed.ParseFromString(*bytes)) {
            return absl::DataLossError("settlement store: unreadable billed own use");
          }
          row = billed;
          row.set_own_use_gpu_ms(own_now);
          GPULEDGER_RETURN_IF_ERROR(ValueOwnUse(value_now, &row));
          int64_t share = 0;
          if (billed.capacity_gpu_ms() > 0) {
            GPULEDGER_ASSIGN_OR_RETURN(
                share, DivRound(static_cast<__int128>(own_now) * base::kBasisPointsPerUnit,
                                billed.capacity_gpu_ms()));
          }
          row.set_share_bp(static_cast<uint32_t>(share));
        } else {
          GPULEDGER_ASSIGN_OR_RETURN(
              row, OwnUseRowFor(f.csp, f.program, f.model, closed_period, own_now, value_now));
        }
        GPULEDGER_ASSIGN_OR_RETURN(
            int64_t own_delta,
            base::CheckedSub(row.own_use_gpu_ms(), billed.own_use_gpu_ms(), "own-use GPU-ms"));
        GPULEDGER_ASSIGN_OR_RETURN(int64_t excess_delta,
                                   base::CheckedSub(row.excess_gpu_ms(), billed.excess_gpu_ms(),
                                                    "own use beyond the cap"));
        GPULEDGER_ASSIGN_OR_RETURN(
            int64_t value_delta, base::CheckedSub(row.excess_value_krw(), billed.excess_value_krw(),
                                                  "the value of own use beyond the cap"));
        GPULEDGER_ASSIGN_OR_RETURN(
            int64_t own_value_delta,
            base::CheckedSub(row.value_krw(), billed.value_krw(), "the value of own use"));
        GPULEDGER_ASSIGN_OR_RETURN(int64_t unpriced_delta,
                                   base::CheckedSub(row.unpriced_gpu_ms(), billed.unpriced_gpu_ms(),
                                                    "unpriced own-use GPU-ms"));
        row.set_own_use_gpu_ms(own_delta);
        row.set_excess_gpu_ms(excess_delta);
        row.set_excess_value_krw(value_delta);
        row.set_value_krw(own_value_delta);
        row.set_unpriced_gpu_ms(unpriced_delta);
        row.set_adjusts_period(f.period);
        if (own_delta == 0 && excess_delta == 0 && value_delta == 0 && own_value_delta == 0 &&
            unpriced_delta == 0) {
          return std::nullopt;
        }
        return row;
      }();
      if (!row.ok()) {
        statement_error(f.csp, row.status());
      } else if (*row) {
        own_use_adjusted[f.csp].push_back(**std::move(row));
      }
    }
    for (const std::string& rest : outage_keys) {
      PoolFields f;
      if (!DecodePool(rest, true, &f)) {
        store_damage("an unreadable outage marker");
        continue;
      }
      statements[f.csp];
      const auto now = keys::DecodeI128(
          store_->Get(absl::StrCat(keys::kOutage, rest)).value_or(keys::EncodeI128(0)));
      const auto billed = keys::DecodeI128(
          store_->Get(absl::StrCat(keys::kBilledOutage, rest)).value_or(keys::EncodeI128(0)));
      if (!now || !billed) {
        statement_error(f.csp, absl::DataLossError("settlement store: unreadable outage total"));
        continue;
      }
      auto delta = base::CheckedNarrow(*now - *billed, "an outage adjustment's GPU-ms");
      if (!delta.ok()) {
        statement_error(f.csp, delta.status());
        continue;
      }
      if (*delta == 0) continue;
      v1::OutageRow row;
      row.set_program(static_cast<v1::Program>(f.program));
      row.set_gpu_model(static_cast<v1::GpuModel>(f.model));
      row.set_scope(f.scope);
      row.set_cause(f.cause);
      row.set_gpu_ms(*delta);
      row.set_adjusts_period(f.period);
      outage_adjusted[f.csp].push_back(std::move(row));
    }
  }
  for (const auto& [csp, program, model] : registry_.Pools()) {
    __int128 cap = 0;
    registry_.Pool(csp, program, model)
        ->ForEachWithin(
            period.StartMs(), period.EndMs(),
            [&](int64_t from, int64_t to, uint32_t gpus) { cap += GpuMsOf(gpus, from, to); });
    if (cap == 0) continue;
    statements[csp];
    programs[program];
    auto fits = base::CheckedNarrow(cap, "the pool's capacity GPU-ms");
    if (!fits.ok()) {
      statement_error(csp, fits.status());
      program_error(program, fits.status());
      continue;
    }
    capacity[{csp, program, model}] = *fits;
  }

  // Each CSP's reservation difference per programme (only of statements that could be built).
  std::map<std::string, std::map<int, int64_t>> reservations_of;
  // A statement that cannot be built leaves the summaries of the programmes it reserves pools of
  // without its part: they cannot be built either.
  auto reservations_unknown = [&](const std::string& csp) {
    reservations_of.erase(csp);
    for (const auto& [c, prog, model] : registry_.Pools()) {
      if (c == csp && registry_.ReservedAt(c, prog, model, last_ms)) {
        program_error(prog,
                      absl::FailedPreconditionError(absl::StrCat("the statement of ", csp,
                                                                 ", which reserves a pool of the "
                                                                 "programme, cannot be computed")));
      }
    }
  };
  // Each institution by its name at the period's end (or its last name), as on its invoice.
  std::map<std::string, std::string> names;
  auto name_of = [&](const std::string& institution_id) -> const std::string& {
    auto it = names.find(institution_id);
    if (it != names.end()) return it->second;
    auto version = registry_.InstitutionAt(institution_id, period.EndMs() - 1);
    if (!version) version = registry_.InstitutionAt(institution_id, INT64_MAX);
    return names.emplace(institution_id, version ? version->name : std::string()).first->second;
  };
  for (auto& [csp, st] : statements) {
    if (errors->contains(StatementDoc(csp))) {
      reservations_unknown(csp);
      continue;
    }
    absl::Status built = [&, &csp = csp, &st = st]() -> absl::Status {
      st.set_period(p);
      st.set_csp_id(csp);
      for (const auto& [key, totals] : delivered) {
        const auto& [c, prog, inst, model] = key;
        if (c != csp) continue;
        v1::DeliveredRow* row = st.add_delivered();
        row->set_program(static_cast<v1::Program>(prog));
        row->set_institution_id(inst);
        row->set_institution_name(name_of(inst));
        row->set_gpu_model(static_cast<v1::GpuModel>(model));
        *row->mutable_totals() = totals;
        GPULEDGER_RETURN_IF_ERROR(AddTotals(st.mutable_totals(), totals));
      }
      for (const auto& [key, totals] : adjusted) {
        const auto& [c, adj_period, prog, inst, model] = key;
        if (c != csp) continue;
        v1::DeliveredRow* row = st.add_adjustments();
        row->set_program(static_cast<v1::Program>(prog));
        row->set_institution_id(inst);
        row->set_institution_name(name_of(inst));
        row->set_gpu_model(static_cast<v1::GpuModel>(model));
        *row->mutable_totals() = totals;
        row->set_adjusts_period(adj_period);
        GPULEDGER_RETURN_IF_ERROR(AddTotals(st.mutable_totals(), totals));
      }
      // Every pool, plus whatever used GPUs of a (programme, model) without a pool record.
      std::set<std::pair<int, int>> pools;
      for (const auto* m : {&usage, &own_use, &outage, &capacity}) {
        for (const auto& [key, v] : *m) {
          if (std::get<0>(key) == csp) pools.insert({std::get<1>(key), std::get<2>(key)});
        }
      }
      const auto* caps = registry_.OwnUseCaps(csp);
      const std::optional<uint32_t> cap_bp = caps ? caps->At(last_ms) : std::nullopt;
      st.set_own_use_cap_bp(cap_bp.value_or(0));
      auto get = [](const std::map<PoolId, int64_t>& m, const PoolId& id) {
        auto it = m.find(id);
        return it == m.end() ? int64_t{0} : it->second;
      };
      for (const auto& [prog, model] : pools) {
        const PoolId id{csp, prog, model};
        const int64_t cap = get(capacity, id);
        const int64_t used = get(usage, id);
        const int64_t own = get(own_use, id);
        const int64_t out = get(outage, id);
        v1::CapacityRow* row = st.add_capacity();
        row->set_program(static_cast<v1::Program>(prog));
        row->set_gpu_model(static_cast<v1::GpuModel>(model));
        row->set_capacity_gpu_ms(cap);
        row->set_program_usage_gpu_ms(used);
        row->set_own_use_gpu_ms(own);
        row->set_outage_gpu_ms(out);
        GPULEDGER_ASSIGN_OR_RETURN(
            int64_t idle,
            base::CheckedNarrow(static_cast<__int128>(cap) - used - own - out, "idle GPU-ms"));
        row->set_idle_gpu_ms(idle);
        row->set_oversubscribed(row->idle_gpu_ms() < 0);
        // Exact in 128 bits, whatever the values.
        GPULEDGER_ASSERT(static_cast<__int128>(row->capacity_gpu_ms()) ==
                             static_cast<__int128>(row->program_usage_gpu_ms()) +
                                 row->own_use_gpu_ms() + row->outage_gpu_ms() + row->idle_gpu_ms(),
                         "capacity identity");
        // Own use: against the capacity of government-owned pools, and of any pool the CSP
        // reported own use on.
        if (own == 0 && prog != v1::GOV_ADVANCED) continue;
        if (own == 0 && cap == 0) continue;
        GPULEDGER_ASSIGN_OR_RETURN(OwnUseValue own_value,
                                   ReadOwnUseValue(PoolRest(p, csp, static_cast<v1::Program>(prog),
                                                            static_cast<v1::GpuModel>(model))));
        GPULEDGER_ASSIGN_OR_RETURN(v1::OwnUseRow own_row,
                                   OwnUseRowFor(csp, prog, model, period, own, own_value));
        v1::OwnUseRow* ou = st.add_own_use();
        *ou = std::move(own_row);
        GPULEDGER_ASSIGN_OR_RETURN(int64_t own_sum,
                                   base::CheckedAdd(st.own_use_gpu_ms(), own, "own-use GPU-ms"));
        st.set_own_use_gpu_ms(own_sum);
        GPULEDGER_ASSIGN_OR_RETURN(int64_t hosted, base::CheckedAdd(st.hosted_capacity_gpu_ms(),
                                                                    cap, "hosted capacity GPU-ms"));
        st.set_hosted_capacity_gpu_ms(hosted);
        GPULEDGER_ASSIGN_OR_RETURN(int64_t excess,
                                   base::CheckedAdd(st.own_use_excess_gpu_ms(), ou->excess_gpu_ms(),
                                                    "own use beyond the cap"));
        st.set_own_use_excess_gpu_ms(excess);
        GPULEDGER_ASSIGN_OR_RETURN(
            int64_t value, base::CheckedAdd(st.own_use_excess_value_krw(), ou->excess_value_krw(),
                                            "the value of own use beyond the cap"));
        st.set_own_use_excess_value_krw(value);
        GPULEDGER_ASSIGN_OR_RETURN(
            int64_t worth,
            base::CheckedAdd(st.own_use_value_krw(), ou->value_krw(), "the value of own use"));
        st.set_own_use_value_krw(worth);
      }
      if (st.hosted_capacity_gpu_ms() > 0) {
        GPULEDGER_ASSIGN_OR_RETURN(
            int64_t share,
            DivRound(static_cast<__int128>(st.own_use_gpu_ms()) * base::kBasisPointsPerUnit,
                     st.hosted_capacity_gpu_ms()));
        st.set_own_use_share_bp(static_cast<uint32_t>(share));
      }
      // Reservations (reserved.cc): a reserved pool is paid its charge less the co-pay of its
      // usage, where its usage's lines carry list − co-pay; the difference is what changes.
      const std::vector<PoolOutage> pool_outages = OutagesOf(csp);
      int64_t difference = 0;
      // The same, per programme, for the programme summaries.
      auto by_program = [&reservations_of = reservations_of, &csp = csp](
                            int program, int64_t krw) -> absl::Status {
        int64_t& sum = reservations_of[csp][program];
        GPULEDGER_ASSIGN_OR_RETURN(sum, base::CheckedAdd(sum, krw, "the reservation difference"));
        return absl::OkStatus();
      };
      for (const auto& [prog, model] : pools) {
        GPULEDGER_ASSIGN_OR_RETURN(auto reserved,
                                   ReservedRowFor(csp, prog, model, period, pool_outages));
        if (!reserved) continue;
        v1::Totals used;
        for (const auto& [key, totals] : delivered) {
          if (std::get<0>(key) == csp && std::get<1>(key) == prog && std::get<3>(key) == model) {
            GPULEDGER_RETURN_IF_ERROR(AddTotals(&used, totals));
          }
        }
        reserved->set_delivered_list_krw(used.list_krw());
        reserved->set_copay_krw(used.copay_krw());
        GPULEDGER_ASSIGN_OR_RETURN(
            int64_t subsidy,
            base::CheckedSub(reserved->charge_krw(), used.copay_krw(), "a reservation's subsidy"));
        reserved->set_subsidy_krw(subsidy);
        GPULEDGER_ASSIGN_OR_RETURN(int64_t more,
                                   base::CheckedSub(reserved->charge_krw(), used.list_krw(),
                                                    "the reservation difference"));
        GPULEDGER_ASSIGN_OR_RETURN(
            difference, base::CheckedAdd(difference, more, "the reservation difference"));
        GPULEDGER_RETURN_IF_ERROR(by_program(prog, more));
        *st.add_reserved() = std::move(*reserved);
      }
      // Usage recorded late for a month its pool was reserved: the reservation paid for it.
      for (const auto& [key, totals] : adjusted) {
        if (std::get<0>(key) != csp) continue;
        auto month = base::ParsePeriod(std::get<1>(key));
        if (!month.ok() || !registry_.ReservedAt(csp, static_cast<v1::Program>(std::get<2>(key)),
                                                 static_cast<v1::GpuModel>(std::get<4>(key)),
                                                 month->EndMs() - 1)) {
          continue;
        }
        GPULEDGER_ASSIGN_OR_RETURN(difference, base::CheckedSub(difference, totals.list_krw(),
                                                                "the reservation difference"));
        GPULEDGER_RETURN_IF_ERROR(by_program(std::get<2>(key), -totals.list_krw()));
      }
      if (last_closed && period == last_closed->Next()) {
        GPULEDGER_ASSIGN_OR_RETURN(std::vector<v1::ReservedRow> changed,
                                   ReservationAdjustments(csp, pool_outages));
        for (auto& row : changed) {
          GPULEDGER_ASSIGN_OR_RETURN(difference, base::CheckedAdd(difference, row.charge_krw(),
                                                                  "the reservation difference"));
          GPULEDGER_RETURN_IF_ERROR(by_program(row.program(), row.charge_krw()));
          *st.add_reserved_adjustments() = std::move(row);
        }
      }
      st.set_reservation_difference_krw(difference);
      return absl::OkStatus();
    }();
    if (!built.ok()) {
      statement_error(csp, built);
      reservations_unknown(csp);
      continue;
    }
    for (auto& row : own_use_adjusted[csp]) *st.add_own_use_adjustments() = std::move(row);
    for (auto& row : outage_adjusted[csp]) *st.add_outage_adjustments() = std::move(row);
    // What the state pays: the subsidy less the excess values its contracts net.
    absl::Status netted = [&st = st]() -> absl::Status {
      int64_t sum = 0;
      for (const auto* rows : {&st.own_use(), &st.own_use_adjustments()}) {
        for (const v1::OwnUseRow& r : *rows) {
          if (!r.netted()) continue;
          GPULEDGER_ASSIGN_OR_RETURN(
              sum, base::CheckedAdd(sum, r.excess_value_krw(), "the own-use excess netted"));
        }
      }
      st.set_own_use_netted_krw(sum);
      GPULEDGER_ASSIGN_OR_RETURN(int64_t payable,
                                 base::CheckedSub(st.totals().subsidy_krw(), sum, "the payable"));
      GPULEDGER_ASSIGN_OR_RETURN(
          payable, base::CheckedAdd(payable, st.reservation_difference_krw(), "the payable"));
      st.set_payable_krw(payable);
      return absl::OkStatus();
    }();
    if (!netted.ok()) {
      statement_error(csp, netted);
      continue;
    }
    if (filter.statements && (!filter.csp_id || csp == *filter.csp_id)) {
      *docs->add_statements() = st;
    }
  }

  if (filter.programs) {
    for (auto& [prog, ps] : programs) {
      if (errors->contains(ProgramDoc(prog))) continue;
      absl::Status built = [&, prog = prog, &ps = ps]() -> absl::Status {
        ps.set_period(p);
        ps.set_program(static_cast<v1::Program>(prog));
        for (const auto& [key, totals] : by_type) {
          if (key.first != prog) continue;
          v1::TypeRow* row = ps.add_by_type();
          row->set_institution_type(static_cast<v1::InstitutionType>(key.second));
          *row->mutable_totals() = totals;
          GPULEDGER_RETURN_IF_ERROR(AddTotals(ps.mutable_totals(), totals));
          GPULEDGER_ASSIGN_OR_RETURN(
              int64_t used, base::CheckedAdd(ps.usage_gpu_ms(), totals.gpu_ms(), "usage GPU-ms"));
          ps.set_usage_gpu_ms(used);
        }
        for (const auto& [key, totals] : type_adjusted) {
          const auto& [pr, adj_period, type] = key;
          if (pr != prog) continue;
          v1::TypeRow* row = ps.add_adjustments();
          row->set_institution_type(static_cast<v1::InstitutionType>(type));
          row->set_adjusts_period(adj_period);
          *row->mutable_totals() = totals;
          GPULEDGER_RETURN_IF_ERROR(AddTotals(ps.mutable_totals(), totals));
        }
        for (const auto& [id, cap] : capacity) {
          if (std::get<1>(id) != prog) continue;
          GPULEDGER_ASSIGN_OR_RETURN(
              int64_t sum, base::CheckedAdd(ps.capacity_gpu_ms(), cap, "capacity GPU-ms"));
          ps.set_capacity_gpu_ms(sum);
        }
        for (const auto& [csp, parts] : reservations_of) {
          auto it = parts.find(prog);
          if (it == parts.end()) continue;
          GPULEDGER_ASSIGN_OR_RETURN(int64_t sum,
                                     base::CheckedAdd(ps.reservation_difference_krw(), it->second,
                                                      "the reservation difference"));
          ps.set_reservation_difference_krw(sum);
        }
        if (ps.capacity_gpu_ms() > 0) {
          GPULEDGER_ASSIGN_OR_RETURN(int64_t u, DivRound(static_cast<__int128>(ps.usage_gpu_ms()) *
                                                             base::kBasisPointsPerUnit,
                                                         ps.capacity_gpu_ms()));
          ps.set_utilisation_bp(static_cast<uint32_t>(std::max<int64_t>(0, u)));
        }
        // By call and agency: the period's own lines, and what each call's allocations granted
        // in the period (so that a call's GPUs are reported apart from the rest).
        struct CallSum {
          v1::Totals totals;
          __int128 granted = 0;
          uint32_t allocations = 0;
        };
        std::map<std::pair<std::string, std::string>, CallSum> calls;
        for (const auto& by_institution : invoices) {
          for (const auto& l : by_institution.second.lines()) {
            if (l.program() != prog) continue;
            const v1::Allocation* a = registry_.FindAllocation(l.allocation_id());
            CallSum& c =
                calls[{a != nullptr ? a->call_id() : "", a != nullptr ? a->agency_id() : ""}];
            GPULEDGER_RETURN_IF_ERROR(AddTo(&c.totals, l));
          }
        }
        for (const v1::Allocation* a :
             registry_.AllocationsOn(static_cast<v1::Program>(prog), v1::GPU_MODEL_UNSPECIFIED)) {
          const auto* grant = registry_.Grant(a->allocation_id());
          const int64_t lo = std::max(period.StartMs(), a->start_ms());
          const int64_t hi = std::min(period.EndMs(), registry_.AllocationEndMs(*a));
          if (grant == nullptr || lo >= hi) continue;
          __int128 granted = 0;
          grant->ForEachWithin(lo, hi, [&](int64_t from, int64_t to, uint32_t gpus) {
            granted += GpuMsOf(gpus, from, to);
          });
          if (granted == 0) continue;
          CallSum& c = calls[{a->call_id(), a->agency_id()}];
          c.granted += granted;
          ++c.allocations;
        }
        for (const auto& [key, c] : calls) {
          v1::CallRow* row = ps.add_by_call();
          row->set_call_id(key.first);
          row->set_agency_id(key.second);
          *row->mutable_totals() = c.totals;
          GPULEDGER_ASSIGN_OR_RETURN(int64_t granted,
                                     base::CheckedNarrow(c.granted, "a call's granted GPU-ms"));
          row->set_granted_gpu_ms(granted);
          row->set_allocations(c.allocations);
        }
        return absl::OkStatus();
      }();
      if (!built.ok()) {
        program_error(prog, built);
        continue;
      }
      *docs->add_programs() = ps;
    }
  }
  return absl::OkStatus();
}

}  // namespace gpuledger::settlement
