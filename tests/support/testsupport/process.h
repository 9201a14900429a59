// Helpers for tests that run the real `gpuledger` binary as a child process.
#pragma once

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace gpuledger::testing {

// The binary under test: $GPULEDGER_BIN if set, else the path the test target compiled in as
// GPULEDGER_BIN_PATH (see tests/CMakeLists.txt), else "".
inline std::string GpuledgerBinary() {
  if (const char* s = std::getenv("GPULEDGER_BIN")) return s;
#ifdef GPULEDGER_BIN_PATH
  return GPULEDGER_BIN_PATH;
#else
  return "";
#endif
}

// The whole file, or "" if it cannot be read.
inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The last `lines` lines of `text`.
inline std::string TailLines(const std::string& text, size_t lines) {
  size_t pos = text.size();
  for (size_t n = 0; n <= lines && pos > 0; ++n) {
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) return text;
  }
  return text.substr(pos + 1);
}

}  // namespace gpuledger::testing
