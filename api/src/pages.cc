// Pages for people: plain server-rendered HTML and CSS, no scripts. A browser signs in once
// (/ui/login stores the token in an HttpOnly cookie); the same roles apply as for the API.
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "api/routes.h"
#include "base/money.h"
#include "base/period.h"
#include "ledger/hash.h"
#include "settlement/render.h"

namespace gpuledger::api {

namespace v1 = gpuledger::v1;

namespace {

std::string H(const std::string& s) {
  return absl::StrReplaceAll(
      s, {{"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"}, {"\"", "&quot;"}, {"'", "&#39;"}});
}
std::string Won(int64_t w) { return base::FormatWon(base::Krw{w}); }
std::string Hours(int64_t ms) { return base::FormatGpuHours(base::GpuMs{ms}); }
std::string Bp(int64_t bp) { return absl::StrFormat("%d.%02d%%", bp / 100, bp % 100); }

constexpr char kStyleRest[] =
    "nav a{margin-right:1em}nav{border-bottom:1px solid #bbb;padding-bottom:.5em;margin-bottom:"
    "1em}table{border-collapse:collapse;width:100%;margin:.5em 0 1em}th,td{border-bottom:1px "
    "solid #ccc;padding:3px 6px;text-align:left}td.n,th.n{text-align:right;font-variant-numeric:"
    "tabular-nums}.flag{color:#b00;font-weight:bold}.ok{color:#070;font-weight:bold}form "
    "input,form select{margin-right:.6em}form.out{display:inline}@media "
    "print{nav,form{display:none}}";

std::string Page(const std::string& title, const std::optional<Principal>& who,
                 const std::string& body) {
  return absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>", H(title),
      " - gpuledger</title><style>body{font-family:", settlement::kHtmlFontFamily,
      ";font-size:10pt;margin:1.5em;color:#111}", kStyleRest,
      "</style></head><body>\n<nav><b>gpuledger</b> ",
      "<a href=\"/ui/invoices\">Invoices</a><a href=\"/ui/statements\">CSP statements</a>"
      "<a href=\"/ui/audit\">Audit</a>",
      who ? absl::StrCat("<span>signed in as ", H(who->name), " (", H(who->RoleString()),
                         ")</span> <form class=\"out\" method=\"post\" action=\"/ui/logout\">"
                         "<button type=\"submit\">sign out</button></form>")
          : "<a href=\"/ui/login\">sign in</a>",
      "</nav>\n<h1>", H(title), "</h1>\n", body, "\n</body></html>\n");
}

HttpResponse Html(std::string body, int status = 200) {
  HttpResponse r;
  r.status = status;
  r.content_type = "text/html; charset=utf-8";
  r.body = std::move(body);
  return r;
}

HttpResponse HtmlError(int status, const std::optional<Principal>& who, const std::string& text) {
  return Html(Page(status == 401 ? "Sign in required" : "Not available", who,
                   absl::StrCat("<p>", H(text), "</p>",
                                status == 401 ? "<p><a href=\"/ui/login\">Sign in</a></p>" : "")),
              status);
}

base::Period CurrentPeriodOr(const std::map<std::string, std::string>& q) {
  auto it = q.find("period");
  if (it != q.end()) {
    if (auto p = base::ParsePeriod(it->second); p.ok()) return *p;
  }
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  return base::PeriodOf(now);
}

bool Staff(const Principal& p) {
  return p.role == Role::kOperator || p.role == Role::kFinance || p.role == Role::kAuditor;
}

// Daily GPU-hours as an SVG bar chart (server-rendered: no script, prints as it shows).
std::string DailyChart(const std::vector<int64_t>& days) {
  int64_t max = 1;
  for (int64_t v : days) max = std::max(max, v);
  const int w = 700, h = 160, pad = 30;
  const double bw = static_cast<double>(w - pad) / std::max<size_t>(days.size(), 1);
  std::string out = absl::StrFormat(
      "<svg class=\"chart\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" "
      "aria-label=\"GPU-hours per day\">",
      w, h + 20, w, h + 20);
  for (size_t i = 0; i < days.size(); ++i) {
    // Display geometry only: never money.
    const double bh = static_cast<double>(days[i]) / static_cast<double>(max) * (h - 10);
    absl::StrAppendFormat(&out,
                          "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                          "fill=\"#3b6ea5\"><title>day %d: %s GPU-hours</title></rect>",
                          pad + i * bw + 1, h - bh, bw - 2, bh, i + 1, Hours(days[i]));
    if (i % 5 == 0) {
      absl::StrAppendFormat(&out, "<text x=\"%.1f\" y=\"%d\" font-size=\"9\">%d</text>",
                            pad + i * bw + 1, h + 14, i + 1);
    }
  }
  absl::StrAppendFormat(&out, "<text x=\"0\" y=\"10\" font-size=\"9\">%s h</text></svg>",
                        Hours(max));
  return out;
}

// Own-use share against the cap as a horizontal bar.
std::string ShareBar(uint32_t share_bp, uint32_t cap_bp) {
  const double scale = 400.0 / std::max<uint32_t>(std::max(share_bp, cap_bp) * 5 / 4, 100);
  return absl::StrFormat(
      "<svg width=\"420\" height=\"34\" role=\"img\" aria-label=\"own-use share %s, cap %s\">"
      "<rect x=\"0\" y=\"6\" width=\"%.1f\" height=\"14\" fill=\"%s\"/>"
      "<line x1=\"%.1f\" y1=\"0\" x2=\"%.1f\" y2=\"26\" stroke=\"#b00\" stroke-width=\"2\"/>"
      "<text x=\"0\" y=\"33\" font-size=\"9\">share %s, contract cap %s (red line)</text></svg>",
      Bp(share_bp), Bp(cap_bp), share_bp * scale, share_bp > cap_bp ? "#b00" : "#3b6ea5",
      cap_bp * scale, cap_bp * scale, Bp(share_bp), Bp(cap_bp));
}

// The cap applies to each pool: one bar per pool, then the CSP's overall share.
std::string OwnUseBars(const v1::CspStatement& s) {
  std::string out = "<table class=\"ownuse\">";
  for (const auto& r : s.own_use()) {
    absl::StrAppend(
        &out, "<tr><td>", v1::Program_Name(r.program()), " / ", v1::GpuModel_Name(r.gpu_model()),
        "</td><td>", ShareBar(r.share_bp(), r.cap_bp()), "</td><td>",
        r.excess_gpu_ms() > 0 ? absl::StrCat("<span class=\"flag\">over by ",
                                             Hours(r.excess_gpu_ms()), " GPU-hours</span>")
                              : "<span class=\"ok\">within</span>",
        "</td></tr>");
  }
  absl::StrAppend(&out, "</table><p>Overall: ", Bp(s.own_use_share_bp()), " of ",
                  Hours(s.hosted_capacity_gpu_ms()), " hosted GPU-hours.</p>");
  return out;
}

HttpResponse MethodNotAllowed(const std::optional<Principal>& who, const char* allow) {
  HttpResponse r = HtmlError(405, who, absl::StrCat("This page answers ", allow, " only."));
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

HttpResponse Login(const HttpRequest& req, Service& svc) {
  if (req.method != "GET" && req.method != "HEAD" && req.method != "POST") {
    return MethodNotAllowed(std::nullopt, "GET, HEAD, POST");
  }
  if (req.method == "POST" && CrossSite(req)) {
    return HtmlError(403, std::nullopt,
                     "Sign in from this server's own page: a sign-in sent from another site is "
                     "refused.");
  }
  if (req.method == "POST") {
    std::map<std::string, std::string> form;
    if (req.body.size() > 4096 || !ParseQuery(req.body, &form)) {
      return HtmlError(400, std::nullopt, "The sign-in form could not be read.");
    }
    const std::string token = form["token"];
    auto who = svc.tokens().Authenticate(token);
    if (!who) {
      return Html(Page("Sign in", std::nullopt,
                       "<p class=\"flag\">That token is not valid.</p>"
                       "<form method=\"post\" action=\"/ui/login\"><input type=\"password\" "
                       "name=\"token\" size=\"70\" autofocus><input type=\"submit\" "
                       "value=\"Sign in\"></form>"),
                  401);
    }
    HttpResponse r = Html("", 303);
    r.headers.emplace_back("Location", "/ui/invoices");
    r.headers.emplace_back(
        "Set-Cookie", absl::StrCat("gpuledger_token=", token, "; Path=/; HttpOnly; SameSite=Strict",
                                   req.tls ? "; Secure" : ""));
    return r;
  }
  return Html(Page("Sign in", std::nullopt,
                   "<p>Paste the access token you were given (it is kept in a cookie for this "
                   "browser only).</p><form method=\"post\" action=\"/ui/login\"><input "
                   "type=\"password\" name=\"token\" size=\"70\" autofocus><input "
                   "type=\"submit\" value=\"Sign in\"></form>"));
}

// Signing out changes state, so it is a same-site POST: a link or an image on another site
// cannot sign a user out. GET shows the form (an old bookmark still leads somewhere useful).
HttpResponse Logout(const HttpRequest& req, const std::optional<Principal>& who) {
  if (req.method != "GET" && req.method != "HEAD" && req.method != "POST") {
    return MethodNotAllowed(who, "GET, HEAD, POST");
  }
  if (req.method != "POST") {
    return Html(Page("Sign out", who,
                     "<form method=\"post\" action=\"/ui/logout\"><input type=\"submit\" "
                     "value=\"Sign out\"></form>"));
  }
  if (CrossSite(req)) {
    return HtmlError(403, who,
                     "Sign out from this server's own page: a sign-out sent from another site is "
                     "refused.");
  }
  HttpResponse r = Html("", 303);
  r.headers.emplace_back("Location", "/ui/login");
  r.headers.emplace_back("Set-Cookie", "gpuledger_token=; Path=/; Max-Age=0");
  return r;
}

HttpResponse InvoiceListPage(const HttpRequest& req, Service& svc, const Principal& who) {
  if (who.role == Role::kCsp) return HtmlError(403, who, "CSP accounts see CSP statements only.");
  const base::Period period = CurrentPeriodOr(req.query);
  auto it = req.query.find("q");
  const std::string filter = it == req.query.end() ? "" : it->second;
  auto type_it = req.query.find("type");
  const std::string type = type_it == req.query.end() ? "" : type_it->second;
  return svc.WithEngine([&](settlement::Engine& engine) {
    settlement::DocumentFilter f;
    f.statements = f.programs = false;
    if (who.role == Role::kInstitution) f.institution_id = who.scope_id;
    auto docs = engine.Documents(period, f);
    if (!docs.ok()) return HtmlError(500, who, std::string(docs.status().message()));
    std::string body = absl::StrCat(
        "<form method=\"get\" action=\"/ui/invoices\">Period <input name=\"period\" value=\"",
        H(period.ToString()), "\" size=\"8\"> Institution <input name=\"q\" value=\"", H(filter),
        "\" placeholder=\"id or name\"> Type <select name=\"type\"><option value=\"\">any"
        "</option>");
    for (int t = 1; t <= 7; ++t) {
      const std::string name = v1::InstitutionType_Name(static_cast<v1::InstitutionType>(t));
      absl::StrAppend(&body, "<option", name == type ? " selected" : "", ">", name, "</option>");
    }
    absl::StrAppend(&body, "</select><input type=\"submit\" value=\"Show\"></form>\n<p>Status: <b>",
                    docs->closed() ? "closed (final)" : "open (draft)", "</b>, ledger entries 1..",
                    docs->covered_seq(), "</p>\n",
                    "<table id=\"invoices\"><tr><th>institution</th><th>type</th><th "
                    "class=\"n\">GPU-hours</th><th class=\"n\">list KRW</th><th "
                    "class=\"n\">subsidy KRW</th><th class=\"n\">co-pay KRW</th><th "
                    "class=\"n\">amount due KRW</th></tr>\n");
    int shown = 0;
    for (const auto& inv : docs->invoices()) {
      const std::string t = v1::InstitutionType_Name(inv.institution_type());
      if (!type.empty() && t != type) continue;
      if (!filter.empty() && inv.institution_id().find(filter) == std::string::npos &&
          inv.institution_name().find(filter) == std::string::npos) {
        continue;
      }
      ++shown;
      absl::StrAppend(&body, "<tr><td><a href=\"/ui/invoices/", H(period.ToString()), "/",
                      H(inv.institution_id()), "\">", H(inv.institution_name()), "</a> (",
                      H(inv.institution_id()), ")</td><td>", t, "</td><td class=\"n\">",
                      Hours(inv.totals().gpu_ms()), "</td><td class=\"n\">",
                      Won(inv.totals().list_krw()), "</td><td class=\"n\">",
                      Won(inv.totals().subsidy_krw()), "</td><td class=\"n\">",
                      Won(inv.totals().copay_krw()), "</td><td class=\"n\">",
                      Won(inv.amount_due_krw()), "</td></tr>\n");
    }
    absl::StrAppend(&body, "</table><p>", shown, " invoice(s).</p>");
    return Html(Page(absl::StrCat("Invoices ", period.ToString()), who, body));
  });
}

HttpResponse InvoicePage(Service& svc, const Principal& who, const std::string& period_text,
                         const std::string& institution) {
  auto period = base::ParsePeriod(period_text);
  if (!period.ok()) return HtmlError(400, who, "That is not a period (YYYY-MM).");
  if (!(Staff(who) || (who.role == Role::kInstitution && who.scope_id == institution))) {
    return HtmlError(403, who, "You may not read this institution's invoices.");
  }
  return svc.WithEngine([&](settlement::Engine& engine) {
    settlement::DocumentFilter f;
    f.institution_id = institution;
    f.statements = f.programs = false;
    auto docs = engine.Documents(*period, f);
    if (!docs.ok()) return HtmlError(500, who, std::string(docs.status().message()));
    if (docs->invoices_size() == 0) return HtmlError(404, who, "No invoice for that period.");
    // The printable document itself, with a navigation bar that does not print.
    std::string html = settlement::RenderHtml(*docs);
    const std::string api =
        absl::StrCat("/v1/periods/", period->ToString(), "/invoices/", H(institution));
    absl::StrReplaceAll(
        {{"<body>\n", absl::StrCat("<body>\n<nav style=\"margin-bottom:1em\" class=\"noprint\"><a "
                                   "href=\"/ui/invoices?period=",
                                   period->ToString(), "\">All invoices</a> &middot; <a href=\"",
                                   api, ".json\">JSON</a> &middot; <a href=\"", api,
                                   ".csv\">CSV</a></nav><style>@media print{.noprint{display:none}}"
                                   "</style>\n")}},
        &html);
    return Html(std::move(html));
  });
}

HttpResponse StatementListPage(const HttpRequest& req, Service& svc, const Principal& who) {
  if (who.role == Role::kInstitution) return HtmlError(403, who, "Institutions see invoices only.");
  const base::Period period = CurrentPeriodOr(req.query);
  return svc.WithEngine([&](settlement::Engine& engine) {
    settlement::DocumentFilter f;
    f.invoices = f.programs = false;
    if (who.role == Role::kCsp) f.csp_id = who.scope_id;
    auto docs = engine.Documents(period, f);
    if (!docs.ok()) return HtmlError(500, who, std::string(docs.status().message()));
    std::string body = absl::StrCat(
        "<form method=\"get\" action=\"/ui/statements\">Period <input name=\"period\" value=\"",
        H(period.ToString()), "\" size=\"8\"><input type=\"submit\" value=\"Show\"></form>",
        "<table><tr><th>CSP</th><th class=\"n\">GPU-hours</th><th class=\"n\">subsidy owed "
        "KRW</th><th class=\"n\">own-use share</th><th class=\"n\">cap</th></tr>\n");
    for (const auto& s : docs->statements()) {
      absl::StrAppend(&body, "<tr><td><a href=\"/ui/statements/", H(period.ToString()), "/",
                      H(s.csp_id()), "\">", H(s.csp_id()), "</a></td><td class=\"n\">",
                      Hours(s.totals().gpu_ms()), "</td><td class=\"n\">",
                      Won(s.totals().subsidy_krw()), "</td><td class=\"n\">",
                      Bp(s.own_use_share_bp()), "</td><td class=\"n\">", Bp(s.own_use_cap_bp()),
                      "</td></tr>\n");
    }
    absl::StrAppend(&body, "</table>");
    return Html(Page(absl::StrCat("CSP statements ", period.ToString()), who, body));
  });
}

HttpResponse StatementPage(Service& svc, const Principal& who, const std::string& period_text,
                           const std::string& csp) {
  auto period = base::ParsePeriod(period_text);
  if (!period.ok()) return HtmlError(400, who, "That is not a period (YYYY-MM).");
  if (!(Staff(who) || (who.role == Role::kCsp && who.scope_id == csp))) {
    return HtmlError(403, who, "You may not read this CSP's statements.");
  }
  return svc.WithEngine([&](settlement::Engine& engine) {
    settlement::DocumentFilter f;
    f.csp_id = csp;
    f.invoices = f.programs = false;
    auto docs = engine.Documents(*period, f);
    if (!docs.ok()) return HtmlError(500, who, std::string(docs.status().message()));
    if (docs->statements_size() == 0) return HtmlError(404, who, "No statement for that period.");
    const v1::CspStatement& s = docs->statements(0);
    std::string body = absl::StrCat(
        "<p>Status: <b>", docs->closed() ? "closed (final)" : "open (draft)",
        "</b>. Subsidy owed by the state: <b>", Won(s.totals().subsidy_krw()), " KRW</b> for ",
        Hours(s.totals().gpu_ms()),
        " GPU-hours.</p>\n<h2>GPU-hours per day"
        "</h2>\n",
        DailyChart(engine.DailyUsage(*period, csp)),
        "\n<h2>Own use against the contract cap</h2>\n", OwnUseBars(s),
        s.own_use_excess_gpu_ms() > 0
            ? absl::StrCat("<p class=\"flag\">Over the cap by ", Hours(s.own_use_excess_gpu_ms()),
                           " GPU-hours, worth ", Won(s.own_use_excess_value_krw()), " KRW.</p>")
            : "<p class=\"ok\">Within the cap.</p>",
        "<p>Own use valued at ", Won(s.own_use_value_krw()),
        " KRW at the rates in force when used. ",
        s.own_use_netted_krw() != 0
            ? absl::StrCat("The contract nets the excess: ", Won(s.own_use_netted_krw()),
                           " KRW off the subsidy. ")
            : "",
        "Payable by the state: <b>", Won(s.payable_krw()), " KRW</b>.</p>",
        "\n<h2>The statement</h2>\n");
    std::string doc = settlement::RenderHtml(*docs);
    // Embed the printable document's body.
    const size_t b = doc.find("<body>\n");
    const size_t e = doc.rfind("</body>");
    const size_t st = doc.find("<style>");
    const size_t se = doc.find("</style>");
    if (st != std::string::npos && se != std::string::npos) {
      absl::StrAppend(&body, doc.substr(st, se + 8 - st));
    }
    if (b != std::string::npos && e != std::string::npos) {
      absl::StrAppend(&body, doc.substr(b + 7, e - b - 7));
    }
    return Html(Page(absl::StrCat("Statement ", csp, " ", period->ToString()), who, body));
  });
}

HttpResponse AuditPage(const HttpRequest& req, Service& svc, const Principal& who) {
  if (!(who.role == Role::kOperator || who.role == Role::kAuditor)) {
    return HtmlError(403, who, "The audit view is for auditors and operators.");
  }
  const ledger::Head head = svc.ledger().head();
  const VerifyStatus v = svc.verify_status();
  std::string body = absl::StrCat("<h2>Chain head</h2><p>Entry ", head.seq, ", hash <code>",
                                  ledger::ToHex(head.hash), "</code></p><h2>Verification</h2>");
  if (!v.done) {
    absl::StrAppend(&body, "<p>Running...</p>");
  } else if (!v.error.empty()) {
    absl::StrAppend(&body, "<p class=\"flag\">Could not verify: ", H(v.error), "</p>");
  } else if (v.report.ok) {
    absl::StrAppend(&body, "<p class=\"ok\">VERIFIED</p><p>", v.report.entries_checked,
                    " entries, ", v.report.checkpoints_verified,
                    " signed checkpoints (key: ", H(v.report.key_source), "), at ",
                    H(base::FormatKst(v.finished_at_ms)), ".</p>");
  } else {
    absl::StrAppend(&body, "<p class=\"flag\">FAILED at entry ", v.report.first_bad_seq, ": ",
                    H(v.report.problem), "</p>");
  }
  absl::StrAppend(&body,
                  "<h2>Latest checkpoints</h2><table><tr><th class=\"n\">seq</th><th>"
                  "chain hash</th><th>time</th></tr>");
  std::vector<v1::Checkpoint> cps;
  (void)svc.ledger().ScanCheckpoints([&](const v1::Checkpoint& cp) {
    cps.push_back(cp);
    return absl::OkStatus();
  });
  for (size_t i = cps.size() > 20 ? cps.size() - 20 : 0; i < cps.size(); ++i) {
    std::string hash_hex;
    ledger::Digest d{};
    if (ledger::FromBytes(cps[i].head_hash(), &d)) hash_hex = ledger::ToHex(d);
    absl::StrAppend(&body, "<tr><td class=\"n\">", cps[i].seq(), "</td><td><code>", hash_hex,
                    "</code></td><td>", H(base::FormatKst(cps[i].time_ms())), "</td></tr>");
  }
  absl::StrAppend(&body, "</table><h2>Rejected events</h2>");
  auto rq = req.query;
  HttpRequest api_req;
  api_req.query = rq;
  if (!api_req.query.contains("limit")) api_req.query["limit"] = "50";
  api_req.path = "/v1/rejected";
  api_req.method = "GET";
  absl::StrAppend(&body,
                  "<form method=\"get\" action=\"/ui/audit\">CSP <input name=\"csp\" value=\"",
                  H(rq["csp"]), "\"> Reason <input name=\"reason\" value=\"", H(rq["reason"]),
                  "\"><input type=\"submit\" value=\"Filter\"></form>");
  api_req.cookie = req.cookie;
  api_req.authorization = req.authorization;
  HttpResponse rejected = Handle(api_req, svc);
  if (rejected.status != 200) {
    absl::StrAppend(&body, "<p class=\"flag\">", H(rejected.body), "</p>");
    return Html(Page("Audit", who, body));
  }
  auto j = nlohmann::json::parse(rejected.body, nullptr, false);
  absl::StrAppend(&body,
                  "<table id=\"rejected\"><tr><th class=\"n\">seq</th><th>source</th>"
                  "<th>event</th><th>reason</th><th>detail</th></tr>");
  int n = 0;
  if (j.is_object() && j["rejected"].is_array()) {
    for (const auto& e : j["rejected"]) {
      ++n;
      absl::StrAppend(&body, "<tr><td class=\"n\">", e.value("seq", uint64_t{0}), "</td><td>",
                      H(e.value("source_id", "")), "</td><td>", H(e.value("event_id", "")),
                      "</td><td>", H(e.value("reason_code", "")), "</td><td>",
                      H(e.value("reason_detail", "")), "</td></tr>");
    }
  }
  absl::StrAppend(&body, "</table><p>", n,
                  " shown (first 50 from the start of the ledger; "
                  "the API pages through all: /v1/rejected).</p>");
  return Html(Page("Audit", who, body));
}

}  // namespace

HttpResponse HandlePage(const HttpRequest& req, Service& svc,
                        const std::optional<Principal>& principal) {
  const std::vector<std::string> seg = absl::StrSplit(req.path, '/', absl::SkipEmpty());
  HttpResponse r;
  if (seg.size() == 2 && seg[1] == "login") {
    r = Login(req, svc);
    r.route = "/ui/login";
    return r;
  }
  if (seg.size() == 2 && seg[1] == "logout") {
    r = Logout(req, principal);
    r.route = "/ui/logout";
    return r;
  }
  if (req.method != "GET" && req.method != "HEAD") return MethodNotAllowed(principal, "GET, HEAD");
  if (!principal) {
    r = HtmlError(401, principal, "Sign in with your access token first.");
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
    r = InvoiceListPage(req, svc, who);
    r.route = "/ui/invoices";
  } else if (seg[1] == "invoices" && seg.size() == 4) {
    r = InvoicePage(svc, who, seg[2], seg[3]);
    r.route = "/ui/invoices/{period}/{institution}";
  } else if (seg[1] == "statements" && seg.size() == 2) {
    r = StatementListPage(req, svc, who);
    r.route = "/ui/statements";
  } else if (seg[1] == "statements" && seg.size() == 4) {
    r = StatementPage(svc, who, seg[2], seg[3]);
    r.route = "/ui/statements/{period}/{csp}";
  } else if (seg[1] == "audit" && seg.size() == 2) {
    r = AuditPage(req, svc, who);
    r.route = "/ui/audit";
  } else {
    r = HtmlError(404, who, "No such page.");
    r.route = "error";
  }
  return r;
}

}  // namespace gpuledger::api
