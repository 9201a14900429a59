// Pages for people: plain server-rendered HTML and CSS, no scripts. A browser signs in once
// (/ui/login stores the token in an HttpOnly cookie); the same roles apply as for the API.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <kainjow/mustache.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "api/routes.h"
#include "base/money.h"
#include "base/period.h"
#include "i18n/i18n.h"
#include "ledger/hash.h"
#include "settlement/render.h"
#include "settlement/reports.h"

// The pages' templates, embedded by api/CMakeLists.txt (i18n/embed.cmake).
#define GPULEDGER_TEMPLATE(name)                 \
  extern const unsigned char kTemplate_##name[]; \
  extern const unsigned long kTemplate_##name##Size;
GPULEDGER_TEMPLATE(page)
GPULEDGER_TEMPLATE(list)
GPULEDGER_TEMPLATE(login)
GPULEDGER_TEMPLATE(statement_page)
GPULEDGER_TEMPLATE(audit)
GPULEDGER_TEMPLATE(message)
GPULEDGER_TEMPLATE(document_nav)
GPULEDGER_TEMPLATE(report)
#undef GPULEDGER_TEMPLATE

namespace gpuledger::api {

namespace v1 = gpuledger::v1;
using i18n::Lang;
using i18n::Tr;

namespace {

std::string H(const std::string& s) { return settlement::HtmlEscape(s); }
std::string Hours(int64_t ms) { return i18n::GpuHours(ms); }

bool Staff(const Principal& p) {
  return p.role == Role::kOperator || p.role == Role::kFinance || p.role == Role::kAuditor;
}

// A role as people say it: 재무 (finance), CSP csp-alpha, 기관 inst-nari.
std::string RoleName(Lang lang, const Principal& who) {
  switch (who.role) {
    case Role::kOperator:
      return Tr(lang, "operator");
    case Role::kFinance:
      return Tr(lang, "finance");
    case Role::kAuditor:
      return Tr(lang, "auditor");
    case Role::kCsp:
      return Tr(lang, "CSP {1}", {who.scope_id});
    case Role::kInstitution:
      return Tr(lang, "institution {1}", {who.scope_id});
  }
  return who.RoleString();
}

// The links a role can open, and only those (a CSP never sees "Invoices").
kainjow::mustache::data Menu(Lang lang, const Principal& who) {
  kainjow::mustache::data menu(kainjow::mustache::data::type::list);
  // Labels are translated where they are written, so that the catalog check sees each one.
  auto link = [&](const char* href, const std::string& label) {
    kainjow::mustache::data item;
    item.set("href", href);
    item.set("label", label);
    menu.push_back(item);
  };
  link("/ui/periods", Tr(lang, "Periods"));
  if (who.role != Role::kCsp) link("/ui/invoices", Tr(lang, "Invoices"));
  if (who.role != Role::kInstitution) link("/ui/statements", Tr(lang, "CSP statements"));
  if (Staff(who)) link("/ui/programs", Tr(lang, "Programme summaries"));
  link("/ui/reports", Tr(lang, "Reports"));
  if (Staff(who)) link("/ui/budgets", Tr(lang, "Budgets"));
  if (who.role == Role::kOperator || who.role == Role::kAuditor) {
    link("/ui/audit", Tr(lang, "Audit"));
  }
  return menu;
}

// A page in its frame (api/templates/page.mustache): `body` is the page's own markup, already
// escaped where it holds data; everything else is escaped by the template.
std::string Page(Lang lang, const std::string& title, const std::optional<Principal>& who,
                 const std::string& body) {
  static const std::string kFrame(reinterpret_cast<const char*>(kTemplate_page),
                                  kTemplate_pageSize);
  kainjow::mustache::mustache frame(kFrame);
  frame.set_custom_escape([](const std::string& x) { return H(x); });
  kainjow::mustache::data d;
  d.set("lang", std::string(i18n::Code(lang)));
  d.set("title", title);
  d.set("font_family", std::string(settlement::kHtmlFontFamily));
  if (who) {
    d.set("menu", Menu(lang, *who));
    d.set("signed_in", Tr(lang, "signed in as {1} ({2})", {who->name, RoleName(lang, *who)}));
    d.set("sign_out", Tr(lang, "sign out"));
  } else {
    d.set("sign_in", Tr(lang, "sign in"));
  }
  d.set("body", body);
  return frame.render(d);
}

using Data = kainjow::mustache::data;

Data List() { return Data(Data::type::list); }

// A table cell: text (a link when `href` is set), right-aligned for numbers.
Data Cell(const std::string& text, bool number = false, const std::string& href = "",
          const std::string& suffix = "") {
  Data c;
  c.set("text", text);
  c.set("n", number);
  if (!href.empty()) c.set("href", href);
  if (!suffix.empty()) c.set("suffix", suffix);
  return c;
}
Data Num(const std::string& text) { return Cell(text, true); }

// A list page's table: header cells (`n`: a number column) and rows of cells.
struct Table {
  std::string id;
  Data head = List();
  Data rows = List();
  void Head(const std::string& text, bool number = false) {
    Data h;
    h.set("text", text);
    h.set("n", number);
    head.push_back(h);
  }
  void Row(std::vector<Data> cells) {
    Data list = List();
    for (auto& c : cells) list.push_back(c);
    Data row;
    row.set("cells", list);
    rows.push_back(row);
  }
};

// `text` (a translated sentence with kMark where a marked-up value goes) split at the mark:
// what comes before it and after it, so that a template can wrap the value in <b> or <code>.
constexpr char kMark[] = "\x01";
std::pair<std::string, std::string> AroundMark(const std::string& text) {
  const size_t at = text.find(kMark);
  if (at == std::string::npos) return {text, ""};
  return {text.substr(0, at), text.substr(at + 1)};
}

// Renders one of api/templates/*.mustache with `d`, every value escaped.
std::string RenderTemplate(const unsigned char* bytes, unsigned long size, const Data& d) {
  kainjow::mustache::mustache t(std::string(reinterpret_cast<const char*>(bytes), size));
  t.set_custom_escape([](const std::string& x) { return H(x); });
  return t.render(d);
}

// The body of a list page (api/templates/list.mustache): `form` (the period form, or none),
// the status line with the CSV link, the table, a closing line.
std::string ListBody(const std::optional<Data>& form, const std::optional<Data>& status,
                     const Table& table, const std::string& footer = "") {
  Data d;
  if (form) d.set("form", *form);
  if (status) d.set("status", *status);
  if (!table.id.empty()) d.set("id", table.id);
  d.set("head", table.head);
  d.set("rows", table.rows);
  if (!footer.empty()) d.set("footer", footer);
  return RenderTemplate(kTemplate_list, kTemplate_listSize, d);
}

// A list page's choice of period (`filters`: the invoice list's institution and type).
Data PeriodFormData(Lang lang, const char* action, const base::Period& period) {
  Data f;
  f.set("action", action);
  f.set("period", period.ToString());
  f.set("t_period", Tr(lang, "Period"));
  f.set("t_show", Tr(lang, "Show"));
  return f;
}

// A list page's status line and the link to the list as CSV.
Data StatusData(Lang lang, const v1::PeriodDocuments& docs, const char* list) {
  Data s;
  s.set("label", Tr(lang, "Status:"));
  s.set("state", docs.closed() ? Tr(lang, "closed (final)") : Tr(lang, "open (draft)"));
  s.set("entries", Tr(lang, "ledger entries 1..{1}", {absl::StrCat(docs.covered_seq())}));
  s.set("csv", absl::StrCat("/v1/periods/", docs.period(), "/", list, ".csv"));
  s.set("t_csv", Tr(lang, "Download CSV"));
  return s;
}

HttpResponse Html(std::string body, int status = 200) {
  HttpResponse r;
  r.status = status;
  r.content_type = "text/html; charset=utf-8";
  r.body = std::move(body);
  return r;
}

// A short page's body (api/templates/message.mustache): `text`, a link to sign in (when
// `sign_in` is its label), a form posting to `action` (when `post` is its button).
std::string MessageBody(const std::string& text, const std::string& sign_in = "",
                        const std::string& action = "", const std::string& post = "") {
  kainjow::mustache::data d;
  if (!text.empty()) d.set("text", text);
  if (!sign_in.empty()) d.set("sign_in", sign_in);
  if (!post.empty()) {
    d.set("action", action);
    d.set("post", post);
  }
  return RenderTemplate(kTemplate_message, kTemplate_messageSize, d);
}

// `text` is already in `lang` (a Tr of the caller's message).
HttpResponse HtmlError(Lang lang, int status, const std::optional<Principal>& who,
                       const std::string& text) {
  return Html(Page(lang, status == 401 ? Tr(lang, "Sign in required") : Tr(lang, "Not available"),
                   who, MessageBody(text, status == 401 ? Tr(lang, "Sign in") : "")),
              status);
}

// The period a list page shows: ?period= when valid, else the last closed one (its documents
// are final: what finance pays and files), else the current month's draft.
base::Period PeriodToShow(const std::map<std::string, std::string>& q, settlement::Engine& engine) {
  auto it = q.find("period");
  if (it != q.end()) {
    if (auto p = base::ParsePeriod(it->second); p.ok()) return *p;
  }
  if (std::optional<base::Period> closed = engine.last_closed()) return *closed;
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  return base::PeriodOf(now);
}

// The daily chart's bars (display geometry only: never money) for statement_page.mustache.
Data DailyChart(Lang lang, const std::vector<int64_t>& days) {
  int64_t max = 1;
  for (int64_t v : days) max = std::max(max, v);
  const int w = 700, h = 160, pad = 30;
  const double bw = static_cast<double>(w - pad) / std::max<size_t>(days.size(), 1);
  auto f = [](double v) { return absl::StrFormat("%.1f", v); };
  Data bars = List();
  for (size_t i = 0; i < days.size(); ++i) {
    const double bh = static_cast<double>(days[i]) / static_cast<double>(max) * (h - 10);
    Data bar;
    bar.set("x", f(pad + i * bw + 1));
    bar.set("y", f(h - bh));
    bar.set("w", f(bw - 2));
    bar.set("h", f(bh));
    bar.set("title",
            Tr(lang, "day {1}: {2} GPU-hours", {absl::StrCat(i + 1), i18n::GpuHours(days[i])}));
    if (i % 5 == 0) bar.set("tick", absl::StrCat(i + 1));
    bars.push_back(bar);
  }
  Data chart;
  chart.set("w", absl::StrCat(w));
  chart.set("h", absl::StrCat(h + 20));
  chart.set("tick_y", absl::StrCat(h + 14));
  chart.set("bars", bars);
  chart.set("top", Tr(lang, "{1} h", {i18n::GpuHours(max)}));
  return chart;
}

// Own-use share against the cap, one bar per pool, all on one scale (the largest share or cap
// and a quarter): the cap applies to each pool; own use is counted on state-owned pools only.
Data OwnUsePools(Lang lang, const v1::CspStatement& s) {
  uint32_t top = 0;
  for (const auto& r : s.own_use()) top = std::max({top, r.share_bp(), r.cap_bp()});
  top = top * 5 / 4;
  const double scale = 400.0 / std::max<uint32_t>(top, 100);
  Data pools = List();
  for (const auto& r : s.own_use()) {
    Data p;
    p.set("pool", absl::StrCat(i18n::ProgramName(lang, r.program()), " / ",
                               i18n::GpuModelName(r.gpu_model())));
    p.set("label", Tr(lang, "share {1}, contract cap {2} (red line)",
                      {i18n::Percent(r.share_bp()), i18n::Percent(r.cap_bp())}));
    p.set("share_w", absl::StrFormat("%.1f", r.share_bp() * scale));
    p.set("cap_x", absl::StrFormat("%.1f", r.cap_bp() * scale));
    p.set("over", r.share_bp() > r.cap_bp());
    p.set("verdict", r.excess_gpu_ms() > 0
                         ? Tr(lang, "over by {1} GPU-hours", {i18n::GpuHours(r.excess_gpu_ms())})
                         : Tr(lang, "within"));
    pools.push_back(p);
  }
  return pools;
}

// A printable document as its own page: the document's HTML with a navigation bar that does not
// print (back to its list, its JSON and CSV at `api`, the other language).
HttpResponse DocumentPage(Lang lang, const v1::PeriodDocuments& docs, const std::string& back,
                          const std::string& back_label, const std::string& api) {
  std::string html = settlement::RenderHtml(docs, lang);
  kainjow::mustache::data d;
  d.set("back", back);
  d.set("back_label", back_label);
  d.set("api", api);
  d.set("other", lang == Lang::kKo ? "en" : "ko");
  d.set("other_label", lang == Lang::kKo ? "English" : "한국어");
  absl::StrReplaceAll(
      {{"<body>\n", absl::StrCat("<body>\n", RenderTemplate(kTemplate_document_nav,
                                                            kTemplate_document_navSize, d))}},
      &html);
  return Html(std::move(html));
}

HttpResponse MethodNotAllowed(Lang lang, const std::optional<Principal>& who, const char* allow) {
  HttpResponse r = HtmlError(lang, 405, who, Tr(lang, "This page answers {1} only.", {allow}));
  r.headers.emplace_back("Allow", allow);
  return r;
}

// A sign-in posted from another site (login CSRF: signing a victim's browser in as the
// attacker) is refused. Browsers send Sec-Fetch-Site and Origin with a form's POST; a client
// that sends neither (curl, scripts) is no browser that another site could drive.
bool CrossSite(const HttpRequest& req) {
  if (!req.sec_fetch_site.empty() && req.sec_fetch_site != "same-origin") return true;
  if (req.origin.empty()) return false;
  return req.origin != absl::StrCat(req.tls ? "https://" : "http://", req.host);
}

HttpResponse Login(Lang lang, const HttpRequest& req, Service& svc) {
  if (req.method != "GET" && req.method != "HEAD" && req.method != "POST") {
    return MethodNotAllowed(lang, std::nullopt, "GET, HEAD, POST");
  }
  if (req.method == "POST" && CrossSite(req)) {
    return HtmlError(lang, 403, std::nullopt,
                     Tr(lang,
                        "Sign in from this server's own page: a sign-in sent from another "
                        "site is refused."));
  }
  // The page's body: a message and the token form (api/templates/login.mustache).
  auto body = [&](const std::string& message, bool invalid) {
    Data d;
    d.set("message", message);
    d.set("invalid", invalid);
    d.set("t_sign_in", Tr(lang, "Sign in"));
    return RenderTemplate(kTemplate_login, kTemplate_loginSize, d);
  };
  if (req.method == "POST") {
    std::map<std::string, std::string> form;
    if (req.body.size() > 4096 || !ParseQuery(req.body, &form)) {
      return HtmlError(lang, 400, std::nullopt, Tr(lang, "The sign-in form could not be read."));
    }
    const std::string token = form["token"];
    auto who = svc.tokens().Authenticate(token);
    if (!who) {
      return Html(Page(lang, Tr(lang, "Sign in"), std::nullopt,
                       body(Tr(lang, "That token is not valid."), true)),
                  401);
    }
    HttpResponse r = Html("", 303);
    r.headers.emplace_back("Location", "/ui/invoices");
    r.headers.emplace_back(
        "Set-Cookie", absl::StrCat("gpuledger_token=", token, "; Path=/; HttpOnly; SameSite=Strict",
                                   req.tls ? "; Secure" : ""));
    return r;
  }
  return Html(Page(lang, Tr(lang, "Sign in"), std::nullopt,
                   body(Tr(lang,
                           "Paste the access token you were given (it is kept in a "
                           "cookie for this browser only)."),
                        false)));
}

// Signing out changes state, so it is a same-site POST: a link or an image on another site
// cannot sign a user out. GET shows the form (an old bookmark still leads somewhere useful).
HttpResponse Logout(Lang lang, const HttpRequest& req, const std::optional<Principal>& who) {
  if (req.method != "GET" && req.method != "HEAD" && req.method != "POST") {
    return MethodNotAllowed(lang, who, "GET, HEAD, POST");
  }
  if (req.method != "POST") {
    return Html(Page(lang, Tr(lang, "Sign out"), who,
                     MessageBody("", "", "/ui/logout", Tr(lang, "Sign out"))));
  }
  if (CrossSite(req)) {
    return HtmlError(lang, 403, who,
                     Tr(lang,
                        "Sign out from this server's own page: a sign-out sent from another "
                        "site is refused."));
  }
  HttpResponse r = Html("", 303);
  r.headers.emplace_back("Location", "/ui/login");
  r.headers.emplace_back("Set-Cookie", "gpuledger_token=; Path=/; Max-Age=0");
  return r;
}

HttpResponse InvoiceListPage(Lang lang, const HttpRequest& req, Service& svc,
                             const Principal& who) {
  if (who.role == Role::kCsp) {
    return HtmlError(lang, 403, who, Tr(lang, "CSP accounts see CSP statements only."));
  }
  auto it = req.query.find("q");
  const std::string filter = it == req.query.end() ? "" : it->second;
  auto type_it = req.query.find("type");
  const std::string type = type_it == req.query.end() ? "" : type_it->second;
  return svc.WithEngine([&](settlement::Engine& engine) {
    const base::Period period = PeriodToShow(req.query, engine);
    settlement::DocumentFilter f;
    f.statements = f.programs = false;
    if (who.role == Role::kInstitution) f.institution_id = who.scope_id;
    auto docs = engine.Documents(period, f);
    if (!docs.ok()) return HtmlError(lang, 500, who, std::string(docs.status().message()));
    Data form = PeriodFormData(lang, "/ui/invoices", period);
    Data filters;
    filters.set("t_institution", Tr(lang, "Institution"));
    filters.set("q", filter);
    filters.set("t_id_or_name", Tr(lang, "id or name"));
    filters.set("t_type", Tr(lang, "Type"));
    Data types = List();
    auto option = [&](const std::string& value, const std::string& label) {
      Data o;
      o.set("value", value);
      o.set("label", label);
      o.set("selected", !value.empty() && value == type);
      types.push_back(o);
    };
    option("", Tr(lang, "any"));
    for (int t = 1; t <= 7; ++t) {
      const auto ty = static_cast<v1::InstitutionType>(t);
      option(v1::InstitutionType_Name(ty), i18n::InstitutionTypeName(lang, ty));
    }
    filters.set("types", types);
    form.set("filters", filters);
    Table table;
    table.id = "invoices";
    table.Head(Tr(lang, "institution"));
    table.Head(Tr(lang, "type"));
    table.Head(Tr(lang, "GPU-hours"), true);
    table.Head(Tr(lang, "list KRW"), true);
    table.Head(Tr(lang, "subsidy KRW"), true);
    table.Head(Tr(lang, "co-pay KRW"), true);
    table.Head(Tr(lang, "amount due KRW"), true);
    int shown = 0;
    std::vector<const v1::Invoice*> rows;
    for (const auto& inv : docs->invoices()) rows.push_back(&inv);
    for (const auto& inv : docs->nothing_owed()) rows.push_back(&inv);
    for (const v1::Invoice* row : rows) {
      const v1::Invoice& inv = *row;
      const std::string t = v1::InstitutionType_Name(inv.institution_type());
      if (!type.empty() && t != type) continue;
      if (!filter.empty() && inv.institution_id().find(filter) == std::string::npos &&
          inv.institution_name().find(filter) == std::string::npos) {
        continue;
      }
      ++shown;
      table.Row({Cell(inv.institution_name(), false,
                      absl::StrCat("/ui/invoices/", period.ToString(), "/", inv.institution_id()),
                      absl::StrCat(" (", inv.institution_id(), ")")),
                 Cell(i18n::InstitutionTypeName(lang, inv.institution_type())),
                 Num(Hours(inv.totals().gpu_ms())), Num(i18n::Grouped(inv.totals().list_krw())),
                 Num(i18n::Grouped(inv.totals().subsidy_krw())),
                 Num(i18n::Grouped(inv.totals().copay_krw())),
                 Num(inv.bills().empty() ? Tr(lang, "no invoice (nothing owed)")
                                         : i18n::Grouped(inv.amount_due_krw()))});
    }
    const std::string body = ListBody(form, StatusData(lang, *docs, "invoices"), table,
                                      Tr(lang, "{1} invoice(s).", {absl::StrCat(shown)}));
    return Html(
        Page(lang, Tr(lang, "Invoices {1}", {i18n::Month(lang, period.ToString())}), who, body));
  });
}

HttpResponse InvoicePage(Lang lang, Service& svc, const Principal& who,
                         const std::string& period_text, const std::string& institution) {
  auto period = base::ParsePeriod(period_text);
  if (!period.ok()) return HtmlError(lang, 400, who, Tr(lang, "That is not a period (YYYY-MM)."));
  if (!(Staff(who) || (who.role == Role::kInstitution && who.scope_id == institution))) {
    return HtmlError(lang, 403, who, Tr(lang, "You may not read this institution's invoices."));
  }
  return svc.WithEngine([&](settlement::Engine& engine) {
    settlement::DocumentFilter f;
    f.institution_id = institution;
    f.statements = f.programs = false;
    auto docs = engine.Documents(*period, f);
    if (!docs.ok()) return HtmlError(lang, 500, who, std::string(docs.status().message()));
    if (docs->invoices_size() == 0 && docs->nothing_owed_size() == 0) {
      return HtmlError(lang, 404, who, Tr(lang, "No invoice for that period."));
    }
    return DocumentPage(
        lang, *docs, absl::StrCat("/ui/invoices?period=", period->ToString()),
        Tr(lang, "All invoices"),
        absl::StrCat("/v1/periods/", period->ToString(), "/invoices/", institution));
  });
}

HttpResponse StatementListPage(Lang lang, const HttpRequest& req, Service& svc,
                               const Principal& who) {
  if (who.role == Role::kInstitution) {
    return HtmlError(lang, 403, who, Tr(lang, "Institutions see invoices only."));
  }
  return svc.WithEngine([&](settlement::Engine& engine) {
    const base::Period period = PeriodToShow(req.query, engine);
    settlement::DocumentFilter f;
    f.invoices = f.programs = false;
    if (who.role == Role::kCsp) f.csp_id = who.scope_id;
    auto docs = engine.Documents(period, f);
    if (!docs.ok()) return HtmlError(lang, 500, who, std::string(docs.status().message()));
    Table table;
    table.Head("CSP");
    table.Head(Tr(lang, "GPU-hours"), true);
    table.Head(Tr(lang, "subsidy owed KRW"), true);
    table.Head(Tr(lang, "own-use share"), true);
    table.Head(Tr(lang, "cap"), true);
    for (const auto& s : docs->statements()) {
      table.Row({Cell(s.csp_id(), false,
                      absl::StrCat("/ui/statements/", period.ToString(), "/", s.csp_id())),
                 Num(Hours(s.totals().gpu_ms())), Num(i18n::Grouped(s.totals().subsidy_krw())),
                 Num(i18n::Percent(s.own_use_share_bp())), Num(i18n::Percent(s.own_use_cap_bp()))});
    }
    const std::string body = ListBody(PeriodFormData(lang, "/ui/statements", period),
                                      StatusData(lang, *docs, "statements"), table);
    return Html(Page(lang, Tr(lang, "CSP statements {1}", {i18n::Month(lang, period.ToString())}),
                     who, body));
  });
}

HttpResponse StatementPage(Lang lang, Service& svc, const Principal& who,
                           const std::string& period_text, const std::string& csp) {
  auto period = base::ParsePeriod(period_text);
  if (!period.ok()) return HtmlError(lang, 400, who, Tr(lang, "That is not a period (YYYY-MM)."));
  if (!(Staff(who) || (who.role == Role::kCsp && who.scope_id == csp))) {
    return HtmlError(lang, 403, who, Tr(lang, "You may not read this CSP's statements."));
  }
  return svc.WithEngine([&](settlement::Engine& engine) {
    settlement::DocumentFilter f;
    f.csp_id = csp;
    f.invoices = f.programs = false;
    auto docs = engine.Documents(*period, f);
    if (!docs.ok()) return HtmlError(lang, 500, who, std::string(docs.status().message()));
    if (docs->statements_size() == 0) {
      return HtmlError(lang, 404, who, Tr(lang, "No statement for that period."));
    }
    const v1::CspStatement& s = docs->statements(0);
    const auto won = [lang](int64_t krw) { return i18n::Won(lang, krw); };
    Data d;
    d.set("status", Tr(lang, "Status:"));
    d.set("state", docs->closed() ? Tr(lang, "closed (final)") : Tr(lang, "open (draft)"));
    d.set("entries", Tr(lang, "ledger entries 1..{1}", {absl::StrCat(docs->covered_seq())}));
    const auto [owed_before, owed_after] =
        AroundMark(Tr(lang, "Subsidy owed by the state: {1} for {2} GPU-hours.",
                      {kMark, Hours(s.totals().gpu_ms())}));
    d.set("owed_before", owed_before);
    d.set("owed", won(s.totals().subsidy_krw()));
    d.set("owed_after", owed_after);
    d.set("t_per_day", Tr(lang, "GPU-hours per day"));
    d.set("chart", DailyChart(lang, engine.DailyUsage(*period, csp)));
    d.set("t_own_use", Tr(lang, "Own use against the contract cap"));
    d.set("pools", OwnUsePools(lang, s));
    d.set("overall",
          s.hosted_capacity_gpu_ms() == 0 && s.own_use_gpu_ms() == 0
              ? Tr(lang,
                   "No state-owned GPUs hosted in this period: the own-use share applies to "
                   "state-owned pools only.")
              : Tr(lang, "Overall: {1} of {2} GPU-hours hosted on state-owned pools.",
                   {i18n::Percent(s.own_use_share_bp()),
                    i18n::GpuHours(s.hosted_capacity_gpu_ms())}));
    d.set("over_cap", s.own_use_excess_gpu_ms() > 0);
    d.set("cap_verdict",
          s.own_use_excess_gpu_ms() > 0
              ? Tr(lang, "Over the cap by {1} GPU-hours, worth {2}.",
                   {Hours(s.own_use_excess_gpu_ms()), won(s.own_use_excess_value_krw())})
              : Tr(lang, "Within the cap."));
    d.set("valued", Tr(lang, "Own use valued at {1} at the rates in force when used.",
                       {won(s.own_use_value_krw())}));
    if (s.own_use_netted_krw() != 0) {
      d.set("netted", Tr(lang, "The contract nets the excess: {1} off the subsidy.",
                         {won(s.own_use_netted_krw())}));
    }
    const auto [payable_before, payable_after] =
        AroundMark(Tr(lang, "Payable by the state: {1}.", {kMark}));
    d.set("payable_before", payable_before);
    d.set("payable", won(s.payable_krw()));
    d.set("payable_after", payable_after);
    d.set("t_statement", Tr(lang, "The statement"));
    // The printable statement's style and body (settlement's templates), embedded as markup.
    std::string doc = settlement::RenderHtml(*docs, lang);
    std::string embedded;
    const size_t b = doc.find("<body>\n");
    const size_t e = doc.rfind("</body>");
    const size_t st = doc.find("<style>");
    const size_t se = doc.find("</style>");
    if (st != std::string::npos && se != std::string::npos) {
      embedded = doc.substr(st, se + 8 - st);
    }
    if (b != std::string::npos && e != std::string::npos) {
      absl::StrAppend(&embedded, doc.substr(b + 7, e - b - 7));
    }
    d.set("document", embedded);
    const std::string body =
        RenderTemplate(kTemplate_statement_page, kTemplate_statement_pageSize, d);
    return Html(Page(lang,
                     Tr(lang, "Statement {1} {2}", {csp, i18n::Month(lang, period->ToString())}),
                     who, body));
  });
}

// Every period with documents: the closed ones (final, with when they closed) and the open one
// after them, each with links to the documents the role may read.
HttpResponse PeriodsPage(Lang lang, Service& svc, const Principal& who) {
  return svc.WithEngine([&](settlement::Engine& engine) {
    Table table;
    table.id = "periods";
    table.Head(Tr(lang, "period"));
    table.Head(Tr(lang, "status"));
    table.Head(Tr(lang, "documents"));
    auto row = [&](const base::Period& period, const std::string& status) {
      const std::string p = period.ToString();
      Data links = List();
      auto link = [&](const std::string& href, const std::string& label) {
        Data l;
        l.set("link", href);
        l.set("label", label);
        l.set("first", links.list_value().empty());
        links.push_back(l);
      };
      if (who.role != Role::kCsp)
        link(absl::StrCat("/ui/invoices?period=", p), Tr(lang, "Invoices"));
      if (who.role != Role::kInstitution) {
        link(absl::StrCat("/ui/statements?period=", p), Tr(lang, "CSP statements"));
      }
      if (Staff(who))
        link(absl::StrCat("/ui/programs?period=", p), Tr(lang, "Programme summaries"));
      Data documents;
      documents.set("n", false);
      documents.set("links", links);
      table.Row({Cell(absl::StrCat(i18n::Month(lang, p), " (", p, ")")), Cell(status), documents});
    };
    // Newest first: the open period, then the closed ones.
    const std::optional<base::Period> last = engine.last_closed();
    const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    const base::Period open = last ? last->Next() : base::PeriodOf(now);
    row(open, Tr(lang, "open (draft)"));
    std::vector<settlement::CloseRecord> closes = engine.Closes();
    for (auto it = closes.rbegin(); it != closes.rend(); ++it) {
      row(it->period, Tr(lang, "closed (final) at entry {1}, {2}",
                         {absl::StrCat(it->close_seq), i18n::KstDateTime(it->closed_at_ms)}));
    }
    const std::string body = ListBody(std::nullopt, std::nullopt, table);
    return Html(Page(lang, Tr(lang, "Periods"), who, body));
  });
}

HttpResponse ProgramListPage(Lang lang, const HttpRequest& req, Service& svc,
                             const Principal& who) {
  if (!Staff(who)) {
    return HtmlError(lang, 403, who, Tr(lang, "Programme summaries are for the agency's staff."));
  }
  return svc.WithEngine([&](settlement::Engine& engine) {
    const base::Period period = PeriodToShow(req.query, engine);
    settlement::DocumentFilter f;
    f.invoices = f.statements = false;
    auto docs = engine.Documents(period, f);
    if (!docs.ok()) return HtmlError(lang, 500, who, std::string(docs.status().message()));
    Table table;
    table.id = "programs";
    table.Head(Tr(lang, "programme"));
    table.Head(Tr(lang, "GPU-hours"), true);
    table.Head(Tr(lang, "list KRW"), true);
    table.Head(Tr(lang, "co-pay KRW"), true);
    table.Head(Tr(lang, "subsidy KRW"), true);
    table.Head(Tr(lang, "utilisation"), true);
    for (const auto& ps : docs->programs()) {
      const auto& t = ps.totals();
      table.Row({Cell(i18n::ProgramName(lang, ps.program()), false,
                      absl::StrCat("/ui/programs/", period.ToString(), "/",
                                   v1::Program_Name(ps.program()))),
                 Num(Hours(t.gpu_ms())), Num(i18n::Grouped(t.list_krw())),
                 Num(i18n::Grouped(t.copay_krw())), Num(i18n::Grouped(t.subsidy_krw())),
                 Num(i18n::Percent(ps.utilisation_bp()))});
    }
    const std::string body = ListBody(PeriodFormData(lang, "/ui/programs", period),
                                      StatusData(lang, *docs, "programs"), table);
    return Html(Page(lang,
                     Tr(lang, "Programme summaries {1}", {i18n::Month(lang, period.ToString())}),
                     who, body));
  });
}

HttpResponse ProgramPage(Lang lang, Service& svc, const Principal& who,
                         const std::string& period_text, const std::string& program) {
  auto period = base::ParsePeriod(period_text);
  if (!period.ok()) return HtmlError(lang, 400, who, Tr(lang, "That is not a period (YYYY-MM)."));
  if (!Staff(who)) {
    return HtmlError(lang, 403, who, Tr(lang, "Programme summaries are for the agency's staff."));
  }
  v1::Program prog;
  if (!v1::Program_Parse(program, &prog) || prog == v1::PROGRAM_UNSPECIFIED) {
    return HtmlError(lang, 404, who, Tr(lang, "No such programme."));
  }
  return svc.WithEngine([&](settlement::Engine& engine) {
    settlement::DocumentFilter f;
    f.invoices = f.statements = false;
    auto docs = engine.Documents(*period, f);
    if (!docs.ok()) return HtmlError(lang, 500, who, std::string(docs.status().message()));
    auto* list = docs->mutable_programs();
    list->erase(std::remove_if(list->begin(), list->end(),
                               [&](const v1::ProgramSummary& s) { return s.program() != prog; }),
                list->end());
    if (docs->programs_size() == 0) {
      return HtmlError(lang, 404, who, Tr(lang, "No summary of that programme for that period."));
    }
    return DocumentPage(lang, *docs, absl::StrCat("/ui/programs?period=", period->ToString()),
                        Tr(lang, "All programmes"),
                        absl::StrCat("/v1/periods/", period->ToString(), "/programs/", program));
  });
}

HttpResponse AuditPage(Lang lang, const HttpRequest& req, Service& svc, const Principal& who) {
  if (!(who.role == Role::kOperator || who.role == Role::kAuditor)) {
    return HtmlError(lang, 403, who, Tr(lang, "The audit view is for auditors and operators."));
  }
  const ledger::Head head = svc.ledger().head();
  const VerifyStatus v = svc.verify_status();
  Data d;
  d.set("t_head", Tr(lang, "Chain head"));
  const auto [head_before, head_after] =
      AroundMark(Tr(lang, "Entry {1}, hash {2}", {absl::StrCat(head.seq), kMark}));
  d.set("head_before", head_before);
  d.set("hash", ledger::ToHex(head.hash));
  d.set("head_after", head_after);
  d.set("t_verification", Tr(lang, "Verification"));
  if (!v.done) {
    d.set("running", Tr(lang, "Running..."));
  } else if (!v.error.empty()) {
    d.set("error", Tr(lang, "Could not verify: {1}", {v.error}));
  } else if (v.report.ok) {
    d.set("verified",
          Tr(lang, "{1} entries, {2} signed checkpoints (key: {3}), at {4}.",
             {absl::StrCat(v.report.entries_checked), absl::StrCat(v.report.checkpoints_verified),
              v.report.key_source, i18n::KstDateTime(v.finished_at_ms)}));
  } else {
    d.set("failed", Tr(lang, "FAILED at entry {1}: {2}",
                       {absl::StrCat(v.report.first_bad_seq), v.report.problem}));
  }
  d.set("t_checkpoints", Tr(lang, "Latest checkpoints"));
  d.set("t_chain_hash", Tr(lang, "chain hash"));
  d.set("t_time", Tr(lang, "time"));
  std::vector<v1::Checkpoint> cps;
  (void)svc.ledger().ScanCheckpoints([&](const v1::Checkpoint& cp) {
    cps.push_back(cp);
    return absl::OkStatus();
  });
  Data checkpoints = List();
  for (size_t i = cps.size() > 20 ? cps.size() - 20 : 0; i < cps.size(); ++i) {
    std::string hash_hex;
    ledger::Digest digest{};
    if (ledger::FromBytes(cps[i].head_hash(), &digest)) hash_hex = ledger::ToHex(digest);
    Data cp;
    cp.set("seq", absl::StrCat(cps[i].seq()));
    cp.set("hash", hash_hex);
    cp.set("time", i18n::KstDateTime(cps[i].time_ms()));
    checkpoints.push_back(cp);
  }
  d.set("checkpoints", checkpoints);
  d.set("t_rejected", Tr(lang, "Rejected events"));
  auto rq = req.query;
  d.set("csp", rq["csp"]);
  d.set("reason", rq["reason"]);
  d.set("t_reason", Tr(lang, "Reason"));
  d.set("t_filter", Tr(lang, "Filter"));
  HttpRequest api_req;
  api_req.query = rq;
  api_req.query.erase("lang");
  if (!api_req.query.contains("limit")) api_req.query["limit"] = "50";
  api_req.path = "/v1/rejected";
  api_req.method = "GET";
  api_req.cookie = req.cookie;
  api_req.authorization = req.authorization;
  HttpResponse rejected = Handle(api_req, svc);
  if (rejected.status != 200) {
    d.set("api_error", rejected.body);
  } else {
    d.set("t_source", Tr(lang, "source"));
    d.set("t_event", Tr(lang, "event"));
    d.set("t_reason_col", Tr(lang, "reason"));
    d.set("t_detail", Tr(lang, "detail"));
    auto j = nlohmann::json::parse(rejected.body, nullptr, false);
    Data rows = List();
    int n = 0;
    if (j.is_object() && j["rejected"].is_array()) {
      for (const auto& e : j["rejected"]) {
        ++n;
        Data row;
        row.set("seq", absl::StrCat(e.value("seq", uint64_t{0})));
        row.set("source", e.value("source_id", ""));
        row.set("event", e.value("event_id", ""));
        row.set("code", e.value("reason_code", ""));
        row.set("detail", e.value("reason_detail", ""));
        rows.push_back(row);
      }
    }
    d.set("rejected", rows);
    d.set("shown", Tr(lang,
                      "{1} shown (first 50 from the start of the ledger; the API pages through "
                      "all: /v1/rejected).",
                      {absl::StrCat(n)}));
  }
  return Html(
      Page(lang, Tr(lang, "Audit"), who, RenderTemplate(kTemplate_audit, kTemplate_auditSize, d)));
}

std::string QueryValue(const HttpRequest& req, const char* name, const std::string& def = "") {
  auto it = req.query.find(name);
  return it == req.query.end() ? def : it->second;
}

Data Field(const std::string& label, const char* name, const std::string& value, int size) {
  Data f;
  f.set("label", label);
  f.set("name", name);
  f.set("value", value);
  f.set("size", absl::StrCat(size));
  return f;
}

Data Links(const std::vector<std::pair<std::string, std::string>>& links) {
  Data items = List();
  for (const auto& [href, label] : links) {
    Data l;
    l.set("href", href);
    l.set("label", label);
    l.set("first", items.list_value().empty());
    items.push_back(l);
  }
  Data d;
  d.set("items", items);
  return d;
}

std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == ',') {
      out.push_back(static_cast<char>(c));
    } else {
      out += absl::StrFormat("%%%02X", c);
    }
  }
  return out;
}

// Usage over a range, grouped, with each pool's capacity by use (settlement::Engine::Usage):
// the form, the chart, the rows and the capacity, and the same report as CSV and JSON. Scoped
// as /v1/reports/usage is: an institution sees its own usage, a CSP its own.
HttpResponse ReportPage(Lang lang, const HttpRequest& req, Service& svc, const Principal& who) {
  const std::string from = QueryValue(req, "from", "2026-01");
  const std::string to = QueryValue(req, "to", "2026-12");
  const std::string granularity = QueryValue(req, "granularity", "month");
  const std::string group_by =
      QueryValue(req, "group_by", who.role == Role::kInstitution ? "" : "csp,model");
  Data form;
  form.set("action", "/ui/reports");
  form.set("t_show", Tr(lang, "Show"));
  Data fields = List();
  fields.push_back(Field(Tr(lang, "From"), "from", from, 10));
  fields.push_back(Field(Tr(lang, "To"), "to", to, 10));
  Data g = Field(Tr(lang, "By"), "granularity", granularity, 8);
  Data options;
  options.set("name", "granularity");
  Data choices = List();
  for (const auto& [value, text] :
       std::vector<std::pair<std::string, std::string>>{{"day", Tr(lang, "day")},
                                                        {"month", Tr(lang, "month")},
                                                        {"quarter", Tr(lang, "quarter")},
                                                        {"year", Tr(lang, "year")}}) {
    Data c;
    c.set("value", value);
    c.set("text", text);
    c.set("selected", value == granularity);
    choices.push_back(c);
  }
  options.set("choices", choices);
  g.set("options", options);
  fields.push_back(g);
  fields.push_back(Field(Tr(lang, "Group by"), "group_by", group_by, 24));
  form.set("fields", fields);
  auto query = settlement::ParseUsageQuery(from, to, granularity, group_by);
  if (!query.ok()) {
    form.set("error", std::string(query.status().message()));
    return Html(Page(lang, Tr(lang, "Reports"), who,
                     RenderTemplate(kTemplate_report, kTemplate_reportSize, form)),
                400);
  }
  if (who.role == Role::kInstitution) query->institution_id = who.scope_id;
  if (who.role == Role::kCsp) query->csp_id = who.scope_id;
  return svc.WithEngine([&](settlement::Engine& engine) {
    auto report = engine.Usage(*query);
    if (!report.ok()) {
      form.set("error", std::string(report.status().message()));
      return Html(Page(lang, Tr(lang, "Reports"), who,
                       RenderTemplate(kTemplate_report, kTemplate_reportSize, form)),
                  422);
    }
    Data charts = List();
    Data chart;
    const bool capacity = report->capacity_shown && !report->capacity.empty();
    chart.set("title", capacity ? Tr(lang, "Capacity by use") : Tr(lang, "GPU-hours used"));
    chart.set("svg", settlement::UsageReportSvg(*report, lang));
    charts.push_back(chart);
    form.set("charts", charts);
    if (query->granularity == settlement::Granularity::kDay) {
      form.set("note",
               Tr(lang, "Money is settled by month: a report by day shows GPU-hours only."));
    }
    const std::string q =
        absl::StrCat("from=", UrlEncode(from), "&to=", UrlEncode(to),
                     "&granularity=", UrlEncode(granularity), "&group_by=", UrlEncode(group_by));
    form.set("links", Links({{absl::StrCat("/v1/reports/usage.csv?", q), Tr(lang, "Download CSV")},
                             {absl::StrCat("/v1/reports/usage.csv?table=capacity&", q),
                              Tr(lang, "Capacity as CSV")},
                             {absl::StrCat("/v1/reports/usage?", q), "JSON"}}));
    std::string body = RenderTemplate(kTemplate_report, kTemplate_reportSize, form);
    Table rows;
    rows.id = "usage";
    rows.Head(Tr(lang, "period"));
    for (settlement::Dimension d : query->group_by) rows.Head(settlement::DimensionName(d));
    rows.Head(Tr(lang, "GPU-hours used"), true);
    const bool money = query->granularity != settlement::Granularity::kDay;
    if (money) {
      rows.Head(Tr(lang, "net GPU-hours"), true);
      rows.Head(Tr(lang, "co-pay"), true);
      rows.Head(Tr(lang, "subsidy"), true);
    }
    auto row = [&](const settlement::UsageRow& r, const std::string& bucket) {
      std::vector<Data> cells = {Cell(bucket)};
      for (size_t i = 0; i < query->group_by.size(); ++i) {
        cells.push_back(Cell(i < r.group.size() ? r.group[i] : ""));
      }
      cells.push_back(Num(Hours(r.used_gpu_ms)));
      if (money) {
        cells.push_back(Num(Hours(r.net_gpu_ms)));
        cells.push_back(Num(i18n::Won(lang, r.copay_krw)));
        cells.push_back(Num(i18n::Won(lang, r.subsidy_krw)));
      }
      rows.Row(cells);
    };
    for (const auto& r : report->rows) row(r, r.bucket);
    row(report->totals, Tr(lang, "Total"));
    body += ListBody(std::nullopt, std::nullopt, rows);
    if (capacity) {
      Table cap;
      cap.id = "capacity";
      cap.Head(Tr(lang, "period"));
      for (settlement::Dimension d : query->group_by) {
        if (d == settlement::Dimension::kProgram || d == settlement::Dimension::kCsp ||
            d == settlement::Dimension::kModel) {
          cap.Head(settlement::DimensionName(d));
        }
      }
      for (const std::string& h :
           {Tr(lang, "capacity"), Tr(lang, "programme use"), Tr(lang, "own use"),
            Tr(lang, "planned outage"), Tr(lang, "unplanned outage"), Tr(lang, "idle")}) {
        cap.Head(absl::StrCat(h, " (GPU-h)"), true);
      }
      for (const auto& r : report->capacity) {
        std::vector<Data> cells = {Cell(r.bucket)};
        for (const auto& v : r.group) cells.push_back(Cell(v));
        for (int64_t v : {r.capacity_gpu_ms, r.programme_use_gpu_ms, r.own_use_gpu_ms,
                          r.planned_outage_gpu_ms, r.unplanned_outage_gpu_ms, r.idle_gpu_ms}) {
          cells.push_back(Num(Hours(v)));
        }
        cap.Row(cells);
      }
      body += absl::StrCat("<h2>", H(Tr(lang, "Capacity by use")), "</h2>\n");
      body += ListBody(std::nullopt, std::nullopt, cap);
    }
    return Html(Page(lang, Tr(lang, "Reports"), who, body));
  });
}

// The year's budgets (staff): each with its burn-down chart against the budget line.
HttpResponse BudgetPage(Lang lang, const HttpRequest& req, Service& svc, const Principal& who) {
  if (!Staff(who)) {
    return HtmlError(lang, 403, who, Tr(lang, "Budgets are for the operator's staff."));
  }
  const std::string year_text = QueryValue(req, "year", "2026");
  Data form;
  form.set("action", "/ui/budgets");
  form.set("t_show", Tr(lang, "Show"));
  Data fields = List();
  fields.push_back(Field(Tr(lang, "Year"), "year", year_text, 6));
  form.set("fields", fields);
  uint32_t year = 0;
  if (!absl::SimpleAtoi(year_text, &year) || year < 1970 || year > 9999) {
    form.set("error", Tr(lang, "The year is four digits, e.g. 2026."));
    return Html(Page(lang, Tr(lang, "Budgets"), who,
                     RenderTemplate(kTemplate_report, kTemplate_reportSize, form)),
                400);
  }
  return svc.WithEngine([&](settlement::Engine& engine) {
    auto report = engine.Budgets(year);
    if (!report.ok()) {
      form.set("error", std::string(report.status().message()));
      return Html(Page(lang, Tr(lang, "Budgets"), who,
                       RenderTemplate(kTemplate_report, kTemplate_reportSize, form)),
                  422);
    }
    if (report->budgets.empty()) {
      form.set("note", Tr(lang, "No budget is recorded for this year."));
    }
    Data charts = List();
    for (const auto& b : report->budgets) {
      Data chart;
      const std::string program = i18n::ProgramName(lang, [&] {
        v1::Program p = v1::PROGRAM_UNSPECIFIED;
        v1::Program_Parse(b.program, &p);
        return p;
      }());
      chart.set("title", b.call_id.empty() ? program : absl::StrCat(program, " · ", b.call_id));
      chart.set("svg", settlement::BudgetBurnDownSvg(b, lang));
      chart.set("summary",
                Tr(lang, "Budget {1}, drawn {2} ({3}), remaining {4}, forecast for the year {5}.",
                   {i18n::Won(lang, b.amount_krw), i18n::Won(lang, b.drawn_krw),
                    i18n::Percent(b.drawn_bp), i18n::Won(lang, b.remaining_krw),
                    i18n::Won(lang, b.forecast_krw)}));
      charts.push_back(chart);
    }
    form.set("charts", charts);
    form.set("links",
             Links({{absl::StrCat("/v1/reports/budget.csv?year=", year), Tr(lang, "Download CSV")},
                    {absl::StrCat("/v1/reports/budget?year=", year), "JSON"}}));
    std::string body = RenderTemplate(kTemplate_report, kTemplate_reportSize, form);
    Table months;
    months.id = "budgets";
    months.Head(Tr(lang, "programme"));
    months.Head(Tr(lang, "call"));
    months.Head(Tr(lang, "period"));
    months.Head(Tr(lang, "status"));
    months.Head(Tr(lang, "drawdown"), true);
    months.Head(Tr(lang, "cumulative"), true);
    months.Head(Tr(lang, "remaining"), true);
    for (const auto& b : report->budgets) {
      for (const auto& m : b.months) {
        months.Row({Cell(b.program), Cell(b.call_id), Cell(i18n::Month(lang, m.period)),
                    Cell(m.closed ? Tr(lang, "closed (final)") : Tr(lang, "open (draft)")),
                    Num(i18n::Won(lang, m.drawdown_krw)), Num(i18n::Won(lang, m.cumulative_krw)),
                    Num(i18n::Won(lang, b.amount_krw - m.cumulative_krw))});
      }
    }
    body += ListBody(std::nullopt, std::nullopt, months);
    return Html(Page(lang, Tr(lang, "Budgets"), who, body));
  });
}

}  // namespace

HttpResponse HandlePage(const HttpRequest& req, Service& svc,
                        const std::optional<Principal>& principal) {
  const std::vector<std::string> seg = absl::StrSplit(req.path, '/', absl::SkipEmpty());
  HttpResponse r;
  const Lang lang = LanguageOf(req);
  if (seg.size() == 2 && seg[1] == "login") {
    r = Login(lang, req, svc);
    r.route = "/ui/login";
    return r;
  }
  if (seg.size() == 2 && seg[1] == "logout") {
    r = Logout(lang, req, principal);
    r.route = "/ui/logout";
    return r;
  }
  if (req.method != "GET" && req.method != "HEAD")
    return MethodNotAllowed(lang, principal, "GET, HEAD");
  if (!principal) {
    r = HtmlError(lang, 401, principal, Tr(lang, "Sign in with your access token first."));
    r.route = "/ui";
    return r;
  }
  const Principal& who = *principal;
  if (seg.size() == 1) {
    r = Html("", 302);
    r.headers.emplace_back("Location", who.role == Role::kCsp       ? "/ui/statements"
                                       : who.role == Role::kAuditor ? "/ui/audit"
                                                                    : "/ui/invoices");
    r.route = "/ui";
  } else if (seg[1] == "invoices" && seg.size() == 2) {
    r = InvoiceListPage(lang, req, svc, who);
    r.route = "/ui/invoices";
  } else if (seg[1] == "invoices" && seg.size() == 4) {
    r = InvoicePage(lang, svc, who, seg[2], seg[3]);
    r.route = "/ui/invoices/{period}/{institution}";
  } else if (seg[1] == "statements" && seg.size() == 2) {
    r = StatementListPage(lang, req, svc, who);
    r.route = "/ui/statements";
  } else if (seg[1] == "statements" && seg.size() == 4) {
    r = StatementPage(lang, svc, who, seg[2], seg[3]);
    r.route = "/ui/statements/{period}/{csp}";
  } else if (seg[1] == "periods" && seg.size() == 2) {
    r = PeriodsPage(lang, svc, who);
    r.route = "/ui/periods";
  } else if (seg[1] == "programs" && seg.size() == 2) {
    r = ProgramListPage(lang, req, svc, who);
    r.route = "/ui/programs";
  } else if (seg[1] == "programs" && seg.size() == 4) {
    r = ProgramPage(lang, svc, who, seg[2], seg[3]);
    r.route = "/ui/programs/{period}/{program}";
  } else if (seg[1] == "audit" && seg.size() == 2) {
    r = AuditPage(lang, req, svc, who);
    r.route = "/ui/audit";
  } else if (seg[1] == "reports" && seg.size() == 2) {
    r = ReportPage(lang, req, svc, who);
    r.route = "/ui/reports";
  } else if (seg[1] == "budgets" && seg.size() == 2) {
    r = BudgetPage(lang, req, svc, who);
    r.route = "/ui/budgets";
  } else {
    r = HtmlError(lang, 404, who, Tr(lang, "No such page."));
    r.route = "error";
  }
  if (r.content_type.starts_with("text/html")) {
    r.headers.emplace_back("Content-Language", i18n::Code(lang));
    r.headers.emplace_back("Vary", "Accept-Language");
  }
  return r;
}

}  // namespace gpuledger::api
