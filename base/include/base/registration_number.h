// Korean business registration numbers (사업자등록번호): ten digits, "123-45-67890", the last a
// check digit the National Tax Service computes from the first nine.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace gpuledger::base {

// The ten digits of `text` ("1234567890" or "123-45-67890", nothing else) if its check digit
// is right; nullopt otherwise.
std::optional<std::string> ParseRegistrationNumber(std::string_view text);

// The check digit of nine digits `first_nine` (for tests and the sample registry).
int RegistrationCheckDigit(std::string_view first_nine);

// "123-45-67890" from ten digits (other input is returned as given).
std::string FormatRegistrationNumber(std::string_view digits);

}  // namespace gpuledger::base
