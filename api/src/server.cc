#include "api/server.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <boost/asio.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "access_log.h"
#include "api/limits.h"
#include "api/rate_limiter.h"
#include "api/routes.h"
#include "events.h"
#include "ingest/process_metrics.h"

namespace gpuledger::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;

namespace {

struct Metrics {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Family<prometheus::Counter>& events =
      prometheus::BuildCounter()
          .Name("gpuledger_http_events_total")
          .Help(
              "Usage events received over HTTP (POST /v1/events), by outcome: taken "
              "(acknowledged by the broker), refused (not a usage event of the token's CSP), "
              "failed (not acknowledged: the sender retries)")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& requests =
      prometheus::BuildCounter()
          .Name("gpuledger_http_requests_total")
          .Help("HTTP requests by route pattern and status code")
          .Register(*registry);
  prometheus::Family<prometheus::Histogram>& latency =
      prometheus::BuildHistogram()
          .Name("gpuledger_http_request_seconds")
          .Help("Time to build a response (without sending it)")
          .Register(*registry);
  prometheus::Gauge& connections = prometheus::BuildGauge()
                                       .Name("gpuledger_http_connections")
                                       .Help("Open connections")
                                       .Register(*registry)
                                       .Add({});
  prometheus::Counter& refused = prometheus::BuildCounter()
                                     .Name("gpuledger_http_connections_refused_total")
                                     .Help("Connections refused at the connection limit")
                                     .Register(*registry)
                                     .Add({});
  prometheus::Counter& idle_closed =
      prometheus::BuildCounter()
          .Name("gpuledger_http_idle_connections_closed_total")
          .Help("Idle keep-alive connections closed to make room for a new connection")
          .Register(*registry)
          .Add({});
  prometheus::Counter& accept_errors =
      prometheus::BuildCounter()
          .Name("gpuledger_http_accept_errors_total")
          .Help("accept() failures (e.g. out of file descriptors), each followed by a back-off")
          .Register(*registry)
          .Add({});
  prometheus::Counter& rate_limited = prometheus::BuildCounter()
                                          .Name("gpuledger_http_rate_limited_total")
                                          .Help("Requests refused with 429 at the rate limit")
                                          .Register(*registry)
                                          .Add({});
  prometheus::Family<prometheus::Gauge>& ledger = prometheus::BuildGauge()
                                                      .Name("gpuledger_serve_ledger_seq")
                                                      .Help("Ledger head and settled entry seen")
                                                      .Register(*registry);

  void Observe(const std::string& route, int status, double seconds) {
    const std::string& name = route.empty() ? kOtherRoute : route;
    prometheus::Counter* counter = nullptr;
    prometheus::Histogram* histogram = nullptr;
    {
      // The series of a route and status, made once: Family::Add builds and hashes the labels
      // under the family's lock (4% of serving an invoice, docs/BENCHMARKS.md).
      std::lock_guard<std::mutex> lock(series_mu_);
      auto [it, added] = series_.try_emplace(name);
      RouteSeries& s = it->second;
      if (added) {
        s.latency = &latency.Add(
            {{"route", name}}, prometheus::Histogram::BucketBoundaries{
                                   0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1});
      }
      auto [c, new_code] = s.requests.try_emplace(status, nullptr);
      if (new_code) {
        c->second = &requests.Add({{"route", name}, {"code", std::to_string(status)}});
      }
      counter = c->second;
      histogram = s.latency;
    }
    counter->Increment();
    histogram->Observe(seconds);
  }

 private:
  static inline const std::string kOtherRoute = "other";
  struct RouteSeries {
    prometheus::Histogram* latency = nullptr;
    absl::flat_hash_map<int, prometheus::Counter*> requests;
  };
  std::mutex series_mu_;
  absl::flat_hash_map<std::string, RouteSeries> series_;
};

// The open connections, by client address, and which of them are idle keep-alives (between
// requests), so that the accept loop can admit a connection by closing an idle one instead of
// refusing it. Shared by the accept loop and every session, on any thread: guarded by mu_.
class Connections {
 public:
  // One session's socket, so that another thread can close it (on the session's strand).
  struct Handle {
    std::mutex mu;
    beast::tcp_stream* stream = nullptr;  // null before the session starts and once it ends
    bool idle = false;                    // waiting for the next request on a keep-alive
    asio::any_io_executor executor;       // the session's strand
  };
  enum class Admission { kAdmitted, kAddressFull, kServerFull };

  explicit Connections(Metrics& metrics) : metrics_(metrics) {}

  // Counts a new connection from `address` in, closing the longest-idle keep-alive (of that
  // address when the address is at its cap) if that makes room.
  Admission Admit(const std::string& address, const ServerOptions& o,
                  std::shared_ptr<Handle> handle, uint64_t* id) {
    std::lock_guard<std::mutex> lock(mu_);
    if (Count(address) >= o.max_connections_per_address && !CloseIdleLocked(&address)) {
      return Admission::kAddressFull;
    }
    if (entries_.size() >= o.max_connections && !CloseIdleLocked(nullptr)) {
      return Admission::kServerFull;
    }
    *id = ++next_id_;
    entries_[*id] = Entry{address, 0, std::move(handle)};
    ++per_address_[address];
    return Admission::kAdmitted;
  }
  // A session waits for its next request: it may be closed to make room. False if it was
  // closed for that already (the session ends).
  bool GoIdle(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it == entries_.end()) return false;
    it->second.idle_since = ++idle_clock_;
    std::lock_guard<std::mutex> hl(it->second.handle->mu);
    it->second.handle->idle = true;
    return true;
  }
  void GoActive(uint64_t id, Handle& handle) {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = entries_.find(id); it != entries_.end()) it->second.idle_since = 0;
    std::lock_guard<std::mutex> hl(handle.mu);
    handle.idle = false;
  }
  void Remove(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(id);
    if (it != entries_.end()) EraseLocked(it);
  }
  // Closes the longest-idle keep-alive of any address, if there is one.
  bool CloseOneIdle() {
    std::lock_guard<std::mutex> lock(mu_);
    return CloseIdleLocked(nullptr);
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return entries_.size();
  }

 private:
  struct Entry {
    std::string address;
    uint64_t idle_since = 0;  // 0: serving (or reading) a request; else the order it went idle
    std::shared_ptr<Handle> handle;
  };

  size_t Count(const std::string& address) const {
    auto it = per_address_.find(address);
    return it == per_address_.end() ? 0 : it->second;
  }
  void EraseLocked(std::map<uint64_t, Entry>::iterator it) {
    auto a = per_address_.find(it->second.address);
    if (a != per_address_.end() && --a->second == 0) per_address_.erase(a);
    entries_.erase(it);
  }
  // Uncounts the longest-idle connection (of `address`, if given) and closes it on its strand;
  // if it has meanwhile started a request, it finishes that and then closes (GoIdle fails).
  bool CloseIdleLocked(const std::string* address) {
    auto oldest = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      const Entry& e = it->second;
      if (e.idle_since == 0 || (address != nullptr && e.address != *address)) continue;
      if (oldest == entries_.end() || e.idle_since < oldest->second.idle_since) oldest = it;
    }
    if (oldest == entries_.end()) return false;
    std::shared_ptr<Handle> handle = oldest->second.handle;
    EraseLocked(oldest);
    metrics_.idle_closed.Increment();
    asio::post(handle->executor, [handle] {
      std::lock_guard<std::mutex> hl(handle->mu);
      if (handle->stream == nullptr || !handle->idle) return;
      beast::error_code ec;
      handle->stream->socket().shutdown(tcp::socket::shutdown_both, ec);
      handle->stream->cancel();
    });
    return true;
  }

  Metrics& metrics_;
  std::mutex mu_;
  std::map<uint64_t, Entry> entries_;
  std::unordered_map<std::string, size_t> per_address_;
  uint64_t next_id_ = 0;
  uint64_t idle_clock_ = 0;
};

struct Shared {
  const ServerOptions& options;
  Service& service;
  std::atomic<bool>& stop;
  Metrics metrics;
  Connections connections{metrics};
  std::atomic<size_t> refusing{0};  // connections being answered 503 (kRefusingConnectionsMax)
  RateLimiter limiter{options.rate_limit_per_s, options.rate_burst};
  std::unique_ptr<LineLog> access{};         // null: no access log
  std::unique_ptr<LineLog> invoice_reads{};  // null: no record
  std::atomic<uint64_t> next_request{1};
  std::string request_prefix{};  // per process: request ids are <prefix>-<n>
};

// A session's place in Connections, for as long as it runs.
struct Slot {
  Connections& connections;
  uint64_t id;
  std::shared_ptr<Connections::Handle> handle;
};

// Pages and answers are never framed, load nothing from elsewhere and run no script (the pages
// have none); only their inline styles and the SVG charts within them.
constexpr char kContentSecurityPolicy[] =
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'";
// TLS 1.2 suites: forward secret (ECDHE) and AEAD only: no static RSA key exchange, no CBC
// (nor SHA-1 MACs). TLS 1.3 suites are all AEAD and forward secret already.
constexpr char kTls12Ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr char kHsts[] = "max-age=31536000";

// A request's body as a std::string, like Beast's string_body, but appended to as it arrives
// instead of resized (zero-filled) first and copied over: the zero-filling was a tenth of what
// reading a batch of events cost (ops/bench/gateway.sh). Only read: responses are string_body.
struct RequestBody {
  using value_type = std::string;
  static std::uint64_t size(const value_type& body) { return body.size(); }
  class reader {
   public:
    template <bool isRequest, class Fields>
    reader(http::header<isRequest, Fields>&, value_type& body) : body_(body) {}
    void init(const boost::optional<std::uint64_t>& length, beast::error_code& ec) {
      if (length) {
        if (*length > body_.max_size()) {
          ec = http::error::buffer_overflow;
          return;
        }
        body_.reserve(static_cast<size_t>(*length));  // within the parser's body limit
      }
      ec = {};
    }
    template <class ConstBufferSequence>
    std::size_t put(const ConstBufferSequence& buffers, beast::error_code& ec) {
      std::size_t n = 0;
      for (const auto b : beast::buffers_range_ref(buffers)) {
        if (b.size() > body_.max_size() - body_.size()) {
          ec = http::error::buffer_overflow;
          return n;
        }
        body_.append(static_cast<const char*>(b.data()), b.size());
        n += b.size();
      }
      ec = {};
      return n;
    }
    void finish(beast::error_code& ec) { ec = {}; }

   private:
    value_type& body_;
  };
};

using RequestParser = http::request_parser<RequestBody>;

constexpr std::uint64_t kReadChunk = 64 * 1024;  // the most one read of a body asks for
constexpr size_t kIdleBuffer = 8 * 1024;         // what a connection keeps between requests

// Before the header: the larger body limit, since the target is not known yet (Beast refuses
// a Content-Length beyond the limit as soon as the header is read).
void SetLimits(const ServerOptions& options, RequestParser* parser) {
  parser->header_limit(static_cast<std::uint32_t>(options.max_header_bytes));
  parser->body_limit(std::max(options.max_body_bytes, options.max_events_body_bytes));
}

bool IsEventsTarget(std::string_view target) {
  return target == "/v1/events" || target.starts_with("/v1/events?");
}

// Once the header is read: the body limit of its target. Returns the error for a declared body
// beyond it (what Beast would say), or nullopt.
std::optional<beast::error_code> SetBodyLimit(const ServerOptions& options, RequestParser* parser,
                                              bool* events) {
  const auto target = parser->get().target();
  *events = IsEventsTarget(std::string_view(target.data(), target.size()));
  const size_t limit = *events ? options.max_events_body_bytes : options.max_body_bytes;
  if (parser->content_length() && *parser->content_length() > limit) {
    return beast::error_code(http::error::body_limit);
  }
  parser->body_limit(limit);
  return std::nullopt;
}

// POST /v1/events: answered once the broker has settled every event of the request, awaited
// without holding a thread (the producer's thread resumes this coroutine on its executor).
awaitable<HttpResponse> PublishEvents(const HttpRequest& request, Shared& shared) {
  EventsOptions options;
  options.enabled = shared.options.event_producer != nullptr;
  options.topics = shared.options.topics;
  options.max_events = shared.options.max_events_per_request;
  EventsCall call = PrepareEvents(request, shared.service, options);
  if (call.answer) {
    call.answer->principal = call.principal;
    co_return *std::move(call.answer);
  }
  std::vector<ingest::Delivery> deliveries;
  if (!call.to_send.empty()) {
    ingest::EventProducer* producer = shared.options.event_producer;
    deliveries =
        co_await asio::async_initiate<decltype(use_awaitable), void(std::vector<ingest::Delivery>)>(
            [producer, &call](auto handler) {
              auto h = std::make_shared<decltype(handler)>(std::move(handler));
              producer->Produce(call.topic, call.to_send, [h](std::vector<ingest::Delivery> d) {
                auto executor = asio::get_associated_executor(*h);
                asio::post(executor, [h, d = std::move(d)]() mutable { (*h)(std::move(d)); });
              });
            },
            use_awaitable);
  }
  // Counted once a request (a series' lookup per event was a measurable part of the gateway).
  double taken = 0, failed = 0, refused = 0;
  for (const ingest::Delivery& d : deliveries) (d.status.ok() ? taken : failed) += 1;
  for (const ingest::GatewayEvent& e : call.events) refused += e.reason.empty() ? 0 : 1;
  for (const auto& [outcome, n] :
       {std::pair<const char*, double>{"taken", taken}, {"failed", failed}, {"refused", refused}}) {
    if (n > 0) shared.metrics.events.Add({{"outcome", outcome}}).Increment(n);
  }
  HttpResponse answer = AnswerEvents(call, deliveries);
  answer.principal = call.principal;
  co_return answer;
}

HttpResponse BadTarget() {
  return Error(400, "bad_request", "the request target is not valid URL text");
}

// Probes are never limited: a monitor must see a busy server as alive.
bool RateLimited(const HttpRequest& req, const std::string& client, Shared& shared,
                 HttpResponse* res) {
  if (!shared.limiter.enabled() || req.path == "/healthz" || req.path == "/readyz") return false;
  int retry_after_s = 1;
  if (shared.limiter.Admit(client, std::chrono::steady_clock::now(), &retry_after_s)) return false;
  *res = Error(429, "rate_limited",
               absl::StrCat("more than ", shared.options.rate_limit_per_s,
                            " requests a second (after a burst of ", shared.options.rate_burst,
                            ") from ", client, "; retry after ", retry_after_s, " s"));
  res->headers.emplace_back("Retry-After", absl::StrCat(retry_after_s));
  res->route = "rate_limited";
  shared.metrics.rate_limited.Increment();
  return true;
}

// The body is moved out of `req` (a batch of events is tens of kilobytes; the rest of `req` is
// still read after).
HttpRequest ToRequest(http::request<RequestBody>& req, bool tls, bool* ok) {
  HttpRequest r;
  r.method = std::string(req.method_string());
  const std::string target(req.target());
  const size_t q = target.find('?');
  *ok = UrlDecode(target.substr(0, q), &r.path, /*plus_is_space=*/false) &&
        (q == std::string::npos || ParseQuery(std::string_view(target).substr(q + 1), &r.query));
  r.accept = std::string(req[http::field::accept]);
  r.accept_language = std::string(req[http::field::accept_language]);
  r.accept_encoding = std::string(req[http::field::accept_encoding]);
  r.if_none_match = std::string(req[http::field::if_none_match]);
  r.request_id = std::string(req["X-Request-Id"]);
  r.authorization = std::string(req[http::field::authorization]);
  r.cookie = std::string(req[http::field::cookie]);
  r.content_type = std::string(req[http::field::content_type]);
  r.origin = std::string(req[http::field::origin]);
  r.sec_fetch_site = std::string(req["Sec-Fetch-Site"]);
  r.host = std::string(req[http::field::host]);
  r.body = std::move(req.body());
  for (const auto& field : req) {
    const std::string name(field.name_string());
    if (name.size() > 3 && absl::StartsWithIgnoreCase(name, "ce-")) {
      r.cloudevent_headers.emplace_back(absl::AsciiStrToLower(name.substr(3)),
                                        std::string(field.value()));
    }
  }
  r.tls = tls;
  return r;
}

HttpResponse Dispatch(const HttpRequest& req, Shared& shared) {
  if (req.path == "/metrics") {
    if (req.method != "GET" && req.method != "HEAD") {
      HttpResponse r = Error(405, "method_not_allowed", "use GET");
      r.headers.emplace_back("Allow", "GET, HEAD");
      r.route = "/metrics";
      return r;
    }
    std::optional<Principal> who;
    if (absl::StartsWithIgnoreCase(req.authorization, "bearer ")) {
      who = shared.service.tokens().Authenticate(req.authorization.substr(7));
    }
    if (!who) {
      HttpResponse r = Error(401, "unauthorized", "a valid bearer token is required");
      r.route = "/metrics";
      return r;
    }
    if (who->role != Role::kOperator && who->role != Role::kAuditor) {
      HttpResponse r = Error(403, "forbidden", "metrics are for operators and auditors");
      r.route = "/metrics";
      return r;
    }
    shared.metrics.ledger.Add({{"what", "head"}})
        .Set(static_cast<double>(shared.service.ledger().head().seq));
    shared.metrics.ledger.Add({{"what", "settled"}})
        .Set(static_cast<double>(shared.service.settled_through()));
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4";
    std::vector<prometheus::MetricFamily> families = shared.metrics.registry->Collect();
    for (prometheus::MetricFamily& f : ingest::ProcessCollector().Collect()) {
      families.push_back(std::move(f));
    }
    r.body = prometheus::TextSerializer().Serialize(families);
    r.route = "/metrics";
    return r;
  }
  try {
    return Handle(req, shared.service);
  } catch (const std::exception& e) {
    spdlog::error("request {} failed: {}", req.path.substr(0, 200), e.what());
    return Error(500, "internal", "the request failed; see the server log");
  }
}

// The value of header `name` in `res`, or "".
std::string HeaderOf(const HttpResponse& res, std::string_view name) {
  for (const auto& [k, v] : res.headers) {
    if (absl::EqualsIgnoreCase(k, absl::string_view(name.data(), name.size()))) return v;
  }
  return "";
}

void SetHeader(HttpResponse* res, const std::string& name, std::string value) {
  for (auto& [k, v] : res->headers) {
    if (absl::EqualsIgnoreCase(k, name)) {
      v = std::move(value);
      return;
    }
  }
  res->headers.emplace_back(name, std::move(value));
}

// If-None-Match against an answer's ETag, by the weak comparison (RFC 9110 section 13.1.2).
bool NoneMatchFails(const std::string& if_none_match, const std::string& etag) {
  if (if_none_match.empty() || etag.empty()) return false;
  auto opaque = [](absl::string_view t) {
    t = absl::StripAsciiWhitespace(t);
    if (absl::StartsWith(t, "W/")) t.remove_prefix(2);
    return std::string(t);
  };
  const std::string mine = opaque(etag);
  for (absl::string_view candidate : absl::StrSplit(if_none_match, ',')) {
    const std::string c = opaque(candidate);
    if (c == "*" || c == mine) return true;
  }
  return false;
}

// Whether Accept-Encoding takes gzip (q > 0).
bool AcceptsGzip(const std::string& accept_encoding) {
  for (absl::string_view part : absl::StrSplit(accept_encoding, ',')) {
    std::vector<absl::string_view> params = absl::StrSplit(part, ';');
    const std::string coding = absl::AsciiStrToLower(absl::StripAsciiWhitespace(params[0]));
    if (coding != "gzip" && coding != "x-gzip") continue;
    double q = 1;
    for (size_t i = 1; i < params.size(); ++i) {
      const std::string p = absl::AsciiStrToLower(absl::StripAsciiWhitespace(params[i]));
      if (p.starts_with("q=") && !absl::SimpleAtod(p.substr(2), &q)) q = 0;
    }
    return q > 0;
  }
  return false;
}

// gzip of `in` (zlib's deflate with a gzip wrapper), or nullopt if zlib fails.
std::optional<std::string> Gzip(const std::string& in) {
  z_stream z{};
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    return std::nullopt;
  }
  std::string out(deflateBound(&z, in.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) return std::nullopt;
  return out;
}

// What HTTP adds to an answer built by the routes: 304 for a GET whose If-None-Match names the
// answer's ETag, and gzip when the client takes it (bodies of 1 KiB or more, text and JSON;
// the ETag then becomes weak: the bytes differ, the content does not).
void Conditional(const HttpRequest& req, HttpResponse* res) {
  if (res->stream || res->status != 200 || (req.method != "GET" && req.method != "HEAD")) return;
  if (NoneMatchFails(req.if_none_match, HeaderOf(*res, "ETag"))) {
    res->status = 304;
    res->body.clear();
    return;
  }
  constexpr size_t kGzipMinBytes = 1024;
  const std::string& type = res->content_type;
  const bool text = type.starts_with("text/") || type.starts_with("application/json") ||
                    type.starts_with("application/problem+json") ||
                    type.starts_with("application/yaml") || type.starts_with("image/svg+xml");
  if (!text || res->body.size() < kGzipMinBytes || !AcceptsGzip(req.accept_encoding)) return;
  std::optional<std::string> gz = Gzip(res->body);
  if (!gz) return;
  res->body = *std::move(gz);
  res->headers.emplace_back("Content-Encoding", "gzip");
  if (std::string etag = HeaderOf(*res, "ETag"); !etag.empty() && !etag.starts_with("W/")) {
    SetHeader(res, "ETag", "W/" + etag);
  }
}

// The client's X-Request-Id when it is a plain token of at most 64 characters, else a new one.
std::string RequestId(const HttpRequest& req, Shared& shared) {
  const std::string& given = req.request_id;
  if (!given.empty() && given.size() <= 64 && std::all_of(given.begin(), given.end(), [](char c) {
        return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ||
               c == '.' || c == ':';
      })) {
    return given;
  }
  return absl::StrCat(shared.request_prefix, "-", shared.next_request.fetch_add(1));
}

bool IsInvoiceRead(const std::string& route) {
  return route.find("/invoices") != std::string::npos || route.ends_with("/etax");
}

// One access-log line, and for an invoice read the auditors' record too (access_log.h); the
// path is %-decoded, without the query.
void LogAccess(const HttpRequest& req, const HttpResponse& res, const std::string& id,
               const std::string& client, double secs, Shared& shared) {
  const bool read = shared.invoice_reads != nullptr && IsInvoiceRead(res.route) &&
                    (res.status == 200 || res.status == 304);
  if (shared.access == nullptr && !read) return;
  const std::string line = AccessLine({.at = std::chrono::system_clock::now(),
                                       .id = id,
                                       .client = client,
                                       .principal = res.principal,
                                       .method = req.method,
                                       .path = req.path,
                                       .route = res.route,
                                       .status = res.status,
                                       .bytes = res.body.size(),
                                       .micros = std::llround(secs * 1e6)});
  if (shared.access != nullptr) shared.access->Append(line);
  if (read) shared.invoice_reads->Append(line);
}

// The headers every answer has, streamed or not, to GET or HEAD alike.
template <typename Message>
void SetHeaders(const HttpResponse& res, bool tls, Message* m) {
  m->set(http::field::server, "gpuledger");
  m->set(http::field::content_type, res.content_type);
  m->set(http::field::cache_control, "no-store");
  // Every answer may differ by format, language and encoding asked for (and /ui by cookie, which
  // is private to each client anyway).
  m->set(http::field::vary, "Accept, Accept-Encoding, Accept-Language");
  m->set("X-Content-Type-Options", "nosniff");
  m->set("X-Frame-Options", "DENY");
  m->set("Content-Security-Policy", kContentSecurityPolicy);
  if (tls) m->set(http::field::strict_transport_security, kHsts);
  for (const auto& [k, v] : res.headers) m->set(k, v);
}

// A streamed body (the export): chunked to HTTP/1.1, close-delimited to HTTP/1.0 (which knows
// no chunks). Returns whether the connection may carry another request.
template <typename Stream>
awaitable<bool> WriteStreamed(Stream& stream, Shared& shared, HttpResponse& res, bool keep_alive,
                              unsigned version, bool head, bool tls) {
  auto& lowest = beast::get_lowest_layer(stream);
  const bool chunked = version >= 11;
  http::response<http::empty_body> hdr{http::int_to_status(res.status), version};
  SetHeaders(res, tls, &hdr);
  if (chunked) hdr.chunked(true);
  hdr.keep_alive(keep_alive && chunked);
  http::response_serializer<http::empty_body> sr{hdr};
  lowest.expires_after(std::chrono::seconds(shared.options.write_timeout_s));
  co_await http::async_write_header(stream, sr, use_awaitable);
  if (head) co_return keep_alive&& chunked;  // HEAD: the headers GET has, no body
  std::string chunk;
  while (true) {
    chunk.clear();
    auto more = res.stream->Next(&chunk);
    if (!more.ok()) {
      spdlog::error("export stream failed: {}", std::string(more.status().message()));
      co_return false;  // the client sees a truncated body (no last chunk), then the close
    }
    if (!chunk.empty()) {
      lowest.expires_after(std::chrono::seconds(shared.options.write_timeout_s));
      if (chunked) {
        co_await asio::async_write(stream, http::make_chunk(asio::buffer(chunk)), use_awaitable);
      } else {
        co_await asio::async_write(stream, asio::buffer(chunk), use_awaitable);
      }
    }
    if (!*more) break;
  }
  if (!chunked) co_return false;  // the close ends the body
  co_await asio::async_write(stream, http::make_chunk_last(), use_awaitable);
  co_return keep_alive;
}

// Writes `res`; returns whether the connection may carry another request.
template <typename Stream>
awaitable<bool> WriteResponse(Stream& stream, Shared& shared, HttpResponse& res, bool keep_alive,
                              unsigned version, bool head, bool tls) {
  if (res.stream)
    co_return co_await WriteStreamed(stream, shared, res, keep_alive, version, head, tls);
  auto& lowest = beast::get_lowest_layer(stream);
  http::response<http::string_body> out{http::int_to_status(res.status), version};
  SetHeaders(res, tls, &out);
  out.keep_alive(keep_alive);
  out.body() = std::move(res.body);
  out.prepare_payload();  // Content-Length, to HTTP/1.0 as well: never chunked
  lowest.expires_after(std::chrono::seconds(shared.options.write_timeout_s));
  // The header block as one string and the body beside it, in one gathered write: Beast's
  // serializer walked its buffer sequences for about 6% of serving an invoice
  // (docs/BENCHMARKS.md). HEAD gets the headers GET has (its Content-Length too), no body.
  std::string header_block;
  header_block.reserve(640);
  const auto sv = [](beast::string_view v) { return absl::string_view(v.data(), v.size()); };
  absl::StrAppend(&header_block, version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ", out.result_int(), " ",
                  sv(out.reason()), "\r\n");
  for (const auto& field : out.base()) {
    absl::StrAppend(&header_block, sv(field.name_string()), ": ", sv(field.value()), "\r\n");
  }
  header_block.append("\r\n");
  const std::array<asio::const_buffer, 2> buffers{asio::buffer(header_block),
                                                  asio::buffer(out.body())};
  if (head) {
    co_await asio::async_write(stream, asio::buffer(header_block), use_awaitable);
  } else {
    co_await asio::async_write(stream, buffers, use_awaitable);
  }
  co_return keep_alive;
}

HttpResponse LimitError(const beast::error_code& ec) {
  if (ec == http::error::header_limit) {
    return Error(431, "headers_too_large", "request headers are larger than the server accepts");
  }
  if (ec == http::error::body_limit) {
    return Error(413, "body_too_large", "the request body is larger than the server accepts");
  }
  return Error(400, "bad_request", absl::StrCat("malformed HTTP request: ", ec.message()));
}

template <typename Stream>
awaitable<void> ServeRequests(Stream& stream, Shared& shared, Slot& slot, const std::string& client,
                              bool tls) {
  auto& lowest = beast::get_lowest_layer(stream);
  const ServerOptions& o = shared.options;
  beast::flat_buffer buffer;
  bool first = true;
  while (true) {
    RequestParser parser;
    SetLimits(o, &parser);
    // The first request's headers have header_timeout_s; a keep-alive waits keep_alive_s for
    // the next one, idle meanwhile (closed first when the server needs room); the whole
    // request has read_timeout_s.
    if (!first && !slot.connections.GoIdle(slot.id)) co_return;
    const auto start = std::chrono::steady_clock::now();
    lowest.expires_after(std::chrono::seconds(first ? std::min(o.header_timeout_s, o.read_timeout_s)
                                                    : o.keep_alive_s));
    beast::error_code ec;
    co_await http::async_read_header(stream, buffer, parser,
                                     asio::redirect_error(use_awaitable, ec));
    if (!first) slot.connections.GoActive(slot.id, *slot.handle);
    bool events = false;
    if (!ec) {
      if (auto refused = SetBodyLimit(o, &parser, &events)) ec = *refused;
    }
    if (!ec && !parser.is_done()) {
      // Beast reads at most what the buffer has room for (512 bytes when it has none): room for
      // the declared body, up to 64 KiB, turns a batch of events from ~30 reads into one or two.
      if (const auto length = parser.content_length()) {
        buffer.reserve(buffer.size() + std::min<std::uint64_t>(*length, kReadChunk));
      }
      if (first) {
        lowest.expires_at(start + std::chrono::seconds(o.read_timeout_s));
      } else {
        lowest.expires_after(std::chrono::seconds(o.read_timeout_s));
      }
      co_await http::async_read(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
    }
    first = false;
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == beast::error::timeout ||
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted ||
        ec == asio::error::bad_descriptor) {
      co_return;
    }
    if (ec) {
      HttpResponse res = LimitError(ec);
      shared.metrics.Observe("error", res.status, 0);
      co_await WriteResponse(stream, shared, res, false, 11, false, tls);
      co_return;
    }
    auto req = parser.release();
    const auto handled = std::chrono::steady_clock::now();
    bool ok = true;
    HttpRequest request = ToRequest(req, tls, &ok);
    HttpResponse res;
    if (!ok) {
      res = BadTarget();
    } else if (!RateLimited(request, client, shared, &res)) {
      if (events) {
        res = co_await PublishEvents(request, shared);
      } else {
        res = Dispatch(request, shared);
        Conditional(request, &res);
      }
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - handled).count();
    shared.metrics.Observe(res.route, res.status, secs);
    const std::string id = RequestId(request, shared);
    res.headers.emplace_back("X-Request-Id", id);
    LogAccess(request, res, id, client, secs, shared);
    // Never log tokens: the path only (queries may hold filters, not secrets).
    spdlog::debug("{} {} -> {} ({:.3f} ms)", request.method, request.path.substr(0, 200),
                  res.status, secs * 1e3);
    const bool keep = req.keep_alive() && res.status < 500;
    if (!co_await WriteResponse(stream, shared, res, keep, req.version(),
                                req.method() == http::verb::head, tls)) {
      co_return;
    }
    // An idle keep-alive connection does not hold a large body's room.
    if (buffer.capacity() > kIdleBuffer) buffer.shrink_to_fit();
  }
}

// Closes the sending side, then reads and discards what the client still sends (a request never
// read, the rest of a refused body) until it closes too, for at most a second and 64 KiB: a
// socket closed with unread input makes the kernel reset the connection, and a client that had
// not read the response yet would lose it (it reads "connection reset" instead of a 503 or 413).
awaitable<void> LingeringClose(beast::tcp_stream& stream) {
  beast::error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  if (ec) co_return;
  stream.expires_after(std::chrono::seconds(1));
  std::array<char, 4096> sink;
  for (size_t total = 0; total < 64 * 1024;) {
    const size_t n = co_await stream.async_read_some(asio::buffer(sink),
                                                     asio::redirect_error(use_awaitable, ec));
    if (ec || n == 0) break;
    total += n;
  }
}

// Clears the handle's stream before the stream is destroyed (declared after it).
struct StreamRegistration {
  Connections::Handle& handle;
  StreamRegistration(Connections::Handle& h, beast::tcp_stream& stream) : handle(h) {
    std::lock_guard<std::mutex> lock(handle.mu);
    handle.stream = &stream;
  }
  ~StreamRegistration() {
    std::lock_guard<std::mutex> lock(handle.mu);
    handle.stream = nullptr;
  }
};

awaitable<void> Session(tcp::socket socket, Shared& shared, asio::ssl::context* tls, Slot slot,
                        std::string client) {
  struct Count {
    Shared& s;
    Slot& slot;
    Count(Shared& sh, Slot& sl) : s(sh), slot(sl) { s.metrics.connections.Increment(); }
    ~Count() {
      slot.connections.Remove(slot.id);
      s.metrics.connections.Decrement();
    }
  } count(shared, slot);
  slot.handle->executor = co_await asio::this_coro::executor;
  try {
    if (tls != nullptr) {
      beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)), *tls);
      StreamRegistration reg(*slot.handle, beast::get_lowest_layer(stream));
      beast::get_lowest_layer(stream).expires_after(
          std::chrono::seconds(shared.options.handshake_timeout_s));
      co_await stream.async_handshake(asio::ssl::stream_base::server, use_awaitable);
      co_await ServeRequests(stream, shared, slot, client, true);
      beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(5));
      beast::error_code ec;
      co_await stream.async_shutdown(asio::redirect_error(use_awaitable, ec));
    } else {
      beast::tcp_stream stream(std::move(socket));
      StreamRegistration reg(*slot.handle, stream);
      co_await ServeRequests(stream, shared, slot, client, false);
      co_await LingeringClose(stream);
    }
  } catch (const std::exception& e) {
    spdlog::debug("connection closed: {}", e.what());
  }
}

// Beyond the connection limit: a 503 with Retry-After, over TLS on an HTTPS listener.
awaitable<void> Refuse(tcp::socket socket, Shared& shared, asio::ssl::context* tls,
                       std::string why) {
  struct Count {
    std::atomic<size_t>& n;
    ~Count() { --n; }
  } count{shared.refusing};
  HttpResponse res = Error(503, "busy", why);
  res.headers.emplace_back("Retry-After", "1");
  try {
    if (tls != nullptr) {
      beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)), *tls);
      beast::get_lowest_layer(stream).expires_after(
          std::chrono::seconds(shared.options.handshake_timeout_s));
      co_await stream.async_handshake(asio::ssl::stream_base::server, use_awaitable);
      co_await WriteResponse(stream, shared, res, false, 11, false, true);
      beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(1));
      beast::error_code ec;
      co_await stream.async_shutdown(asio::redirect_error(use_awaitable, ec));
    } else {
      beast::tcp_stream stream(std::move(socket));
      co_await WriteResponse(stream, shared, res, false, 11, false, false);
      co_await LingeringClose(stream);
    }
  } catch (const std::exception&) {
  }
}

// By errno value, and messages by strerror, on this path: with no descriptor left, any virtual
// call on an error category (errc comparisons build error_conditions; message()) is reported by
// UBSan's vptr check as a call on an invalid object (it cannot check types then), which fails
// the sanitized suite.
bool OutOfResources(const boost::system::error_code& ec) {
  switch (ec.value()) {
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
      return true;
    default:
      return false;
  }
}

// accept() failed: back off (never spin on a connection that cannot be taken), make room if an
// idle keep-alive can go, and say so now and then.
awaitable<void> BackOff(const boost::system::error_code& ec, Shared& shared,
                        std::chrono::milliseconds* backoff,
                        std::chrono::steady_clock::time_point* last_log) {
  const bool shortage = OutOfResources(ec);
  bool freed = false;
  if (shortage) {
    shared.metrics.accept_errors.Increment();
    freed = shared.connections.CloseOneIdle();
  }
  const auto now = std::chrono::steady_clock::now();
  if (shortage && now - *last_log >= kAcceptErrorLogEvery) {
    *last_log = now;
    spdlog::error(
        "cannot accept connections: {} ({} open{}); retrying after {} ms, still serving the "
        "open ones (raise the descriptor limit, ulimit -n, or lower --max-connections)",
        std::strerror(ec.value()), shared.connections.size(),
        freed ? ", closed an idle keep-alive" : "", backoff->count());
  } else if (!shortage) {
    spdlog::debug("accept failed: {}", std::strerror(ec.value()));
  }
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(*backoff);
  boost::system::error_code wait_ec;
  co_await timer.async_wait(asio::redirect_error(use_awaitable, wait_ec));
  *backoff = std::min(*backoff * 2, kAcceptBackoffMax);
}

awaitable<void> Listen(tcp::acceptor& acceptor, Shared& shared, asio::ssl::context* tls) {
  auto executor = co_await asio::this_coro::executor;
  std::chrono::milliseconds backoff = kAcceptBackoffMin;
  std::chrono::steady_clock::time_point last_log{};
  while (!shared.stop.load()) {
    boost::system::error_code ec;
    tcp::socket socket = co_await acceptor.async_accept(asio::redirect_error(use_awaitable, ec));
    if (ec == asio::error::operation_aborted || shared.stop.load()) co_return;
    if (ec) {
      co_await BackOff(ec, shared, &backoff, &last_log);
      continue;
    }
    backoff = kAcceptBackoffMin;
    std::string client;
    {
      beast::error_code peer_ec;
      const auto peer = socket.remote_endpoint(peer_ec);
      client = peer_ec ? "unknown" : peer.address().to_string();
    }
    auto handle = std::make_shared<Connections::Handle>();
    uint64_t id = 0;
    const auto admission = shared.connections.Admit(client, shared.options, handle, &id);
    if (admission != Connections::Admission::kAdmitted) {
      shared.metrics.refused.Increment();
      // Refusing costs a descriptor for a moment: beyond a bound, close without an answer.
      if (shared.refusing.fetch_add(1) >= kRefusingConnectionsMax) {
        --shared.refusing;
        continue;  // the socket closes here
      }
      asio::co_spawn(executor,
                     Refuse(std::move(socket), shared, tls,
                            admission == Connections::Admission::kAddressFull
                                ? absl::StrCat("too many connections from ", client, " (",
                                               shared.options.max_connections_per_address,
                                               "); close some or retry shortly")
                                : "too many connections; retry shortly"),
                     asio::detached);
      continue;
    }
    asio::co_spawn(asio::make_strand(executor),
                   Session(std::move(socket), shared, tls, Slot{shared.connections, id, handle},
                           std::move(client)),
                   asio::detached);
  }
}

}  // namespace

ParsedRequest ParseRequest(std::string_view bytes, const ServerOptions& options, bool tls) {
  ParsedRequest out;
  RequestParser parser;
  SetLimits(options, &parser);
  beast::error_code ec;
  bool limited = false;
  while (!parser.is_done()) {
    const size_t used = parser.put(asio::buffer(bytes.data(), bytes.size()), ec);
    bytes.remove_prefix(used);
    if (!ec && !limited && parser.is_header_done()) {
      limited = true;
      bool events = false;
      if (auto refused = SetBodyLimit(options, &parser, &events)) ec = *refused;
    }
    if (ec == http::error::need_more || (!ec && used == 0)) return out;
    if (ec) {
      out.complete = true;
      out.error = LimitError(ec);
      return out;
    }
  }
  out.complete = true;
  bool ok = true;
  HttpRequest request = ToRequest(parser.get(), tls, &ok);
  if (ok) {
    out.request = std::move(request);
  } else {
    out.error = BadTarget();
  }
  return out;
}

absl::Status RunServer(const ServerOptions& options, Service& service, std::atomic<bool>& stop) {
  const size_t colon = options.listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(options.listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen wants host:port, not '", options.listen, "'"));
  }
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(options.listen.substr(0, colon), ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen: '", options.listen.substr(0, colon), "' is not an IP address"));
  }
  std::unique_ptr<asio::ssl::context> tls;
  if (!options.tls_cert.empty() || !options.tls_key.empty()) {
    tls = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    tls->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                     asio::ssl::context::no_tlsv1_1);
    SSL_CTX* ctx = tls->native_handle();
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1) {
      return absl::InternalError("OpenSSL does not know the TLS 1.2 cipher suites to offer");
    }
    tls->use_certificate_chain_file(options.tls_cert, ec);
    if (!ec) tls->use_private_key_file(options.tls_key, asio::ssl::context::pem, ec);
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat("cannot load the TLS certificate or key (",
                                                     options.tls_cert, ", ", options.tls_key,
                                                     "): ", ec.message()));
    }
  }
  asio::io_context io(options.threads);
  tcp::acceptor acceptor(io);
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen, ": ", ec.message()));
  }
  const unsigned short bound = acceptor.local_endpoint().port();
  if (!options.port_file.empty()) {
    std::ofstream(options.port_file) << bound << "\n";
  }
  spdlog::info("serving {}://{}:{}/ (pages under /ui, API under /v1)", tls ? "https" : "http",
               options.listen.substr(0, colon), bound);
  Shared shared{options, service, stop, {}};
  // Each line the JSON alone, written out by the ticker below every 200 ms, not per line: a
  // write per request was most of the cost of serving an invoice (docs/BENCHMARKS.md).
  if (options.access_log != "off" && !options.access_log.empty()) {
    auto log = LineLog::Open(options.access_log);
    if (!log.ok()) return log.status();
    shared.access = *std::move(log);
  }
  if (!options.invoice_read_log.empty()) {
    auto log = LineLog::Open(options.invoice_read_log);
    if (!log.ok()) return log.status();
    shared.invoice_reads = *std::move(log);
  }
  shared.request_prefix = absl::StrCat(absl::Hex(std::random_device{}(), absl::kZeroPad8));
  asio::co_spawn(io, Listen(acceptor, shared, tls.get()), asio::detached);
  asio::steady_timer ticker(io);
  std::function<void()> watch = [&] {
    ticker.expires_after(std::chrono::milliseconds(200));
    ticker.async_wait([&](const boost::system::error_code&) {
      if (shared.invoice_reads != nullptr) shared.invoice_reads->Flush();
      if (shared.access != nullptr) shared.access->Flush();
      if (stop.load()) {
        acceptor.close();
        io.stop();
        return;
      }
      watch();
    });
  };
  watch();
  std::vector<std::thread> threads;
  for (int i = 1; i < options.threads; ++i) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : threads) t.join();
  spdlog::info("server stopped");
  return absl::OkStatus();
}

}  // namespace gpuledger::api
