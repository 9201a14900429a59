#include "settlement/render.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"

namespace gpuledger::settlement {

namespace v1 = gpuledger::v1;
using base::FormatGpuHours;
using base::FormatWon;

namespace {

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  return absl::StrCat("\"", absl::StrReplaceAll(s, {{"\"", "\"\""}}), "\"");
}

}  // namespace

std::string RenderTable(const SettlementRun& run) {
  std::string out = absl::StrFormat("Co-pay invoices for %s (KST), ledger entries 1..%d\n\n",
                                    run.period.ToString(), run.covered_seq);
  absl::StrAppendFormat(&out, "%-18s %-30s %5s %14s %16s %14s %16s %14s\n", "institution", "name",
                        "lines", "GPU-hours", "list KRW", "co-pay KRW", "subsidy KRW", "due KRW");
  for (const Invoice& inv : run.invoices) {
    absl::StrAppendFormat(&out, "%-18s %-30s %5d %14s %16s %14s %16s %14s\n", inv.institution_id,
                          inv.institution_name.substr(0, 30), inv.lines.size(),
                          FormatGpuHours(inv.gpu_ms), FormatWon(inv.list), FormatWon(inv.copay),
                          FormatWon(inv.subsidy), FormatWon(inv.amount_due));
  }
  absl::StrAppendFormat(&out, "%-18s %-30s %5s %14s %16s %14s %16s\n", "TOTAL",
                        absl::StrCat(run.invoices.size(), " invoices"), "",
                        FormatGpuHours(run.gpu_ms), FormatWon(run.list), FormatWon(run.copay),
                        FormatWon(run.subsidy));
  if (!run.unpriced.empty()) {
    absl::StrAppendFormat(&out, "\n%d usage event(s) could not be priced:\n", run.unpriced.size());
    for (const Unpriced& u : run.unpriced) {
      absl::StrAppendFormat(&out, "  seq %d %s/%s: %s\n", u.seq, u.source_id, u.event_id, u.why);
    }
  }
  return out;
}

std::string RenderJson(const SettlementRun& run) {
  using json = nlohmann::ordered_json;
  json doc;
  doc["format"] = "gpuledger.invoices/1";
  doc["period"] = run.period.ToString();
  doc["covered_seq"] = run.covered_seq;
  json invoices = json::array();
  for (const Invoice& inv : run.invoices) {
    json lines = json::array();
    for (const InvoiceLine& l : inv.lines) {
      lines.push_back({{"allocation_id", l.allocation_id},
                       {"kind", LineKindName(l.kind)},
                       {"program", v1::Program_Name(l.program)},
                       {"gpu_model", v1::GpuModel_Name(l.gpu_model)},
                       {"institution_type", v1::InstitutionType_Name(l.institution_type)},
                       {"krw_per_gpu_hour", l.krw_per_gpu_hour.won},
                       {"copay_bp", l.copay_bp},
                       {"gpu_ms", l.gpu_ms.ms},
                       {"gpu_hours", FormatGpuHours(l.gpu_ms)},
                       {"list_krw", l.list.won},
                       {"copay_krw", l.copay.won},
                       {"subsidy_krw", l.subsidy.won}});
    }
    invoices.push_back({{"institution_id", inv.institution_id},
                        {"institution_name", inv.institution_name},
                        {"lines", lines},
                        {"gpu_ms", inv.gpu_ms.ms},
                        {"gpu_hours", FormatGpuHours(inv.gpu_ms)},
                        {"list_krw", inv.list.won},
                        {"copay_krw", inv.copay.won},
                        {"subsidy_krw", inv.subsidy.won},
                        {"vat_bp", inv.vat_bp},
                        {"vat_krw", inv.vat.won},
                        {"amount_due_krw", inv.amount_due.won}});
  }
  doc["invoices"] = invoices;
  doc["totals"] = {{"gpu_ms", run.gpu_ms.ms},
                   {"gpu_hours", FormatGpuHours(run.gpu_ms)},
                   {"list_krw", run.list.won},
                   {"copay_krw", run.copay.won},
                   {"subsidy_krw", run.subsidy.won}};
  json unpriced = json::array();
  for (const Unpriced& u : run.unpriced) {
    unpriced.push_back(
        {{"seq", u.seq}, {"source_id", u.source_id}, {"event_id", u.event_id}, {"why", u.why}});
  }
  doc["unpriced"] = unpriced;
  return doc.dump(2) + "\n";
}

std::string RenderCsv(const SettlementRun& run) {
  std::string out =
      "period,institution_id,institution_name,allocation_id,kind,program,gpu_model,"
      "institution_type,krw_per_gpu_hour,copay_bp,gpu_ms,gpu_hours,list_krw,copay_krw,subsidy_"
      "krw\r\n";
  for (const Invoice& inv : run.invoices) {
    for (const InvoiceLine& l : inv.lines) {
      absl::StrAppend(&out, run.period.ToString(), ",", CsvField(inv.institution_id), ",",
                      CsvField(inv.institution_name), ",", CsvField(l.allocation_id), ",",
                      LineKindName(l.kind), ",", v1::Program_Name(l.program), ",",
                      v1::GpuModel_Name(l.gpu_model), ",",
                      v1::InstitutionType_Name(l.institution_type), ",", l.krw_per_gpu_hour.won,
                      ",", l.copay_bp, ",", l.gpu_ms.ms, ",", FormatGpuHours(l.gpu_ms), ",",
                      l.list.won, ",", l.copay.won, ",", l.subsidy.won, "\r\n");
    }
  }
  return out;
}

}  // namespace gpuledger::settlement
