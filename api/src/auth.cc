#include "api/auth.h"

#include <openssl/rand.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "api/limits.h"
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

namespace {

bool IsHex64(absl::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!absl::ascii_isxdigit(c)) return false;
  }
  return true;
}

// The problem with one line's fields, or "" when it grants: the message never quotes the line.
std::string LineProblem(const std::vector<absl::string_view>& f, Principal* who) {
  if (f.size() < 2) return "want 'sha256:<64 hex> <role> [name]' (see gpuledger tokens add)";
  if (!absl::StartsWith(f[0], "sha256:")) return "the hash must start with 'sha256:'";
  if (!IsHex64(f[0].substr(7))) return "the hash must be 64 hex digits after 'sha256:'";
  auto principal = ParseRole(std::string_view(f[1].data(), f[1].size()));
  if (!principal.ok()) {
    return "unknown role: use operator, finance, auditor, csp:<id> or institution:<id>";
  }
  *who = *std::move(principal);
  for (size_t i = 2; i < f.size(); ++i) absl::StrAppend(&who->name, i > 2 ? " " : "", f[i]);
  if (who->name.empty()) who->name = who->RoleString();
  return "";
}

}  // namespace

ParsedTokens ParseTokensFile(std::string_view text) {
  ParsedTokens out;
  std::map<std::string, int> first_line;  // hash -> the first line that has it
  std::set<std::string> duplicated;
  int n = 0;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++n;
    if (line.size() > kTokensLineBytesMax) {
      out.problems.push_back({n, absl::StrCat("longer than ", kTokensLineBytesMax, " bytes")});
      continue;
    }
    const absl::string_view content = absl::StripAsciiWhitespace(line.substr(0, line.find('#')));
    if (content.empty()) continue;
    std::vector<absl::string_view> f =
        absl::StrSplit(content, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    Principal who;
    if (std::string problem = LineProblem(f, &who); !problem.empty()) {
      out.problems.push_back({n, std::move(problem)});
      continue;
    }
    const std::string hash = absl::AsciiStrToLower(f[0].substr(7));
    auto [it, inserted] = first_line.emplace(hash, n);
    if (!inserted) {
      out.problems.push_back({n, absl::StrCat("the same hash as line ", it->second,
                                              ": neither line grants anything")});
      duplicated.insert(hash);
      continue;
    }
    out.by_hash[hash] = std::move(who);
  }
  for (const std::string& hash : duplicated) out.by_hash.erase(hash);
  return out;
}

absl::Status CheckTokensFilePermissions(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat("cannot read the tokens file ", path, ": ", std::strerror(errno)));
  }
  // Anyone who can write it can grant themselves any role; anyone may read it otherwise.
  if ((st.st_mode & (S_IWGRP | S_IWOTH | S_IROTH | S_IXOTH)) != 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("the tokens file %s has mode %04o: others may read it or others than "
                        "its owner may change it; run: chmod 600 %s",
                        path, st.st_mode & 07777, path));
  }
  return absl::OkStatus();
}

TokenStore::Version TokenStore::VersionOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  // Size, times, mode and inode: a rename over the file, a rewrite within the same second or
  // a chmod each count as a change.
  return {static_cast<int64_t>(st.st_dev),
          static_cast<int64_t>(st.st_ino),
          static_cast<int64_t>(st.st_size),
          static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec,
          static_cast<int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec,
          static_cast<int64_t>(st.st_mode)};
}

absl::StatusOr<std::unique_ptr<TokenStore>> TokenStore::Load(const std::string& path,
                                                             const TokenStoreOptions& options) {
  std::unique_ptr<TokenStore> store(new TokenStore(path, options));
  std::lock_guard<std::mutex> lock(store->mu_);
  if (absl::Status st = store->Reload(/*strict=*/true); !st.ok()) return st;
  store->last_check_ = std::chrono::steady_clock::now();
  return store;
}

absl::Status TokenStore::Reload(bool strict) {
  // Whatever happens below, this version has been dealt with: not retried until it changes.
  version_ = VersionOf(path_);
  absl::Status readable = CheckTokensFilePermissions(path_);
  std::string text;
  if (readable.ok() && static_cast<uint64_t>(version_.size) > kTokensFileBytesMax) {
    readable = absl::FailedPreconditionError(
        absl::StrCat("the tokens file ", path_, " is larger than ", kTokensFileBytesMax, " bytes"));
  }
  if (readable.ok()) {
    std::ifstream in(path_, std::ios::binary);
    text.assign(std::istreambuf_iterator<char>(in), {});
    if (!in.good() && !in.eof()) {
      readable = absl::UnavailableError(absl::StrCat("cannot read the tokens file ", path_));
    }
  }
  if (!readable.ok()) {
    if (strict) return readable;
    by_hash_.clear();
    spdlog::error("{}: every token is revoked until the file is back and safe",
                  std::string(readable.message()));
    return absl::OkStatus();
  }
  ParsedTokens parsed = ParseTokensFile(text);
  if (strict && !parsed.problems.empty()) {
    std::string message;
    for (size_t i = 0; i < parsed.problems.size() && i < 5; ++i) {
      absl::StrAppend(&message, i > 0 ? "; " : "", path_, ":", parsed.problems[i].line, ": ",
                      parsed.problems[i].message);
    }
    if (parsed.problems.size() > 5) {
      absl::StrAppend(&message, "; and ", parsed.problems.size() - 5, " more");
    }
    return absl::InvalidArgumentError(message);
  }
  for (const TokensFileProblem& p : parsed.problems) {
    spdlog::error("tokens file {}:{}: {}; this line grants nothing", path_, p.line, p.message);
  }
  by_hash_ = std::move(parsed.by_hash);
  return absl::OkStatus();
}

void TokenStore::MaybeReload() {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_check_ < std::chrono::milliseconds(options_.check_every_ms)) return;
  last_check_ = now;
  if (VersionOf(path_) == version_) return;
  (void)Reload(/*strict=*/false);
  spdlog::info("tokens file {} reloaded: {} token(s)", path_, by_hash_.size());
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

void TokenStore::CheckNow() {
  std::lock_guard<std::mutex> lock(mu_);
  last_check_ = {};
  MaybeReload();
}

size_t TokenStore::size() {
  std::lock_guard<std::mutex> lock(mu_);
  return by_hash_.size();
}

}  // namespace gpuledger::api
