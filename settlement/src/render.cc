#include "settlement/render.h"

#include <algorithm>
#include <array>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "base/money.h"
#include "base/period.h"
#include "base/registration_number.h"
#include "csv.h"

namespace gpuledger::settlement {

namespace v1 = gpuledger::v1;
using json = nlohmann::ordered_json;

namespace {

using internal::CsvField;
using internal::CsvPeriod;
using internal::kUtf8Bom;

std::string Hours(int64_t gpu_ms) { return base::FormatGpuHours(base::GpuMs{gpu_ms}); }
std::string Won(int64_t won) { return base::FormatWon(base::Krw{won}); }
std::string Bp(int64_t bp) { return absl::StrFormat("%d.%02d%%", bp / 100, bp % 100); }

json TotalsObj(const v1::Totals& t) {
  return {{"gpu_ms", t.gpu_ms()},
          {"gpu_hours", Hours(t.gpu_ms())},
          {"list_krw", t.list_krw()},
          {"copay_krw", t.copay_krw()},
          {"subsidy_krw", t.subsidy_krw()}};
}

// The totals' fields appended to an object, in TotalsObj's order.
void AppendTotals(json* o, const v1::Totals& t) {
  (*o)["gpu_ms"] = t.gpu_ms();
  (*o)["gpu_hours"] = Hours(t.gpu_ms());
  (*o)["list_krw"] = t.list_krw();
  (*o)["copay_krw"] = t.copay_krw();
  (*o)["subsidy_krw"] = t.subsidy_krw();
}

json LineObj(const v1::InvoiceLine& l) {
  json o;
  if (!l.adjusts_period().empty()) o["adjusts_period"] = l.adjusts_period();
  o["allocation_id"] = l.allocation_id();
  o["kind"] = LineKindName(l.kind());
  o["program"] = v1::Program_Name(l.program());
  o["csp_id"] = l.csp_id();
  o["gpu_model"] = v1::GpuModel_Name(l.gpu_model());
  o["institution_type"] = v1::InstitutionType_Name(l.institution_type());
  o["krw_per_gpu_hour"] = l.krw_per_gpu_hour();
  o["copay_bp"] = l.copay_bp();
  o["gpu_ms"] = l.gpu_ms();
  o["gpu_hours"] = Hours(l.gpu_ms());
  o["list_krw"] = l.list_krw();
  o["copay_krw"] = l.copay_krw();
  o["subsidy_krw"] = l.subsidy_krw();
  return o;
}

// A party as an invoice names it (null: no record).
json PartyObj(bool has, const v1::Party& p) {
  if (!has) return nullptr;
  const v1::TaxType tax = p.tax_type() == v1::TAX_TYPE_UNSPECIFIED ? v1::TAX_TAXABLE : p.tax_type();
  return {{"party_id", p.party_id()},
          {"legal_name", p.legal_name()},
          {"registration_number", base::FormatRegistrationNumber(p.registration_number())},
          {"representative", p.representative()},
          {"address", p.address()},
          {"business_type", p.business_type()},
          {"business_item", p.business_item()},
          {"billing_contact",
           {{"name", p.billing_contact().name()},
            {"department", p.billing_contact().department()},
            {"email", p.billing_contact().email()},
            {"phone", p.billing_contact().phone()}}},
          {"tax_type", v1::TaxType_Name(tax)}};
}

json BillObj(const v1::Bill& b) {
  json programs = json::array();
  for (int p : b.programs()) programs.push_back(v1::Program_Name(static_cast<v1::Program>(p)));
  return {{"number", b.number()},
          {"issue_date", b.issue_date()},
          {"due_date", b.due_date()},
          {"issuer_party_id", b.issuer_party_id()},
          {"issuer_role", v1::InvoiceIssuer_Name(b.issuer_role())},
          {"issuer", PartyObj(b.has_issuer(), b.issuer())},
          {"programs", programs},
          {"tax_type", v1::TaxType_Name(b.tax_type())},
          {"vat_bp", b.vat_bp()},
          {"vat_rounding", v1::VatRounding_Name(b.vat_rounding())},
          {"supply_krw", b.supply_krw()},
          {"vat_krw", b.vat_krw()},
          {"total_krw", b.total_krw()},
          {"payment_instructions", b.payment_instructions()}};
}

json InvoiceObj(const v1::Invoice& inv) {
  json lines = json::array();
  for (const auto& l : inv.lines()) lines.push_back(LineObj(l));
  json adjustments = json::array();
  for (const auto& l : inv.adjustments()) adjustments.push_back(LineObj(l));
  json bills = json::array();
  for (const auto& b : inv.bills()) bills.push_back(BillObj(b));
  json balances = json::array();
  for (const auto& b : inv.balances()) {
    balances.push_back({{"allocation_id", b.allocation_id()},
                        {"cap_gpu_ms", b.cap_gpu_ms()},
                        {"cap_gpu_hours", Hours(b.cap_gpu_ms())},
                        {"used_gpu_ms", b.used_gpu_ms()},
                        {"used_gpu_hours", Hours(b.used_gpu_ms())},
                        {"remaining_gpu_ms", b.remaining_gpu_ms()},
                        {"remaining_gpu_hours", Hours(b.remaining_gpu_ms())}});
  }
  return {{"format", "gpuledger.invoice/1"},
          {"period", inv.period()},
          {"institution_id", inv.institution_id()},
          {"institution_name", inv.institution_name()},
          {"institution_type", v1::InstitutionType_Name(inv.institution_type())},
          {"lines", lines},
          {"adjustments", adjustments},
          {"totals", TotalsObj(inv.totals())},
          {"vat_bp", inv.vat_bp()},
          {"vat_krw", inv.vat_krw()},
          {"amount_due_krw", inv.amount_due_krw()},
          {"recipient", PartyObj(inv.has_recipient(), inv.recipient())},
          {"bills", bills},
          {"balances", balances}};
}

json DeliveredObj(const v1::DeliveredRow& r) {
  json o;
  if (!r.adjusts_period().empty()) o["adjusts_period"] = r.adjusts_period();
  o["program"] = v1::Program_Name(r.program());
  o["institution_id"] = r.institution_id();
  o["institution_name"] = r.institution_name();
  o["gpu_model"] = v1::GpuModel_Name(r.gpu_model());
  AppendTotals(&o, r.totals());
  return o;
}

// An own-use row of a pool (an adjustment row starts with the period it adjusts).
json OwnUseObj(const v1::OwnUseRow& r) {
  json o;
  if (!r.adjusts_period().empty()) o["adjusts_period"] = r.adjusts_period();
  o["program"] = v1::Program_Name(r.program());
  o["gpu_model"] = v1::GpuModel_Name(r.gpu_model());
  o["own_use_gpu_ms"] = r.own_use_gpu_ms();
  o["own_use_gpu_hours"] = Hours(r.own_use_gpu_ms());
  o["capacity_gpu_ms"] = r.capacity_gpu_ms();
  o["share_bp"] = r.share_bp();
  o["cap_bp"] = r.cap_bp();
  o["allowed_gpu_ms"] = r.allowed_gpu_ms();
  o["excess_gpu_ms"] = r.excess_gpu_ms();
  o["excess_gpu_hours"] = Hours(r.excess_gpu_ms());
  o["excess_value_krw"] = r.excess_value_krw();
  o["value_krw"] = r.value_krw();
  o["unpriced_gpu_ms"] = r.unpriced_gpu_ms();
  o["netted"] = r.netted();
  return o;
}

// Rows of a pool (outages, reservations): the closed period a row adjusts (if any), its
// programme and model, then what `fields` adds.
template <typename List, typename Fields>
json PoolRows(const List& list, Fields fields) {
  json out = json::array();
  for (const auto& r : list) {
    json o;
    if (!r.adjusts_period().empty()) o["adjusts_period"] = r.adjusts_period();
    o["program"] = v1::Program_Name(r.program());
    o["gpu_model"] = v1::GpuModel_Name(r.gpu_model());
    fields(r, &o);
    out.push_back(o);
  }
  return out;
}

json StatementObj(const v1::CspStatement& s) {
  json delivered = json::array();
  for (const auto& r : s.delivered()) delivered.push_back(DeliveredObj(r));
  json adjustments = json::array();
  for (const auto& r : s.adjustments()) adjustments.push_back(DeliveredObj(r));
  auto outage_rows = [](const auto& list) {
    return PoolRows(list, [](const v1::OutageRow& r, json* o) {
      (*o)["scope"] = r.scope();
      (*o)["cause"] = r.cause();
      (*o)["gpu_ms"] = r.gpu_ms();
      (*o)["gpu_hours"] = Hours(r.gpu_ms());
    });
  };
  json outages = outage_rows(s.outages());
  json pools = json::array();
  json own_use_adjustments = json::array();
  for (const auto& r : s.own_use_adjustments()) own_use_adjustments.push_back(OwnUseObj(r));
  for (const auto& r : s.own_use()) pools.push_back(OwnUseObj(r));
  json capacity = json::array();
  for (const auto& r : s.capacity()) {
    capacity.push_back({{"program", v1::Program_Name(r.program())},
                        {"gpu_model", v1::GpuModel_Name(r.gpu_model())},
                        {"capacity_gpu_ms", r.capacity_gpu_ms()},
                        {"program_usage_gpu_ms", r.program_usage_gpu_ms()},
                        {"own_use_gpu_ms", r.own_use_gpu_ms()},
                        {"outage_gpu_ms", r.outage_gpu_ms()},
                        {"idle_gpu_ms", r.idle_gpu_ms()},
                        {"oversubscribed", r.oversubscribed()}});
  }
  auto reserved_rows = [](const auto& list) {
    return PoolRows(list, [](const v1::ReservedRow& r, json* o) {
      (*o)["reserved_gpu_ms"] = r.reserved_gpu_ms();
      (*o)["out_of_service_gpu_ms"] = r.out_of_service_gpu_ms();
      (*o)["charged_gpu_ms"] = r.charged_gpu_ms();
      (*o)["charged_gpu_hours"] = Hours(r.charged_gpu_ms());
      (*o)["unpriced_gpu_ms"] = r.unpriced_gpu_ms();
      (*o)["charge_krw"] = r.charge_krw();
      (*o)["delivered_list_krw"] = r.delivered_list_krw();
      (*o)["copay_krw"] = r.copay_krw();
      (*o)["subsidy_krw"] = r.subsidy_krw();
    });
  };
  return {{"format", "gpuledger.csp_statement/2"},
          {"period", s.period()},
          {"csp_id", s.csp_id()},
          {"delivered", delivered},
          {"adjustments", adjustments},
          {"totals", TotalsObj(s.totals())},
          {"subsidy_owed_krw", s.totals().subsidy_krw()},
          {"payable_krw", s.payable_krw()},
          {"outages", outages},
          {"own_use",
           {{"gpu_ms", s.own_use_gpu_ms()},
            {"gpu_hours", Hours(s.own_use_gpu_ms())},
            {"hosted_capacity_gpu_ms", s.hosted_capacity_gpu_ms()},
            {"share_bp", s.own_use_share_bp()},
            {"cap_bp", s.own_use_cap_bp()},
            {"excess_gpu_ms", s.own_use_excess_gpu_ms()},
            {"excess_value_krw", s.own_use_excess_value_krw()},
            {"value_krw", s.own_use_value_krw()},
            {"netted_krw", s.own_use_netted_krw()},
            {"pools", pools}}},
          {"capacity", capacity},
          {"own_use_adjustments", own_use_adjustments},
          {"outage_adjustments", outage_rows(s.outage_adjustments())},
          {"reserved", reserved_rows(s.reserved())},
          {"reserved_adjustments", reserved_rows(s.reserved_adjustments())},
          {"reservation_difference_krw", s.reservation_difference_krw()}};
}

json ProgramObj(const v1::ProgramSummary& p) {
  auto rows = [](const auto& list) {
    json out = json::array();
    for (const auto& r : list) {
      json o;
      if (!r.adjusts_period().empty()) o["adjusts_period"] = r.adjusts_period();
      o["institution_type"] = v1::InstitutionType_Name(r.institution_type());
      AppendTotals(&o, r.totals());
      out.push_back(o);
    }
    return out;
  };
  json by_call = json::array();
  for (const auto& r : p.by_call()) {
    json o;
    o["call_id"] = r.call_id();
    o["agency_id"] = r.agency_id();
    AppendTotals(&o, r.totals());
    o["granted_gpu_ms"] = r.granted_gpu_ms();
    o["granted_gpu_hours"] = Hours(r.granted_gpu_ms());
    o["allocations"] = r.allocations();
    by_call.push_back(o);
  }
  return {{"format", "gpuledger.program_summary/1"},
          {"period", p.period()},
          {"program", v1::Program_Name(p.program())},
          {"by_type", rows(p.by_type())},
          {"adjustments", rows(p.adjustments())},
          {"totals", TotalsObj(p.totals())},
          {"capacity_gpu_ms", p.capacity_gpu_ms()},
          {"usage_gpu_ms", p.usage_gpu_ms()},
          {"utilisation_bp", p.utilisation_bp()},
          {"by_call", by_call},
          {"reservation_difference_krw", p.reservation_difference_krw()}};
}

std::string Dump(const json& j) { return j.dump(2) + "\n"; }

// Basis points as a percentage with two decimals ("9.00%"): what a spreadsheet reads as the
// number 0.09 shown as a percentage, beside the exact basis points.
std::string Percent(int64_t bp) { return i18n::Percent(bp); }

std::string CsvPeriodOrEmpty(const std::string& period) {
  return period.empty() ? std::string() : CsvPeriod(period);
}

// Sums over every invoice of the period and the institutions that owe nothing, in 128 bits: each
// invoice fits 64 bits, their sum need not. A sum that does not fit is written as null
// (docs/FORMATS.md), never wrapped.
struct RunSums {
  __int128 gpu_ms = 0, list = 0, copay = 0, subsidy = 0, due = 0;
};

RunSums RunTotals(const v1::PeriodDocuments& docs) {
  RunSums t;
  for (const auto* list : {&docs.invoices(), &docs.nothing_owed()}) {
    for (const auto& inv : *list) {
      t.gpu_ms += inv.totals().gpu_ms();
      t.list += inv.totals().list_krw();
      t.copay += inv.totals().copay_krw();
      t.subsidy += inv.totals().subsidy_krw();
      t.due += inv.amount_due_krw();
    }
  }
  return t;
}

bool Fits(__int128 v) {
  return v <= std::numeric_limits<int64_t>::max() && v >= std::numeric_limits<int64_t>::min();
}
json Num(__int128 v) { return Fits(v) ? json(static_cast<int64_t>(v)) : json(nullptr); }
std::string WonOrTooLarge(__int128 v) {
  return Fits(v) ? Won(static_cast<int64_t>(v)) : "(beyond 64 bits)";
}

json RunTotalsObj(const v1::PeriodDocuments& docs) {
  const RunSums t = RunTotals(docs);
  return {
      {"gpu_ms", Num(t.gpu_ms)},
      {"gpu_hours", Fits(t.gpu_ms) ? json(Hours(static_cast<int64_t>(t.gpu_ms))) : json(nullptr)},
      {"list_krw", Num(t.list)},
      {"copay_krw", Num(t.copay)},
      {"subsidy_krw", Num(t.subsidy)},
      {"amount_due_krw", Num(t.due)}};
}

std::string Status(const v1::PeriodDocuments& docs) {
  return docs.closed() ? absl::StrCat("closed at entry ", docs.close_seq(), " (",
                                      base::FormatKst(docs.closed_at_ms()), ")")
                       : "open: draft";
}

}  // namespace

const char* LineKindName(v1::LineKind kind) {
  switch (kind) {
    case v1::LINE_KIND_BEYOND_CAP:
      return "beyond_cap";
    case v1::LINE_KIND_OUTAGE_CREDIT:
      return "outage_credit";
    case v1::LINE_KIND_HELD:
      return "held";
    case v1::LINE_KIND_REFUSED:
      return "refused";
    case v1::LINE_KIND_UNPRICED:
      return "unpriced";
    default:
      return "usage";
  }
}

namespace {

// A party as the tax invoice names it (KEC TaxInvoice InvoicerParty / InvoiceeParty).
json EtaxParty(const std::string& id, bool has, const v1::Party& p) {
  return {{"party_id", id},
          {"registration_number", has ? p.registration_number() : ""},
          {"name", has ? p.legal_name() : ""},
          {"representative", has ? p.representative() : ""},
          {"address", has ? p.address() : ""},
          {"business_type", has ? p.business_type() : ""},
          {"business_item", has ? p.business_item() : ""},
          {"contact_department", has ? p.billing_contact().department() : ""},
          {"contact_name", has ? p.billing_contact().name() : ""},
          {"contact_phone", has ? p.billing_contact().phone() : ""},
          {"contact_email", has ? p.billing_contact().email() : ""}};
}

// The bill of `inv` a line belongs to: a CSP's bill of its programme and CSP, else the
// operator's bill of its programme (documents.cc splits lines the same way).
int BillOfLine(const v1::Invoice& inv, const v1::InvoiceLine& l) {
  auto has_program = [&](const v1::Bill& b) {
    for (int p : b.programs()) {
      if (p == l.program()) return true;
    }
    return false;
  };
  for (int i = 0; i < inv.bills_size(); ++i) {
    const auto& b = inv.bills(i);
    if (b.issuer_role() == v1::ISSUER_CSP && b.issuer_party_id() == l.csp_id() && has_program(b)) {
      return i;
    }
  }
  for (int i = 0; i < inv.bills_size(); ++i) {
    const auto& b = inv.bills(i);
    if (b.issuer_role() == v1::ISSUER_OPERATOR && has_program(b)) return i;
  }
  return -1;
}

}  // namespace

std::string EtaxJson(const v1::PeriodDocuments& docs) {
  auto period = base::ParsePeriod(docs.period());
  const std::string supply_date = period.ok() ? base::KstDate(period->EndMs() - 1) : std::string();
  json invoices = json::array();
  for (const auto& inv : docs.invoices()) {
    // Items per bill: its lines by (the month adjusted, programme, GPU model), in order.
    // Sums in 128 bits: a subset of a bill's lines need not fit 64 bits as the bill does.
    std::vector<std::map<std::tuple<std::string, int, int>, std::pair<__int128, __int128>>> items(
        inv.bills_size());
    for (const auto* list : {&inv.lines(), &inv.adjustments()}) {
      for (const auto& l : *list) {
        const int b = BillOfLine(inv, l);
        if (b < 0) continue;
        auto& [gpu_ms, krw] = items[b][{l.adjusts_period(), l.program(), l.gpu_model()}];
        gpu_ms += l.gpu_ms();
        krw += l.copay_krw();
      }
    }
    for (int i = 0; i < inv.bills_size(); ++i) {
      const v1::Bill& b = inv.bills(i);
      json lines = json::array();
      int n = 0;
      for (const auto& [key, sums] : items[i]) {
        const auto& [adjusts, program, model] = key;
        std::string name = absl::StrCat("GPU 이용 자기부담금 ", v1::Program_Name(program), " ",
                                        v1::GpuModel_Name(model));
        if (!adjusts.empty()) absl::StrAppend(&name, " (", adjusts, " 조정)");
        lines.push_back(
            {{"sequence", ++n},
             {"supply_date", supply_date},
             {"name", name},
             {"specification", "GPU-hour"},
             {"quantity_gpu_hours",
              Fits(sums.first) ? json(Hours(static_cast<int64_t>(sums.first))) : json(nullptr)},
             {"supply_krw", Num(sums.second)}});
      }
      const char* type_code = b.tax_type() == v1::TAX_EXEMPT       ? "0301"
                              : b.tax_type() == v1::TAX_ZERO_RATED ? "0102"
                                                                   : "0101";
      invoices.push_back(
          {{"number", b.number()},
           {"issue_date", b.issue_date()},
           {"due_date", b.due_date()},
           {"type_code", type_code},
           {"purpose_code", "02"},
           {"tax_type", v1::TaxType_Name(b.tax_type())},
           {"invoicer", EtaxParty(b.issuer_party_id(), b.has_issuer(), b.issuer())},
           {"invoicee", EtaxParty(inv.institution_id(), inv.has_recipient(), inv.recipient())},
           {"supply_krw", b.supply_krw()},
           {"tax_krw", b.vat_krw()},
           {"total_krw", b.total_krw()},
           {"items", lines}});
    }
  }
  return Dump({{"format", "gpuledger.etax/1"},
               {"period", docs.period()},
               {"status", docs.closed() ? "closed" : "draft"},
               {"invoices", invoices}});
}

std::string InvoiceJson(const v1::Invoice& invoice) { return Dump(InvoiceObj(invoice)); }
std::string StatementJson(const v1::CspStatement& s) { return Dump(StatementObj(s)); }
std::string ProgramJson(const v1::ProgramSummary& p) { return Dump(ProgramObj(p)); }

std::string PeriodJson(const v1::PeriodDocuments& docs) {
  json invoices = json::array();
  for (const auto& i : docs.invoices()) invoices.push_back(InvoiceObj(i));
  json nothing_owed = json::array();
  for (const auto& i : docs.nothing_owed()) nothing_owed.push_back(InvoiceObj(i));
  json statements = json::array();
  for (const auto& s : docs.statements()) statements.push_back(StatementObj(s));
  json programs = json::array();
  for (const auto& p : docs.programs()) programs.push_back(ProgramObj(p));
  json unpriced = json::array();
  for (const auto& u : docs.unpriced()) {
    unpriced.push_back({{"seq", u.seq()},
                        {"source_id", u.source_id()},
                        {"event_id", u.event_id()},
                        {"why", u.why()},
                        {"gpu_hours", Hours(u.gpu_ms())}});
  }
  json digests = json::array();
  for (const auto& d : docs.digests()) {
    digests.push_back({{"document", d.document()}, {"sha256", d.sha256()}});
  }
  json t = RunTotalsObj(docs);
  json out = {{"format", "gpuledger.period/1"},
              {"period", docs.period()},
              {"status", docs.closed() ? "closed" : "draft"},
              {"covered_seq", docs.covered_seq()},
              {"close_seq", docs.close_seq()},
              {"closed_at_ms", docs.closed_at_ms()},
              {"invoices", invoices},
              {"nothing_owed", nothing_owed},
              {"statements", statements},
              {"programs", programs},
              {"invoice_totals", t},
              {"unpriced", unpriced},
              {"digests", digests}};
  // Only when some document cannot be computed, so that other periods' bytes do not change.
  if (docs.errors_size() > 0) {
    json errors = json::array();
    for (const auto& e : docs.errors()) {
      errors.push_back({{"document", e.document()}, {"message", e.message()}});
    }
    out["errors"] = errors;
  }
  return Dump(out);
}

std::string RenderTable(const v1::PeriodDocuments& docs) {
  std::string out = absl::StrFormat("Period %s (KST) - %s - ledger entries 1..%d\n", docs.period(),
                                    Status(docs), docs.covered_seq());
  if (docs.invoices_size() + docs.nothing_owed_size() > 0) {
    absl::StrAppendFormat(&out, "\nCo-pay invoices\n%-18s %-28s %5s %4s %13s %15s %13s %15s %13s\n",
                          "institution", "name", "lines", "adj", "GPU-hours", "list KRW",
                          "co-pay KRW", "subsidy KRW", "due KRW");
    for (const auto* list : {&docs.invoices(), &docs.nothing_owed()}) {
      for (const auto& inv : *list) {
        const auto& t = inv.totals();
        absl::StrAppendFormat(&out, "%-18s %-28s %5d %4d %13s %15s %13s %15s %13s\n",
                              inv.institution_id(), inv.institution_name().substr(0, 28),
                              inv.lines_size(), inv.adjustments_size(), Hours(t.gpu_ms()),
                              Won(t.list_krw()), Won(t.copay_krw()), Won(t.subsidy_krw()),
                              inv.bills().empty() ? "no invoice" : Won(inv.amount_due_krw()));
      }
    }
    const RunSums t = RunTotals(docs);
    absl::StrAppendFormat(
        &out, "%-18s %-28s %5s %4s %13s %15s %13s %15s %13s\n", "TOTAL",
        absl::StrCat(docs.invoices_size(), " invoices, ", docs.nothing_owed_size(), " owe nothing"),
        "", "", Fits(t.gpu_ms) ? Hours(static_cast<int64_t>(t.gpu_ms)) : "(beyond 64 bits)",
        WonOrTooLarge(t.list), WonOrTooLarge(t.copay), WonOrTooLarge(t.subsidy),
        WonOrTooLarge(t.due));
  }
  if (docs.statements_size() > 0) {
    absl::StrAppendFormat(&out,
                          "\nCSP settlement statements\n%-12s %13s %15s %15s %11s %11s %7s %6s "
                          "%11s %13s %s\n",
                          "CSP", "GPU-hours", "subsidy owed", "co-pay billed", "outage h",
                          "own-use h", "share", "cap", "excess h", "excess KRW", "capacity");
    for (const auto& s : docs.statements()) {
      int64_t outage = 0;
      for (const auto& o : s.outages()) outage += o.gpu_ms();
      bool over = false;
      for (const auto& c : s.capacity()) over = over || c.oversubscribed();
      absl::StrAppendFormat(&out, "%-12s %13s %15s %15s %11s %11s %7s %6s %11s %13s %s\n",
                            s.csp_id(), Hours(s.totals().gpu_ms()), Won(s.totals().subsidy_krw()),
                            Won(s.totals().copay_krw()), Hours(outage), Hours(s.own_use_gpu_ms()),
                            Bp(s.own_use_share_bp()), Bp(s.own_use_cap_bp()),
                            Hours(s.own_use_excess_gpu_ms()), Won(s.own_use_excess_value_krw()),
                            over ? "OVERSUBSCRIBED" : "ok");
      // What the state pays differs from the subsidy when a pool is reserved or excess netted.
      if (s.reserved_size() + s.reserved_adjustments_size() > 0 || s.own_use_netted_krw() != 0) {
        absl::StrAppendFormat(&out,
                              "%-12s payable by the state %s KRW (reserved capacity %s, own-use "
                              "excess netted %s)\n",
                              "", Won(s.payable_krw()), Won(s.reservation_difference_krw()),
                              Won(-s.own_use_netted_krw()));
      }
    }
  }
  if (docs.programs_size() > 0) {
    absl::StrAppendFormat(&out, "\nProgramme summaries\n%-16s %13s %15s %13s %15s %11s\n",
                          "programme", "GPU-hours", "list KRW", "co-pay KRW", "subsidy KRW",
                          "utilisation");
    for (const auto& p : docs.programs()) {
      absl::StrAppendFormat(&out, "%-16s %13s %15s %13s %15s %11s\n", v1::Program_Name(p.program()),
                            Hours(p.totals().gpu_ms()), Won(p.totals().list_krw()),
                            Won(p.totals().copay_krw()), Won(p.totals().subsidy_krw()),
                            Bp(p.utilisation_bp()));
    }
  }
  if (docs.unpriced_size() > 0) {
    absl::StrAppendFormat(&out, "\n%d usage event(s) could not be priced:\n", docs.unpriced_size());
    for (const auto& u : docs.unpriced()) {
      absl::StrAppendFormat(&out, "  seq %d %s/%s: %s GPU-hours: %s\n", u.seq(), u.source_id(),
                            u.event_id(), Hours(u.gpu_ms()), u.why());
    }
  }
  if (docs.errors_size() > 0) {
    absl::StrAppendFormat(&out, "\n%d document(s) cannot be computed:\n", docs.errors_size());
    for (const auto& e : docs.errors()) {
      absl::StrAppendFormat(&out, "  %s: %s\n", e.document(), e.message());
    }
  }
  if (docs.digests_size() > 0) {
    absl::StrAppendFormat(&out, "\nDocument digests (SHA-256 of canonical JSON)\n");
    for (const auto& d : docs.digests()) {
      absl::StrAppendFormat(&out, "  %-32s %s\n", d.document(), d.sha256());
    }
  }
  return out;
}

std::string RenderCsv(const v1::PeriodDocuments& docs, const std::string& which) {
  // A UTF-8 byte-order mark first: without it, Excel reads the file in the system's code page
  // (CP949 on Korean Windows) and Hangul turns to mojibake.
  std::string out = kUtf8Bom;
  const std::string p = CsvPeriod(docs.period());
  if (which == "statements") {
    // One row per statement row; each section fills its own columns and leaves the rest empty.
    enum Col {
      kPeriod,
      kCsp,
      kSection,
      kProgram,
      kModel,
      kInstitution,
      kInstitutionName,
      kAdjusts,
      kScope,
      kCause,
      kGpuMs,
      kGpuHours,
      kList,
      kCopay,
      kSubsidy,
      kCapacity,
      kOwnUse,
      kOutage,
      kIdle,
      kOversubscribed,
      kShareBp,
      kSharePercent,
      kCapBp,
      kCapPercent,
      kAllowed,
      kExcess,
      kExcessValue,
      kOwnUseValue,
      kOwnUseUnpriced,
      kNetted,
      kReservedCharge,
      kReservedUnpriced,
      kColumns
    };
    out +=
        "period_yyyymm,csp_id,section,program,gpu_model,institution_id,institution_name,"
        "adjusts_period_yyyymm,scope,"
        "cause,gpu_ms,gpu_hours,list_krw,copay_krw,subsidy_krw,capacity_gpu_ms,own_use_gpu_ms,"
        "outage_gpu_ms,idle_gpu_ms,oversubscribed,share_bp,share_percent,cap_bp,cap_percent,"
        "allowed_gpu_ms,excess_gpu_ms,excess_value_krw,own_use_value_krw,own_use_unpriced_gpu_ms,"
        "netted,reserved_charge_krw,reserved_unpriced_gpu_ms\r\n";
    using Row = std::array<std::string, kColumns>;
    auto emit = [&](const Row& row) {
      for (int c = 0; c < kColumns; ++c) absl::StrAppend(&out, c == 0 ? "" : ",", row[c]);
      out += "\r\n";
    };
    auto flag = [](bool b) -> std::string { return b ? "true" : "false"; };
    auto quantity = [](Row* row, int64_t gpu_ms) {
      (*row)[kGpuMs] = absl::StrCat(gpu_ms);
      (*row)[kGpuHours] = Hours(gpu_ms);
    };
    for (const auto& s : docs.statements()) {
      auto start = [&](const char* section, v1::Program program, v1::GpuModel model) {
        Row row;
        row[kPeriod] = p;
        row[kCsp] = CsvField(s.csp_id());
        row[kSection] = section;
        row[kProgram] = v1::Program_Name(program);
        row[kModel] = v1::GpuModel_Name(model);
        return row;
      };
      for (const auto* list : {&s.delivered(), &s.adjustments()}) {
        for (const auto& r : *list) {
          const auto& t = r.totals();
          Row row = start(r.adjusts_period().empty() ? "delivered" : "adjustment", r.program(),
                          r.gpu_model());
          row[kInstitution] = CsvField(r.institution_id());
          row[kInstitutionName] = CsvField(r.institution_name());
          row[kAdjusts] = CsvPeriodOrEmpty(r.adjusts_period());
          quantity(&row, t.gpu_ms());
          row[kList] = absl::StrCat(t.list_krw());
          row[kCopay] = absl::StrCat(t.copay_krw());
          row[kSubsidy] = absl::StrCat(t.subsidy_krw());
          emit(row);
        }
      }
      for (const auto& o : s.outage_adjustments()) {
        Row row = start("outage_adjustment", o.program(), o.gpu_model());
        row[kAdjusts] = CsvPeriodOrEmpty(o.adjusts_period());
        row[kScope] = CsvField(o.scope());
        row[kCause] = CsvField(o.cause());
        quantity(&row, o.gpu_ms());
        emit(row);
      }
      auto own_use = [&](const char* section, const auto& u) {
        Row row = start(section, u.program(), u.gpu_model());
        quantity(&row, u.own_use_gpu_ms());
        row[kCapacity] = absl::StrCat(u.capacity_gpu_ms());
        row[kOwnUse] = absl::StrCat(u.own_use_gpu_ms());
        row[kShareBp] = absl::StrCat(u.share_bp());
        row[kSharePercent] = Percent(u.share_bp());
        row[kCapBp] = absl::StrCat(u.cap_bp());
        row[kCapPercent] = Percent(u.cap_bp());
        row[kAllowed] = absl::StrCat(u.allowed_gpu_ms());
        row[kExcess] = absl::StrCat(u.excess_gpu_ms());
        row[kExcessValue] = absl::StrCat(u.excess_value_krw());
        row[kOwnUseValue] = absl::StrCat(u.value_krw());
        row[kOwnUseUnpriced] = absl::StrCat(u.unpriced_gpu_ms());
        row[kNetted] = flag(u.netted());
        return row;
      };
      for (const auto& u : s.own_use_adjustments()) {
        Row row = own_use("own_use_adjustment", u);
        row[kAdjusts] = CsvPeriodOrEmpty(u.adjusts_period());
        emit(row);
      }
      for (const auto& o : s.outages()) {
        Row row = start("outage", o.program(), o.gpu_model());
        row[kScope] = CsvField(o.scope());
        row[kCause] = CsvField(o.cause());
        quantity(&row, o.gpu_ms());
        emit(row);
      }
      for (const auto& u : s.own_use()) emit(own_use("own_use", u));
      for (const auto& c : s.capacity()) {
        Row row = start("capacity", c.program(), c.gpu_model());
        quantity(&row, c.program_usage_gpu_ms());
        row[kCapacity] = absl::StrCat(c.capacity_gpu_ms());
        row[kOwnUse] = absl::StrCat(c.own_use_gpu_ms());
        row[kOutage] = absl::StrCat(c.outage_gpu_ms());
        row[kIdle] = absl::StrCat(c.idle_gpu_ms());
        row[kOversubscribed] = flag(c.oversubscribed());
        emit(row);
      }
      for (const auto* list : {&s.reserved(), &s.reserved_adjustments()}) {
        for (const auto& r : *list) {
          Row row = start(r.adjusts_period().empty() ? "reserved" : "reserved_adjustment",
                          r.program(), r.gpu_model());
          row[kAdjusts] = CsvPeriodOrEmpty(r.adjusts_period());
          quantity(&row, r.charged_gpu_ms());
          row[kList] = absl::StrCat(r.delivered_list_krw());
          row[kCopay] = absl::StrCat(r.copay_krw());
          row[kSubsidy] = absl::StrCat(r.subsidy_krw());
          row[kCapacity] = absl::StrCat(r.reserved_gpu_ms());
          row[kOutage] = absl::StrCat(r.out_of_service_gpu_ms());
          row[kReservedCharge] = absl::StrCat(r.charge_krw());
          row[kReservedUnpriced] = absl::StrCat(r.unpriced_gpu_ms());
          emit(row);
        }
      }
      // What the state pays: the subsidy less the own-use excess its contracts net (in the
      // excess_value_krw column), plus what reservations change (reserved_charge_krw).
      Row row;
      row[kPeriod] = p;
      row[kCsp] = CsvField(s.csp_id());
      row[kSection] = "payable";
      row[kSubsidy] = absl::StrCat(s.payable_krw());
      row[kExcessValue] = absl::StrCat(s.own_use_netted_krw());
      row[kReservedCharge] = absl::StrCat(s.reservation_difference_krw());
      emit(row);
    }
    return out;
  }
  if (which == "programs") {
    out +=
        "period_yyyymm,program,section,adjusts_period_yyyymm,institution_type,gpu_ms,gpu_hours,"
        "list_krw,copay_"
        "krw,subsidy_krw,call_id,agency_id,granted_gpu_ms,allocations\r\n";
    for (const auto& ps : docs.programs()) {
      for (const auto* list : {&ps.by_type(), &ps.adjustments()}) {
        for (const auto& r : *list) {
          const auto& t = r.totals();
          absl::StrAppend(&out, p, ",", v1::Program_Name(ps.program()), ",",
                          r.adjusts_period().empty() ? "by_type" : "adjustment", ",",
                          CsvPeriodOrEmpty(r.adjusts_period()), ",",
                          v1::InstitutionType_Name(r.institution_type()), ",", t.gpu_ms(), ",",
                          Hours(t.gpu_ms()), ",", t.list_krw(), ",", t.copay_krw(), ",",
                          t.subsidy_krw(), ",,,,\r\n");
        }
      }
      for (const auto& r : ps.by_call()) {
        const auto& t = r.totals();
        absl::StrAppend(&out, p, ",", v1::Program_Name(ps.program()), ",by_call,,,", t.gpu_ms(),
                        ",", Hours(t.gpu_ms()), ",", t.list_krw(), ",", t.copay_krw(), ",",
                        t.subsidy_krw(), ",", CsvField(r.call_id()), ",", CsvField(r.agency_id()),
                        ",", r.granted_gpu_ms(), ",", r.allocations(), "\r\n");
      }
      // What reservations change in what the state pays, in the subsidy_krw column.
      if (ps.reservation_difference_krw() != 0) {
        absl::StrAppend(&out, p, ",", v1::Program_Name(ps.program()), ",reservations,,,,,,,",
                        ps.reservation_difference_krw(), ",,,,\r\n");
      }
    }
    return out;
  }
  out +=
      "period_yyyymm,institution_id,institution_name,adjusts_period_yyyymm,allocation_id,kind,"
      "program,csp_id,gpu_model,institution_type,krw_per_gpu_hour,copay_bp,copay_percent,gpu_ms,"
      "gpu_hours,list_krw,copay_krw,subsidy_krw,"
      "invoice_number\r\n";
  // Institutions that owe nothing have their rows too: the lines are what finance reconciles
  // against the CSPs' statements.
  std::vector<const v1::Invoice*> every;
  for (const auto& inv : docs.invoices()) every.push_back(&inv);
  for (const auto& inv : docs.nothing_owed()) every.push_back(&inv);
  std::sort(every.begin(), every.end(), [](const v1::Invoice* a, const v1::Invoice* b) {
    return a->institution_id() < b->institution_id();
  });
  for (const v1::Invoice* invp : every) {
    const v1::Invoice& inv = *invp;
    for (const auto* list : {&inv.lines(), &inv.adjustments()}) {
      for (const auto& l : *list) {
        // The number of the bill the line is on (empty: a draft, or nothing owed).
        const int bill = BillOfLine(inv, l);
        const std::string number = bill < 0 ? "" : CsvField(inv.bills(bill).number());
        absl::StrAppend(
            &out, p, ",", CsvField(inv.institution_id()), ",", CsvField(inv.institution_name()),
            ",", CsvPeriodOrEmpty(l.adjusts_period()), ",", CsvField(l.allocation_id()), ",",
            LineKindName(l.kind()), ",", v1::Program_Name(l.program()), ",", CsvField(l.csp_id()),
            ",", v1::GpuModel_Name(l.gpu_model()), ",",
            v1::InstitutionType_Name(l.institution_type()), ",", l.krw_per_gpu_hour(), ",",
            l.copay_bp(), ",", Percent(l.copay_bp()), ",", l.gpu_ms(), ",", Hours(l.gpu_ms()), ",",
            l.list_krw(), ",", l.copay_krw(), ",", l.subsidy_krw(), ",", number, "\r\n");
      }
    }
  }
  return out;
}

}  // namespace gpuledger::settlement
