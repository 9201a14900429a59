// The ledger topic on the real broker (ingest/ledger_topic.h): a writer publishes every commit
// in a Kafka transaction before writing it; a standby applies the topic and holds the same
// ledger; a takeover fences the old writer, whose next commit fails and whose restart is refused;
// and a writer that took over without fencing (another transactional id) is caught by the
// standbys, not silently merged.
#include "ingest/ledger_topic.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "ledger/ledger.h"
#include "ledger/signing.h"
#include "ledger/verify.h"
#include "testsupport/kafka_test.h"

namespace gpuledger {
namespace {

namespace v1 = gpuledger::v1;

class LedgerTopicTest : public testing::KafkaTest {
 protected:
  LedgerTopicTest() : KafkaTest("lt") {}
  void SetUp() override {
    KafkaTest::SetUp();
    auto signer = ledger::Signer::Generate();
    ASSERT_TRUE(signer.ok()) << signer.status();
    signer_ = std::move(*signer);
  }
  ingest::LedgerTopicOptions Topic(const std::string& node) const {
    ingest::LedgerTopicOptions o;
    o.brokers = brokers_;
    o.topic = topics_.Ledger();
    o.node = node;
    o.timeout_ms = 20'000;
    return o;
  }
  std::unique_ptr<ledger::Ledger> Open(const std::string& name, bool replica = false) {
    ledger::LedgerOptions o;
    if (replica) {
      o.replica = true;
    } else {
      o.signer = signer_;
      o.checkpoint_interval = 7;
    }
    auto l = ledger::Ledger::Open(absl::StrCat(dir_.path(), "/", name), o);
    EXPECT_TRUE(l.ok()) << l.status();
    return l.ok() ? std::move(*l) : nullptr;
  }
  // `commits` commits of 5 usage events each, and the offsets they consumed.
  absl::Status Write(ledger::Ledger& l, int commits) {
    for (int c = 0; c < commits; ++c) {
      for (int i = 0; i < 5; ++i) {
        ledger::Candidate cand;
        cand.source = v1::SOURCE_USAGE;
        cand.payload = absl::StrCat("payload-", next_offset_);
        cand.topic = topics_.Usage("csp-a");
        cand.offset = next_offset_;
        cand.recorded_at_ms = 1'000 + next_offset_;
        cand.source_id = "csp-a";
        cand.event_id = absl::StrCat("e", next_offset_);
        ++next_offset_;
        auto r = l.Append(cand);
        if (!r.ok()) return r.status();
      }
      absl::Status st = l.AdvanceOffset({topics_.Usage("csp-a"), 0}, next_offset_);
      if (st.ok()) st = l.Commit();
      if (!st.ok()) return st;
    }
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> Follow(ledger::Ledger& l) {
    const std::atomic<bool> stop{false};
    return ingest::FollowLedgerTopic(Topic(""), l, stop, true);
  }
  void ExpectVerifies(const ledger::Ledger& l) {
    auto verifier = ledger::SignatureVerifier::FromPublicKeyPem(signer_->PublicKeyPem());
    ASSERT_TRUE(verifier.ok());
    ledger::VerifyOptions vo;
    vo.allow_unsigned_tail = true;
    auto report = ledger::Verify(l, verifier->get(), vo);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_TRUE(report->ok) << report->problem;
    EXPECT_GT(report->checkpoints_verified, 0u);
  }
  std::shared_ptr<const ledger::Signer> signer_;
  int64_t next_offset_ = 0;
};

TEST_F(LedgerTopicTest, AStandbyHoldsTheWritersLedger) {
  auto a = Open("a");
  ASSERT_TRUE(ingest::StartLedgerTopicWriter(Topic("node-a"), *a, false).ok());
  ASSERT_TRUE(Write(*a, 6).ok());
  auto b = Open("b", true);
  auto applied = Follow(*b);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(*applied, 7u);  // the start commit and six
  EXPECT_EQ(b->head().seq, 30u);
  EXPECT_EQ(b->head().hash, a->head().hash);
  EXPECT_EQ(b->Offsets(), a->Offsets());
  EXPECT_EQ(b->replication().SerializeAsString(), a->replication().SerializeAsString());
  ExpectVerifies(*b);
  // Following on picks up where it stopped.
  ASSERT_TRUE(Write(*a, 2).ok());
  applied = Follow(*b);
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(*applied, 2u);
  EXPECT_EQ(b->head().hash, a->head().hash);
  // A restarted writer goes on in its epoch.
  a.reset();
  a = Open("a");
  ASSERT_TRUE(ingest::StartLedgerTopicWriter(Topic("node-a"), *a, false).ok());
  ASSERT_TRUE(Write(*a, 1).ok());
  ASSERT_TRUE(Follow(*b).ok());
  EXPECT_EQ(b->head().hash, a->head().hash);
  EXPECT_EQ(b->replication().epoch(), 1u);
}

TEST_F(LedgerTopicTest, ATakeoverFencesTheOldWriterAndItsRestartIsRefused) {
  auto a = Open("a");
  ASSERT_TRUE(ingest::StartLedgerTopicWriter(Topic("node-a"), *a, false).ok());
  ASSERT_TRUE(Write(*a, 3).ok());
  {
    auto standby = Open("b", true);
    ASSERT_TRUE(Follow(*standby).ok());
  }
  auto b = Open("b");
  ASSERT_TRUE(ingest::StartLedgerTopicWriter(Topic("node-b"), *b, true).ok());
  EXPECT_EQ(b->replication().epoch(), 2u);
  EXPECT_EQ(b->head().hash, a->head().hash);
  // The old writer, still running, is fenced: its next commit fails and is never applied.
  absl::Status fenced = Write(*a, 1);
  EXPECT_EQ(fenced.code(), absl::StatusCode::kFailedPrecondition) << fenced;
  EXPECT_NE(fenced.message().find("fenced"), std::string::npos) << fenced;
  ASSERT_TRUE(Write(*b, 2).ok());
  // Started again, it is refused before it fences anybody.
  a.reset();
  a = Open("a");
  absl::Status refused = ingest::StartLedgerTopicWriter(Topic("node-a"), *a, false);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_NE(refused.message().find("written by 'node-b'"), std::string::npos) << refused;
  ASSERT_TRUE(Write(*b, 1).ok());  // b still writes
  // The old writer's ledger, caught up by the refused start, and a new follower are b's.
  auto c = Open("c", true);
  ASSERT_TRUE(Follow(*c).ok());
  EXPECT_EQ(c->head().hash, b->head().hash);
  EXPECT_EQ(c->head().seq, 30u);
  EXPECT_EQ(c->replication().writer(), "node-b");
  EXPECT_EQ(c->replication().epoch(), 2u);
  ExpectVerifies(*c);
}

TEST_F(LedgerTopicTest, AWriterThatSkippedFencingIsCaughtByTheStandbys) {
  auto a = Open("a");
  ASSERT_TRUE(ingest::StartLedgerTopicWriter(Topic("node-a"), *a, false).ok());
  ASSERT_TRUE(Write(*a, 2).ok());
  {
    auto standby = Open("b", true);
    ASSERT_TRUE(Follow(*standby).ok());
  }
  // b takes over under a transactional id of its own: a is not fenced and goes on writing.
  auto b = Open("b");
  ingest::LedgerTopicOptions unfenced = Topic("node-b");
  unfenced.transactional_id = "not-the-ledger-topics-id";
  ASSERT_TRUE(ingest::StartLedgerTopicWriter(unfenced, *b, true).ok());
  ASSERT_TRUE(Write(*a, 1).ok()) << "a was not fenced, so its commit goes through";
  auto c = Open("c", true);
  auto followed = Follow(*c);
  ASSERT_FALSE(followed.ok()) << "a standby applied two writers' commits";
  EXPECT_EQ(followed.status().code(), absl::StatusCode::kFailedPrecondition) << followed.status();
  EXPECT_NE(followed.status().message().find("fenced writer published"), std::string::npos)
      << followed.status();
  // It stopped at b's takeover: what it holds is b's ledger.
  EXPECT_EQ(c->head().hash, b->head().hash);
  EXPECT_EQ(c->replication().writer(), "node-b");
}

TEST_F(LedgerTopicTest, AWriterKilledInsideATransactionDelaysNoTakeoverAndIsNeverApplied) {
  auto a = Open("a");
  ASSERT_TRUE(ingest::StartLedgerTopicWriter(Topic("node-a"), *a, false).ok());
  ASSERT_TRUE(Write(*a, 2).ok());
  const ledger::Head before = a->head();
  // a's last transaction, opened and never ended (a SIGKILL between its produce and its
  // commit): what it holds is not a commit at all, so applying it would fail.
  std::string err;
  std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  ASSERT_EQ(conf->set("bootstrap.servers", brokers_, err), RdKafka::Conf::CONF_OK);
  ASSERT_EQ(conf->set("transactional.id", "gpuledger-ledger:" + topics_.Ledger(), err),
            RdKafka::Conf::CONF_OK);
  ASSERT_EQ(conf->set("transaction.timeout.ms", "300000", err), RdKafka::Conf::CONF_OK);
  std::unique_ptr<RdKafka::Producer> dying(RdKafka::Producer::create(conf.get(), err));
  ASSERT_TRUE(dying) << err;
  ASSERT_EQ(std::unique_ptr<RdKafka::Error>(dying->init_transactions(20'000)), nullptr);
  ASSERT_EQ(std::unique_ptr<RdKafka::Error>(dying->begin_transaction()), nullptr);
  std::string garbage = "not a ledger commit";
  ASSERT_EQ(dying->produce(topics_.Ledger(), 0, RdKafka::Producer::RK_MSG_COPY, garbage.data(),
                           garbage.size(), nullptr, 0, 0, nullptr),
            RdKafka::ERR_NO_ERROR);
  ASSERT_EQ(dying->flush(20'000), RdKafka::ERR_NO_ERROR);
  // A standby following now stops at the open transaction, without waiting for it.
  auto b = Open("b", true);
  const auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(Follow(*b).ok());
  EXPECT_EQ(b->head().hash, before.hash);
  b.reset();
  // The takeover aborts it (the transaction would otherwise stay open for 5 minutes).
  b = Open("b");
  absl::Status promoted = ingest::StartLedgerTopicWriter(Topic("node-b"), *b, true);
  ASSERT_TRUE(promoted.ok()) << promoted;
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(30));
  EXPECT_EQ(b->head().hash, before.hash);
  ASSERT_TRUE(Write(*b, 1).ok());
  auto c = Open("c", true);
  auto followed = Follow(*c);
  ASSERT_TRUE(followed.ok()) << followed.status();
  EXPECT_EQ(c->head().hash, b->head().hash);
  EXPECT_EQ(c->head().seq, 15u);
}

}  // namespace
}  // namespace gpuledger
