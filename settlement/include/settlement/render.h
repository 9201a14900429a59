// Settlement documents for systems (canonical JSON, CSV) and people (a table, printable HTML).
// The JSON schemas are in docs/FORMATS.md. The same document always renders to the same bytes:
// keys in a fixed order, integers only for money and quantities, 2-space indent, a trailing
// newline. A document's digest is the SHA-256 of its canonical JSON.
#pragma once

#include <string>

#include "gpuledger/v1/settlement.pb.h"
#include "i18n/i18n.h"

namespace gpuledger::settlement {

// One document, canonical JSON ("gpuledger.invoice/1", "gpuledger.csp_statement/2",
// "gpuledger.program_summary/1").
std::string InvoiceJson(const gpuledger::v1::Invoice& invoice);
std::string StatementJson(const gpuledger::v1::CspStatement& statement);
std::string ProgramJson(const gpuledger::v1::ProgramSummary& summary);

// The period's bills as electronic tax invoice data ("gpuledger.etax/1", docs/FORMATS.md maps
// each field to the National Tax Service's standard XML): one entry per bill with both parties,
// supply value, tax, total and items. Numbers are those of a closed period (empty on drafts).
std::string EtaxJson(const gpuledger::v1::PeriodDocuments& docs);

// Every document of a period with its status ("gpuledger.period/1").
std::string PeriodJson(const gpuledger::v1::PeriodDocuments& docs);

// A fixed-width summary for a terminal: invoices, CSP statements, programme summaries.
std::string RenderTable(const gpuledger::v1::PeriodDocuments& docs);

// RFC 4180 CSV with a header row: "invoices" (one row per invoice line, adjustments included),
// "statements" (one row per statement row, with a section column) or "programs".
std::string RenderCsv(const gpuledger::v1::PeriodDocuments& docs, const std::string& which);

// A self-contained printable HTML page (A4, no scripts, no external resources) with every
// document in `docs`, each starting on a new page, rendered from the Mustache templates in
// settlement/templates/ (markup only: no words), for people: in Korean unless asked for
// English (words from i18n/po/ko.po; 1,078,586원, 2026년 3월, KST; people's names for
// programmes, institution types and line kinds). The documents' digests are of their JSON, so
// the language changes no digest.
std::string RenderHtml(const gpuledger::v1::PeriodDocuments& docs,
                       i18n::Lang lang = i18n::Lang::kKo);

// The pages' and documents' font stack: Korean faces first (Hangul names and, in time, Korean
// text; ops/setup.sh installs NanumGothic on the server), each with Latin glyphs of its own.
inline constexpr char kHtmlFontFamily[] =
    "'Noto Sans KR','Noto Sans CJK KR','NanumGothic','Malgun Gothic','Apple SD Gothic Neo',"
    "'DejaVu Sans',sans-serif";

// Text made safe inside HTML elements and quoted attributes (& < > " ').
std::string HtmlEscape(const std::string& text);

// "usage", "beyond_cap", "held", "refused", "unpriced", "outage_credit".
const char* LineKindName(gpuledger::v1::LineKind kind);

}  // namespace gpuledger::settlement
