#include <gtest/gtest.h>

#include <string>

#include "api/server.h"

namespace gpuledger::api {
namespace {

TEST(ParseRequestTest, DecodesTargetQueryAndHeadersAsTheServerDoes) {
  const ParsedRequest p = ParseRequest(
      "GET /v1/ledger/entries?from_seq=3&x=a%20b+c HTTP/1.1\r\nHost: h\r\n"
      "Authorization: Bearer t\r\nCookie: gpuledger_token=u\r\nAccept: text/csv\r\n\r\n",
      ServerOptions{}, true);
  ASSERT_TRUE(p.complete);
  ASSERT_TRUE(p.request.has_value());
  EXPECT_EQ(p.request->method, "GET");
  EXPECT_EQ(p.request->path, "/v1/ledger/entries");
  EXPECT_EQ(p.request->query.at("from_seq"), "3");
  EXPECT_EQ(p.request->query.at("x"), "a b c");
  EXPECT_EQ(p.request->authorization, "Bearer t");
  EXPECT_EQ(p.request->cookie, "gpuledger_token=u");
  EXPECT_EQ(p.request->accept, "text/csv");
  EXPECT_TRUE(p.request->tls);
}

TEST(ParseRequestTest, ReadsABodyUpToTheLimit) {
  const ParsedRequest p = ParseRequest(
      "POST /ui/login HTTP/1.1\r\nContent-Length: 7\r\n\r\ntoken=x", ServerOptions{}, false);
  ASSERT_TRUE(p.request.has_value());
  EXPECT_EQ(p.request->body, "token=x");
  ServerOptions small;
  small.max_body_bytes = 4;
  EXPECT_EQ(
      ParseRequest("POST /ui/login HTTP/1.1\r\nContent-Length: 7\r\n\r\ntoken=x", small, false)
          .error.status,
      413);
}

TEST(ParseRequestTest, AnswersWhatTheServerAnswersToBadRequests) {
  const ServerOptions options;
  EXPECT_EQ(ParseRequest("GET /v1/x?a=%zz HTTP/1.1\r\n\r\n", options, false).error.status, 400);
  EXPECT_EQ(ParseRequest("NOT HTTP\r\n\r\n", options, false).error.status, 400);
  const std::string huge = "GET / HTTP/1.1\r\nX: " + std::string(9'000, 'a') + "\r\n\r\n";
  EXPECT_EQ(ParseRequest(huge, options, false).error.status, 431);
}

TEST(ParseRequestTest, AnIncompleteRequestWaitsForMore) {
  const ServerOptions options;
  EXPECT_FALSE(ParseRequest("", options, false).complete);
  EXPECT_FALSE(ParseRequest("GET /v1/periods HTTP/1.1\r\nHost:", options, false).complete);
  EXPECT_FALSE(
      ParseRequest("POST /ui/login HTTP/1.1\r\nContent-Length: 7\r\n\r\ntok", options, false)
          .complete);
}

}  // namespace
}  // namespace gpuledger::api
