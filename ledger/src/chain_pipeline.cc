#include "chain_pipeline.h"

#include <utility>

#include "base/assert.h"
#include "base/limits.h"

namespace gpuledger::ledger {

namespace {
// Items of a full batch of the usual 200-300-byte entries, reserved up front so that the batch
// is not moved while it fills.
constexpr size_t kBatchItemsReserved = limits::kVerifyBatchBytesMax / (sizeof(ChainItem) + 256) + 1;
}  // namespace

ChainPipeline::ChainPipeline(std::function<bool(ChainItem&)> consume, const Digest& first_prev,
                             int threads)
    : consume_(std::move(consume)), last_stored_(first_prev) {
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
}

ChainPipeline::~ChainPipeline() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutting_down_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

bool ChainPipeline::AddEntry(uint64_t seq, std::string bytes, const Digest& stored_hash) {
  ChainItem item;
  item.seq = seq;
  item.bytes = std::move(bytes);
  item.stored_hash = stored_hash;
  item.prev_hash = last_stored_;
  last_stored_ = stored_hash;
  return Add(std::move(item));
}

bool ChainPipeline::AddCheckpoint(const gpuledger::v1::Checkpoint& cp) {
  ChainItem item;
  item.seq = cp.seq();
  item.checkpoint = cp;
  return Add(std::move(item));
}

bool ChainPipeline::Add(ChainItem item) {
  if (stopped_) return false;
  if (!filling_) {
    filling_ = std::make_unique<Batch>();
    filling_->items.reserve(kBatchItemsReserved);
  }
  filling_->bytes += item.bytes.size() + sizeof(ChainItem);
  filling_->items.push_back(std::move(item));
  if (filling_->bytes >= limits::kVerifyBatchBytesMax) Submit();
  return !stopped_;
}

void ChainPipeline::Submit() {
  if (!filling_) return;
  in_flight_bytes_ += filling_->bytes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batches_.push_back(std::move(filling_));
  }
  work_cv_.notify_one();
  // Bounded read-ahead: the reader waits for the check once the queue holds its bound.
  while (!stopped_ && in_flight_bytes_ > limits::kVerifyInFlightBytesMax) ConsumeFront();
  // Keep the check close behind: consume what is already hashed, without waiting.
  while (!stopped_) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (batches_.empty() || !batches_.front()->done) break;
    }
    ConsumeFront();
  }
}

bool ChainPipeline::Drain() {
  Submit();
  while (!stopped_) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (batches_.empty()) break;
    }
    ConsumeFront();
  }
  return !stopped_;
}

bool ChainPipeline::ConsumeFront() {
  std::unique_ptr<Batch> batch;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (batches_.empty()) return !stopped_;
    if (workers_.empty() && next_to_hash_ == 0) {
      // No workers: hash it here.
      next_to_hash_ = 1;
      lock.unlock();
      Hash(batches_.front().get());
      lock.lock();
      batches_.front()->done = true;
    }
    done_cv_.wait(lock, [&] { return batches_.front()->done; });
    batch = std::move(batches_.front());
    batches_.pop_front();
    GPULEDGER_ASSERT(next_to_hash_ > 0, "a batch was consumed before it was hashed");
    --next_to_hash_;
  }
  in_flight_bytes_ -= batch->bytes;
  for (ChainItem& item : batch->items) {
    if (!consume_(item)) {
      stopped_ = true;
      break;
    }
  }
  return !stopped_;
}

void ChainPipeline::Work() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    work_cv_.wait(lock, [&] { return shutting_down_ || next_to_hash_ < batches_.size(); });
    if (shutting_down_) return;
    Batch* batch = batches_[next_to_hash_++].get();
    lock.unlock();
    Hash(batch);
    lock.lock();
    batch->done = true;
    done_cv_.notify_all();
  }
}

void ChainPipeline::Hash(Batch* batch) {
  for (ChainItem& item : batch->items) {
    if (item.checkpoint) continue;
    item.chain_hash = ChainHash(item.prev_hash, item.seq, item.bytes);
    auto* entry = google::protobuf::Arena::CreateMessage<gpuledger::v1::LedgerEntry>(&batch->arena);
    item.parsed = entry->ParseFromString(item.bytes);
    item.entry = entry;
  }
}

}  // namespace gpuledger::ledger
