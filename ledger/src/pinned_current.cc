#include "pinned_current.h"

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>

namespace gpuledger::ledger {

namespace {

std::string ReadCurrent(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The pinned content of CURRENT, served as a file.
class StringFile : public rocksdb::FSSequentialFile {
 public:
  explicit StringFile(std::string data) : data_(std::move(data)) {}
  rocksdb::IOStatus Read(size_t n, const rocksdb::IOOptions&, rocksdb::Slice* result, char* scratch,
                         rocksdb::IODebugContext*) override {
    const size_t len = std::min(n, data_.size() - pos_);
    std::memcpy(scratch, data_.data() + pos_, len);
    pos_ += len;
    *result = rocksdb::Slice(scratch, len);
    return rocksdb::IOStatus::OK();
  }
  rocksdb::IOStatus Skip(uint64_t n) override {
    pos_ += std::min<uint64_t>(n, data_.size() - pos_);
    return rocksdb::IOStatus::OK();
  }

 private:
  std::string data_;
  size_t pos_ = 0;
};

class PinnedCurrentFs : public rocksdb::FileSystemWrapper {
 public:
  PinnedCurrentFs(const std::shared_ptr<rocksdb::FileSystem>& base, std::string current_path)
      : rocksdb::FileSystemWrapper(base), current_path_(std::move(current_path)) {}
  const char* Name() const override { return "GpuledgerPinnedCurrent"; }

  rocksdb::IOStatus NewSequentialFile(const std::string& fname, const rocksdb::FileOptions& opts,
                                      std::unique_ptr<rocksdb::FSSequentialFile>* result,
                                      rocksdb::IODebugContext* dbg) override {
    if (fname != current_path_) return target()->NewSequentialFile(fname, opts, result, dbg);
    std::lock_guard<std::mutex> lock(mu_);
    if (!pinned_) {
      std::string data = ReadCurrent(current_path_);
      if (data.empty()) return target()->NewSequentialFile(fname, opts, result, dbg);
      pinned_ = std::move(data);
    }
    result->reset(new StringFile(*pinned_));
    return rocksdb::IOStatus::OK();
  }

  std::string pinned() const {
    std::lock_guard<std::mutex> lock(mu_);
    return pinned_.value_or("");
  }

 private:
  const std::string current_path_;
  mutable std::mutex mu_;
  std::optional<std::string> pinned_;
};

}  // namespace

struct PinnedCurrent::Impl {
  std::string current_path;
  std::shared_ptr<PinnedCurrentFs> fs;
  std::unique_ptr<rocksdb::Env> env;
};

PinnedCurrent::PinnedCurrent(const std::string& db_dir) : impl_(std::make_unique<Impl>()) {
  impl_->current_path = db_dir + "/CURRENT";
  impl_->fs =
      std::make_shared<PinnedCurrentFs>(rocksdb::FileSystem::Default(), impl_->current_path);
  impl_->env = rocksdb::NewCompositeEnv(impl_->fs);
}

PinnedCurrent::~PinnedCurrent() = default;

rocksdb::Env* PinnedCurrent::env() const { return impl_->env.get(); }

std::string PinnedCurrent::pinned() const { return impl_->fs->pinned(); }

bool PinnedCurrent::Moved() const {
  const std::string pinned = impl_->fs->pinned();
  return !pinned.empty() && ReadCurrent(impl_->current_path) != pinned;
}

}  // namespace gpuledger::ledger
