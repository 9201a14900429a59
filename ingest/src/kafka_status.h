// The one place where librdkafka error codes become absl::Status.
#pragma once

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafkacpp.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "ingest/kafka_config.h"

namespace gpuledger::ingest {

inline absl::Status FromKafka(RdKafka::ErrorCode code, absl::string_view what) {
  if (code == RdKafka::ERR_NO_ERROR) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": ", RdKafka::err2str(code));
  switch (code) {
    case RdKafka::ERR__TIMED_OUT:
    case RdKafka::ERR__TRANSPORT:
    case RdKafka::ERR__ALL_BROKERS_DOWN:
    case RdKafka::ERR_REQUEST_TIMED_OUT:
    case RdKafka::ERR__QUEUE_FULL:
      return absl::UnavailableError(msg);
    case RdKafka::ERR__INVALID_ARG:
    case RdKafka::ERR_INVALID_CONFIG:
    case RdKafka::ERR__UNKNOWN_TOPIC:
    case RdKafka::ERR_UNKNOWN_TOPIC_OR_PART:
      return absl::InvalidArgumentError(msg);
    case RdKafka::ERR_TOPIC_AUTHORIZATION_FAILED:
    case RdKafka::ERR_GROUP_AUTHORIZATION_FAILED:
    case RdKafka::ERR_CLUSTER_AUTHORIZATION_FAILED:
      return absl::PermissionDeniedError(absl::StrCat(
          msg, " (", rd_kafka_err2name(static_cast<rd_kafka_resp_err_t>(code)),
          "): refused by the broker's ACLs for this client's principal (see --kafka-config)"));
    case RdKafka::ERR_TOPIC_ALREADY_EXISTS:
      return absl::AlreadyExistsError(msg);
    default:
      return absl::InternalError(msg);
  }
}

// Sets `key` = `value` on `conf`, turning a refusal into an error that names both.
inline absl::Status SetConf(RdKafka::Conf* conf, const std::string& key, const std::string& value) {
  std::string err;
  if (conf->set(key, value, err) != RdKafka::Conf::CONF_OK) {
    return absl::InvalidArgumentError(absl::StrCat("Kafka setting ", key, "=", value, ": ", err));
  }
  return absl::OkStatus();
}

// Applies the properties of a --kafka-config file after gpuledger's own settings. They were
// checked when the file was read; an error here names the file and key, never a secret value.
inline absl::Status ApplyKafkaConfig(RdKafka::Conf* conf, const KafkaConfig& config) {
  for (const auto& [key, value] : config.properties) {
    std::string err;
    if (conf->set(key, value, err) != RdKafka::Conf::CONF_OK) {
      return absl::InvalidArgumentError(
          absl::StrCat(config.source, ": ", key, ": librdkafka refuses it",
                       IsSecretKafkaKey(key) ? std::string() : absl::StrCat(": ", err)));
    }
  }
  return absl::OkStatus();
}

}  // namespace gpuledger::ingest
