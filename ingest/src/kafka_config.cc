#include "ingest/kafka_config.h"

#include <librdkafka/rdkafkacpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"

namespace gpuledger::ingest {

namespace {

constexpr char kSecretShown[] = "(secret)";

// librdkafka's error about `key`, with a secret value (which it may quote) blanked out.
std::string Redacted(std::string error, const std::string& key, const std::string& value) {
  if (IsSecretKafkaKey(key) && !value.empty()) {
    error = absl::StrReplaceAll(error, {{value, kSecretShown}});
  }
  return error;
}

}  // namespace

bool IsSecretKafkaKey(absl::string_view key) {
  const std::string k = absl::AsciiStrToLower(key);
  return absl::StrContains(k, "password") || absl::StrContains(k, "secret") ||
         absl::StrContains(k, "jaas") || k == "ssl.key.pem" || k == "ssl_key" ||
         k == "sasl.oauthbearer.config";
}

const std::vector<std::string>& KafkaConfigReservedKeys() {
  static const std::vector<std::string> keys = {
      "bootstrap.servers",     // --brokers
      "metadata.broker.list",  // (its alias)
      "client.id",             // names each client in the broker's logs and quotas
      "group.id",              // --group
      "group.instance.id",     // --instance-id
      "session.timeout.ms",    // ingest's failover timing
      "enable.auto.commit",    // the ledger, not Kafka, stores ingest's offsets
      "auto.commit.enable",    // (its alias)
      "enable.auto.offset.store",
      "auto.offset.reset",     // a partition without stored offset is read from its start
      "enable.partition.eof",  // --until-end
      "isolation.level",
      "enable.idempotence",     // no duplicates or reordering on retries
      "acks",                   // every event on every in-sync replica
      "request.required.acks",  // (its alias)
      "transactional.id",
      "partitioner",  // one allocation's events on one partition, in order
  };
  return keys;
}

std::string KafkaConfig::Describe() const {
  std::string out;
  for (const auto& [key, value] : properties) {
    absl::StrAppend(&out, out.empty() ? "" : ", ", key, "=",
                    IsSecretKafkaKey(key) ? kSecretShown : value);
  }
  return out;
}

absl::StatusOr<KafkaConfig> ParseKafkaConfig(absl::string_view text, const std::string& source) {
  KafkaConfig config;
  config.source = source;
  // Each property is tried on a scratch configuration: librdkafka itself says which keys and
  // values it accepts, so an error names the line instead of surfacing at client creation.
  std::unique_ptr<RdKafka::Conf> probe(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
  std::map<std::string, int> seen;  // key → line
  const auto& reserved = KafkaConfigReservedKeys();
  int number = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++number;
    const absl::string_view line = absl::StripAsciiWhitespace(raw);
    if (line.empty() || line.front() == '#' || line.front() == '!') continue;
    const auto where = [&](absl::string_view key) {
      return absl::StrCat(source, ":", number, key.empty() ? "" : ": ", key);
    };
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos) {
      // The line may be a secret pasted on its own: do not echo it.
      return absl::InvalidArgumentError(
          absl::StrCat(where(""), ": expected key=value (or a # comment)"));
    }
    const std::string key(absl::StripAsciiWhitespace(line.substr(0, eq)));
    const std::string value(absl::StripAsciiWhitespace(line.substr(eq + 1)));
    if (key.empty()) return absl::InvalidArgumentError(absl::StrCat(where(""), ": empty key"));
    if (auto [it, inserted] = seen.emplace(key, number); !inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(key), ": set again (first on line ", it->second, ")"));
    }
    if (std::find(reserved.begin(), reserved.end(), key) != reserved.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(key),
                       ": gpuledger sets this itself (command-line options such as --brokers "
                       "and --group cover what may be chosen); remove it from the file"));
    }
    if (config.properties.size() >= kKafkaConfigMaxProperties) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(""), ": more than ", kKafkaConfigMaxProperties, " properties"));
    }
    std::string err;
    if (probe->set(key, value, err) != RdKafka::Conf::CONF_OK) {
      return absl::InvalidArgumentError(
          absl::StrCat(where(key), ": librdkafka refuses it: ", Redacted(err, key, value)));
    }
    config.properties.emplace_back(key, value);
  }
  // Some values are only checked together, when a client is made (an unknown SASL mechanism, a
  // missing certificate): make one, with no brokers to connect to.
  std::string err;
  if (probe->set("log_level", "0", err) == RdKafka::Conf::CONF_OK && !config.empty()) {
    std::unique_ptr<RdKafka::Producer> client(RdKafka::Producer::create(probe.get(), err));
    if (!client) {
      std::string why = err;
      for (const auto& [key, value] : config.properties) why = Redacted(why, key, value);
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": librdkafka refuses these settings together: ", why));
    }
  }
  return config;
}

absl::StatusOr<KafkaConfig> ReadKafkaConfigFile(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) {
    return absl::NotFoundError(absl::StrCat("Kafka config ", path, ": ", ec.message()));
  }
  if (size > kKafkaConfigMaxBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("Kafka config ", path, ": larger than ", kKafkaConfigMaxBytes, " bytes"));
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return absl::UnavailableError(absl::StrCat("Kafka config ", path, ": cannot read it"));
  absl::StatusOr<KafkaConfig> config = ParseKafkaConfig(text.str(), path);
  if (!config.ok()) return config;
  const auto others = std::filesystem::perms::others_read;
  const bool secret = std::any_of(config->properties.begin(), config->properties.end(),
                                  [](const auto& p) { return IsSecretKafkaKey(p.first); });
  if (secret &&
      (std::filesystem::status(path, ec).permissions() & others) != std::filesystem::perms::none) {
    spdlog::warn(
        "Kafka config {} holds a secret and every user of this machine may read it "
        "(chmod o-r {})",
        path, path);
  }
  return config;
}

}  // namespace gpuledger::ingest
