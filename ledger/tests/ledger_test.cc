#include "ledger/ledger.h"

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include "absl/strings/str_cat.h"
#include "ledger/verify.h"
#include "testsupport/temp_dir.h"

namespace gpuledger::ledger {
namespace {

namespace v1 = gpuledger::v1;

Candidate Usage(const std::string& event_id, const std::string& payload, int64_t offset) {
  Candidate c;
  c.source = v1::SOURCE_USAGE;
  c.payload = payload;
  c.topic = "gpuledger.usage.csp-a";
  c.partition = 0;
  c.offset = offset;
  c.recorded_at_ms = 1000 + offset;
  c.source_id = "csp-a";
  c.event_id = event_id;
  return c;
}

std::unique_ptr<Ledger> OpenOrDie(const std::string& path, LedgerOptions o = {}) {
  auto l = Ledger::Open(path, o);
  EXPECT_TRUE(l.ok()) << l.status();
  return l.ok() ? std::move(*l) : nullptr;
}

TEST(LedgerTest, AssignsDenseSeqsAndCommitsAtomically) {
  testing::TempDir dir;
  auto ledger = OpenOrDie(dir.Sub("db"));
  ASSERT_NE(ledger, nullptr);
  EXPECT_EQ(ledger->head().seq, 0u);
  auto r1 = ledger->Append(Usage("e1", "p1", 0));
  auto r2 = ledger->Append(Usage("e2", "p2", 1));
  ASSERT_TRUE(r1.ok() && r2.ok());
  EXPECT_EQ(r1->seq, 1u);
  EXPECT_EQ(r2->seq, 2u);
  // Not durable (nor visible) before Commit.
  EXPECT_EQ(ledger->head().seq, 0u);
  EXPECT_FALSE(ledger->Get(1).ok());
  ASSERT_TRUE(ledger->AdvanceOffset({"gpuledger.usage.csp-a", 0}, 2).ok());
  ASSERT_TRUE(ledger->Commit().ok());
  EXPECT_EQ(ledger->head().seq, 2u);
  auto e = ledger->Get(2);
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(e->entry.payload(), "p2");
  EXPECT_EQ(e->entry.outcome(), v1::ACCEPTED);
  EXPECT_EQ(e->entry.offset(), 1);
  EXPECT_EQ((ledger->Offsets().at({"gpuledger.usage.csp-a", 0})), 2);
}

TEST(LedgerTest, AbortDropsEverythingStaged) {
  testing::TempDir dir;
  auto ledger = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(ledger->Append(Usage("e1", "p1", 0)).ok());
  ASSERT_TRUE(ledger->AdvanceOffset({"t", 0}, 1).ok());
  ledger->Abort();
  ASSERT_TRUE(ledger->Commit().ok());
  EXPECT_EQ(ledger->head().seq, 0u);
  EXPECT_TRUE(ledger->Offsets().empty());
  // The seq is reused after an abort: nothing was written.
  EXPECT_EQ(ledger->Append(Usage("e1", "p1", 0))->seq, 1u);
}

TEST(LedgerTest, DropsExactDuplicateWithinAndAcrossBatches) {
  testing::TempDir dir;
  auto ledger = OpenOrDie(dir.Sub("db"));
  ASSERT_EQ(ledger->Append(Usage("e1", "p1", 0))->kind, AppendKind::kAppended);
  auto dup_same_batch = ledger->Append(Usage("e1", "p1", 1));
  EXPECT_EQ(dup_same_batch->kind, AppendKind::kDuplicate);
  EXPECT_EQ(dup_same_batch->seq, 1u);
  ASSERT_TRUE(ledger->Commit().ok());
  auto dup_later = ledger->Append(Usage("e1", "p1", 7));
  EXPECT_EQ(dup_later->kind, AppendKind::kDuplicate);
  EXPECT_EQ(dup_later->seq, 1u);
  ASSERT_TRUE(ledger->Commit().ok());
  EXPECT_EQ(ledger->head().seq, 1u);
}

TEST(LedgerTest, RejectsConflictingDuplicateAndKeepsOriginal) {
  testing::TempDir dir;
  auto ledger = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(ledger->Append(Usage("e1", "original", 0)).ok());
  ASSERT_TRUE(ledger->Commit().ok());
  auto conflict = ledger->Append(Usage("e1", "changed", 1));
  ASSERT_TRUE(conflict.ok());
  EXPECT_EQ(conflict->kind, AppendKind::kConflict);
  EXPECT_EQ(conflict->seq, 2u);
  ASSERT_TRUE(ledger->Commit().ok());
  auto kept = ledger->Get(2);
  EXPECT_EQ(kept->entry.outcome(), v1::REJECTED);
  EXPECT_EQ(kept->entry.reason_code(), kConflictingDuplicate);
  EXPECT_EQ(kept->entry.payload(), "changed");
  auto index = ledger->LookupEvent("csp-a", "e1");
  ASSERT_TRUE(index.ok() && index->has_value());
  EXPECT_EQ((*index)->seq, 1u);
  EXPECT_EQ(ledger->Get(1)->entry.payload(), "original");
}

TEST(LedgerTest, CanonicalBytesDecideDuplicateNotRawPayload) {
  testing::TempDir dir;
  auto ledger = OpenOrDie(dir.Sub("db"));
  Candidate a = Usage("e1", "raw-a", 0);
  a.canonical = "same";
  Candidate b = Usage("e1", "raw-b", 1);
  b.canonical = "same";
  ASSERT_EQ(ledger->Append(a)->kind, AppendKind::kAppended);
  EXPECT_EQ(ledger->Append(b)->kind, AppendKind::kDuplicate);
}

TEST(LedgerTest, UndecodableInputsAreRecordedEachTime) {
  testing::TempDir dir;
  auto ledger = OpenOrDie(dir.Sub("db"));
  Candidate junk = Usage("", "\xff\xfe", 0);
  junk.source_id.clear();
  junk.reason_code = "MALFORMED";
  EXPECT_EQ(ledger->Append(junk)->kind, AppendKind::kAppended);
  EXPECT_EQ(ledger->Append(junk)->kind, AppendKind::kAppended);
  ASSERT_TRUE(ledger->Commit().ok());
  EXPECT_EQ(ledger->head().seq, 2u);
  EXPECT_EQ(ledger->Get(1)->entry.reason_code(), "MALFORMED");
}

TEST(LedgerTest, StateSurvivesReopen) {
  testing::TempDir dir;
  {
    auto ledger = OpenOrDie(dir.Sub("db"));
    for (int i = 0; i < 10; ++i) {
      ASSERT_TRUE(ledger->Append(Usage(absl::StrCat("e", i), absl::StrCat("p", i), i)).ok());
    }
    ASSERT_TRUE(ledger->AdvanceOffset({"t", 3}, 10).ok());
    ASSERT_TRUE(ledger->Commit().ok());
  }
  auto ledger = OpenOrDie(dir.Sub("db"));
  EXPECT_EQ(ledger->head().seq, 10u);
  EXPECT_EQ((ledger->Offsets().at({"t", 3})), 10);
  EXPECT_EQ(ledger->Append(Usage("e3", "p3", 11))->kind, AppendKind::kDuplicate);
  EXPECT_EQ(ledger->Append(Usage("e10", "p10", 11))->seq, 11u);
}

TEST(LedgerTest, SecondWriterIsRefused) {
  testing::TempDir dir;
  auto first = OpenOrDie(dir.Sub("db"));
  auto second = Ledger::Open(dir.Sub("db"), {});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
  EXPECT_NE(second.status().message().find("another process"), std::string::npos);
  // A reader may open beside the writer.
  LedgerOptions ro;
  ro.read_only = true;
  EXPECT_TRUE(Ledger::Open(dir.Sub("db"), ro).ok());
}

TEST(LedgerTest, ReadOnlyRefusesMissingLedgerAndWrites) {
  testing::TempDir dir;
  LedgerOptions ro;
  ro.read_only = true;
  EXPECT_EQ(Ledger::Open(dir.Sub("nope"), ro).status().code(), absl::StatusCode::kNotFound);
  { OpenOrDie(dir.Sub("db")); }
  auto reader = OpenOrDie(dir.Sub("db"), ro);
  EXPECT_FALSE(reader->Append(Usage("e", "p", 0)).ok());
}

TEST(LedgerTest, VerifyPassesOnAHealthyLedger) {
  testing::TempDir dir;
  auto ledger = OpenOrDie(dir.Sub("db"));
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(ledger->Append(Usage(absl::StrCat("e", i % 40), absl::StrCat("p", i), i)).ok());
  }
  ASSERT_TRUE(ledger->Commit().ok());
  auto report = Verify(*ledger);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok) << report->problem;
  EXPECT_EQ(report->entries_checked, 50u);  // 40 events + 10 refused conflicts
  EXPECT_EQ(report->dedup_records_checked, 40u);
}

// Rewrites one stored entry's bytes behind the ledger's back, as an attacker with disk access
// would, and expects verification to name exactly that seq.
TEST(LedgerTest, VerifyFindsAChangedByteAtItsSeq) {
  testing::TempDir dir;
  {
    auto ledger = OpenOrDie(dir.Sub("db"));
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE(ledger->Append(Usage(absl::StrCat("e", i), absl::StrCat("payload", i), i)).ok());
    }
    ASSERT_TRUE(ledger->Commit().ok());
  }
  {
    rocksdb::DB* raw = nullptr;
    std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
        {rocksdb::kDefaultColumnFamilyName, {}}, {"entries", {}}, {"dedup", {}}, {"offsets", {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    ASSERT_TRUE(rocksdb::DB::Open({}, dir.Sub("db"), cfs, &handles, &raw).ok());
    std::string key("\0\0\0\0\0\0\0\x0d", 8);  // seq 13
    std::string value;
    ASSERT_TRUE(raw->Get({}, handles[1], key, &value).ok());
    const size_t pos = value.find("payload12");
    ASSERT_NE(pos, std::string::npos);
    value[pos] = 'P';
    ASSERT_TRUE(raw->Put({}, handles[1], key, value).ok());
    for (auto* h : handles) raw->DestroyColumnFamilyHandle(h);
    delete raw;
  }
  auto ledger = OpenOrDie(dir.Sub("db"));
  auto report = Verify(*ledger);
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->ok);
  EXPECT_EQ(report->first_bad_seq, 13u);
  EXPECT_EQ(report->entries_checked, 12u);
}

}  // namespace
}  // namespace gpuledger::ledger
