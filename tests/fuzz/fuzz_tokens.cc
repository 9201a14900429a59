// Fuzzes the tokens file `gpuledger serve` reads (--tokens): api::ParseTokensFile, which both
// the start (strict) and every reload use.
//
// Input: the bytes of a tokens file.
// Properties: no crash or sanitizer report; parsing is deterministic; every granted hash is 64
// lower-case hex digits and its role reads back as itself; revocation never fails open: a
// granting line, once removed, grants nothing, and a malformed line added anywhere changes no
// other line's grant.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "api/auth.h"
#include "fuzz_support.h"

namespace {

namespace api = gpuledger::api;
using gpuledger::fuzz::Require;

bool SameGrants(const api::ParsedTokens& a, const api::ParsedTokens& b) {
  if (a.by_hash.size() != b.by_hash.size()) return false;
  for (auto ia = a.by_hash.begin(), ib = b.by_hash.begin(); ia != a.by_hash.end(); ++ia, ++ib) {
    if (ia->first != ib->first || ia->second.RoleString() != ib->second.RoleString() ||
        ia->second.name != ib->second.name) {
      return false;
    }
  }
  return true;
}

// Lines beyond this are not removed one by one (each removal parses the file again).
constexpr size_t kLinesRemovedMax = 16;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const api::ParsedTokens parsed = api::ParseTokensFile(text);
  Require(SameGrants(parsed, api::ParseTokensFile(text)), "parsing is deterministic");
  const std::vector<absl::string_view> lines =
      absl::StrSplit(absl::string_view(text.data(), text.size()), '\n');
  for (const auto& p : parsed.problems) {
    Require(p.line >= 1 && static_cast<size_t>(p.line) <= lines.size(), "a problem names a line");
  }
  for (const auto& [hash, who] : parsed.by_hash) {
    Require(hash.size() == 64 && hash.find_first_not_of("0123456789abcdef") == std::string::npos,
            "a granted hash is 64 lower-case hex digits");
    auto role = api::ParseRole(who.RoleString());
    Require(role.ok() && role->role == who.role && role->scope_id == who.scope_id,
            "a granted role reads back as itself");
  }
  // A malformed line, at the end or the start, changes no other line's grant.
  const std::string bad = "sha256:not-a-hash operator";
  Require(SameGrants(parsed, api::ParseTokensFile(std::string(text) + "\n" + bad + "\n")),
          "a malformed line at the end changes nothing else");
  const api::ParsedTokens with_bad_first = api::ParseTokensFile(bad + "\n" + std::string(text));
  Require(SameGrants(parsed, with_bad_first), "a malformed line at the start changes nothing else");
  Require(with_bad_first.problems.size() == parsed.problems.size() + 1 &&
              with_bad_first.problems.front().line == 1,
          "the malformed line is reported as line 1");
  // Removing a line that grants revokes what it granted.
  for (size_t i = 0; i < lines.size() && i < kLinesRemovedMax; ++i) {
    const api::ParsedTokens alone =
        api::ParseTokensFile(std::string_view(lines[i].data(), lines[i].size()));
    if (alone.by_hash.size() != 1) continue;
    const std::string& hash = alone.by_hash.begin()->first;
    if (!parsed.by_hash.contains(hash)) continue;  // a duplicate: it granted nothing
    std::vector<absl::string_view> rest = lines;
    rest.erase(rest.begin() + static_cast<std::ptrdiff_t>(i));
    Require(!api::ParseTokensFile(absl::StrJoin(rest, "\n")).by_hash.contains(hash),
            "a removed line grants nothing");
  }
  return 0;
}
