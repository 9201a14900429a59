#include "api/auth.h"

#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "ledger/hash.h"

namespace gpuledger::api {

std::string Principal::RoleString() const {
  switch (role) {
    case Role::kOperator:
      return "operator";
    case Role::kFinance:
      return "finance";
    case Role::kAuditor:
      return "auditor";
    case Role::kCsp:
      return "csp:" + scope_id;
    case Role::kInstitution:
      return "institution:" + scope_id;
  }
  return "?";
}

absl::StatusOr<Principal> ParseRole(std::string_view role) {
  Principal p;
  if (role == "operator") {
    p.role = Role::kOperator;
  } else if (role == "finance") {
    p.role = Role::kFinance;
  } else if (role == "auditor") {
    p.role = Role::kAuditor;
  } else if (role.starts_with("csp:") && role.size() > 4) {
    p.role = Role::kCsp;
    p.scope_id = std::string(role.substr(4));
  } else if (role.starts_with("institution:") && role.size() > 12) {
    p.role = Role::kInstitution;
    p.scope_id = std::string(role.substr(12));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown role '", std::string(role),
                     "': use operator, finance, auditor, csp:<id> or institution:<id>"));
  }
  return p;
}

std::string HashToken(std::string_view token) { return ledger::ToHex(ledger::Sha256(token)); }

absl::StatusOr<std::string> NewToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    return absl::UnavailableError("OpenSSL could not produce random bytes");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Load(const std::string& path) {
  std::unique_ptr<TokenStore> store(new TokenStore(path));
  std::lock_guard<std::mutex> lock(store->mu_);
  if (absl::Status st = store->Reload(); !st.ok()) return st;
  return store;
}

absl::Status TokenStore::Reload() {
  std::error_code ec;
  const auto mtime = std::filesystem::last_write_time(path_, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("cannot read the tokens file ", path_));
  std::ifstream in(path_);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the tokens file ", path_));
  std::map<std::string, Principal> tokens;
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    const std::string text(absl::StripAsciiWhitespace(line.substr(0, line.find('#'))));
    if (text.empty()) continue;
    std::vector<std::string> f = absl::StrSplit(text, ' ', absl::SkipEmpty());
    if (f.size() < 2 || !f[0].starts_with("sha256:") || f[0].size() != 7 + 64) {
      return absl::InvalidArgumentError(absl::StrCat(
          path_, ":", n, ": want 'sha256:<64 hex> <role> [name]' (see gpuledger tokens add)"));
    }
    auto principal = ParseRole(f[1]);
    if (!principal.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_, ":", n, ": ", principal.status().message()));
    }
    for (size_t i = 2; i < f.size(); ++i) {
      absl::StrAppend(&principal->name, i > 2 ? " " : "", f[i]);
    }
    if (principal->name.empty()) principal->name = principal->RoleString();
    tokens[absl::AsciiStrToLower(f[0].substr(7))] = *principal;
  }
  by_hash_ = std::move(tokens);
  mtime_ = mtime;
  return absl::OkStatus();
}

void TokenStore::MaybeReload() {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_check_ < std::chrono::seconds(1)) return;
  last_check_ = now;
  std::error_code ec;
  const auto mtime = std::filesystem::last_write_time(path_, ec);
  if (ec || mtime == mtime_) return;
  if (absl::Status st = Reload(); !st.ok()) {
    spdlog::error("tokens file changed but was not loaded, the previous tokens stay: {}",
                  std::string(st.message()));
    mtime_ = mtime;  // do not retry until it changes again
  } else {
    spdlog::info("tokens file reloaded: {} token(s)", by_hash_.size());
  }
}

std::optional<Principal> TokenStore::Authenticate(std::string_view token) {
  if (token.empty()) return std::nullopt;
  const std::string hash = HashToken(token);
  std::lock_guard<std::mutex> lock(mu_);
  MaybeReload();
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return std::nullopt;
  return it->second;
}

size_t TokenStore::size() {
  std::lock_guard<std::mutex> lock(mu_);
  return by_hash_.size();
}

}  // namespace gpuledger::api
