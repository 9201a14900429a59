#include "api/server.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>

#include <boost/asio.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "api/rate_limiter.h"
#include "api/routes.h"

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
    requests.Add({{"route", route.empty() ? "other" : route}, {"code", std::to_string(status)}})
        .Increment();
    latency
        .Add({{"route", route.empty() ? "other" : route}},
             prometheus::Histogram::BucketBoundaries{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                     0.05, 0.1, 0.25, 1})
        .Observe(seconds);
  }
};

struct Shared {
  const ServerOptions& options;
  Service& service;
  Metrics metrics;
  std::atomic<size_t> open{0};
  RateLimiter limiter{options.rate_limit_per_s, options.rate_burst};
};

using RequestParser = http::request_parser<http::string_body>;

void SetLimits(const ServerOptions& options, RequestParser* parser) {
  parser->header_limit(static_cast<std::uint32_t>(options.max_header_bytes));
  parser->body_limit(options.max_body_bytes);
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

HttpRequest ToRequest(const http::request<http::string_body>& req, bool tls, bool* ok) {
  HttpRequest r;
  r.method = std::string(req.method_string());
  const std::string target(req.target());
  const size_t q = target.find('?');
  *ok = UrlDecode(target.substr(0, q), &r.path) &&
        (q == std::string::npos || ParseQuery(std::string_view(target).substr(q + 1), &r.query));
  r.accept = std::string(req[http::field::accept]);
  r.authorization = std::string(req[http::field::authorization]);
  r.cookie = std::string(req[http::field::cookie]);
  r.content_type = std::string(req[http::field::content_type]);
  r.body = req.body();
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
    r.body = prometheus::TextSerializer().Serialize(shared.metrics.registry->Collect());
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

template <typename Stream>
awaitable<void> WriteResponse(Stream& stream, Shared& shared, HttpResponse& res, bool keep_alive,
                              unsigned version, bool head) {
  auto& lowest = beast::get_lowest_layer(stream);
  if (res.stream && head) res.stream.reset();  // HEAD: the headers only
  if (res.stream) {
    http::response<http::empty_body> hdr{http::int_to_status(res.status), version};
    hdr.set(http::field::server, "gpuledger");
    hdr.set(http::field::content_type, res.content_type);
    for (const auto& [k, v] : res.headers) hdr.set(k, v);
    hdr.chunked(true);
    hdr.keep_alive(keep_alive);
    http::response_serializer<http::empty_body> sr{hdr};
    lowest.expires_after(std::chrono::seconds(shared.options.write_timeout_s));
    co_await http::async_write_header(stream, sr, use_awaitable);
    std::string chunk;
    while (true) {
      chunk.clear();
      auto more = res.stream->Next(&chunk);
      if (!more.ok()) {
        spdlog::error("export stream failed: {}", std::string(more.status().message()));
        co_return;  // the client sees a truncated chunked body: no last chunk
      }
      if (!chunk.empty()) {
        lowest.expires_after(std::chrono::seconds(shared.options.write_timeout_s));
        co_await asio::async_write(stream, http::make_chunk(asio::buffer(chunk)), use_awaitable);
      }
      if (!*more) break;
    }
    co_await asio::async_write(stream, http::make_chunk_last(), use_awaitable);
    co_return;
  }
  http::response<http::string_body> out{http::int_to_status(res.status), version};
  out.set(http::field::server, "gpuledger");
  out.set(http::field::content_type, res.content_type);
  out.set(http::field::cache_control, "no-store");
  out.set("X-Content-Type-Options", "nosniff");
  for (const auto& [k, v] : res.headers) out.set(k, v);
  out.keep_alive(keep_alive);
  out.body() = std::move(res.body);
  out.prepare_payload();
  if (head) out.body().clear();
  lowest.expires_after(std::chrono::seconds(shared.options.write_timeout_s));
  if (head) {
    http::response_serializer<http::string_body> sr{out};
    co_await http::async_write_header(stream, sr, use_awaitable);
  } else {
    co_await http::async_write(stream, out, use_awaitable);
  }
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
awaitable<void> ServeRequests(Stream& stream, Shared& shared, bool tls) {
  auto& lowest = beast::get_lowest_layer(stream);
  std::string client;
  {
    beast::error_code ec;
    const auto peer = lowest.socket().remote_endpoint(ec);
    client = ec ? "unknown" : peer.address().to_string();
  }
  beast::flat_buffer buffer;
  bool first = true;
  while (true) {
    RequestParser parser;
    SetLimits(shared.options, &parser);
    lowest.expires_after(
        std::chrono::seconds(first ? shared.options.read_timeout_s : shared.options.keep_alive_s));
    first = false;
    beast::error_code ec;
    co_await http::async_read(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == beast::error::timeout ||
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
      co_return;
    }
    if (ec) {
      HttpResponse res = LimitError(ec);
      shared.metrics.Observe("error", res.status, 0);
      co_await WriteResponse(stream, shared, res, false, 11, false);
      co_return;
    }
    auto req = parser.release();
    const auto start = std::chrono::steady_clock::now();
    bool ok = true;
    HttpRequest request = ToRequest(req, tls, &ok);
    HttpResponse res;
    if (!ok) {
      res = BadTarget();
    } else if (!RateLimited(request, client, shared, &res)) {
      res = Dispatch(request, shared);
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    shared.metrics.Observe(res.route, res.status, secs);
    // Never log tokens: the path only (queries may hold filters, not secrets).
    spdlog::debug("{} {} -> {} ({:.3f} ms)", request.method, request.path.substr(0, 200),
                  res.status, secs * 1e3);
    const bool keep = req.keep_alive() && res.status < 500;
    co_await WriteResponse(stream, shared, res, keep, req.version(),
                           req.method() == http::verb::head);
    if (!keep) co_return;
  }
}

awaitable<void> Session(tcp::socket socket, Shared& shared, asio::ssl::context* tls) {
  struct Count {
    Shared& s;
    explicit Count(Shared& sh) : s(sh) {
      ++s.open;
      s.metrics.connections.Increment();
    }
    ~Count() {
      --s.open;
      s.metrics.connections.Decrement();
    }
  } count(shared);
  try {
    if (tls != nullptr) {
      beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)), *tls);
      beast::get_lowest_layer(stream).expires_after(
          std::chrono::seconds(shared.options.read_timeout_s));
      co_await stream.async_handshake(asio::ssl::stream_base::server, use_awaitable);
      co_await ServeRequests(stream, shared, true);
      beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(5));
      beast::error_code ec;
      co_await stream.async_shutdown(asio::redirect_error(use_awaitable, ec));
    } else {
      beast::tcp_stream stream(std::move(socket));
      co_await ServeRequests(stream, shared, false);
      beast::error_code ec;
      stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    }
  } catch (const std::exception& e) {
    spdlog::debug("connection closed: {}", e.what());
  }
}

// Beyond the connection limit: a 503 with Retry-After, over TLS on an HTTPS listener.
awaitable<void> Refuse(tcp::socket socket, Shared& shared, asio::ssl::context* tls) {
  HttpResponse res = Error(503, "busy", "too many connections; retry shortly");
  res.headers.emplace_back("Retry-After", "1");
  try {
    if (tls != nullptr) {
      beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)), *tls);
      beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(5));
      co_await stream.async_handshake(asio::ssl::stream_base::server, use_awaitable);
      co_await WriteResponse(stream, shared, res, false, 11, false);
      beast::error_code ec;
      co_await stream.async_shutdown(asio::redirect_error(use_awaitable, ec));
    } else {
      beast::tcp_stream stream(std::move(socket));
      co_await WriteResponse(stream, shared, res, false, 11, false);
    }
  } catch (const std::exception&) {
  }
}

awaitable<void> Listen(tcp::acceptor& acceptor, Shared& shared, asio::ssl::context* tls) {
  auto executor = co_await asio::this_coro::executor;
  while (true) {
    boost::system::error_code ec;
    tcp::socket socket = co_await acceptor.async_accept(asio::redirect_error(use_awaitable, ec));
    if (ec == asio::error::operation_aborted) co_return;
    if (ec) continue;
    if (shared.open.load() >= shared.options.max_connections) {
      shared.metrics.refused.Increment();
      asio::co_spawn(executor, Refuse(std::move(socket), shared, tls), asio::detached);
      continue;
    }
    asio::co_spawn(asio::make_strand(executor), Session(std::move(socket), shared, tls),
                   asio::detached);
  }
}

}  // namespace

ParsedRequest ParseRequest(std::string_view bytes, const ServerOptions& options, bool tls) {
  ParsedRequest out;
  RequestParser parser;
  SetLimits(options, &parser);
  beast::error_code ec;
  while (!parser.is_done()) {
    const size_t used = parser.put(asio::buffer(bytes.data(), bytes.size()), ec);
    bytes.remove_prefix(used);
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
  Shared shared{options, service, {}, {}};
  asio::co_spawn(io, Listen(acceptor, shared, tls.get()), asio::detached);
  asio::steady_timer ticker(io);
  std::function<void()> watch = [&] {
    ticker.expires_after(std::chrono::milliseconds(200));
    ticker.async_wait([&](const boost::system::error_code&) {
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
