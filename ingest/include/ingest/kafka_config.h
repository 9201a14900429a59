// Extra librdkafka client properties for every Kafka client a command makes: how it
// authenticates (SASL, TLS) and any tuning. Read from a `key=value` file (`--kafka-config`), so
// that secrets stay off the command line; see docs/OPERATIONS.md, "Kafka client settings".
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gpuledger::ingest {

// Most properties one file may hold; a longer file is refused (it is not a config file).
inline constexpr size_t kKafkaConfigMaxProperties = 256;
// Largest file accepted, bytes.
inline constexpr size_t kKafkaConfigMaxBytes = 1 << 20;

struct KafkaConfig {
  // Properties in file order, each applied after gpuledger's own settings of a client (so a
  // tuning key such as compression.type overrides gpuledger's default). Keys gpuledger relies on
  // for correctness are refused when the file is read (KafkaConfigReservedKeys()).
  std::vector<std::pair<std::string, std::string>> properties;
  // Where they came from, for messages: the file's path. Default: empty (no file).
  std::string source;

  bool empty() const { return properties.empty(); }
  // "key=value, ..." with every secret's value replaced by "(secret)": safe to log.
  std::string Describe() const;
};

// Whether `key` holds a secret (a password, a private key, an OAuth client secret, a JAAS
// config): its value is never logged or put into an error message.
bool IsSecretKafkaKey(absl::string_view key);

// Keys the file may not set: gpuledger sets them (with --brokers, --group, ...) and its delivery
// and offset guarantees depend on their values.
const std::vector<std::string>& KafkaConfigReservedKeys();

// Parses `text`: one `key=value` per line; blank lines and lines starting with '#' or '!' are
// ignored; whitespace around the key and the value is trimmed; no escapes or continuation lines.
// Each key must be a librdkafka client property librdkafka accepts with that value, appear once,
// and not be reserved. Errors name `source`, the line number and the key, never a secret value.
absl::StatusOr<KafkaConfig> ParseKafkaConfig(absl::string_view text, const std::string& source);

// Reads and parses the file at `path`. Logs a warning if it holds a secret and other users may
// read it.
absl::StatusOr<KafkaConfig> ReadKafkaConfigFile(const std::string& path);

}  // namespace gpuledger::ingest
