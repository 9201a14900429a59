// Issue 8, item 8: a CSP cannot publish as another (topic identity) and cannot read another's
// feed. Against a real broker with SASL/PLAIN and the ACL layout of docs/OPERATIONS.md
// (`ops/kafka/start.sh --sasl`, then `ops/kafka/acls.sh`: the `kafka_sasl` CTest fixture), with
// the real `gpuledger` binary given each principal's credentials by --kafka-config:
//   - csp-a publishes to its own topic; to csp-b's it is refused (TOPIC_AUTHORIZATION_FAILED),
//     and `gpuledger publish` exits 1 naming the topic and the refusal, without hanging;
//   - csp-a reads neither csp-b's topic nor the registry or rejected topic;
//   - ingest, as gpuledger-ingest, records every event published exactly once, and an event in
//     csp-a's topic naming csp-b is rejected as CSP_TOPIC_MISMATCH.
// The broker is this test's own; topics have their production names.
#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <librdkafka/rdkafkacpp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/kafka_config.h"
#include "ingest/publisher.h"
#include "ingest/reasons.h"
#include "ingest/topics.h"
#include "ledger/ledger.h"
#include "testsupport/process.h"
#include "testsupport/temp_dir.h"

extern char** environ;

namespace gpuledger {
namespace {

namespace v1 = gpuledger::v1;
constexpr int64_t kHour = 3'600'000;
constexpr int64_t kT0 = 1'772'000'000'000;  // early March 2026
constexpr int kUsagePartitions = 3;
constexpr int kCspAEvents = 40;
constexpr int kCspBEvents = 30;
// Longest any one command may take before the test calls it a hang, s.
constexpr int kCommandTimeoutS = 40;
// Longest a read probe waits for the broker's verdict, ms.
constexpr int64_t kProbeTimeoutMs = 15'000;

// KEY=VALUE from the env file the kafka_sasl fixture wrote, or "".
std::string EnvFileValue(const std::string& key) {
  const char* file = std::getenv("GPULEDGER_KAFKA_SASL_ENV");
  if (file == nullptr) return "";
  std::ifstream in(file);
  std::string line;
  std::string value;
  while (std::getline(in, line)) {
    if (line.rfind(key + "=", 0) == 0) value = line.substr(key.size() + 1);
  }
  return value;
}

struct RunResult {
  bool timed_out = false;
  int exit_code = -1;  // -1 unless the process exited normally
  int signal = 0;      // the signal that ended it, if any
  std::string output;  // stdout and stderr
};

// Runs `args` (args[0] a path), output to `log`, killing it after kCommandTimeoutS.
RunResult RunChild(const std::vector<std::string>& args, const std::string& log) {
  RunResult r;
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) {
    r.output = absl::StrCat("cannot start ", args[0]);
    return r;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kCommandTimeoutS);
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      r.timed_out = true;
      break;
    }
    ::usleep(20'000);  // polling for the child's end, not synchronising with it
  }
  if (!r.timed_out && WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (!r.timed_out && WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  r.output = testing::ReadFile(log);
  return r;
}

std::string Describe(const RunResult& r) {
  return absl::StrCat(r.timed_out ? "timed out" : "", " exit ", r.exit_code, " signal ", r.signal,
                      "; output:\n", testing::TailLines(r.output, 30));
}

// What the broker lets a principal do with one partition of a topic.
enum class Read { kAllowed, kDenied, kNoVerdict };

struct Probe {
  Read read = Read::kNoVerdict;
  std::string detail;  // errors seen on the way
};

class KafkaAclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    bootstrap_ = EnvFileValue("KAFKA_SASL_BOOTSTRAP");
    sasl_dir_ = EnvFileValue("KAFKA_SASL_DIR");
    ASSERT_FALSE(bootstrap_.empty() || sasl_dir_.empty())
        << "no KAFKA_SASL_BOOTSTRAP/KAFKA_SASL_DIR in $GPULEDGER_KAFKA_SASL_ENV: run through "
           "ctest, whose kafka_sasl fixture starts the broker (ops/kafka/start.sh --sasl)";
    for (const char* who : {"admin", "csp-a", "csp-b", "gpuledger-ingest", "gpuledger-operator"}) {
      auto config = ingest::ReadKafkaConfigFile(Credentials(who));
      ASSERT_TRUE(config.ok()) << config.status();
      config_[who] = *config;
    }
    // The cluster administrator creates the topics; nobody else may.
    ASSERT_TRUE(ingest::EnsureTopics(bootstrap_, config_["admin"],
                                     {topics_.Usage("csp-a"), topics_.Usage("csp-b")},
                                     kUsagePartitions)
                    .ok());
    ASSERT_TRUE(ingest::EnsureTopics(bootstrap_, config_["admin"],
                                     {topics_.Registry(), topics_.Rejected()}, 1)
                    .ok());
  }

  std::string Credentials(const std::string& who) const {
    return absl::StrCat(sasl_dir_, "/", who, ".properties");
  }

  // Tries to read `topic` from its start as `who` (consumer group `group`, which is only used
  // to find a coordinator: partition 0 is assigned, not subscribed).
  Probe TryRead(const std::string& who, const std::string& topic, const std::string& group) {
    Probe probe;
    std::string err;
    std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    for (const auto& [key, value] :
         std::vector<std::pair<std::string, std::string>>{{"bootstrap.servers", bootstrap_},
                                                          {"group.id", group},
                                                          {"enable.partition.eof", "true"},
                                                          {"enable.auto.commit", "false"},
                                                          {"log_level", "0"}}) {
      EXPECT_EQ(conf->set(key, value, err), RdKafka::Conf::CONF_OK) << key << ": " << err;
    }
    for (const auto& [key, value] : config_[who].properties) conf->set(key, value, err);
    std::unique_ptr<RdKafka::KafkaConsumer> consumer(
        RdKafka::KafkaConsumer::create(conf.get(), err));
    if (!consumer) {
      probe.detail = err;
      return probe;
    }
    // A topic the principal may not even describe is refused in the metadata (librdkafka then
    // never fetches, and an assigned partition just waits); one it may describe but not read
    // is refused in the fetch.
    std::unique_ptr<RdKafka::Topic> handle(
        RdKafka::Topic::create(consumer.get(), topic, nullptr, err));
    RdKafka::Metadata* raw = nullptr;
    const RdKafka::ErrorCode asked = consumer->metadata(false, handle.get(), &raw, 10'000);
    std::unique_ptr<RdKafka::Metadata> metadata(raw);
    if (asked != RdKafka::ERR_NO_ERROR) {
      absl::StrAppend(&probe.detail, "metadata: ", RdKafka::err2str(asked), "; ");
    } else if (metadata->topics()->size() == 1 &&
               metadata->topics()->front()->err() == RdKafka::ERR_TOPIC_AUTHORIZATION_FAILED) {
      probe.read = Read::kDenied;
      absl::StrAppend(&probe.detail,
                      "metadata: ", RdKafka::err2str(metadata->topics()->front()->err()), "; ");
      consumer->close();
      return probe;
    }
    std::vector<RdKafka::TopicPartition*> parts = {
        RdKafka::TopicPartition::create(topic, 0, RdKafka::Topic::OFFSET_BEGINNING)};
    consumer->assign(parts);
    RdKafka::TopicPartition::destroy(parts);
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(kProbeTimeoutMs);
    while (probe.read == Read::kNoVerdict && std::chrono::steady_clock::now() < deadline) {
      std::unique_ptr<RdKafka::Message> m(consumer->consume(200));
      switch (m->err()) {
        case RdKafka::ERR_NO_ERROR:
        case RdKafka::ERR__PARTITION_EOF:
          if (m->topic_name() == topic) probe.read = Read::kAllowed;
          break;
        case RdKafka::ERR_TOPIC_AUTHORIZATION_FAILED:
          probe.read = Read::kDenied;
          absl::StrAppend(&probe.detail, m->errstr(), "; ");
          break;
        case RdKafka::ERR__TIMED_OUT:
          break;
        default:  // e.g. no rights on the group: not the question asked here
          absl::StrAppend(&probe.detail, m->errstr(), "; ");
          break;
      }
    }
    consumer->close();
    return probe;
  }

  // Sum of the end offsets of the `partitions` partitions of `topic`, as the administrator
  // sees them.
  int64_t MessagesIn(const std::string& topic, int partitions) {
    std::string err;
    std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    conf->set("bootstrap.servers", bootstrap_, err);
    conf->set("group.id", "acl-test-admin", err);
    for (const auto& [key, value] : config_["admin"].properties) conf->set(key, value, err);
    std::unique_ptr<RdKafka::KafkaConsumer> c(RdKafka::KafkaConsumer::create(conf.get(), err));
    int64_t total = 0;
    for (int32_t p = 0; p < partitions; ++p) {
      int64_t low = 0;
      int64_t high = 0;
      const RdKafka::ErrorCode code = c->query_watermark_offsets(topic, p, &low, &high, 10'000);
      EXPECT_EQ(code, RdKafka::ERR_NO_ERROR) << topic << " [" << p << "]";
      total += high;
    }
    c->close();
    return total;
  }

  // `gpuledger ARGS... --brokers SASL --kafka-config WHO.properties`, output in LOG.
  RunResult Gpuledger(const std::string& who, std::vector<std::string> args,
                      const std::string& log) {
    return Gpuledger(config_[who], Credentials(who), std::move(args), log);
  }
  // The same with the credentials `config` read from `file`.
  RunResult Gpuledger(const ingest::KafkaConfig& config, const std::string& file,
                      std::vector<std::string> args, const std::string& log) {
    args.insert(args.begin(), testing::GpuledgerBinary());
    for (const std::string& a :
         {std::string("--brokers"), bootstrap_, std::string("--kafka-config"), file}) {
      args.push_back(a);
    }
    RunResult r = RunChild(args, dir_.Sub(log));
    // Secret values never reach a log line.
    for (const auto& [key, value] : config.properties) {
      if (ingest::IsSecretKafkaKey(key)) {
        EXPECT_EQ(r.output.find(value), std::string::npos) << log << " shows " << key;
      }
    }
    return r;
  }

  std::string bootstrap_;
  std::string sasl_dir_;
  std::map<std::string, ingest::KafkaConfig> config_;
  ingest::TopicNames topics_;  // production names: the broker is this test's own
  testing::TempDir dir_;
};

v1::UsageEvent UsageOf(const std::string& csp, const std::string& allocation, int n) {
  v1::UsageEvent e;
  e.set_schema_version(1);
  e.set_event_id(absl::StrCat(csp, "-", allocation, "-", n));
  e.set_csp_id(csp);
  e.set_producer_id("meter");
  e.set_producer_seq(n);
  auto* u = e.mutable_usage();
  u->set_allocation_id(allocation);
  u->set_gpu_model(v1::H200);
  u->set_gpu_count(1);
  u->set_start_ms(kT0 + n * kHour);
  u->set_end_ms(kT0 + n * kHour + kHour / 2);
  u->set_node_id("node-1");
  return e;
}

v1::RegistryEvent AllocationEvent(const std::string& id, const std::string& csp) {
  v1::RegistryEvent e;
  e.set_schema_version(1);
  e.set_event_id(absl::StrCat("r-", id));
  auto* a = e.mutable_allocation();
  a->set_allocation_id(id);
  a->set_institution_id("uni");
  a->set_program(v1::GOV_ADVANCED);
  a->set_csp_id(csp);
  a->set_gpu_model(v1::H200);
  a->set_gpu_count(4);
  a->set_start_ms(kT0);
  a->set_end_ms(kT0 + 30 * 24 * kHour);
  return e;
}

// Writes `events` as JSON lines (the input of `gpuledger publish`).
template <typename Event>
std::string WriteJsonLines(const testing::TempDir& dir, const std::string& name,
                           const std::vector<Event>& events) {
  const std::string path = dir.Sub(name);
  std::ofstream out(path);
  for (const Event& e : events) {
    std::string line;
    EXPECT_TRUE(google::protobuf::util::MessageToJsonString(e, &line).ok());
    out << line << "\n";
  }
  return path;
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST_F(KafkaAclTest, ACspReadsNeitherAnothersFeedNorTheLedgerTopics) {
  // Each refusal below is the broker's, for this principal and topic: the same probe as
  // gpuledger-ingest, whose ACLs allow the read, gets to the partition's end (a probe that
  // could not tell the two apart would fail there).
  for (const std::string& topic :
       {topics_.Usage("csp-b"), topics_.Registry(), topics_.Rejected(), topics_.Usage("csp-a")}) {
    const Probe p = TryRead("csp-a", topic, "csp-a");
    EXPECT_EQ(p.read, Read::kDenied) << "csp-a reading " << topic << ": " << p.detail;
  }
  const Probe b = TryRead("csp-b", topics_.Usage("csp-a"), "csp-b");
  EXPECT_EQ(b.read, Read::kDenied) << "csp-b reading csp-a's feed: " << b.detail;

  for (const std::string& topic :
       {topics_.Usage("csp-a"), topics_.Usage("csp-b"), topics_.Registry()}) {
    const Probe p = TryRead("gpuledger-ingest", topic, "gpuledger-ingest");
    EXPECT_EQ(p.read, Read::kAllowed) << "ingest reading " << topic << ": " << p.detail;
  }
  // Ingest writes the rejected topic but does not read it; the operator's monitor does.
  EXPECT_EQ(TryRead("gpuledger-ingest", topics_.Rejected(), "gpuledger-ingest").read,
            Read::kDenied);
  const Probe op = TryRead("gpuledger-operator", topics_.Rejected(), "gpuledger-rejected-monitor");
  EXPECT_EQ(op.read, Read::kAllowed) << op.detail;
}

TEST_F(KafkaAclTest, WrongCredentialsAreReportedAtOnce) {
  // librdkafka retries a refused login forever; gpuledger publish stops and says why.
  const std::string file = dir_.Sub("wrong.properties");
  {
    std::ofstream out(file);
    for (const auto& [key, value] : config_["csp-a"].properties) {
      out << key << "=" << (key == "sasl.password" ? "not-" + value : value) << "\n";
    }
  }
  ::chmod(file.c_str(), 0600);
  auto wrong = ingest::ReadKafkaConfigFile(file);
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  const std::string usage =
      WriteJsonLines(dir_, "one.jsonl", std::vector<v1::UsageEvent>{UsageOf("csp-a", "a1", 1)});
  const auto started = std::chrono::steady_clock::now();
  RunResult r = Gpuledger(*wrong, file, {"publish", "--kind", "usage", usage}, "wrong.log");
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_LT(took, std::chrono::seconds(10)) << "waited out a timeout instead";
  EXPECT_PRED2(Contains, testing::TailLines(r.output, 1),
               "the broker refused this client's credentials")
      << r.output;
}

TEST_F(KafkaAclTest, EachCspPublishesOnlyAsItselfAndIngestRecordsEveryEventOnce) {
  // The operator announces the institution and one allocation per CSP.
  v1::RegistryEvent inst;
  inst.set_schema_version(1);
  inst.set_event_id("r-uni");
  inst.mutable_institution()->set_institution_id("uni");
  inst.mutable_institution()->set_name("University");
  inst.mutable_institution()->set_type(v1::ACADEMIA);
  const std::string registry =
      WriteJsonLines(dir_, "registry.jsonl",
                     std::vector<v1::RegistryEvent>{inst, AllocationEvent("a1", "csp-a"),
                                                    AllocationEvent("b1", "csp-b")});
  RunResult r = Gpuledger("gpuledger-operator", {"publish", "--kind", "registry", registry},
                          "operator-publish.log");
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  // The operator may write the registry but not create it: "exists" is assumed, and said.
  EXPECT_PRED2(Contains, r.output,
               "not authorized to create topic gpuledger.registry (TOPIC_AUTHORIZATION_FAILED)")
      << r.output;

  // Each CSP publishes its own usage to its own topic.
  std::vector<v1::UsageEvent> a_events;
  for (int n = 1; n <= kCspAEvents; ++n) a_events.push_back(UsageOf("csp-a", "a1", n));
  std::vector<v1::UsageEvent> b_events;
  for (int n = 1; n <= kCspBEvents; ++n) b_events.push_back(UsageOf("csp-b", "b1", n));
  r = Gpuledger("csp-a",
                {"publish", "--kind", "usage", WriteJsonLines(dir_, "csp-a.jsonl", a_events)},
                "csp-a-publish.log");
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_PRED2(Contains, r.output,
               absl::StrCat("published ", kCspAEvents, " usage event(s) to gpuledger.usage.csp-a"));
  r = Gpuledger("csp-b",
                {"publish", "--kind", "usage", WriteJsonLines(dir_, "csp-b.jsonl", b_events)},
                "csp-b-publish.log");
  ASSERT_EQ(r.exit_code, 0) << Describe(r);

  // csp-a publishing csp-b's usage goes to csp-b's topic, which the broker refuses it.
  const int64_t b_before = MessagesIn(topics_.Usage("csp-b"), kUsagePartitions);
  EXPECT_EQ(b_before, kCspBEvents);
  std::vector<v1::UsageEvent> forged;
  // (Inside b1's window and free of overlaps: let through, they would be accepted as csp-b's.)
  for (int n = 1; n <= 5; ++n) forged.push_back(UsageOf("csp-b", "b1", 500 + n));
  r = Gpuledger("csp-a",
                {"publish", "--kind", "usage", WriteJsonLines(dir_, "forged.jsonl", forged)},
                "csp-a-forges-csp-b.log");
  EXPECT_FALSE(r.timed_out) << Describe(r);
  EXPECT_EQ(r.signal, 0) << Describe(r);
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  const std::string last_line = testing::TailLines(r.output, 1);
  EXPECT_PRED2(Contains, last_line, "gpuledger.usage.csp-b") << r.output;
  EXPECT_PRED2(Contains, last_line, "TOPIC_AUTHORIZATION_FAILED") << r.output;
  EXPECT_EQ(MessagesIn(topics_.Usage("csp-b"), kUsagePartitions), b_before)
      << "the broker took csp-a's forgery";

  // What a CSP can do: put another's name inside an event on its own topic. Ingest records the
  // topic's CSP as the source and rejects it.
  v1::UsageEvent impostor = UsageOf("csp-b", "b1", 600);
  impostor.set_event_id("impostor");
  ingest::PublishOptions as_a;
  as_a.brokers = bootstrap_;
  as_a.kafka_config = config_["csp-a"];
  ASSERT_TRUE(
      ingest::Publish({{topics_.Usage("csp-a"), "b1", impostor.SerializeAsString()}}, as_a).ok());

  // Ingest, as gpuledger-ingest with its ACLs, reads both feeds and the registry.
  const std::string db = dir_.Sub("ledger");
  r = Gpuledger("gpuledger-ingest", {"ingest", "--db", db, "--unsigned", "--until-end"},
                "ingest.log");
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_FALSE(Contains(r.output, "not delivered")) << r.output;

  ledger::LedgerOptions lo;
  lo.read_only = true;
  lo.create_if_missing = false;
  auto ledger = ledger::Ledger::Open(db, lo);
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  std::map<std::pair<std::string, std::string>, int> seen;  // (source, event id) → entries
  std::string impostor_reason;
  uint64_t accepted = 0;
  ASSERT_TRUE((*ledger)
                  ->Scan(1,
                         [&](const ledger::StoredEntry& s) -> absl::StatusOr<bool> {
                           ++seen[{s.entry.source_id(), s.entry.event_id()}];
                           if (s.entry.event_id() == "impostor") {
                             impostor_reason = s.entry.reason_code();
                             EXPECT_EQ(s.entry.topic(), topics_.Usage("csp-a"));
                           } else if (s.entry.outcome() == v1::ACCEPTED) {
                             ++accepted;
                           } else {
                             ADD_FAILURE() << s.entry.event_id() << " " << s.entry.reason_code();
                           }
                           return true;
                         })
                  .ok());
  const size_t expected = 3 + kCspAEvents + kCspBEvents + 1;
  EXPECT_EQ((*ledger)->head().seq, expected);
  EXPECT_EQ(seen.size(), expected) << "lost or foreign events";
  EXPECT_EQ(accepted, expected - 1);
  for (const auto& [id, n] : seen) EXPECT_EQ(n, 1) << id.first << "/" << id.second << " doubled";
  for (const auto& e : a_events) EXPECT_EQ(seen.count({"csp-a", e.event_id()}), 1u);
  for (const auto& e : b_events) EXPECT_EQ(seen.count({"csp-b", e.event_id()}), 1u);
  for (const auto& e : forged) EXPECT_EQ(seen.count({"csp-b", e.event_id()}), 0u);
  EXPECT_EQ(seen.count({"csp-a", "impostor"}), 1u) << "recorded under its topic's CSP";
  EXPECT_EQ(impostor_reason, ingest::reason::kCspTopicMismatch);
  EXPECT_EQ((*ledger)->Counters().duplicates(), 0u);

  // Its notice reached the rejected topic (ingest's Write ACL there).
  EXPECT_EQ(MessagesIn(topics_.Rejected(), 1), 1);
}

}  // namespace
}  // namespace gpuledger
