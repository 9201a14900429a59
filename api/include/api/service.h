// What `gpuledger serve` serves from: the ledger as a RocksDB secondary instance that follows
// the live ingest writer, the settlement store kept up to date from it, the tokens, and the
// last verification of the chain. A refresh thread catches both up every `refresh_ms`.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "api/auth.h"
#include "api/limits.h"
#include "ledger/ledger.h"
#include "ledger/verify.h"
#include "settlement/engine.h"

namespace gpuledger::api {

struct ServiceOptions {
  std::string db;
  std::string store;      // settlement store; "" = <db>.settlement
  std::string secondary;  // secondary instance directory; "" = <db>.serve-secondary/<pid>
  std::string tokens_file;
  settlement::SettleOptions settle;
  // The record of invoice reads the server appends to (ServerOptions::invoice_read_log), which
  // GET /v1/audit/invoice-reads reads back for auditors. "": none kept.
  std::string invoice_read_log;
  int refresh_ms = 500;
  int verify_every_s = 600;  // re-verify the chain this often (0: only at start)
  // An answer that is not paged or streamed is refused (422 response_too_large) beyond this many
  // bytes (limits.h).
  size_t response_bytes_max = kResponseBytesMax;
};

// A settlement document as the API rendered it (JSON, CSV or HTML), with its headers.
struct RenderedDocument {
  std::string content_type;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// Bounds of the cache of rendered documents: when an entry would exceed either, the cache is
// emptied first.
inline constexpr size_t kMaxCachedDocuments = 1'000;
inline constexpr size_t kMaxCachedDocumentBytes = 64 << 20;

struct VerifyStatus {
  bool done = false;
  ledger::VerifyReport report;
  std::string error;
  int64_t finished_at_ms = 0;
};

class Service {
 public:
  static absl::StatusOr<std::unique_ptr<Service>> Open(const ServiceOptions& options);
  ~Service();

  // Starts the refresh and verification threads.
  void Start();
  void Stop();

  ledger::Ledger& ledger() { return *ledger_; }
  TokenStore& tokens() { return *tokens_; }
  // Runs `fn` with the settlement engine, one caller at a time.
  template <typename F>
  auto WithEngine(F fn) {
    std::lock_guard<std::mutex> lock(engine_mu_);
    return fn(*settlement_.engine);
  }
  // Documents rendered from the engine's current state, by a key the caller chooses (what,
  // which period and id, which format). Call only from inside WithEngine. The refresh empties
  // the cache whenever it applies ledger entries, so a hit is what rendering again would give.
  const RenderedDocument* FindDocument(const std::string& key) const;
  void KeepDocument(std::string key, RenderedDocument document);
  VerifyStatus verify_status();
  // True once the settlement store has caught up with the ledger at least once.
  bool ready() const { return ready_.load(); }
  uint64_t settled_through() const { return settled_through_.load(); }
  const ServiceOptions& options() const { return options_; }

 private:
  explicit Service(ServiceOptions options) : options_(std::move(options)) {}
  absl::Status RefreshOnce();
  void RefreshLoop();
  void VerifyLoop();

  ServiceOptions options_;
  bool remove_secondary_ = false;
  std::unique_ptr<ledger::Ledger> ledger_;
  std::unique_ptr<TokenStore> tokens_;
  settlement::Settlement settlement_;
  std::mutex engine_mu_;
  // Guarded by engine_mu_.
  std::unordered_map<std::string, RenderedDocument> documents_;
  size_t documents_bytes_ = 0;
  std::atomic<bool> ready_{false};
  std::atomic<uint64_t> settled_through_{0};
  std::mutex verify_mu_;
  VerifyStatus verify_;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread refresher_;
  std::thread verifier_;
};

}  // namespace gpuledger::api
