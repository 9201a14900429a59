#include "ingest/kafka_config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "testsupport/temp_dir.h"

namespace gpuledger::ingest {
namespace {

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(KafkaConfigTest, ReadsKeyValueLinesInOrderSkippingCommentsAndBlanks) {
  auto config = ParseKafkaConfig(
      "# credentials of csp-a\n"
      "security.protocol = SASL_PLAINTEXT\r\n"
      "\n"
      "! a Java-style comment\n"
      "  sasl.mechanism=PLAIN\n"
      "sasl.username=csp-a\n"
      "sasl.password=p=a ss\n",
      "csp-a.properties");
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->properties.size(), 4u);
  EXPECT_EQ(config->properties[0],
            std::make_pair(std::string("security.protocol"), std::string("SASL_PLAINTEXT")));
  EXPECT_EQ(config->properties[1].first, "sasl.mechanism");
  EXPECT_EQ(config->properties[3].second, "p=a ss");  // the first '=' splits
  EXPECT_EQ(config->source, "csp-a.properties");
}

TEST(KafkaConfigTest, DescribeNeverShowsASecret) {
  auto config = ParseKafkaConfig(
      "sasl.username=csp-a\nsasl.password=hunter2\nssl.key.password=k3y\n"
      "ssl.keystore.password=s3cret\n",
      "f");
  ASSERT_TRUE(config.ok()) << config.status();
  const std::string shown = config->Describe();
  EXPECT_PRED2(Contains, shown, "sasl.username=csp-a");
  EXPECT_PRED2(Contains, shown, "sasl.password=(secret)");
  for (const char* secret : {"hunter2", "k3y", "s3cret"}) EXPECT_FALSE(Contains(shown, secret));
  EXPECT_TRUE(IsSecretKafkaKey("sasl.password"));
  EXPECT_TRUE(IsSecretKafkaKey("ssl.keystore.password"));
  EXPECT_TRUE(IsSecretKafkaKey("ssl.key.pem"));
  EXPECT_FALSE(IsSecretKafkaKey("sasl.username"));
}

TEST(KafkaConfigTest, ErrorsNameTheFileLineAndKey) {
  struct Case {
    const char* text;
    const char* expected;
  };
  const Case cases[] = {
      {"sasl.mechanism=PLAIN\nno equals sign here\n", "f.properties:2: expected key=value"},
      {"=value\n", "f.properties:1: empty key"},
      {"sasl.username=a\n\nsasl.username=b\n",
       "f.properties:3: sasl.username: set again (first "
       "on line 1)"},
      {"no.such.property=1\n", "f.properties:1: no.such.property: librdkafka refuses it"},
      {"security.protocol=CARRIER_PIGEON\n", "f.properties:1: security.protocol: librdkafka"},
      {"bootstrap.servers=elsewhere:9092\n", "f.properties:1: bootstrap.servers: gpuledger sets"},
      {"# x\nenable.idempotence=false\n", "f.properties:2: enable.idempotence: gpuledger sets"},
      {"group.id=other\n", "group.id: gpuledger sets"},
      {"security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAN\n",
       "f.properties: librdkafka refuses these settings together"},
  };
  for (const Case& c : cases) {
    auto config = ParseKafkaConfig(c.text, "f.properties");
    ASSERT_FALSE(config.ok()) << c.text;
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_PRED2(Contains, std::string(config.status().message()), c.expected) << c.text;
  }
}

TEST(KafkaConfigTest, ALineWithoutEqualsSignIsNotEchoed) {
  // A password pasted on a line of its own must not end up in a log.
  auto config = ParseKafkaConfig("sasl.password\nhunter2\n", "f");
  ASSERT_FALSE(config.ok());
  EXPECT_FALSE(Contains(std::string(config.status().message()), "hunter2"));
}

TEST(KafkaConfigTest, RefusedSecretValueIsNotEchoed) {
  // A secret key with a value librdkafka refuses: the error names the key, not the value.
  auto config = ParseKafkaConfig("ssl.key.pem=hunter2\nsasl.password=x\n", "f");
  if (!config.ok()) {
    EXPECT_FALSE(Contains(std::string(config.status().message()), "hunter2"));
  }
  EXPECT_FALSE(Contains(config.ok() ? config->Describe() : "", "hunter2"));
}

TEST(KafkaConfigTest, ReadsAFileAndReportsAMissingOne) {
  testing::TempDir dir;
  const std::string path = (std::filesystem::path(dir.path()) / "k.properties").string();
  {
    std::ofstream out(path);
    out << "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.username=u\nsasl.password="
           "p\n";
  }
  auto config = ReadKafkaConfigFile(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->properties.size(), 4u);
  EXPECT_EQ(config->source, path);
  auto missing = ReadKafkaConfigFile(path + ".absent");
  ASSERT_FALSE(missing.ok());
  EXPECT_PRED2(Contains, std::string(missing.status().message()), path + ".absent");
}

TEST(KafkaConfigTest, EmptyTextIsAnEmptyConfig) {
  auto config = ParseKafkaConfig("# nothing\n\n", "f");
  ASSERT_TRUE(config.ok());
  EXPECT_TRUE(config->empty());
  EXPECT_EQ(config->Describe(), "");
}

}  // namespace
}  // namespace gpuledger::ingest
