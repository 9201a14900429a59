// Settlement documents for people and for systems. The JSON schema is in docs/FORMATS.md.
#pragma once

#include <string>

#include "settlement/invoice.h"

namespace gpuledger::settlement {

// A fixed-width table: one row per invoice, then totals and any unpriced usage.
std::string RenderTable(const SettlementRun& run);

// Canonical JSON (keys in a fixed order, integers only, 2-space indent, trailing newline).
// The same run always renders to the same bytes.
std::string RenderJson(const SettlementRun& run);

// One row per invoice line, with a header row; RFC 4180 quoting.
std::string RenderCsv(const SettlementRun& run);

}  // namespace gpuledger::settlement
