// What people read, in their language: Korean first, English on request (issue 17).
//
// Every string a page or a printed document shows is an English message id, translated through
// a gettext catalog (i18n/po/ko.po) by Boost.Locale: a language is a strings file. The catalog
// is compiled with msgfmt at build time and carried inside the binary, so the program needs no
// installed locale or file to speak Korean. Numbers, money, months and times are formatted
// here, exactly (integers in, text out: no float, no locale-dependent rounding).
//
// Only text for people goes through here. JSON and CSV stay as they are: ids and enum names for
// systems.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gpuledger/v1/common.pb.h"
#include "gpuledger/v1/settlement.pb.h"

namespace gpuledger::i18n {

enum class Lang { kKo, kEn };

// "ko" or "en": the `lang` attribute of a page and the value of `?lang=`.
const char* Code(Lang lang);
// "ko", "ko-KR", "en", "en-GB", any case; nullopt for anything else.
std::optional<Lang> ParseLang(std::string_view tag);
// The language an Accept-Language header asks for: the supported language with the highest
// q-value (ties: the earlier one), Korean when it names none (or is absent).
Lang FromAcceptLanguage(std::string_view header);

// The translation of `msgid` (English) in `lang`: msgid itself in English, or when the catalog
// has no translation (a lint test keeps the catalog complete).
std::string Tr(Lang lang, const char* msgid);
// Tr, then "{1}".."{9}" replaced by args[0]..args[8] (already formatted and, for HTML, escaped).
std::string Tr(Lang lang, const char* msgid, const std::vector<std::string>& args);

// Money: 1,078,586원 / 1,078,586 KRW; negative: -4,500원 / -4,500 KRW.
std::string Won(Lang lang, int64_t krw);
// Digits grouped by three: 1,078,586; -4,500.
std::string Grouped(int64_t n);
// GPU-hours from GPU-ms with thousands separators and three decimals: 59,520.000.
std::string GpuHours(int64_t gpu_ms);
// Basis points as a percentage: 9.00%.
std::string Percent(int64_t bp);
// A period "2026-03": 2026년 3월 / March 2026 (text that is not a period comes back as is).
std::string Month(Lang lang, std::string_view period);
// An instant in Korea Standard Time: 2026-04-01 09:00:00 KST (both languages).
std::string KstDateTime(int64_t epoch_ms);

// People-facing names of the enums that documents carry.
std::string ProgramName(Lang lang, gpuledger::v1::Program program);
std::string InstitutionTypeName(Lang lang, gpuledger::v1::InstitutionType type);
std::string LineKindName(Lang lang, gpuledger::v1::LineKind kind);
// GPU models keep their names (H100, H200, B200).
std::string GpuModelName(gpuledger::v1::GpuModel model);

}  // namespace gpuledger::i18n
