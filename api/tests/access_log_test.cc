// The access log's lines (access_log.h): valid JSON whatever the request held, and written out
// whole by Flush().
#include "access_log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace gpuledger::api {
namespace {

using nlohmann::json;

TEST(AccessLogTest, ALineIsOneJsonObjectWithEveryField) {
  const auto at =
      std::chrono::system_clock::time_point(std::chrono::milliseconds(1'772'323'200'045));
  const std::string line = AccessLine({.at = at,
                                       .id = "abc-1",
                                       .client = "127.0.0.1",
                                       .principal = "재무팀 \"finance\"",
                                       .method = "GET",
                                       .path = "/v1/periods/2026-03/invoices/inst-0002",
                                       .route = "/v1/periods/{period}/invoices/{institution}",
                                       .status = 200,
                                       .bytes = 1714,
                                       .micros = 1234});
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const json j = json::parse(line);
  EXPECT_EQ(j["ts"], "2026-03-01T00:00:00.045Z");
  EXPECT_EQ(j["id"], "abc-1");
  EXPECT_EQ(j["client"], "127.0.0.1");
  EXPECT_EQ(j["principal"], "재무팀 \"finance\"");
  EXPECT_EQ(j["method"], "GET");
  EXPECT_EQ(j["path"], "/v1/periods/2026-03/invoices/inst-0002");
  EXPECT_EQ(j["status"], 200);
  EXPECT_EQ(j["bytes"], 1714);
  EXPECT_DOUBLE_EQ(j["ms"].get<double>(), 1.234);
  EXPECT_DOUBLE_EQ(json::parse(AccessLine({.micros = 7}))["ms"].get<double>(), 0.007);
}

TEST(AccessLogTest, HostileBytesAreEscapedOrReplaced) {
  const std::string hostile = std::string("a\"b\\c\n\r\t\x01\x7f") + "\xff\xc3(" +
                              "\xed\xa0\x80" /* a surrogate */ + "\xf0\x9f\x98" /* cut short */ +
                              "한" + std::string(1, '\0') + "z";
  std::string out;
  AppendJsonString(hostile, &out);
  const json j = json::parse(out);  // throws if not valid JSON (or not valid UTF-8)
  const std::string back = j.get<std::string>();
  EXPECT_EQ(back.substr(0, 11), std::string("a\"b\\c\n\r\t\x01\x7f", 10) + "\xef");
  EXPECT_NE(back.find("한"), std::string::npos);
  EXPECT_EQ(back.back(), 'z');
  // A path longer than 512 bytes is cut.
  const std::string path(2000, 'p');
  EXPECT_EQ(json::parse(AccessLine({.path = path}))["path"].get<std::string>().size(), 512u);
}

TEST(AccessLogTest, LinesReachTheFileWholeOnFlush) {
  char dir[] = "/tmp/gpuledger-access-log.XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/access.jsonl";
  {
    auto log = LineLog::Open(path);
    ASSERT_TRUE(log.ok()) << log.status();
    (*log)->Append("{\"n\":1}");
    (*log)->Append("{\"n\":2}");
    std::ifstream before(path);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(before), {}), "");  // not yet
    (*log)->Flush();
    std::ifstream after(path);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(after), {}), "{\"n\":1}\n{\"n\":2}\n");
    for (int i = 0; i < 2000; ++i) (*log)->Append(std::string(100, 'x'));  // past 64 KiB: written
  }  // and the rest on destruction
  std::ifstream all(path);
  std::string line;
  int lines = 0;
  while (std::getline(all, line)) ++lines;
  EXPECT_EQ(lines, 2002);
  EXPECT_FALSE(LineLog::Open(std::string(dir) + "/no/such/dir/x").ok());
  std::remove(path.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace gpuledger::api
