// The ingest loop's second core: while the loop decides and records one window of consumed
// messages, this thread decodes the next (protobuf parse, field checks, canonical bytes and their
// SHA-256), so that the loop's own thread keeps only what must be sequential: the validator's
// checks against earlier events, the chain link and the synced commit (issue 15's pipeline).
//
// The loop stays the only caller of the Kafka consumer (its rebalance callbacks run inside
// consume()); this thread only reads the messages it is handed, and hands each back decoded.
#pragma once

#include <librdkafka/rdkafkacpp.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "ingest/decide.h"

namespace gpuledger::ingest {

// What consume() returned (a message, or an event such as a partition's end), as the loop keeps
// it in a window until it handles it.
struct Consumed {
  std::unique_ptr<RdKafka::Message> msg;
  // The loop's assignment generation when it was consumed: a rebalance since then makes it stale
  // (it is consumed again from the ledger's offsets).
  uint64_t generation = 0;
  // Set by the decode thread for a message (msg->err() == ERR_NO_ERROR), decoded with the
  // validation limits in force from entry `limits_seq` (Validator::limits_from_seq); the loop
  // decodes again when other limits are in force by the time it handles the message.
  std::optional<Decoded> decoded;
  uint64_t limits_seq = 0;
};

// The fields of a consumed message that decisions see.
RawMessage ToRawMessage(const RdKafka::Message& msg);

// Decodes `msg` as ingest does at `recorded_at_ms`, with its content hash computed ahead.
Decoded DecodeMessage(const RdKafka::Message& msg, const ValidationLimits& limits,
                      int64_t recorded_at_ms);

// One thread, one window at a time: Start() hands a window over, Wait() takes it back decoded.
// The two share the window's messages: Wait() decodes those the thread has not begun, so the
// loop never idles behind the thread (on a machine busy with the broker and RocksDB's threads,
// the thread does not always get a core at once).
class DecodeAhead {
 public:
  DecodeAhead();
  ~DecodeAhead();
  DecodeAhead(const DecodeAhead&) = delete;
  DecodeAhead& operator=(const DecodeAhead&) = delete;

  // Decodes the messages of `*window` with `limits` (copied), in force from entry `limits_seq`.
  // The caller does not touch `*window` until Wait() returns.
  void Start(std::vector<Consumed>* window, const ValidationLimits& limits, uint64_t limits_seq);
  // Decodes what the thread has not begun of the window handed over by Start(), then returns
  // once all of it is decoded (at once if no window was handed over).
  void Wait();

 private:
  void Loop();
  // Claims and decodes the window's messages one by one until none is left; returns how many it
  // decoded.
  size_t Drain();

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Consumed>* window_ = nullptr;  // handed over, not yet done
  uint64_t round_ = 0;                       // Start() calls; the thread works once per round
  std::atomic<size_t> next_{0};              // the next index of *window_ to claim
  size_t done_ = 0;                          // decoded so far (under mu_)
  bool thread_active_ = false;               // the thread is in Drain() (under mu_)
  bool quit_ = false;
  ValidationLimits limits_;
  uint64_t limits_seq_ = 0;
  std::thread thread_;
};

}  // namespace gpuledger::ingest
