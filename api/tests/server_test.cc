// The server over real sockets (issue 14, items 6 to 8): connection caps per address, idle
// keep-alives at the cap, handshake and header deadlines, running out of file descriptors, and
// bounded response sizes. A small ledger of its own; no Kafka.
#include "api/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "api/auth.h"
#include "api/limits.h"
#include "api/routes.h"
#include "api/service.h"
#include "gpuledger/v1/ledger.pb.h"
#include "ledger/ledger.h"
#include "testsupport/temp_dir.h"

namespace gpuledger::api {
namespace {

namespace v1 = gpuledger::v1;

constexpr char kOperatorToken[] = "server-test-operator";
constexpr int kLivenessS = 10;  // generous: each step takes milliseconds on a working server

// A ledger of `entries` rejected entries whose payloads are `payload_bytes` long (bytes that
// decode as nothing: rejected inputs are recorded as they came), a tokens file with one
// operator token, and the service over them.
class Fixture {
 public:
  explicit Fixture(int entries = 3, size_t payload_bytes = 100,
                   size_t response_bytes_max = kResponseBytesMax) {
    {
      auto ledger = ledger::Ledger::Open(dir_.Sub("ledger"), {});
      EXPECT_TRUE(ledger.ok()) << ledger.status();
      for (int i = 0; i < entries; ++i) {
        ledger::Candidate c;
        c.source = v1::SOURCE_USAGE;
        c.payload = std::string(payload_bytes, static_cast<char>('\xff' - i % 7));
        c.topic = "gpuledger.usage.csp-a";
        c.offset = i;
        c.kafka_timestamp_ms = 1'775'000'000'000 + i;
        c.reason_code = "MALFORMED";
        c.reason_detail = "not a usage event";
        EXPECT_TRUE((*ledger)->Append(c).ok());
      }
      EXPECT_TRUE((*ledger)->Commit().ok());
    }
    {
      std::ofstream(dir_.Sub("tokens")) << "sha256:" << HashToken(kOperatorToken) << " operator\n";
    }
    ::chmod(dir_.Sub("tokens").c_str(), 0600);
    ServiceOptions o;
    o.db = dir_.Sub("ledger");
    o.secondary = dir_.Sub("secondary");
    o.tokens_file = dir_.Sub("tokens");
    o.response_bytes_max = response_bytes_max;
    auto s = Service::Open(o);
    EXPECT_TRUE(s.ok()) << s.status();
    if (s.ok()) service_ = std::move(*s);
  }
  ~Fixture() { service_.reset(); }
  Service& service() { return *service_; }
  const gpuledger::testing::TempDir& dir() const { return dir_; }

 private:
  gpuledger::testing::TempDir dir_;
  std::unique_ptr<Service> service_;
};

// RunServer on a thread of its own, on a free port of 127.0.0.1, until destroyed.
class TestServer {
 public:
  TestServer(Service& service, ServerOptions options, const std::string& port_file)
      : options_(std::move(options)) {
    options_.listen = "127.0.0.1:0";
    options_.port_file = port_file;
    options_.rate_limit_per_s = 0;
    thread_ = std::thread([this, &service] { status_ = RunServer(options_, service, stop_); });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kLivenessS);
    while (port_ == 0 && std::chrono::steady_clock::now() < deadline) {
      std::ifstream in(port_file);
      if (!(in >> port_)) port_ = 0;
      if (port_ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_NE(port_, 0) << "the server did not start listening";
  }
  ~TestServer() {
    stop_ = true;
    thread_.join();
    EXPECT_TRUE(status_.ok()) << status_;
  }
  int port() const { return port_; }

 private:
  ServerOptions options_;
  std::atomic<bool> stop_{false};
  absl::Status status_;
  std::thread thread_;
  int port_ = 0;
};

// A TCP connection to 127.0.0.1:port from `source` (any 127.x.y.z address is this host), with
// a receive timeout of `timeout_s`; -1 if it cannot be made.
int Connect(int port, const char* source = "127.0.0.1", int timeout_s = kLivenessS) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval tv{timeout_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  ::inet_pton(AF_INET, source, &from.sin_addr);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void Send(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
}

// Everything the peer sends until it closes (or the receive timeout passes: `closed` false).
std::string ReadToClose(int fd, bool* closed = nullptr) {
  std::string out;
  char buf[65536];
  while (true) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (closed != nullptr) *closed = n == 0 || errno == ECONNRESET;
    return out;
  }
}

// One response with a Content-Length body, read from a connection that stays open.
std::string ReadOneResponse(int fd) {
  std::string out;
  char buf[4096];
  while (true) {
    const size_t end = out.find("\r\n\r\n");
    if (end != std::string::npos) {
      const size_t cl = out.find("Content-Length: ");
      size_t length = 0;
      if (cl != std::string::npos && cl < end) {
        (void)absl::SimpleAtoi(out.substr(cl + 16, out.find("\r\n", cl) - cl - 16), &length);
      }
      if (out.size() >= end + 4 + length) return out;
    }
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

int StatusOf(const std::string& raw) {
  int status = 0;
  if (raw.size() < 12 || !raw.starts_with("HTTP/1.")) return 0;
  return absl::SimpleAtoi(raw.substr(9, 3), &status) ? status : 0;
}

std::string Get(int port, const std::string& path, const char* source = "127.0.0.1") {
  const int fd = Connect(port, source);
  if (fd < 0) return "";
  Send(fd, absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer ",
                        kOperatorToken, "\r\nConnection: close\r\n\r\n"));
  std::string raw = ReadToClose(fd);
  ::close(fd);
  return raw;
}

double CpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

class ServerTest : public ::testing::Test {
 protected:
  Fixture fixture_;
};

// Issue 14 item 6: silent connections from one address took every slot (everyone got 503).
TEST_F(ServerTest, OneAddressCannotTakeEveryConnection) {
  ServerOptions o;
  o.max_connections = 8;
  o.max_connections_per_address = 3;
  TestServer server(fixture_.service(), o, fixture_.dir().Sub("port"));
  std::vector<int> hostile;
  int refused = 0;
  for (int i = 0; i < 8; ++i) {
    const int fd = Connect(server.port(), "127.0.0.2", 2);
    ASSERT_GE(fd, 0);
    hostile.push_back(fd);
  }
  // Beyond its cap the address is told 503 at once; others are still served.
  for (int i = 3; i < 8; ++i) {
    const std::string raw = ReadToClose(hostile[i]);
    if (StatusOf(raw) == 503) ++refused;
    EXPECT_NE(raw.find("Retry-After: 1"), std::string::npos) << raw;
  }
  EXPECT_EQ(refused, 5);
  EXPECT_EQ(StatusOf(Get(server.port(), "/healthz", "127.0.0.1")), 200);
  EXPECT_EQ(StatusOf(Get(server.port(), "/v1/ledger/head", "127.0.0.3")), 200);
  for (int fd : hostile) ::close(fd);
  // Its slots come back when it closes them.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kLivenessS);
  int status = 0;
  while (status != 200 && std::chrono::steady_clock::now() < deadline) {
    status = StatusOf(Get(server.port(), "/healthz", "127.0.0.2"));
  }
  EXPECT_EQ(status, 200);
}

// Issue 14 item 6: keep-alives left idle after one /healthz each gave everyone 503.
TEST_F(ServerTest, IdleKeepAlivesAreClosedWhenTheServerIsFull) {
  ServerOptions o;
  o.max_connections = 4;
  TestServer server(fixture_.service(), o, fixture_.dir().Sub("port"));
  std::vector<int> idle;
  for (int i = 0; i < 4; ++i) {
    const int fd = Connect(server.port());
    ASSERT_GE(fd, 0);
    Send(fd, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_EQ(StatusOf(ReadOneResponse(fd)), 200);
    idle.push_back(fd);
  }
  // Four idle keep-alives fill the server; three more clients that stay connected are served
  // all the same, each in the place of the longest-idle of the first four, which are closed.
  // A session becomes idle just after it has written its answer: a client that is quicker than
  // that may still be refused once, so each one retries within the liveness bound.
  std::vector<int> later;
  for (int i = 0; i < 3; ++i) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kLivenessS);
    int status = 0;
    while (status != 200 && std::chrono::steady_clock::now() < deadline) {
      const int fd = Connect(server.port());
      ASSERT_GE(fd, 0);
      Send(fd, absl::StrCat("GET /v1/ledger/head HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer ",
                            kOperatorToken, "\r\n\r\n"));
      status = StatusOf(ReadOneResponse(fd));
      if (status == 200) {
        later.push_back(fd);
      } else {
        ::close(fd);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    EXPECT_EQ(status, 200) << "client " << i;
  }
  for (int fd : later) ::close(fd);
  int closed_count = 0;
  for (int fd : idle) {
    timeval tv{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    bool closed = false;
    ReadToClose(fd, &closed);
    closed_count += closed ? 1 : 0;
    ::close(fd);
  }
  EXPECT_EQ(closed_count, 3);
}

// Issue 14 item 6: a client that sends half a request is closed at the header deadline, not
// held for the whole-request deadline.
TEST_F(ServerTest, UnfinishedHeadersAreClosedAtTheHeaderDeadline) {
  ServerOptions o;
  o.header_timeout_s = 1;
  o.read_timeout_s = 30;
  TestServer server(fixture_.service(), o, fixture_.dir().Sub("port"));
  const int fd = Connect(server.port(), "127.0.0.1", 8);
  ASSERT_GE(fd, 0);
  const auto start = std::chrono::steady_clock::now();
  Send(fd, "GET /healthz HTTP/1.1\r\nHost: t\r\n");
  bool closed = false;
  ReadToClose(fd, &closed);
  ::close(fd);
  EXPECT_TRUE(closed) << "still open after 8 s with a header deadline of 1 s";
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

// Issue 14 item 6: TLS handshakes that never finish are closed at the handshake deadline.
TEST_F(ServerTest, UnfinishedTlsHandshakesAreClosedAtTheirDeadline) {
  const std::string dir = fixture_.dir().path();
  const std::string cmd =
      absl::StrCat("cd '", dir,
                   "' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                   "-keyout key.pem -out cert.pem -days 1 -subj /CN=127.0.0.1 >/dev/null 2>&1");
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  ServerOptions o;
  o.tls_cert = dir + "/cert.pem";
  o.tls_key = dir + "/key.pem";
  o.handshake_timeout_s = 1;
  o.read_timeout_s = 30;
  TestServer server(fixture_.service(), o, fixture_.dir().Sub("port"));
  const int fd = Connect(server.port(), "127.0.0.1", 8);
  ASSERT_GE(fd, 0);
  const auto start = std::chrono::steady_clock::now();
  bool closed = false;
  ReadToClose(fd, &closed);
  ::close(fd);
  EXPECT_TRUE(closed) << "still open after 8 s with a handshake deadline of 1 s";
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

// Issue 14 item 6: with no file descriptor left, accept() failed at once, again and again: the
// accept loop spun. It must back off, and serve again once descriptors are free.
TEST_F(ServerTest, RunningOutOfFileDescriptorsDoesNotSpin) {
  TestServer server(fixture_.service(), ServerOptions{}, fixture_.dir().Sub("port"));
  ASSERT_EQ(StatusOf(Get(server.port(), "/healthz")), 200);
  // Sockets made now, connected once no descriptor is left for the server to accept them with.
  std::vector<int> clients;
  for (int i = 0; i < 16; ++i) clients.push_back(::socket(AF_INET, SOCK_STREAM, 0));
  int highest = 0;
  for (int fd = 0; fd < 65536; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1) highest = fd;
  }
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit low = saved;
  low.rlim_cur = static_cast<rlim_t>(highest + 1);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  // Fill the holes below the limit too: not one descriptor is left.
  std::vector<int> fillers;
  for (int fd = ::open("/dev/null", O_RDONLY); fd >= 0; fd = ::open("/dev/null", O_RDONLY)) {
    fillers.push_back(fd);
  }
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(server.port()));
  ::inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  for (int fd : clients) {
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to), 0);
  }
  const double cpu_before = CpuSeconds();
  std::this_thread::sleep_for(std::chrono::seconds(1));  // the measured interval, not a wait
  const double cpu_s = CpuSeconds() - cpu_before;
  for (int fd : fillers) ::close(fd);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  for (int fd : clients) ::close(fd);
  EXPECT_LT(cpu_s, 0.3) << "the accept loop used " << cpu_s << " s of CPU in 1 s";
  std::printf("out of descriptors with 16 connections waiting: %.3f s of CPU in 1 s\n", cpu_s);
  // Served again once descriptors are free.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kLivenessS);
  int status = 0;
  while (status != 200 && std::chrono::steady_clock::now() < deadline) {
    status = StatusOf(Get(server.port(), "/healthz"));
  }
  EXPECT_EQ(status, 200);
}

// Issue 14 item 7: one page of 100 large entries was 132 MB. A page stops at a byte limit and
// says where to continue; every entry is still read exactly once.
TEST(ResponseBytesTest, APageOfEntriesStopsAtItsByteLimit) {
  constexpr int kEntries = 12;
  constexpr size_t kPayloadBytes = 1 << 20;
  Fixture fixture(kEntries, kPayloadBytes);
  HttpRequest req;
  req.method = "GET";
  req.path = "/v1/ledger/entries";
  req.authorization = absl::StrCat("Bearer ", kOperatorToken);
  std::set<uint64_t> seen;
  uint64_t from = 1;
  int pages = 0;
  size_t largest = 0;
  while (from != 0 && pages < 100) {
    req.query = {{"from", absl::StrCat(from)}, {"limit", "100"}};
    const HttpResponse r = Handle(req, fixture.service());
    ASSERT_EQ(r.status, 200) << r.body.substr(0, 300);
    ++pages;
    largest = std::max(largest, r.body.size());
    // At most the limit, plus the one entry that crossed it (a page holds at least one).
    EXPECT_LE(r.body.size(), kPageBytesMax + 3 * kPayloadBytes) << "page " << pages;
    const auto j = nlohmann::json::parse(r.body);
    const auto& entries = j.at("entries");
    ASSERT_FALSE(entries.empty());
    for (const auto& e : entries) EXPECT_TRUE(seen.insert(e.at("seq").get<uint64_t>()).second);
    from = j.at("next_from").get<uint64_t>();
    EXPECT_EQ(j.at("bytes_limited").get<bool>(), from != 0);
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kEntries));
  EXPECT_GT(pages, 1);
  std::printf("%d entries of %zu payload bytes: %d pages, the largest %zu bytes\n", kEntries,
              kPayloadBytes, pages, largest);
}

// Issue 14 item 7, for answers that are not paged: a single entry, document or list beyond the
// response limit is refused with what to ask for instead, never built and sent whole; answers
// within it are untouched.
TEST(ResponseBytesTest, AnAnswerThatIsNotPagedStopsAtTheResponseLimit) {
  constexpr size_t kLimit = 64 << 10;
  Fixture fixture(2, 2 * kLimit, kLimit);
  HttpRequest req;
  req.method = "GET";
  req.authorization = absl::StrCat("Bearer ", kOperatorToken);
  req.path = "/v1/ledger/entries/1";
  const HttpResponse big = Handle(req, fixture.service());
  EXPECT_EQ(big.status, 422) << big.body.substr(0, 300);
  EXPECT_LE(big.body.size(), kLimit);
  EXPECT_NE(big.body.find("response_too_large"), std::string::npos) << big.body;
  EXPECT_NE(big.body.find("--max-response-bytes"), std::string::npos) << big.body;
  EXPECT_EQ(big.route, "/v1/ledger/entries/{seq}");
  // A small answer of the same server is served as it is.
  req.path = "/v1/ledger/head";
  EXPECT_EQ(Handle(req, fixture.service()).status, 200);
  // With the default limit, the same entry is served.
  Fixture roomy(2, 2 * kLimit);
  req.path = "/v1/ledger/entries/1";
  const HttpResponse served = Handle(req, roomy.service());
  EXPECT_EQ(served.status, 200);
  EXPECT_GT(served.body.size(), 2 * kLimit);
}

// ---- issue 14 item 8: the lesser items that are the API's ----

// The header lines of a raw response, sorted (for comparing GET with HEAD).
std::vector<std::string> HeaderLines(const std::string& raw) {
  std::vector<std::string> lines;
  const size_t end = raw.find("\r\n\r\n");
  size_t at = raw.find("\r\n");
  while (at != std::string::npos && at < end) {
    const size_t next = raw.find("\r\n", at + 2);
    std::string line = raw.substr(at + 2, next - at - 2);
    // Each request has an id of its own (X-Request-Id); the rest must be the same.
    if (!line.starts_with("X-Request-Id: ")) lines.push_back(std::move(line));
    at = next;
  }
  std::sort(lines.begin(), lines.end());
  return lines;
}

std::string BodyOf(const std::string& raw) {
  const size_t end = raw.find("\r\n\r\n");
  return end == std::string::npos ? "" : raw.substr(end + 4);
}

// The body of a chunked response.
std::string Dechunk(std::string body) {
  std::string out;
  while (true) {
    const size_t eol = body.find("\r\n");
    if (eol == std::string::npos) return out;
    size_t n = 0;
    if (!absl::SimpleHexAtoi(body.substr(0, eol), &n) || n == 0) return out;
    out += body.substr(eol + 2, n);
    body = body.substr(eol + 2 + n + 2);
  }
}

std::string Exchange(int port, const std::string& request) {
  const int fd = Connect(port);
  if (fd < 0) return "";
  Send(fd, request);
  std::string raw = ReadToClose(fd);
  ::close(fd);
  return raw;
}

TEST_F(ServerTest, PagesAndAnswersCannotBeFramedAndCarryAContentSecurityPolicy) {
  TestServer server(fixture_.service(), ServerOptions{}, fixture_.dir().Sub("port"));
  for (const char* path : {"/ui/login", "/ui/invoices", "/v1/ledger/head", "/healthz"}) {
    const std::string raw = Get(server.port(), path);
    EXPECT_NE(raw.find("\r\nX-Frame-Options: DENY\r\n"), std::string::npos) << path;
    const size_t csp = raw.find("\r\nContent-Security-Policy: ");
    ASSERT_NE(csp, std::string::npos) << path << raw.substr(0, 500);
    const std::string policy = raw.substr(csp, raw.find("\r\n", csp + 2) - csp);
    EXPECT_NE(policy.find("frame-ancestors 'none'"), std::string::npos) << policy;
    EXPECT_NE(policy.find("default-src 'none'"), std::string::npos) << policy;
    // No HSTS over plain HTTP (a browser ignores it there; it belongs to the TLS listener).
    EXPECT_EQ(raw.find("Strict-Transport-Security"), std::string::npos) << path;
  }
}

TEST_F(ServerTest, HeadAnswersTheHeadersOfGetWithoutABody) {
  TestServer server(fixture_.service(), ServerOptions{}, fixture_.dir().Sub("port"));
  for (const char* path : {"/healthz", "/v1/ledger/head", "/v1/ledger/entries?limit=2",
                           "/v1/ledger/export", "/ui/login", "/v1/nope"}) {
    const std::string tail =
        absl::StrCat(" ", path, " HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer ", kOperatorToken,
                     "\r\nConnection: close\r\n\r\n");
    const std::string get = Exchange(server.port(), "GET" + tail);
    const std::string head = Exchange(server.port(), "HEAD" + tail);
    EXPECT_EQ(StatusOf(get), StatusOf(head)) << path;
    EXPECT_EQ(HeaderLines(get), HeaderLines(head)) << path;
    EXPECT_EQ(BodyOf(head), "") << path;
    EXPECT_NE(BodyOf(get), "") << path;
  }
}

TEST_F(ServerTest, Http10ClientsGetNoChunkedReplies) {
  TestServer server(fixture_.service(), ServerOptions{}, fixture_.dir().Sub("port"));
  const std::string auth = absl::StrCat("Authorization: Bearer ", kOperatorToken, "\r\n");
  const std::string v11 =
      Exchange(server.port(), absl::StrCat("GET /v1/ledger/export HTTP/1.1\r\nHost: t\r\n", auth,
                                           "Connection: close\r\n\r\n"));
  ASSERT_EQ(StatusOf(v11), 200);
  ASSERT_NE(v11.find("Transfer-Encoding: chunked"), std::string::npos);
  const std::string v10 =
      Exchange(server.port(), absl::StrCat("GET /v1/ledger/export HTTP/1.0\r\n", auth, "\r\n"));
  ASSERT_EQ(StatusOf(v10), 200) << v10.substr(0, 300);
  EXPECT_EQ(v10.find("chunked"), std::string::npos) << v10.substr(0, 300);
  // Close-delimited: the same bytes as the chunked body.
  EXPECT_EQ(BodyOf(v10), Dechunk(BodyOf(v11)));
  EXPECT_FALSE(BodyOf(v10).empty());
  // Ordinary answers to HTTP/1.0 carry a Content-Length.
  const std::string head10 =
      Exchange(server.port(), absl::StrCat("GET /v1/ledger/head HTTP/1.0\r\n", auth, "\r\n"));
  EXPECT_NE(head10.find("Content-Length: "), std::string::npos);
  EXPECT_EQ(head10.find("chunked"), std::string::npos);
}

HttpRequest LoginPost(const std::string& token) {
  HttpRequest req;
  req.method = "POST";
  req.path = "/ui/login";
  req.host = "ledger.example:8080";
  req.content_type = "application/x-www-form-urlencoded";
  req.body = absl::StrCat("token=", token);
  return req;
}

bool SetsCookie(const HttpResponse& r) {
  for (const auto& [k, v] : r.headers) {
    if (k == "Set-Cookie") return true;
  }
  return false;
}

TEST_F(ServerTest, TheSignInFormRefusesCrossSitePostsAndOtherMethods) {
  Service& svc = fixture_.service();
  // Same origin (by Origin or by Sec-Fetch-Site), or a client that sends neither (curl): 303.
  HttpRequest same = LoginPost(kOperatorToken);
  same.origin = "http://ledger.example:8080";
  same.sec_fetch_site = "same-origin";
  EXPECT_EQ(Handle(same, svc).status, 303);
  EXPECT_EQ(Handle(LoginPost(kOperatorToken), svc).status, 303);
  // Cross-site: 403, and no cookie.
  for (auto [origin, site] : std::vector<std::pair<std::string, std::string>>{
           {"https://evil.example", ""},
           {"null", ""},
           {"https://ledger.example:8080", ""},  // another scheme is another origin
           {"", "cross-site"},
           {"", "same-site"},
           {"http://ledger.example:8080", "cross-site"}}) {
    HttpRequest req = LoginPost(kOperatorToken);
    req.origin = origin;
    req.sec_fetch_site = site;
    const HttpResponse r = Handle(req, svc);
    EXPECT_EQ(r.status, 403) << origin << " " << site;
    EXPECT_FALSE(SetsCookie(r)) << origin << " " << site;
  }
  // Methods: GET, HEAD and POST only, and 405 says which.
  for (const char* method : {"PUT", "DELETE", "PATCH", "OPTIONS"}) {
    HttpRequest req = LoginPost(kOperatorToken);
    req.method = method;
    const HttpResponse r = Handle(req, svc);
    EXPECT_EQ(r.status, 405) << method;
    EXPECT_FALSE(SetsCookie(r)) << method;
    bool allow = false;
    for (const auto& [k, v] : r.headers) allow = allow || (k == "Allow" && v == "GET, HEAD, POST");
    EXPECT_TRUE(allow) << method;
  }
  // Other pages: 405 with Allow: GET, HEAD.
  HttpRequest post = LoginPost(kOperatorToken);
  post.path = "/ui/invoices";
  const HttpResponse r = Handle(post, svc);
  EXPECT_EQ(r.status, 405);
  bool allow = false;
  for (const auto& [k, v] : r.headers) allow = allow || (k == "Allow" && v == "GET, HEAD");
  EXPECT_TRUE(allow);
}

// Signing out changes state: a same-site POST only, so that a link or an image on another site
// cannot sign anyone out. A GET shows the button and clears nothing.
TEST_F(ServerTest, SigningOutIsASameSitePost) {
  Service& svc = fixture_.service();
  HttpRequest req = LoginPost(kOperatorToken);
  req.path = "/ui/logout";
  req.body.clear();
  req.method = "GET";
  HttpResponse r = Handle(req, svc);
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(SetsCookie(r));
  EXPECT_NE(r.body.find("method=\"post\" action=\"/ui/logout\""), std::string::npos);
  req.method = "POST";
  req.origin = "https://evil.example";
  r = Handle(req, svc);
  EXPECT_EQ(r.status, 403);
  EXPECT_FALSE(SetsCookie(r));
  req.origin = "http://ledger.example:8080";
  req.sec_fetch_site = "same-origin";
  r = Handle(req, svc);
  EXPECT_EQ(r.status, 303);
  EXPECT_TRUE(SetsCookie(r));
  req.method = "DELETE";
  EXPECT_EQ(Handle(req, svc).status, 405);
}

}  // namespace
}  // namespace gpuledger::api
