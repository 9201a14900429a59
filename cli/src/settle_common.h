// Shared by `settle` and `audit`: the ledger + settlement-store options and their opening.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/period.h"
#include "ledger/ledger.h"
#include "settlement/engine.h"

namespace gpuledger::cli {

struct StoreArgs {
  std::string db;
  std::string store;  // empty: <db>.settlement
  settlement::SettleOptions options;
  // `settle --shard-dbs`: the ledgers of every shard, settled together (db is then unused).
  std::vector<std::string> shard_dbs;
};

struct OpenedSettlement {
  // Removes a temporary store's directory; destroyed last.
  std::shared_ptr<void> cleanup;
  std::unique_ptr<ledger::Ledger> ledger;               // one ledger, or null for shards
  std::vector<std::unique_ptr<ledger::Ledger>> shards;  // shard_dbs
  settlement::Settlement settlement;
};

std::string DefaultStorePath(const std::string& db);
void AddStoreOptions(CLI::App* cmd, StoreArgs* args, bool db_required);
// Opens the ledger read-only and the store, and applies new ledger entries to the store. With
// shard_dbs: every shard's ledger, settled as one into a temporary store (settlement/shards.h).
absl::StatusOr<OpenedSettlement> OpenAndCatchUp(const StoreArgs& args);
// Writes `text` to `path` ("" or "-": stdout).
absl::Status WriteOutput(const std::string& path, const std::string& text);

// Closed periods as a table or JSON ("gpuledger.closes/1", docs/FORMATS.md).
std::string RenderCloses(const std::vector<settlement::CloseRecord>& closes,
                         std::optional<base::Period> last_closed, uint64_t applied_through,
                         const std::string& format);

}  // namespace gpuledger::cli
