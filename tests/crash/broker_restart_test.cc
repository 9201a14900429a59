// Issue 4: "A broker stop/start in the middle of a stream loses nothing" and "Graceful SIGTERM
// finishes the batch and leaves cleanly". A real `gpuledger ingest` service process consumes
// from a broker of this test's own (the shared `kafka` fixture broker must not be restarted
// under other tests); the broker is stopped while ingest runs and started again on the same
// data and ports (ops/kafka/stop.sh --keep, start.sh --resume); more events are published; then
// ingest is asked to stop with SIGTERM. Every event must be in the ledger exactly once, the
// ledger must verify, and its stored offsets must be the end of every partition.
//
// GPULEDGER_TEST_SEED replays the events; GPULEDGER_BROKER_RESTART_EVENTS sets N (default
// 40,000 usage events). GPULEDGER_BIN names the `gpuledger` binary (default: the one built with
// this test).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/period.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/publisher.h"
#include "ingest/topics.h"
#include "ledger/ledger.h"
#include "ledger/verify.h"
#include "testsupport/kafka_env.h"
#include "testsupport/kafka_test.h"
#include "testsupport/process.h"
#include "testsupport/temp_dir.h"

namespace gpuledger {
namespace {

namespace v1 = gpuledger::v1;
using Clock = std::chrono::steady_clock;

constexpr int kPartitions = 3;
constexpr int kDefaultUsageEvents = 40'000;
const char* const kCsps[] = {"csp-a", "csp-b"};
const base::Period kPeriod{2026, 3};
// GPUs granted to each CSP's allocation.
constexpr uint32_t kGrantGpus = 8;
// How long the broker stays down while ingest runs.
constexpr auto kBrokerDown = std::chrono::seconds(5);
// How often the parent looks at the ledger and at the child. It polls another process (no
// thread of this test is synchronised by it).
constexpr auto kPollInterval = std::chrono::milliseconds(200);
// Longest ingest may take to record what was published (registry; all events).
constexpr auto kIngestTimeout = std::chrono::seconds(120);
// Longest ingest may take to leave after SIGTERM.
constexpr auto kStopTimeout = std::chrono::seconds(30);

using Identity = std::pair<std::string, std::string>;  // (source_id, event_id)

int UsageEvents() {
  const char* s = std::getenv("GPULEDGER_BROKER_RESTART_EVENTS");
  return s != nullptr ? std::max(2, std::atoi(s)) : kDefaultUsageEvents;
}

std::string OpsKafkaDir() {
#ifdef GPULEDGER_OPS_KAFKA_DIR
  return GPULEDGER_OPS_KAFKA_DIR;
#else
  return "";
#endif
}

int64_t MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

std::vector<char*> Argv(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  return argv;
}

// Runs `args` (stdout and stderr inherited) to its end; returns its exit code.
absl::StatusOr<int> RunToEnd(const std::vector<std::string>& args) {
  std::vector<char*> argv = Argv(args);
  std::cout.flush();
  std::cerr.flush();
  const pid_t pid = ::fork();
  if (pid < 0) return absl::ErrnoToStatus(errno, "fork");
  if (pid == 0) {
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return absl::ErrnoToStatus(errno, "waitpid");
  if (!WIFEXITED(status)) return absl::InternalError(absl::StrCat(args[0], " died: ", status));
  return WEXITSTATUS(status);
}

// A child process with stdout and stderr going to a file. Owned by the test thread; the
// destructor SIGKILLs and reaps a child that is still running (a failed test leaves no
// writer behind).
class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  absl::Status Start(const std::vector<std::string>& args, const std::string& log_path) {
    std::vector<char*> argv = Argv(args);
    std::cout.flush();
    std::cerr.flush();
    const pid_t pid = ::fork();
    if (pid < 0) return absl::ErrnoToStatus(errno, "fork");
    if (pid == 0) {
      const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd < 0 || ::dup2(fd, STDOUT_FILENO) < 0 || ::dup2(fd, STDERR_FILENO) < 0) ::_exit(126);
      ::close(fd);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    pid_ = pid;
    return absl::OkStatus();
  }

  // True while the child runs; once it has exited, false with `status()` set (reaped).
  bool Running() {
    if (pid_ <= 0) return false;
    const pid_t done = ::waitpid(pid_, &status_, WNOHANG);
    if (done == 0) return true;
    pid_ = -1;
    return false;
  }

  // Waits up to `timeout` for the child to exit; false if it still runs.
  bool WaitExit(Clock::duration timeout) {
    const Clock::time_point deadline = Clock::now() + timeout;
    while (Running()) {
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }

  void Signal(int sig) const {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  int status() const { return status_; }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
};

std::string DescribeExit(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return absl::StrCat("was killed by signal ", WTERMSIG(status));
  return absl::StrCat("ended with wait status ", status);
}

size_t CountLines(const std::string& text, const std::string& needle) {
  std::istringstream in(text);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) n += absl::StrContains(line, needle) ? 1 : 0;
  return n;
}

// A broker of this test's own, started with ops/kafka/start.sh. Owned by the test thread; the
// destructor always stops it and removes its run directory (ops/kafka/stop.sh RUN_DIR), also
// when the test fails; then it first shows the end of the broker's log. With GPULEDGER_KEEP_TMP
// set, the run directory is kept (stop.sh --keep) for a post-mortem.
class OwnBroker {
 public:
  explicit OwnBroker(std::string env_file) : env_file_(std::move(env_file)) {}
  OwnBroker(const OwnBroker&) = delete;
  OwnBroker& operator=(const OwnBroker&) = delete;
  ~OwnBroker() {
    if (run_dir_.empty()) return;
    if (::testing::Test::HasFailure()) {
      std::cout << "broker warnings and errors (" << run_dir_ << "/logs/server.log*):\n"
                << BrokerProblems() << std::endl;
    }
    if (std::getenv("GPULEDGER_KEEP_TMP") != nullptr) {
      (void)RunToEnd({Script("stop.sh"), "--keep", run_dir_});
    } else {
      (void)RunToEnd({Script("stop.sh"), run_dir_});
    }
  }

  absl::Status Start() { return Run({Script("start.sh"), "--env-file", env_file_}); }
  // Stops the broker, keeping its data and ports.
  absl::Status StopKeep() { return Run({Script("stop.sh"), "--keep", run_dir_}); }
  // Starts it again on the same run directory.
  absl::Status Resume() {
    return Run({Script("start.sh"), "--resume", run_dir_, "--env-file", env_file_});
  }

  const std::string& bootstrap() const { return bootstrap_; }
  const std::string& run_dir() const { return run_dir_; }

 private:
  static std::string Script(const std::string& name) { return OpsKafkaDir() + "/" + name; }

  // The last WARN and ERROR lines of the broker's runs (the first run's log is server.log.run1
  // after a resume).
  std::string BrokerProblems() const {
    std::string out;
    for (const char* name : {"server.log.run1", "server.log"}) {
      std::istringstream in(testing::ReadFile(absl::StrCat(run_dir_, "/logs/", name)));
      std::vector<std::string> lines;
      for (std::string line; std::getline(in, line);) {
        if (absl::StrContains(line, "] WARN ") || absl::StrContains(line, "] ERROR ")) {
          lines.push_back(line);
        }
      }
      const size_t from = lines.size() > 15 ? lines.size() - 15 : 0;
      for (size_t i = from; i < lines.size(); ++i)
        absl::StrAppend(&out, name, ": ", lines[i], "\n");
    }
    return out;
  }

  absl::Status Run(const std::vector<std::string>& args) {
    absl::StatusOr<int> rc = RunToEnd(args);
    if (!rc.ok()) return rc.status();
    // The env file names the run directory as soon as one exists (start.sh keeps it while a
    // resume fails): read it whatever the outcome, so that the destructor can clean up.
    std::ifstream in(env_file_);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("KAFKA_BOOTSTRAP=", 0) == 0) bootstrap_ = line.substr(16);
      if (line.rfind("KAFKA_RUN_DIR=", 0) == 0) run_dir_ = line.substr(14);
    }
    if (*rc != 0) return absl::InternalError(absl::StrCat(args[0], " exited with ", *rc));
    if (bootstrap_.empty() || run_dir_.empty()) {
      return absl::InternalError(absl::StrCat(env_file_, " names no broker"));
    }
    return absl::OkStatus();
  }

  std::string env_file_;
  std::string bootstrap_;
  std::string run_dir_;
};

struct Input {
  std::vector<ingest::EncodedEvent> registry;
  std::vector<ingest::EncodedEvent> usage;
  std::set<Identity> identities;
};

void Add(const std::string& topic, const std::string& source_id, const std::string& event_id,
         const google::protobuf::Message& m, std::vector<ingest::EncodedEvent>* events,
         Input* input) {
  // Keyed by event id, so that each topic's events spread over all of its partitions.
  events->push_back({topic, event_id, m.SerializeAsString()});
  EXPECT_TRUE(input->identities.insert({source_id, event_id}).second) << event_id << " twice";
}

// An institution and one allocation per CSP, then `n` usage events that every check accepts in
// any order: event i has the i-th slot of the period to itself (so no two intervals of an
// allocation overlap), inside its allocation's window and within its grant.
Input MakeInput(const ingest::TopicNames& topics, int n, std::mt19937_64& rng) {
  Input input;
  v1::RegistryEvent institution;
  institution.set_schema_version(1);
  institution.set_event_id("reg-uni");
  institution.mutable_institution()->set_institution_id("uni");
  institution.mutable_institution()->set_name("uni");
  institution.mutable_institution()->set_type(v1::ACADEMIA);
  Add(topics.Registry(), ingest::kOperatorSourceId, institution.event_id(), institution,
      &input.registry, &input);
  for (const char* csp : kCsps) {
    v1::RegistryEvent allocation;
    allocation.set_schema_version(1);
    allocation.set_event_id(absl::StrCat("reg-alloc-", csp));
    auto* a = allocation.mutable_allocation();
    a->set_allocation_id(absl::StrCat("alloc-", csp));
    a->set_institution_id("uni");
    a->set_program(v1::LEASE_RESEARCH);
    a->set_csp_id(csp);
    a->set_gpu_model(v1::H200);
    a->set_gpu_count(kGrantGpus);
    a->set_start_ms(kPeriod.StartMs());
    a->set_end_ms(kPeriod.EndMs());
    Add(topics.Registry(), ingest::kOperatorSourceId, allocation.event_id(), allocation,
        &input.registry, &input);
  }

  const int64_t slot_ms = (kPeriod.EndMs() - kPeriod.StartMs()) / n;
  std::map<std::string, uint64_t> producer_seq;
  for (int i = 0; i < n; ++i) {
    const std::string csp = kCsps[rng() % std::size(kCsps)];
    v1::UsageEvent e;
    e.set_schema_version(1);
    e.set_event_id(absl::StrCat("u-", i));
    e.set_csp_id(csp);
    e.set_producer_id("meter");
    e.set_producer_seq(++producer_seq[csp]);
    auto* u = e.mutable_usage();
    u->set_allocation_id(absl::StrCat("alloc-", csp));
    u->set_gpu_model(v1::H200);
    u->set_gpu_count(1 + static_cast<uint32_t>(rng() % kGrantGpus));
    const int64_t start = kPeriod.StartMs() + i * slot_ms;
    u->set_start_ms(start);
    u->set_end_ms(start + 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(slot_ms)));
    u->set_node_id(absl::StrCat("node-", i % 97));
    Add(topics.Usage(csp), csp, e.event_id(), e, &input.usage, &input);
  }
  return input;
}

// Options of a reader beside the running writer.
ledger::LedgerOptions ReadOnly() {
  ledger::LedgerOptions ro;
  ro.read_only = true;
  ro.create_if_missing = false;
  return ro;
}

// The ledger's head seq as a reader opening it now sees it (a read-only open sees the ledger
// as of the open, so each look opens it again).
absl::StatusOr<uint64_t> HeadNow(const std::string& db) {
  auto l = ledger::Ledger::Open(db, ReadOnly());
  if (!l.ok()) return l.status();
  return (*l)->head().seq;
}

class BrokerRestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    binary_ = testing::GpuledgerBinary();
    ASSERT_FALSE(binary_.empty()) << "set GPULEDGER_BIN to the gpuledger binary";
    ASSERT_EQ(::access(binary_.c_str(), X_OK), 0) << binary_ << " is not executable";
    ASSERT_FALSE(OpsKafkaDir().empty()) << "built without GPULEDGER_OPS_KAFKA_DIR";
    seed_ = testing::TestSeed();
    std::cout << "seed " << seed_ << " (GPULEDGER_TEST_SEED=" << seed_ << " replays it)\n";
    topics_ = ingest::TopicNames(absl::StrCat("br", seed_ % 1'000'000'007, "."));
    db_ = dir_.Sub("ledger");
    log_path_ = dir_.Sub("ingest.log");
  }

  absl::Status Publish(const std::vector<ingest::EncodedEvent>& events) {
    ingest::PublishOptions po;
    po.brokers = broker_.bootstrap();
    po.topics = topics_;
    po.partitions_if_created = kPartitions;
    return testing::PublishAll(events, po);
  }

  // The child's log, for failure messages.
  std::string LogTail() {
    return absl::StrCat("ingest log tail:\n", testing::TailLines(testing::ReadFile(log_path_), 40));
  }

  // Fails unless the ingest child still runs.
  void ExpectIngestRunning(const std::string& when) {
    ASSERT_TRUE(ingest_.Running())
        << "ingest " << DescribeExit(ingest_.status()) << " " << when << "\n"
        << LogTail();
  }

  // Polls the ledger until its head reaches `want` (and fails if it goes beyond: the test
  // publishes no more than that), while the child keeps running.
  void WaitForHead(uint64_t want, Clock::duration timeout, const std::string& what) {
    const Clock::time_point deadline = Clock::now() + timeout;
    absl::StatusOr<uint64_t> head = absl::UnavailableError("not looked yet");
    for (;;) {
      ASSERT_NO_FATAL_FAILURE(ExpectIngestRunning(absl::StrCat("while waiting for ", what)));
      head = HeadNow(db_);
      if (head.ok() && *head >= want) break;
      ASSERT_LT(Clock::now(), deadline)
          << what << ": ledger head "
          << (head.ok() ? absl::StrCat(*head) : head.status().ToString()) << " after "
          << std::chrono::duration_cast<std::chrono::seconds>(timeout).count() << " s, want "
          << want << "\n"
          << LogTail();
      std::this_thread::sleep_for(kPollInterval);
    }
    ASSERT_EQ(*head, want) << what << ": more entries than events published";
  }

  // Creates the usage topics, publishes the registry, starts `gpuledger ingest` as a service
  // and waits until it has recorded the registry. Usage topics exist before ingest subscribes
  // (else it finds them only at its next metadata refresh); the registry is recorded before any
  // usage arrives, so that no usage is PARKED.
  void StartIngestAfterRegistry(const std::vector<ingest::EncodedEvent>& registry) {
    const absl::Status created =
        ingest::EnsureTopics(broker_.bootstrap(), UsageTopics(), kPartitions);
    ASSERT_TRUE(created.ok()) << created;
    const absl::Status published = Publish(registry);
    ASSERT_TRUE(published.ok()) << published;
    // No --until-end: it runs until SIGTERM.
    std::vector<std::string> args = {binary_,          "--log-level", "info",
                                     "ingest",         "--brokers",   broker_.bootstrap(),
                                     "--db",           db_,           "--topic-prefix",
                                     topics_.prefix(), "--group",     absl::StrCat("br", seed_),
                                     "--unsigned"};
    if (ledger_topic_) {
      args.push_back("--node");
      args.push_back("n1");
    }
    const absl::Status spawned = ingest_.Start(args, log_path_);
    ASSERT_TRUE(spawned.ok()) << spawned;
    ASSERT_NO_FATAL_FAILURE(WaitForHead(registry.size(), kIngestTimeout, "the registry"));
  }

  // The broker goes away under the running service for kBrokerDown, and comes back on the same
  // data and port; the service must keep running throughout.
  void RestartBrokerUnderIngest() {
    const absl::StatusOr<uint64_t> head_at_stop = HeadNow(db_);
    ASSERT_TRUE(head_at_stop.ok()) << head_at_stop.status();
    const Clock::time_point stopping = Clock::now();
    const absl::Status stopped = broker_.StopKeep();
    ASSERT_TRUE(stopped.ok()) << stopped;
    const Clock::time_point down = Clock::now();
    while (Clock::now() - down < kBrokerDown) {
      ASSERT_NO_FATAL_FAILURE(ExpectIngestRunning("while the broker was down"));
      std::this_thread::sleep_for(kPollInterval);
    }
    const absl::StatusOr<uint64_t> head_while_down = HeadNow(db_);
    ASSERT_TRUE(head_while_down.ok()) << head_while_down.status();
    const absl::Status resumed = broker_.Resume();
    ASSERT_TRUE(resumed.ok()) << resumed;
    const int64_t down_ms = MsSince(down);
    ASSERT_NO_FATAL_FAILURE(ExpectIngestRunning("after the broker came back"));
    std::cout << "broker stopped in " << MsSince(stopping) - down_ms << " ms at ledger head "
              << *head_at_stop << ", down for " << down_ms
              << " ms (ingest kept running), ledger head " << *head_while_down
              << " when it came back" << std::endl;
  }

  // SIGTERM: the service finishes the batch in flight and leaves with status 0, saying so.
  void StopIngestWithSigterm(uint64_t head) {
    const Clock::time_point terminating = Clock::now();
    ingest_.Signal(SIGTERM);
    ASSERT_TRUE(ingest_.WaitExit(kStopTimeout))
        << "ingest still runs " << kStopTimeout.count() << " s after SIGTERM\n"
        << LogTail();
    EXPECT_TRUE(WIFEXITED(ingest_.status()) && WEXITSTATUS(ingest_.status()) == 0)
        << "ingest " << DescribeExit(ingest_.status()) << " after SIGTERM\n"
        << LogTail();
    const std::string log = testing::ReadFile(log_path_);
    EXPECT_TRUE(absl::StrContains(log, absl::StrCat("stopped at ledger head seq ", head)))
        << LogTail();
    std::cout << "ingest left " << MsSince(terminating) << " ms after SIGTERM; it logged "
              << CountLines(log, " warning ") << " warnings" << std::endl;
  }

  // Every event exactly once, nothing else, all accepted; the chain verifies; the stored offsets
  // are the end of every partition of every topic (1 registry partition, 3 per usage topic).
  void CheckLedger(const Input& input) {
    auto opened = ledger::Ledger::Open(db_, ReadOnly());
    ASSERT_TRUE(opened.ok()) << opened.status();
    const ledger::Ledger& l = **opened;
    EXPECT_EQ(l.head().seq, input.registry.size() + input.usage.size());
    std::set<Identity> seen;
    uint64_t not_accepted = 0;
    ASSERT_TRUE(l.Scan(1, [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
                   EXPECT_TRUE(seen.insert({e.entry.source_id(), e.entry.event_id()}).second)
                       << "twice: (" << e.entry.source_id() << ", " << e.entry.event_id() << ")";
                   if (e.entry.outcome() != v1::ACCEPTED) ++not_accepted;
                   return true;
                 }).ok());
    EXPECT_EQ(seen.size(), l.head().seq);
    EXPECT_TRUE(seen == input.identities) << "the ledger's events are not the published ones";
    EXPECT_EQ(not_accepted, 0u);
    auto report = ledger::Verify(l);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_TRUE(report->ok) << "Verify: FAILED at seq " << report->first_bad_seq << ": "
                            << report->problem;

    std::vector<std::string> topics = UsageTopics();
    topics.push_back(topics_.Registry());
    ledger::OffsetMap at_end;
    for (const std::string& topic : topics) {
      for (const auto& [partition, high] : testing::HighWatermarks(broker_.bootstrap(), topic)) {
        at_end[{topic, partition}] = high;
      }
    }
    EXPECT_EQ(at_end.size(), 1u + kPartitions * std::size(kCsps));
    const ledger::OffsetMap stored = l.Offsets();
    EXPECT_EQ(stored.size(), at_end.size());
    for (const auto& [tp, high] : at_end) {
      auto it = stored.find(tp);
      EXPECT_TRUE(it != stored.end() && it->second == high)
          << tp.topic << "[" << tp.partition << "]: high watermark " << high << ", stored offset "
          << (it == stored.end() ? std::string("absent") : absl::StrCat(it->second));
    }
  }

  std::vector<std::string> UsageTopics() const {
    std::vector<std::string> out;
    for (const char* csp : kCsps) out.push_back(topics_.Usage(csp));
    return out;
  }

  // The whole scenario; with `ledger_topic`, ingest publishes every commit to the ledger topic
  // (`--node`), through the broker's restart, and a standby built from the topic afterwards
  // holds the same ledger.
  void RunScenario(int n) {
    const Clock::time_point test_started = Clock::now();
    std::mt19937_64 rng(seed_);
    const Input input = MakeInput(topics_, n, rng);
    const uint64_t total = input.registry.size() + input.usage.size();
    const auto half = input.usage.begin() + static_cast<std::ptrdiff_t>(input.usage.size() / 2);
    const std::vector<ingest::EncodedEvent> first_half(input.usage.begin(), half);
    const std::vector<ingest::EncodedEvent> second_half(half, input.usage.end());

    const absl::Status started = broker_.Start();
    ASSERT_TRUE(started.ok()) << started;
    std::cout << "broker " << broker_.bootstrap() << " in " << broker_.run_dir() << std::endl;
    ASSERT_NO_FATAL_FAILURE(StartIngestAfterRegistry(input.registry));

    const absl::Status first = Publish(first_half);
    ASSERT_TRUE(first.ok()) << first;
    ASSERT_NO_FATAL_FAILURE(RestartBrokerUnderIngest());
    const absl::Status second = Publish(second_half);
    ASSERT_TRUE(second.ok()) << second;
    ASSERT_NO_FATAL_FAILURE(WaitForHead(total, kIngestTimeout, "every event"));
    const int64_t recorded_ms = MsSince(test_started);

    ASSERT_NO_FATAL_FAILURE(StopIngestWithSigterm(total));
    ASSERT_NO_FATAL_FAILURE(CheckLedger(input));
    if (ledger_topic_) {
      const std::string standby = dir_.Sub("standby");
      const absl::StatusOr<int> rc =
          RunToEnd({binary_, "ledger", "follow", "--brokers", broker_.bootstrap(), "--topic-prefix",
                    topics_.prefix(), "--db", standby, "--until-end"});
      ASSERT_TRUE(rc.ok()) << rc.status();
      ASSERT_EQ(*rc, 0) << "ledger follow failed";
      auto writer = ledger::Ledger::Open(db_, ReadOnly());
      auto copy = ledger::Ledger::Open(standby, ReadOnly());
      ASSERT_TRUE(writer.ok() && copy.ok());
      EXPECT_EQ((*copy)->head().seq, total);
      EXPECT_EQ((*copy)->head().hash, (*writer)->head().hash);
      EXPECT_EQ((*copy)->Offsets(), (*writer)->Offsets());
    }
    std::cout << "N " << n << ", head " << total << " (" << input.registry.size() << " registry + "
              << n << " usage), all recorded at " << recorded_ms << " ms, total "
              << MsSince(test_started) << " ms" << std::endl;
  }

  bool ledger_topic_ = false;
  std::string binary_;
  uint64_t seed_ = 0;
  ingest::TopicNames topics_;
  testing::TempDir dir_;
  std::string db_;
  std::string log_path_;
  // Destroyed in reverse order: the ingest child is gone before its broker is stopped.
  OwnBroker broker_{dir_.Sub("kafka.env")};
  Child ingest_;
};

TEST_F(BrokerRestartTest, BrokerStopStartMidStreamLosesNothingAndSigtermLeavesCleanly) {
  RunScenario(UsageEvents());
}

// The same with the ledger topic: commits in flight when the broker stops wait for it (a Kafka
// transaction that cannot end is tried again) instead of stopping ingest.
TEST_F(BrokerRestartTest, WithItsLedgerTopicIngestRidesOutTheRestartAndAStandbyHoldsTheSame) {
  ledger_topic_ = true;
  RunScenario(std::min(UsageEvents(), 10'000));
}

}  // namespace
}  // namespace gpuledger
