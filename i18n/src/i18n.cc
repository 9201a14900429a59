#include "i18n/i18n.h"

#include <boost/locale/gnu_gettext.hpp>
#include <boost/locale/message.hpp>
#include <locale>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

// The compiled Korean catalog (i18n/po/ko.po through msgfmt; i18n/embed.cmake).
extern const unsigned char kKoMo[];
extern const unsigned long kKoMoSize;

namespace gpuledger::i18n {

namespace {

constexpr char kDomain[] = "gpuledger";
constexpr char kEmbedded[] = "embedded";

// A locale whose messages facet reads the catalog compiled into the binary: Boost.Locale looks
// for <path>/<language>_<COUNTRY>/LC_MESSAGES/<domain>.mo, then <path>/<language>/..., and the
// callback hands it the embedded bytes instead of a file.
std::locale MakeKorean() {
  namespace gg = boost::locale::gnu_gettext;
  gg::messages_info info;
  info.language = "ko";
  info.country = "KR";
  info.encoding = "UTF-8";
  info.domains.push_back(gg::messages_info::domain(kDomain));
  info.paths.push_back(kEmbedded);
  const std::string file = absl::StrCat(kEmbedded, "/ko/LC_MESSAGES/", kDomain, ".mo");
  info.callback = [file](const std::string& name, const std::string&) -> std::vector<char> {
    if (name != file) return {};
    return std::vector<char>(kKoMo, kKoMo + kKoMoSize);
  };
  return std::locale(std::locale::classic(), gg::create_messages_facet<char>(info));
}

const std::locale& Korean() {
  static const std::locale* const korean = new std::locale(MakeKorean());
  return *korean;
}

}  // namespace

const char* Code(Lang lang) { return lang == Lang::kEn ? "en" : "ko"; }

std::optional<Lang> ParseLang(std::string_view tag) {
  const std::string t =
      absl::AsciiStrToLower(absl::StripAsciiWhitespace(absl::string_view(tag.data(), tag.size())));
  const std::string primary = t.substr(0, t.find_first_of("-_"));
  if (primary == "ko") return Lang::kKo;
  if (primary == "en") return Lang::kEn;
  return std::nullopt;
}

Lang FromAcceptLanguage(std::string_view header) {
  std::optional<Lang> best;
  double best_q = 0;
  for (absl::string_view item : absl::StrSplit(absl::string_view(header.data(), header.size()), ',',
                                               absl::SkipWhitespace())) {
    std::vector<absl::string_view> parts = absl::StrSplit(item, ';');
    double q = 1;
    for (size_t i = 1; i < parts.size(); ++i) {
      absl::string_view p = absl::StripAsciiWhitespace(parts[i]);
      if (p.size() > 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
        if (!absl::SimpleAtod(p.substr(2), &q)) q = 0;
      }
    }
    const std::optional<Lang> lang = ParseLang(std::string_view(parts[0].data(), parts[0].size()));
    if (lang && q > best_q) {
      best = lang;
      best_q = q;
    }
  }
  return best.value_or(Lang::kKo);
}

std::string Tr(Lang lang, const char* msgid) {
  if (lang == Lang::kEn) return msgid;
  return boost::locale::gettext(msgid, Korean());
}

std::string Tr(Lang lang, const char* msgid, const std::vector<std::string>& args) {
  const std::string pattern = Tr(lang, msgid);
  std::string out;
  out.reserve(pattern.size() + 32);
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '{' && i + 2 < pattern.size() && pattern[i + 1] >= '1' &&
        pattern[i + 1] <= '9' && pattern[i + 2] == '}') {
      const size_t n = static_cast<size_t>(pattern[i + 1] - '1');
      if (n < args.size()) out += args[n];
      i += 2;
    } else {
      out += pattern[i];
    }
  }
  return out;
}

std::string Grouped(int64_t n) {
  const uint64_t m = n < 0 ? 0 - static_cast<uint64_t>(n) : static_cast<uint64_t>(n);
  const std::string digits = absl::StrCat(m);
  std::string out = n < 0 ? "-" : "";
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string Won(Lang lang, int64_t krw) {
  return lang == Lang::kEn ? absl::StrCat(Grouped(krw), " KRW") : absl::StrCat(Grouped(krw), "원");
}

std::string GpuHours(int64_t gpu_ms) {
  // 3,600,000 GPU-ms to the GPU-hour; three decimals, truncated toward zero as in JSON
  // (base::FormatGpuHours): a display, never an amount.
  const uint64_t m = gpu_ms < 0 ? 0 - static_cast<uint64_t>(gpu_ms) : static_cast<uint64_t>(gpu_ms);
  const uint64_t hours = m / 3'600'000;
  const uint64_t thousandths = (m % 3'600'000) / 3'600;
  std::string whole = Grouped(static_cast<int64_t>(hours));
  return absl::StrFormat("%s%s.%03d", gpu_ms < 0 ? "-" : "", whole, thousandths);
}

std::string Percent(int64_t bp) {
  const uint64_t m = bp < 0 ? 0 - static_cast<uint64_t>(bp) : static_cast<uint64_t>(bp);
  return absl::StrFormat("%s%d.%02d%%", bp < 0 ? "-" : "", m / 100, m % 100);
}

std::string Month(Lang lang, std::string_view period) {
  int year = 0;
  int month = 0;
  const absl::string_view p(period.data(), period.size());
  if (p.size() != 7 || p[4] != '-' || !absl::SimpleAtoi(p.substr(0, 4), &year) ||
      !absl::SimpleAtoi(p.substr(5, 2), &month) || month < 1 || month > 12) {
    return std::string(period);
  }
  if (lang == Lang::kKo) return absl::StrFormat("%d년 %d월", year, month);
  static constexpr const char* kMonths[] = {"January",   "February", "March",    "April",
                                            "May",       "June",     "July",     "August",
                                            "September", "October",  "November", "December"};
  return absl::StrFormat("%s %d", kMonths[month - 1], year);
}

std::string KstDateTime(int64_t epoch_ms) {
  // Days from the civil date (Howard Hinnant's algorithm), in KST: UTC+9, no daylight saving.
  const int64_t kst_s = epoch_ms / 1000 + 9 * 3600 - (epoch_ms % 1000 < 0 ? 1 : 0);
  int64_t days = kst_s / 86400;
  int64_t secs = kst_s % 86400;
  if (secs < 0) {
    secs += 86400;
    days -= 1;
  }
  days += 719468;
  const int64_t era = (days >= 0 ? days : days - 146096) / 146097;
  const int64_t doe = days - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  const int64_t d = doy - (153 * mp + 2) / 5 + 1;
  const int64_t m = mp < 10 ? mp + 3 : mp - 9;
  const int64_t y = yoe + era * 400 + (m <= 2 ? 1 : 0);
  return absl::StrFormat("%04d-%02d-%02d %02d:%02d:%02d KST", y, m, d, secs / 3600, secs / 60 % 60,
                         secs % 60);
}

std::string ProgramName(Lang lang, gpuledger::v1::Program program) {
  switch (program) {
    case gpuledger::v1::GOV_ADVANCED:
      return Tr(lang, "State-owned advanced GPUs");
    case gpuledger::v1::LEASE_HPC:
      return Tr(lang, "Leased GPUs for industry (HPC)");
    case gpuledger::v1::LEASE_RESEARCH:
      return Tr(lang, "Leased GPUs for research");
    default:
      return Tr(lang, "Unknown programme");
  }
}

std::string InstitutionTypeName(Lang lang, gpuledger::v1::InstitutionType type) {
  switch (type) {
    case gpuledger::v1::ACADEMIA:
      return Tr(lang, "University");
    case gpuledger::v1::RESEARCH_INSTITUTE:
      return Tr(lang, "Research institute");
    case gpuledger::v1::SME:
      return Tr(lang, "Small or medium enterprise");
    case gpuledger::v1::STARTUP:
      return Tr(lang, "Startup");
    case gpuledger::v1::MID_SIZED_ENTERPRISE:
      return Tr(lang, "Mid-sized enterprise");
    case gpuledger::v1::LARGE_ENTERPRISE:
      return Tr(lang, "Large enterprise");
    case gpuledger::v1::PUBLIC_AGENCY:
      return Tr(lang, "Public agency");
    default:
      return Tr(lang, "Unknown type");
  }
}

std::string LineKindName(Lang lang, gpuledger::v1::LineKind kind) {
  switch (kind) {
    case gpuledger::v1::LINE_KIND_USAGE:
      return Tr(lang, "Usage");
    case gpuledger::v1::LINE_KIND_BEYOND_CAP:
      return Tr(lang, "Beyond the GPU-hour cap");
    case gpuledger::v1::LINE_KIND_OUTAGE_CREDIT:
      return Tr(lang, "Outage credit");
    case gpuledger::v1::LINE_KIND_HELD:
      return Tr(lang, "Held for a decision");
    case gpuledger::v1::LINE_KIND_REFUSED:
      return Tr(lang, "Refused beyond the cap");
    case gpuledger::v1::LINE_KIND_UNPRICED:
      return Tr(lang, "Not yet priced");
    default:
      return Tr(lang, "Unknown");
  }
}

std::string GpuModelName(gpuledger::v1::GpuModel model) {
  return gpuledger::v1::GpuModel_Name(model);
}

}  // namespace gpuledger::i18n
