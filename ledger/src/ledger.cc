#include "ledger/ledger.h"

#include <rocksdb/db.h>
#include <rocksdb/listener.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>
#include <rocksdb/write_buffer_manager.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/assert.h"
#include "base/limits.h"
#include "base/status.h"
#include "keys.h"
#include "ledger/rocks_options.h"
#include "ledger/rocks_status.h"
#include "pinned_current.h"
#include "table_check.h"

namespace gpuledger::ledger {

namespace v1 = gpuledger::v1;

namespace {

// What the ledger tells its user when RocksDB fails in a way they can act on.
constexpr RocksAdvice kLedgerAdvice{
    .locked =
        "the ledger is already open for writing by another process; only one writer may "
        "run per ledger",
    .no_space =
        "what was being written is not recorded; free space and start again (ingest "
        "resumes from the offsets stored with the last recorded batch)"};

absl::Status FromLedgerRocks(const rocksdb::Status& s, absl::string_view what) {
  return FromRocks(s, what, kLedgerAdvice);
}

// How often a read-only open is tried when a file vanishes under it (100 ms apart).
constexpr int kReadOnlyOpenAttempts = 20;

std::string EncodeDedup(const DedupRecord& r) {
  std::string v;
  keys::PutBe64(&v, r.seq);
  v.append(ToBytes(r.content_hash));
  v.push_back(static_cast<char>(r.outcome));
  return v;
}

absl::StatusOr<DedupRecord> DecodeDedup(std::string_view v) {
  if (v.size() != 8 + 32 + 1) {
    return absl::DataLossError(absl::StrCat("dedup record has ", v.size(), " bytes, want 41"));
  }
  DedupRecord r;
  r.seq = keys::GetBe64(v);
  FromBytes(v.substr(8, 32), &r.content_hash);
  r.outcome = static_cast<v1::Outcome>(static_cast<uint8_t>(v[40]));
  return r;
}

std::string EncodeHead(const Head& h) {
  std::string v;
  keys::PutBe64(&v, h.seq);
  v.append(ToBytes(h.hash));
  return v;
}

absl::StatusOr<StoredEntry> DecodeEntry(std::string_view key, std::string_view value) {
  StoredEntry e;
  if (key.size() != 8 || value.size() < 32) {
    return absl::DataLossError("entry record is too short");
  }
  e.seq = keys::GetBe64(key);
  FromBytes(value.substr(0, 32), &e.hash);
  e.bytes.assign(value.substr(32));
  if (!e.entry.ParseFromString(e.bytes)) {
    return absl::DataLossError(absl::StrCat("entry ", e.seq, " does not parse as a LedgerEntry"));
  }
  return e;
}

}  // namespace

// Notes that the writer flushed a memtable (see Impl::RewriteOverwrittenKeys).
class FlushNotice : public rocksdb::EventListener {
 public:
  void OnFlushCompleted(rocksdb::DB*, const rocksdb::FlushJobInfo&) override { flushed = true; }
  std::atomic<bool> flushed{false};
};

// One open RocksDB instance and its column families. Closed when the last holder lets go.
struct Rocks {
  // The secondary's view of CURRENT (secondaries only); outlives the DB, which uses its Env.
  std::unique_ptr<PinnedCurrent> pinned_current;
  std::unique_ptr<rocksdb::DB> db;
  // default, entries, dedup, offsets, checkpoints, producers
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::ColumnFamilyHandle* entries_cf = nullptr;
  rocksdb::ColumnFamilyHandle* dedup_cf = nullptr;
  rocksdb::ColumnFamilyHandle* offsets_cf = nullptr;
  rocksdb::ColumnFamilyHandle* checkpoints_cf = nullptr;
  rocksdb::ColumnFamilyHandle* producers_cf = nullptr;

  ~Rocks() {
    if (!db) return;
    for (auto* h : handles) {
      if (h != nullptr) db->DestroyColumnFamilyHandle(h);
    }
    db->Close();
    db.reset();
  }
};

struct Ledger::Impl {
  std::string path;
  std::shared_ptr<FlushNotice> flush_notice;  // writers only
  bool write_failed = false;                  // a commit's write failed: write nothing more
  LedgerOptions options;
  // The open RocksDB instance. A follower (secondary_path) replaces it when its writer starts
  // anew (see Refresh); readers on other threads hold the one they started with (Current()).
  std::shared_ptr<Rocks> rk;
  mutable std::mutex rk_mu;  // guards rk's replacement
  std::shared_ptr<Rocks> Current() const {
    std::lock_guard<std::mutex> lock(rk_mu);
    return rk;
  }
  uint64_t checkpoint_interval = 0;  // 0: unsigned ledger
  // A plain read-only open is a secondary instance too, in a private directory of its own that
  // goes with it (see Ledger::Open).
  std::string owned_secondary_dir;

  mutable std::mutex mu;  // guards the committed view below
  Head head;
  OffsetMap offsets;
  v1::LedgerCounters counters;
  v1::ReplicationState replication;
  std::string public_key_pem;
  std::string first_public_key_pem;
  bool first_key_stored = false;  // meta/first_public_key exists (format 2)
  // A read-only open that had to recover past a damaged write-ahead log: what RocksDB said.
  std::string wal_damage;

  // Staged state; touched only by the writing thread.
  rocksdb::WriteBatch batch;
  Head pending_head;
  std::unordered_map<std::string, DedupRecord> pending_dedup;
  std::unordered_map<std::string, ProducerProgress> pending_producers;
  OffsetMap pending_offsets;
  v1::LedgerCounters pending_counters;
  size_t pending_entries = 0;
  // Set by StartPublishing: each commit goes there first.
  std::shared_ptr<CommitLog> commit_log;

  ~Impl() {
    if (rk && rk->db) {
      // A clean close flushes the memtables, so that the next read-only open (settle, verify)
      // does not replay the whole write-ahead log. Best effort: the WAL stays the guarantee.
      // Not after a failed write (a full disk): RocksDB refuses further writes then, and its
      // assertion-enabled builds (Debian's) abort on a WAL write after the failed one.
      if (!options.read_only && !write_failed) {
        rocksdb::FlushOptions fo;
        fo.wait = true;
        (void)rk->db->Flush(fo, rk->handles);
        (void)RewriteOverwrittenKeys();
      }
    }
    rk.reset();
    if (!owned_secondary_dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(owned_secondary_dir, ec);
    }
  }

  // RocksDB 7.8's secondary instances (serve) keep values they replayed from the WAL in their
  // memtable after the writer flushed newer values of the same keys to a table file
  // (facebook/rocksdb#15051): the head, counters, offsets and producer progress would read
  // stale until the writer writes those keys again, and for ever after a clean close. So after
  // every flush the writer writes the committed values of every key it overwrites (a few
  // hundred: meta, offsets, producers) once more, into the new WAL, where secondaries replay
  // them. Values equal to the committed ones: harmless if repeated or cut short by a crash.
  absl::Status RewriteOverwrittenKeys();
  absl::Status OpenRocks(const std::string& at, bool read_only, bool create);
  absl::Status CatchUp(const std::string& at);
  absl::Status LoadAndCheck();
  absl::Status LoadSigning();
  absl::Status CheckHead();
  absl::Status VerifyTables() const;
  absl::Status RecordSigningKey();
  absl::StatusOr<StoredEntry> FindEntry(uint64_t seq) const;
  absl::StatusOr<std::optional<DedupRecord>> FindDedup(const std::string& key) const;
  absl::StatusOr<ProducerProgress> FindProducer(const std::string& key) const;
  absl::Status TrackProducer(const Candidate& c);
  absl::Status StageCheckpointAt(const Head& at, int64_t time_ms);
  // The staged batch as a LedgerCommit (entries and every other write), for the commit log.
  absl::Status CommitOfBatch(v1::LedgerCommit* commit) const;
  // Publishes the staged batch to the commit log and stages the replication state it leaves.
  absl::Status PublishBatch();
  // Writes the staged batch (after the flush workaround); on failure nothing more is written.
  absl::Status WriteBatch();
  void ClearPending();
};

absl::Status Ledger::Impl::LoadAndCheck() {
  std::string format;
  rocksdb::Status s = rk->db->Get(rocksdb::ReadOptions(), keys::kFormatKey, &format);
  if (s.IsNotFound()) {
    if (options.read_only) return absl::FailedPreconditionError("ledger has no format marker");
    GPULEDGER_RETURN_IF_ERROR(
        FromLedgerRocks(rk->db->Put(rocksdb::WriteOptions(), keys::kFormatKey, keys::kFormatValue),
                        "write format"));
    format = keys::kFormatValue;
  } else {
    GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, "read format"));
  }
  if (format == keys::kFormatValueV1 && !options.read_only) {
    GPULEDGER_RETURN_IF_ERROR(
        FromLedgerRocks(rk->db->Put(rocksdb::WriteOptions(), keys::kFormatKey, keys::kFormatValue),
                        "upgrade format"));
    format = keys::kFormatValue;
  }
  if (format != keys::kFormatValue && format != keys::kFormatValueV1) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is not a gpuledger ledger of a format this build reads (format '",
                     format, "', want '", keys::kFormatValue, "')"));
  }

  std::string head_value;
  s = rk->db->Get(rocksdb::ReadOptions(), keys::kHeadKey, &head_value);
  if (!s.IsNotFound()) {
    GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, "read head"));
    if (head_value.size() != 40) return absl::DataLossError("head record is damaged");
    head.seq = keys::GetBe64(head_value);
    FromBytes(std::string_view(head_value).substr(8), &head.hash);
  }

  GPULEDGER_RETURN_IF_ERROR(CheckHead());
  std::unique_ptr<rocksdb::Iterator> oit(
      rk->db->NewIterator(rocksdb::ReadOptions(), rk->offsets_cf));
  for (oit->SeekToFirst(); oit->Valid(); oit->Next()) {
    std::string_view k = oit->key().ToStringView();
    std::string_view v = oit->value().ToStringView();
    const size_t nul = k.find('\0');
    if (nul == std::string_view::npos || k.size() != nul + 9 || v.size() != 8) {
      return absl::DataLossError("offset record is damaged");
    }
    TopicPartition tp{std::string(k.substr(0, nul)),
                      static_cast<int32_t>(keys::GetBe64(k.substr(nul + 1)))};
    offsets[tp] = static_cast<int64_t>(keys::GetBe64(v));
  }
  GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(oit->status(), "read offsets"));

  std::string counters_value;
  s = rk->db->Get(rocksdb::ReadOptions(), keys::kCountersKey, &counters_value);
  if (!s.IsNotFound()) {
    GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, "read counters"));
    if (!counters.ParseFromString(counters_value)) {
      return absl::DataLossError("counters record is damaged");
    }
  }
  std::string replication_value;
  s = rk->db->Get(rocksdb::ReadOptions(), keys::kReplicationKey, &replication_value);
  if (!s.IsNotFound()) {
    GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, "read replication state"));
    if (!replication.ParseFromString(replication_value)) {
      return absl::DataLossError("replication state record is damaged");
    }
  }
  pending_head = head;
  pending_counters = counters;
  return LoadSigning();
}

// The head must name the last entry exactly: anything else means entries were added or removed
// behind the ledger's back, and writing on top would extend a broken chain. Or a table block is
// damaged (the last entry then reads as missing): that is named as what it is.
absl::Status Ledger::Impl::CheckHead() {
  std::unique_ptr<rocksdb::Iterator> it(
      rk->db->NewIterator(rocksdb::ReadOptions(), rk->entries_cf));
  it->SeekToLast();
  absl::Status st = FromLedgerRocks(it->status(), "read last entry");
  std::string mismatch;
  if (st.ok() && !it->Valid() && head.seq != 0) {
    mismatch = absl::StrCat("ledger head says seq ", head.seq, " but the ledger holds no entries.");
  } else if (st.ok() && it->Valid()) {
    absl::StatusOr<StoredEntry> last =
        DecodeEntry(it->key().ToStringView(), it->value().ToStringView());
    if (!last.ok()) {
      st = last.status();
    } else if (last->seq != head.seq || last->hash != head.hash) {
      mismatch =
          absl::StrCat("ledger head (seq ", head.seq, ", hash ", ToHex(head.hash).substr(0, 16),
                       ") does not match its last entry (seq ", last->seq, ", hash ",
                       ToHex(last->hash).substr(0, 16), ").");
    }
  }
  if (st.ok() && mismatch.empty()) return absl::OkStatus();
  // RocksDB reads a damaged index or data block at the end of a table as "no more entries":
  // check every block's checksum, then every table against its MANIFEST record, before calling
  // the ledger inconsistent.
  GPULEDGER_RETURN_IF_ERROR(VerifyTables());
  GPULEDGER_RETURN_IF_ERROR(ledger::DiagnoseTables(rk->db.get(), rk->handles, path));
  if (!st.ok()) return st;
  if (options.read_only && options.open_inconsistent) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      mismatch, " Entries were added or removed behind the writer's back: do not write to it.",
      options.read_only ? " "
                        : absl::StrCat(" Run `gpuledger ledger verify --db ", path,
                                       "` to find the first entry that does not verify, and "),
      options.read_only ? "Restore it" : "restore it", " from a verified export or backup."));
}

absl::Status Ledger::Impl::VerifyTables() const {
  const std::shared_ptr<Rocks> rocks = Current();
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  rocksdb::Status s = rocks->db->VerifyChecksum(ro);
  if (s.IsCorruption()) {
    return absl::DataLossError(absl::StrCat(
        "a table file of the ledger at ", path, " is damaged (", s.ToString(),
        "): the ledger cannot be read as it is; restore it from a verified export or backup"));
  }
  return FromLedgerRocks(s, "check the ledger's table files");
}

// A ledger created with a signer stays signed: its checkpoints must go on, whatever key signs.
absl::Status Ledger::Impl::LoadSigning() {
  std::string value;
  rocksdb::Status s = rk->db->Get(rocksdb::ReadOptions(), keys::kIntervalKey, &value);
  if (!s.IsNotFound()) {
    GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, "read checkpoint interval"));
    if (value.size() != 8) return absl::DataLossError("checkpoint interval record is damaged");
    checkpoint_interval = keys::GetBe64(value);
  }
  s = rk->db->Get(rocksdb::ReadOptions(), keys::kPublicKeyKey, &public_key_pem);
  if (!s.IsNotFound()) GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, "read public key"));
  s = rk->db->Get(rocksdb::ReadOptions(), keys::kFirstPublicKeyKey, &first_public_key_pem);
  first_key_stored = !s.IsNotFound();
  if (first_key_stored) GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, "read first public key"));
  // Format 1 kept only the latest key, and never rotated: it is the first.
  if (first_public_key_pem.empty()) first_public_key_pem = public_key_pem;
  if (options.read_only) return absl::OkStatus();
  if (checkpoint_interval > 0 && !options.signer && !options.replica) {
    return absl::FailedPreconditionError(
        absl::StrCat("the ledger at ", path, " is signed (a checkpoint every ", checkpoint_interval,
                     " entries): give the operator's signing key (--signing-key) to write to it"));
  }
  if (checkpoint_interval == 0 && options.signer) {
    if (head.seq > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the ledger at ", path, " was created unsigned and holds ", head.seq,
          " entries; it cannot start signing now (start a new ledger with --signing-key)"));
    }
    if (options.checkpoint_interval == 0) {
      return absl::InvalidArgumentError("checkpoint interval must be at least 1");
    }
    checkpoint_interval = options.checkpoint_interval;
    std::string v;
    keys::PutBe64(&v, checkpoint_interval);
    GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(
        rk->db->Put(rocksdb::WriteOptions(), keys::kIntervalKey, v), "write interval"));
  }
  if (options.signer) GPULEDGER_RETURN_IF_ERROR(RecordSigningKey());
  return absl::OkStatus();
}

// The key that signs from now on. A new key on a ledger with entries is a key rotation: a
// record signed by the old key names the new one, so that an auditor holding the first
// published key can follow it; without the old key the ledger is refused.
absl::Status Ledger::Impl::RecordSigningKey() {
  const std::string pem = options.signer->PublicKeyPem();
  if (pem == public_key_pem && first_key_stored) return absl::OkStatus();
  rocksdb::WriteBatch wb;
  if (first_public_key_pem.empty() || head.seq == 0) first_public_key_pem = pem;
  GPULEDGER_RETURN_IF_ERROR(
      FromLedgerRocks(wb.Put(keys::kFirstPublicKeyKey, first_public_key_pem), "stage first key"));
  if (pem != public_key_pem && !public_key_pem.empty() && head.seq > 0) {
    if (!options.previous_signer || options.previous_signer->PublicKeyPem() != public_key_pem) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the ledger at ", path,
          " is signed with another key than the signing key given. To rotate to the new key, "
          "also give the key that signed it so far (--previous-signing-key OLD.pem): a key "
          "rotation record signed by it will name the new key, so that auditors holding the "
          "published key can follow. Otherwise give the ledger's own signing key."));
    }
    GPULEDGER_ASSIGN_OR_RETURN(StoredEntry at_head, FindEntry(head.seq));
    uint64_t n = 0;
    std::unique_ptr<rocksdb::Iterator> it(
        rk->db->NewIterator(rocksdb::ReadOptions(), rk->checkpoints_cf));
    const std::string prefix = keys::SeqKey(head.seq) + keys::kRotationTag;
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) ++n;
    GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(it->status(), "read key rotations"));
    v1::Checkpoint rotation;
    rotation.set_seq(head.seq);
    rotation.set_head_hash(ToBytes(head.hash));
    rotation.set_time_ms(at_head.entry.recorded_at_ms());
    rotation.set_interval(checkpoint_interval);
    SignKeyRotation(*options.previous_signer, *options.signer, &rotation);
    GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(
        wb.Put(rk->checkpoints_cf, keys::RotationKey(head.seq, n), rotation.SerializeAsString()),
        "stage key rotation"));
    spdlog::info("ledger {}: signing key rotated at seq {} (record signed by the previous key)",
                 path, head.seq);
  }
  GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(wb.Put(keys::kPublicKeyKey, pem), "stage key"));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(rk->db->Write(wo, &wb), "write signing key"));
  public_key_pem = pem;
  first_key_stored = true;
  return absl::OkStatus();
}

absl::StatusOr<StoredEntry> Ledger::Impl::FindEntry(uint64_t seq) const {
  const std::shared_ptr<Rocks> rocks = Current();
  const std::string key = keys::SeqKey(seq);
  std::string value;
  rocksdb::Status s = rocks->db->Get(rocksdb::ReadOptions(), rocks->entries_cf, key, &value);
  if (s.IsNotFound()) return absl::NotFoundError(absl::StrCat("no entry with seq ", seq));
  GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, "read entry"));
  return DecodeEntry(key, value);
}

absl::StatusOr<std::optional<DedupRecord>> Ledger::Impl::FindDedup(const std::string& key) const {
  const std::shared_ptr<Rocks> rocks = Current();
  std::string value;
  rocksdb::Status s = rocks->db->Get(rocksdb::ReadOptions(), rocks->dedup_cf, key, &value);
  if (s.IsNotFound()) return std::optional<DedupRecord>();
  GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, "read dedup index"));
  GPULEDGER_ASSIGN_OR_RETURN(DedupRecord r, DecodeDedup(value));
  return std::optional<DedupRecord>(r);
}

absl::StatusOr<ProducerProgress> Ledger::Impl::FindProducer(const std::string& key) const {
  if (auto it = pending_producers.find(key); it != pending_producers.end()) return it->second;
  std::string value;
  rocksdb::Status s = rk->db->Get(rocksdb::ReadOptions(), rk->producers_cf, key, &value);
  if (s.IsNotFound()) return ProducerProgress();
  GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, "read producer progress"));
  return ProducerProgress::Decode(value);
}

absl::Status Ledger::Impl::TrackProducer(const Candidate& c) {
  if (c.producer_id.empty() || c.producer_seq == 0) return absl::OkStatus();
  const std::string key = keys::DedupKey(c.source_id, c.producer_id);
  auto it = pending_producers.find(key);
  if (it == pending_producers.end()) {
    GPULEDGER_ASSIGN_OR_RETURN(ProducerProgress progress, FindProducer(key));
    it = pending_producers.emplace(key, std::move(progress)).first;
  }
  // Written once per producer at Commit(), not per event: a record can hold many ranges.
  it->second.Add(c.producer_seq);
  return absl::OkStatus();
}

absl::Status Ledger::Impl::StageCheckpointAt(const Head& at, int64_t time_ms) {
  v1::Checkpoint cp;
  cp.set_seq(at.seq);
  cp.set_head_hash(ToBytes(at.hash));
  cp.set_time_ms(time_ms);
  cp.set_interval(checkpoint_interval);
  SignCheckpoint(*options.signer, &cp);
  return FromLedgerRocks(
      batch.Put(rk->checkpoints_cf, keys::SeqKey(at.seq), cp.SerializeAsString()),
      "stage checkpoint");
}

void Ledger::Impl::ClearPending() {
  batch.Clear();
  pending_dedup.clear();
  pending_producers.clear();
  pending_offsets.clear();
  pending_entries = 0;
  std::lock_guard<std::mutex> lock(mu);
  pending_head = head;
  pending_counters = counters;
}

Ledger::Ledger(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Ledger::~Ledger() = default;

absl::StatusOr<std::unique_ptr<Ledger>> Ledger::Open(const std::string& path,
                                                     const LedgerOptions& options) {
  namespace fs = std::filesystem;
  const bool exists = fs::exists(fs::path(path) / "CURRENT");
  if (!exists && (options.read_only || !options.create_if_missing)) {
    return absl::NotFoundError(absl::StrCat("no ledger at ", path, " (run `gpuledger ingest --db ",
                                            path, "` to create one, or check the path)"));
  }
  if (!exists) {
    // Create it complete (format marker, column families, signing metadata) beside the target
    // and rename it into place, so that a crash during creation leaves no half-made ledger.
    const std::string staging = path + ".creating";
    std::error_code ec;
    fs::remove_all(staging, ec);
    // Made here: RocksDB logs a missing directory as an error before creating it.
    fs::create_directories(staging, ec);
    {
      auto impl = std::make_unique<Impl>();
      impl->path = path;
      impl->options = options;
      GPULEDGER_RETURN_IF_ERROR(impl->OpenRocks(staging, false, true));
      GPULEDGER_RETURN_IF_ERROR(impl->LoadAndCheck());
    }
    fs::rename(staging, path, ec);
    if (ec) {
      return absl::UnavailableError(
          absl::StrCat("cannot move the new ledger into ", path, ": ", ec.message()));
    }
  }
  // A reader beside a live ingest reads the list of table files, then opens them; a compaction
  // of the writer may delete one in between ("No such file or directory"). Found by the kill
  // test with settle running beside ingest. The next attempt reads the new list.
  for (int attempt = 1;; ++attempt) {
    auto impl = std::make_unique<Impl>();
    impl->path = path;
    impl->options = options;
    // Read-only opens are RocksDB secondary instances: a plain read-only instance beside a live
    // writer can read a table-file list and write-ahead logs of different moments (the writer
    // flushed and deleted a log in between) and see entries missing or an older head. Found by
    // the kill test with settle running beside ingest. A secondary is made to follow a writer.
    if (options.read_only && options.secondary_path.empty()) {
      std::string dir = (fs::temp_directory_path() / "gpuledger-reader.XXXXXX").string();
      if (::mkdtemp(dir.data()) == nullptr) {
        return absl::UnavailableError(absl::StrCat("cannot make a private directory under ",
                                                   fs::temp_directory_path().string(),
                                                   " to read the ledger: ", std::strerror(errno)));
      }
      impl->owned_secondary_dir = dir;
      impl->options.secondary_path = dir;
    }
    absl::Status s = impl->OpenRocks(path, options.read_only, false);
    // A secondary reads the MANIFEST, opens the table files it names, then lists and replays
    // the write-ahead logs. A writer starting in between (ingest after a crash) recovers the
    // old log into a table file, writes a new MANIFEST and deletes the old log: the secondary
    // then misses that log's entries and sees an older head than a reader before it did. The
    // kill test's settle saw that ("the store has applied entries up to 146900 but the ledger
    // ends at 139835"). Catching up once more reads the MANIFEST records written meanwhile,
    // which name the table file holding those entries: the view is then at least as new as
    // the ledger was when this open began.
    if (s.ok() && !impl->options.secondary_path.empty()) {
      s = impl->CatchUp(path);
    }
    // Only RocksDB's own open reports a damaged write-ahead log; a damaged table file that
    // LoadAndCheck names is not read any better by a plain open.
    const bool open_failed = !s.ok();
    if (s.ok()) s = impl->LoadAndCheck();
    // A secondary refuses a damaged write-ahead log (a torn or garbled tail) where a plain
    // read-only open, like the writer's next start, recovers the consistent prefix before the
    // damage. A damaged log is not being written (a writer would have recovered it first), so
    // the plain open is safe then.
    if (open_failed && absl::IsDataLoss(s) && !impl->owned_secondary_dir.empty()) {
      spdlog::warn("ledger {}: {}; reading the consistent prefix before the damage", path,
                   std::string(s.message()));
      const std::string damage(s.message());
      impl = std::make_unique<Impl>();
      impl->path = path;
      impl->options = options;
      impl->wal_damage = damage;
      s = impl->OpenRocks(path, true, false);
      if (s.ok()) s = impl->LoadAndCheck();
    }
    if (s.ok()) return std::unique_ptr<Ledger>(new Ledger(std::move(impl)));
    // A secondary can also see a head and a last entry of different moments when the writer
    // flushes (or starts) between its reading the MANIFEST and the write-ahead logs: a new view
    // is consistent. A ledger really changed behind its writer's back stays refused.
    const bool vanished = absl::StrContains(s.message(), "No such file or directory");
    const bool moments = absl::IsFailedPrecondition(s) && !impl->owned_secondary_dir.empty() &&
                         (absl::StrContains(s.message(), "does not match its last entry") ||
                          absl::StrContains(s.message(), "holds no entries"));
    if (!options.read_only || attempt >= kReadOnlyOpenAttempts || !(vanished || moments)) {
      return s;
    }
    spdlog::info("ledger {}: {}; again", path,
                 vanished ? "a file vanished while opening it (the writer compacted)"
                          : "the view mixed two moments of the writer");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

absl::Status Ledger::Impl::RewriteOverwrittenKeys() {
  rocksdb::WriteBatch rewrite;
  for (rocksdb::ColumnFamilyHandle* cf : {rk->handles[0], rk->offsets_cf, rk->producers_cf}) {
    std::unique_ptr<rocksdb::Iterator> it(rk->db->NewIterator(rocksdb::ReadOptions(), cf));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      GPULEDGER_RETURN_IF_ERROR(
          FromLedgerRocks(rewrite.Put(cf, it->key(), it->value()), "rewrite"));
    }
    GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(it->status(), "rewrite"));
  }
  if (rewrite.Count() == 0) return absl::OkStatus();
  return FromLedgerRocks(rk->db->Write(rocksdb::WriteOptions(), &rewrite),
                         "rewrite overwritten keys");
}

absl::Status Ledger::Impl::OpenRocks(const std::string& at, bool read_only, bool create) {
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = create;
  db_options.create_missing_column_families = create;
  db_options.paranoid_checks = true;
  // Recover to the last consistent point of the WAL; a torn tail (power cut mid-write) loses
  // only what was never acknowledged.
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  db_options.info_log = RocksLogger("ledger");
  if (!read_only) {
    flush_notice = std::make_shared<FlushNotice>();
    db_options.listeners.push_back(flush_notice);
  }
  // Bound the WAL: column families written rarely would otherwise pin old WAL files forever
  // (and every open would replay them).
  db_options.max_total_wal_size = limits::kLedgerWalBytesMax;
  // Every flush writes all column families at the same point, in one MANIFEST record. A
  // secondary that finds a write-ahead log already deleted reads the table files alone; with
  // column families flushed one by one it could then see the entries of a commit without its
  // head (or the head without its entries), and refuse the ledger as damaged. Found by
  // LedgerTest.ReadOnlyOpenSeesEveryCommitMadeBeforeItBegan (writers closing cleanly).
  db_options.atomic_flush = true;
  // Memory that does not grow with the ledger: the memtables of all column families share one
  // budget; index and filter blocks are charged to a fixed cache.
  db_options.write_buffer_manager =
      std::make_shared<rocksdb::WriteBufferManager>(limits::kLedgerMemtableBytesMax);
  rocksdb::ColumnFamilyOptions cf_options;
  cf_options.table_factory = BoundedTables(limits::kLedgerBlockCacheBytes);
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, cf_options},
      {keys::kEntriesCf, cf_options},
      {keys::kDedupCf, cf_options},
      {keys::kOffsetsCf, cf_options},
      {keys::kCheckpointsCf, cf_options},
      {keys::kProducersCf, cf_options}};
  auto fresh = std::make_shared<Rocks>();
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s;
  if (read_only && !options.secondary_path.empty()) {
    db_options.max_open_files = -1;  // required by secondary instances
    // serve catches up every 500 ms: with the default (16 threads per column family) each
    // catch-up started and stopped about 90 threads.
    db_options.max_file_opening_threads = 1;
    fresh->pinned_current = std::make_unique<PinnedCurrent>(at);
    db_options.env = fresh->pinned_current->env();
    s = rocksdb::DB::OpenAsSecondary(db_options, at, options.secondary_path, cfs, &fresh->handles,
                                     &raw);
  } else if (read_only) {
    s = rocksdb::DB::OpenForReadOnly(db_options, at, cfs, &fresh->handles, &raw);
  } else {
    s = rocksdb::DB::Open(db_options, at, cfs, &fresh->handles, &raw);
  }
  GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, absl::StrCat("open ledger at ", at)));
  fresh->db.reset(raw);
  fresh->entries_cf = fresh->handles[1];
  fresh->dedup_cf = fresh->handles[2];
  fresh->offsets_cf = fresh->handles[3];
  fresh->checkpoints_cf = fresh->handles[4];
  fresh->producers_cf = fresh->handles[5];
  std::lock_guard<std::mutex> lock(rk_mu);
  rk = std::move(fresh);
  return absl::OkStatus();
}

// A secondary follows one MANIFEST (PinnedCurrent). Catches up with the writer, or, when the
// writer has started anew (a new MANIFEST), opens a new secondary instance in its place; readers
// on other threads keep the old one until they finish.
namespace {

// The newest table file of the default column family. Every flush writes one there: the column
// families are flushed together (atomic_flush) and every commit writes the head.
uint64_t NewestDefaultTable(const Rocks& rocks) {
  rocksdb::ColumnFamilyMetaData meta;
  rocks.db->GetColumnFamilyMetaData(rocks.handles[0], &meta);
  uint64_t newest = 0;
  for (const auto& level : meta.levels) {
    for (const auto& file : level.files) newest = std::max(newest, file.file_number);
  }
  return newest;
}

}  // namespace

absl::Status Ledger::Impl::CatchUp(const std::string& at) {
  for (int attempt = 1;; ++attempt) {
    if (!rk->pinned_current || !rk->pinned_current->Moved()) {
      const uint64_t before = NewestDefaultTable(*rk);
      GPULEDGER_RETURN_IF_ERROR(
          FromLedgerRocks(rk->db->TryCatchUpWithPrimary(), "catch up with the ledger's writer"));
      // The writer may have started during the catch-up: the view may then mix two MANIFESTs.
      // Or it flushed: a secondary keeps what it replayed from the flushed write-ahead log in
      // its memtable, where it hides the newer values of the same keys (head, counters,
      // offsets) that the flush wrote to table files (RocksDB issue 15051; CI saw a refresh,
      // done twice, stay 1,500 entries behind). A new instance replays only the logs after it.
      const bool moved = rk->pinned_current && rk->pinned_current->Moved();
      if (!moved && NewestDefaultTable(*rk) == before) return absl::OkStatus();
    }
    if (attempt >= kReadOnlyOpenAttempts) {
      return absl::UnavailableError(absl::StrCat("the ledger's writer at ", at,
                                                 " restarted or flushed ", attempt,
                                                 " times while following it; try again"));
    }
    GPULEDGER_RETURN_IF_ERROR(OpenRocks(at, true, false));
  }
}

const std::string& EventBytes(const v1::LedgerEntry& entry) {
  return entry.decoded_event().empty() ? entry.payload() : entry.decoded_event();
}

void SetContentHash(Candidate* c) {
  c->content_hash = Sha256(c->canonical.empty() ? c->payload : c->canonical);
}

absl::StatusOr<AppendResult> Ledger::Append(const Candidate& c) {
  if (impl_->options.read_only) return absl::FailedPreconditionError("ledger is read-only");
  if (impl_->options.replica) {
    return absl::FailedPreconditionError(
        "this ledger is a standby: it only applies its writer's commits from the ledger topic");
  }
  if (c.source_id.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("source id contains a NUL byte");
  }
  v1::LedgerEntry entry;
  entry.set_source(c.source);
  entry.set_payload(c.payload);
  for (const auto& [key, value] : c.headers) {
    v1::KafkaHeader* h = entry.add_headers();
    h->set_key(key);
    h->set_value(value);
  }
  entry.set_decoded_event(c.decoded_event);
  entry.set_topic(c.topic);
  entry.set_partition(c.partition);
  entry.set_offset(c.offset);
  entry.set_kafka_timestamp_ms(c.kafka_timestamp_ms);
  entry.set_kafka_timestamp_type(c.kafka_timestamp_type);
  entry.set_recorded_at_ms(c.recorded_at_ms);
  entry.set_outcome(!c.reason_code.empty() ? v1::REJECTED : c.park ? v1::PARKED : v1::ACCEPTED);
  entry.set_resolves_seq(c.resolves_seq);
  entry.set_reason_code(c.reason_code);
  entry.set_reason_detail(c.reason_detail);
  entry.set_source_id(c.source_id);
  entry.set_event_id(c.event_id);
  entry.set_producer_id(c.producer_id);
  entry.set_producer_seq(c.producer_seq);

  AppendKind kind = AppendKind::kAppended;
  // An input without an event id (one that did not decode) is recorded as it is, never
  // deduplicated, even though its source (the CSP of its topic) is known.
  const bool has_identity = !c.event_id.empty();
  const std::string dedup_key = keys::DedupKey(c.source_id, c.event_id);
  const Digest content_hash =
      c.content_hash ? *c.content_hash : Sha256(c.canonical.empty() ? c.payload : c.canonical);
  if (has_identity && c.resolves_seq == 0) {
    std::optional<DedupRecord> known;
    if (auto it = impl_->pending_dedup.find(dedup_key); it != impl_->pending_dedup.end()) {
      known = it->second;
    } else {
      GPULEDGER_ASSIGN_OR_RETURN(known, impl_->FindDedup(dedup_key));
    }
    if (known.has_value()) {
      if (known->content_hash == content_hash) {
        impl_->pending_counters.set_duplicates(impl_->pending_counters.duplicates() + 1);
        return AppendResult{AppendKind::kDuplicate, known->seq};
      }
      kind = AppendKind::kConflict;
      entry.set_outcome(v1::REJECTED);
      entry.set_reason_code(kConflictingDuplicate);
      entry.set_reason_detail(absl::StrCat("event id '", c.event_id, "' of '", c.source_id,
                                           "' was recorded at seq ", known->seq,
                                           " with different content; the original stands"));
    }
  }

  const uint64_t seq = impl_->pending_head.seq + 1;
  entry.set_seq(seq);
  std::string bytes;
  GPULEDGER_ASSERT(entry.SerializeToString(&bytes), "LedgerEntry serialization failed");
  const Digest hash = ChainHash(impl_->pending_head.hash, seq, bytes);

  std::string value = ToBytes(hash);
  value.append(bytes);
  GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(
      impl_->batch.Put(impl_->rk->entries_cf, keys::SeqKey(seq), value), "stage entry"));
  if (has_identity && kind == AppendKind::kAppended) {
    DedupRecord record{seq, content_hash, entry.outcome()};
    GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(
        impl_->batch.Put(impl_->rk->dedup_cf, dedup_key, EncodeDedup(record)), "stage dedup"));
    impl_->pending_dedup[dedup_key] = record;
  }
  if (c.resolves_seq == 0) GPULEDGER_RETURN_IF_ERROR(impl_->TrackProducer(c));
  impl_->pending_head = Head{seq, hash};
  ++impl_->pending_entries;
  v1::LedgerCounters& counters = impl_->pending_counters;
  if (entry.outcome() == v1::ACCEPTED) {
    counters.set_accepted(counters.accepted() + 1);
  } else if (entry.outcome() == v1::PARKED) {
    counters.set_parked(counters.parked() + 1);
  } else {
    counters.set_rejected(counters.rejected() + 1);
    ++(*counters.mutable_rejected_by_reason())[entry.reason_code()];
  }
  if (impl_->checkpoint_interval > 0 && seq % impl_->checkpoint_interval == 0) {
    GPULEDGER_RETURN_IF_ERROR(impl_->StageCheckpointAt(impl_->pending_head, c.recorded_at_ms));
  }
  return AppendResult{kind, seq};
}

absl::Status Ledger::AdvanceOffset(const TopicPartition& tp, int64_t next_offset) {
  if (impl_->options.read_only) return absl::FailedPreconditionError("ledger is read-only");
  int64_t current = -1;
  if (auto it = impl_->pending_offsets.find(tp); it != impl_->pending_offsets.end()) {
    current = it->second;
  } else {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (auto c = impl_->offsets.find(tp); c != impl_->offsets.end()) current = c->second;
  }
  GPULEDGER_ASSERT(next_offset >= current, "stored Kafka offsets only move forward");
  impl_->pending_offsets[tp] = next_offset;
  std::string v;
  keys::PutBe64(&v, static_cast<uint64_t>(next_offset));
  return FromLedgerRocks(
      impl_->batch.Put(impl_->rk->offsets_cf, keys::OffsetKey(tp.topic, tp.partition), v),
      "stage offset");
}

absl::Status Ledger::Commit() {
  if (impl_->options.read_only) return absl::FailedPreconditionError("ledger is read-only");
  const bool counters_moved = impl_->pending_counters.duplicates() != impl_->counters.duplicates();
  if (impl_->batch.Count() == 0 && !counters_moved) return absl::OkStatus();
  GPULEDGER_ASSERT(impl_->pending_head.seq >= impl_->head.seq, "head only moves forward");
  if (impl_->write_failed) {
    return absl::FailedPreconditionError(
        "an earlier write to the ledger failed; reopen it (restart) before writing again");
  }
  absl::Status st = FromLedgerRocks(
      impl_->batch.Put(keys::kHeadKey, EncodeHead(impl_->pending_head)), "stage head");
  for (const auto& [key, progress] : impl_->pending_producers) {
    if (!st.ok()) break;
    st = FromLedgerRocks(impl_->batch.Put(impl_->rk->producers_cf, key, progress.Encode()),
                         "stage producer progress");
  }
  if (st.ok()) {
    st = FromLedgerRocks(
        impl_->batch.Put(keys::kCountersKey, impl_->pending_counters.SerializeAsString()),
        "stage counters");
  }
  if (st.ok() && impl_->commit_log) st = impl_->PublishBatch();
  if (!st.ok()) {
    impl_->write_failed = true;
    impl_->ClearPending();
    return st;
  }
  return impl_->WriteBatch();
}

absl::Status Ledger::Impl::WriteBatch() {
  // Before this batch, which overwrites some of them with newer values.
  absl::Status st;
  if (flush_notice && flush_notice->flushed.exchange(false)) st = RewriteOverwrittenKeys();
  if (st.ok()) {
    rocksdb::WriteOptions wo;
    wo.sync = options.sync_commits;
    st = FromLedgerRocks(rk->db->Write(wo, &batch), "commit batch");
  }
  if (!st.ok()) {
    write_failed = true;
    ClearPending();
    return st;
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    head = pending_head;
    counters = pending_counters;
    for (const auto& [tp, off] : pending_offsets) offsets[tp] = off;
  }
  ClearPending();
  return absl::OkStatus();
}

namespace {

constexpr char kCommitFormat[] = "gpuledger-ledger-commit";
constexpr uint32_t kCommitFormatVersion = 1;

// Reads a write batch back as a LedgerCommit: entries as they are chained, every other key as a
// write to its column family. The ledger only ever puts.
class CommitBuilder : public rocksdb::WriteBatch::Handler {
 public:
  CommitBuilder(const Rocks& rocks, v1::LedgerCommit* commit) : rocks_(rocks), commit_(commit) {}

  rocksdb::Status PutCF(uint32_t cf_id, const rocksdb::Slice& key,
                        const rocksdb::Slice& value) override {
    if (cf_id == rocks_.entries_cf->GetID()) {
      if (key.size() != 8 || value.size() < 32) {
        return rocksdb::Status::Corruption("staged entry record is too short");
      }
      v1::ExportedEntry* e = commit_->add_entries();
      e->set_seq(keys::GetBe64(key.ToStringView()));
      e->set_hash(value.data(), 32);
      e->set_entry(value.data() + 32, value.size() - 32);
      return rocksdb::Status::OK();
    }
    for (rocksdb::ColumnFamilyHandle* h : rocks_.handles) {
      if (h->GetID() != cf_id) continue;
      v1::StateWrite* w = commit_->add_writes();
      w->set_column_family(h->GetName());
      w->set_key(key.ToString());
      w->set_value(value.ToString());
      return rocksdb::Status::OK();
    }
    return rocksdb::Status::Corruption("a staged write names an unknown column family");
  }
  void LogData(const rocksdb::Slice&) override {}

 private:
  const Rocks& rocks_;
  v1::LedgerCommit* commit_;
};

}  // namespace

absl::Status Ledger::Impl::CommitOfBatch(v1::LedgerCommit* commit) const {
  commit->set_format(kCommitFormat);
  commit->set_format_version(kCommitFormatVersion);
  {
    std::lock_guard<std::mutex> lock(mu);
    commit->set_prev_hash(ToBytes(head.hash));
  }
  CommitBuilder builder(*rk, commit);
  return FromLedgerRocks(batch.Iterate(&builder), "read the staged batch");
}

absl::Status Ledger::Impl::PublishBatch() {
  v1::LedgerCommit commit;
  GPULEDGER_RETURN_IF_ERROR(CommitOfBatch(&commit));
  GPULEDGER_ASSIGN_OR_RETURN(const int64_t offset, commit_log->Publish(&commit));
  v1::ReplicationState state;
  state.set_epoch(commit.epoch());
  state.set_writer(commit.writer());
  state.set_next_offset(offset + 1);
  GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(
      batch.Put(keys::kReplicationKey, state.SerializeAsString()), "stage replication state"));
  std::lock_guard<std::mutex> lock(mu);
  replication = std::move(state);
  return absl::OkStatus();
}

absl::Status Ledger::StartPublishing(std::shared_ptr<CommitLog> log) {
  if (impl_->options.read_only || impl_->options.replica) {
    return absl::FailedPreconditionError("only the ledger's writer publishes commits");
  }
  if (impl_->batch.Count() != 0 || impl_->pending_entries != 0) {
    return absl::FailedPreconditionError("start publishing with nothing staged");
  }
  const Head at = head();
  if (at.seq > 0 && replication().epoch() == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the ledger at ", impl_->path, " holds ", at.seq,
        " entries written without a ledger topic, which its ledger topic does not hold; a "
        "ledger topic starts with its ledger (see docs/RELIABILITY.md)"));
  }
  Impl& im = *impl_;
  // The signing metadata, which Open writes outside any commit: a standby needs it to be the
  // writer's ledger, and applying it again is harmless.
  std::string value;
  for (const char* key : {keys::kIntervalKey, keys::kPublicKeyKey, keys::kFirstPublicKeyKey}) {
    rocksdb::Status s = im.rk->db->Get(rocksdb::ReadOptions(), key, &value);
    if (s.IsNotFound()) continue;
    GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, "read signing metadata"));
    GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(im.batch.Put(key, value), "stage signing metadata"));
  }
  if (at.seq > 0) {
    std::unique_ptr<rocksdb::Iterator> it(
        im.rk->db->NewIterator(rocksdb::ReadOptions(), im.rk->checkpoints_cf));
    const std::string prefix = keys::SeqKey(at.seq);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(
          im.batch.Put(im.rk->checkpoints_cf, it->key(), it->value()), "stage key rotation"));
    }
    GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(it->status(), "read key rotations"));
  }
  GPULEDGER_RETURN_IF_ERROR(
      FromLedgerRocks(im.batch.Put(keys::kHeadKey, EncodeHead(at)), "stage head"));
  im.commit_log = std::move(log);
  absl::Status st = im.PublishBatch();
  if (!st.ok()) {
    im.commit_log.reset();
    im.ClearPending();
    return st;
  }
  return im.WriteBatch();
}

absl::Status Ledger::ApplyCommit(const v1::LedgerCommit& commit, int64_t offset) {
  Impl& im = *impl_;
  if (im.options.read_only) return absl::FailedPreconditionError("ledger is read-only");
  if (im.commit_log) {
    return absl::FailedPreconditionError("the ledger's writer does not apply commits");
  }
  if (im.batch.Count() != 0 || im.pending_entries != 0) {
    return absl::FailedPreconditionError("apply commits with nothing staged");
  }
  if (im.write_failed) {
    return absl::FailedPreconditionError(
        "an earlier write to the ledger failed; reopen it (restart) before writing again");
  }
  const std::string where = absl::StrCat("the ledger topic's commit at offset ", offset);
  auto refuse = [&](const std::string& what) {
    im.ClearPending();
    return absl::FailedPreconditionError(
        absl::StrCat(where, " does not follow the ledger at ", im.path, ": ", what));
  };
  if (commit.format() != kCommitFormat || commit.format_version() != kCommitFormatVersion) {
    return refuse(absl::StrCat("format '", commit.format(), "' version ", commit.format_version(),
                               ", want '", kCommitFormat, "' version ", kCommitFormatVersion));
  }
  const v1::ReplicationState current = replication();
  if (offset < current.next_offset()) {
    return refuse(absl::StrCat("the ledger already applied the topic up to offset ",
                               current.next_offset() - 1));
  }
  if (commit.takeover()) {
    if (commit.epoch() <= current.epoch()) {
      return refuse(absl::StrCat("a takeover by '", commit.writer(), "' at epoch ", commit.epoch(),
                                 ", not above the epoch ", current.epoch(), " of '",
                                 current.writer(), "': two writers took over the same epoch"));
    }
  } else if (commit.epoch() != current.epoch() || commit.writer() != current.writer()) {
    return refuse(absl::StrCat(
        "written by '", commit.writer(), "' at epoch ", commit.epoch(), ", but the writer is '",
        current.writer(), "' at epoch ", current.epoch(),
        commit.epoch() < current.epoch()
            ? ": a fenced writer published after the takeover (was it fenced?)"
            : ": a writer published without taking over (promote fences the old one first)"));
  }
  Head at = head();
  if (commit.prev_hash() != ToBytes(at.hash)) {
    return refuse(absl::StrCat("it follows another head than this ledger's (seq ", at.seq,
                               ", hash ", ToHex(at.hash).substr(0, 16), ")"));
  }
  for (const v1::ExportedEntry& e : commit.entries()) {
    if (e.seq() != at.seq + 1) {
      return refuse(absl::StrCat("entry seq ", e.seq(), " where seq ", at.seq + 1, " comes next"));
    }
    const Digest hash = ChainHash(at.hash, e.seq(), e.entry());
    if (e.hash() != ToBytes(hash)) {
      return refuse(absl::StrCat("entry ", e.seq(),
                                 " does not chain: its hash is not SHA-256 of "
                                 "the previous hash, its seq and its bytes"));
    }
    v1::LedgerEntry parsed;
    if (!parsed.ParseFromString(e.entry()) || parsed.seq() != e.seq()) {
      return refuse(absl::StrCat("entry ", e.seq(), " is not a LedgerEntry of that seq"));
    }
    std::string value = e.hash();
    value.append(e.entry());
    GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(
        im.batch.Put(im.rk->entries_cf, keys::SeqKey(e.seq()), value), "stage entry"));
    at = Head{e.seq(), hash};
  }
  std::optional<v1::LedgerCounters> counters;
  std::optional<Head> head_written;
  OffsetMap offsets;
  for (const v1::StateWrite& w : commit.writes()) {
    rocksdb::ColumnFamilyHandle* cf = nullptr;
    for (rocksdb::ColumnFamilyHandle* h : im.rk->handles) {
      if (h->GetName() == w.column_family() && h != im.rk->entries_cf) cf = h;
    }
    if (cf == nullptr) {
      return refuse(absl::StrCat("a write to column family '", w.column_family(), "'"));
    }
    if (cf == im.rk->handles[0]) {
      if (w.key() == keys::kHeadKey) {
        if (w.value().size() != 40) {
          return refuse("its head record is damaged");
        }
        Head h;
        h.seq = keys::GetBe64(w.value());
        FromBytes(std::string_view(w.value()).substr(8), &h.hash);
        head_written = h;
      } else if (w.key() == keys::kCountersKey) {
        counters.emplace();
        if (!counters->ParseFromString(w.value())) {
          return refuse("its counters record is damaged");
        }
      } else if (w.key() == keys::kReplicationKey || w.key() == keys::kFormatKey) {
        return refuse(absl::StrCat("it writes ", w.key(), ", which each ledger keeps itself"));
      }
    } else if (cf == im.rk->offsets_cf) {
      const std::string_view k = w.key();
      const size_t nul = k.find('\0');
      if (nul == std::string_view::npos || k.size() != nul + 9 || w.value().size() != 8) {
        return refuse("an offset record is damaged");
      }
      offsets[TopicPartition{std::string(k.substr(0, nul)),
                             static_cast<int32_t>(keys::GetBe64(k.substr(nul + 1)))}] =
          static_cast<int64_t>(keys::GetBe64(w.value()));
    }
    GPULEDGER_RETURN_IF_ERROR(
        FromLedgerRocks(im.batch.Put(cf, w.key(), w.value()), "stage a write"));
  }
  if (head_written && (head_written->seq != at.seq || head_written->hash != at.hash)) {
    return refuse(absl::StrCat("its head record names seq ", head_written->seq,
                               ", not its last entry ", at.seq));
  }
  if (!head_written && !commit.entries().empty()) {
    return refuse("it has entries but no head record");
  }
  v1::ReplicationState state;
  state.set_epoch(commit.epoch());
  state.set_writer(commit.writer());
  state.set_next_offset(offset + 1);
  GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(
      im.batch.Put(keys::kReplicationKey, state.SerializeAsString()), "stage replication state"));
  im.pending_head = at;
  if (counters) im.pending_counters = *counters;
  im.pending_offsets = std::move(offsets);
  GPULEDGER_RETURN_IF_ERROR(im.WriteBatch());
  std::lock_guard<std::mutex> lock(im.mu);
  im.replication = std::move(state);
  // The signing metadata a start commit carries.
  for (const v1::StateWrite& w : commit.writes()) {
    if (w.column_family() != rocksdb::kDefaultColumnFamilyName) continue;
    if (w.key() == keys::kIntervalKey && w.value().size() == 8) {
      im.checkpoint_interval = keys::GetBe64(w.value());
    } else if (w.key() == keys::kPublicKeyKey) {
      im.public_key_pem = w.value();
    } else if (w.key() == keys::kFirstPublicKeyKey) {
      im.first_public_key_pem = w.value();
      im.first_key_stored = true;
    }
  }
  return absl::OkStatus();
}

v1::ReplicationState Ledger::replication() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->replication;
}

void Ledger::Abort() { impl_->ClearPending(); }

absl::Status Ledger::StageMeta(const std::string& name, const std::string& value) {
  if (impl_->options.read_only) return absl::FailedPreconditionError("ledger is read-only");
  if (name.empty() ||
      name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("bad meta name '", name, "'"));
  }
  return FromLedgerRocks(impl_->batch.Put(absl::StrCat("meta/x/", name), value), "stage meta");
}

absl::StatusOr<std::optional<std::string>> Ledger::GetMeta(const std::string& name) const {
  const std::shared_ptr<Rocks> rocks = impl_->Current();
  std::string value;
  rocksdb::Status s = rocks->db->Get(rocksdb::ReadOptions(), absl::StrCat("meta/x/", name), &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, "read meta"));
  return std::optional<std::string>(std::move(value));
}

absl::Status Ledger::StageCheckpoint(int64_t time_ms) {
  if (impl_->options.read_only || !impl_->options.signer) {
    return absl::FailedPreconditionError(
        "checkpoints need a ledger open for writing with a signer");
  }
  if (impl_->pending_head.seq == 0) {
    return absl::FailedPreconditionError("an empty ledger has nothing to checkpoint");
  }
  return impl_->StageCheckpointAt(impl_->pending_head, time_ms);
}

absl::Status Ledger::SignHead() {
  if (!can_sign()) return absl::OkStatus();
  if (impl_->pending_entries != 0 || impl_->batch.Count() != 0) {
    return absl::FailedPreconditionError("sign the head after Commit(), with nothing staged");
  }
  const Head at = head();
  if (at.seq == 0) return absl::OkStatus();
  std::string value;
  rocksdb::Status s = impl_->rk->db->Get(rocksdb::ReadOptions(), impl_->rk->checkpoints_cf,
                                         keys::SeqKey(at.seq), &value);
  if (s.ok()) return absl::OkStatus();
  if (!s.IsNotFound()) return FromLedgerRocks(s, "read checkpoint");
  GPULEDGER_ASSIGN_OR_RETURN(StoredEntry last, impl_->FindEntry(at.seq));
  GPULEDGER_RETURN_IF_ERROR(impl_->StageCheckpointAt(at, last.entry.recorded_at_ms()));
  return Commit();
}

absl::Status Ledger::Refresh() {
  if (impl_->options.secondary_path.empty()) {
    return absl::FailedPreconditionError("only a secondary instance can refresh");
  }
  // Twice, as Open does: a catch-up that overlaps the writer's switch to a new write-ahead log
  // (a flush) can miss the commits in the new log; the second reads the MANIFEST records and
  // log written meanwhile, so the view is at least as new as the ledger was when this began.
  GPULEDGER_RETURN_IF_ERROR(impl_->CatchUp(impl_->path));
  GPULEDGER_RETURN_IF_ERROR(impl_->CatchUp(impl_->path));
  // Re-read the committed view (head, offsets, counters, key) as LoadAndCheck does at open.
  auto fresh = std::make_unique<Impl>();
  Impl& f = *fresh;
  std::string head_value;
  rocksdb::Status s = impl_->rk->db->Get(rocksdb::ReadOptions(), keys::kHeadKey, &head_value);
  Head head;
  if (!s.IsNotFound()) {
    GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, "read head"));
    if (head_value.size() != 40) return absl::DataLossError("head record is damaged");
    head.seq = keys::GetBe64(head_value);
    FromBytes(std::string_view(head_value).substr(8), &head.hash);
  }
  std::unique_ptr<rocksdb::Iterator> oit(
      impl_->rk->db->NewIterator(rocksdb::ReadOptions(), impl_->rk->offsets_cf));
  for (oit->SeekToFirst(); oit->Valid(); oit->Next()) {
    std::string_view k = oit->key().ToStringView();
    std::string_view v = oit->value().ToStringView();
    const size_t nul = k.find('\0');
    if (nul == std::string_view::npos || k.size() != nul + 9 || v.size() != 8) {
      return absl::DataLossError("offset record is damaged");
    }
    f.offsets[{std::string(k.substr(0, nul)),
               static_cast<int32_t>(keys::GetBe64(k.substr(nul + 1)))}] =
        static_cast<int64_t>(keys::GetBe64(v));
  }
  GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(oit->status(), "read offsets"));
  std::string counters_value;
  s = impl_->rk->db->Get(rocksdb::ReadOptions(), keys::kCountersKey, &counters_value);
  if (!s.IsNotFound()) {
    GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, "read counters"));
    if (!f.counters.ParseFromString(counters_value)) {
      return absl::DataLossError("counters record is damaged");
    }
  }
  std::string pem;
  s = impl_->rk->db->Get(rocksdb::ReadOptions(), keys::kPublicKeyKey, &pem);
  if (!s.IsNotFound()) GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, "read public key"));
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->head = head;
  impl_->offsets = std::move(f.offsets);
  impl_->counters = std::move(f.counters);
  if (!pem.empty()) impl_->public_key_pem = std::move(pem);
  return absl::OkStatus();
}

bool Ledger::can_sign() const { return !impl_->options.read_only && impl_->options.signer; }

size_t Ledger::PendingEntries() const { return impl_->pending_entries; }

Head Ledger::head() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->head;
}

OffsetMap Ledger::Offsets() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->offsets;
}

absl::StatusOr<std::optional<DedupRecord>> Ledger::LookupEvent(const std::string& source_id,
                                                               const std::string& event_id) const {
  return impl_->FindDedup(keys::DedupKey(source_id, event_id));
}

absl::StatusOr<StoredEntry> Ledger::Get(uint64_t seq) const {
  const std::shared_ptr<Rocks> rocks = impl_->Current();
  const std::string key = keys::SeqKey(seq);
  std::string value;
  rocksdb::Status s = rocks->db->Get(rocksdb::ReadOptions(), rocks->entries_cf, key, &value);
  if (s.IsNotFound()) {
    return absl::NotFoundError(
        absl::StrCat("no entry with seq ", seq, " (head is ", head().seq, ")"));
  }
  GPULEDGER_RETURN_IF_ERROR(FromLedgerRocks(s, "read entry"));
  return DecodeEntry(key, value);
}

absl::Status Ledger::Scan(
    uint64_t from_seq, const std::function<absl::StatusOr<bool>(const StoredEntry&)>& visit) const {
  const std::shared_ptr<Rocks> rocks = impl_->Current();
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  std::unique_ptr<rocksdb::Iterator> it(rocks->db->NewIterator(ro, rocks->entries_cf));
  for (it->Seek(keys::SeqKey(from_seq)); it->Valid(); it->Next()) {
    GPULEDGER_ASSIGN_OR_RETURN(StoredEntry e,
                               DecodeEntry(it->key().ToStringView(), it->value().ToStringView()));
    GPULEDGER_ASSIGN_OR_RETURN(bool more, visit(e));
    if (!more) return absl::OkStatus();
  }
  return FromLedgerRocks(it->status(), "scan entries");
}

absl::Status Ledger::ScanRaw(
    uint64_t from_seq,
    const std::function<absl::StatusOr<bool>(uint64_t, std::string_view, const Digest&)>& visit)
    const {
  const std::shared_ptr<Rocks> rocks = impl_->Current();
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  std::unique_ptr<rocksdb::Iterator> it(rocks->db->NewIterator(ro, rocks->entries_cf));
  for (it->Seek(keys::SeqKey(from_seq)); it->Valid(); it->Next()) {
    const std::string_view key = it->key().ToStringView();
    const std::string_view value = it->value().ToStringView();
    // As DecodeEntry, but the parse is the caller's.
    if (key.size() != 8 || value.size() < 32) {
      return absl::DataLossError("entry record is too short");
    }
    Digest hash{};
    FromBytes(value.substr(0, 32), &hash);
    GPULEDGER_ASSIGN_OR_RETURN(bool more, visit(keys::GetBe64(key), value.substr(32), hash));
    if (!more) return absl::OkStatus();
  }
  return FromLedgerRocks(it->status(), "scan entries");
}

absl::Status Ledger::ScanDedup(
    const std::function<absl::Status(const std::string&, const std::string&, const DedupRecord&)>&
        visit) const {
  const std::shared_ptr<Rocks> rocks = impl_->Current();
  std::unique_ptr<rocksdb::Iterator> it(
      rocks->db->NewIterator(rocksdb::ReadOptions(), rocks->dedup_cf));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string_view k = it->key().ToStringView();
    const size_t nul = k.find('\0');
    if (nul == std::string_view::npos) return absl::DataLossError("dedup key is damaged");
    GPULEDGER_ASSIGN_OR_RETURN(DedupRecord r, DecodeDedup(it->value().ToStringView()));
    GPULEDGER_RETURN_IF_ERROR(
        visit(std::string(k.substr(0, nul)), std::string(k.substr(nul + 1)), r));
  }
  return FromLedgerRocks(it->status(), "scan dedup index");
}

absl::Status Ledger::ScanCheckpoints(
    const std::function<absl::Status(const v1::Checkpoint&)>& visit) const {
  const std::shared_ptr<Rocks> rocks = impl_->Current();
  std::unique_ptr<rocksdb::Iterator> it(
      rocks->db->NewIterator(rocksdb::ReadOptions(), rocks->checkpoints_cf));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    // A checkpoint (seq) or a key rotation record (seq, tag, n) that names a next key.
    const rocksdb::Slice k = it->key();
    const bool rotation = k.size() == 17 && k[8] == keys::kRotationTag;
    const uint64_t key_seq = k.size() == 8 || rotation ? keys::GetBe64(k.ToStringView()) : 0;
    v1::Checkpoint cp;
    if (key_seq == 0 || !cp.ParseFromArray(it->value().data(), it->value().size()) ||
        cp.seq() != key_seq || rotation == cp.next_public_key_pem().empty()) {
      return absl::DataLossError(
          absl::StrCat("checkpoint record under seq ", key_seq, " is damaged"));
    }
    GPULEDGER_RETURN_IF_ERROR(visit(cp));
  }
  return FromLedgerRocks(it->status(), "scan checkpoints");
}

absl::Status Ledger::ScanProducers(
    const std::function<absl::Status(const std::string&, const std::string&,
                                     const ProducerProgress&)>& visit) const {
  const std::shared_ptr<Rocks> rocks = impl_->Current();
  std::unique_ptr<rocksdb::Iterator> it(
      rocks->db->NewIterator(rocksdb::ReadOptions(), rocks->producers_cf));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string_view k = it->key().ToStringView();
    const size_t nul = k.find('\0');
    if (nul == std::string_view::npos) return absl::DataLossError("producer key is damaged");
    GPULEDGER_ASSIGN_OR_RETURN(ProducerProgress p,
                               ProducerProgress::Decode(it->value().ToStringView()));
    GPULEDGER_RETURN_IF_ERROR(
        visit(std::string(k.substr(0, nul)), std::string(k.substr(nul + 1)), p));
  }
  return FromLedgerRocks(it->status(), "scan producers");
}

v1::LedgerCounters Ledger::Counters() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->counters;
}

uint64_t Ledger::checkpoint_interval() const { return impl_->checkpoint_interval; }

std::string Ledger::public_key_pem() const { return impl_->public_key_pem; }

std::string Ledger::first_public_key_pem() const { return impl_->first_public_key_pem; }

const std::string& Ledger::wal_damage() const { return impl_->wal_damage; }

absl::Status Ledger::VerifyTables() const { return impl_->VerifyTables(); }

absl::Status Ledger::DiagnoseTables() const {
  GPULEDGER_RETURN_IF_ERROR(impl_->VerifyTables());
  const std::shared_ptr<Rocks> rocks = impl_->Current();
  return ledger::DiagnoseTables(rocks->db.get(), rocks->handles, impl_->path);
}

uint64_t Ledger::ApproximateDiskBytes() const {
  const std::shared_ptr<Rocks> rocks = impl_->Current();
  uint64_t total = 0;
  for (auto* h : rocks->handles) {
    uint64_t v = 0;
    if (rocks->db->GetIntProperty(h, rocksdb::DB::Properties::kTotalSstFilesSize, &v)) total += v;
  }
  rocksdb::VectorLogPtr wal_files;
  if (rocks->db->GetSortedWalFiles(wal_files).ok()) {
    for (const auto& f : wal_files) total += f->SizeFileBytes();
  }
  return total;
}

StoreMemory Ledger::Memory() const {
  const std::shared_ptr<Rocks> rocks = impl_->Current();
  return MemoryOf(rocks->db.get(), rocks->handles);
}

const std::string& Ledger::path() const { return impl_->path; }

}  // namespace gpuledger::ledger
