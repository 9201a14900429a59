// The printable HTML of a period's documents, in Korean or English (settlement/render.h). Every
// word comes from the message catalog through i18n::Tr; amounts, hours, months and times from
// i18n's exact formatters. Class names and structure are the same in both languages.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "i18n/i18n.h"
#include "settlement/render.h"

namespace gpuledger::settlement {

namespace v1 = gpuledger::v1;
using i18n::Lang;
using i18n::Tr;

namespace {

std::string Html(const std::string& s) { return HtmlEscape(s); }

// One document renderer per call: the language and the period's shared header line.
class HtmlWriter {
 public:
  HtmlWriter(const v1::PeriodDocuments& docs, Lang lang) : docs_(docs), lang_(lang) {}

  std::string Render() {
    const std::string status = Status();
    absl::StrAppend(
        &out_, "<!DOCTYPE html>\n<html lang=\"", i18n::Code(lang_),
        "\">\n<head>\n<meta charset=\"utf-8\">\n<title>gpuledger ", Html(docs_.period()), " ",
        status,
        "</title>\n<style>\n"
        "@page { size: A4; margin: 15mm; }\n"
        "body { font-family: ",
        kHtmlFontFamily,
        "; font-size: 10pt; color: #111; }\n"
        "section { page-break-after: always; margin-bottom: 2em; }\n"
        "section:last-of-type { page-break-after: auto; }\n"
        "h1 { font-size: 15pt; margin: 0 0 .3em; } h2 { font-size: 12pt; margin: 1em 0 .3em; }\n"
        ".meta { color: #444; margin-bottom: .8em; }\n"
        ".status { display: inline-block; padding: 1px 8px; border: 1px solid #111; "
        "font-weight: bold; }\n"
        "table { border-collapse: collapse; width: 100%; margin: .3em 0 .8em; }\n"
        "th, td { border-bottom: 1px solid #bbb; padding: 2px 4px; text-align: left; }\n"
        "td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }\n"
        "tr.total td { font-weight: bold; border-top: 2px solid #111; }\n"
        ".flag { color: #b00; font-weight: bold; }\n"
        ".digest { font-family: monospace; font-size: 8pt; color: #444; word-break: break-all; }\n"
        "table.parties th { width: 16%; font-weight: normal; color: #444; }\n"
        ".bill { border: 1px solid #111; padding: 4px 8px; margin: .6em 0; }\n"
        ".pay { white-space: pre-wrap; }\n"
        "</style>\n</head>\n<body>\n");
    meta_ = absl::StrCat(
        "<div class=\"meta\">", T("Period {1} (KST)", {Html(i18n::Month(lang_, docs_.period()))}),
        " &middot; <span class=\"status\">", status, "</span> &middot; ", Html(Closing()),
        " &middot; ", T("ledger entries 1..{1}", {absl::StrCat(docs_.covered_seq())}), "</div>\n");
    for (const auto& inv : docs_.invoices()) Invoice(inv);
    for (const auto& inv : docs_.nothing_owed()) Invoice(inv);
    for (const auto& s : docs_.statements()) Statement(s);
    for (const auto& ps : docs_.programs()) Program(ps);
    // Only when a document cannot be computed, so that other pages' bytes do not change.
    if (docs_.errors_size() > 0) {
      absl::StrAppend(&out_, "<section>\n<h1>", T("Documents that cannot be computed"), "</h1>\n",
                      meta_, "<table>\n<tr><th>", T("document"), "</th><th>", T("why"),
                      "</th></tr>\n");
      for (const auto& e : docs_.errors()) {
        absl::StrAppend(&out_, "<tr><td class=\"flag\">", Html(e.document()), "</td><td>",
                        Html(e.message()), "</td></tr>\n");
      }
      absl::StrAppend(&out_, "</table>\n</section>\n");
    }
    absl::StrAppend(&out_, "</body>\n</html>\n");
    return std::move(out_);
  }

 private:
  std::string T(const char* msgid) const { return Tr(lang_, msgid); }
  std::string T(const char* msgid, const std::vector<std::string>& args) const {
    return Tr(lang_, msgid, args);
  }
  std::string Won(int64_t krw) const { return i18n::Won(lang_, krw); }
  static std::string N(int64_t n) { return i18n::Grouped(n); }
  static std::string H(int64_t gpu_ms) { return i18n::GpuHours(gpu_ms); }
  std::string Model(v1::Program p, v1::GpuModel m) const {
    return absl::StrCat(Html(i18n::ProgramName(lang_, p)), " / ", i18n::GpuModelName(m));
  }
  std::string Adjusts(const std::string& period) const {
    return period.empty() ? "" : absl::StrCat(" (", T("adjusts {1}", {Html(period)}), ")");
  }

  std::string Status() const { return docs_.closed() ? T("FINAL") : T("DRAFT"); }
  std::string Closing() const {
    return docs_.closed()
               ? T("closed at entry {1} ({2})",
                   {absl::StrCat(docs_.close_seq()), i18n::KstDateTime(docs_.closed_at_ms())})
               : T("open: draft");
  }
  std::string DigestOf(const std::string& name) const {
    for (const auto& d : docs_.digests()) {
      if (d.document() == name) {
        return absl::StrCat("<p class=\"digest\">",
                            T("SHA-256 of canonical JSON: {1}", {d.sha256()}), "</p>\n");
      }
    }
    return "";
  }

  template <typename Lines>
  std::string LineRows(const Lines& lines, bool adjustment) const {
    std::string rows;
    for (const auto& l : lines) {
      absl::StrAppend(
          &rows, "<tr>",
          adjustment ? absl::StrCat("<td>", Html(i18n::Month(lang_, l.adjusts_period())), "</td>")
                     : "",
          "<td>", Html(l.allocation_id()), "</td><td>", Html(i18n::LineKindName(lang_, l.kind())),
          "</td><td>", Model(l.program(), l.gpu_model()), "</td><td class=\"n\">",
          N(l.krw_per_gpu_hour()), "</td><td class=\"n\">", i18n::Percent(l.copay_bp()),
          "</td><td class=\"n\">", H(l.gpu_ms()), "</td><td class=\"n\">", N(l.list_krw()),
          "</td><td class=\"n\">", N(l.copay_krw()), "</td><td class=\"n\">", N(l.subsidy_krw()),
          "</td></tr>\n");
    }
    return rows;
  }

  void Invoice(const v1::Invoice& inv) {
    const auto& t = inv.totals();
    const std::string line_head = absl::StrCat(
        "<th>", T("allocation"), "</th><th>", T("kind"), "</th><th>", T("programme / model"),
        "</th><th class=\"n\">", T("KRW per GPU-hour"), "</th><th class=\"n\">", T("co-pay rate"),
        "</th><th class=\"n\">", T("GPU-hours"), "</th><th class=\"n\">", T("list KRW"),
        "</th><th class=\"n\">", T("co-pay KRW"), "</th><th class=\"n\">", T("subsidy KRW"),
        "</th></tr>\n");
    const bool issued = inv.bills_size() > 0;
    absl::StrAppend(&out_, "<section class=\"", issued ? "invoice" : "invoice nothing-owed",
                    "\">\n<h1>",
                    issued ? T("Co-pay invoice: {1}", {Html(inv.institution_name())})
                           : T("Usage statement: {1}", {Html(inv.institution_name())}),
                    "</h1>\n", meta_, "<div class=\"meta\">",
                    T("Institution {1} ({2})",
                      {Html(inv.institution_id()),
                       Html(i18n::InstitutionTypeName(lang_, inv.institution_type()))}),
                    "</div>\n");
    if (!issued) {
      absl::StrAppend(&out_, "<p class=\"flag\">",
                      T("Nothing is owed for this period, so no invoice is issued; the usage "
                        "below is paid by the state."),
                      "</p>\n");
    }
    for (const auto& b : inv.bills()) Bill(inv, b);
    absl::StrAppend(&out_, "<h2>", T("Usage by allocation"), "</h2>\n<table class=\"lines\">\n<tr>",
                    line_head, LineRows(inv.lines(), false), "</table>\n");
    if (inv.adjustments_size() > 0) {
      absl::StrAppend(&out_, "<h2>", T("Adjustments to closed periods"), "</h2>\n<table>\n<tr><th>",
                      T("period"), "</th>", line_head, LineRows(inv.adjustments(), true),
                      "</table>\n");
    }
    // What the usage cost and who pays it, then what is billed in the layout of a Korean tax
    // invoice: supply value (the co-pay), tax (VAT), total (공급가액 / 세액 / 합계금액).
    absl::StrAppend(
        &out_, "<table>\n<tr><td>", T("GPU-hours"), "</td><td class=\"n\">", H(t.gpu_ms()),
        "</td></tr>\n<tr><td>", T("List price"), "</td><td class=\"n\">", Won(t.list_krw()),
        "</td></tr>\n<tr><td>", T("Paid by the state (subsidy)"), "</td><td class=\"n\">",
        Won(t.subsidy_krw()), "</td></tr>\n</table>\n<table class=\"tax\">\n<tr><th class=\"n\">",
        T("Supply value (co-pay)"), "</th><th class=\"n\">",
        T("Tax (VAT {1})", {i18n::Percent(inv.vat_bp())}), "</th><th class=\"n\">",
        T("Total (amount due)"), "</th></tr>\n<tr class=\"total\"><td class=\"n supply\">",
        Won(t.copay_krw()), "</td><td class=\"n tax\">", Won(inv.vat_krw()),
        "</td><td class=\"n due\">", Won(inv.amount_due_krw()), "</td></tr>\n</table>\n",
        DigestOf(absl::StrCat(issued ? "invoice/" : "usage/", inv.institution_id())),
        "</section>\n");
  }

  // One bill: its number and dates, both parties as a Korean tax invoice names them, its supply
  // value, tax and total, and how to pay.
  void Bill(const v1::Invoice& inv, const v1::Bill& b) {
    std::string programs;
    for (int p : b.programs()) {
      if (!programs.empty()) programs += ", ";
      programs += i18n::ProgramName(lang_, static_cast<v1::Program>(p));
    }
    const std::string number = b.number().empty() ? T("(numbered at close)") : Html(b.number());
    absl::StrAppend(&out_, "<div class=\"bill\">\n<h2>", T("Invoice no. {1}", {number}), "</h2>\n",
                    "<div class=\"meta\">",
                    T("Issued {1} · due {2} · for {3}",
                      {b.issue_date().empty() ? "—" : Html(b.issue_date()),
                       b.due_date().empty() ? "—" : Html(b.due_date()), Html(programs)}),
                    "</div>\n<table class=\"parties\">\n<tr><th></th><th>", T("Supplier (issuer)"),
                    "</th><th>", T("Recipient"), "</th></tr>\n");
    const bool has_issuer = b.has_issuer();
    const bool has_recipient = inv.has_recipient();
    const v1::Party& i = b.issuer();
    const v1::Party& r = inv.recipient();
    auto row = [&](const std::string& label, const std::string& a, const std::string& c) {
      absl::StrAppend(&out_, "<tr><th>", label, "</th><td>", a, "</td><td>", c, "</td></tr>\n");
    };
    auto or_id = [&](bool has, const v1::Party& p, const std::string& id) {
      return has ? Html(p.legal_name())
                 : absl::StrCat(Html(id), " <span class=\"flag\">", T("(no party record)"),
                                "</span>");
    };
    row(T("Legal name"), or_id(has_issuer, i, b.issuer_party_id()),
        or_id(has_recipient, r, inv.institution_id()));
    row(T("Registration no."), Html(FormatRegistration(i.registration_number())),
        Html(FormatRegistration(r.registration_number())));
    row(T("Representative"), Html(i.representative()), Html(r.representative()));
    row(T("Address"), Html(i.address()), Html(r.address()));
    row(T("Business type / item"), Html(Joined(i.business_type(), i.business_item())),
        Html(Joined(r.business_type(), r.business_item())));
    row(T("Billing contact"), Html(Contact(i.billing_contact())),
        Html(Contact(r.billing_contact())));
    absl::StrAppend(&out_, "</table>\n<table class=\"bill-tax\">\n<tr><th>", T("Tax type"),
                    "</th><th class=\"n\">", T("Supply value"), "</th><th class=\"n\">",
                    T("Tax (VAT {1})", {i18n::Percent(b.vat_bp())}), "</th><th class=\"n\">",
                    T("Total"), "</th></tr>\n<tr class=\"total\"><td>",
                    Html(TaxTypeName(b.tax_type())), "</td><td class=\"n\">", Won(b.supply_krw()),
                    "</td><td class=\"n\">", Won(b.vat_krw()), "</td><td class=\"n\">",
                    Won(b.total_krw()), "</td></tr>\n</table>\n");
    if (!b.payment_instructions().empty()) {
      absl::StrAppend(&out_, "<p class=\"pay\">",
                      T("How to pay: {1}", {Html(b.payment_instructions())}), "</p>\n");
    }
    absl::StrAppend(&out_, "</div>\n");
  }

  static std::string FormatRegistration(const std::string& digits) {
    if (digits.size() != 10) return digits;
    return absl::StrCat(digits.substr(0, 3), "-", digits.substr(3, 2), "-", digits.substr(5));
  }
  static std::string Joined(const std::string& a, const std::string& b) {
    if (a.empty() || b.empty()) return a + b;
    return absl::StrCat(a, " / ", b);
  }
  static std::string Contact(const v1::BillingContact& c) {
    std::string out;
    for (const std::string* part : {&c.name(), &c.department(), &c.email(), &c.phone()}) {
      if (part->empty()) continue;
      if (!out.empty()) out += ", ";
      out += *part;
    }
    return out;
  }
  std::string TaxTypeName(v1::TaxType t) const {
    switch (t) {
      case v1::TAX_ZERO_RATED:
        return T("zero-rated");
      case v1::TAX_EXEMPT:
        return T("exempt");
      default:
        return T("taxable");
    }
  }

  void Statement(const v1::CspStatement& s) {
    absl::StrAppend(&out_, "<section class=\"statement\">\n<h1>",
                    T("CSP settlement statement: {1}", {Html(s.csp_id())}), "</h1>\n", meta_,
                    "<h2>", T("Delivered to programme users"), "</h2>\n<table>\n<tr><th>",
                    T("programme"), "</th><th>", T("institution"), "</th><th>", T("model"),
                    "</th><th class=\"n\">", T("GPU-hours"), "</th><th class=\"n\">", T("list KRW"),
                    "</th><th class=\"n\">", T("co-pay KRW"), "</th><th class=\"n\">",
                    T("subsidy KRW"), "</th></tr>\n");
    for (const auto* list : {&s.delivered(), &s.adjustments()}) {
      for (const auto& r : *list) {
        const auto& t = r.totals();
        absl::StrAppend(
            &out_, "<tr><td>", Html(i18n::ProgramName(lang_, r.program())), "</td><td>",
            r.institution_name().empty()
                ? Html(r.institution_id())
                : absl::StrCat(Html(r.institution_name()), " (", Html(r.institution_id()), ")"),
            Adjusts(r.adjusts_period()), "</td><td>", i18n::GpuModelName(r.gpu_model()),
            "</td><td class=\"n\">", H(t.gpu_ms()), "</td><td class=\"n\">", N(t.list_krw()),
            "</td><td class=\"n\">", N(t.copay_krw()), "</td><td class=\"n\">", N(t.subsidy_krw()),
            "</td></tr>\n");
      }
    }
    absl::StrAppend(&out_, "<tr class=\"total\"><td colspan=\"3\">",
                    T("Total (subsidy owed by the state)"), "</td><td class=\"n\">",
                    H(s.totals().gpu_ms()), "</td><td class=\"n\">", N(s.totals().list_krw()),
                    "</td><td class=\"n\">", N(s.totals().copay_krw()), "</td><td class=\"n\">",
                    N(s.totals().subsidy_krw()), "</td></tr>\n</table>\n");
    absl::StrAppend(&out_, "<h2>", T("Own use"), "</h2>\n<p>");
    if (s.hosted_capacity_gpu_ms() == 0 && s.own_use_gpu_ms() == 0) {
      // A CSP with leased pools only hosts no state-owned GPUs: the own-use share does not
      // apply (rather than "0.00% of 0.000 hosted GPU-hours").
      absl::StrAppend(&out_, T("No state-owned GPUs hosted in this period: the own-use share "
                               "applies to state-owned pools only."));
    } else {
      absl::StrAppend(
          &out_,
          T("{1} GPU-hours of {2} hosted on state-owned pools: share {3}, contract cap {4}, excess "
            "{5} GPU-hours worth {6}",
            {H(s.own_use_gpu_ms()), H(s.hosted_capacity_gpu_ms()),
             i18n::Percent(s.own_use_share_bp()), i18n::Percent(s.own_use_cap_bp()),
             H(s.own_use_excess_gpu_ms()), Won(s.own_use_excess_value_krw())}),
          s.own_use_excess_gpu_ms() > 0
              ? absl::StrCat(" <span class=\"flag\">", T("OVER CAP"), "</span>")
              : "",
          "<br>",
          T("own use valued at {1} (at the rate in force at each hour of use); netted against the "
            "subsidy: {2}",
            {Won(s.own_use_value_krw()), Won(s.own_use_netted_krw())}));
    }
    absl::StrAppend(&out_, "<br>", T("payable by the state: {1}", {Won(s.payable_krw())}),
                    "</p>\n");
    if (s.reserved_size() + s.reserved_adjustments_size() > 0) {
      absl::StrAppend(&out_, "<h2>", T("Reserved capacity"), "</h2>\n<table>\n<tr><th>",
                      T("programme / model"), "</th><th class=\"n\">", T("reserved h"),
                      "</th><th class=\"n\">", T("out of service h"), "</th><th class=\"n\">",
                      T("charged h"), "</th><th class=\"n\">", T("charge KRW"),
                      "</th><th class=\"n\">", T("co-pay KRW"), "</th><th class=\"n\">",
                      T("state pays KRW"), "</th></tr>\n");
      for (const auto* list : {&s.reserved(), &s.reserved_adjustments()}) {
        for (const auto& r : *list) {
          absl::StrAppend(
              &out_, "<tr><td>", Model(r.program(), r.gpu_model()), Adjusts(r.adjusts_period()),
              "</td><td class=\"n\">", H(r.reserved_gpu_ms()), "</td><td class=\"n\">",
              H(r.out_of_service_gpu_ms()), "</td><td class=\"n\">", H(r.charged_gpu_ms()),
              "</td><td class=\"n\">", N(r.charge_krw()), "</td><td class=\"n\">", N(r.copay_krw()),
              "</td><td class=\"n\">", N(r.subsidy_krw()), "</td></tr>\n");
        }
      }
      absl::StrAppend(&out_, "</table>\n<p>",
                      T("Reservations change what the state pays by {1} against the subsidy of "
                        "the usage on those pools.",
                        {Won(s.reservation_difference_krw())}),
                      "</p>\n");
    }
    absl::StrAppend(&out_, "<h2>", T("Capacity"), "</h2>\n<table>\n<tr><th>",
                    T("programme / model"), "</th><th class=\"n\">", T("capacity h"),
                    "</th><th class=\"n\">", T("programme use h"), "</th><th class=\"n\">",
                    T("own use h"), "</th><th class=\"n\">", T("outage h"), "</th><th class=\"n\">",
                    T("idle h"), "</th><th></th></tr>\n");
    for (const auto& c : s.capacity()) {
      absl::StrAppend(
          &out_, "<tr><td>", Model(c.program(), c.gpu_model()), "</td><td class=\"n\">",
          H(c.capacity_gpu_ms()), "</td><td class=\"n\">", H(c.program_usage_gpu_ms()),
          "</td><td class=\"n\">", H(c.own_use_gpu_ms()), "</td><td class=\"n\">",
          H(c.outage_gpu_ms()), "</td><td class=\"n\">", H(c.idle_gpu_ms()), "</td><td>",
          c.oversubscribed() ? absl::StrCat("<span class=\"flag\">", T("OVERSUBSCRIBED"), "</span>")
                             : "",
          "</td></tr>\n");
    }
    absl::StrAppend(&out_, "</table>\n");
    if (s.outages_size() > 0) {
      absl::StrAppend(&out_, "<h2>", T("Outages"), "</h2>\n<table>\n<tr><th>",
                      T("programme / model"), "</th><th>", T("scope"), "</th><th>", T("cause"),
                      "</th><th class=\"n\">", T("GPU-hours"), "</th></tr>\n");
      for (const auto& o : s.outages()) {
        absl::StrAppend(&out_, "<tr><td>", Model(o.program(), o.gpu_model()), "</td><td>",
                        Html(o.scope()), "</td><td>", Html(o.cause()), "</td><td class=\"n\">",
                        H(o.gpu_ms()), "</td></tr>\n");
      }
      absl::StrAppend(&out_, "</table>\n");
    }
    if (s.own_use_adjustments_size() > 0 || s.outage_adjustments_size() > 0) {
      absl::StrAppend(&out_, "<h2>", T("Own use and outages of closed periods, recorded late"),
                      "</h2>\n<table>\n<tr><th>", T("period"), "</th><th>", T("programme / model"),
                      "</th><th>", T("what"), "</th><th class=\"n\">", T("GPU-hours"),
                      "</th><th class=\"n\">", T("excess GPU-hours"), "</th><th class=\"n\">",
                      T("excess KRW"), "</th></tr>\n");
      for (const auto& u : s.own_use_adjustments()) {
        absl::StrAppend(&out_, "<tr><td>", Html(i18n::Month(lang_, u.adjusts_period())),
                        "</td><td>", Model(u.program(), u.gpu_model()), "</td><td>", T("own use"),
                        "</td><td class=\"n\">", H(u.own_use_gpu_ms()), "</td><td class=\"n\">",
                        H(u.excess_gpu_ms()), "</td><td class=\"n\">", N(u.excess_value_krw()),
                        "</td></tr>\n");
      }
      for (const auto& o : s.outage_adjustments()) {
        absl::StrAppend(&out_, "<tr><td>", Html(i18n::Month(lang_, o.adjusts_period())),
                        "</td><td>", Model(o.program(), o.gpu_model()), "</td><td>",
                        T("{1} outage: {2}", {Html(o.scope()), Html(o.cause())}),
                        "</td><td class=\"n\">", H(o.gpu_ms()), "</td><td></td><td></td></tr>\n");
      }
      absl::StrAppend(&out_, "</table>\n");
    }
    absl::StrAppend(&out_, DigestOf(absl::StrCat("statement/", s.csp_id())), "</section>\n");
  }

  void Program(const v1::ProgramSummary& ps) {
    absl::StrAppend(&out_, "<section class=\"program\">\n<h1>",
                    T("Programme summary: {1}", {Html(i18n::ProgramName(lang_, ps.program()))}),
                    "</h1>\n", meta_, "<table>\n<tr><th>", T("institution type"),
                    "</th><th class=\"n\">", T("GPU-hours"), "</th><th class=\"n\">", T("list KRW"),
                    "</th><th class=\"n\">", T("co-pay KRW"), "</th><th class=\"n\">",
                    T("subsidy KRW"), "</th></tr>\n");
    for (const auto* list : {&ps.by_type(), &ps.adjustments()}) {
      for (const auto& r : *list) {
        const auto& t = r.totals();
        absl::StrAppend(
            &out_, "<tr><td>", Html(i18n::InstitutionTypeName(lang_, r.institution_type())),
            Adjusts(r.adjusts_period()), "</td><td class=\"n\">", H(t.gpu_ms()),
            "</td><td class=\"n\">", N(t.list_krw()), "</td><td class=\"n\">", N(t.copay_krw()),
            "</td><td class=\"n\">", N(t.subsidy_krw()), "</td></tr>\n");
      }
    }
    absl::StrAppend(
        &out_, "<tr class=\"total\"><td>", T("Total"), "</td><td class=\"n\">",
        H(ps.totals().gpu_ms()), "</td><td class=\"n\">", N(ps.totals().list_krw()),
        "</td><td class=\"n\">", N(ps.totals().copay_krw()), "</td><td class=\"n\">",
        N(ps.totals().subsidy_krw()), "</td></tr>\n</table>\n<p>",
        T("Utilisation of hosted capacity: {1} ({2} of {3} GPU-hours)",
          {i18n::Percent(ps.utilisation_bp()), H(ps.usage_gpu_ms()), H(ps.capacity_gpu_ms())}),
        "</p>\n");
    if (ps.reservation_difference_krw() != 0) {
      absl::StrAppend(&out_, "<p>",
                      T("Reserved capacity changes what the state pays by {1}: the programme "
                        "costs the state {2}.",
                        {Won(ps.reservation_difference_krw()),
                         Won(ps.totals().subsidy_krw() + ps.reservation_difference_krw())}),
                      "</p>\n");
    }
    if (ps.by_call_size() > 0) {
      absl::StrAppend(&out_, "<h2>", T("By call and agency"), "</h2>\n<table>\n<tr><th>", T("call"),
                      "</th><th>", T("agency"), "</th><th class=\"n\">", T("allocations"),
                      "</th><th class=\"n\">", T("granted GPU-hours"), "</th><th class=\"n\">",
                      T("GPU-hours used"), "</th><th class=\"n\">", T("list KRW"),
                      "</th><th class=\"n\">", T("co-pay KRW"), "</th><th class=\"n\">",
                      T("subsidy KRW"), "</th></tr>\n");
      for (const auto& r : ps.by_call()) {
        const auto& t = r.totals();
        absl::StrAppend(&out_, "<tr><td>", r.call_id().empty() ? T("(none)") : Html(r.call_id()),
                        "</td><td>", r.agency_id().empty() ? T("(none)") : Html(r.agency_id()),
                        "</td><td class=\"n\">", N(r.allocations()), "</td><td class=\"n\">",
                        H(r.granted_gpu_ms()), "</td><td class=\"n\">", H(t.gpu_ms()),
                        "</td><td class=\"n\">", N(t.list_krw()), "</td><td class=\"n\">",
                        N(t.copay_krw()), "</td><td class=\"n\">", N(t.subsidy_krw()),
                        "</td></tr>\n");
      }
      absl::StrAppend(&out_, "</table>\n");
    }
    absl::StrAppend(&out_, DigestOf(absl::StrCat("program/", v1::Program_Name(ps.program()))),
                    "</section>\n");
  }

  const v1::PeriodDocuments& docs_;
  const Lang lang_;
  std::string meta_;
  std::string out_;
};

}  // namespace

std::string HtmlEscape(const std::string& text) {
  return absl::StrReplaceAll(
      text, {{"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"}, {"\"", "&quot;"}, {"'", "&#39;"}});
}

std::string RenderHtml(const v1::PeriodDocuments& docs, i18n::Lang lang) {
  return HtmlWriter(docs, lang).Render();
}

}  // namespace gpuledger::settlement
