#include "ingest/topics.h"

#include "absl/strings/str_cat.h"

namespace gpuledger::ingest {

absl::Status TopicNames::CheckPrefix(const std::string& prefix) {
  if (prefix.empty()) return absl::OkStatus();
  bool ok = prefix.size() >= 2 && prefix.size() <= 64 && prefix.back() == '.';
  for (size_t i = 0; ok && i + 1 < prefix.size(); ++i) {
    const char c = prefix[i];
    ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-';
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "topic prefix '", prefix,
        "' must be up to 63 letters, digits, '_' or '-' followed by one '.', e.g. 'staging.'"));
  }
  return absl::OkStatus();
}

std::string TopicNames::UsagePattern() const {
  std::string escaped;
  for (char c : UsagePrefix()) {
    if (c == '.') escaped += '\\';
    escaped += c;
  }
  return absl::StrCat("^", escaped, ".+");
}

std::optional<std::string> TopicNames::CspOfUsage(const std::string& topic) const {
  const std::string prefix = UsagePrefix();
  if (topic.size() <= prefix.size() || topic.compare(0, prefix.size(), prefix) != 0) {
    return std::nullopt;
  }
  return topic.substr(prefix.size());
}

}  // namespace gpuledger::ingest
