#include "json_log.h"

#include <spdlog/fmt/fmt.h>

#include <chrono>
#include <nlohmann/json.hpp>

namespace gpuledger::cli {

void JsonLogFormatter::format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch());
  nlohmann::ordered_json line;
  line["ts_ms"] = ms.count();
  line["level"] = std::string(spdlog::level::to_string_view(msg.level).data(),
                              spdlog::level::to_string_view(msg.level).size());
  line["msg"] = std::string(msg.payload.data(), msg.payload.size());
  // Invalid UTF-8 (a payload quoted in a message) is replaced, never thrown on.
  const std::string text =
      line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
  dest.append(text.data(), text.data() + text.size());
}

std::unique_ptr<spdlog::formatter> JsonLogFormatter::clone() const {
  return std::make_unique<JsonLogFormatter>();
}

}  // namespace gpuledger::cli
