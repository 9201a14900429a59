// `gpuledger serve`: HTTP/1.1 on Boost.Beast (TLS with OpenSSL as an option). One coroutine per
// connection on a small pool of threads; every read and write has a deadline, so a slow or
// malformed client costs one connection slot, never a thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "api/routes.h"
#include "api/service.h"
#include "ingest/gateway.h"
#include "ingest/topics.h"

namespace gpuledger::api {

struct ServerOptions {
  std::string listen = "127.0.0.1:8080";  // host:port; port 0 picks a free one
  std::string tls_cert;                   // PEM chain; with tls_key: HTTPS only
  std::string tls_key;
  int threads = 2;
  size_t max_connections = 256;  // beyond: 503 and close
  // Open connections from one client address (beyond: 503 and close), so that one address
  // cannot take every slot. Behind a reverse proxy every client has the proxy's address: raise
  // it to max_connections there.
  size_t max_connections_per_address = 32;
  size_t max_header_bytes = 8 * 1024;  // beyond: 431
  size_t max_body_bytes = 8 * 1024;    // beyond: 413 (only /ui/login takes a body)
  // Requests per second per client address after a burst of rate_burst (beyond: 429 with
  // Retry-After); /healthz and /readyz are not counted. 0: no limit.
  int rate_limit_per_s = 100;
  int rate_burst = 200;
  int handshake_timeout_s = 5;  // a TLS handshake must finish within this, or is closed
  int header_timeout_s = 10;    // a request's headers must arrive within this, or it is closed
  int read_timeout_s = 15;      // a whole request must arrive within this
  int write_timeout_s = 60;     // per response chunk
  int keep_alive_s = 30;
  std::string port_file;  // if set, the bound port is written here once listening
  // POST /v1/events (usage over HTTP, docs/OPERATIONS.md): the producer to the CSPs' topics
  // (nullptr: answered 503, off), their names, and the bounds of one request.
  ingest::EventProducer* event_producer = nullptr;
  ingest::TopicNames topics;
  size_t max_events_per_request = 1'000;
  size_t max_events_body_bytes = 4 << 20;  // beyond: 413
  // The access log: one JSON line per request (time, request id, client address, principal name,
  // method, path, route, status, bytes, ms; never a token or a query). "-": the server's log;
  // "off": none; else a file appended to.
  std::string access_log = "-";
  // Who read which invoice: one JSON line per answered read of an invoice, a list of invoices or
  // the e-tax export (API and pages), appended to this file and flushed within 200 ms, for
  // auditors.
  // "": none.
  std::string invoice_read_log;
};

// One request parsed from bytes as the server parses what a connection sends (the same HTTP
// parser, header and body limits, and decoding of the target), for tests and fuzzers.
struct ParsedRequest {
  // False: the bytes end before the request does (the server would wait for more).
  bool complete = false;
  // Set when complete and valid; otherwise `error` is what the server answers, then closes.
  std::optional<HttpRequest> request;
  HttpResponse error;
};
ParsedRequest ParseRequest(std::string_view bytes, const ServerOptions& options, bool tls);

// Serves until `stop` becomes true (checked every 200 ms). Returns when every connection is
// closed or abandoned.
absl::Status RunServer(const ServerOptions& options, Service& service, std::atomic<bool>& stop);

}  // namespace gpuledger::api
