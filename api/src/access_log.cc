#include "access_log.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "absl/strings/str_cat.h"

namespace gpuledger::api {

namespace {

constexpr size_t kFlushAtBytes = 64 << 10;
constexpr size_t kPipeAtomicBytes = 4096;  // PIPE_BUF on Linux

// The length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlongs, no surrogates,
// at most U+10FFFF), or 0.
size_t Utf8Length(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  size_t n = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return n;
}

// 2026-03-01T00:00:00.123Z. The seconds are formatted once a second per thread.
void AppendTime(std::chrono::system_clock::time_point at, std::string* out) {
  const int64_t ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(at.time_since_epoch()).count();
  const int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  thread_local int64_t cached_secs = -1;
  thread_local char cached[24];
  if (secs != cached_secs) {
    const std::time_t t = static_cast<std::time_t>(secs);
    std::tm tm{};
    gmtime_r(&t, &tm);
    std::strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
    cached_secs = secs;
  }
  const int frac = static_cast<int>(ms - secs * 1000);
  const char digits[5] = {'.', static_cast<char>('0' + frac / 100),
                          static_cast<char>('0' + frac / 10 % 10),
                          static_cast<char>('0' + frac % 10), 'Z'};
  out->append(cached);
  out->append(digits, sizeof digits);
}

void AppendKey(const char* key, std::string* out) { out->append(",\"").append(key).append("\":"); }

}  // namespace

void AppendJsonString(std::string_view s, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out->push_back('"');
  size_t i = 0;
  while (i < s.size()) {
    // A run of characters that need nothing, appended at once.
    size_t plain = i;
    while (plain < s.size() && s[plain] >= 0x20 && s[plain] != '"' && s[plain] != '\\' &&
           s[plain] != 0x7f) {
      ++plain;
    }
    if (plain > i) {
      out->append(s.data() + i, plain - i);
      i = plain;
      continue;
    }
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      if (const size_t n = Utf8Length(s, i); n > 0) {
        out->append(s.data() + i, n);
        i += n;
      } else {
        out->append("\\ufffd");
        ++i;
      }
      continue;
    }
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          const char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xf]};
          out->append(esc, sizeof esc);
        } else {
          out->push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out->push_back('"');
}

std::string AccessLine(const AccessRecord& r) {
  std::string line;
  line.reserve(256 + r.path.size());
  line.append("{\"ts\":\"");
  AppendTime(r.at, &line);
  line.push_back('"');
  AppendKey("id", &line);
  AppendJsonString(r.id, &line);
  AppendKey("client", &line);
  AppendJsonString(r.client, &line);
  AppendKey("principal", &line);
  AppendJsonString(r.principal, &line);
  AppendKey("method", &line);
  AppendJsonString(r.method, &line);
  AppendKey("path", &line);
  AppendJsonString(r.path.substr(0, 512), &line);
  AppendKey("route", &line);
  AppendJsonString(r.route, &line);
  AppendKey("status", &line);
  absl::StrAppend(&line, r.status);
  AppendKey("bytes", &line);
  absl::StrAppend(&line, r.bytes);
  AppendKey("ms", &line);
  const int64_t us = r.micros < 0 ? 0 : r.micros;
  const int64_t frac = us % 1000;
  absl::StrAppend(&line, us / 1000, ".", frac < 100 ? (frac < 10 ? "00" : "0") : "", frac);
  line.push_back('}');
  return line;
}

absl::StatusOr<std::unique_ptr<LineLog>> LineLog::Open(const std::string& path) {
  if (path == "-") return std::unique_ptr<LineLog>(new LineLog(STDERR_FILENO, false));
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  return std::unique_ptr<LineLog>(new LineLog(fd, true));
}

LineLog::~LineLog() {
  Flush();
  if (owned_) ::close(fd_);
}

void LineLog::Append(std::string_view line) {
  std::lock_guard<std::mutex> lock(mu_);
  buffer_.append(line);
  buffer_.push_back('\n');
  if (buffer_.size() >= kFlushAtBytes) WriteLocked();
}

void LineLog::Flush() {
  std::lock_guard<std::mutex> lock(mu_);
  WriteLocked();
}

void LineLog::WriteLocked() {
  // Whole lines only; to standard error in pieces a pipe writes atomically.
  size_t done = 0;
  while (done < buffer_.size()) {
    size_t n = buffer_.size() - done;
    if (!owned_ && n > kPipeAtomicBytes) {
      const size_t cut = buffer_.rfind('\n', done + kPipeAtomicBytes - 1);
      n = cut != std::string::npos && cut >= done ? cut + 1 - done : n;
    }
    const ssize_t w = ::write(fd_, buffer_.data() + done, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      // A full disk or a closed pipe: said in the server's log (an operator must act: the
      // record of invoice reads is the auditors'), and serving goes on.
      spdlog::error("cannot write {} bytes of {}: {}", buffer_.size() - done,
                    owned_ ? "a request log file" : "the access log (stderr)",
                    std::strerror(w < 0 ? errno : EIO));
      break;
    }
    done += static_cast<size_t>(w);
  }
  buffer_.clear();
}

}  // namespace gpuledger::api
