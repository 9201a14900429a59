#include "api/auth.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "api/routes.h"
#include "testsupport/temp_dir.h"

namespace gpuledger::api {
namespace {

TEST(AuthTest, RolesParseOrSayWhatIsWrong) {
  EXPECT_EQ(ParseRole("finance")->role, Role::kFinance);
  auto csp = ParseRole("csp:csp-alpha");
  ASSERT_TRUE(csp.ok());
  EXPECT_EQ(csp->role, Role::kCsp);
  EXPECT_EQ(csp->scope_id, "csp-alpha");
  EXPECT_EQ(ParseRole("institution:inst-1")->RoleString(), "institution:inst-1");
  for (const char* bad : {"", "admin", "csp:", "institution:", "CSP:x"}) {
    EXPECT_FALSE(ParseRole(bad).ok()) << bad;
  }
}

// Writes a tokens file as an operator would replace it: a new file (mode `mode`) renamed over
// the old one, so the store sees one version or the other.
void WriteTokens(const std::string& path, const std::string& text, int mode = 0600) {
  const std::string tmp = path + ".tmp";
  { std::ofstream(tmp, std::ios::trunc) << text; }
  ASSERT_EQ(::chmod(tmp.c_str(), static_cast<mode_t>(mode)), 0);
  std::filesystem::rename(tmp, path);
}

std::string Line(const std::string& token, const std::string& role) {
  return "sha256:" + HashToken(token) + " " + role + "\n";
}

std::unique_ptr<TokenStore> LoadOrDie(const std::string& path) {
  auto store = TokenStore::Load(path);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(*store) : nullptr;
}

// Captures what the store logs (spdlog's default logger) while it lives.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() const { return out_.str(); }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream out_;
};

TEST(AuthTest, TokensAreCheckedByHashAndReloadedWhenTheFileChanges) {
  gpuledger::testing::TempDir dir;
  const std::string path = dir.Sub("tokens");
  const std::string a = *NewToken();
  const std::string b = *NewToken();
  EXPECT_NE(a, b);
  EXPECT_EQ(a.size(), 64u);
  WriteTokens(path, "# comment\nsha256:" + HashToken(a) + " finance finance team\n");
  auto store = LoadOrDie(path);
  ASSERT_NE(store, nullptr);
  auto who = store->Authenticate(a);
  ASSERT_TRUE(who.has_value());
  EXPECT_EQ(who->role, Role::kFinance);
  EXPECT_EQ(who->name, "finance team");
  EXPECT_FALSE(store->Authenticate(b).has_value());
  EXPECT_FALSE(store->Authenticate("").has_value());
  EXPECT_FALSE(store->Authenticate(HashToken(a)).has_value());  // the hash is not a token
  // Rotate: b replaces a.
  WriteTokens(path, Line(b, "csp:csp-beta"));
  store->CheckNow();
  EXPECT_TRUE(store->Authenticate(b).has_value());
  EXPECT_FALSE(store->Authenticate(a).has_value());
}

// Issue 14 item 5: a bad line grants nothing, and the other lines take effect at once.
TEST(AuthTest, ARemovedLineIsRevokedEvenWhenAnotherLineIsMalformed) {
  gpuledger::testing::TempDir dir;
  const std::string path = dir.Sub("tokens");
  const std::string a = *NewToken(), b = *NewToken(), c = *NewToken();
  WriteTokens(path, Line(a, "operator") + Line(b, "finance"));
  auto store = LoadOrDie(path);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Authenticate(a).has_value());
  LogCapture log;
  // a's line removed, c added, and one line malformed in each way a line can be.
  WriteTokens(path, Line(b, "finance") + "this line is not a token\n" + Line(c, "auditor") +
                        "sha256:" + HashToken(a) + " root\n" + "sha256:" + std::string(64, 'z') +
                        " operator\n" + "sha256:abc operator\n");
  store->CheckNow();
  EXPECT_FALSE(store->Authenticate(a).has_value()) << "a removed line still grants access";
  EXPECT_TRUE(store->Authenticate(b).has_value());
  EXPECT_TRUE(store->Authenticate(c).has_value()) << "the good lines did not take effect";
  EXPECT_EQ(store->size(), 2u);
  // Each bad line is reported by its number; nothing of its text reaches the log.
  const std::string text = log.text();
  for (const char* where : {":2:", ":4:", ":5:", ":6:"}) {
    EXPECT_NE(text.find(absl::StrCat(path, where)), std::string::npos) << where << "\n" << text;
  }
  EXPECT_EQ(text.find("this line is not a token"), std::string::npos) << text;
  EXPECT_EQ(text.find(HashToken(a)), std::string::npos) << text;
  EXPECT_EQ(text.find("root"), std::string::npos) << text;
}

TEST(AuthTest, AMissingTokensFileRevokesEveryToken) {
  gpuledger::testing::TempDir dir;
  const std::string path = dir.Sub("tokens");
  const std::string a = *NewToken();
  WriteTokens(path, Line(a, "operator"));
  auto store = LoadOrDie(path);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Authenticate(a).has_value());
  LogCapture log;
  std::filesystem::remove(path);
  store->CheckNow();
  EXPECT_FALSE(store->Authenticate(a).has_value()) << "a deleted tokens file still grants";
  EXPECT_EQ(store->size(), 0u);
  EXPECT_NE(log.text().find("every token is revoked"), std::string::npos) << log.text();
  // Back: its tokens work again.
  WriteTokens(path, Line(a, "operator"));
  store->CheckNow();
  EXPECT_TRUE(store->Authenticate(a).has_value());
}

TEST(AuthTest, DuplicateAndMalformedHashesAreRefused) {
  gpuledger::testing::TempDir dir;
  const std::string path = dir.Sub("tokens");
  const std::string a = *NewToken(), b = *NewToken();
  // At start: refused, naming the line.
  WriteTokens(path, Line(a, "operator") + Line(b, "auditor") + Line(a, "csp:csp-alpha"));
  auto dup = TokenStore::Load(path);
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find(":3:"), std::string::npos) << dup.status();
  EXPECT_NE(dup.status().message().find("line 1"), std::string::npos) << dup.status();
  for (const std::string& bad :
       {"sha256:" + std::string(64, 'g') + " operator\n",
        "sha256:" + std::string(63, 'a') + "- operator\n",
        "sha256:" + std::string(65, 'a') + " operator\n", std::string("sha256: operator\n"),
        "sha256:" + HashToken(a) + "\n", "sha512:" + HashToken(a) + " operator\n"}) {
    WriteTokens(path, Line(b, "auditor") + bad);
    auto st = TokenStore::Load(path);
    ASSERT_FALSE(st.ok()) << bad;
    EXPECT_NE(st.status().message().find(":2:"), std::string::npos) << st.status();
  }
  // On reload: the duplicated hash grants nothing (neither role is right); the rest stands.
  WriteTokens(path, Line(a, "operator") + Line(b, "auditor"));
  auto store = LoadOrDie(path);
  ASSERT_NE(store, nullptr);
  WriteTokens(path, Line(a, "operator") + Line(b, "auditor") + Line(a, "csp:csp-alpha"));
  store->CheckNow();
  EXPECT_FALSE(store->Authenticate(a).has_value());
  EXPECT_TRUE(store->Authenticate(b).has_value());
  // Upper-case hex is the same hash, so the same duplicate.
  WriteTokens(path,
              Line(b, "auditor") + "sha256:" + absl::AsciiStrToUpper(HashToken(b)) + " operator\n");
  store->CheckNow();
  EXPECT_FALSE(store->Authenticate(b).has_value());
}

TEST(AuthTest, UnsafePermissionsRefuseToStartAndRevokeOnReload) {
  gpuledger::testing::TempDir dir;
  const std::string path = dir.Sub("tokens");
  const std::string a = *NewToken();
  for (int mode : {0666, 0622, 0602, 0620, 0644, 0604}) {
    WriteTokens(path, Line(a, "operator"), mode);
    auto st = TokenStore::Load(path);
    ASSERT_FALSE(st.ok()) << std::oct << mode;
    EXPECT_NE(st.status().message().find("chmod 600 " + path), std::string::npos) << st.status();
  }
  for (int mode : {0600, 0400, 0640}) {
    WriteTokens(path, Line(a, "operator"), mode);
    EXPECT_TRUE(TokenStore::Load(path).ok()) << std::oct << mode;
  }
  WriteTokens(path, Line(a, "operator"));
  auto store = LoadOrDie(path);
  ASSERT_NE(store, nullptr);
  ASSERT_EQ(::chmod(path.c_str(), 0666), 0);
  store->CheckNow();
  EXPECT_FALSE(store->Authenticate(a).has_value()) << "a world-writable file still grants";
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  store->CheckNow();
  EXPECT_TRUE(store->Authenticate(a).has_value());
}

TEST(AuthTest, ABadTokensFileIsRefusedWithTheLine) {
  gpuledger::testing::TempDir dir;
  const std::string path = dir.Sub("tokens");
  WriteTokens(path, "sha256:" + std::string(64, 'a') + " root\n");
  auto store = TokenStore::Load(path);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find(":1:"), std::string::npos);
  EXPECT_FALSE(TokenStore::Load(dir.Sub("missing")).ok());
}

TEST(QueryTest, DecodesAndRefusesMalformedEscapes) {
  std::string out;
  EXPECT_TRUE(UrlDecode("a%20b+c%2F", &out));
  EXPECT_EQ(out, "a b c/");
  EXPECT_FALSE(UrlDecode("%zz", &out));
  EXPECT_FALSE(UrlDecode("%4", &out));
  std::map<std::string, std::string> q;
  EXPECT_TRUE(ParseQuery("csp=csp-a&reason=OVERLAP&flag", &q));
  EXPECT_EQ(q["csp"], "csp-a");
  EXPECT_EQ(q["reason"], "OVERLAP");
  EXPECT_TRUE(q.contains("flag"));
  EXPECT_FALSE(ParseQuery("a=%", &q));
}

}  // namespace
}  // namespace gpuledger::api
