// Verification's read-ahead: entries hashed and parsed on worker threads while one thread reads
// and checks them in order (ChainCheck). Owned and driven by the verifying thread (AddEntry,
// AddCheckpoint, Drain); only the hashing and parsing run on the workers. Each batch's parsed
// entries live in one protobuf arena, freed at once by the verifying thread (messages allocated
// on one thread and freed one by one on another cost more than the parse itself).
//
// An entry's chain hash depends on its predecessor's, which makes the chain look sequential;
// but every entry stores its hash, so the worker hashes entry n on the *stored* hash of entry
// n-1. The check consumes items in order and entry n is only reached after entry n-1 matched
// its stored hash, so the predecessor the worker used is the one the check has verified; where
// they differ (never, unless the check is fed out of its order) ChainCheck hashes again itself.
// Results and messages are those of the sequential check, item for item.
#pragma once

#include <google/protobuf/arena.h>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "gpuledger/v1/ledger.pb.h"
#include "ledger/hash.h"

namespace gpuledger::ledger {

// One record of the stream in its order: an entry, or a checkpoint (or key rotation) record.
struct ChainItem {
  uint64_t seq = 0;
  std::string bytes;  // the serialized LedgerEntry (entries only)
  Digest stored_hash{};
  Digest prev_hash{};  // the stored hash of the entry before it in the stream (or the start's)
  std::optional<gpuledger::v1::Checkpoint> checkpoint;  // set: a checkpoint record, no entry
  // Filled in by a worker.
  Digest chain_hash{};                                // ChainHash(prev_hash, seq, bytes)
  bool parsed = false;                                // bytes parse as a LedgerEntry
  const gpuledger::v1::LedgerEntry* entry = nullptr;  // in the batch's arena
};

class ChainPipeline {
 public:
  // `consume` runs on the calling thread, in stream order; returning false stops the pipeline
  // (later items are dropped). `first_prev` is the hash before the first entry. `threads`
  // workers (0: items are hashed on the calling thread, in order, as they are consumed).
  ChainPipeline(std::function<bool(ChainItem&)> consume, const Digest& first_prev, int threads);
  ~ChainPipeline();
  ChainPipeline(const ChainPipeline&) = delete;
  ChainPipeline& operator=(const ChainPipeline&) = delete;

  // Queue an entry or a checkpoint. False once `consume` has stopped the pipeline (the caller
  // may stop reading). May consume earlier items; blocks while the bytes in flight are at
  // their bound (ledger/limits.h).
  bool AddEntry(uint64_t seq, std::string bytes, const Digest& stored_hash);
  bool AddCheckpoint(const gpuledger::v1::Checkpoint& cp);
  // Hashes and consumes everything queued. Call before looking at the check's state (its
  // last seq, its failure), and at the end. False if `consume` has stopped the pipeline.
  bool Drain();

 private:
  struct Batch {
    google::protobuf::Arena arena;  // the parsed entries; outlives `items`
    std::vector<ChainItem> items;
    size_t bytes = 0;
    bool done = false;  // guarded by mu_
  };

  bool Add(ChainItem item);
  void Submit();
  bool ConsumeFront();  // waits for the oldest batch, consumes it
  void Work();
  static void Hash(Batch* batch);

  std::function<bool(ChainItem&)> consume_;
  Digest last_stored_;
  bool stopped_ = false;
  std::unique_ptr<Batch> filling_;
  size_t in_flight_bytes_ = 0;

  std::mutex mu_;
  std::condition_variable work_cv_;             // a batch to hash, or stopping
  std::condition_variable done_cv_;             // a batch was hashed
  std::deque<std::unique_ptr<Batch>> batches_;  // in stream order: hashed, hashing or waiting
  size_t next_to_hash_ = 0;                     // index in batches_ of the first unclaimed
  bool shutting_down_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace gpuledger::ledger
