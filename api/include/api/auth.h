// Bearer tokens and roles. Tokens are stored hashed (SHA-256, hex) in a file of lines
//   sha256:<64 hex> <role> [name ...]
// where role is operator, finance, auditor, csp:<csp id> or institution:<institution id>;
// '#' starts a comment. The file is re-read when it changes (checked at most once a second),
// so tokens rotate without a restart. `gpuledger tokens add` appends a line and prints the
// token once.
//
// Revocation never fails open: a bad line (malformed, or a hash that another line also has)
// grants nothing while the file's other lines take effect; a file that is missing, unreadable,
// too big or writable by others revokes every token until it is fixed. At start any of these
// refuses to serve.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace gpuledger::api {

enum class Role { kOperator, kFinance, kAuditor, kCsp, kInstitution };

struct Principal {
  Role role = Role::kAuditor;
  std::string scope_id;  // the CSP or institution id for kCsp / kInstitution
  std::string name;      // for logs: never the token
  std::string RoleString() const;
};

// "operator", "finance", "auditor", "csp:<id>", "institution:<id>".
absl::StatusOr<Principal> ParseRole(std::string_view role);

// Lower-case hex SHA-256 of the token.
std::string HashToken(std::string_view token);

// A new random token (32 bytes from OpenSSL's RAND_bytes, hex).
absl::StatusOr<std::string> NewToken();

struct TokenStoreOptions {
  // How often Authenticate() looks at the file for a change, at most. Default: 1000 ms.
  int check_every_ms = 1000;
};

// One line of a tokens file that grants nothing, and why (never the line's text: it may hold a
// token pasted by mistake).
struct TokensFileProblem {
  int line = 0;  // 1-based
  std::string message;
};

struct ParsedTokens {
  std::map<std::string, Principal> by_hash;  // lower-case hex SHA-256 -> who
  std::vector<TokensFileProblem> problems;
};

// The tokens of a file's text. Pure: what both loading and reloading use, and what the fuzzer
// (tests/fuzz/fuzz_tokens.cc) checks.
ParsedTokens ParseTokensFile(std::string_view text);

// OK if only its owner (and its group, to read) may use the file at `path`; otherwise says
// what to run.
absl::Status CheckTokensFilePermissions(const std::string& path);

class TokenStore {
 public:
  // Refuses a file with any problem, or with unsafe permissions.
  static absl::StatusOr<std::unique_ptr<TokenStore>> Load(const std::string& path,
                                                          const TokenStoreOptions& options = {});
  // Looks at the file now (as Authenticate does at most every check_every_ms) and reloads it
  // if it changed.
  void CheckNow();
  // The principal of a presented token, or nullopt. Reloads the file if it changed (see the
  // top of this file for what a bad line or a missing file does).
  std::optional<Principal> Authenticate(std::string_view token);
  size_t size();

 private:
  TokenStore(std::string path, TokenStoreOptions options)
      : path_(std::move(path)), options_(options) {}
  // What identifies one version of the file (0s: none could be read).
  struct Version {
    int64_t dev = 0, ino = 0, size = 0, mtime_ns = 0, ctime_ns = 0, mode = 0;
    bool operator==(const Version&) const = default;
  };
  static Version VersionOf(const std::string& path);
  // Reads the file. Strict: any problem is an error (at start). Otherwise the good lines are
  // taken and each problem is logged; an unreadable file revokes everything.
  absl::Status Reload(bool strict);
  void MaybeReload();

  std::string path_;
  TokenStoreOptions options_;
  std::mutex mu_;
  std::map<std::string, Principal> by_hash_;
  Version version_;
  std::chrono::steady_clock::time_point last_check_{};
};

}  // namespace gpuledger::api
