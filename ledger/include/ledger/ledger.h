// The append-only ledger: every input gpuledger ever consumed, in one dense sequence, each
// entry linked to the one before by a SHA-256 hash chain, with the Kafka offsets it consumed
// stored in the same atomic write. See docs/LEDGER.md.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gpuledger/v1/ledger.pb.h"
#include "ledger/hash.h"
#include "ledger/producers.h"
#include "ledger/rocks_options.h"
#include "ledger/signing.h"

namespace gpuledger::ledger {

struct LedgerOptions {
  // Create an empty ledger if `path` holds none. Default: true.
  bool create_if_missing = true;
  // fsync the write-ahead log before Commit() returns, so that nothing acknowledged to Kafka
  // is ever lost to a power cut. Default: true. Turning it off is for benchmarks only.
  bool sync_commits = true;
  // Open for reading only: no writer lock is taken, so settlement and verification can run
  // beside a live ingest process; Append/Commit fail. It is a RocksDB secondary instance (in a
  // private temporary directory unless secondary_path names one), which reads a consistent
  // state of a ledger that a writer is changing. Default: false.
  bool read_only = false;
  // With read_only: open as a RocksDB secondary instance whose private files live in this
  // directory, so that Refresh() can follow a live writer without reopening. Default: "" (a
  // plain read-only open that sees the ledger as of the open).
  std::string secondary_path;
  // With read_only: open even if the head does not name the last entry (entries added or
  // removed behind the writer's back), so that Verify() can name the first entry that does not
  // verify. Damaged table files are refused either way. Default: false.
  bool open_inconsistent = false;
  // Signs checkpoints. A ledger created with a signer is a signed ledger: it must always be
  // opened for writing with a signer (of any key: keys may rotate). Default: none (unsigned
  // ledger, for tests and benchmarks only).
  std::shared_ptr<const Signer> signer;
  // The private key that signed the ledger's checkpoints so far, when `signer` is a new key:
  // opening for writing then records a key rotation (signed by this key, naming the new one)
  // at the head, so that auditors holding the first published key follow it. Without it, a
  // signer other than the ledger's key is refused. Default: none.
  std::shared_ptr<const Signer> previous_signer;
  // A signed checkpoint every this many entries. Fixed when the ledger is created (later
  // values are ignored). Default: 10,000.
  uint64_t checkpoint_interval = 10'000;
  // A standby (docs/RELIABILITY.md): it only applies its writer's commits (ApplyCommit), so a
  // signed ledger is opened for writing without a signer and Append fails. Default: false.
  bool replica = false;
};

// A log outside the ledger that each commit is published to before it is written: the ledger
// topic (ingest/ledger_topic.h, docs/RELIABILITY.md). Standbys apply what it holds.
class CommitLog {
 public:
  virtual ~CommitLog() = default;
  // Publishes `commit` durably, after setting its epoch, writer and takeover fields, and returns
  // its offset in the log. After an error the commit is not written, and the ledger writes
  // nothing more (a fenced writer must stop).
  virtual absl::StatusOr<int64_t> Publish(gpuledger::v1::LedgerCommit* commit) = 0;
};

// A Kafka topic partition, the key of the stored consumer offsets.
struct TopicPartition {
  std::string topic;
  int32_t partition = 0;
  friend auto operator<=>(const TopicPartition&, const TopicPartition&) = default;
};

// Next offset to consume, per partition: the offset after the last message recorded.
using OffsetMap = std::map<TopicPartition, int64_t>;

// An input that ingest has decoded and decided about, to be recorded.
struct Candidate {
  gpuledger::v1::Source source = gpuledger::v1::SOURCE_UNSPECIFIED;
  // The message value exactly as consumed.
  std::string payload;
  // Its CloudEvents headers (`ce_...`, `content-type`) as consumed, in order.
  std::vector<std::pair<std::string, std::string>> headers;
  // The event the payload and headers decoded to (deterministic protobuf binary) when the payload
  // is not that message itself: a CloudEvent with JSON data. Empty otherwise.
  std::string decoded_event;
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
  // The Kafka message timestamp, UTC ms; -1 if none; and whose clock it is.
  int64_t kafka_timestamp_ms = -1;
  gpuledger::v1::KafkaTimestampType kafka_timestamp_type =
      gpuledger::v1::KAFKA_TIMESTAMP_TYPE_UNSPECIFIED;
  // Ingest host clock when the message was consumed, UTC ms. Time checks use it only for a
  // message without a broker log-append time (ingest::TimeOfRecord).
  int64_t recorded_at_ms = 0;
  // Dedup identity: CSP id (or "operator") and event id. Both empty when the payload could not
  // be decoded: such an input is recorded as it is and never deduplicated.
  std::string source_id;
  std::string event_id;
  // For usage events: the CSP's producer and its sequence number (0: none), for gap reports.
  std::string producer_id;
  uint64_t producer_seq = 0;
  // The bytes whose SHA-256 identifies the event's content for duplicate detection (a
  // deterministic re-serialization of the decoded event). Empty: `payload` is used.
  std::string canonical;
  // SHA-256 of `canonical` (or of `payload` when it is empty), when computed ahead of Append
  // (SetContentHash, on ingest's decode thread); unset: Append computes it. Whoever changes
  // `canonical` or `payload` after SetContentHash resets it.
  std::optional<Digest> content_hash;
  // Empty when ingest accepts the event; otherwise the reason code and a detail for people.
  std::string reason_code;
  std::string reason_detail;
  // Record as PARKED (waiting for the registry) instead of accepted; reason_code stays empty
  // and reason_detail says what it waits for.
  bool park = false;
  // Non-zero: this candidate decides the PARKED entry with that seq (same identity and payload).
  // It is never a duplicate; the dedup index then points at it.
  uint64_t resolves_seq = 0;
};

// The bytes of an entry's event (a serialized UsageEvent or RegistryEvent, when it decoded):
// `decoded_event` when the entry has one (a CloudEvent), else the payload as consumed. Every
// reader of an entry's event goes through this.
const std::string& EventBytes(const gpuledger::v1::LedgerEntry& entry);

// Sets `c->content_hash` from its canonical bytes (or payload), as Append would compute it.
void SetContentHash(Candidate* c);

enum class AppendKind {
  kAppended,   // a new entry, with the candidate's decision
  kDuplicate,  // same identity and content as an earlier entry: nothing written
  kConflict,   // same identity, different content: recorded as REJECTED CONFLICTING_DUPLICATE
};

struct AppendResult {
  AppendKind kind = AppendKind::kAppended;
  // The new entry's seq (kAppended, kConflict) or the original entry's seq (kDuplicate).
  uint64_t seq = 0;
};

// What the dedup index knows about one event identity.
struct DedupRecord {
  uint64_t seq = 0;       // the entry that first recorded the identity
  Digest content_hash{};  // SHA-256 of its canonical bytes
  gpuledger::v1::Outcome outcome = gpuledger::v1::OUTCOME_UNSPECIFIED;
};

struct Head {
  uint64_t seq = 0;           // last committed entry; 0 for an empty ledger
  Digest hash = kZeroDigest;  // its chain hash; all zeros for an empty ledger
};

// A committed entry as read back.
struct StoredEntry {
  uint64_t seq = 0;
  std::string bytes;  // the serialized LedgerEntry the chain hash covers
  Digest hash{};
  gpuledger::v1::LedgerEntry entry;
};

// Reason code the ledger itself assigns to a reused event id with different content.
inline constexpr char kConflictingDuplicate[] = "CONFLICTING_DUPLICATE";

// Owned by one process. Writing (Append, AdvanceOffset, Commit, Abort) is for one thread at a
// time, and only one process may open a ledger for writing (RocksDB's lock file enforces it).
// Reading methods see committed state only and may run on any thread.
class Ledger {
 public:
  // Opens or creates the ledger at `path` and checks its head against its last entry.
  // FAILED_PRECONDITION if another process holds it for writing or its head is inconsistent;
  // NOT_FOUND if it does not exist and create_if_missing is false.
  static absl::StatusOr<std::unique_ptr<Ledger>> Open(const std::string& path,
                                                      const LedgerOptions& options);
  ~Ledger();
  Ledger(const Ledger&) = delete;
  Ledger& operator=(const Ledger&) = delete;

  // Stages `candidate` in the pending batch, assigning the next seq unless it is a duplicate.
  // Nothing is durable until Commit().
  absl::StatusOr<AppendResult> Append(const Candidate& candidate);

  // Stages the consumer position of a partition. Offsets only move forward: moving one back
  // is an invariant violation and stops the process.
  absl::Status AdvanceOffset(const TopicPartition& tp, int64_t next_offset);

  // Writes every staged entry, index update, offset and the new head in one atomic RocksDB
  // write batch (synced if options.sync_commits). After an error nothing staged is written and
  // the pending batch is dropped.
  absl::Status Commit();

  // Drops everything staged since the last Commit().
  void Abort();

  // Stages a small named value (e.g. a cursor of a process working from the ledger) to be
  // written atomically with the next Commit(). Names are [a-z0-9_]+.
  absl::Status StageMeta(const std::string& name, const std::string& value);
  // The committed value of a StageMeta name, or nullopt.
  absl::StatusOr<std::optional<std::string>> GetMeta(const std::string& name) const;

  // Stages a signed checkpoint of the pending head at `time_ms` (e.g. at a period close), in
  // addition to the periodic ones. FAILED_PRECONDITION without a signer or an empty ledger.
  absl::Status StageCheckpoint(int64_t time_ms);

  // Signs the committed head (a clean stop), so that the whole ledger is covered by signed
  // checkpoints: commits a checkpoint at the head, timed by the head entry's recorded_at_ms,
  // unless one is there. Nothing may be staged. No-op on an unsigned or empty ledger.
  absl::Status SignHead();

  // A secondary instance (LedgerOptions::secondary_path) catches up with the writer: entries
  // committed since are visible after it returns, with the head, counters and offsets.
  absl::Status Refresh();

  // From now on every Commit() is published to `log` before it is written, and written only once
  // published. Publishes a start commit at once: no entries, the signing metadata (checkpoint
  // interval, public keys, a key rotation made by this open). Nothing may be staged. A ledger
  // with entries that `log` never held (replication().epoch is 0) is refused: it was written
  // without a ledger topic.
  absl::Status StartPublishing(std::shared_ptr<CommitLog> log);

  // Applies a commit read from the ledger topic at `offset`, as one atomic write, after checking
  // that it follows this ledger: its epoch is not lower than the last applied (a takeover's is
  // higher; others keep the epoch and writer), its entries start at head + 1 and chain from the
  // head's hash, their stored hashes are right, and its head write names its last entry.
  // FAILED_PRECONDITION names what does not follow; nothing is written then. Nothing may be
  // staged.
  absl::Status ApplyCommit(const gpuledger::v1::LedgerCommit& commit, int64_t offset);

  // Where the ledger stands in its ledger topic (epoch 0: it never published or applied one).
  gpuledger::v1::ReplicationState replication() const;

  // True when open for writing with a signer (StageCheckpoint can succeed).
  bool can_sign() const;

  // Number of entries staged and not yet committed.
  size_t PendingEntries() const;

  Head head() const;
  OffsetMap Offsets() const;
  absl::StatusOr<std::optional<DedupRecord>> LookupEvent(const std::string& source_id,
                                                         const std::string& event_id) const;
  absl::StatusOr<StoredEntry> Get(uint64_t seq) const;

  // Calls `visit` for each committed entry with seq >= from_seq, in order, until it returns
  // false or an error. Each entry's stored hash is returned as stored, not re-checked (Verify
  // does that).
  absl::Status Scan(uint64_t from_seq,
                    const std::function<absl::StatusOr<bool>(const StoredEntry&)>& visit) const;
  // As Scan, without parsing: each entry's seq, serialized LedgerEntry and stored hash, valid
  // during the call only. For readers that parse elsewhere (Verify parses on other threads).
  absl::Status ScanRaw(uint64_t from_seq,
                       const std::function<absl::StatusOr<bool>(
                           uint64_t seq, std::string_view bytes, const Digest& hash)>& visit) const;

  // Every dedup-index record, in key order: (source_id, event_id, record).
  absl::Status ScanDedup(
      const std::function<absl::Status(const std::string& source_id, const std::string& event_id,
                                       const DedupRecord&)>& visit) const;

  // Every checkpoint and key rotation record, in seq order (at one seq: the checkpoint, then
  // rotations in the order they were made).
  absl::Status ScanCheckpoints(
      const std::function<absl::Status(const gpuledger::v1::Checkpoint&)>& visit) const;
  // Every producer's arrival progress: (CSP, producer id, progress), in key order.
  absl::Status ScanProducers(
      const std::function<absl::Status(const std::string& source_id, const std::string& producer_id,
                                       const ProducerProgress&)>& visit) const;
  // Committed counts by outcome and reason, and duplicates dropped.
  gpuledger::v1::LedgerCounters Counters() const;
  // 0 for an unsigned ledger.
  uint64_t checkpoint_interval() const;
  // PEM of the key the latest checkpoints were signed with; empty if never signed.
  std::string public_key_pem() const;
  // PEM of the key the first checkpoints were signed with (before any rotation); empty if
  // never signed.
  std::string first_public_key_pem() const;
  // Non-empty when this read-only view was recovered only up to damage in the write-ahead log
  // (a torn or garbled log): what RocksDB reported. Entries committed after the damage are not
  // in the view; a writer's next start recovers the same prefix.
  const std::string& wal_damage() const;
  // Checks the checksum of every block of every table file; DATA_LOSS names the damaged file.
  absl::Status VerifyTables() const;
  // VerifyTables, then reads every table file in full and holds it against its MANIFEST record
  // (first and last key) and against point lookups: names a damaged index, filter or properties
  // block that RocksDB reads as missing data without an error. Costly (a full read plus a lookup
  // per key): for diagnosis once a cheaper check has failed.
  absl::Status DiagnoseTables() const;
  // Approximate bytes on disk (SST files and WAL).
  uint64_t ApproximateDiskBytes() const;
  // What RocksDB holds in memory for the ledger (all column families).
  StoreMemory Memory() const;

  const std::string& path() const;

 private:
  struct Impl;
  explicit Ledger(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpuledger::ledger
