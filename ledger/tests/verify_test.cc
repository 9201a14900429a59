// Verification against an attacker with disk access or a hand-made export (issue 14): what a
// key verifies must be covered by signed checkpoints, a slice must be vouched for by one, and
// key rotations are followed from the first published key.
#include "ledger/verify.h"

#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <google/protobuf/util/delimited_message_util.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "ledger/export.h"
#include "ledger/ledger.h"
#include "ledger/signing.h"
#include "ledger_testing.h"
#include "testsupport/temp_dir.h"

namespace gpuledger::ledger {
namespace {

namespace v1 = gpuledger::v1;
using namespace testing_support;  // NOLINT(build/namespaces): the tests' own helpers

std::vector<v1::ExportRecord> ParseExport(const std::string& bytes) {
  std::istringstream in(bytes);
  google::protobuf::io::IstreamInputStream stream(&in);
  std::vector<v1::ExportRecord> records;
  v1::ExportRecord r;
  bool clean_eof = false;
  while (google::protobuf::util::ParseDelimitedFromZeroCopyStream(&r, &stream, &clean_eof)) {
    records.push_back(r);
  }
  EXPECT_TRUE(clean_eof);
  return records;
}

std::string WriteExport(const std::vector<v1::ExportRecord>& records) {
  std::string out;
  google::protobuf::io::StringOutputStream sink(&out);
  for (const auto& r : records)
    google::protobuf::util::SerializeDelimitedToZeroCopyStream(r, &sink);
  return out;
}

std::string ExportOf(const std::string& path, ExportOptions options = {}) {
  LedgerOptions ro;
  ro.read_only = true;
  auto l = OpenOrDie(path, ro);
  std::stringstream out;
  auto summary = ExportLedger(*l, out, options);
  EXPECT_TRUE(summary.ok()) << summary.status();
  return out.str();
}

VerifyReport VerifyBytes(const std::string& bytes, const SignatureVerifier* key,
                         VerifyOptions options = {}) {
  std::istringstream in(bytes);
  auto report = VerifyExport(in, key, options);
  EXPECT_TRUE(report.ok()) << report.status();
  return *report;
}

std::unique_ptr<SignatureVerifier> KeyOf(const Signer& signer) {
  return std::move(*SignatureVerifier::FromPublicKeyPem(signer.PublicKeyPem()));
}

// Re-chains `entries` from `prev` after changing the payload of the one with seq `forged`.
void Rechain(std::vector<v1::ExportRecord*>& entries, Digest prev, uint64_t forged) {
  for (v1::ExportRecord* r : entries) {
    v1::LedgerEntry e;
    ASSERT_TRUE(e.ParseFromString(r->entry().entry()));
    if (e.seq() == forged) e.set_payload(e.payload() + "-forged");
    const std::string bytes = e.SerializeAsString();
    prev = ChainHash(prev, e.seq(), bytes);
    r->mutable_entry()->set_entry(bytes);
    r->mutable_entry()->set_hash(ToBytes(prev));
  }
}

// Issue 14, item 4: rewrite a signed entry, re-chain, delete every checkpoint and set the
// header's checkpoint interval to 0. It verified with the operator's key.
TEST(VerifyTest, ADowngradedExportDoesNotVerifyWithTheKey) {
  testing::TempDir dir;
  std::shared_ptr<const Signer> signer = std::move(*Signer::Generate());
  Fill(dir.Sub("db"), 30, signer, 10);
  auto key = KeyOf(*signer);
  const std::string bytes = ExportOf(dir.Sub("db"));
  ASSERT_TRUE(VerifyBytes(bytes, key.get()).ok);

  std::vector<v1::ExportRecord> records = ParseExport(bytes);
  std::vector<v1::ExportRecord> downgraded;
  for (auto& r : records) {
    if (r.has_checkpoint()) continue;
    if (r.has_header()) r.mutable_header()->set_checkpoint_interval(0);
    downgraded.push_back(r);
  }
  std::vector<v1::ExportRecord*> entries;
  for (auto& r : downgraded) {
    if (r.has_entry()) entries.push_back(&r);
  }
  Rechain(entries, kZeroDigest, 5);
  const VerifyReport r = VerifyBytes(WriteExport(downgraded), key.get());
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_seq, 1u) << r.problem;
  EXPECT_NE(r.problem.find("entries 1..30 (30) are not covered"), std::string::npos) << r.problem;
  // Without a key nothing is proved, and the chain itself is consistent.
  EXPECT_TRUE(VerifyBytes(WriteExport(downgraded), nullptr).ok);
}

// The same downgrade on a live ledger: checkpoints and the interval record deleted.
TEST(VerifyTest, ALedgerWithoutItsCheckpointsDoesNotVerifyWithTheKey) {
  testing::TempDir dir;
  std::shared_ptr<const Signer> signer = std::move(*Signer::Generate());
  Fill(dir.Sub("db"), 30, signer, 10);
  {
    RawDb raw(dir.Sub("db"));
    for (const std::string& k : raw.Keys("checkpoints")) raw.Delete("checkpoints", k);
    raw.Delete("default", "meta/checkpoint_interval");
  }
  auto key = KeyOf(*signer);
  const VerifyReport r = VerifyOrDie(dir.Sub("db"), key.get());
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.first_bad_seq, 1u) << r.problem;
  EXPECT_NE(r.problem.find("there is none"), std::string::npos) << r.problem;
}

// Entries appended after the last signed checkpoint, or rewritten there, chain as well as the
// real ones: with the key they fail unless the caller accepts an unsigned tail, which is named.
TEST(VerifyTest, AnUnsignedTailFailsUnlessAcceptedAndIsNamedExactly) {
  testing::TempDir dir;
  std::shared_ptr<const Signer> signer = std::move(*Signer::Generate());
  Fill(dir.Sub("db"), 34, signer, 10);
  auto key = KeyOf(*signer);
  const VerifyReport strict = VerifyOrDie(dir.Sub("db"), key.get());
  EXPECT_FALSE(strict.ok);
  EXPECT_EQ(strict.first_bad_seq, 31u);
  EXPECT_NE(strict.problem.find("entries 31..34 (4)"), std::string::npos) << strict.problem;
  EXPECT_NE(strict.problem.find("--allow-unsigned-tail"), std::string::npos) << strict.problem;

  VerifyOptions allow;
  allow.allow_unsigned_tail = true;
  const VerifyReport accepted = VerifyOrDie(dir.Sub("db"), key.get(), allow);
  EXPECT_TRUE(accepted.ok) << accepted.problem;
  EXPECT_EQ(accepted.unsigned_from(), 31u);
  EXPECT_EQ(accepted.unsigned_entries(), 4u);

  // Without a key given, the ledger's own key checks consistency and reports the tail.
  const VerifyReport own = VerifyOrDie(dir.Sub("db"));
  EXPECT_TRUE(own.ok) << own.problem;
  EXPECT_EQ(own.key_source, "ledger");
  EXPECT_EQ(own.unsigned_entries(), 4u);

  // Dropping the unsigned tail of an export and fixing its header: what remains is signed to
  // its end, so it verifies (nothing signed was changed); dropping only part of it does not.
  const std::vector<v1::ExportRecord> records = ParseExport(ExportOf(dir.Sub("db")));
  auto drop_after = [&](uint64_t last) {
    std::vector<v1::ExportRecord> kept;
    for (v1::ExportRecord r : records) {
      if (r.has_entry() && r.entry().seq() > last) continue;
      if (r.has_header()) r.mutable_header()->set_last_seq(last);
      kept.push_back(r);
    }
    return VerifyBytes(WriteExport(kept), key.get());
  };
  EXPECT_FALSE(drop_after(32).ok);
  EXPECT_TRUE(drop_after(30).ok);
}

// A writer that stops cleanly signs its head (ingest does, and so every close is covered).
TEST(VerifyTest, SignHeadCoversTheWholeLedger) {
  testing::TempDir dir;
  std::shared_ptr<const Signer> signer = std::move(*Signer::Generate());
  Fill(dir.Sub("db"), 34, signer, 10);
  {
    LedgerOptions o;
    o.signer = signer;
    auto l = OpenOrDie(dir.Sub("db"), o);
    ASSERT_TRUE(l->SignHead().ok());
    ASSERT_TRUE(l->SignHead().ok());  // once is enough: no second record
  }
  auto key = KeyOf(*signer);
  const VerifyReport r = VerifyOrDie(dir.Sub("db"), key.get());
  EXPECT_TRUE(r.ok) << r.problem;
  EXPECT_EQ(r.last_checkpoint_seq, 34u);
  EXPECT_EQ(r.checkpoints_verified, 4u);
  // Unsigned and empty ledgers have nothing to sign.
  Fill(dir.Sub("unsigned"), 3);
  EXPECT_TRUE(OpenOrDie(dir.Sub("unsigned"))->SignHead().ok());
}

// Issue 14, item 4: a fabricated two-entry slice with an arbitrary previous hash verified, with
// a wrong count in its message.
TEST(VerifyTest, AFabricatedSliceDoesNotVerifyAndARealOneIsCountedRight) {
  testing::TempDir dir;
  std::shared_ptr<const Signer> signer = std::move(*Signer::Generate());
  Fill(dir.Sub("db"), 30, signer, 10);
  auto key = KeyOf(*signer);

  std::vector<v1::ExportRecord> fake(3);
  auto* h = fake[0].mutable_header();
  h->set_format("gpuledger-export");
  h->set_format_version(1);
  h->set_first_seq(5001);
  h->set_last_seq(5002);
  Digest prev = Sha256("anything");
  h->set_prev_hash(ToBytes(prev));
  for (uint64_t seq : {5001, 5002}) {
    v1::LedgerEntry e;
    e.set_seq(seq);
    e.set_payload("made up");
    const std::string bytes = e.SerializeAsString();
    prev = ChainHash(prev, seq, bytes);
    auto* x = fake[seq - 5000].mutable_entry();
    x->set_seq(seq);
    x->set_entry(bytes);
    x->set_hash(ToBytes(prev));
  }
  const VerifyReport forged = VerifyBytes(WriteExport(fake), key.get());
  EXPECT_FALSE(forged.ok);
  EXPECT_EQ(forged.first_bad_seq, 5001u);
  EXPECT_NE(forged.problem.find("no signed checkpoint at seq 5000"), std::string::npos)
      << forged.problem;
  VerifyOptions allow;
  allow.allow_unsigned_tail = true;
  EXPECT_FALSE(VerifyBytes(WriteExport(fake), key.get(), allow).ok);

  // A real slice names the checkpoint before it; a forged base checkpoint does not verify.
  ExportOptions slice;
  slice.from_seq = 21;
  const std::string real = ExportOf(dir.Sub("db"), slice);
  const VerifyReport ok = VerifyBytes(real, key.get());
  EXPECT_TRUE(ok.ok) << ok.problem;
  EXPECT_EQ(ok.first_seq, 21u);
  EXPECT_EQ(ok.entries_checked, 10u);
  EXPECT_EQ(ok.unsigned_entries(), 0u);
  std::vector<v1::ExportRecord> records = ParseExport(real);
  ASSERT_TRUE(records.size() > 2 && records[1].has_checkpoint());
  EXPECT_EQ(records[1].checkpoint().seq(), 20u);
  records[1].mutable_checkpoint()->set_head_hash(ToBytes(Sha256("x")));
  EXPECT_FALSE(VerifyBytes(WriteExport(records), key.get()).ok);
  records.erase(records.begin() + 1);
  const VerifyReport unvouched = VerifyBytes(WriteExport(records), key.get());
  EXPECT_FALSE(unvouched.ok);
  EXPECT_NE(unvouched.problem.find("no signed checkpoint at seq 20"), std::string::npos)
      << unvouched.problem;
}

// Issue 14, the tests: a verifier that checks a checkpoint's key id but never its signature
// passed every test. A checkpoint with the right key id and a wrong signature must fail, live
// and exported.
TEST(VerifyTest, ACheckpointWithTheRightKeyIdAndAWrongSignatureFails) {
  testing::TempDir dir;
  std::shared_ptr<const Signer> signer = std::move(*Signer::Generate());
  Fill(dir.Sub("db"), 30, signer, 10);
  auto key = KeyOf(*signer);
  const std::string bytes = ExportOf(dir.Sub("db"));
  {
    RawDb raw(dir.Sub("db"));
    v1::Checkpoint cp;
    ASSERT_TRUE(cp.ParseFromString(raw.Get("checkpoints", SeqKey(20))));
    ASSERT_EQ(cp.key_id(), ToBytes(key->KeyId()));
    std::string sig = cp.signature();
    sig[10] = static_cast<char>(sig[10] ^ 0x01);
    cp.set_signature(sig);
    raw.Put("checkpoints", SeqKey(20), cp.SerializeAsString());
  }
  const VerifyReport live = VerifyOrDie(dir.Sub("db"), key.get());
  EXPECT_FALSE(live.ok);
  EXPECT_EQ(live.first_bad_seq, 11u) << live.problem;
  EXPECT_NE(live.problem.find("checkpoint at seq 20 has an invalid signature"), std::string::npos)
      << live.problem;

  std::vector<v1::ExportRecord> records = ParseExport(bytes);
  int changed = 0;
  for (auto& r : records) {
    if (r.has_checkpoint() && r.checkpoint().seq() == 30) {
      // A signature over other fields: the key id is right, the bytes are the key's own.
      v1::Checkpoint other = r.checkpoint();
      other.set_time_ms(other.time_ms() + 1);
      SignCheckpoint(*signer, &other);
      r.mutable_checkpoint()->set_signature(other.signature());
      ++changed;
    }
  }
  ASSERT_EQ(changed, 1);
  const VerifyReport exported = VerifyBytes(WriteExport(records), key.get());
  EXPECT_FALSE(exported.ok);
  EXPECT_EQ(exported.first_bad_seq, 21u) << exported.problem;
  EXPECT_NE(exported.problem.find("invalid signature"), std::string::npos) << exported.problem;
}

// Issue 14, item 4: after `ingest --signing-key` was given a new key the ledger verified under
// no single key. A rotation is recorded, signed by the old key; the first key verifies all.
TEST(VerifyTest, KeyRotationIsFollowedFromTheFirstPublishedKey) {
  testing::TempDir dir;
  std::shared_ptr<const Signer> first = std::move(*Signer::Generate());
  std::shared_ptr<const Signer> second = std::move(*Signer::Generate());
  Fill(dir.Sub("db"), 25, first, 10);
  {
    LedgerOptions o;
    o.signer = second;
    auto refused = Ledger::Open(dir.Sub("db"), o);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
    o.previous_signer = second;  // not the key that signed the ledger
    EXPECT_FALSE(Ledger::Open(dir.Sub("db"), o).ok());
    o.previous_signer = first;
    auto l = OpenOrDie(dir.Sub("db"), o);
    ASSERT_NE(l, nullptr);
    for (int i = 26; i <= 42; ++i) {
      ASSERT_TRUE(l->Append(Usage(absl::StrCat("e", i), absl::StrCat("payload", i), i)).ok());
    }
    ASSERT_TRUE(l->Commit().ok());
    ASSERT_TRUE(l->SignHead().ok());
  }
  // The second key now writes without the first.
  {
    LedgerOptions o;
    o.signer = second;
    EXPECT_NE(OpenOrDie(dir.Sub("db"), o), nullptr);
  }
  auto first_key = KeyOf(*first);
  auto second_key = KeyOf(*second);
  const VerifyReport r = VerifyOrDie(dir.Sub("db"), first_key.get());
  EXPECT_TRUE(r.ok) << r.problem;
  EXPECT_EQ(r.key_rotations, 1u);
  EXPECT_EQ(r.last_checkpoint_seq, 42u);
  EXPECT_FALSE(VerifyOrDie(dir.Sub("db"), second_key.get()).ok);
  const VerifyReport own = VerifyOrDie(dir.Sub("db"));
  EXPECT_TRUE(own.ok) << own.problem;
  EXPECT_EQ(own.key_source, "ledger");

  // Exports and slices verify from the first key too: a slice starting at the rotation, and one
  // starting after it (the header carries the rotation).
  EXPECT_TRUE(VerifyBytes(ExportOf(dir.Sub("db")), first_key.get()).ok);
  for (uint64_t from : {21, 26, 35, 41}) {
    ExportOptions slice;
    slice.from_seq = from;
    const VerifyReport s = VerifyBytes(ExportOf(dir.Sub("db"), slice), first_key.get());
    EXPECT_TRUE(s.ok) << "from " << from << ": " << s.problem;
    EXPECT_EQ(s.key_rotations, 1u) << "from " << from;
  }
  // A rotation record forged by the new key alone does not verify.
  {
    RawDb raw(dir.Sub("db"));
    std::vector<std::string> rotations;
    for (const std::string& k : raw.Keys("checkpoints")) {
      if (k.size() == 17) rotations.push_back(k);
    }
    ASSERT_EQ(rotations.size(), 1u);
    v1::Checkpoint cp;
    ASSERT_TRUE(cp.ParseFromString(raw.Get("checkpoints", rotations[0])));
    SignKeyRotation(*second, *second, &cp);
    cp.set_key_id(ToBytes(first_key->KeyId()));
    raw.Put("checkpoints", rotations[0], cp.SerializeAsString());
  }
  const VerifyReport forged = VerifyOrDie(dir.Sub("db"), first_key.get());
  EXPECT_FALSE(forged.ok);
  EXPECT_NE(forged.problem.find("key rotation at seq 25 has an invalid signature"),
            std::string::npos)
      << forged.problem;
}

}  // namespace
}  // namespace gpuledger::ledger

namespace gpuledger::ledger {
namespace {

// The largest table file of a ledger's column family `cf` (closed, so flushed).
std::string LargestTableOf(const std::string& path, const std::string& cf) {
  std::vector<rocksdb::LiveFileMetaData> files;
  {
    RawDb raw(path);
    raw.db()->GetLiveFilesMetaData(&files);
  }
  std::string best;
  uint64_t size = 0;
  for (const auto& f : files) {
    if (f.column_family_name == cf && f.size > size) {
      size = f.size;
      best = path + f.name;
    }
  }
  return best;
}

void FlipByte(const std::string& file, long from_end) {
  const auto size = static_cast<long>(std::filesystem::file_size(file));
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(size - from_end);
  char c = 0;
  f.get(c);
  f.seekp(size - from_end);
  f.put(static_cast<char>(c ^ 0x5a));
}

// Issue 14: a damaged block at the end of the entries table read as "the ledger holds no
// entries ... run ledger verify", printed by ledger verify itself. It should be named as a
// damaged table file, wherever the flip lands. RocksDB 7.8 reads the damaged block as "no
// entries" with an OK status, and neither DB::VerifyChecksum nor a fresh SstFileReader reports
// it: the diagnosis holds each table against its MANIFEST record (table_check.h).
TEST(VerifyTest, ADamagedTableBlockIsNamedAsSuch) {
  for (long from_end : {2000, 1000, 200, 100}) {
    testing::TempDir dir;
    Fill(dir.Sub("db"), 3000);
    const std::string sst = LargestTableOf(dir.Sub("db"), "entries");
    ASSERT_FALSE(sst.empty());
    FlipByte(sst, from_end);
    LedgerOptions ro;
    ro.read_only = true;
    ro.open_inconsistent = true;  // as ledger verify opens
    auto l = Ledger::Open(dir.Sub("db"), ro);
    std::string said;
    if (l.ok()) {
      auto r = Verify(**l);
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_FALSE(r->ok) << "flip " << from_end << " bytes from the end went unnoticed";
      said = r->problem;
    } else {
      EXPECT_EQ(l.status().code(), absl::StatusCode::kDataLoss) << l.status();
      said = std::string(l.status().message());
    }
    EXPECT_NE(said.find("table file"), std::string::npos) << from_end << ": " << said;
    EXPECT_NE(said.find("damaged"), std::string::npos) << from_end << ": " << said;
    EXPECT_EQ(said.find("holds no entries"), std::string::npos) << from_end << ": " << said;
    EXPECT_EQ(said.find("ledger verify"), std::string::npos) << from_end << ": " << said;
  }
}

// Issue 14: a damaged filter block of the dedup index was reported as a missing dedup record
// ("entry (csp-a, e1) is not in the dedup index").
TEST(VerifyTest, ADamagedDedupTableIsNotReportedAsAMissingRecord) {
  int noticed = 0;
  for (long from_end : {3000, 2000, 1500, 1000, 700, 400, 200, 100}) {
    testing::TempDir dir;
    Fill(dir.Sub("db"), 3000);
    const std::string sst = LargestTableOf(dir.Sub("db"), "dedup");
    ASSERT_FALSE(sst.empty());
    if (static_cast<long>(std::filesystem::file_size(sst)) <= from_end) continue;
    FlipByte(sst, from_end);
    LedgerOptions ro;
    ro.read_only = true;
    ro.open_inconsistent = true;
    auto l = Ledger::Open(dir.Sub("db"), ro);
    if (!l.ok()) continue;
    auto r = Verify(**l);
    ASSERT_TRUE(r.ok()) << r.status();
    if (r->ok) continue;
    ++noticed;
    EXPECT_EQ(r->problem.find("is not in the dedup index"), std::string::npos) << r->problem;
    EXPECT_NE(r->problem.find("damaged"), std::string::npos) << from_end << ": " << r->problem;
  }
  EXPECT_GT(noticed, 0);
}

// Issue 14: a write-ahead log that recovery cut short (garbled in the middle) passed
// `ledger verify` silently, as the prefix before the damage.
TEST(VerifyTest, AWriteAheadLogCutShortByRecoveryIsReported) {
  testing::TempDir dir;
  const std::string path = dir.Sub("db");
  const std::string shared = dir.Sub("head");
  std::ofstream(shared, std::ios::binary) << std::string(8, '\0');
  const std::string writer = GPULEDGER_CRASHING_WRITER;
  ASSERT_EQ(std::system((writer + " " + path + " " + shared + " 500 crash").c_str()), 0);
  std::string wal;
  uintmax_t size = 0;
  for (const auto& f : std::filesystem::directory_iterator(path)) {
    if (f.path().extension() == ".log" && f.file_size() > size) {
      size = f.file_size();
      wal = f.path().string();
    }
  }
  ASSERT_GT(size, 0u);
  {
    std::fstream f(wal, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(size / 2));
    f << std::string(64, '\xff');
  }
  LedgerOptions ro;
  ro.read_only = true;
  auto l = Ledger::Open(path, ro);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_LT((*l)->head().seq, 2000u);
  auto r = Verify(**l);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->ok);
  EXPECT_NE(r->problem.find("write-ahead log is damaged"), std::string::npos) << r->problem;
  EXPECT_EQ(r->first_bad_seq, (*l)->head().seq + 1);
}

}  // namespace
}  // namespace gpuledger::ledger
