// librdkafka's own logs, routed to spdlog, for every Kafka client of the ingest library.
#pragma once

#include <librdkafka/rdkafkacpp.h>
#include <spdlog/spdlog.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace gpuledger::ingest {

// Routes librdkafka's own logs to spdlog: transient conditions (a coordinator still loading,
// a retried request) at debug, errors at warn. Runs on librdkafka's polling thread (ours).
// Also keeps the first authentication failure: librdkafka retries it forever, but wrong
// credentials do not heal, so a publication stops at once.
class LogForwarder : public RdKafka::EventCb {
 public:
  void event_cb(RdKafka::Event& event) override {
    if (event.type() == RdKafka::Event::EVENT_ERROR) {
      spdlog::warn("kafka: {} ({})", event.str(), RdKafka::err2str(event.err()));
      if (event.err() == RdKafka::ERR__AUTHENTICATION && auth_failure.ok()) {
        auth_failure = absl::UnauthenticatedError(absl::StrCat(
            "the broker refused this client's credentials: ", event.str(),
            " (check sasl.username and sasl.password, or the TLS settings, in --kafka-config)"));
      }
    } else if (event.type() == RdKafka::Event::EVENT_LOG) {
      if (event.severity() <= RdKafka::Event::EVENT_SEVERITY_ERROR) {
        spdlog::warn("kafka: {} {}", event.fac(), event.str());
      } else {
        spdlog::debug("kafka: {} {}", event.fac(), event.str());
      }
    }
  }
  absl::Status auth_failure;
};

}  // namespace gpuledger::ingest
