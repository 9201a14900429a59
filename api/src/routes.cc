#include "api/routes.h"

#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "api/limits.h"
#include "base/money.h"
#include "base/period.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ledger/hash.h"
#include "settlement/render.h"
#include "settlement/reports.h"

// docs/openapi.yaml, embedded at build time (api/CMakeLists.txt).
extern const unsigned char kOpenApiYaml[];
extern const unsigned long kOpenApiYamlSize;

namespace gpuledger::api {

namespace v1 = gpuledger::v1;
using json = nlohmann::ordered_json;

namespace {

constexpr uint64_t kMaxLimit = 1'000;
constexpr uint64_t kDefaultLimit = 100;
// A rejected-events query reads at most this many entries per request (then pages).
constexpr uint64_t kMaxScan = 200'000;

// The bytes `j` takes in a page (as Json() writes it, near enough: indentation aside).
size_t JsonBytes(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace).size();
}

// A page of a list that stops at `limit` items or kPageBytesMax bytes, whichever comes first,
// and always takes its first item (so that a reader makes progress).
class ListPage {
 public:
  explicit ListPage(uint64_t limit) : limit_(limit) {}
  bool full() const { return items_.size() >= limit_ || bytes_limited_; }
  // Adds `item` unless the page is full or the item would take it past its byte limit.
  bool Add(json item) {
    if (full()) return false;
    const size_t n = JsonBytes(item);
    if (!items_.empty() && bytes_ + n > kPageBytesMax) {
      bytes_limited_ = true;
      return false;
    }
    bytes_ += n;
    items_.push_back(std::move(item));
    return true;
  }
  bool bytes_limited() const { return bytes_limited_; }
  json& items() { return items_; }

 private:
  uint64_t limit_;
  size_t bytes_ = 0;
  bool bytes_limited_ = false;
  json items_ = json::array();
};

HttpResponse Json(const json& j, int status = 200) {
  HttpResponse r;
  r.status = status;
  // Echoed parameters may hold any bytes: invalid UTF-8 is replaced, never thrown on.
  r.body = j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
  return r;
}

HttpResponse Text(std::string body, std::string type, int status = 200) {
  HttpResponse r;
  r.status = status;
  r.content_type = std::move(type);
  r.body = std::move(body);
  return r;
}

// ---- access rules: who may see what ----

bool IsStaff(const Principal& p) {
  return p.role == Role::kOperator || p.role == Role::kFinance || p.role == Role::kAuditor;
}
bool CanSeeInstitution(const Principal& p, const std::string& id) {
  return IsStaff(p) || (p.role == Role::kInstitution && p.scope_id == id);
}
bool CanSeeCsp(const Principal& p, const std::string& id) {
  return IsStaff(p) || (p.role == Role::kCsp && p.scope_id == id);
}
bool CanAudit(const Principal& p) { return p.role == Role::kOperator || p.role == Role::kAuditor; }

HttpResponse Forbidden(const Principal& p, const std::string& what) {
  return Error(403, "forbidden", absl::StrCat("role ", p.RoleString(), " may not read ", what));
}

// ---- parameters ----

struct Params {
  const HttpRequest& req;
  std::string error;

  std::optional<uint64_t> Uint(const std::string& name, uint64_t def, uint64_t min, uint64_t max) {
    auto it = req.query.find(name);
    if (it == req.query.end()) return def;
    uint64_t v = 0;
    if (!absl::SimpleAtoi(it->second, &v) || v < min || v > max) {
      error = absl::StrCat("query parameter '", name, "' must be an integer in [", min, ", ", max,
                           "], not '", it->second.substr(0, 40), "'");
      return std::nullopt;
    }
    return v;
  }
  std::optional<int64_t> Int(const std::string& name, int64_t def) {
    auto it = req.query.find(name);
    if (it == req.query.end()) return def;
    int64_t v = 0;
    if (!absl::SimpleAtoi(it->second, &v)) {
      error = absl::StrCat("query parameter '", name, "' must be an integer (ms since the epoch)");
      return std::nullopt;
    }
    return v;
  }
  std::string Str(const std::string& name) {
    auto it = req.query.find(name);
    return it == req.query.end() ? "" : it->second;
  }
  // One cursor scheme for every list: `limit` (1 to 1,000, default 100) and `cursor`, the
  // `next_cursor` a page of the same list returned (opaque: the list's name and a position,
  // base64url). Sets `limit` and `position` ("" when there is no cursor); false (with `error`)
  // for a malformed limit or a cursor of another list.
  bool Page(std::string_view list, uint64_t* limit, std::string* position) {
    const std::optional<uint64_t> l = Uint("limit", kDefaultLimit, 1, kMaxLimit);
    if (!l) return false;
    *limit = *l;
    position->clear();
    const std::string cursor = Str("cursor");
    if (cursor.empty()) return true;
    std::string decoded;
    const std::string prefix = absl::StrCat(absl::string_view(list.data(), list.size()), ":");
    if (!absl::WebSafeBase64Unescape(cursor, &decoded) || !decoded.starts_with(prefix)) {
      error =
          "query parameter 'cursor' is not a cursor of this list: pass the next_cursor "
          "of the page before, unchanged";
      return false;
    }
    *position = decoded.substr(prefix.size());
    return true;
  }
  // A cursor position that is a number (a seq, an offset).
  bool PageNumber(std::string_view list, uint64_t* limit, std::optional<uint64_t>* position) {
    std::string text;
    if (!Page(list, limit, &text)) return false;
    position->reset();
    if (text.empty()) return true;
    uint64_t v = 0;
    if (!absl::SimpleAtoi(text, &v)) {
      error = "query parameter 'cursor' is damaged: pass the next_cursor of the page before";
      return false;
    }
    *position = v;
    return true;
  }
};

// The next_cursor of a page: null when the list is done.
json NextCursor(std::string_view list, const std::string& position) {
  if (position.empty()) return nullptr;
  return absl::WebSafeBase64Escape(
      absl::StrCat(absl::string_view(list.data(), list.size()), ":", position));
}

HttpResponse BadParam(const std::string& message) { return Error(400, "bad_parameter", message); }

// One document that settlement cannot compute (a sum beyond the won's range, a damaged record of
// its own) is that document's failure, said as such: 422 with the reason, while every other
// document of the period is served as usual. Anything else is the server's own failure.
HttpResponse DocumentFailed(const absl::Status& st) {
  if (st.code() == absl::StatusCode::kFailedPrecondition ||
      st.code() == absl::StatusCode::kOutOfRange) {
    return Error(422, "not_computable", std::string(st.message()));
  }
  return Error(500, "internal", std::string(st.message()));
}

}  // namespace

i18n::Lang LanguageOf(const HttpRequest& req) {
  if (auto it = req.query.find("lang"); it != req.query.end()) {
    if (std::optional<i18n::Lang> lang = i18n::ParseLang(it->second)) return *lang;
  }
  return i18n::FromAcceptLanguage(req.accept_language);
}

namespace {

// "invoice.csv" → ("invoice", "csv"); no known suffix → the Accept header decides.
std::string Negotiate(std::string* last_segment, const HttpRequest& req) {
  for (const char* ext : {"json", "csv", "html"}) {
    const std::string suffix = absl::StrCat(".", ext);
    if (last_segment->size() > suffix.size() && last_segment->ends_with(suffix)) {
      last_segment->resize(last_segment->size() - suffix.size());
      return ext;
    }
  }
  return ChooseFormat(req.accept, {"json", "html", "csv"});
}

// 406: the Accept header refuses every format the endpoint has.
HttpResponse NotAcceptable(const std::vector<std::string>& media) {
  return Error(
      406, "not_acceptable",
      absl::StrCat("the Accept header accepts none of what this endpoint serves: ",
                   absl::StrJoin(media, ", "), " (or name the format: .json, .csv, .html)"));
}

absl::StatusOr<base::Period> PeriodParam(const std::string& text) {
  return base::ParsePeriod(text);
}

// A closed period's document never changes: a client or its own cache may keep it a day (it is
// private: every answer needs a token). Drafts change with every ledger entry: never stored.
constexpr char kFrozenCacheControl[] = "private, max-age=86400";

// Status and coverage headers; for a closed period's document, its ETag and Cache-Control. The
// ETag is per representation (RFC 9110 section 8.8.3): the JSON's is the digest recorded at the
// close (SHA-256 of exactly these bytes), a CSV's or an HTML page's the SHA-256 of its own bytes
// (an HTML page's differs by language, as its Vary says). A list has no digest: no ETag.
void DocumentHeaders(const v1::PeriodDocuments& docs, const std::string& digest_name,
                     const std::string& format, HttpResponse* r) {
  r->headers.emplace_back("X-Gpuledger-Status", docs.closed() ? "closed" : "draft");
  r->headers.emplace_back("X-Gpuledger-Covered-Seq", absl::StrCat(docs.covered_seq()));
  if (!docs.closed() || digest_name.empty()) return;
  for (const auto& d : docs.digests()) {
    if (d.document() != digest_name) continue;
    const std::string tag = format == "json" ? d.sha256() : ledger::ToHex(ledger::Sha256(r->body));
    r->headers.emplace_back("ETag", "\"" + tag + "\"");
    r->headers.emplace_back("Cache-Control", kFrozenCacheControl);
  }
}

// The document `key` from the service's cache of rendered documents, or `render()` (cached if
// 200). Runs inside WithEngine: the cache holds renderings of the engine's current state only.
template <typename F>
HttpResponse CachedDocument(Service& svc, const std::string& key, F render) {
  if (const RenderedDocument* d = svc.FindDocument(key)) {
    HttpResponse r;
    r.content_type = d->content_type;
    r.body = d->body;
    r.headers = d->headers;
    return r;
  }
  HttpResponse r = render();
  if (r.status == 200 && !r.stream) svc.KeepDocument(key, {r.content_type, r.body, r.headers});
  return r;
}

// Cache key of one document: kind, period, id and format ('\n' occurs in none of them).
std::string DocumentKey(const char* kind, base::Period period, const std::string& id,
                        const std::string& format) {
  return absl::StrCat(kind, "\n", period.ToString(), "\n", id, "\n", format);
}

// A CSV as a download: "gpuledger-2026-03-invoice-inst-nari.csv". Ids are the registry's
// (printable ASCII); anything else in a name becomes '_', so the header stays a plain token.
void CsvDownload(const v1::PeriodDocuments& docs, const std::string& what, HttpResponse* r) {
  std::string name = absl::StrCat("gpuledger-", docs.period(), "-", what, ".csv");
  for (char& c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') {
      c = '_';
    }
  }
  r->headers.emplace_back("Content-Disposition",
                          absl::StrCat("attachment; filename=\"", name, "\""));
}

// The period's documents as one CSV (the lists' `.csv`), with a download name.
// `which`: "invoices", "statements" or "programs", as RenderCsv takes it and as the file is named.
// A list has no digest of its own: no ETag.
HttpResponse CsvOfList(const v1::PeriodDocuments& docs, const std::string& which) {
  HttpResponse r = Text(settlement::RenderCsv(docs, which), "text/csv; charset=utf-8");
  DocumentHeaders(docs, /*digest_name=*/"", "csv", &r);
  CsvDownload(docs, which, &r);
  return r;
}

// A list endpoint's format: CSV for "invoices.csv" or an Accept of text/csv without text/html
// (what a browser sends), else JSON. `segment` loses its ".csv" or ".json".
bool ListAsCsv(std::string* segment, const HttpRequest& req) {
  if (segment->ends_with(".csv")) {
    segment->resize(segment->size() - 4);
    return true;
  }
  if (segment->ends_with(".json")) {
    segment->resize(segment->size() - 5);
    return false;
  }
  return ChooseFormat(req.accept, {"json", "csv"}) == "csv";
}

// The cache's name for a rendering: HTML differs by language, JSON and CSV do not.
std::string Variant(const std::string& format, const HttpRequest& req) {
  return format == "html" ? absl::StrCat(format, "-", i18n::Code(LanguageOf(req))) : format;
}

HttpResponse RenderDocs(const v1::PeriodDocuments& docs, const std::string& format, i18n::Lang lang,
                        const std::string& csv_kind, std::string single_json,
                        const std::string& digest_name) {
  HttpResponse r;
  if (format == "csv") {
    r = Text(settlement::RenderCsv(docs, csv_kind), "text/csv; charset=utf-8");
    // "invoice/inst-nari" → "invoice-inst-nari".
    CsvDownload(docs, absl::StrReplaceAll(digest_name, {{"/", "-"}}), &r);
  } else if (format == "html") {
    r = Text(settlement::RenderHtml(docs, lang), "text/html; charset=utf-8");
    r.headers.emplace_back("Content-Language", i18n::Code(lang));
  } else {
    r = Text(std::move(single_json), "application/json");
  }
  DocumentHeaders(docs, digest_name, format, &r);
  return r;
}

json TotalsJson(const v1::Totals& t) {
  return {{"gpu_ms", t.gpu_ms()},
          {"gpu_hours", base::FormatGpuHours(base::GpuMs{t.gpu_ms()})},
          {"list_krw", t.list_krw()},
          {"copay_krw", t.copay_krw()},
          {"subsidy_krw", t.subsidy_krw()}};
}

json EntryJson(const ledger::StoredEntry& e) {
  const auto& le = e.entry;
  json j = {{"seq", e.seq},
            {"hash", ledger::ToHex(e.hash)},
            {"source", v1::Source_Name(le.source())},
            {"source_id", le.source_id()},
            {"event_id", le.event_id()},
            {"outcome", v1::Outcome_Name(le.outcome())},
            {"reason_code", le.reason_code()},
            {"reason_detail", le.reason_detail()},
            {"resolves_seq", le.resolves_seq()},
            {"topic", le.topic()},
            {"partition", le.partition()},
            {"offset", le.offset()},
            {"kafka_timestamp_ms", le.kafka_timestamp_ms()},
            {"recorded_at_ms", le.recorded_at_ms()},
            {"producer_id", le.producer_id()},
            {"producer_seq", le.producer_seq()},
            {"payload_base64", absl::Base64Escape(le.payload())}};
  // A CloudEvent's headers, as consumed (values as text; invalid UTF-8 is replaced when printed).
  if (le.headers_size() > 0) {
    json headers = json::array();
    for (const v1::KafkaHeader& h : le.headers())
      headers.push_back({{"key", h.key()}, {"value", h.value()}});
    j["headers"] = std::move(headers);
  }
  // The payload decoded, when it decodes (rejected entries may be malformed bytes).
  std::string decoded;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  bool ok = false;
  if (le.source() == v1::SOURCE_USAGE) {
    v1::UsageEvent u;
    ok = u.ParseFromString(ledger::EventBytes(le)) &&
         google::protobuf::util::MessageToJsonString(u, &decoded, opts).ok();
  } else if (le.source() == v1::SOURCE_REGISTRY) {
    v1::RegistryEvent r;
    ok = r.ParseFromString(ledger::EventBytes(le)) &&
         google::protobuf::util::MessageToJsonString(r, &decoded, opts).ok();
  }
  j["payload"] = ok ? json::parse(decoded, nullptr, false) : json(nullptr);
  return j;
}

}  // namespace

std::string EntryAsJson(const ledger::StoredEntry& e) {
  return EntryJson(e).dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

namespace {

// ---- handlers ----

HttpResponse Periods(Service& svc) {
  return svc.WithEngine([&](settlement::Engine& engine) {
    json closes = json::array();
    for (const auto& c : engine.Closes()) {
      json digests = json::array();
      for (const auto& [doc, sha] : c.digests)
        digests.push_back({{"document", doc}, {"sha256", sha}});
      closes.push_back({{"period", c.period.ToString()},
                        {"close_seq", c.close_seq},
                        {"covered_seq", c.covered_seq},
                        {"closed_at_ms", c.closed_at_ms},
                        {"digests", digests}});
    }
    const auto last = engine.last_closed();
    return Json({{"format", "gpuledger.closes/1"},
                 {"applied_through", engine.applied_through()},
                 {"last_closed", last ? last->ToString() : ""},
                 {"first_open", last ? last->Next().ToString() : ""},
                 {"closes", closes}});
  });
}

HttpResponse PeriodStatus(Service& svc, base::Period period) {
  return svc.WithEngine([&](settlement::Engine& engine) {
    settlement::DocumentFilter none;
    none.invoices = none.statements = none.programs = false;
    auto docs = engine.Documents(period, none);
    if (!docs.ok()) return Error(500, "internal", std::string(docs.status().message()));
    json digests = json::array();
    for (const auto& d : docs->digests()) {
      digests.push_back({{"document", d.document()}, {"sha256", d.sha256()}});
    }
    return Json({{"period", period.ToString()},
                 {"status", docs->closed() ? "closed" : "open"},
                 {"covered_seq", docs->covered_seq()},
                 {"close_seq", docs->close_seq()},
                 {"closed_at_ms", docs->closed_at_ms()},
                 {"digests", digests}});
  });
}

// A period list's page: items [offset, offset + limit) of the list (invoices before those that
// owe nothing), and the cursor after them. A closed period's lists never change; a draft's may
// between pages.
struct ListSlice {
  uint64_t offset = 0;
  uint64_t limit = kDefaultLimit;
  bool Takes(uint64_t index) const { return index >= offset && index - offset < limit; }
  json Next(std::string_view list, uint64_t total) const {
    return offset + limit < total ? NextCursor(list, absl::StrCat(offset + limit)) : json(nullptr);
  }
};

std::optional<ListSlice> SliceOf(Params& q, std::string_view list) {
  ListSlice s;
  std::optional<uint64_t> at;
  if (!q.PageNumber(list, &s.limit, &at)) return std::nullopt;
  s.offset = at.value_or(0);
  return s;
}

HttpResponse InvoiceList(Service& svc, const Principal& p, base::Period period, bool csv,
                         Params& q) {
  if (p.role == Role::kCsp) return Forbidden(p, "invoices");
  const std::optional<ListSlice> slice = SliceOf(q, "invoices");
  if (!slice) return BadParam(q.error);
  return svc.WithEngine([&](settlement::Engine& engine) {
    settlement::DocumentFilter f;
    f.statements = f.programs = false;
    if (p.role == Role::kInstitution) f.institution_id = p.scope_id;
    auto docs = engine.Documents(period, f);
    if (!docs.ok()) return Error(500, "internal", std::string(docs.status().message()));
    if (csv) return CsvOfList(*docs, "invoices");
    json list = json::array();
    auto item = [](const v1::Invoice& inv) {
      json numbers = json::array();
      for (const auto& b : inv.bills()) numbers.push_back(b.number());
      return json{{"institution_id", inv.institution_id()},
                  {"institution_name", inv.institution_name()},
                  {"institution_type", v1::InstitutionType_Name(inv.institution_type())},
                  {"lines", inv.lines_size()},
                  {"adjustments", inv.adjustments_size()},
                  {"totals", TotalsJson(inv.totals())},
                  {"vat_krw", inv.vat_krw()},
                  {"amount_due_krw", inv.amount_due_krw()},
                  {"numbers", numbers}};
    };
    uint64_t index = 0;
    for (const auto& inv : docs->invoices()) {
      if (slice->Takes(index++)) list.push_back(item(inv));
    }
    json nothing_owed = json::array();
    for (const auto& inv : docs->nothing_owed()) {
      if (slice->Takes(index++)) nothing_owed.push_back(item(inv));
    }
    return Json({{"period", period.ToString()},
                 {"status", docs->closed() ? "closed" : "draft"},
                 {"covered_seq", docs->covered_seq()},
                 {"invoices", list},
                 {"nothing_owed", nothing_owed},
                 {"next_cursor", slice->Next("invoices", index)}});
  });
}

HttpResponse OneInvoice(Service& svc, const Principal& p, base::Period period,
                        std::string institution, const HttpRequest& req) {
  const std::string format = Negotiate(&institution, req);
  if (format.empty()) return NotAcceptable({"application/json", "text/csv", "text/html"});
  if (!CanSeeInstitution(p, institution)) {
    return Forbidden(p, absl::StrCat("the invoices of ", institution));
  }
  return svc.WithEngine([&](settlement::Engine& engine) {
    return CachedDocument(
        svc, DocumentKey("invoice", period, institution, Variant(format, req)), [&] {
          settlement::DocumentFilter f;
          f.institution_id = institution;
          f.statements = f.programs = false;
          auto docs = engine.Documents(period, f);
          if (!docs.ok()) return DocumentFailed(docs.status());
          // An institution that owes nothing gets its usage statement (no bills, digest
          // usage/<institution>): its usage is there, but no invoice is issued.
          if (docs->invoices_size() == 0 && docs->nothing_owed_size() == 0) {
            return Error(404, "not_found",
                         absl::StrCat("no usage and no invoice for ", institution, " in ",
                                      period.ToString()));
          }
          const bool issued = docs->invoices_size() > 0;
          return RenderDocs(
              *docs, format, LanguageOf(req), "invoices",
              settlement::InvoiceJson(issued ? docs->invoices(0) : docs->nothing_owed(0)),
              absl::StrCat(issued ? "invoice/" : "usage/", institution));
        });
  });
}

// The period's bills as electronic tax invoice data (settlement::EtaxJson): for the operator's
// and auditors' finance staff, of closed periods (the close numbers the bills).
HttpResponse Etax(Service& svc, const Principal& p, base::Period period) {
  if (!IsStaff(p)) return Forbidden(p, "the tax invoice export");
  return svc.WithEngine([&](settlement::Engine& engine) {
    settlement::DocumentFilter f;
    f.statements = f.programs = false;
    auto docs = engine.Documents(period, f);
    if (!docs.ok()) return DocumentFailed(docs.status());
    if (!docs->closed()) {
      return Error(409, "period_open",
                   absl::StrCat(period.ToString(),
                                " is open: tax invoice data are exported for closed periods only "
                                "(the close assigns the invoice numbers and dates)"));
    }
    HttpResponse r = Text(settlement::EtaxJson(*docs), "application/json");
    r.headers.emplace_back(
        "Content-Disposition",
        absl::StrCat("attachment; filename=\"gpuledger-etax-", period.ToString(), ".json\""));
    return r;
  });
}

std::string QueryParam(const HttpRequest& req, const char* name) {
  auto it = req.query.find(name);
  return it == req.query.end() ? std::string() : it->second;
}

// Usage over a range (settlement::Engine::Usage, docs/REPORTS.md): staff may narrow it to an
// institution or a CSP; an institution sees only its own usage, a CSP only its own usage and
// pools.
HttpResponse UsageReport(Service& svc, const Principal& p, const HttpRequest& req, bool csv) {
  auto q = settlement::ParseUsageQuery(QueryParam(req, "from"), QueryParam(req, "to"),
                                       QueryParam(req, "granularity"), QueryParam(req, "group_by"));
  if (!q.ok()) return BadParam(std::string(q.status().message()));
  const std::string institution = QueryParam(req, "institution");
  const std::string csp = QueryParam(req, "csp");
  if (p.role == Role::kInstitution) {
    if (!csp.empty() || (!institution.empty() && institution != p.scope_id)) {
      return Forbidden(p, "another institution's or a CSP's usage");
    }
    q->institution_id = p.scope_id;
  } else if (p.role == Role::kCsp) {
    if (!institution.empty() || (!csp.empty() && csp != p.scope_id)) {
      return Forbidden(p, "another CSP's or an institution's usage");
    }
    q->csp_id = p.scope_id;
  } else {
    if (!institution.empty()) q->institution_id = institution;
    if (!csp.empty()) q->csp_id = csp;
  }
  const std::string table = QueryParam(req, "table");
  if (!table.empty() && table != "rows" && table != "capacity") {
    return BadParam("query parameter 'table' must be rows or capacity");
  }
  return svc.WithEngine([&](settlement::Engine& engine) {
    auto report = engine.Usage(*q);
    if (!report.ok()) return DocumentFailed(report.status());
    if (!csv) return Text(settlement::UsageReportJson(*report), "application/json");
    HttpResponse r = Text(settlement::UsageReportCsv(*report, table.empty() ? "rows" : table),
                          "text/csv; charset=utf-8");
    r.headers.emplace_back(
        "Content-Disposition",
        absl::StrCat("attachment; filename=\"gpuledger-usage-", settlement::FormatDay(q->from_day),
                     "-", settlement::FormatDay(q->to_day), ".csv\""));
    return r;
  });
}

// The year's budgets (settlement::Engine::Budgets): for the operator's, finance and audit staff.
HttpResponse BudgetReport(Service& svc, const Principal& p, Params& q, bool csv) {
  if (!IsStaff(p)) return Forbidden(p, "budgets");
  auto year = q.Uint("year", 0, 1970, 9999);
  if (!year) return BadParam(q.error);
  if (*year == 0) return BadParam("query parameter 'year' is required (e.g. year=2026)");
  std::optional<int> program;
  if (const std::string name = QueryParam(q.req, "program"); !name.empty()) {
    v1::Program prog;
    if (!v1::Program_Parse(name, &prog) || prog == v1::PROGRAM_UNSPECIFIED) {
      return BadParam(
          "query parameter 'program' must be GOV_ADVANCED, LEASE_HPC or LEASE_RESEARCH");
    }
    program = prog;
  }
  return svc.WithEngine([&](settlement::Engine& engine) {
    auto report = engine.Budgets(static_cast<uint32_t>(*year), program);
    if (!report.ok()) return DocumentFailed(report.status());
    if (!csv) return Text(settlement::BudgetReportJson(*report), "application/json");
    HttpResponse r = Text(settlement::BudgetReportCsv(*report), "text/csv; charset=utf-8");
    r.headers.emplace_back(
        "Content-Disposition",
        absl::StrCat("attachment; filename=\"gpuledger-budget-", *year, ".csv\""));
    return r;
  });
}

HttpResponse StatementList(Service& svc, const Principal& p, base::Period period, bool csv,
                           Params& q) {
  if (p.role == Role::kInstitution) return Forbidden(p, "CSP statements");
  const std::optional<ListSlice> slice = SliceOf(q, "statements");
  if (!slice) return BadParam(q.error);
  return svc.WithEngine([&](settlement::Engine& engine) {
    settlement::DocumentFilter f;
    f.invoices = f.programs = false;
    if (p.role == Role::kCsp) f.csp_id = p.scope_id;
    auto docs = engine.Documents(period, f);
    if (!docs.ok()) return Error(500, "internal", std::string(docs.status().message()));
    if (csv) return CsvOfList(*docs, "statements");
    json list = json::array();
    uint64_t index = 0;
    for (const auto& s : docs->statements()) {
      if (!slice->Takes(index++)) continue;
      bool over = false;
      for (const auto& c : s.capacity()) over = over || c.oversubscribed();
      list.push_back({{"csp_id", s.csp_id()},
                      {"totals", TotalsJson(s.totals())},
                      {"subsidy_owed_krw", s.totals().subsidy_krw()},
                      {"payable_krw", s.payable_krw()},
                      {"own_use_share_bp", s.own_use_share_bp()},
                      {"own_use_cap_bp", s.own_use_cap_bp()},
                      {"own_use_excess_value_krw", s.own_use_excess_value_krw()},
                      {"oversubscribed", over}});
    }
    return Json({{"period", period.ToString()},
                 {"status", docs->closed() ? "closed" : "draft"},
                 {"covered_seq", docs->covered_seq()},
                 {"statements", list},
                 {"next_cursor", slice->Next("statements", index)}});
  });
}

HttpResponse OneStatement(Service& svc, const Principal& p, base::Period period, std::string csp,
                          const HttpRequest& req) {
  const std::string format = Negotiate(&csp, req);
  if (format.empty()) return NotAcceptable({"application/json", "text/csv", "text/html"});
  if (!CanSeeCsp(p, csp)) return Forbidden(p, absl::StrCat("the statements of ", csp));
  return svc.WithEngine([&](settlement::Engine& engine) {
    return CachedDocument(svc, DocumentKey("statement", period, csp, Variant(format, req)), [&] {
      settlement::DocumentFilter f;
      f.csp_id = csp;
      f.invoices = f.programs = false;
      auto docs = engine.Documents(period, f);
      if (!docs.ok()) return DocumentFailed(docs.status());
      if (docs->statements_size() == 0) {
        return Error(404, "not_found",
                     absl::StrCat("no statement for ", csp, " in ", period.ToString()));
      }
      return RenderDocs(*docs, format, LanguageOf(req), "statements",
                        settlement::StatementJson(docs->statements(0)),
                        absl::StrCat("statement/", csp));
    });
  });
}

HttpResponse OneProgram(Service& svc, const Principal& p, base::Period period, std::string program,
                        const HttpRequest& req) {
  const std::string format = Negotiate(&program, req);
  if (format.empty()) return NotAcceptable({"application/json", "text/csv", "text/html"});
  if (!IsStaff(p)) return Forbidden(p, "programme summaries");
  v1::Program prog;
  if (!v1::Program_Parse(absl::AsciiStrToUpper(program), &prog) ||
      prog == v1::PROGRAM_UNSPECIFIED) {
    return BadParam(absl::StrCat("unknown programme '", program.substr(0, 40),
                                 "': GOV_ADVANCED, LEASE_HPC or LEASE_RESEARCH"));
  }
  return svc.WithEngine([&](settlement::Engine& engine) {
    return CachedDocument(
        svc, DocumentKey("program", period, v1::Program_Name(prog), Variant(format, req)), [&] {
          settlement::DocumentFilter f;
          f.invoices = f.statements = false;
          auto docs = engine.Documents(period, f);
          if (!docs.ok()) return Error(500, "internal", std::string(docs.status().message()));
          auto* list = docs->mutable_programs();
          list->erase(
              std::remove_if(list->begin(), list->end(),
                             [&](const v1::ProgramSummary& s) { return s.program() != prog; }),
              list->end());
          if (docs->programs_size() == 0) {
            return Error(
                404, "not_found",
                absl::StrCat("no summary for ", v1::Program_Name(prog), " in ", period.ToString()));
          }
          return RenderDocs(*docs, format, LanguageOf(req), "programs",
                            settlement::ProgramJson(docs->programs(0)),
                            absl::StrCat("program/", v1::Program_Name(prog)));
        });
  });
}

HttpResponse ProgramList(Service& svc, const Principal& p, base::Period period, bool csv,
                         Params& q) {
  if (!IsStaff(p)) return Forbidden(p, "programme summaries");
  const std::optional<ListSlice> slice = SliceOf(q, "programs");
  if (!slice) return BadParam(q.error);
  return svc.WithEngine([&](settlement::Engine& engine) {
    settlement::DocumentFilter f;
    f.invoices = f.statements = false;
    auto docs = engine.Documents(period, f);
    if (!docs.ok()) return Error(500, "internal", std::string(docs.status().message()));
    if (csv) return CsvOfList(*docs, "programs");
    json list = json::array();
    uint64_t index = 0;
    for (const auto& s : docs->programs()) {
      if (!slice->Takes(index++)) continue;
      list.push_back({{"program", v1::Program_Name(s.program())},
                      {"totals", TotalsJson(s.totals())},
                      {"capacity_gpu_ms", s.capacity_gpu_ms()},
                      {"usage_gpu_ms", s.usage_gpu_ms()},
                      {"utilisation_bp", s.utilisation_bp()},
                      {"adjustments", s.adjustments_size()},
                      {"reservation_difference_krw", s.reservation_difference_krw()}});
    }
    return Json({{"period", period.ToString()},
                 {"status", docs->closed() ? "closed" : "draft"},
                 {"covered_seq", docs->covered_seq()},
                 {"programs", list},
                 {"next_cursor", slice->Next("programs", index)}});
  });
}

HttpResponse Head(Service& svc, const Principal& p) {
  const ledger::Head h = svc.ledger().head();
  const auto counters = svc.ledger().Counters();
  std::string counters_json;
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(counters, &counters_json, opts);
  json j = {{"seq", h.seq},
            {"hash", ledger::ToHex(h.hash)},
            {"checkpoint_interval", svc.ledger().checkpoint_interval()},
            {"settled_through", svc.settled_through()}};
  // Ledger-wide counts (every CSP's rejections) are for operators and auditors.
  if (CanAudit(p)) j["counters"] = json::parse(counters_json, nullptr, false);
  return Json(j);
}

HttpResponse Entries(Service& svc, const Principal& p, Params& q) {
  if (!CanAudit(p) && p.role != Role::kCsp) return Forbidden(p, "ledger entries");
  const uint64_t head = svc.ledger().head().seq;
  auto from = q.Uint("from", 1, 1, UINT64_MAX);  // before cursors: where to start
  uint64_t limit_n = 0;
  std::optional<uint64_t> at;
  if (!from || !q.PageNumber("entries", &limit_n, &at)) return BadParam(q.error);
  if (at) from = *at;
  auto limit = std::optional<uint64_t>(limit_n);
  ListPage page(*limit);
  uint64_t next = 0;
  uint64_t scanned = 0;
  absl::Status st =
      svc.ledger().Scan(*from, [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
        if (e.seq > head) return false;
        if (page.full() || ++scanned > kMaxScan) {
          next = e.seq;
          return false;
        }
        if (p.role == Role::kCsp && e.entry.source_id() != p.scope_id) return true;
        if (!page.Add(EntryJson(e))) {
          next = e.seq;
          return false;
        }
        return true;
      });
  if (!st.ok()) return Error(500, "internal", std::string(st.message()));
  return Json({{"head", head},
               {"entries", std::move(page.items())},
               {"next_from", next},
               {"next_cursor", NextCursor("entries", next ? absl::StrCat(next) : "")},
               {"bytes_limited", page.bytes_limited()}});
}

HttpResponse OneEntry(Service& svc, const Principal& p, const std::string& seq_text) {
  uint64_t seq = 0;
  if (!absl::SimpleAtoi(seq_text, &seq) || seq == 0) {
    return BadParam(absl::StrCat("'", seq_text.substr(0, 40), "' is not a sequence number"));
  }
  if (!CanAudit(p) && p.role != Role::kCsp) return Forbidden(p, "ledger entries");
  if (seq > svc.ledger().head().seq) {
    return Error(404, "not_found",
                 absl::StrCat("no entry ", seq, " (head is ", svc.ledger().head().seq, ")"));
  }
  auto e = svc.ledger().Get(seq);
  if (!e.ok()) return Error(500, "internal", std::string(e.status().message()));
  if (p.role == Role::kCsp && e->entry.source_id() != p.scope_id) {
    return Forbidden(p, "another source's entries");
  }
  return Json(EntryJson(*e));
}

HttpResponse EventLookup(Service& svc, const Principal& p, const std::string& source,
                         const std::string& event_id) {
  if (!CanAudit(p) && !(p.role == Role::kCsp && p.scope_id == source)) {
    return Forbidden(p, absl::StrCat("the events of ", source));
  }
  auto rec = svc.ledger().LookupEvent(source, event_id);
  if (!rec.ok()) return Error(500, "internal", std::string(rec.status().message()));
  if (!rec->has_value()) {
    return Error(404, "not_found", absl::StrCat("no event ", event_id, " of ", source));
  }
  auto e = svc.ledger().Get((*rec)->seq);
  if (!e.ok()) return Error(500, "internal", std::string(e.status().message()));
  return Json(EntryJson(*e));
}

HttpResponse Rejected(Service& svc, const Principal& p, Params& q) {
  if (!CanAudit(p) && p.role != Role::kCsp) return Forbidden(p, "rejected events");
  std::string csp = q.Str("csp");
  if (p.role == Role::kCsp) {
    if (!csp.empty() && csp != p.scope_id) return Forbidden(p, "another CSP's feed");
    csp = p.scope_id;
  }
  const std::string reason = q.Str("reason");
  auto after = q.Uint("after_seq", 0, 0, UINT64_MAX - 1);  // before cursors
  uint64_t limit_n = 0;
  std::optional<uint64_t> at;
  if (!after || !q.PageNumber("rejected", &limit_n, &at)) return BadParam(q.error);
  if (at) after = *at;
  auto limit = std::optional<uint64_t>(limit_n);
  auto from_ms = q.Int("from_ms", INT64_MIN);
  auto to_ms = q.Int("to_ms", INT64_MAX);
  if (!from_ms || !to_ms) return BadParam(q.error);
  if (*from_ms > *to_ms) return BadParam("from_ms is after to_ms");
  const uint64_t head = svc.ledger().head().seq;
  ListPage page(*limit);
  uint64_t next = 0;
  uint64_t scanned = 0;
  absl::Status st =
      svc.ledger().Scan(*after + 1, [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
        if (e.seq > head) return false;
        if (page.full() || ++scanned > kMaxScan) {
          next = e.seq - 1;
          return false;
        }
        const auto& le = e.entry;
        if (le.outcome() != v1::REJECTED) return true;
        if (!csp.empty() && le.source_id() != csp) return true;
        if (!reason.empty() && le.reason_code() != reason) return true;
        if (le.kafka_timestamp_ms() < *from_ms || le.kafka_timestamp_ms() > *to_ms) return true;
        if (!page.Add({{"seq", e.seq},
                       {"source_id", le.source_id()},
                       {"event_id", le.event_id()},
                       {"reason_code", le.reason_code()},
                       {"reason_detail", le.reason_detail()},
                       {"kafka_timestamp_ms", le.kafka_timestamp_ms()},
                       {"topic", le.topic()},
                       {"partition", le.partition()},
                       {"offset", le.offset()}})) {
          next = e.seq - 1;
          return false;
        }
        return true;
      });
  if (!st.ok()) return Error(500, "internal", std::string(st.message()));
  // next_after_seq: pass it as after_seq to read on (0: nothing more up to the head).
  return Json({{"head", head},
               {"rejected", std::move(page.items())},
               {"next_after_seq", next},
               {"next_cursor", NextCursor("rejected", next ? absl::StrCat(next) : "")},
               {"bytes_limited", page.bytes_limited()}});
}

HttpResponse Gaps(Service& svc, const Principal& p, Params& q) {
  if (!CanAudit(p) && p.role != Role::kCsp) return Forbidden(p, "producer gaps");
  std::string csp = q.Str("csp");
  if (p.role == Role::kCsp) csp = p.scope_id;
  uint64_t limit = 0;
  std::string after;  // "<csp>\n<producer>" of the last producer listed
  if (!q.Page("gaps", &limit, &after)) return BadParam(q.error);
  ListPage page(limit);
  std::string last, next;
  absl::Status st =
      svc.ledger().ScanProducers([&](const std::string& source, const std::string& producer,
                                     const ledger::ProducerProgress& progress) {
        if (!csp.empty() && source != csp) return absl::OkStatus();
        const std::string key = absl::StrCat(source, "\n", producer);
        if (!after.empty() && key <= after) return absl::OkStatus();
        if (page.full()) {
          if (next.empty()) next = last;
          return absl::OkStatus();
        }
        json missing = json::array();
        for (const auto& [first, last] : progress.Missing()) {
          if (missing.size() >= 1'000) break;
          missing.push_back({{"first", first}, {"last", last}});
        }
        if (page.Add({{"csp_id", source},
                      {"producer_id", producer},
                      {"contiguous", progress.contiguous()},
                      {"highest", progress.highest()},
                      {"missing_count", progress.MissingCount()},
                      {"missing", missing},
                      {"overflowed", progress.overflowed()}})) {
          last = key;
        } else if (next.empty()) {
          next = last;
        }
        return absl::OkStatus();
      });
  if (!st.ok()) return Error(500, "internal", std::string(st.message()));
  return Json({{"producers", std::move(page.items())},
               {"next_cursor", NextCursor("gaps", next)},
               {"bytes_limited", page.bytes_limited()}});
}

HttpResponse Checkpoints(Service& svc, const Principal& p, Params& q) {
  if (!CanAudit(p)) return Forbidden(p, "checkpoints");
  auto from = q.Uint("from_seq", 0, 0, UINT64_MAX);  // before cursors
  uint64_t limit = 0;
  std::optional<uint64_t> at;  // the seq of the first checkpoint to list
  if (!from || !q.PageNumber("checkpoints", &limit, &at)) return BadParam(q.error);
  if (at) from = *at;
  ListPage page(limit);
  uint64_t next = 0;
  absl::Status st = svc.ledger().ScanCheckpoints([&](const v1::Checkpoint& cp) {
    if (cp.seq() < *from || next != 0) return absl::OkStatus();
    std::string text;
    google::protobuf::util::JsonPrintOptions opts;
    opts.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(cp, &text, opts);
    if (page.full() || !page.Add(json::parse(text, nullptr, false))) next = cp.seq();
    return absl::OkStatus();
  });
  if (!st.ok()) return Error(500, "internal", std::string(st.message()));
  return Json({{"checkpoints", std::move(page.items())},
               {"next_cursor", NextCursor("checkpoints", next ? absl::StrCat(next) : "")},
               {"bytes_limited", page.bytes_limited()}});
}

// Who read which invoice (the server's record, ServerOptions::invoice_read_log), oldest first:
// lines after `after` (a line number), those whose path names `period` and `institution` when
// given. Operators and auditors.
HttpResponse InvoiceReads(Service& svc, const Principal& p, Params& q) {
  if (!CanAudit(p)) return Forbidden(p, "the record of invoice reads");
  const std::string period = q.Str("period");
  const std::string institution = q.Str("institution");
  auto after = q.Uint("after", 0, 0, UINT64_MAX - 1);
  uint64_t limit_n = 0;
  std::optional<uint64_t> at;
  if (!after || !q.PageNumber("invoice-reads", &limit_n, &at)) return BadParam(q.error);
  if (at) after = *at;
  auto limit = std::optional<uint64_t>(limit_n);
  const std::string& path = svc.options().invoice_read_log;
  if (path.empty()) {
    return Error(404, "not_found",
                 "this server keeps no record of invoice reads (serve --invoice-read-log off)");
  }
  ListPage page(*limit);
  uint64_t line_no = 0, next = 0;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (++line_no <= *after) continue;
    if (page.full()) {
      next = line_no - 1;
      break;
    }
    json j = json::parse(line, nullptr, false);
    if (!j.is_object()) continue;  // a line cut by a crash mid-write
    const std::string read_path = j.value("path", "");
    if (!period.empty() && read_path.find("/" + period) == std::string::npos) continue;
    if (!institution.empty() && read_path.find("/" + institution) == std::string::npos) continue;
    j["line"] = line_no;
    if (!page.Add(std::move(j))) {
      next = line_no - 1;
      break;
    }
  }
  // next_after: pass it as `after` to read on (0: nothing more now).
  return Json({{"reads", std::move(page.items())},
               {"next_after", next},
               {"next_cursor", NextCursor("invoice-reads", next ? absl::StrCat(next) : "")},
               {"bytes_limited", page.bytes_limited()}});
}

HttpResponse Export(Service& svc, const Principal& p, Params& q) {
  if (!CanAudit(p)) return Forbidden(p, "the ledger export");
  auto from = q.Uint("from_seq", 1, 1, UINT64_MAX);
  auto to = q.Uint("to_seq", 0, 0, UINT64_MAX);
  if (!from || !to) return BadParam(q.error);
  ledger::ExportOptions eo;
  eo.from_seq = *from;
  eo.to_seq = *to;
  auto writer = ledger::ExportWriter::Start(svc.ledger(), eo);
  if (!writer.ok()) return BadParam(std::string(writer.status().message()));
  HttpResponse r;
  r.content_type = "application/octet-stream";
  r.headers.emplace_back("Content-Disposition", "attachment; filename=\"ledger.export\"");
  r.stream = *std::move(writer);
  return r;
}

}  // namespace

namespace {

// The title of each problem type: short, the same for every occurrence (RFC 9457 section 3.1.3);
// `detail` says what happened this time.
std::string ProblemTitle(const std::string& code) {
  static const std::map<std::string, std::string> kTitles = {
      {"bad_parameter", "A query or path parameter is not valid"},
      {"bad_request", "The request is not valid HTTP or URL text"},
      {"bad_events", "The events cannot be read"},
      {"body_too_large", "The request body is too large"},
      {"busy", "The server is at its connection limit"},
      {"forbidden", "This token's role may not do this"},
      {"headers_too_large", "The request headers are too large"},
      {"ingest_over_http_off", "This server does not take events over HTTP"},
      {"internal", "The server failed"},
      {"method_not_allowed", "This method is not allowed here"},
      {"not_computable", "This document cannot be computed"},
      {"not_found", "Not found"},
      {"not_acceptable", "None of the formats this endpoint serves is acceptable"},
      {"period_open", "The period is not closed"},
      {"rate_limited", "Too many requests"},
      {"response_too_large", "The answer would be too large"},
      {"unauthorized", "A valid bearer token is required"},
  };
  const auto it = kTitles.find(code);
  return it == kTitles.end() ? code : it->second;
}

}  // namespace

HttpResponse Error(int status, const std::string& code, const std::string& message) {
  HttpResponse r = Json({{"type", absl::StrCat(kProblemTypePrefix, code)},
                         {"title", ProblemTitle(code)},
                         {"status", status},
                         {"detail", message},
                         {"code", code}},
                        status);
  r.content_type = "application/problem+json";
  r.route = "error";
  return r;
}

bool UrlDecode(std::string_view in, std::string* out, bool plus_is_space) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%') {
      if (i + 2 >= in.size() || !absl::ascii_isxdigit(in[i + 1]) ||
          !absl::ascii_isxdigit(in[i + 2])) {
        return false;
      }
      int v = 0;
      for (int k = 1; k <= 2; ++k) {
        const char c = absl::ascii_tolower(in[i + k]);
        v = v * 16 + (absl::ascii_isdigit(c) ? c - '0' : c - 'a' + 10);
      }
      out->push_back(static_cast<char>(v));
      i += 2;
    } else if (in[i] == '+' && plus_is_space) {
      out->push_back(' ');
    } else {
      out->push_back(in[i]);
    }
  }
  return true;
}

std::string ChooseFormat(std::string_view accept, const std::vector<std::string>& offered) {
  auto media = [](const std::string& f) -> std::string {
    return f == "csv" ? "text/csv" : f == "html" ? "text/html" : "application/json";
  };
  if (absl::StripAsciiWhitespace(absl::string_view(accept.data(), accept.size())).empty()) {
    return offered.empty() ? "" : offered.front();
  }
  struct Range {
    std::string type, subtype;
    double q = 1;
  };
  std::vector<Range> ranges;
  for (absl::string_view part :
       absl::StrSplit(absl::string_view(accept.data(), accept.size()), ',')) {
    std::vector<absl::string_view> params = absl::StrSplit(part, ';');
    const std::string range = absl::AsciiStrToLower(absl::StripAsciiWhitespace(params[0]));
    const size_t slash = range.find('/');
    if (slash == std::string::npos) continue;  // not a media range: ignored
    Range r{range.substr(0, slash), range.substr(slash + 1)};
    for (size_t i = 1; i < params.size(); ++i) {
      const std::string p = absl::AsciiStrToLower(absl::StripAsciiWhitespace(params[i]));
      double q = 0;
      if (p.starts_with("q=") && absl::SimpleAtod(p.substr(2), &q) && q >= 0 && q <= 1) r.q = q;
    }
    ranges.push_back(std::move(r));
  }
  std::string best;
  double best_q = 0;
  for (const std::string& f : offered) {
    const std::string m = media(f);
    const std::string type = m.substr(0, m.find('/')), subtype = m.substr(m.find('/') + 1);
    int specificity = -1;
    double q = 0;
    for (const Range& r : ranges) {
      int s = -1;
      if (r.type == type && r.subtype == subtype) {
        s = 2;
      } else if (r.type == type && r.subtype == "*") {
        s = 1;
      } else if (r.type == "*" && r.subtype == "*") {
        s = 0;
      }
      if (s > specificity) {
        specificity = s;
        q = r.q;
      }
    }
    if (specificity >= 0 && q > best_q) {
      best = f;
      best_q = q;
    }
  }
  return best;
}

bool ParseQuery(std::string_view query, std::map<std::string, std::string>* out) {
  for (const std::string& part :
       std::vector<std::string>(absl::StrSplit(std::string(query), '&', absl::SkipEmpty()))) {
    const size_t eq = part.find('=');
    std::string k, v;
    if (!UrlDecode(part.substr(0, eq), &k)) return false;
    if (eq != std::string::npos && !UrlDecode(part.substr(eq + 1), &v)) return false;
    (*out)[k] = v;
  }
  return true;
}

std::optional<std::string> TokenOf(const HttpRequest& req) {
  // The scheme is case-insensitive (RFC 9110 section 11.1).
  if (absl::StartsWithIgnoreCase(req.authorization, "bearer ")) {
    return req.authorization.substr(7);
  }
  for (const std::string& part : std::vector<std::string>(absl::StrSplit(req.cookie, ';'))) {
    const std::string c(absl::StripAsciiWhitespace(part));
    if (c.starts_with("gpuledger_token=")) return c.substr(16);
  }
  return std::nullopt;
}

namespace {
HttpResponse Unbounded(const HttpRequest& req, Service& svc, std::string* principal_name);
}  // namespace

// Every answer that is built whole in memory is bounded in bytes: pages stop at kPageBytesMax,
// the export streams, and anything else beyond the service's response_bytes_max is refused with
// what to ask for instead.
HttpResponse Handle(const HttpRequest& req, Service& svc) {
  std::string principal;
  HttpResponse r = Unbounded(req, svc, &principal);
  r.principal = principal;
  const size_t max = svc.options().response_bytes_max;
  if (r.stream || r.body.size() <= max) return r;
  const std::string route = r.route;
  r = Error(422, "response_too_large",
            absl::StrCat("this answer would be ", r.body.size(),
                         " bytes, above this server's "
                         "limit of ",
                         max,
                         " bytes for one response (serve "
                         "--max-response-bytes). Ask for less: one document rather than a "
                         "list, JSON or CSV rather than HTML, or a page (limit=); or write the "
                         "documents to files with `gpuledger settle` beside the settlement "
                         "store"));
  r.principal = principal;
  r.route = route.empty() ? "error" : route;
  return r;
}

namespace {
HttpResponse Unbounded(const HttpRequest& req, Service& svc, std::string* principal_name) {
  const std::vector<std::string> seg = absl::StrSplit(req.path, '/', absl::SkipEmpty());
  if ((req.path == "/healthz" || req.path == "/readyz") && req.method != "GET" &&
      req.method != "HEAD") {
    HttpResponse r = Error(405, "method_not_allowed", "use GET");
    r.headers.emplace_back("Allow", "GET, HEAD");
    r.route = req.path;
    return r;
  }
  if (req.path == "/healthz") {
    HttpResponse r = Json({{"status", "ok"}});
    r.route = "/healthz";
    return r;
  }
  if (req.path == "/readyz") {
    HttpResponse r = svc.ready() ? Json({{"status", "ready"},
                                         {"ledger_head", svc.ledger().head().seq},
                                         {"settled_through", svc.settled_through()}})
                                 : Json({{"status", "starting"}}, 503);
    r.route = "/readyz";
    return r;
  }
  if (req.path == "/v1/openapi.yaml" && (req.method == "GET" || req.method == "HEAD")) {
    // The description of this API, public like the health probes: what a client generator or a
    // CSP's developer reads first.
    HttpResponse r =
        Text(std::string(reinterpret_cast<const char*>(kOpenApiYaml), kOpenApiYamlSize),
             "application/yaml");
    r.route = "/v1/openapi.yaml";
    return r;
  }
  std::optional<Principal> principal;
  if (auto token = TokenOf(req)) principal = svc.tokens().Authenticate(*token);
  if (principal)
    *principal_name = principal->name.empty() ? principal->RoleString() : principal->name;
  if (!seg.empty() && seg[0] == "ui") return HandlePage(req, svc, principal);
  if (req.path == "/") {
    HttpResponse r = Text("", "text/plain", 302);
    r.headers.emplace_back("Location", "/ui/invoices");
    r.route = "/";
    return r;
  }
  if (req.method != "GET" && req.method != "HEAD") {
    HttpResponse r = Error(405, "method_not_allowed", "the API is read-only: use GET");
    r.headers.emplace_back("Allow", "GET, HEAD");
    return r;
  }
  if (!principal) {
    HttpResponse r = Error(401, "unauthorized",
                           "a valid bearer token is required (Authorization: Bearer <token>)");
    r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"gpuledger\"");
    return r;
  }
  const Principal& p = *principal;
  Params q{req, ""};
  if (req.path == "/metrics") return Error(500, "internal", "metrics are served by the server");
  if (seg.size() < 2 || seg[0] != "v1") {
    return Error(404, "not_found", absl::StrCat("no such endpoint: ", req.path.substr(0, 100)));
  }
  HttpResponse r;
  auto period_of = [&](const std::string& text, base::Period* out) -> bool {
    auto period = PeriodParam(text);
    if (!period.ok()) {
      r = BadParam(absl::StrCat("'", text.substr(0, 20), "' is not a period: use YYYY-MM"));
      return false;
    }
    *out = *period;
    return true;
  };
  base::Period period;
  // A list's last segment without its ".csv" or ".json", and whether it goes out as CSV.
  std::string list = seg.size() == 4 ? seg[3] : std::string();
  const bool list_csv = ListAsCsv(&list, req);
  if (seg[1] == "periods") {
    if (seg.size() == 2) {
      r = Periods(svc);
      r.route = "/v1/periods";
    } else if (!period_of(seg[2], &period)) {
      return r;
    } else if (seg.size() == 3) {
      r = PeriodStatus(svc, period);
      r.route = "/v1/periods/{period}";
    } else if (seg.size() == 4 && list == "invoices") {
      r = InvoiceList(svc, p, period, list_csv, q);
      r.route = "/v1/periods/{period}/invoices";
    } else if (seg.size() == 5 && seg[3] == "invoices") {
      r = OneInvoice(svc, p, period, seg[4], req);
      r.route = "/v1/periods/{period}/invoices/{institution}";
    } else if (seg.size() == 4 && seg[3] == "etax") {
      r = Etax(svc, p, period);
      r.route = "/v1/periods/{period}/etax";
    } else if (seg.size() == 4 && list == "statements") {
      r = StatementList(svc, p, period, list_csv, q);
      r.route = "/v1/periods/{period}/statements";
    } else if (seg.size() == 4 && list == "programs") {
      r = ProgramList(svc, p, period, list_csv, q);
      r.route = "/v1/periods/{period}/programs";
    } else if (seg.size() == 5 && seg[3] == "statements") {
      r = OneStatement(svc, p, period, seg[4], req);
      r.route = "/v1/periods/{period}/statements/{csp}";
    } else if (seg.size() == 5 && seg[3] == "programs") {
      r = OneProgram(svc, p, period, seg[4], req);
      r.route = "/v1/periods/{period}/programs/{program}";
    } else {
      return Error(404, "not_found", absl::StrCat("no such endpoint: ", req.path.substr(0, 100)));
    }
  } else if (seg[1] == "reports" && seg.size() == 3) {
    std::string which = seg[2];
    const bool csv = ListAsCsv(&which, req);
    if (which == "usage") {
      r = UsageReport(svc, p, req, csv);
      r.route = "/v1/reports/usage";
    } else if (which == "budget") {
      r = BudgetReport(svc, p, q, csv);
      r.route = "/v1/reports/budget";
    } else {
      return Error(404, "not_found", absl::StrCat("no such endpoint: ", req.path.substr(0, 100)));
    }
  } else if (seg[1] == "ledger" && seg.size() == 3 && seg[2] == "head") {
    r = Head(svc, p);
    r.route = "/v1/ledger/head";
  } else if (seg[1] == "ledger" && seg.size() == 3 && seg[2] == "entries") {
    r = Entries(svc, p, q);
    r.route = "/v1/ledger/entries";
  } else if (seg[1] == "ledger" && seg.size() == 4 && seg[2] == "entries") {
    r = OneEntry(svc, p, seg[3]);
    r.route = "/v1/ledger/entries/{seq}";
  } else if (seg[1] == "ledger" && seg.size() == 5 && seg[2] == "events") {
    r = EventLookup(svc, p, seg[3], seg[4]);
    r.route = "/v1/ledger/events/{source}/{event_id}";
  } else if (seg[1] == "ledger" && seg.size() == 3 && seg[2] == "export") {
    r = Export(svc, p, q);
    r.route = "/v1/ledger/export";
  } else if (seg[1] == "audit" && seg.size() == 3 && seg[2] == "invoice-reads") {
    r = InvoiceReads(svc, p, q);
    r.route = "/v1/audit/invoice-reads";
  } else if (seg[1] == "rejected" && seg.size() == 2) {
    r = Rejected(svc, p, q);
    r.route = "/v1/rejected";
  } else if (seg[1] == "gaps" && seg.size() == 2) {
    r = Gaps(svc, p, q);
    r.route = "/v1/gaps";
  } else if (seg[1] == "checkpoints" && seg.size() == 2) {
    r = Checkpoints(svc, p, q);
    r.route = "/v1/checkpoints";
  } else if (seg[1] == "public-key" && seg.size() == 2) {
    const std::string pem = svc.ledger().public_key_pem();
    r = pem.empty() ? Error(404, "not_found", "the ledger is unsigned: no public key")
                    : Text(pem, "application/x-pem-file");
    r.route = "/v1/public-key";
  } else {
    return Error(404, "not_found", absl::StrCat("no such endpoint: ", req.path.substr(0, 100)));
  }
  if (r.status >= 400 && r.route.empty()) r.route = "error";
  return r;
}
}  // namespace

}  // namespace gpuledger::api
