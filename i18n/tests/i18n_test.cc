#include "i18n/i18n.h"

#include <gtest/gtest.h>

#include <limits>

namespace gpuledger::i18n {
namespace {

namespace v1 = gpuledger::v1;

TEST(I18nTest, KoreanComesFromTheEmbeddedCatalogAndEnglishIsTheMessageId) {
  EXPECT_EQ(Tr(Lang::kKo, "Total (amount due)"), "합계금액 (청구 금액)");
  EXPECT_EQ(Tr(Lang::kEn, "Total (amount due)"), "Total (amount due)");
  // A message the catalog lacks comes back as written (the lint test keeps this from happening).
  EXPECT_EQ(Tr(Lang::kKo, "no such message in the catalog"), "no such message in the catalog");
  // Placeholders are filled where the translation puts them, in its own order.
  EXPECT_EQ(Tr(Lang::kKo, "Utilisation of hosted capacity: {1} ({2} of {3} GPU-hours)",
               {"50.00%", "10.000", "20.000"}),
            "위탁 용량 가동률: 50.00% (20.000 GPU시간 중 10.000 GPU시간)");
  EXPECT_EQ(Tr(Lang::kEn, "Co-pay invoice: {1}", {"한빛대학교"}), "Co-pay invoice: 한빛대학교");
  EXPECT_EQ(Tr(Lang::kEn, "Co-pay invoice: {1}", {}), "Co-pay invoice: ");
}

TEST(I18nTest, MoneyHoursAndPercentagesAreExactWithThousandsSeparators) {
  EXPECT_EQ(Won(Lang::kKo, 1'078'586), "1,078,586원");
  EXPECT_EQ(Won(Lang::kEn, 1'078'586), "1,078,586 KRW");
  EXPECT_EQ(Won(Lang::kKo, -4'500), "-4,500원");
  EXPECT_EQ(Won(Lang::kKo, 0), "0원");
  EXPECT_EQ(Grouped(999), "999");
  EXPECT_EQ(Grouped(1'000), "1,000");
  EXPECT_EQ(Grouped(-100'000), "-100,000");
  EXPECT_EQ(Grouped(std::numeric_limits<int64_t>::min()), "-9,223,372,036,854,775,808");
  EXPECT_EQ(GpuHours(214'272'000'000), "59,520.000");
  EXPECT_EQ(GpuHours(3'600'000), "1.000");
  EXPECT_EQ(GpuHours(3'599), "0.000");
  EXPECT_EQ(GpuHours(-5'400'000), "-1.500");
  EXPECT_EQ(Percent(900), "9.00%");
  EXPECT_EQ(Percent(1), "0.01%");
  EXPECT_EQ(Percent(10'000), "100.00%");
  EXPECT_EQ(Percent(-150), "-1.50%");
}

TEST(I18nTest, MonthsAndTimesAreKorean) {
  EXPECT_EQ(Month(Lang::kKo, "2026-03"), "2026년 3월");
  EXPECT_EQ(Month(Lang::kKo, "2026-12"), "2026년 12월");
  EXPECT_EQ(Month(Lang::kEn, "2026-03"), "March 2026");
  EXPECT_EQ(Month(Lang::kKo, "2026-13"), "2026-13");
  EXPECT_EQ(Month(Lang::kKo, ""), "");
  // 2026-03-31T15:00:00Z is midnight in Seoul.
  EXPECT_EQ(KstDateTime(1'774'969'200'000), "2026-04-01 00:00:00 KST");
  EXPECT_EQ(KstDateTime(1'774'969'199'999), "2026-03-31 23:59:59 KST");
  EXPECT_EQ(KstDateTime(0), "1970-01-01 09:00:00 KST");
  EXPECT_EQ(KstDateTime(-1), "1970-01-01 08:59:59 KST");
}

TEST(I18nTest, EnumsHavePeopleFacingNamesInBothLanguages) {
  for (int p = v1::Program_MIN; p <= v1::Program_MAX; ++p) {
    if (!v1::Program_IsValid(p) || p == v1::PROGRAM_UNSPECIFIED) continue;
    const auto program = static_cast<v1::Program>(p);
    EXPECT_NE(ProgramName(Lang::kKo, program), ProgramName(Lang::kEn, program));
    EXPECT_NE(ProgramName(Lang::kEn, program), v1::Program_Name(program));
    EXPECT_NE(ProgramName(Lang::kKo, program), Tr(Lang::kKo, "Unknown programme"));
  }
  for (int t = v1::InstitutionType_MIN; t <= v1::InstitutionType_MAX; ++t) {
    if (!v1::InstitutionType_IsValid(t) || t == v1::INSTITUTION_TYPE_UNSPECIFIED) continue;
    const auto type = static_cast<v1::InstitutionType>(t);
    EXPECT_NE(InstitutionTypeName(Lang::kKo, type), Tr(Lang::kKo, "Unknown type")) << t;
    EXPECT_NE(InstitutionTypeName(Lang::kKo, type), InstitutionTypeName(Lang::kEn, type)) << t;
  }
  for (int k = v1::LineKind_MIN; k <= v1::LineKind_MAX; ++k) {
    if (!v1::LineKind_IsValid(k)) continue;
    const auto kind = static_cast<v1::LineKind>(k);
    EXPECT_NE(LineKindName(Lang::kKo, kind), Tr(Lang::kKo, "Unknown")) << k;
  }
  EXPECT_EQ(InstitutionTypeName(Lang::kKo, v1::MID_SIZED_ENTERPRISE), "중견기업");
  EXPECT_EQ(ProgramName(Lang::kKo, v1::GOV_ADVANCED), "정부 보유 첨단 GPU 지원");
}

TEST(I18nTest, TheLanguageIsKoreanUnlessEnglishIsAskedFor) {
  EXPECT_EQ(FromAcceptLanguage(""), Lang::kKo);
  EXPECT_EQ(FromAcceptLanguage("fr-FR,de;q=0.8"), Lang::kKo);
  EXPECT_EQ(FromAcceptLanguage("en-US,en;q=0.9"), Lang::kEn);
  EXPECT_EQ(FromAcceptLanguage("ko-KR,ko;q=0.9,en-US;q=0.8"), Lang::kKo);
  EXPECT_EQ(FromAcceptLanguage("en;q=0.5, ko;q=0.7"), Lang::kKo);
  EXPECT_EQ(FromAcceptLanguage("ko;q=0.5, EN-gb;q=0.7"), Lang::kEn);
  EXPECT_EQ(FromAcceptLanguage("en;q=0"), Lang::kKo);
  EXPECT_EQ(FromAcceptLanguage("en;q=abc"), Lang::kKo);
  EXPECT_EQ(FromAcceptLanguage(",,;;=,q=1"), Lang::kKo);
  EXPECT_EQ(ParseLang("KO"), Lang::kKo);
  EXPECT_EQ(ParseLang("en_US"), Lang::kEn);
  EXPECT_EQ(ParseLang("eng"), std::nullopt);
  EXPECT_EQ(ParseLang(""), std::nullopt);
  EXPECT_STREQ(Code(Lang::kKo), "ko");
  EXPECT_STREQ(Code(Lang::kEn), "en");
}

}  // namespace
}  // namespace gpuledger::i18n
