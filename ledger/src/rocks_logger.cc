#include "ledger/rocks_logger.h"

#include <rocksdb/env.h>
#include <spdlog/spdlog.h>

#include <cstdarg>
#include <cstdio>
#include <string>

namespace gpuledger::ledger {

namespace {

class SpdlogLogger : public rocksdb::Logger {
 public:
  explicit SpdlogLogger(const char* what)
      : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL), what_(what) {}

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel()) return;
    char buf[1024];
    va_list copy;
    va_copy(copy, ap);
    std::vsnprintf(buf, sizeof(buf), format, copy);
    va_end(copy);
    if (level >= rocksdb::InfoLogLevel::ERROR_LEVEL) {
      spdlog::error("rocksdb ({}): {}", what_, buf);
    } else {
      spdlog::warn("rocksdb ({}): {}", what_, buf);
    }
  }

 private:
  std::string what_;
};

}  // namespace

std::shared_ptr<rocksdb::Logger> RocksLogger(const char* what) {
  return std::make_shared<SpdlogLogger>(what);
}

}  // namespace gpuledger::ledger
