#include "base/registration_number.h"

namespace gpuledger::base {

int RegistrationCheckDigit(std::string_view first_nine) {
  // Weights 1,3,7,1,3,7,1,3,5; the ninth digit × 5 adds its tens as well (NTS rule).
  static constexpr int kWeights[9] = {1, 3, 7, 1, 3, 7, 1, 3, 5};
  int sum = 0;
  for (int i = 0; i < 9 && i < static_cast<int>(first_nine.size()); ++i) {
    sum += (first_nine[i] - '0') * kWeights[i];
  }
  if (first_nine.size() >= 9) sum += (first_nine[8] - '0') * 5 / 10;
  return (10 - sum % 10) % 10;
}

std::optional<std::string> ParseRegistrationNumber(std::string_view text) {
  std::string digits;
  if (text.size() == 12) {
    if (text[3] != '-' || text[6] != '-') return std::nullopt;
    digits.append(text.substr(0, 3)).append(text.substr(4, 2)).append(text.substr(7, 5));
  } else if (text.size() == 10) {
    digits = std::string(text);
  } else {
    return std::nullopt;
  }
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  if (RegistrationCheckDigit(digits) != digits[9] - '0') return std::nullopt;
  return digits;
}

std::string FormatRegistrationNumber(std::string_view digits) {
  if (digits.size() != 10) return std::string(digits);
  std::string out(digits.substr(0, 3));
  out.append("-").append(digits.substr(3, 2)).append("-").append(digits.substr(5, 5));
  return out;
}

}  // namespace gpuledger::base
