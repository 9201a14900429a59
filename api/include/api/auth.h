// Bearer tokens and roles. Tokens are stored hashed (SHA-256, hex) in a file of lines
//   sha256:<64 hex> <role> [name ...]
// where role is operator, finance, auditor, csp:<csp id> or institution:<institution id>;
// '#' starts a comment. The file is re-read when it changes (checked at most once a second),
// so tokens rotate without a restart. `gpuledger tokens add` appends a line and prints the
// token once.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

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

class TokenStore {
 public:
  static absl::StatusOr<std::unique_ptr<TokenStore>> Load(const std::string& path);
  // The principal of a presented token, or nullopt. Reloads the file if it changed; if the new
  // file is invalid, keeps the previous tokens and logs why.
  std::optional<Principal> Authenticate(std::string_view token);
  size_t size();

 private:
  explicit TokenStore(std::string path) : path_(std::move(path)) {}
  absl::Status Reload();
  void MaybeReload();

  std::string path_;
  std::mutex mu_;
  std::map<std::string, Principal> by_hash_;
  std::filesystem::file_time_type mtime_{};
  std::chrono::steady_clock::time_point last_check_{};
};

}  // namespace gpuledger::api
