// Webhook delivery: the Standard Webhooks signature (HMAC-SHA256 over id.timestamp.body, the
// key base64 after "whsec_") and one POST with Boost.Beast, over TLS for https URLs.

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "alerts/alerts.h"

namespace gpuledger::alerts {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

absl::StatusOr<std::string> Sign(const std::string& secret, const std::string& message_id,
                                 int64_t timestamp_s, const std::string& body) {
  constexpr std::string_view kPrefix = "whsec_";
  std::string key;
  if (!secret.starts_with(kPrefix) || !absl::Base64Unescape(secret.substr(kPrefix.size()), &key) ||
      key.empty()) {
    return absl::InvalidArgumentError(
        "a webhook secret is \"whsec_\" followed by the base64 of its key (Standard Webhooks)");
  }
  const std::string content = absl::StrCat(message_id, ".", timestamp_s, ".", body);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(content.data()), content.size(), mac,
           &mac_len) == nullptr) {
    return absl::InternalError("HMAC-SHA256 failed");
  }
  return absl::StrCat("v1,",
                      absl::Base64Escape(std::string(reinterpret_cast<const char*>(mac), mac_len)));
}

namespace {

struct Url {
  bool tls = false;
  std::string host;
  std::string port;
  std::string target;
};

absl::StatusOr<Url> ParseUrl(const std::string& url) {
  Url u;
  std::string_view rest = url;
  if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else if (rest.starts_with("https://")) {
    rest.remove_prefix(8);
    u.tls = true;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("'", url, "' is not an http:// or https:// URL"));
  }
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  u.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  const size_t colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.find(']') == std::string_view::npos) {
    u.host = std::string(authority.substr(0, colon));
    u.port = std::string(authority.substr(colon + 1));
    int port = 0;
    if (!absl::SimpleAtoi(u.port, &port) || port < 1 || port > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("'", url, "' has no valid port"));
    }
  } else {
    u.host = std::string(authority);
    u.port = u.tls ? "443" : "80";
  }
  if (u.host.empty()) return absl::InvalidArgumentError(absl::StrCat("'", url, "' has no host"));
  return u;
}

template <typename Stream>
absl::Status Exchange(Stream& stream, http::request<http::string_body>& req) {
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024);  // the receiver's answer is not read beyond its status
  http::read(stream, buffer, parser);
  const unsigned status = parser.get().result_int();
  if (status >= 200 && status < 300) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("HTTP ", status));
}

}  // namespace

absl::Status Post(const Subscription& s, const Alert& alert, int64_t now_ms, int64_t timeout_ms) {
  auto url = ParseUrl(s.url);
  if (!url.ok()) return url.status();
  const std::string body = alert.Payload();
  const int64_t timestamp_s = now_ms / 1000;
  auto signature = Sign(s.secret, alert.id, timestamp_s, body);
  if (!signature.ok()) return signature.status();
  http::request<http::string_body> req{http::verb::post, url->target, 11};
  req.set(http::field::host, url->host);
  req.set(http::field::user_agent, "gpuledger-alerts");
  req.set(http::field::content_type, "application/json");
  req.set("webhook-id", alert.id);
  req.set("webhook-timestamp", std::to_string(timestamp_s));
  req.set("webhook-signature", *signature);
  req.body() = body;
  req.prepare_payload();
  try {
    net::io_context ioc;
    tcp::resolver resolver(ioc);
    const auto endpoints = resolver.resolve(url->host, url->port);
    const auto deadline = std::chrono::milliseconds(timeout_ms);
    if (!url->tls) {
      beast::tcp_stream stream(ioc);
      stream.expires_after(deadline);
      stream.connect(endpoints);
      absl::Status st = Exchange(stream, req);
      beast::error_code ec;
      stream.socket().shutdown(tcp::socket::shutdown_both, ec);
      return st;
    }
    net::ssl::context ctx(net::ssl::context::tls_client);
    ctx.set_default_verify_paths();
    ctx.set_verify_mode(net::ssl::verify_peer);
    beast::ssl_stream<beast::tcp_stream> stream(ioc, ctx);
    if (!SSL_set_tlsext_host_name(stream.native_handle(), url->host.c_str())) {
      return absl::UnavailableError("TLS: cannot set the server name");
    }
    stream.set_verify_callback(net::ssl::host_name_verification(url->host));
    beast::get_lowest_layer(stream).expires_after(deadline);
    beast::get_lowest_layer(stream).connect(endpoints);
    stream.handshake(net::ssl::stream_base::client);
    absl::Status st = Exchange(stream, req);
    beast::error_code ec;
    stream.shutdown(ec);
    return st;
  } catch (const std::exception& e) {
    return absl::UnavailableError(e.what());
  }
}

}  // namespace gpuledger::alerts
