// One JSON object per log line, for log shippers: {"ts":..., "level":..., "msg":...}.
#pragma once

#include <spdlog/formatter.h>

#include <memory>

namespace gpuledger::cli {

// A spdlog formatter that writes each record as one line of JSON with the message escaped.
// Stateless; spdlog calls it from the logging thread.
class JsonLogFormatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override;
  std::unique_ptr<spdlog::formatter> clone() const override;
};

}  // namespace gpuledger::cli
