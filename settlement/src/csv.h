// CSV cells as every settlement CSV writes them (docs/FORMATS.md, "CSV"). Private to the
// settlement module.
#pragma once

#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace gpuledger::settlement::internal {

// A UTF-8 byte-order mark, first in every CSV: without it, Excel reads the file in the system's
// code page (CP949 on Korean Windows) and Hangul turns to mojibake.
inline constexpr char kUtf8Bom[] = "\xEF\xBB\xBF";

// A text cell. One that a spreadsheet would read as a formula (first character =, +, -, @, tab
// or CR: OWASP's CSV injection rule) gets a leading single quote, so that Excel and LibreOffice
// show it as text. Numbers are written directly, never through here, so a negative amount stays
// a number (docs/FORMATS.md).
inline std::string CsvField(const std::string& text) {
  std::string s = text;
  if (!s.empty() && std::string_view("=+-@\t\r").find(s.front()) != std::string_view::npos) {
    s.insert(0, 1, '\'');
  }
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  return absl::StrCat("\"", absl::StrReplaceAll(s, {{"\"", "\"\""}}), "\"");
}

// A period in a CSV cell: "2026-03" as 202603, the year-and-month (귀속연월) form that a
// spreadsheet reads as a plain number, where it would turn "2026-03" into a date; a day
// "2026-03-01" as 20260301 likewise.
inline std::string CsvPeriod(const std::string& period) {
  if (period.size() == 7 && period[4] == '-') {
    return absl::StrCat(period.substr(0, 4), period.substr(5));
  }
  if (period.size() == 10 && period[4] == '-' && period[7] == '-') {
    return absl::StrCat(period.substr(0, 4), period.substr(5, 2), period.substr(8));
  }
  return CsvField(period);
}

}  // namespace gpuledger::settlement::internal
