// Period close: a PeriodClose entry freezes its period's documents (with their digests) and
// records what was billed, so that later events for the period become adjustments on the first
// open period (computed where drafts are built, documents.cc).

#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status.h"
#include "counters.h"
#include "engine_internal.h"
#include "settlement/engine.h"
#include "settlement/render.h"

namespace gpuledger::settlement {

using namespace internal;  // NOLINT: the engine's own helpers

// Every bill of the closing period gets its issue date (the close's, KST), its due date (the
// billing terms' days later) and the next number of its issuer for the year of issue: in order
// of institution id, then issuer id, so that a replay of the ledger numbers them the same.
void Engine::NumberBills(Period period, int64_t closed_at_ms, v1::PeriodDocuments* docs) {
  const v1::BillingTerms* terms = registry_.BillingTermsAt(period.EndMs() - 1);
  const int year = base::KstYear(closed_at_ms);
  const std::string issue_date = base::KstDate(closed_at_ms);
  for (auto& inv : *docs->mutable_invoices()) {
    for (auto& b : *inv.mutable_bills()) {
      const std::string key =
          absl::StrCat(keys::kInvoiceNumber, KeyBuilder().Str(b.issuer_party_id()).U32(year).key());
      const int64_t n = store_->GetInt(key) + 1;
      store_->PutInt(key, n);
      b.set_number(absl::StrFormat("%s-%04d-%06d", b.issuer_party_id(), year, n));
      b.set_issue_date(issue_date);
      if (terms != nullptr) {
        b.set_due_date(base::KstDate(closed_at_ms, static_cast<int>(terms->payment_due_days())));
      }
    }
  }
}

absl::Status Engine::Close(uint64_t seq, const v1::RegistryEvent& event) {
  GPULEDGER_ASSIGN_OR_RETURN(Period period, base::ParsePeriod(event.period_close().period()));
  const std::string p = period.ToString();
  counters_->Flush();  // the documents read the counters from the store
  // Documents that cannot be computed are frozen as errors (docs.errors); the others close.
  GPULEDGER_ASSIGN_OR_RETURN(v1::PeriodDocuments docs, Draft(period, DocumentFilter{}));
  docs.set_closed(true);
  docs.set_covered_seq(seq - 1);
  docs.set_close_seq(seq);
  docs.set_closed_at_ms(event.emitted_at_ms());
  NumberBills(period, event.emitted_at_ms(), &docs);
  for (const auto& inv : docs.invoices()) {
    auto* d = docs.add_digests();
    d->set_document(InvoiceDoc(inv.institution_id()));
    d->set_sha256(DigestHex(InvoiceJson(inv)));
  }
  for (const auto& inv : docs.nothing_owed()) {
    auto* d = docs.add_digests();
    d->set_document(UsageDoc(inv.institution_id()));
    d->set_sha256(DigestHex(InvoiceJson(inv)));
  }
  for (const auto& st : docs.statements()) {
    auto* d = docs.add_digests();
    d->set_document(StatementDoc(st.csp_id()));
    d->set_sha256(DigestHex(StatementJson(st)));
  }
  for (const auto& ps : docs.programs()) {
    auto* d = docs.add_digests();
    d->set_document(ProgramDoc(ps.program()));
    d->set_sha256(DigestHex(ProgramJson(ps)));
  }
  std::string frozen;
  google::protobuf::io::StringOutputStream sink(&frozen);
  {
    google::protobuf::io::CodedOutputStream out(&sink);
    out.SetSerializationDeterministic(true);
    docs.SerializeToCodedStream(&out);
  }
  const std::string period_key = KeyBuilder().Str(p).Take();
  store_->Put(absl::StrCat(keys::kFrozen, period_key), frozen);
  store_->Put(absl::StrCat(keys::kClose, period_key), keys::EncodeU64(seq));

  // What is billed now: this period's lines, and the adjustments it carries for earlier ones.
  auto bill = [&](const std::string& period, const std::string& institution_id,
                  const v1::InvoiceLine& l) {
    LineId id{institution_id, l.allocation_id(),    l.gpu_model(), l.krw_per_gpu_hour(),
              l.copay_bp(),   l.institution_type(), l.kind()};
    const std::string key = LineKey(keys::kBilledLine, period, EncodeLine(id));
    v1::BilledLine b;
    if (auto bytes = store_->Get(key)) b.ParseFromString(*bytes);
    // Each sum fitted the document it was billed on; the running sums of one line are
    // differences of such values, kept in 64 bits as the adjustments that carry them are.
    b.set_gpu_ms(b.gpu_ms() + l.gpu_ms());
    b.set_list_krw(b.list_krw() + l.list_krw());
    b.set_copay_krw(b.copay_krw() + l.copay_krw());
    b.set_subsidy_krw(b.subsidy_krw() + l.subsidy_krw());
    store_->Put(key, b.SerializeAsString());
  };
  for (const auto* list : {&docs.invoices(), &docs.nothing_owed()}) {
    for (const auto& inv : *list) {
      for (const auto& l : inv.lines()) bill(p, inv.institution_id(), l);
      for (const auto& l : inv.adjustments()) bill(l.adjusts_period(), inv.institution_id(), l);
    }
  }
  // Own use and outages as billed: this period's, plus the adjustments it carries.
  auto bill_own_use = [&](const std::string& period, const std::string& csp,
                          const v1::OwnUseRow& row) {
    const std::string key =
        absl::StrCat(keys::kBilledOwnUse, PoolRest(period, csp, row.program(), row.gpu_model()));
    v1::OwnUseRow b;
    if (auto bytes = store_->Get(key)) {
      b.ParseFromString(*bytes);
    } else {
      // First billing of this pool for the period: its capacity, allowance and rate are fixed
      // from now on, as prices are (docs/SETTLEMENT.md).
      b = row;
      b.clear_own_use_gpu_ms();
      b.clear_excess_gpu_ms();
      b.clear_excess_value_krw();
      b.clear_value_krw();
      b.clear_unpriced_gpu_ms();
      b.clear_adjusts_period();
    }
    b.set_own_use_gpu_ms(b.own_use_gpu_ms() + row.own_use_gpu_ms());
    b.set_excess_gpu_ms(b.excess_gpu_ms() + row.excess_gpu_ms());
    b.set_excess_value_krw(b.excess_value_krw() + row.excess_value_krw());
    b.set_value_krw(b.value_krw() + row.value_krw());
    b.set_unpriced_gpu_ms(b.unpriced_gpu_ms() + row.unpriced_gpu_ms());
    store_->Put(key, b.SerializeAsString());
  };
  auto bill_outage = [&](const std::string& period, const std::string& csp,
                         const v1::OutageRow& row) {
    const std::string key = absl::StrCat(
        keys::kBilledOutage,
        OutageRest(period, csp, row.program(), row.gpu_model(), row.scope(), row.cause()));
    store_->PutInt(key, store_->GetInt(key) + row.gpu_ms());
  };
  // Reservations as billed: the month's, plus the changes to closed months it carries.
  auto bill_reserved = [&](const std::string& period, const std::string& csp,
                           const v1::ReservedRow& row) {
    const std::string key =
        absl::StrCat(keys::kBilledReserved, PoolRest(period, csp, row.program(), row.gpu_model()));
    v1::ReservedRow b;
    if (auto bytes = store_->Get(key)) b.ParseFromString(*bytes);
    b.set_program(row.program());
    b.set_gpu_model(row.gpu_model());
    b.set_reserved_gpu_ms(b.reserved_gpu_ms() + row.reserved_gpu_ms());
    b.set_out_of_service_gpu_ms(b.out_of_service_gpu_ms() + row.out_of_service_gpu_ms());
    b.set_charged_gpu_ms(b.charged_gpu_ms() + row.charged_gpu_ms());
    b.set_unpriced_gpu_ms(b.unpriced_gpu_ms() + row.unpriced_gpu_ms());
    b.set_charge_krw(b.charge_krw() + row.charge_krw());
    store_->Put(key, b.SerializeAsString());
  };
  for (const auto& st : docs.statements()) {
    for (const auto& row : st.reserved()) bill_reserved(p, st.csp_id(), row);
    for (const auto& row : st.reserved_adjustments()) {
      bill_reserved(row.adjusts_period(), st.csp_id(), row);
    }
    for (const auto& row : st.own_use()) bill_own_use(p, st.csp_id(), row);
    for (const auto& row : st.own_use_adjustments()) {
      bill_own_use(row.adjusts_period(), st.csp_id(), row);
    }
    for (const auto& row : st.outages()) bill_outage(p, st.csp_id(), row);
    for (const auto& row : st.outage_adjustments()) {
      bill_outage(row.adjusts_period(), st.csp_id(), row);
    }
  }
  // A document that could not be computed billed nothing: what it would have billed stays
  // pending, as adjustments on the next open period (which fail the same way until a
  // correction makes them computable). Its touched marks are kept, and its own lines of this
  // period are marked touched.
  std::set<std::string> failed_institutions, failed_csps;
  for (const auto& e : docs.errors()) {
    const std::string_view doc = e.document();
    if (doc.starts_with("invoice/")) failed_institutions.emplace(doc.substr(8));
    if (doc.starts_with("statement/")) failed_csps.emplace(doc.substr(10));
  }
  for (const std::string& inst : failed_institutions) {
    const std::string prefix = KeyBuilder(keys::kLine).Str(p).Str(inst).Take();
    std::vector<std::string> lines;
    store_->Scan(prefix, [&](std::string_view key, std::string_view) {
      lines.emplace_back(key.substr(std::string_view(keys::kLine).size()));
      return true;
    });
    for (const auto& rest : lines) store_->Put(absl::StrCat(keys::kTouchedLine, rest), "");
  }
  for (const std::string& csp : failed_csps) {
    for (const auto& from_to : {std::pair{keys::kOwnUse, keys::kTouchedOwnUse},
                                std::pair{keys::kOutage, keys::kTouchedOutage}}) {
      // Not a structured binding: lambdas capture these (clang 14 cannot capture bindings).
      const char* from = from_to.first;
      const char* to = from_to.second;
      const std::string prefix = KeyBuilder(from).Str(p).Str(csp).Take();
      std::vector<std::string> rests;
      store_->Scan(prefix, [&](std::string_view key, std::string_view) {
        rests.emplace_back(key.substr(std::string_view(from).size()));
        return true;
      });
      for (const auto& rest : rests) store_->Put(absl::StrCat(to, rest), "");
    }
  }
  std::vector<std::string> touched;
  store_->Scan(keys::kTouchedLine, [&](std::string_view key, std::string_view) {
    KeyReader r(key);
    std::string closed_period, institution;
    const bool keep = r.Prefix(keys::kTouchedLine) && r.Str(&closed_period) &&
                      r.Str(&institution) && failed_institutions.contains(institution);
    if (!keep) touched.emplace_back(key);
    return true;
  });
  for (const char* prefix : {keys::kTouchedOwnUse, keys::kTouchedOutage}) {
    store_->Scan(prefix, [&](std::string_view key, std::string_view) {
      KeyReader r(key);
      std::string closed_period, csp;
      const bool keep =
          r.Prefix(prefix) && r.Str(&closed_period) && r.Str(&csp) && failed_csps.contains(csp);
      if (!keep) touched.emplace_back(key);
      return true;
    });
  }
  for (const auto& key : touched) store_->Delete(key);
  closed_.insert(p);
  return absl::OkStatus();
}

}  // namespace gpuledger::settlement
