// Where the test broker is: the `kafka` CTest fixture writes KAFKA_BOOTSTRAP=host:port to the
// file named by $GPULEDGER_KAFKA_ENV. A missing broker is a failure, never a skip.
#pragma once

#include <cstdlib>
#include <fstream>
#include <random>
#include <string>

namespace gpuledger::testing {

// The bootstrap address, or "" with `*why` saying what is missing.
inline std::string KafkaBootstrap(std::string* why) {
  const char* env_file = std::getenv("GPULEDGER_KAFKA_ENV");
  if (env_file == nullptr) {
    *why =
        "GPULEDGER_KAFKA_ENV is not set: run integration tests through ctest (which starts "
        "the broker fixture) or ops/test.sh";
    return "";
  }
  std::ifstream in(env_file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("KAFKA_BOOTSTRAP=", 0) == 0) return line.substr(16);
  }
  *why = std::string("no KAFKA_BOOTSTRAP in ") + env_file +
         ": the kafka_broker_start fixture did not start a broker (see its output)";
  return "";
}

// The seed of a randomized test: $GPULEDGER_TEST_SEED if set (to replay a failure), else
// random. Tests print it.
inline uint64_t TestSeed() {
  if (const char* s = std::getenv("GPULEDGER_TEST_SEED"); s != nullptr && *s != '\0') {
    return std::strtoull(s, nullptr, 10);
  }
  return std::random_device{}();
}

}  // namespace gpuledger::testing
