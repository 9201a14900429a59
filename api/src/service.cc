#include "api/service.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/limits.h"
#include "base/status.h"

namespace gpuledger::api {

// The cache's bounds are listed with every other memory bound in base/limits.h.
static_assert(kMaxCachedDocuments == limits::kServeDocumentCacheDocumentsMax);
static_assert(kMaxCachedDocumentBytes == limits::kServeDocumentCacheBytesMax);

namespace {
int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
std::string Trimmed(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}
}  // namespace

absl::StatusOr<std::unique_ptr<Service>> Service::Open(const ServiceOptions& options) {
  std::unique_ptr<Service> s(new Service(options));
  ServiceOptions& o = s->options_;
  if (o.store.empty()) o.store = Trimmed(o.db) + ".settlement";
  // One secondary directory per instance (RocksDB wants them distinct): by process id.
  if (o.secondary.empty()) {
    o.secondary = absl::StrCat(Trimmed(o.db), ".serve-secondary/", ::getpid());
    s->remove_secondary_ = true;
  }
  std::error_code ec;
  std::filesystem::create_directories(o.secondary, ec);
  ledger::LedgerOptions lo;
  lo.read_only = true;
  lo.create_if_missing = false;
  lo.secondary_path = o.secondary;
  GPULEDGER_ASSIGN_OR_RETURN(s->ledger_, ledger::Ledger::Open(o.db, lo));
  GPULEDGER_ASSIGN_OR_RETURN(s->tokens_, TokenStore::Load(o.tokens_file));
  if (s->tokens_->size() == 0) {
    spdlog::warn("{} holds no tokens: every /v1 request will get 401 (gpuledger tokens add)",
                 o.tokens_file);
  }
  GPULEDGER_ASSIGN_OR_RETURN(s->settlement_,
                             settlement::OpenSettlement(o.store, *s->ledger_, o.settle));
  s->settled_through_ = s->settlement_.engine->applied_through();
  s->ready_ = true;
  return s;
}

Service::~Service() {
  Stop();
  if (remove_secondary_) {
    settlement_.engine.reset();
    settlement_.store.reset();
    ledger_.reset();
    std::error_code ec;
    std::filesystem::remove_all(options_.secondary, ec);
  }
}

void Service::Start() {
  refresher_ = std::thread([this] { RefreshLoop(); });
  verifier_ = std::thread([this] { VerifyLoop(); });
}

void Service::Stop() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (refresher_.joinable()) refresher_.join();
  if (verifier_.joinable()) verifier_.join();
}

absl::Status Service::RefreshOnce() {
  GPULEDGER_RETURN_IF_ERROR(ledger_->Refresh());
  std::lock_guard<std::mutex> lock(engine_mu_);
  settlement::CatchUpOptions catch_up;
  catch_up.batch = 5'000;  // short holds of the engine lock
  auto applied = settlement::CatchUp(*ledger_, settlement_.engine.get(), catch_up);
  // New entries (or a failure part-way) may change any document: render them afresh.
  if (!applied.ok() || *applied > 0) {
    documents_.clear();
    documents_bytes_ = 0;
  }
  GPULEDGER_RETURN_IF_ERROR(applied.status());
  settled_through_ = settlement_.engine->applied_through();
  return absl::OkStatus();
}

const RenderedDocument* Service::FindDocument(const std::string& key) const {
  auto it = documents_.find(key);
  return it == documents_.end() ? nullptr : &it->second;
}

void Service::KeepDocument(std::string key, RenderedDocument document) {
  size_t bytes = key.size() + document.content_type.size() + document.body.size();
  for (const auto& [k, v] : document.headers) bytes += k.size() + v.size();
  if (bytes > kMaxCachedDocumentBytes) return;
  if (documents_.size() >= kMaxCachedDocuments ||
      documents_bytes_ + bytes > kMaxCachedDocumentBytes) {
    documents_.clear();
    documents_bytes_ = 0;
  }
  if (documents_.try_emplace(std::move(key), std::move(document)).second) documents_bytes_ += bytes;
}

void Service::RefreshLoop() {
  std::unique_lock<std::mutex> lock(stop_mu_);
  while (!stopping_) {
    lock.unlock();
    if (absl::Status st = RefreshOnce(); !st.ok()) {
      spdlog::error("refresh from the ledger failed (will retry): {}", std::string(st.message()));
    }
    lock.lock();
    stop_cv_.wait_for(lock, std::chrono::milliseconds(options_.refresh_ms),
                      [this] { return stopping_; });
  }
}

void Service::VerifyLoop() {
  std::unique_lock<std::mutex> lock(stop_mu_);
  while (!stopping_) {
    lock.unlock();
    auto report = ledger::Verify(*ledger_);
    {
      std::lock_guard<std::mutex> v(verify_mu_);
      verify_.done = true;
      verify_.finished_at_ms = NowMs();
      if (report.ok()) {
        verify_.report = *report;
        verify_.error.clear();
        if (!report->ok) spdlog::error("ledger verification failed: {}", report->problem);
      } else {
        verify_.error = std::string(report.status().message());
      }
    }
    lock.lock();
    if (options_.verify_every_s <= 0) {
      stop_cv_.wait(lock, [this] { return stopping_; });
    } else {
      stop_cv_.wait_for(lock, std::chrono::seconds(options_.verify_every_s),
                        [this] { return stopping_; });
    }
  }
}

VerifyStatus Service::verify_status() {
  std::lock_guard<std::mutex> v(verify_mu_);
  return verify_;
}

}  // namespace gpuledger::api
