// A directory under $TMPDIR that is removed when the test ends (unless GPULEDGER_KEEP_TMP is
// set, for a post-mortem).
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace gpuledger::testing {

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string templ = std::string(base != nullptr ? base : "/tmp") + "/gpuledger-test.XXXXXX";
    path_ = ::mkdtemp(templ.data()) != nullptr ? templ : std::string();
  }
  ~TempDir() {
    if (!path_.empty() && std::getenv("GPULEDGER_KEEP_TMP") == nullptr) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace gpuledger::testing
