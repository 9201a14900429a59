// The printable HTML of a period's documents, in Korean or English (settlement/render.h): the
// markup is in Mustache templates (settlement/templates/*.mustache, embedded in the library),
// the words come from the message catalog through i18n::Tr, and amounts, hours, months and
// times from i18n's exact formatters. So a language is a strings file: the templates hold no
// words, and class names and structure are the same in every language. Every value is escaped
// by the template ({{x}}, with HtmlEscape); nothing the data holds is inserted as markup.
#include <kainjow/mustache.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "base/registration_number.h"
#include "i18n/i18n.h"
#include "settlement/render.h"

// The templates, embedded by settlement/CMakeLists.txt (i18n/embed.cmake).
#define GPULEDGER_TEMPLATE(name)                 \
  extern const unsigned char kTemplate_##name[]; \
  extern const unsigned long kTemplate_##name##Size;
GPULEDGER_TEMPLATE(document)
GPULEDGER_TEMPLATE(meta)
GPULEDGER_TEMPLATE(invoice)
GPULEDGER_TEMPLATE(line_head)
GPULEDGER_TEMPLATE(line)
GPULEDGER_TEMPLATE(statement)
GPULEDGER_TEMPLATE(program)
#undef GPULEDGER_TEMPLATE

namespace gpuledger::settlement {

namespace v1 = gpuledger::v1;
using i18n::Lang;
using i18n::Tr;
using Data = kainjow::mustache::data;
using Mustache = kainjow::mustache::mustache;

namespace {

std::string Template(const unsigned char* bytes, unsigned long size) {
  return std::string(reinterpret_cast<const char*>(bytes), size);
}
#define GPULEDGER_TEXT(name) Template(kTemplate_##name, kTemplate_##name##Size)

// A list of data.
Data List() { return Data(Data::type::list); }

// One document renderer per call: the language, the period's header line and the labels.
class HtmlWriter {
 public:
  HtmlWriter(const v1::PeriodDocuments& docs, Lang lang) : docs_(docs), lang_(lang) {}

  std::string Render() {
    const std::string status = Status();
    Data m;
    m.set("period", T("Period {1} (KST)", {i18n::Month(lang_, docs_.period())}));
    m.set("status", status);
    m.set("closing", Closing());
    m.set("entries", T("ledger entries 1..{1}", {absl::StrCat(docs_.covered_seq())}));
    root_.set("m", m);
    root_.set("t", Labels());
    for (const auto& [name, text] : {std::pair{"meta", GPULEDGER_TEXT(meta)},
                                     std::pair{"line_head", GPULEDGER_TEXT(line_head)},
                                     std::pair{"line", GPULEDGER_TEXT(line)}}) {
      std::string partial = text;
      while (!partial.empty() && partial.back() == '\n') partial.pop_back();  // inline partials
      root_.set(name, Data(kainjow::mustache::partial([partial] { return partial; })));
    }
    Data sections = List();
    for (const auto& inv : docs_.invoices()) sections.push_back(Apply(invoice_, Invoice(inv)));
    for (const auto& inv : docs_.nothing_owed()) {
      sections.push_back(Apply(invoice_, Invoice(inv)));
    }
    for (const auto& s : docs_.statements()) sections.push_back(Apply(statement_, Statement(s)));
    for (const auto& ps : docs_.programs()) sections.push_back(Apply(program_, Program(ps)));

    Data page = root_;
    page.set("lang", std::string(i18n::Code(lang_)));
    page.set("period", docs_.period());
    page.set("status", status);
    page.set("font_family", std::string(kHtmlFontFamily));
    page.set("sections", sections);
    // Only when a document cannot be computed, so that other pages' bytes do not change.
    page.set("has_errors", docs_.errors_size() > 0);
    Data errors = List();
    for (const auto& e : docs_.errors()) {
      Data row;
      row.set("document", e.document());
      row.set("message", e.message());
      errors.push_back(row);
    }
    page.set("errors", errors);
    return Apply(document_, page);
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
    return absl::StrCat(i18n::ProgramName(lang_, p), " / ", i18n::GpuModelName(m));
  }
  std::string Adjusts(const std::string& period) const {
    return period.empty() ? "" : absl::StrCat(" (", T("adjusts {1}", {period}), ")");
  }
  std::string Status() const { return docs_.closed() ? T("FINAL") : T("DRAFT"); }
  std::string Closing() const {
    return docs_.closed()
               ? T("closed at entry {1} ({2})",
                   {absl::StrCat(docs_.close_seq()), i18n::KstDateTime(docs_.closed_at_ms())})
               : T("open: draft");
  }
  // The digest line of a closed document (absent on drafts).
  void SetDigest(const std::string& name, Data* d) const {
    for (const auto& x : docs_.digests()) {
      if (x.document() == name) d->set("digest", T("SHA-256 of canonical JSON: {1}", {x.sha256()}));
    }
  }

  // Every label the templates show, from the catalog (the keys are the templates' names).
  Data Labels() const {
    Data t;
    t.set("errors_title", T("Documents that cannot be computed"));
    t.set("document", T("document"));
    t.set("why", T("why"));
    t.set("nothing_owed",
          T("Nothing is owed for this period, so no invoice is issued; the usage below is paid by "
            "the state."));
    t.set("supplier", T("Supplier (issuer)"));
    t.set("recipient", T("Recipient"));
    t.set("no_party", T("(no party record)"));
    t.set("tax_type", T("Tax type"));
    t.set("supply_value", T("Supply value"));
    t.set("total", T("Total"));
    t.set("usage_by_allocation", T("Usage by allocation"));
    t.set("caps", T("GPU-hour caps"));
    t.set("cap_hours", T("cap GPU-hours"));
    t.set("remaining_hours", T("remaining GPU-hours"));
    t.set("adjustments", T("Adjustments to closed periods"));
    t.set("period", T("period"));
    t.set("gpu_hours", T("GPU-hours"));
    t.set("list_price", T("List price"));
    t.set("subsidy_paid", T("Paid by the state (subsidy)"));
    t.set("supply_copay", T("Supply value (co-pay)"));
    t.set("total_due", T("Total (amount due)"));
    t.set("allocation", T("allocation"));
    t.set("kind", T("kind"));
    t.set("programme_model", T("programme / model"));
    t.set("krw_per_gpu_hour", T("KRW per GPU-hour"));
    t.set("copay_rate", T("co-pay rate"));
    t.set("list_krw", T("list KRW"));
    t.set("copay_krw", T("co-pay KRW"));
    t.set("subsidy_krw", T("subsidy KRW"));
    t.set("delivered", T("Delivered to programme users"));
    t.set("programme", T("programme"));
    t.set("institution", T("institution"));
    t.set("model", T("model"));
    t.set("subsidy_total", T("Total (subsidy owed by the state)"));
    t.set("own_use", T("Own use"));
    t.set("no_state_pools",
          T("No state-owned GPUs hosted in this period: the own-use share applies to state-owned "
            "pools only."));
    t.set("over_cap", T("OVER CAP"));
    t.set("reserved_capacity", T("Reserved capacity"));
    t.set("reserved_h", T("reserved h"));
    t.set("out_of_service_h", T("out of service h"));
    t.set("charged_h", T("charged h"));
    t.set("charge_krw", T("charge KRW"));
    t.set("state_pays_krw", T("state pays KRW"));
    t.set("capacity", T("Capacity"));
    t.set("capacity_h", T("capacity h"));
    t.set("programme_use_h", T("programme use h"));
    t.set("own_use_h", T("own use h"));
    t.set("outage_h", T("outage h"));
    t.set("idle_h", T("idle h"));
    t.set("oversubscribed", T("OVERSUBSCRIBED"));
    t.set("outages", T("Outages"));
    t.set("scope", T("scope"));
    t.set("cause", T("cause"));
    t.set("late", T("Own use and outages of closed periods, recorded late"));
    t.set("what", T("what"));
    t.set("excess_gpu_hours", T("excess GPU-hours"));
    t.set("excess_krw", T("excess KRW"));
    t.set("institution_type", T("institution type"));
    t.set("by_call", T("By call and agency"));
    t.set("call", T("call"));
    t.set("agency", T("agency"));
    t.set("allocations", T("allocations"));
    t.set("granted_gpu_hours", T("granted GPU-hours"));
    t.set("gpu_hours_used", T("GPU-hours used"));
    return t;
  }

  static std::string Apply(Mustache& tmpl, const Data& d) {
    if (!tmpl.is_valid())
      return absl::StrCat("<!-- template error: ", tmpl.error_message(), " -->");
    return tmpl.render(d);
  }

  // A row's or a total's GPU-hours and money (`d`: the row's other fields).
  static Data WithTotals(const v1::Totals& t, Data d = Data()) {
    d.set("gpu_hours", H(t.gpu_ms()));
    d.set("list", N(t.list_krw()));
    d.set("copay", N(t.copay_krw()));
    d.set("subsidy", N(t.subsidy_krw()));
    return d;
  }

  Data Line(const v1::InvoiceLine& l) const {
    Data d;
    if (!l.adjusts_period().empty()) d.set("adjusts", i18n::Month(lang_, l.adjusts_period()));
    d.set("allocation", l.allocation_id());
    d.set("kind", i18n::LineKindName(lang_, l.kind()));
    d.set("model", Model(l.program(), l.gpu_model()));
    d.set("rate", N(l.krw_per_gpu_hour()));
    d.set("copay_rate", i18n::Percent(l.copay_bp()));
    d.set("gpu_hours", H(l.gpu_ms()));
    d.set("list", N(l.list_krw()));
    d.set("copay", N(l.copay_krw()));
    d.set("subsidy", N(l.subsidy_krw()));
    return d;
  }

  // An invoice, or (no bill) the usage statement of an institution that owes nothing.
  Data Invoice(const v1::Invoice& inv) const {
    const auto& t = inv.totals();
    const bool issued = inv.bills_size() > 0;
    Data d = root_;  // the labels, header and partials beneath its own
    d.set("issued", issued);
    d.set("title", issued ? T("Co-pay invoice: {1}", {inv.institution_name()})
                          : T("Usage statement: {1}", {inv.institution_name()}));
    d.set("institution",
          T("Institution {1} ({2})",
            {inv.institution_id(), i18n::InstitutionTypeName(lang_, inv.institution_type())}));
    Data bills = List();
    for (const auto& b : inv.bills()) bills.push_back(Bill(inv, b));
    d.set("bills", bills);
    Data lines = List();
    for (const auto& l : inv.lines()) lines.push_back(Line(l));
    d.set("lines", lines);
    d.set("has_balances", inv.balances_size() > 0);
    Data balances = List();
    for (const auto& b : inv.balances()) {
      Data x;
      x.set("allocation", b.allocation_id());
      x.set("cap", H(b.cap_gpu_ms()));
      x.set("used", H(b.used_gpu_ms()));
      x.set("remaining", H(b.remaining_gpu_ms()));
      balances.push_back(x);
    }
    d.set("balances", balances);
    d.set("has_adjustments", inv.adjustments_size() > 0);
    Data adjustments = List();
    for (const auto& l : inv.adjustments()) adjustments.push_back(Line(l));
    d.set("adjustments", adjustments);
    // What the usage cost and who pays it, then what is billed in the layout of a Korean tax
    // invoice: supply value (the co-pay), tax (VAT), total (공급가액 / 세액 / 합계금액).
    d.set("gpu_hours", H(t.gpu_ms()));
    d.set("list", Won(t.list_krw()));
    d.set("subsidy", Won(t.subsidy_krw()));
    d.set("vat_label", T("Tax (VAT {1})", {i18n::Percent(inv.vat_bp())}));
    d.set("supply", Won(t.copay_krw()));
    d.set("vat", Won(inv.vat_krw()));
    d.set("due", Won(inv.amount_due_krw()));
    SetDigest(absl::StrCat(issued ? "invoice/" : "usage/", inv.institution_id()), &d);
    return d;
  }

  // One bill: its number and dates, both parties as a Korean tax invoice names them, its supply
  // value, tax and total, and how to pay.
  Data Bill(const v1::Invoice& inv, const v1::Bill& b) const {
    std::string programs;
    for (int p : b.programs()) {
      if (!programs.empty()) programs += ", ";
      programs += i18n::ProgramName(lang_, static_cast<v1::Program>(p));
    }
    Data d;
    d.set("heading",
          T("Invoice no. {1}", {b.number().empty() ? T("(numbered at close)") : b.number()}));
    d.set("dates", T("Issued {1} · due {2} · for {3}",
                     {b.issue_date().empty() ? "—" : b.issue_date(),
                      b.due_date().empty() ? "—" : b.due_date(), programs}));
    const v1::Party& i = b.issuer();
    const v1::Party& r = inv.recipient();
    Data parties = List();
    auto row = [&](const std::string& label, const std::string& a, const std::string& c) {
      Data x;
      x.set("label", label);
      x.set("issuer", a);
      x.set("recipient", c);
      parties.push_back(x);
    };
    {
      Data x;
      x.set("label", T("Legal name"));
      x.set("issuer", b.has_issuer() ? i.legal_name() : b.issuer_party_id());
      x.set("issuer_missing", !b.has_issuer());
      x.set("recipient", inv.has_recipient() ? r.legal_name() : inv.institution_id());
      x.set("recipient_missing", !inv.has_recipient());
      parties.push_back(x);
    }
    row(T("Registration no."), base::FormatRegistrationNumber(i.registration_number()),
        base::FormatRegistrationNumber(r.registration_number()));
    row(T("Representative"), i.representative(), r.representative());
    row(T("Address"), i.address(), r.address());
    row(T("Business type / item"), Joined(i.business_type(), i.business_item()),
        Joined(r.business_type(), r.business_item()));
    row(T("Billing contact"), Contact(i.billing_contact()), Contact(r.billing_contact()));
    d.set("parties", parties);
    d.set("tax_type", TaxTypeName(b.tax_type()));
    d.set("vat_label", T("Tax (VAT {1})", {i18n::Percent(b.vat_bp())}));
    d.set("supply", Won(b.supply_krw()));
    d.set("vat", Won(b.vat_krw()));
    d.set("total", Won(b.total_krw()));
    if (!b.payment_instructions().empty()) {
      d.set("pay", T("How to pay: {1}", {b.payment_instructions()}));
    }
    return d;
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

  Data Statement(const v1::CspStatement& s) const {
    Data d = root_;  // the labels, header and partials beneath its own
    d.set("title", T("CSP settlement statement: {1}", {s.csp_id()}));
    Data delivered = List();
    for (const auto* list : {&s.delivered(), &s.adjustments()}) {
      for (const auto& r : *list) {
        const auto& t = r.totals();
        Data x;
        x.set("programme", i18n::ProgramName(lang_, r.program()));
        x.set("institution",
              absl::StrCat(r.institution_name().empty()
                               ? r.institution_id()
                               : absl::StrCat(r.institution_name(), " (", r.institution_id(), ")"),
                           Adjusts(r.adjusts_period())));
        x.set("model", i18n::GpuModelName(r.gpu_model()));
        delivered.push_back(WithTotals(t, x));
      }
    }
    d.set("delivered", delivered);
    d.set("total", WithTotals(s.totals()));
    // A CSP with leased pools only hosts no state-owned GPUs: the own-use share does not apply
    // (rather than "0.00% of 0.000 hosted GPU-hours").
    d.set("no_state_pools", s.hosted_capacity_gpu_ms() == 0 && s.own_use_gpu_ms() == 0);
    d.set("own_use",
          T("{1} GPU-hours of {2} hosted on state-owned pools: share {3}, contract cap {4}, excess "
            "{5} GPU-hours worth {6}",
            {H(s.own_use_gpu_ms()), H(s.hosted_capacity_gpu_ms()),
             i18n::Percent(s.own_use_share_bp()), i18n::Percent(s.own_use_cap_bp()),
             H(s.own_use_excess_gpu_ms()), Won(s.own_use_excess_value_krw())}));
    d.set("over_cap", s.own_use_excess_gpu_ms() > 0);
    d.set("own_use_value",
          T("own use valued at {1} (at the rate in force at each hour of use); netted against the "
            "subsidy: {2}",
            {Won(s.own_use_value_krw()), Won(s.own_use_netted_krw())}));
    d.set("payable", T("payable by the state: {1}", {Won(s.payable_krw())}));
    d.set("has_reserved", s.reserved_size() + s.reserved_adjustments_size() > 0);
    Data reserved = List();
    for (const auto* list : {&s.reserved(), &s.reserved_adjustments()}) {
      for (const auto& r : *list) {
        Data x;
        x.set("model",
              absl::StrCat(Model(r.program(), r.gpu_model()), Adjusts(r.adjusts_period())));
        x.set("reserved", H(r.reserved_gpu_ms()));
        x.set("out_of_service", H(r.out_of_service_gpu_ms()));
        x.set("charged", H(r.charged_gpu_ms()));
        x.set("charge", N(r.charge_krw()));
        x.set("copay", N(r.copay_krw()));
        x.set("subsidy", N(r.subsidy_krw()));
        reserved.push_back(x);
      }
    }
    d.set("reserved", reserved);
    d.set("reservation_difference",
          T("Reservations change what the state pays by {1} against the subsidy of the usage on "
            "those pools.",
            {Won(s.reservation_difference_krw())}));
    Data capacity = List();
    for (const auto& c : s.capacity()) {
      Data x;
      x.set("model", Model(c.program(), c.gpu_model()));
      x.set("capacity", H(c.capacity_gpu_ms()));
      x.set("usage", H(c.program_usage_gpu_ms()));
      x.set("own_use", H(c.own_use_gpu_ms()));
      x.set("outage", H(c.outage_gpu_ms()));
      x.set("idle", H(c.idle_gpu_ms()));
      x.set("oversubscribed", c.oversubscribed());
      capacity.push_back(x);
    }
    d.set("capacity", capacity);
    d.set("has_outages", s.outages_size() > 0);
    Data outages = List();
    for (const auto& o : s.outages()) {
      Data x;
      x.set("model", Model(o.program(), o.gpu_model()));
      x.set("scope", o.scope());
      x.set("cause", o.cause());
      x.set("gpu_hours", H(o.gpu_ms()));
      outages.push_back(x);
    }
    d.set("outages", outages);
    d.set("has_late", s.own_use_adjustments_size() > 0 || s.outage_adjustments_size() > 0);
    Data late = List();
    for (const auto& u : s.own_use_adjustments()) {
      Data x;
      x.set("own", true);
      x.set("month", i18n::Month(lang_, u.adjusts_period()));
      x.set("model", Model(u.program(), u.gpu_model()));
      x.set("what", T("own use"));
      x.set("gpu_hours", H(u.own_use_gpu_ms()));
      x.set("excess_hours", H(u.excess_gpu_ms()));
      x.set("excess_krw", N(u.excess_value_krw()));
      late.push_back(x);
    }
    for (const auto& o : s.outage_adjustments()) {
      Data x;
      x.set("own", false);
      x.set("month", i18n::Month(lang_, o.adjusts_period()));
      x.set("model", Model(o.program(), o.gpu_model()));
      x.set("what", T("{1} outage: {2}", {o.scope(), o.cause()}));
      x.set("gpu_hours", H(o.gpu_ms()));
      x.set("excess_hours", "");
      x.set("excess_krw", "");
      late.push_back(x);
    }
    d.set("late", late);
    SetDigest(absl::StrCat("statement/", s.csp_id()), &d);
    return d;
  }

  Data Program(const v1::ProgramSummary& ps) const {
    Data d = root_;  // the labels, header and partials beneath its own
    d.set("title", T("Programme summary: {1}", {i18n::ProgramName(lang_, ps.program())}));
    Data rows = List();
    for (const auto* list : {&ps.by_type(), &ps.adjustments()}) {
      for (const auto& r : *list) {
        const auto& t = r.totals();
        Data x;
        x.set("type", absl::StrCat(i18n::InstitutionTypeName(lang_, r.institution_type()),
                                   Adjusts(r.adjusts_period())));
        rows.push_back(WithTotals(t, x));
      }
    }
    d.set("rows", rows);
    d.set("total", WithTotals(ps.totals()));
    d.set("utilisation",
          T("Utilisation of hosted capacity: {1} ({2} of {3} GPU-hours)",
            {i18n::Percent(ps.utilisation_bp()), H(ps.usage_gpu_ms()), H(ps.capacity_gpu_ms())}));
    if (ps.reservation_difference_krw() != 0) {
      d.set("reservations",
            T("Reserved capacity changes what the state pays by {1}: the programme costs the "
              "state {2}.",
              {Won(ps.reservation_difference_krw()),
               Won(ps.totals().subsidy_krw() + ps.reservation_difference_krw())}));
    }
    d.set("has_calls", ps.by_call_size() > 0);
    Data calls = List();
    for (const auto& r : ps.by_call()) {
      const auto& t = r.totals();
      Data x;
      x.set("call", r.call_id().empty() ? T("(none)") : r.call_id());
      x.set("agency", r.agency_id().empty() ? T("(none)") : r.agency_id());
      x.set("allocations", N(r.allocations()));
      x.set("granted", H(r.granted_gpu_ms()));
      calls.push_back(WithTotals(t, x));
    }
    d.set("calls", calls);
    SetDigest(absl::StrCat("program/", v1::Program_Name(ps.program())), &d);
    return d;
  }

  static Mustache Compile(const std::string& text) {
    Mustache m(text);
    m.set_custom_escape([](const std::string& s) { return HtmlEscape(s); });
    return m;
  }

  const v1::PeriodDocuments& docs_;
  const Lang lang_;
  Data root_;
  Mustache document_ = Compile(GPULEDGER_TEXT(document));
  Mustache invoice_ = Compile(GPULEDGER_TEXT(invoice));
  Mustache statement_ = Compile(GPULEDGER_TEXT(statement));
  Mustache program_ = Compile(GPULEDGER_TEXT(program));
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
