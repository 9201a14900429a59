// Crash test of the ledger's exactly-once guarantee (docs/LEDGER.md, "Guarantees"): a real
// `gpuledger ingest` process is SIGKILLed at random instants while it ingests ~50,000 events
// from a real Kafka broker into a signed ledger. After every kill the ledger, reopened
// read-only, must be a consistent prefix of the input whose stored offsets match its last entry
// in every partition (and whose checkpoints, counters and producer progress match its entries);
// after an uninterrupted restart every event must be in the ledger exactly once.
//
// GPULEDGER_TEST_SEED replays the plan (events, batch sizes, kill instants); where in the
// child's work a kill lands still depends on the machine. GPULEDGER_KILL_ROUNDS sets the number
// of kills (default 8). GPULEDGER_BIN names the `gpuledger` binary (default: the one built
// with this test).
#include <gtest/gtest.h>
#include <librdkafka/rdkafkacpp.h>
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
#include "ledger/signing.h"
#include "ledger/verify.h"
#include "testsupport/kafka_env.h"
#include "testsupport/temp_dir.h"

namespace gpuledger {
namespace {

namespace v1 = gpuledger::v1;
using Clock = std::chrono::steady_clock;

constexpr int kPartitions = 3;
constexpr int kUsageEvents = 50'000;
const char* const kCsps[] = {"csp-a", "csp-b"};
const base::Period kPeriod{2026, 3};
// GPUs granted to each CSP's allocation.
constexpr uint32_t kGrantGpus = 8;

constexpr int kDefaultRounds = 8;
// Kills land this long after the child was started (uniformly at random); the window adapts
// (see RunKillRounds).
constexpr int64_t kKillAfterMinMs = 50;
constexpr int64_t kKillAfterMaxMs = 1'500;
// --batch-max-messages of each child, uniformly at random.
constexpr int kBatchMessagesMin = 50;
constexpr int kBatchMessagesMax = 2'000;
// --checkpoint-interval of each ledger, uniformly at random: several checkpoints per run.
constexpr int kCheckpointIntervalMin = 100;
constexpr int kCheckpointIntervalMax = 5'000;
// Kills that must land mid-run (after the child's first commit, before it is done) for the
// test to mean anything, and the most extra rounds run to get them.
constexpr int kMidRunKillsWanted = 3;
constexpr int kExtraRoundsMax = 6;
// Kills that land before the child's first commit move the window later, up to this.
constexpr int64_t kKillAfterCapMs = 5'000;
// How often the parent looks whether the child has exited.
constexpr auto kPollInterval = std::chrono::milliseconds(1);
// Longest an uninterrupted ingest may take.
constexpr int64_t kFinalRunTimeoutMs = 120'000;

using Identity = std::pair<std::string, std::string>;  // (source_id, event_id)

struct Input {
  std::vector<ingest::EncodedEvent> registry;
  std::vector<ingest::EncodedEvent> usage;
  // The exact message value published for each event identity.
  std::map<Identity, std::string> value_by_identity;

  uint64_t size() const { return registry.size() + usage.size(); }
};

void Add(const std::string& topic, const std::string& source_id, const std::string& event_id,
         const google::protobuf::Message& m, std::vector<ingest::EncodedEvent>* events,
         Input* input) {
  // Keyed by event id, so that each topic's events spread over all of its partitions.
  events->push_back({topic, event_id, m.SerializeAsString()});
  if (!input->value_by_identity.emplace(Identity{source_id, event_id}, events->back().value)
           .second) {
    ADD_FAILURE() << "the input must hold no duplicate: " << event_id;
  }
}

// An institution and one allocation per CSP, then kUsageEvents distinct usage events over the
// CSPs' topics that every check accepts in any order: each CSP's intervals are disjoint, inside
// its allocation's window and within its grant.
Input MakeInput(const ingest::TopicNames& topics, std::mt19937_64& rng) {
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

  const int64_t slot_ms = (kPeriod.EndMs() - kPeriod.StartMs()) / kUsageEvents;
  std::map<std::string, uint64_t> producer_seq;
  for (int i = 0; i < kUsageEvents; ++i) {
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

// Offsets the broker reports as the end of each partition of `topics`.
ledger::OffsetMap HighWatermarks(const std::string& brokers, const std::set<std::string>& topics) {
  std::string err;
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  conf->set("bootstrap.servers", brokers, err);
  conf->set("group.id", "watermark-probe", err);
  std::unique_ptr<RdKafka::KafkaConsumer> c(RdKafka::KafkaConsumer::create(conf.get(), err));
  RdKafka::Metadata* raw = nullptr;
  EXPECT_EQ(c->metadata(true, nullptr, &raw, 10'000), RdKafka::ERR_NO_ERROR);
  std::unique_ptr<RdKafka::Metadata> metadata(raw);
  ledger::OffsetMap out;
  for (const RdKafka::TopicMetadata* t :
       metadata ? *metadata->topics() : RdKafka::Metadata::TopicMetadataVector()) {
    if (!topics.contains(t->topic())) continue;
    for (const RdKafka::PartitionMetadata* p : *t->partitions()) {
      int64_t low = 0;
      int64_t high = 0;
      EXPECT_EQ(c->query_watermark_offsets(t->topic(), p->id(), &low, &high, 10'000),
                RdKafka::ERR_NO_ERROR);
      out[{t->topic(), p->id()}] = high;
    }
  }
  c->close();
  return out;
}

std::string PartitionName(const ledger::TopicPartition& tp) {
  return absl::StrCat(tp.topic, "[", tp.partition, "]");
}

int KillRounds() {
  const char* s = std::getenv("GPULEDGER_KILL_ROUNDS");
  return s != nullptr ? std::max(1, std::atoi(s)) : kDefaultRounds;
}

std::string GpuledgerBinary() {
  if (const char* s = std::getenv("GPULEDGER_BIN")) return s;
#ifdef GPULEDGER_BIN_PATH
  return GPULEDGER_BIN_PATH;
#else
  return "";
#endif
}

int RandomBatch(std::mt19937_64& rng) {
  return std::uniform_int_distribution<int>(kBatchMessagesMin, kBatchMessagesMax)(rng);
}

int64_t MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// How a child ingest process ended.
struct ChildEnd {
  bool killed = false;  // we SIGKILLed it (it had not exited by then)
  int status = 0;       // from waitpid
  int64_t ran_ms = 0;   // from fork to exit or kill
};

std::string Describe(const ChildEnd& end) {
  if (end.killed) return absl::StrCat("SIGKILLed at ", end.ran_ms, " ms");
  if (WIFEXITED(end.status)) {
    return absl::StrCat("exited ", WEXITSTATUS(end.status), " after ", end.ran_ms, " ms");
  }
  return absl::StrCat("died (wait status ", end.status, ") after ", end.ran_ms, " ms");
}

// Runs `args` as a child process and ends it: it is SIGKILLed `kill_after_ms` after the fork
// unless it exits first. Always reaps the child, so no writer outlives the check that follows.
absl::StatusOr<ChildEnd> RunChild(const std::vector<std::string>& args, int64_t kill_after_ms) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::cout.flush();
  std::cerr.flush();
  const Clock::time_point started = Clock::now();
  const pid_t pid = ::fork();
  if (pid < 0) return absl::ErrnoToStatus(errno, "fork");
  if (pid == 0) {
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ChildEnd end;
  const Clock::time_point deadline = started + std::chrono::milliseconds(kill_after_ms);
  for (;;) {
    const pid_t done = ::waitpid(pid, &end.status, WNOHANG);
    if (done < 0) return absl::ErrnoToStatus(errno, "waitpid");
    if (done == pid) break;
    if (Clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      if (::waitpid(pid, &end.status, 0) != pid) return absl::ErrnoToStatus(errno, "waitpid");
      // It may have exited on its own between the last look and the signal.
      end.killed = WIFSIGNALED(end.status) && WTERMSIG(end.status) == SIGKILL;
      break;
    }
    std::this_thread::sleep_for(kPollInterval);
  }
  end.ran_ms = MsSince(started);
  return end;
}

// What a check of the ledger found; `head_*` also lets the next check prove nothing committed
// was lost or rewritten.
struct LedgerState {
  uint64_t head_seq = 0;
  ledger::Digest head_hash = ledger::kZeroDigest;
  std::set<Identity> identities;
  // Per partition: the offset after the last entry from it.
  ledger::OffsetMap next_offsets;
  // Per partition: the next offset to consume, as the ledger stores it.
  ledger::OffsetMap stored_offsets;
  // Per CSP: the producer sequence numbers of its entries.
  std::map<std::string, std::set<uint64_t>> producer_seqs;
};

// Walks every entry: seqs dense from 1; each an accepted input event with the payload that was
// published, recorded once; offsets dense from 0 within each partition (the input holds no
// duplicate, so every consumed message made an entry).
absl::Status ScanEntries(const ledger::Ledger& l, const Input& input, LedgerState* state) {
  return l.Scan(1, [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
    const v1::LedgerEntry& x = e.entry;
    if (e.seq != state->head_seq + 1 || x.seq() != e.seq) {
      return absl::DataLossError(absl::StrCat("seq ", e.seq, " (entry says ", x.seq(),
                                              ") where seq ", state->head_seq + 1, " was due"));
    }
    const Identity id{x.source_id(), x.event_id()};
    auto published = input.value_by_identity.find(id);
    if (published == input.value_by_identity.end() || published->second != x.payload()) {
      return absl::DataLossError(absl::StrCat("seq ", e.seq, " (", x.source_id(), ", ",
                                              x.event_id(), ") is not a published event"));
    }
    if (x.outcome() != v1::ACCEPTED) {
      return absl::DataLossError(
          absl::StrCat("seq ", e.seq, " is rejected: ", x.reason_code(), " ", x.reason_detail()));
    }
    if (!state->identities.insert(id).second) {
      return absl::DataLossError(absl::StrCat("seq ", e.seq, ": ", x.event_id(), " twice"));
    }
    const ledger::TopicPartition tp{x.topic(), x.partition()};
    auto [next, inserted] = state->next_offsets.try_emplace(tp, 0);
    if (x.offset() < next->second) {
      return absl::DataLossError(absl::StrCat("seq ", e.seq, ": offset ", x.offset(), " of ",
                                              PartitionName(tp), " is not after offset ",
                                              next->second - 1));
    }
    if (x.offset() != next->second) {
      return absl::DataLossError(absl::StrCat("seq ", e.seq, ": offset ", x.offset(), " of ",
                                              PartitionName(tp), " skips from ", next->second));
    }
    next->second = x.offset() + 1;
    if (x.producer_seq() != 0) state->producer_seqs[x.source_id()].insert(x.producer_seq());
    state->head_seq = e.seq;
    state->head_hash = e.hash;
    return true;
  });
}

// The stored offsets are exactly (last entry's offset + 1) of each partition with an entry.
void CheckStoredOffsets(const LedgerState& state) {
  for (const auto& [tp, next] : state.next_offsets) {
    auto it = state.stored_offsets.find(tp);
    EXPECT_TRUE(it != state.stored_offsets.end() && it->second == next)
        << PartitionName(tp) << ": last entry has offset " << next - 1 << ", stored offset is "
        << (it == state.stored_offsets.end() ? std::string("absent") : absl::StrCat(it->second));
  }
  for (const auto& [tp, next] : state.stored_offsets) {
    EXPECT_TRUE(state.next_offsets.contains(tp))
        << PartitionName(tp) << ": stored offset " << next << " but no entry from it";
  }
}

// Checkpoints exist for exactly the multiples of the interval up to the head; counters and
// producer progress describe exactly the entries.
void CheckSideRecords(const ledger::Ledger& l, const LedgerState& state) {
  const uint64_t interval = l.checkpoint_interval();
  ASSERT_GT(interval, 0u) << "the ledger is not signed";
  std::vector<uint64_t> checkpoints;
  ASSERT_TRUE(l.ScanCheckpoints([&](const v1::Checkpoint& cp) {
                 checkpoints.push_back(cp.seq());
                 return absl::OkStatus();
               }).ok());
  std::vector<uint64_t> want_checkpoints;
  for (uint64_t seq = interval; seq <= state.head_seq; seq += interval) {
    want_checkpoints.push_back(seq);
  }
  EXPECT_EQ(checkpoints, want_checkpoints) << "checkpoint every " << interval << " entries";

  const v1::LedgerCounters counters = l.Counters();
  EXPECT_EQ(counters.accepted(), state.head_seq);
  EXPECT_EQ(counters.rejected(), 0u);
  EXPECT_EQ(counters.duplicates(), 0u);

  std::map<std::string, std::set<uint64_t>> unseen = state.producer_seqs;
  ASSERT_TRUE(l.ScanProducers([&](const std::string& source_id, const std::string& producer_id,
                                  const ledger::ProducerProgress& p) {
                 const std::set<uint64_t>& seqs = unseen[source_id];
                 uint64_t contiguous = 0;
                 while (seqs.contains(contiguous + 1)) ++contiguous;
                 const uint64_t highest = seqs.empty() ? 0 : *seqs.rbegin();
                 EXPECT_EQ(producer_id, "meter");
                 EXPECT_FALSE(p.overflowed());
                 EXPECT_EQ(p.contiguous(), contiguous) << source_id;
                 EXPECT_EQ(p.highest(), highest) << source_id;
                 EXPECT_EQ(p.MissingCount(), highest - seqs.size()) << source_id;
                 unseen.erase(source_id);
                 return absl::OkStatus();
               }).ok());
  for (const auto& [source_id, seqs] : unseen) {
    EXPECT_TRUE(seqs.empty()) << source_id << ": " << seqs.size() << " entries, no progress";
  }
}

// A writer killed while it was creating the ledger (its first ~25 ms here) leaves a directory
// that a read-only open refuses until the next writer opens it: RocksDB's files, the column
// families and the format marker are written one after another. Nothing was committed, so
// nothing is lost. These errors cannot describe a ledger that has committed anything.
bool CreationWasKilled(const absl::Status& open_status) {
  const absl::string_view m = open_status.message();
  return absl::IsNotFound(open_status) ||
         (absl::IsInvalidArgument(open_status) &&
          absl::StrContains(m, "Column family not found")) ||
         (absl::IsFailedPrecondition(open_status) && absl::StrContains(m, "no format marker"));
}

// Opens the ledger at `path` read-only, after its writer exited or was killed
// (`writer_killed`), and checks that it is a consistent prefix of `input`:
// Verify (with the operator's public `key`) passes; the entries are as ScanEntries demands; the
// stored offsets, checkpoints, counters and producer progress match them exactly; and the
// entries committed before (`before`) are still there, unchanged.
void CheckConsistentPrefix(const std::string& path, const Input& input,
                           const ledger::SignatureVerifier& key, bool writer_killed,
                           const LedgerState& before, LedgerState* state) {
  ledger::LedgerOptions ro;
  ro.read_only = true;
  auto opened = ledger::Ledger::Open(path, ro);
  if (writer_killed && before.head_seq == 0 && CreationWasKilled(opened.status())) {
    std::cout << "  note: the ledger's creation was killed: " << opened.status() << std::endl;
    *state = LedgerState();
    return;
  }
  ASSERT_TRUE(opened.ok()) << opened.status();
  const ledger::Ledger& l = **opened;

  auto report = ledger::Verify(l, &key);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->ok) << "Verify: FAILED at seq " << report->first_bad_seq << ": "
                          << report->problem;

  LedgerState now;
  const absl::Status scanned = ScanEntries(l, input, &now);
  ASSERT_TRUE(scanned.ok()) << scanned;
  EXPECT_EQ(l.head().seq, now.head_seq);
  EXPECT_TRUE(l.head().hash == now.head_hash) << "head hash is not the last entry's";
  now.stored_offsets = l.Offsets();
  CheckStoredOffsets(now);
  // A child killed while opening may leave a ledger that is not signed yet, but only empty.
  if (l.checkpoint_interval() > 0 || now.head_seq > 0) {
    ASSERT_NO_FATAL_FAILURE(CheckSideRecords(l, now));
    EXPECT_EQ(report->last_checkpoint_seq, now.head_seq - now.head_seq % l.checkpoint_interval());
  }

  // Append-only across crashes: what was committed before is still there, byte for byte.
  ASSERT_GE(now.head_seq, before.head_seq) << "committed entries disappeared";
  if (before.head_seq > 0) {
    auto old_head = l.Get(before.head_seq);
    ASSERT_TRUE(old_head.ok()) << old_head.status();
    EXPECT_TRUE(old_head->hash == before.head_hash) << "entry " << before.head_seq << " changed";
  }
  *state = std::move(now);
}

class IngestKillTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    brokers_ = testing::KafkaBootstrap(&why);
    ASSERT_FALSE(brokers_.empty()) << why;
    binary_ = GpuledgerBinary();
    ASSERT_FALSE(binary_.empty()) << "set GPULEDGER_BIN to the gpuledger binary";
    ASSERT_EQ(::access(binary_.c_str(), X_OK), 0) << binary_ << " is not executable";
    seed_ = testing::TestSeed();
    std::cout << "seed " << seed_ << " (GPULEDGER_TEST_SEED=" << seed_ << " replays it)\n";
    // Topic names are unique per run, not per seed, so that a replay on the same broker does
    // not find the topics of the run it replays.
    run_tag_ = std::random_device{}() % 1'000'000;
    // A signed ledger, as in production: checkpoints are part of what a crash must not tear.
    auto signer = ledger::Signer::Generate();
    ASSERT_TRUE(signer.ok()) << signer.status();
    auto key = ledger::SignatureVerifier::FromPublicKeyPem((*signer)->PublicKeyPem());
    ASSERT_TRUE(key.ok()) << key.status();
    key_ = std::move(*key);
    signing_key_file_ = dir_.Sub("signing-key.pem");
    std::ofstream out(signing_key_file_);
    out << (*signer)->PrivateKeyPem();
    out.close();
    ASSERT_TRUE(out.good()) << "cannot write " << signing_key_file_;
  }

  // One input under a topic namespace of its own, and the ledger that ingests it.
  struct Generation {
    int number = 0;
    ingest::TopicNames topics;
    Input input;
    std::string db;
    int checkpoint_interval = 0;
    LedgerState state;  // as last checked
  };

  // `gpuledger ingest --until-end` into `g.db`. Each run joins a consumer group of its own: a
  // SIGKILLed member stays in its group until its session times out (librdkafka's default
  // session.timeout.ms, 45 s), and a successor in the same group gets no partition until then.
  std::vector<std::string> IngestCommand(const Generation& g, int batch_messages) {
    return {binary_,
            "--log-level",
            "warn",
            "ingest",
            "--brokers",
            brokers_,
            "--db",
            g.db,
            "--topic-prefix",
            g.topics.prefix(),
            "--group",
            absl::StrCat("kill", seed_, "-", ++runs_),
            "--until-end",
            "--batch-max-messages",
            absl::StrCat(batch_messages),
            "--signing-key",
            signing_key_file_,
            "--checkpoint-interval",
            absl::StrCat(g.checkpoint_interval)};
  }

  absl::Status Publish(const Generation& g, const std::vector<ingest::EncodedEvent>& events) {
    ingest::PublishOptions po;
    po.brokers = brokers_;
    po.topics = g.topics;
    po.partitions_if_created = kPartitions;
    auto published = ingest::Publish(events, po);
    if (!published.ok()) return published.status();
    if (published->published != events.size()) {
      return absl::InternalError(
          absl::StrCat(published->published, " of ", events.size(), " events published"));
    }
    return absl::OkStatus();
  }

  // Runs ingest to the end without a kill and checks the ledger.
  void IngestToEnd(std::mt19937_64& rng, Generation* g, const std::string& what) {
    const int batch = RandomBatch(rng);
    auto child = RunChild(IngestCommand(*g, batch), kFinalRunTimeoutMs);
    ASSERT_TRUE(child.ok()) << child.status();
    ASSERT_TRUE(!child->killed && WIFEXITED(child->status) && WEXITSTATUS(child->status) == 0)
        << what << ": ingest " << Describe(*child);
    const uint64_t head_before = g->state.head_seq;
    ASSERT_NO_FATAL_FAILURE(
        CheckConsistentPrefix(g->db, g->input, *key_, false, g->state, &g->state));
    std::cout << what << ": ledger-" << g->number << ", batch " << batch << ", " << Describe(*child)
              << ", head " << head_before << " -> " << g->state.head_seq << " of "
              << g->input.size() << std::endl;
  }

  // Makes generation `number`: creates its usage topics, publishes its registry events, ingests
  // them to the end into a new ledger, and only then publishes its usage, so that no usage event is
  // ever consumed before the allocation it uses (which would make it wait, parked, in the ledger).
  void StartGeneration(int number, std::mt19937_64& rng, Generation* g) {
    const Clock::time_point started = Clock::now();
    *g = Generation();
    g->number = number;
    g->topics = ingest::TopicNames(
        absl::StrCat("kill", seed_ % 1'000'000'007, "-", run_tag_, "g", number, "."));
    g->input = MakeInput(g->topics, rng);
    g->db = dir_.Sub(absl::StrCat("ledger-", number));
    g->checkpoint_interval =
        std::uniform_int_distribution<int>(kCheckpointIntervalMin, kCheckpointIntervalMax)(rng);
    std::vector<std::string> usage_topics;
    for (const char* csp : kCsps) usage_topics.push_back(g->topics.Usage(csp));
    const absl::Status created = ingest::EnsureTopics(brokers_, usage_topics, kPartitions);
    ASSERT_TRUE(created.ok()) << created;
    const absl::Status registry = Publish(*g, g->input.registry);
    ASSERT_TRUE(registry.ok()) << registry;
    ASSERT_NO_FATAL_FAILURE(IngestToEnd(rng, g, "registry"));
    ASSERT_EQ(g->state.head_seq, g->input.registry.size());
    const absl::Status usage = Publish(*g, g->input.usage);
    ASSERT_TRUE(usage.ok()) << usage;
    std::cout << "ledger-" << number << ": " << g->input.size() << " events under "
              << g->topics.prefix() << "*, checkpoint every " << g->checkpoint_interval
              << " entries, ready in " << MsSince(started) << " ms" << std::endl;
  }

  // Starts `gpuledger ingest` `rounds` times (more if too few kills land mid-run), SIGKILLs it at
  // a random instant and checks the ledger after each kill.
  void RunKillRounds(std::mt19937_64& rng, int rounds, Generation* g) {
    const int mid_run_kills_wanted = std::min(kMidRunKillsWanted, rounds);
    int mid_run_kills = 0;
    int64_t kill_after_min_ms = kKillAfterMinMs;
    int64_t kill_after_max_ms = kKillAfterMaxMs;
    auto another_round = [&](int round) {
      return round <= rounds ||
             (mid_run_kills < mid_run_kills_wanted && round <= rounds + kExtraRoundsMax);
    };
    for (int round = 1; another_round(round); ++round) {
      const uint64_t total = g->input.size();
      const int batch = RandomBatch(rng);
      const int64_t kill_after_ms =
          std::uniform_int_distribution<int64_t>(kill_after_min_ms, kill_after_max_ms)(rng);
      auto child = RunChild(IngestCommand(*g, batch), kill_after_ms);
      ASSERT_TRUE(child.ok()) << child.status();
      const ChildEnd end = *child;
      if (!end.killed) {
        ASSERT_TRUE(WIFEXITED(end.status) && WEXITSTATUS(end.status) == 0)
            << "round " << round << ": ingest " << Describe(end);
      }
      const Clock::time_point check_started = Clock::now();
      const uint64_t head_before = g->state.head_seq;
      CheckConsistentPrefix(g->db, g->input, *key_, end.killed, g->state, &g->state);
      const uint64_t head = g->state.head_seq;
      // Killed while it was making progress: it committed something this time and was not done.
      const bool mid_run = end.killed && head > head_before && head < total;
      mid_run_kills += mid_run ? 1 : 0;
      std::cout << "round " << round << ": ledger-" << g->number << ", batch " << batch
                << ", kill planned at " << kill_after_ms << " ms (of " << kill_after_min_ms << ".."
                << kill_after_max_ms << "), " << Describe(end) << ", head " << head_before << " -> "
                << head << " of " << total << (mid_run ? " (mid-run kill)" : "") << ", checked in "
                << MsSince(check_started) << " ms" << std::endl;
      ASSERT_FALSE(HasFailure()) << "round " << round << ", ledger " << g->db;
      if (head == total && another_round(round + 1)) {
        // Nothing is left to interrupt: a new generation, and kills before the time it took.
        kill_after_min_ms = std::min(kKillAfterMinMs, end.ran_ms / 4);
        kill_after_max_ms = std::max(kill_after_min_ms + 1, end.ran_ms * 3 / 4);
        ASSERT_NO_FATAL_FAILURE(StartGeneration(g->number + 1, rng, g));
      } else if (end.killed && head == head_before && mid_run_kills < mid_run_kills_wanted) {
        // Killed before its first commit (start-up, recovery, joining the group), and too few
        // kills have interrupted real work yet: kill no sooner than that next time.
        kill_after_min_ms = std::min(kKillAfterCapMs / 2, std::max(kill_after_min_ms, end.ran_ms));
        kill_after_max_ms =
            std::min(kKillAfterCapMs, std::max(kill_after_max_ms, kill_after_min_ms * 2));
      }
    }
    std::cout << mid_run_kills << " kill(s) landed mid-run" << std::endl;
    EXPECT_GE(mid_run_kills, mid_run_kills_wanted)
        << "too few kills interrupted an ingest that had committed something and was not done";
  }

  std::string brokers_;
  std::string binary_;
  uint64_t seed_ = 0;
  uint32_t run_tag_ = 0;
  testing::TempDir dir_;
  std::string signing_key_file_;
  std::unique_ptr<ledger::SignatureVerifier> key_;
  int runs_ = 0;  // child processes started
};

TEST_F(IngestKillTest, SigkillMidIngestLeavesConsistentPrefixAndRestartRecordsEachEventOnce) {
  const Clock::time_point test_started = Clock::now();
  std::mt19937_64 rng(seed_);
  Generation g;
  ASSERT_NO_FATAL_FAILURE(StartGeneration(0, rng, &g));
  ASSERT_NO_FATAL_FAILURE(RunKillRounds(rng, KillRounds(), &g));

  // The restart, to completion: every event exactly once.
  ASSERT_NO_FATAL_FAILURE(IngestToEnd(rng, &g, "final"));
  EXPECT_EQ(g.state.head_seq, g.input.size());
  std::set<Identity> want;
  for (const auto& [id, value] : g.input.value_by_identity) want.insert(id);
  EXPECT_TRUE(g.state.identities == want)
      << g.state.identities.size() << " distinct events recorded, " << want.size() << " published";

  // Every partition of every topic was read to its end, and the ledger says so (it stores no
  // offset for a partition that never held a message).
  std::set<std::string> topics;
  for (const auto* events : {&g.input.registry, &g.input.usage}) {
    for (const ingest::EncodedEvent& e : *events) topics.insert(e.topic);
  }
  ledger::OffsetMap at_end = HighWatermarks(brokers_, topics);
  std::set<std::string> topics_seen;
  for (const auto& [tp, high] : at_end) topics_seen.insert(tp.topic);
  EXPECT_EQ(topics_seen, topics);
  std::erase_if(at_end, [](const auto& kv) { return kv.second == 0; });
  EXPECT_EQ(at_end.size(), g.state.stored_offsets.size());
  for (const auto& [tp, high] : at_end) {
    auto it = g.state.stored_offsets.find(tp);
    EXPECT_TRUE(it != g.state.stored_offsets.end() && it->second == high)
        << PartitionName(tp) << ": high watermark " << high << ", stored offset "
        << (it == g.state.stored_offsets.end() ? std::string("absent") : absl::StrCat(it->second));
  }
  std::cout << "total " << MsSince(test_started) << " ms" << std::endl;
}

}  // namespace
}  // namespace gpuledger
