#include "ingest/metrics.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sstream>
#include <string>

namespace gpuledger::ingest {
namespace {

// GET `path` from 127.0.0.1:`port` over HTTP/1.0 and return the whole response (headers and
// body), or "" if the connection failed. The server closes the connection after answering.
std::string HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string request =
        "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    size_t sent = 0;
    while (sent < request.size()) {
      const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, 0);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
    char buf[4096];
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
      response.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return response;
}

// True if `text` has `line` as one whole line.
bool HasLine(const std::string& text, const std::string& line) {
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    if (!l.empty() && l.back() == '\r') l.pop_back();
    if (l == line) return true;
  }
  return false;
}

TEST(IngestMetricsTest, ServesEveryMetricWithItsValueAtMetricsOverHttp) {
  auto metrics = IngestMetrics::Create("127.0.0.1:0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  IngestMetrics& m = **metrics;
  ASSERT_GT(m.port(), 0);
  EXPECT_EQ(m.url(), "http://127.0.0.1:" + std::to_string(m.port()) + "/metrics");

  for (int i = 0; i < 8; ++i) m.OnConsumed();
  for (int i = 0; i < 3; ++i) m.OnMessage(MessageOutcome::kAccepted);
  m.OnMessage(MessageOutcome::kRejected, "EMPTY_INTERVAL");
  m.OnMessage(MessageOutcome::kRejected, "EMPTY_INTERVAL");
  m.OnMessage(MessageOutcome::kRejected, "MALFORMED");
  m.OnMessage(MessageOutcome::kDuplicate);
  m.OnMessage(MessageOutcome::kParked);
  m.SetParked(1);
  m.OnCommit(7, 0.002);
  m.OnCommit(300, 0.3);
  m.SetLag("gpuledger.usage.csp-a", 2, 42);
  m.SetLag("gpuledger.registry", 0, 0);
  m.SetHead(6);
  m.OnRejectedNotice(true);
  m.OnRejectedNotice(false);
  m.SetMemory("rss", 123456789);
  m.SetMemory("ledger_memtables", 1048576);
  m.SetMemory("rss", 223456789);

  const std::string response = HttpGet(m.port(), "/metrics");
  ASSERT_NE(response.find("200 OK"), std::string::npos) << response;
  for (const char* line : {
           "gpuledger_ingest_consumed_total 8",
           "gpuledger_ingest_accepted_total 3",
           "gpuledger_ingest_rejected_total{reason=\"EMPTY_INTERVAL\"} 2",
           "gpuledger_ingest_rejected_total{reason=\"MALFORMED\"} 1",
           "gpuledger_ingest_duplicates_total 1",
           "gpuledger_ingest_parked_total 1",
           "gpuledger_ingest_parked 1",
           "gpuledger_ingest_batches_total 2",
           "gpuledger_ingest_batch_size_count 2",
           "gpuledger_ingest_batch_size_sum 307",
           "gpuledger_ingest_batch_size_bucket{le=\"10\"} 1",
           "gpuledger_ingest_batch_size_bucket{le=\"250\"} 1",
           "gpuledger_ingest_batch_size_bucket{le=\"500\"} 2",
           "gpuledger_ingest_batch_size_bucket{le=\"+Inf\"} 2",
           "gpuledger_ingest_commit_seconds_count 2",
           "gpuledger_ingest_commit_seconds_bucket{le=\"0.0025\"} 1",
           "gpuledger_ingest_commit_seconds_bucket{le=\"0.25\"} 1",
           "gpuledger_ingest_commit_seconds_bucket{le=\"0.5\"} 2",
           "gpuledger_ingest_consumer_lag{partition=\"2\",topic=\"gpuledger.usage.csp-a\"} 42",
           "gpuledger_ingest_consumer_lag{partition=\"0\",topic=\"gpuledger.registry\"} 0",
           "gpuledger_ledger_head_seq 6",
           "gpuledger_ingest_rejected_notices_delivered_total 1",
           "gpuledger_ingest_rejected_notices_failed_total 1",
           "gpuledger_ingest_memory_bytes{part=\"rss\"} 223456789",
           "gpuledger_ingest_memory_bytes{part=\"ledger_memtables\"} 1048576",
           "# TYPE gpuledger_ingest_consumed_total counter",
           "# TYPE gpuledger_ingest_batch_size histogram",
           "# TYPE gpuledger_ingest_consumer_lag gauge",
       }) {
    EXPECT_TRUE(HasLine(response, line)) << "missing line: " << line << "\n" << response;
  }
  // The same text as Render(), then the process and build metrics.
  EXPECT_NE(response.find(m.Render()), std::string::npos) << response;
  for (const char* name :
       {"\nprocess_cpu_seconds_total ", "\nprocess_resident_memory_bytes ", "\nprocess_open_fds ",
        "\nprocess_start_time_seconds ", "\ngpuledger_build_info{version=\""}) {
    EXPECT_NE(response.find(name), std::string::npos) << name << "\n" << response;
  }
}

TEST(IngestMetricsTest, UpdatesAreVisibleInTheNextScrapeAndRevokedPartitionsDisappear) {
  auto metrics = IngestMetrics::Create("127.0.0.1:0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  IngestMetrics& m = **metrics;
  m.SetLag("t", 0, 5);
  m.SetHead(10);
  EXPECT_TRUE(HasLine(HttpGet(m.port(), "/metrics"),
                      "gpuledger_ingest_consumer_lag{partition=\"0\",topic=\"t\"} 5"));
  m.SetLag("t", 0, 1);
  m.SetHead(11);
  std::string text = HttpGet(m.port(), "/metrics");
  EXPECT_TRUE(HasLine(text, "gpuledger_ingest_consumer_lag{partition=\"0\",topic=\"t\"} 1"));
  EXPECT_TRUE(HasLine(text, "gpuledger_ledger_head_seq 11"));
  m.RemoveLag("t", 0);
  m.RemoveLag("t", 9);  // never set: nothing happens
  text = HttpGet(m.port(), "/metrics");
  EXPECT_EQ(text.find("gpuledger_ingest_consumer_lag{"), std::string::npos) << text;
}

TEST(IngestMetricsTest, ProbesSayAliveAlwaysAndReadyOnlyWhilePartitionsAreAssigned) {
  auto metrics = IngestMetrics::Create("127.0.0.1:0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  IngestMetrics& m = **metrics;
  auto status_of = [&](const std::string& path) {
    const std::string r = HttpGet(m.port(), path);
    return r.substr(0, r.find("\r\n"));
  };
  EXPECT_EQ(status_of("/healthz"), "HTTP/1.1 200 OK");
  EXPECT_EQ(status_of("/readyz"), "HTTP/1.1 503 Service Unavailable");  // not in the group yet
  EXPECT_NE(HttpGet(m.port(), "/readyz").find("\"starting\""), std::string::npos);
  m.SetAssignedPartitions(4);
  EXPECT_EQ(status_of("/readyz"), "HTTP/1.1 200 OK");
  EXPECT_NE(HttpGet(m.port(), "/readyz").find("\"assigned_partitions\": 4"), std::string::npos);
  EXPECT_TRUE(HasLine(m.Render(), "gpuledger_ingest_assigned_partitions 4"));
  m.SetAssignedPartitions(0);  // revoked, e.g. the broker went away and the group rebalanced
  EXPECT_EQ(status_of("/readyz"), "HTTP/1.1 503 Service Unavailable");
  m.SetAssignedPartitions(2);
  m.SetStopping();
  EXPECT_EQ(status_of("/readyz"), "HTTP/1.1 503 Service Unavailable");
  EXPECT_EQ(status_of("/healthz"), "HTTP/1.1 200 OK");
}

TEST(IngestMetricsTest, WithoutListenAddressKeepsMetricsButServesNothing) {
  auto metrics = IngestMetrics::Create("");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ((*metrics)->port(), 0);
  EXPECT_EQ((*metrics)->url(), "");
  (*metrics)->OnMessage(MessageOutcome::kAccepted);
  EXPECT_TRUE(HasLine((*metrics)->Render(), "gpuledger_ingest_accepted_total 1"));
}

TEST(IngestMetricsTest, RejectsAnAddressThatIsNotHostPortOrCannotBeBound) {
  for (const char* bad : {"9464", ":9464", "127.0.0.1:"}) {
    auto m = IngestMetrics::Create(bad);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  auto first = IngestMetrics::Create("127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = IngestMetrics::Create("127.0.0.1:" + std::to_string((*first)->port()));
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
}

}  // namespace
}  // namespace gpuledger::ingest
