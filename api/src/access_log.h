// The server's per-request lines: the access log and the auditors' record of invoice reads
// (docs/OPERATIONS.md). Each line is one JSON object built by hand (every string escaped, invalid
// UTF-8 replaced by U+FFFD) and appended to a buffer; the server's 200 ms ticker writes the
// buffer out, so a request costs no system call (docs/BENCHMARKS.md, the API after issue 19).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace gpuledger::api {

// What one line says about one answered request.
struct AccessRecord {
  std::chrono::system_clock::time_point at{};
  std::string_view id{};         // the request id (X-Request-Id)
  std::string_view client{};     // the peer's address
  std::string_view principal{};  // the token's name, never the token; "" when none
  std::string_view method{};
  std::string_view path{};  // %-decoded, without the query
  std::string_view route{};
  int status = 0;
  uint64_t bytes = 0;
  int64_t micros = 0;  // time to answer
};

// {"ts":"2026-03-01T00:00:00.123Z","id":...,"client":...,"principal":...,"method":...,
//  "path":...,"route":...,"status":200,"bytes":1714,"ms":0.123}, no newline. `path` is cut to
// 512 bytes.
std::string AccessLine(const AccessRecord& record);

// `s` as a JSON string (quoted) appended to `out`.
void AppendJsonString(std::string_view s, std::string* out);

// Lines appended in memory and written out in whole lines by Flush(), or at once when the
// buffer passes 64 KiB. Thread-safe.
class LineLog {
 public:
  // "-": standard error (written in pieces of at most 4 KiB, so that a line never interleaves
  // with another writer's); else a file, created if need be and appended to.
  static absl::StatusOr<std::unique_ptr<LineLog>> Open(const std::string& path);
  ~LineLog();
  LineLog(const LineLog&) = delete;
  LineLog& operator=(const LineLog&) = delete;

  void Append(std::string_view line);  // adds the newline
  void Flush();

 private:
  LineLog(int fd, bool owned) : fd_(fd), owned_(owned) {}
  void WriteLocked();

  const int fd_;
  const bool owned_;
  std::mutex mu_;
  std::string buffer_;
};

}  // namespace gpuledger::api
