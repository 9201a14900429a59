#include "hold_store.h"

#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/write_batch_with_index.h>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <system_error>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/limits.h"
#include "base/status.h"
#include "ledger/rocks_options.h"
#include "ledger/rocks_status.h"

namespace gpuledger::ingest {

namespace {

constexpr char kMarkerKey[] = "m";

void PutBe(std::string* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t GetBe(std::string_view in, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}
// Signed times sort as unsigned once the sign bit is flipped.
void PutTime(std::string* out, int64_t t) {
  PutBe(out, static_cast<uint64_t>(t) ^ (uint64_t{1} << 63), 8);
}
int64_t GetTime(std::string_view in) {
  return static_cast<int64_t>(GetBe(in, 8) ^ (uint64_t{1} << 63));
}
void PutString(std::string* out, std::string_view s) {
  PutBe(out, s.size(), 4);
  out->append(s);
}
// Reads a length-prefixed string at *pos; false if the bytes are short.
bool GetString(std::string_view in, size_t* pos, std::string* s) {
  if (in.size() < *pos + 4) return false;
  const size_t n = GetBe(in.substr(*pos), 4);
  if (in.size() < *pos + 4 + n) return false;
  s->assign(in.substr(*pos + 4, n));
  *pos += 4 + n;
  return true;
}

std::string AllocationPrefix(const std::string& allocation) {
  std::string k("i");
  PutString(&k, allocation);
  return k;
}
std::string IntervalKey(const std::string& allocation, int64_t start_ms, std::string_view csp,
                        std::string_view event_id) {
  std::string k = AllocationPrefix(allocation);
  PutTime(&k, start_ms);
  PutString(&k, csp);
  k.append(event_id);
  return k;
}
std::string HolderKey(std::string_view csp, std::string_view event_id) {
  std::string k("h");
  PutString(&k, csp);
  k.append(event_id);
  return k;
}
std::string LongestKey(std::string_view allocation) {
  std::string k("l");
  k.append(allocation);
  return k;
}

// The store's name and advice on ledger::FromRocks, the one conversion of every store.
constexpr ledger::RocksAdvice kHoldStoreAdvice{
    .locked = "in use by another ingest of this ledger",
    // It shares the ledger's disk, which it may fill before the ledger does: the same advice.
    .no_space =
        "free space and start again (the state store is brought up to the ledger's head "
        "from the ledger)"};

absl::Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  return ledger::FromRocks(s, absl::StrCat("validator state store: ", what), kHoldStoreAdvice);
}

// What the staged batch `b` says of `key`: nothing, a value (into *value), or a deletion.
enum class Staged { kNone, kPut, kDeleted };
Staged FindStaged(rocksdb::WriteBatchWithIndex& b, const std::string& key, std::string* value) {
  std::unique_ptr<rocksdb::WBWIIterator> it(b.NewIterator());
  it->Seek(key);
  if (!it->Valid()) return Staged::kNone;
  const rocksdb::WriteEntry e = it->Entry();
  if (e.key.compare(key) != 0) return Staged::kNone;
  if (e.type == rocksdb::kPutRecord) {
    value->assign(e.value.data(), e.value.size());
    return Staged::kPut;
  }
  return Staged::kDeleted;  // the store writes only puts and deletes
}

absl::Status Damaged(const std::string& what) {
  return absl::DataLossError(
      absl::StrCat("validator state store: a damaged ", what,
                   " record; delete the store (it is rebuilt from the ledger at the next start)"));
}

}  // namespace

// Writes go on beside the validator: Commit hands the staged batch to a writer thread (one write
// in flight at a time, in order) and stages the next batch in a second index. Until that write is
// collected, reads look in the staged batch, then in the one being written, then in RocksDB
// (which gives the same answer for what the write has already reached). One long-lived writer,
// so that its allocations (memtable blocks) stay in one malloc arena.
struct HoldStore::Impl {
  std::unique_ptr<rocksdb::Env> mem_env;  // in-memory stores only; outlives db
  std::unique_ptr<rocksdb::DB> db;
  std::unique_ptr<rocksdb::WriteBatchWithIndex> batch = NewBatch();    // being staged
  std::unique_ptr<rocksdb::WriteBatchWithIndex> writing = NewBatch();  // read-only while written
  bool pending = false;      // `writing` handed to the writer and not collected (this thread's)
  absl::Status write_error;  // sticky: after a lost write the store is behind

  // The writer thread and its one slot.
  std::thread writer;
  std::mutex mu;
  std::condition_variable cv;
  std::optional<rocksdb::WriteBatch> job;  // under mu
  bool busy = false;                       // under mu: a job given and not finished
  bool stopping = false;                   // under mu
  rocksdb::Status result;                  // under mu: the last job's

  static std::unique_ptr<rocksdb::WriteBatchWithIndex> NewBatch() {
    return std::make_unique<rocksdb::WriteBatchWithIndex>(rocksdb::BytewiseComparator(), 0,
                                                          /*overwrite_key=*/true);
  }

  void WriterLoop() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return job.has_value() || stopping; });
      if (!job.has_value()) return;
      rocksdb::WriteBatch b = std::move(*job);
      job.reset();
      lock.unlock();
      const rocksdb::Status s = db->Write(rocksdb::WriteOptions(), &b);
      lock.lock();
      result = s;
      busy = false;
      cv.notify_all();
    }
  }

  // Hands `writing` to the writer. The writer gets its own copy of the batch's bytes (a memcpy),
  // so that reads of `writing` share nothing mutable with DB::Write, which stamps sequence
  // numbers into the batch.
  void StartWrite() {
    if (!writer.joinable()) writer = std::thread([this] { WriterLoop(); });
    {
      std::lock_guard<std::mutex> lock(mu);
      job.emplace(*writing->GetWriteBatch());
      busy = true;
    }
    cv.notify_all();
    pending = true;
  }

  // Collects the write in flight, if any.
  absl::Status Wait() {
    if (pending) {
      rocksdb::Status s;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return !busy; });
        s = result;
      }
      pending = false;
      writing->Clear();
      if (!s.ok() && write_error.ok()) write_error = FromRocks(s, "write");
    }
    return write_error;
  }

  void StopWriter() {
    if (!writer.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu);
      stopping = true;
    }
    cv.notify_all();
    writer.join();
  }
};

HoldStore::HoldStore(std::unique_ptr<Impl> impl, std::string path)
    : impl_(std::move(impl)), path_(std::move(path)) {}

HoldStore::~HoldStore() {
  if (impl_ && impl_->pending) {
    if (absl::Status st = impl_->Wait(); !st.ok()) spdlog::warn("{}", st.ToString());
  }
  if (impl_) impl_->StopWriter();
  // A clean close flushes the memtable, so that the next open does not replay the WAL.
  // Not after a failed write (a full disk): see Ledger's close.
  if (impl_ && impl_->db && !impl_->mem_env && impl_->write_error.ok()) {
    (void)impl_->db->Flush(rocksdb::FlushOptions());
  }
  if (impl_) impl_->db.reset();
}

absl::StatusOr<std::unique_ptr<HoldStore>> HoldStore::Open(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  rocksdb::Options o;
  o.create_if_missing = true;
  o.max_total_wal_size = gpuledger::limits::kHoldStoreWalBytesMax;
  o.info_log = ledger::RocksLogger("validator state store");
  // Fixed memory however large it grows: two 32 MiB memtables, index and filter blocks in a
  // 64 MiB cache; the bloom filter serves the point reads by holder.
  o.write_buffer_size = gpuledger::limits::kHoldStoreMemtableBytes;
  o.max_write_buffer_number = gpuledger::limits::kHoldStoreMemtables;
  o.table_factory = ledger::BoundedTables(gpuledger::limits::kHoldStoreBlockCacheBytes);
  std::string where = path;
  if (path.empty()) {
    impl->mem_env.reset(rocksdb::NewMemEnv(rocksdb::Env::Default()));
    o.env = impl->mem_env.get();
    where = "/validator-state";
    (void)o.env->CreateDirIfMissing(where);
  } else {
    // RocksDB logs a missing directory as an error before creating it; a new store is normal.
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
  }
  rocksdb::DB* db = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(o, where, &db);
  if (!s.ok()) {
    return ledger::FromRocks(
        s,
        ledger::IsHeldLock(s)
            ? absl::StrCat("validator state store ", path)
            : absl::StrCat("cannot open the validator state store ", path,
                           " (it is derived from the ledger: if it is damaged, delete it and "
                           "start again)"),
        kHoldStoreAdvice);
  }
  impl->db.reset(db);
  return std::unique_ptr<HoldStore>(new HoldStore(std::move(impl), path));
}

absl::Status HoldStore::Wait() { return impl_->Wait(); }

absl::StatusOr<std::optional<HoldStore::Marker>> HoldStore::GetMarker() const {
  GPULEDGER_RETURN_IF_ERROR(impl_->Wait());
  std::string v;
  rocksdb::Status s = impl_->db->Get(rocksdb::ReadOptions(), kMarkerKey, &v);
  if (s.IsNotFound()) return std::optional<Marker>();
  GPULEDGER_RETURN_IF_ERROR(FromRocks(s, "read marker"));
  if (v.size() != 8 + 32) return Damaged("marker");
  Marker m;
  m.seq = GetBe(v, 8);
  std::memcpy(m.hash.data(), v.data() + 8, 32);
  return std::optional<Marker>(m);
}

absl::Status HoldStore::Wipe() {
  GPULEDGER_RETURN_IF_ERROR(impl_->Wait());
  impl_->batch->Clear();
  // Point deletes, not one range tombstone over the whole key space: a range tombstone would
  // be consulted by every later read and scan. A new store has nothing to delete.
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(rocksdb::ReadOptions()));
  rocksdb::WriteBatch wipe;
  uint64_t deleted = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    GPULEDGER_RETURN_IF_ERROR(FromRocks(wipe.Delete(it->key()), "wipe"));
    if (++deleted % 10'000 == 0) {
      GPULEDGER_RETURN_IF_ERROR(
          FromRocks(impl_->db->Write(rocksdb::WriteOptions(), &wipe), "wipe"));
      wipe.Clear();
    }
  }
  GPULEDGER_RETURN_IF_ERROR(FromRocks(it->status(), "wipe"));
  if (deleted == 0) return absl::OkStatus();
  GPULEDGER_RETURN_IF_ERROR(FromRocks(impl_->db->Write(rocksdb::WriteOptions(), &wipe), "wipe"));
  return FromRocks(impl_->db->CompactRange(rocksdb::CompactRangeOptions(), nullptr, nullptr),
                   "wipe");
}

absl::Status HoldStore::Commit(const Marker& marker) {
  GPULEDGER_RETURN_IF_ERROR(impl_->Wait());
  std::string v;
  PutBe(&v, marker.seq, 8);
  v.append(reinterpret_cast<const char*>(marker.hash.data()), marker.hash.size());
  GPULEDGER_RETURN_IF_ERROR(FromRocks(impl_->batch->Put(kMarkerKey, v), "stage marker"));
  std::swap(impl_->batch, impl_->writing);
  impl_->StartWrite();
  return absl::OkStatus();
}

rocksdb::Iterator* HoldStore::Overlaid(rocksdb::Iterator* base) const {
  if (impl_->pending) base = impl_->writing->NewIteratorWithBase(base);
  return impl_->batch->NewIteratorWithBase(base);
}

void HoldStore::PutInterval(const std::string& allocation, const Interval& in) {
  std::string v;
  PutTime(&v, in.end_ms);
  PutBe(&v, in.gpus, 4);
  v.append(in.node_id);
  (void)impl_->batch->Put(IntervalKey(allocation, in.start_ms, in.csp, in.event_id), v);
}

void HoldStore::DeleteInterval(const std::string& allocation, int64_t start_ms,
                               std::string_view csp, std::string_view event_id) {
  (void)impl_->batch->Delete(IntervalKey(allocation, start_ms, csp, event_id));
}

absl::Status HoldStore::ScanIntervals(const std::string& allocation, int64_t from_ms, int64_t to_ms,
                                      const std::function<bool(const Interval&)>& visit) const {
  if (from_ms >= to_ms) return absl::OkStatus();
  const std::string prefix = AllocationPrefix(allocation);
  std::string lower = prefix;
  PutTime(&lower, from_ms);
  std::string upper = prefix;
  PutTime(&upper, to_ms);
  rocksdb::ReadOptions ro;
  rocksdb::Slice upper_slice(upper);
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(Overlaid(impl_->db->NewIterator(ro)));
  Interval in;
  for (it->Seek(lower); it->Valid(); it->Next()) {
    const std::string_view k = it->key().ToStringView();
    // The batches' own iterators do not know the upper bound.
    if (k.compare(upper) >= 0) break;
    const std::string_view v = it->value().ToStringView();
    size_t pos = prefix.size() + 8;
    if (k.size() < pos || v.size() < 12) return Damaged("interval");
    in.start_ms = GetTime(k.substr(prefix.size()));
    if (!GetString(k, &pos, &in.csp)) return Damaged("interval");
    in.event_id.assign(k.substr(pos));
    in.end_ms = GetTime(v);
    in.gpus = static_cast<uint32_t>(GetBe(v.substr(8), 4));
    in.node_id.assign(v.substr(12));
    if (!visit(in)) break;
  }
  return FromRocks(it->status(), "scan intervals");
}

void HoldStore::PutHolder(std::string_view csp, std::string_view event_id, const Holder& h) {
  std::string v;
  if (h.retired) {
    v = "R";
  } else {
    v = "H";
    PutTime(&v, h.start_ms);
    v.append(h.allocation);
  }
  (void)impl_->batch->Put(HolderKey(csp, event_id), v);
}

absl::StatusOr<std::optional<HoldStore::Holder>> HoldStore::GetHolder(
    std::string_view csp, std::string_view event_id) const {
  const std::string key = HolderKey(csp, event_id);
  std::string v;
  Staged staged = FindStaged(*impl_->batch, key, &v);
  if (staged == Staged::kNone && impl_->pending) staged = FindStaged(*impl_->writing, key, &v);
  if (staged == Staged::kDeleted) return std::optional<Holder>();
  if (staged == Staged::kNone) {
    rocksdb::Status s = impl_->db->Get(rocksdb::ReadOptions(), key, &v);
    if (s.IsNotFound()) return std::optional<Holder>();
    GPULEDGER_RETURN_IF_ERROR(FromRocks(s, "read holder"));
  }
  Holder h;
  if (v == "R") {
    h.retired = true;
  } else if (v.size() >= 9 && v[0] == 'H') {
    h.start_ms = GetTime(std::string_view(v).substr(1));
    h.allocation = v.substr(9);
  } else {
    return Damaged("holder");
  }
  return std::optional<Holder>(std::move(h));
}

ledger::StoreMemory HoldStore::Memory() const {
  return ledger::MemoryOf(impl_->db.get(), {impl_->db->DefaultColumnFamily()});
}

void HoldStore::PutLongest(const std::string& allocation, int64_t ms) {
  std::string v;
  PutTime(&v, ms);
  (void)impl_->batch->Put(LongestKey(allocation), v);
}

absl::Status HoldStore::ScanLongest(
    const std::function<void(const std::string&, int64_t)>& visit) const {
  std::unique_ptr<rocksdb::Iterator> it(Overlaid(impl_->db->NewIterator(rocksdb::ReadOptions())));
  for (it->Seek("l"); it->Valid() && it->key().starts_with("l"); it->Next()) {
    if (it->value().size() != 8) return Damaged("longest-interval");
    visit(std::string(it->key().ToStringView().substr(1)), GetTime(it->value().ToStringView()));
  }
  return FromRocks(it->status(), "scan longest intervals");
}

}  // namespace gpuledger::ingest
