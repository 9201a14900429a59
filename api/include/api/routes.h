// Request handling, independent of the transport: the server parses HTTP into HttpRequest and
// writes HttpResponse back. Endpoints are described in docs/openapi.yaml.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "api/service.h"
#include "i18n/i18n.h"
#include "ledger/export.h"

namespace gpuledger::api {

struct HttpRequest {
  std::string method;
  std::string path;  // decoded, without the query
  std::map<std::string, std::string> query;
  std::string accept;
  std::string accept_language;
  std::string accept_encoding;
  std::string if_none_match;
  std::string request_id;  // X-Request-Id, as the client sent it
  std::string authorization;
  std::string cookie;
  std::string content_type;
  // For the sign-in form's cross-site check: the Origin, Sec-Fetch-Site and Host headers.
  std::string origin;
  std::string sec_fetch_site;
  std::string host;
  std::string body;
  // The ce-* headers (a CloudEvent in HTTP binary mode): lower-case names without "ce-".
  std::vector<std::pair<std::string, std::string>> cloudevent_headers;
  bool tls = false;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // Set for streamed bodies (the export): the server writes its chunks after the headers.
  std::unique_ptr<ledger::ExportWriter> stream;
  // The route pattern, for metrics ("/v1/periods/{period}/invoices/{institution}").
  std::string route;
  // Who asked (the token's name, never the token), for the access log; "" if no valid token.
  std::string principal;
};

// Splits "a=1&b=x%20y" into decoded pairs; false if a %-escape is malformed.
bool ParseQuery(std::string_view query, std::map<std::string, std::string>* out);
// Decodes %XX, and '+' as a space when `plus_is_space` (a query's form encoding; in a path '+'
// is itself); false if malformed.
bool UrlDecode(std::string_view in, std::string* out, bool plus_is_space = true);

// The format to answer in, among `offered` ("json", "csv", "html": application/json, text/csv,
// text/html), by the Accept header's media ranges and q-values (RFC 9110 section 12.5.1): the
// highest q, the most specific range deciding each format's q, the first offered on a tie; no
// Accept header (or an empty one) takes the first. "" when none is acceptable (406).
std::string ChooseFormat(std::string_view accept, const std::vector<std::string>& offered);

// The language of pages and printed documents for this request: `?lang=ko|en` when valid, else
// the Accept-Language header's choice, Korean by default (i18n::FromAcceptLanguage).
i18n::Lang LanguageOf(const HttpRequest& request);

// Handles one request. Never throws; errors are problem details (HTML for pages).
HttpResponse Handle(const HttpRequest& request, Service& service);

// The `type` of every problem is this prefix and its code: "tag:gpuledger,2026:problem/not_found".
inline constexpr char kProblemTypePrefix[] = "tag:gpuledger,2026:problem/";

// An error as RFC 9457 problem details (application/problem+json): {"type", "title", "status",
// "detail", "code"}; `code` (an extension member) is the problem type's last segment, for
// clients that switch on it, and `detail` is `message`.
HttpResponse Error(int status, const std::string& code, const std::string& message);

// One ledger entry as the API shows it (GET /v1/ledger/entries/{seq}) and `gpuledger ledger
// show` prints it: its fields, its chain hash, the payload in base64 and decoded to JSON (null
// when it does not decode).
std::string EntryAsJson(const ledger::StoredEntry& entry);

// Pages under /ui (api/src/pages.cc).
HttpResponse HandlePage(const HttpRequest& request, Service& service,
                        const std::optional<Principal>& principal);

}  // namespace gpuledger::api
