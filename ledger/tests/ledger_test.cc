#include "ledger/ledger.h"

#include <fcntl.h>
#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <google/protobuf/util/delimited_message_util.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "ledger/export.h"
#include "ledger/verify.h"
#include "ledger_testing.h"
#include "testsupport/temp_dir.h"

namespace gpuledger::ledger {
namespace {

namespace v1 = gpuledger::v1;
using namespace testing_support;  // NOLINT(build/namespaces): the tests' own helpers

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

// The figures of ingest's memory gauges: RocksDB's own accounting of the ledger's memtables,
// table readers and cache, which move as entries are written and flushed.
TEST(LedgerTest, MemorySaysWhatRocksDbHoldsForTheLedger) {
  testing::TempDir dir;
  auto ledger = OpenOrDie(dir.Sub("db"));
  ASSERT_NE(ledger, nullptr);
  const StoreMemory empty = ledger->Memory();
  for (int i = 0; i < 2'000; ++i) {
    ASSERT_TRUE(ledger->Append(Usage(absl::StrCat("e", i), std::string(200, 'p'), i)).ok());
  }
  ASSERT_TRUE(ledger->Commit().ok());
  const StoreMemory written = ledger->Memory();
  // 2,000 entries of 200-byte payloads, and their dedup keys, are in the memtables.
  EXPECT_GT(written.memtables, empty.memtables + 2'000 * 200);
  ledger.reset();
  ledger = OpenOrDie(dir.Sub("db"));  // a clean close flushed them into table files
  ASSERT_NE(ledger, nullptr);
  ASSERT_TRUE(ledger->Get(1).ok());
  const StoreMemory reopened = ledger->Memory();
  EXPECT_LT(reopened.memtables, written.memtables);
  EXPECT_GT(reopened.table_readers + reopened.block_cache, 0u);
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

// Issue 14: a rolled-back batch must store nothing, its offsets least of all (a stored offset
// past messages never recorded skips them for ever). Read back from disk after reopening, with
// a later commit that must not carry the rolled-back writes along.
TEST(LedgerTest, ARolledBackBatchStoresNoOffsetOnDisk) {
  testing::TempDir dir;
  {
    auto ledger = OpenOrDie(dir.Sub("db"));
    ASSERT_TRUE(ledger->Append(Usage("e1", "p1", 0)).ok());
    ASSERT_TRUE(ledger->AdvanceOffset({"t", 0}, 1).ok());
    ASSERT_TRUE(ledger->Commit().ok());
    ASSERT_TRUE(ledger->Append(Usage("e2", "p2", 1)).ok());
    ASSERT_TRUE(ledger->AdvanceOffset({"t", 0}, 2).ok());
    ASSERT_TRUE(ledger->AdvanceOffset({"t", 1}, 7).ok());
    ledger->Abort();
    ASSERT_TRUE(ledger->AdvanceOffset({"u", 0}, 3).ok());
    ASSERT_TRUE(ledger->Commit().ok());
  }
  auto reopened = OpenOrDie(dir.Sub("db"));
  ASSERT_NE(reopened, nullptr);
  EXPECT_EQ(reopened->head().seq, 1u);
  const OffsetMap expected = {{{"t", 0}, 1}, {{"u", 0}, 3}};
  EXPECT_EQ(reopened->Offsets(), expected);
  EXPECT_FALSE(reopened->LookupEvent("csp-a", "e2")->has_value());
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

TEST(LedgerTest, VerifyFindsAChangedByteAtItsSeq) {
  testing::TempDir dir;
  Fill(dir.Sub("db"), 20);
  {
    RawDb raw(dir.Sub("db"));
    std::string value = raw.Get("entries", SeqKey(13));
    const size_t pos = value.find("payload13");
    ASSERT_NE(pos, std::string::npos);
    value[pos] = 'P';
    raw.Put("entries", SeqKey(13), value);
  }
  const VerifyReport r = VerifyOrDie(dir.Sub("db"));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_seq, 13u) << r.problem;
  EXPECT_EQ(r.entries_checked, 12u);
}

TEST(LedgerTest, VerifyFindsARemovedEntryAtItsSeq) {
  testing::TempDir dir;
  Fill(dir.Sub("db"), 20);
  { RawDb(dir.Sub("db")).Delete("entries", SeqKey(13)); }
  const VerifyReport r = VerifyOrDie(dir.Sub("db"));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_seq, 13u);
  EXPECT_NE(r.problem.find("missing"), std::string::npos) << r.problem;
}

TEST(LedgerTest, VerifyFindsASwappedPairAtTheFirstOfThem) {
  testing::TempDir dir;
  Fill(dir.Sub("db"), 20);
  {
    RawDb raw(dir.Sub("db"));
    const std::string a = raw.Get("entries", SeqKey(13));
    const std::string b = raw.Get("entries", SeqKey(14));
    raw.Put("entries", SeqKey(13), b);
    raw.Put("entries", SeqKey(14), a);
  }
  const VerifyReport r = VerifyOrDie(dir.Sub("db"));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_seq, 13u) << r.problem;
}

// The attacker rewrites entries 25..30 and recomputes every hash and the head, so the chain
// itself is consistent; only the signed checkpoint at 30 (which they cannot re-sign) betrays it.
TEST(LedgerTest, VerifyFindsARewrittenTailThatDoesNotMatchASignedCheckpoint) {
  testing::TempDir dir;
  std::shared_ptr<const Signer> signer = std::move(*Signer::Generate());
  Fill(dir.Sub("db"), 30, signer, 10);
  {
    RawDb raw(dir.Sub("db"));
    Digest prev{};
    FromBytes(raw.Get("entries", SeqKey(24)).substr(0, 32), &prev);
    for (uint64_t seq = 25; seq <= 30; ++seq) {
      const std::string value = raw.Get("entries", SeqKey(seq));
      v1::LedgerEntry e;
      ASSERT_TRUE(e.ParseFromString(value.substr(32)));
      e.set_payload(e.payload() + "-forged");
      const std::string bytes = e.SerializeAsString();
      prev = ChainHash(prev, seq, bytes);
      raw.Put("entries", SeqKey(seq), ToBytes(prev) + bytes);
    }
    raw.Put("default", "meta/head", SeqKey(30) + ToBytes(prev));
  }
  auto key = SignatureVerifier::FromPublicKeyPem(signer->PublicKeyPem());
  ASSERT_TRUE(key.ok());
  const VerifyReport r = VerifyOrDie(dir.Sub("db"), key->get());
  EXPECT_FALSE(r.ok);
  // Entries after the last good checkpoint (20) cannot be trusted.
  EXPECT_EQ(r.first_bad_seq, 21u) << r.problem;
  EXPECT_NE(r.problem.find("checkpoint at seq 30"), std::string::npos) << r.problem;
  EXPECT_EQ(r.last_checkpoint_seq, 20u);
}

TEST(LedgerTest, VerifyFindsAMissingCheckpointAndAForeignKey) {
  testing::TempDir dir;
  std::shared_ptr<const Signer> signer = std::move(*Signer::Generate());
  Fill(dir.Sub("db"), 30, signer, 10);
  auto key = SignatureVerifier::FromPublicKeyPem(signer->PublicKeyPem());
  const VerifyReport good = VerifyOrDie(dir.Sub("db"), key->get());
  EXPECT_TRUE(good.ok) << good.problem;
  EXPECT_EQ(good.checkpoints_verified, 3u);
  EXPECT_EQ(good.key_source, "given");

  auto other = Signer::Generate();
  auto other_key = SignatureVerifier::FromPublicKeyPem((*other)->PublicKeyPem());
  const VerifyReport foreign = VerifyOrDie(dir.Sub("db"), other_key->get());
  EXPECT_FALSE(foreign.ok);
  EXPECT_EQ(foreign.first_bad_seq, 1u);
  EXPECT_NE(foreign.problem.find("another key"), std::string::npos) << foreign.problem;

  { RawDb(dir.Sub("db")).Delete("checkpoints", SeqKey(20)); }
  const VerifyReport missing = VerifyOrDie(dir.Sub("db"), key->get());
  EXPECT_FALSE(missing.ok);
  EXPECT_EQ(missing.first_bad_seq, 11u) << missing.problem;
  EXPECT_NE(missing.problem.find("due at seq 20"), std::string::npos) << missing.problem;
}

TEST(LedgerTest, OpenRefusesAHeadThatDoesNotMatchTheLastEntry) {
  testing::TempDir dir;
  Fill(dir.Sub("db"), 5);
  { RawDb(dir.Sub("db")).Delete("entries", SeqKey(5)); }
  auto ledger = Ledger::Open(dir.Sub("db"), {});
  ASSERT_FALSE(ledger.ok());
  EXPECT_EQ(ledger.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(ledger.status().message().find("ledger verify"), std::string::npos) << ledger.status();
}

TEST(LedgerTest, SignedLedgerNeedsASignerToWriteAndUnsignedCannotStartSigning) {
  testing::TempDir dir;
  std::shared_ptr<const Signer> signer = std::move(*Signer::Generate());
  Fill(dir.Sub("signed"), 3, signer, 10);
  EXPECT_EQ(Ledger::Open(dir.Sub("signed"), {}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  Fill(dir.Sub("unsigned"), 3);
  LedgerOptions with_signer;
  with_signer.signer = signer;
  EXPECT_EQ(Ledger::Open(dir.Sub("unsigned"), with_signer).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Another key only with the old one, which signs the rotation (KeyRotation... below).
  LedgerOptions rotated;
  rotated.signer = std::move(*Signer::Generate());
  auto refused = Ledger::Open(dir.Sub("signed"), rotated);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("--previous-signing-key"), std::string::npos)
      << refused.status();
}

TEST(LedgerTest, ExportVerifiesOfflineWithOnlyThePublicKey) {
  testing::TempDir dir;
  std::shared_ptr<const Signer> signer = std::move(*Signer::Generate());
  Fill(dir.Sub("db"), 45, signer, 10);
  LedgerOptions ro;
  ro.read_only = true;
  auto ledger = OpenOrDie(dir.Sub("db"), ro);
  std::stringstream out;
  auto summary = ExportLedger(*ledger, out, {});
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->entries, 45u);
  EXPECT_EQ(summary->checkpoints, 4u);
  const std::string bytes = out.str();
  auto key = SignatureVerifier::FromPublicKeyPem(signer->PublicKeyPem());

  // Entries 41..45 are after the last checkpoint: accepted only when asked, and named.
  std::istringstream in(bytes);
  VerifyOptions allow;
  allow.allow_unsigned_tail = true;
  auto report = VerifyExport(in, key->get(), allow);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok) << report->problem;
  EXPECT_EQ(report->entries_checked, 45u);
  EXPECT_EQ(report->checkpoints_verified, 4u);
  EXPECT_EQ(report->head.hash, ledger->head().hash);
  EXPECT_EQ(report->unsigned_from(), 41u);
  EXPECT_EQ(report->unsigned_entries(), 5u);
  std::istringstream strict_in(bytes);
  auto strict = VerifyExport(strict_in, key->get());
  ASSERT_TRUE(strict.ok());
  EXPECT_FALSE(strict->ok);
  EXPECT_EQ(strict->first_bad_seq, 41u) << strict->problem;
  EXPECT_NE(strict->problem.find("entries 41..45 (5)"), std::string::npos) << strict->problem;

  // A changed byte inside entry 17's payload.
  std::string tampered = bytes;
  const size_t pos = tampered.find("payload17");
  ASSERT_NE(pos, std::string::npos);
  tampered[pos + 1] = 'A';
  std::istringstream bad(tampered);
  auto bad_report = VerifyExport(bad, key->get());
  ASSERT_TRUE(bad_report.ok());
  EXPECT_FALSE(bad_report->ok);
  EXPECT_EQ(bad_report->first_bad_seq, 17u) << bad_report->problem;

  // A truncated export is not silently accepted as shorter.
  std::istringstream cut(bytes.substr(0, bytes.size() - 20));
  auto cut_report = VerifyExport(cut, key->get());
  ASSERT_TRUE(cut_report.ok());
  EXPECT_FALSE(cut_report->ok);

  // A slice verifies relative to the hash of the entry before it.
  std::stringstream slice;
  ExportOptions from11;
  from11.from_seq = 11;
  from11.to_seq = 30;
  ASSERT_TRUE(ExportLedger(*ledger, slice, from11).ok());
  auto slice_report = VerifyExport(slice, key->get());
  ASSERT_TRUE(slice_report.ok());
  EXPECT_TRUE(slice_report->ok) << slice_report->problem;
  EXPECT_EQ(slice_report->entries_checked, 20u);
  EXPECT_EQ(slice_report->first_seq, 11u);
  EXPECT_EQ(slice_report->unsigned_entries(), 0u);
  // A slice asked for between checkpoints is widened to them.
  std::stringstream widened;
  ExportOptions from15;
  from15.from_seq = 15;
  from15.to_seq = 25;
  auto widened_summary = ExportLedger(*ledger, widened, from15);
  ASSERT_TRUE(widened_summary.ok());
  EXPECT_EQ(widened_summary->first_seq, 11u);
  EXPECT_EQ(widened_summary->last_seq, 30u);
  auto widened_report = VerifyExport(widened, key->get());
  ASSERT_TRUE(widened_report.ok());
  EXPECT_TRUE(widened_report->ok) << widened_report->problem;

  std::istringstream garbage("not an export at all");
  auto g = VerifyExport(garbage, key->get());
  ASSERT_TRUE(g.ok());
  EXPECT_FALSE(g->ok);
}

TEST(LedgerTest, CountersFollowOutcomesAndDuplicates) {
  testing::TempDir dir;
  auto ledger = OpenOrDie(dir.Sub("db"));
  Candidate rejected = Usage("r1", "x", 0);
  rejected.reason_code = "EMPTY_INTERVAL";
  ASSERT_TRUE(ledger->Append(Usage("e1", "p1", 1)).ok());
  ASSERT_TRUE(ledger->Append(Usage("e1", "p1", 2)).ok());       // duplicate
  ASSERT_TRUE(ledger->Append(Usage("e1", "changed", 3)).ok());  // conflict
  ASSERT_TRUE(ledger->Append(rejected).ok());
  ASSERT_TRUE(ledger->Commit().ok());
  const auto c = ledger->Counters();
  EXPECT_EQ(c.accepted(), 1u);
  EXPECT_EQ(c.rejected(), 2u);
  EXPECT_EQ(c.duplicates(), 1u);
  EXPECT_EQ(c.rejected_by_reason().at("EMPTY_INTERVAL"), 1u);
  EXPECT_EQ(c.rejected_by_reason().at(kConflictingDuplicate), 1u);
  // A batch of only duplicates is still committed (its offsets and the duplicate count).
  ASSERT_TRUE(ledger->Append(Usage("e1", "p1", 4)).ok());
  ASSERT_TRUE(ledger->AdvanceOffset({"gpuledger.usage.csp-a", 0}, 5).ok());
  ASSERT_TRUE(ledger->Commit().ok());
  ledger.reset();
  auto reopened = OpenOrDie(dir.Sub("db"));
  EXPECT_EQ(reopened->Counters().duplicates(), 2u);
  EXPECT_EQ((reopened->Offsets().at({"gpuledger.usage.csp-a", 0})), 5);
  EXPECT_TRUE(Verify(*reopened)->ok);
}

TEST(LedgerTest, ReportsProducerGaps) {
  testing::TempDir dir;
  auto ledger = OpenOrDie(dir.Sub("db"));
  for (uint64_t seq : {1, 2, 3, 5, 8, 9}) {
    Candidate c = Usage(absl::StrCat("e", seq), "p", static_cast<int64_t>(seq));
    c.producer_id = "meter-1";
    c.producer_seq = seq;
    ASSERT_TRUE(ledger->Append(c).ok());
  }
  ASSERT_TRUE(ledger->Commit().ok());
  int producers = 0;
  ASSERT_TRUE(ledger
                  ->ScanProducers([&](const std::string& csp, const std::string& producer,
                                      const ProducerProgress& p) {
                    ++producers;
                    EXPECT_EQ(csp, "csp-a");
                    EXPECT_EQ(producer, "meter-1");
                    EXPECT_EQ(p.contiguous(), 3u);
                    EXPECT_EQ(p.highest(), 9u);
                    EXPECT_EQ(p.Missing(), (std::vector<SeqRange>{{4, 4}, {6, 7}}));
                    return absl::OkStatus();
                  })
                  .ok());
  EXPECT_EQ(producers, 1);
}

TEST(LedgerTest, MetaValuesCommitWithTheBatch) {
  testing::TempDir dir;
  auto ledger = OpenOrDie(dir.Sub("db"));
  EXPECT_FALSE(ledger->StageMeta("Bad Name", "x").ok());
  ASSERT_TRUE(ledger->Append(Usage("e1", "p1", 0)).ok());
  ASSERT_TRUE(ledger->StageMeta("cursor", "7").ok());
  EXPECT_FALSE(ledger->GetMeta("cursor")->has_value());
  ASSERT_TRUE(ledger->Commit().ok());
  EXPECT_EQ(ledger->GetMeta("cursor")->value_or(""), "7");
}

// serve follows the writer as a RocksDB secondary instance: it must see every commit, including
// the last ones before the writer's clean close (which flushes and drops the WAL).
TEST(LedgerTest, SecondaryFollowsTheWriterThroughItsCleanClose) {
  testing::TempDir dir;
  int64_t offset = 0;
  auto append = [&](Ledger& l, int n) {
    for (int i = 0; i < n; ++i, ++offset) {
      ASSERT_TRUE(
          l.Append(Usage(absl::StrCat("e", offset), absl::StrCat("p", offset), offset)).ok());
      ASSERT_TRUE(l.AdvanceOffset({"gpuledger.usage.csp-a", 0}, offset + 1).ok());
    }
    ASSERT_TRUE(l.Commit().ok());
  };
  auto writer = OpenOrDie(dir.Sub("db"));
  ASSERT_NE(writer, nullptr);
  append(*writer, 500);
  LedgerOptions ro;
  ro.read_only = true;
  ro.secondary_path = dir.Sub("secondary");
  auto follower = OpenOrDie(dir.Sub("db"), ro);
  ASSERT_NE(follower, nullptr);
  EXPECT_EQ(follower->head().seq, 500u);
  for (int round = 0; round < 3; ++round) {
    append(*writer, 700);
    ASSERT_TRUE(follower->Refresh().ok());
    EXPECT_EQ(follower->head().seq, writer->head().seq) << "round " << round;
  }
  append(*writer, 300);
  const uint64_t last = writer->head().seq;
  writer.reset();  // a clean close: memtables flushed, WAL dropped
  ASSERT_TRUE(follower->Refresh().ok());
  EXPECT_EQ(follower->head().seq, last);
  EXPECT_EQ((follower->Offsets().at({"gpuledger.usage.csp-a", 0})), offset);
  auto e = follower->Get(last);
  ASSERT_TRUE(e.ok()) << e.status();
  // And a writer that opens again and appends is followed too.
  writer = OpenOrDie(dir.Sub("db"));
  append(*writer, 200);
  ASSERT_TRUE(follower->Refresh().ok());
  EXPECT_EQ(follower->head().seq, last + 200);
}

// RocksDB's secondary keeps what it replayed from a write-ahead log in its memtable after the
// writer flushes that log, where it hides the newer values the flush wrote to a table file
// (RocksDB issue 15051). The writer rewrites its overwritten keys after a flush, but a refresh
// between the flush and that rewrite (or a writer that flushes and then idles) saw an older
// head: CI saw a refresh, done twice, stay 1,500 entries behind a writer's clean close. Written
// here through RocksDB directly, a flush with no commit after it.
TEST(LedgerTest, AFollowerSeesWhatTheWriterFlushedOverWhatItHadReplayed) {
  testing::TempDir dir;
  const std::string path = dir.Sub("db");
  Fill(path, 10);
  RawDb raw(path);
  const std::string head10 = raw.Get("default", "meta/head");
  ASSERT_EQ(head10.size(), 40u);
  auto head_at = [&](uint64_t seq) { return SeqKey(seq) + head10.substr(8); };
  LedgerOptions ro;
  ro.read_only = true;
  ro.secondary_path = dir.Sub("follower");
  auto follower = OpenOrDie(path, ro);
  ASSERT_NE(follower, nullptr);
  EXPECT_EQ(follower->head().seq, 10u);
  // A commit the follower replays from the write-ahead log...
  raw.Put("default", "meta/head", head_at(11));
  ASSERT_TRUE(follower->Refresh().ok());
  EXPECT_EQ(follower->head().seq, 11u);
  // ...then one it never replays: the writer flushes (the log is then no longer read).
  raw.Put("default", "meta/head", head_at(12));
  ASSERT_TRUE(raw.db()->Flush(rocksdb::FlushOptions()).ok());
  ASSERT_TRUE(follower->Refresh().ok());
  EXPECT_EQ(follower->head().seq, 12u);
}

// settle opens the ledger read-only beside a live ingest, many times. Each open must see every
// entry committed before it began. A writer that starts after a crash recovers its write-ahead
// log into a table file, starts a new MANIFEST and deletes the old log; a reader that read the
// old MANIFEST and then found the log gone saw an older head than an earlier reader had (the
// kill test's settle: "the store has applied entries up to 146900 but the ledger ends at
// 139835"). Without the catch-up in Ledger::Open every run of this test saw 1 to 10 stale opens
// in about 2,100 (6 runs); with it none (8 runs). Every fourth writer closes cleanly, which
// flushes every column family: flushed one by one (before atomic_flush), about one run in six
// had an open refused because the head and the last entry came from different moments. A
// follower that refreshes one secondary instance, as serve does, is held to the same floor.
TEST(LedgerTest, ReadOnlyOpenSeesEveryCommitMadeBeforeItBegan) {
  testing::TempDir dir;
  const std::string path = dir.Sub("db");
  const std::string shared = dir.Sub("head");
  {
    std::ofstream f(shared, std::ios::binary);
    f << std::string(sizeof(std::atomic<uint64_t>), '\0');
  }
  const int fd = ::open(shared.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  void* m =
      ::mmap(nullptr, sizeof(std::atomic<uint64_t>), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(m, MAP_FAILED);
  ::close(fd);
  auto* committed = static_cast<std::atomic<uint64_t>*>(m);
  std::atomic<bool> done{false};
  std::atomic<int> writers{0};
  const int kWriters = 100;
  std::thread writer([&] {
    const std::string self = GPULEDGER_CRASHING_WRITER;
    std::string per_batch = "500";
    for (int round = 0; round < kWriters; ++round) {
      // Three of four writers crash; the fourth closes cleanly (a flush of every column family).
      std::string end = round % 4 == 3 ? "close" : "crash";
      char* argv[] = {const_cast<char*>(self.c_str()),
                      const_cast<char*>(path.c_str()),
                      const_cast<char*>(shared.c_str()),
                      per_batch.data(),
                      end.data(),
                      nullptr};
      pid_t pid = 0;
      if (::posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv, environ) != 0) {
        ADD_FAILURE() << "cannot start the writer";
        break;
      }
      int status = 0;
      ::waitpid(pid, &status, 0);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        ADD_FAILURE() << "writer " << round << " ended with status " << status;
        break;
      }
      ++writers;
    }
    done = true;
  });
  while (committed->load() == 0 && !done.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Two readers: each open's window between reading the MANIFEST and listing the logs is what
  // a writer's start must fall into.
  std::atomic<int> opens{0};
  std::atomic<int> stale{0};
  // A view must hold every commit made before it began: a head at least `floor`, and its entry.
  auto check = [](const Ledger& l, uint64_t floor, const char* what, std::atomic<int>* stale) {
    if (l.head().seq < floor) {
      ++*stale;
      ADD_FAILURE() << what << " saw head " << l.head().seq << " after " << floor
                    << " was committed";
    } else if (floor > 0) {
      EXPECT_TRUE(l.Get(floor).ok()) << "entry " << floor;
    }
  };
  auto read = [&] {
    LedgerOptions ro;
    ro.read_only = true;
    while (!done.load()) {
      const uint64_t floor = committed->load();
      auto l = Ledger::Open(path, ro);
      ASSERT_TRUE(l.ok()) << l.status();
      ++opens;
      check(**l, floor, "a read-only open", &stale);
    }
  };
  // And a follower, as serve is: one secondary instance caught up again and again.
  std::atomic<int> refreshes{0};
  std::atomic<int> stale_refreshes{0};
  // Refreshes that saw one commit less than the floor and the very next refresh caught up: seen
  // in about 2 of 26 runs once secondaries were pinned to one MANIFEST, and once a refresh stayed
  // short after a second one too (a memtable hiding a flush: see the test above; none in the 12
  // runs since the fix, docs/RELIABILITY.md). Counted and printed; a refresh still short after a
  // second one, or a head that goes back, fails the test.
  std::atomic<int> lagged_refreshes{0};
  auto follow = [&] {
    LedgerOptions ro;
    ro.read_only = true;
    ro.secondary_path = dir.Sub("follower");
    auto l = Ledger::Open(path, ro);
    ASSERT_TRUE(l.ok()) << l.status();
    uint64_t last_seen = 0;
    while (!done.load()) {
      const uint64_t floor = committed->load();
      absl::Status s = (*l)->Refresh();
      ASSERT_TRUE(s.ok()) << s;
      ++refreshes;
      if ((*l)->head().seq < floor) {
        ++lagged_refreshes;
        s = (*l)->Refresh();
        ASSERT_TRUE(s.ok()) << s;
      }
      check(**l, floor, "a refresh", &stale_refreshes);
      EXPECT_GE((*l)->head().seq, last_seen) << "a refresh went back";
      last_seen = (*l)->head().seq;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  };
  std::thread reader(read);
  std::thread follower(follow);
  read();
  reader.join();
  follower.join();
  writer.join();
  ::munmap(m, sizeof(std::atomic<uint64_t>));
  std::printf(
      "%d read-only opens and %d refreshes beside %d crashing writers, %d and %d stale, %d "
      "refreshes caught up only by the next one\n",
      opens.load(), refreshes.load(), writers.load(), stale.load(), stale_refreshes.load(),
      lagged_refreshes.load());
  EXPECT_EQ(writers.load(), kWriters);
  EXPECT_GT(opens, 20);
}

TEST(LedgerDeathTest, OffsetsOnlyMoveForward) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // The threadsafe style runs this body again in a child that dies before it can remove its
  // temp dir (75 MB with the WAL RocksDB preallocates): through TMPDIR, which the child
  // inherits, its dirs go inside `outer`, which this process removes.
  testing::TempDir outer;
  const char* old_tmpdir = std::getenv("TMPDIR");
  const std::string saved = old_tmpdir != nullptr ? old_tmpdir : "";
  ::setenv("TMPDIR", outer.path().c_str(), 1);
  struct Restore {
    std::string value;
    bool had;
    ~Restore() { had ? ::setenv("TMPDIR", value.c_str(), 1) : ::unsetenv("TMPDIR"); }
  } restore{saved, old_tmpdir != nullptr};
  testing::TempDir dir;
  auto ledger = OpenOrDie(dir.Sub("db"));
  ASSERT_TRUE(ledger->AdvanceOffset({"t", 0}, 10).ok());
  ASSERT_TRUE(ledger->Commit().ok());
  EXPECT_DEATH((void)ledger->AdvanceOffset({"t", 0}, 9), "only move forward");
}

}  // namespace
}  // namespace gpuledger::ledger
