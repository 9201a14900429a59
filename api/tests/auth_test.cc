#include "api/auth.h"

#include <gtest/gtest.h>

#include <fstream>
#include <thread>

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

TEST(AuthTest, TokensAreCheckedByHashAndReloadedWhenTheFileChanges) {
  gpuledger::testing::TempDir dir;
  const std::string path = dir.Sub("tokens");
  const std::string a = *NewToken();
  const std::string b = *NewToken();
  EXPECT_NE(a, b);
  EXPECT_EQ(a.size(), 64u);
  { std::ofstream(path) << "# comment\nsha256:" << HashToken(a) << " finance finance team\n"; }
  auto store = TokenStore::Load(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto who = (*store)->Authenticate(a);
  ASSERT_TRUE(who.has_value());
  EXPECT_EQ(who->role, Role::kFinance);
  EXPECT_EQ(who->name, "finance team");
  EXPECT_FALSE((*store)->Authenticate(b).has_value());
  EXPECT_FALSE((*store)->Authenticate("").has_value());
  EXPECT_FALSE((*store)->Authenticate(HashToken(a)).has_value());  // the hash is not a token
  // Rotate: b replaces a. The store notices within about a second.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  { std::ofstream(path) << "sha256:" << HashToken(b) << " csp:csp-beta\n"; }
  std::filesystem::last_write_time(
      path, std::filesystem::last_write_time(path) + std::chrono::seconds(2));
  EXPECT_TRUE((*store)->Authenticate(b).has_value());
  EXPECT_FALSE((*store)->Authenticate(a).has_value());
  // A broken file keeps the previous tokens.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  { std::ofstream(path) << "garbage line\n"; }
  std::filesystem::last_write_time(
      path, std::filesystem::last_write_time(path) + std::chrono::seconds(4));
  EXPECT_TRUE((*store)->Authenticate(b).has_value());
}

TEST(AuthTest, ABadTokensFileIsRefusedWithTheLine) {
  gpuledger::testing::TempDir dir;
  const std::string path = dir.Sub("tokens");
  { std::ofstream(path) << "sha256:" << std::string(64, 'a') << " root\n"; }
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
