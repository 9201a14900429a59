// A writer that publishes each commit before writing it, and a standby that applies them
// (Ledger::StartPublishing, Ledger::ApplyCommit): the standby's ledger is the writer's, key for
// key, and a commit that does not follow is refused with nothing applied. The log here is a
// vector; the ledger topic on a real broker is tested in tests/integration/ledger_topic_test.cc.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ledger/ledger.h"
#include "ledger/signing.h"
#include "ledger/verify.h"
#include "ledger_testing.h"
#include "testsupport/temp_dir.h"

namespace gpuledger::ledger {
namespace {

namespace v1 = gpuledger::v1;
using testing_support::OpenOrDie;
using testing_support::RawDb;
using testing_support::Usage;

// The commit log as a list: offsets are indexes.
class MemoryLog : public CommitLog {
 public:
  explicit MemoryLog(std::string writer, uint64_t epoch = 1, bool takeover = true)
      : writer_(std::move(writer)), epoch_(epoch), takeover_(takeover) {}
  absl::StatusOr<int64_t> Publish(v1::LedgerCommit* commit) override {
    if (fail) return absl::UnavailableError("the log is down");
    commit->set_epoch(epoch_);
    commit->set_writer(writer_);
    commit->set_takeover(takeover_);
    takeover_ = false;
    commits.push_back(*commit);
    return static_cast<int64_t>(commits.size()) - 1 + base;
  }
  std::vector<v1::LedgerCommit> commits;
  int64_t base = 0;  // the offset of commits[0]
  bool fail = false;

 private:
  std::string writer_;
  uint64_t epoch_;
  bool takeover_;
};

// Every key and value of every column family.
std::map<std::string, std::map<std::string, std::string>> Contents(const std::string& path) {
  RawDb raw(path);
  std::map<std::string, std::map<std::string, std::string>> out;
  for (const char* cf : {"default", "entries", "dedup", "offsets", "checkpoints", "producers"}) {
    for (const std::string& key : raw.Keys(cf)) out[cf][key] = raw.Get(cf, key);
  }
  return out;
}

class ReplicationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto signer = Signer::Generate();
    ASSERT_TRUE(signer.ok()) << signer.status();
    signer_ = std::move(*signer);
  }
  LedgerOptions WriterOptions() const {
    LedgerOptions o;
    o.signer = signer_;
    o.checkpoint_interval = 3;
    return o;
  }
  static LedgerOptions StandbyOptions() {
    LedgerOptions o;
    o.replica = true;
    return o;
  }
  // A few commits: new events, an exact duplicate (counted only), a conflicting one, offsets,
  // producer sequence numbers and periodic checkpoints.
  static void WriteSome(Ledger& l, int64_t from_offset, int commits) {
    int64_t offset = from_offset;
    for (int c = 0; c < commits; ++c) {
      for (int i = 0; i < 4; ++i, ++offset) {
        Candidate cand = Usage(absl::StrCat("e", offset), absl::StrCat("payload-", offset), offset);
        cand.producer_id = "p1";
        cand.producer_seq = static_cast<uint64_t>(offset + 1);
        ASSERT_TRUE(l.Append(cand).ok());
      }
      ASSERT_TRUE(l.Append(Usage(absl::StrCat("e", offset - 1),
                                 absl::StrCat("payload-", offset - 1), offset))
                      .ok());  // an exact duplicate
      ASSERT_TRUE(l.Append(Usage(absl::StrCat("e", offset - 2), "changed", offset + 1)).ok());
      offset += 2;
      ASSERT_TRUE(l.AdvanceOffset({"gpuledger.usage.csp-a", 0}, offset).ok());
      ASSERT_TRUE(l.Commit().ok());
    }
  }
  static absl::Status ApplyAll(Ledger& standby, const MemoryLog& log, size_t from = 0) {
    for (size_t i = from; i < log.commits.size(); ++i) {
      absl::Status st = standby.ApplyCommit(log.commits[i], log.base + static_cast<int64_t>(i));
      if (!st.ok()) return st;
    }
    return absl::OkStatus();
  }
  testing::TempDir dir_;
  std::shared_ptr<const Signer> signer_;
};

TEST_F(ReplicationTest, StandbyHoldsTheWritersLedgerKeyForKey) {
  const std::string writer_path = dir_.path() + "/writer";
  const std::string standby_path = dir_.path() + "/standby";
  auto log = std::make_shared<MemoryLog>("node-a");
  {
    auto writer = OpenOrDie(writer_path, WriterOptions());
    ASSERT_TRUE(writer->StartPublishing(log).ok());
    WriteSome(*writer, 0, 5);
    EXPECT_EQ(writer->replication().epoch(), 1u);
    EXPECT_EQ(writer->replication().writer(), "node-a");
    EXPECT_EQ(writer->replication().next_offset(), static_cast<int64_t>(log->commits.size()));
  }
  ASSERT_EQ(log->commits.size(), 6u);  // the start commit and five
  EXPECT_TRUE(log->commits[0].takeover());
  EXPECT_TRUE(log->commits[0].entries().empty());
  {
    auto standby = OpenOrDie(standby_path, StandbyOptions());
    ASSERT_TRUE(ApplyAll(*standby, *log).ok());
    EXPECT_EQ(standby->checkpoint_interval(), 3u);
    EXPECT_EQ(standby->public_key_pem(), signer_->PublicKeyPem());
    auto verifier = SignatureVerifier::FromPublicKeyPem(signer_->PublicKeyPem());
    ASSERT_TRUE(verifier.ok());
    VerifyOptions vo;
    vo.allow_unsigned_tail = true;
    auto report = Verify(*standby, verifier->get(), vo);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_TRUE(report->ok) << report->problem;
    EXPECT_EQ(report->entries_checked, 25u);
    EXPECT_GE(report->checkpoints_verified, 8u);
    EXPECT_EQ(standby->Counters().duplicates(), 5u);
    EXPECT_EQ(standby->Append(Usage("x", "x", 99)).status().code(),
              absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_EQ(Contents(writer_path), Contents(standby_path));
}

TEST_F(ReplicationTest, AWriterCatchesUpWithWhatItPublishedBeforeACrash) {
  // The writer published its last commits and crashed before writing them: its ledger misses
  // them, and applies them from the log before it writes again.
  const std::string path = dir_.path() + "/writer";
  const std::string before = dir_.path() + "/before";
  auto log = std::make_shared<MemoryLog>("node-a");
  {
    auto writer = OpenOrDie(path, WriterOptions());
    ASSERT_TRUE(writer->StartPublishing(log).ok());
    WriteSome(*writer, 0, 2);
  }
  std::filesystem::copy(path, before, std::filesystem::copy_options::recursive);
  // The same log goes on: the writer's restart, then two more commits.
  const size_t published = log->commits.size();
  {
    auto writer = OpenOrDie(path, WriterOptions());
    auto more = std::make_shared<MemoryLog>("node-a", 1, false);
    more->base = static_cast<int64_t>(published);
    ASSERT_TRUE(writer->StartPublishing(more).ok());
    WriteSome(*writer, 100, 2);
    for (const auto& c : more->commits) log->commits.push_back(c);
  }
  auto old = OpenOrDie(before, WriterOptions());
  const uint64_t head_before = old->head().seq;
  // What it wrote itself is not applied again.
  EXPECT_FALSE(old->ApplyCommit(log->commits[1], 1).ok());
  EXPECT_EQ(old->head().seq, head_before);
  ASSERT_TRUE(ApplyAll(*old, *log, published).ok());
  auto writer = OpenOrDie(dir_.path() + "/reference", StandbyOptions());
  ASSERT_TRUE(ApplyAll(*writer, *log).ok());
  EXPECT_EQ(old->head().hash, writer->head().hash);
  EXPECT_EQ(old->head().seq, head_before + 10);
  EXPECT_EQ(old->Offsets(), writer->Offsets());
}

TEST_F(ReplicationTest, ACommitThatDoesNotFollowIsRefusedWithNothingApplied) {
  auto log = std::make_shared<MemoryLog>("node-a");
  {
    auto writer = OpenOrDie(dir_.path() + "/writer", WriterOptions());
    ASSERT_TRUE(writer->StartPublishing(log).ok());
    WriteSome(*writer, 0, 3);
  }
  auto standby = OpenOrDie(dir_.path() + "/standby", StandbyOptions());
  ASSERT_TRUE(standby->ApplyCommit(log->commits[0], 0).ok());
  ASSERT_TRUE(standby->ApplyCommit(log->commits[1], 1).ok());
  const Head head = standby->head();
  const v1::LedgerCommit next = log->commits[2];
  struct Case {
    std::string name;
    std::function<void(v1::LedgerCommit*)> change;
    int64_t offset = 2;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"an entry's bytes changed",
       [](v1::LedgerCommit* c) { c->mutable_entries(1)->mutable_entry()->back() ^= 1; }, 2,
       "does not chain"},
      {"an entry's stored hash changed",
       [](v1::LedgerCommit* c) { c->mutable_entries(0)->mutable_hash()->at(0) ^= 1; }, 2,
       "does not chain"},
      {"an entry left out", [](v1::LedgerCommit* c) { c->mutable_entries()->DeleteSubrange(2, 1); },
       2, "comes next"},
      {"the commit after next", [](v1::LedgerCommit*) {}, 3, ""},
      {"a lower epoch", [](v1::LedgerCommit* c) { c->set_epoch(0); }, 2, "fenced writer"},
      {"another writer in the epoch", [](v1::LedgerCommit* c) { c->set_writer("node-b"); }, 2,
       "without taking over"},
      {"a takeover in the same epoch", [](v1::LedgerCommit* c) { c->set_takeover(true); }, 2,
       "two writers took over"},
      {"an offset already applied", [](v1::LedgerCommit*) {}, 1, "already applied"},
      {"a head record that names another entry",
       [](v1::LedgerCommit* c) {
         for (auto& w : *c->mutable_writes()) {
           if (w.key() == "meta/head") w.mutable_value()->at(7) ^= 1;
         }
       },
       2, "head record"},
      {"a write to the entries",
       [](v1::LedgerCommit* c) {
         v1::StateWrite* w = c->add_writes();
         w->set_column_family("entries");
         w->set_key(std::string(8, '\0'));
       },
       2, "column family 'entries'"},
      {"a write of the replication state",
       [](v1::LedgerCommit* c) {
         v1::StateWrite* w = c->add_writes();
         w->set_column_family("default");
         w->set_key("meta/replication");
       },
       2, "each ledger keeps itself"},
      {"another format", [](v1::LedgerCommit* c) { c->set_format_version(9); }, 2, "format"},
  };
  for (const Case& k : cases) {
    v1::LedgerCommit changed = k.name == "the commit after next" ? log->commits[3] : next;
    k.change(&changed);
    absl::Status st = standby->ApplyCommit(changed, k.offset);
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << k.name << ": " << st;
    EXPECT_NE(st.message().find(k.says), std::string::npos) << k.name << ": " << st;
    EXPECT_EQ(standby->head().seq, head.seq) << k.name;
    EXPECT_EQ(standby->head().hash, head.hash) << k.name;
    EXPECT_EQ(standby->replication().next_offset(), 2) << k.name;
  }
  // The real next commit still applies after every refusal.
  ASSERT_TRUE(standby->ApplyCommit(next, 2).ok());
  ASSERT_TRUE(standby->ApplyCommit(log->commits[3], 3).ok());
}

TEST_F(ReplicationTest, ATakeoverStartsAHigherEpochAndTheOldWriterIsRefusedAfterIt) {
  auto log_a = std::make_shared<MemoryLog>("node-a");
  {
    auto writer = OpenOrDie(dir_.path() + "/a", WriterOptions());
    ASSERT_TRUE(writer->StartPublishing(log_a).ok());
    WriteSome(*writer, 0, 1);
  }
  auto standby = OpenOrDie(dir_.path() + "/b", StandbyOptions());
  ASSERT_TRUE(ApplyAll(*standby, *log_a).ok());
  standby.reset();
  auto b = OpenOrDie(dir_.path() + "/b", WriterOptions());
  auto log_b = std::make_shared<MemoryLog>("node-b", 2, true);
  log_b->base = static_cast<int64_t>(log_a->commits.size());
  ASSERT_TRUE(b->StartPublishing(log_b).ok());
  WriteSome(*b, 50, 1);
  EXPECT_EQ(b->replication().epoch(), 2u);
  // A follower sees a's commits, b's takeover and b's commit; then a commit a made after it,
  // had a not been fenced, is refused.
  auto c = OpenOrDie(dir_.path() + "/c", StandbyOptions());
  ASSERT_TRUE(ApplyAll(*c, *log_a).ok());
  for (size_t i = 0; i < log_b->commits.size(); ++i) {
    ASSERT_TRUE(c->ApplyCommit(log_b->commits[i], log_b->base + static_cast<int64_t>(i)).ok());
  }
  v1::LedgerCommit zombie = log_a->commits.back();
  zombie.set_prev_hash(ToBytes(c->head().hash));
  absl::Status st = c->ApplyCommit(zombie, 100);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("a fenced writer published after the takeover"), std::string::npos)
      << st;
  EXPECT_EQ(c->head().hash, b->head().hash);
}

TEST_F(ReplicationTest, ACommitTheLogRefusesIsNotWritten) {
  auto log = std::make_shared<MemoryLog>("node-a");
  auto writer = OpenOrDie(dir_.path() + "/a", WriterOptions());
  ASSERT_TRUE(writer->StartPublishing(log).ok());
  WriteSome(*writer, 0, 1);
  const Head head = writer->head();
  log->fail = true;
  ASSERT_TRUE(writer->Append(Usage("late", "late", 40)).ok());
  EXPECT_EQ(writer->Commit().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(writer->head().seq, head.seq);
  // A writer whose log failed writes nothing more until it starts again.
  log->fail = false;
  ASSERT_TRUE(writer->Append(Usage("later", "later", 41)).ok());
  EXPECT_FALSE(writer->Commit().ok());
  writer.reset();
  auto reopened = OpenOrDie(dir_.path() + "/a", WriterOptions());
  EXPECT_EQ(reopened->head().seq, head.seq);
}

TEST_F(ReplicationTest, ALedgerWrittenWithoutATopicDoesNotStartOne) {
  auto writer = OpenOrDie(dir_.path() + "/a", WriterOptions());
  ASSERT_TRUE(writer->Append(Usage("e1", "p1", 0)).ok());
  ASSERT_TRUE(writer->Commit().ok());
  absl::Status st = writer->StartPublishing(std::make_shared<MemoryLog>("node-a"));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  EXPECT_NE(st.message().find("written without a ledger topic"), std::string::npos) << st;
}

}  // namespace
}  // namespace gpuledger::ledger
