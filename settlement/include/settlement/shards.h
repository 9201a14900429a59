// Settling the ledgers of several shards as one (docs/SCALING.md): each shard holds the whole
// registry and the usage of its own partitions; settlement reads them as one stream.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ledger/ledger.h"
#include "settlement/engine.h"

namespace gpuledger::settlement {

struct ShardMergeReport {
  uint64_t entries = 0;           // entries in the merged stream
  uint64_t registry_entries = 0;  // registry entries, each once (every shard holds them all)
  // Accepted usage events recorded in two shards (one event id sent with two keys): the one
  // with the earlier Kafka timestamp (then the lower shard) is settled, the other as rejected
  // CONFLICTING_DUPLICATE, as one ledger would have recorded it.
  uint64_t cross_shard_duplicates = 0;
  // Set when a shard has not yet recorded a registry entry another has: the stream ends before
  // it, and this says which (a shard still ingesting).
  std::string stopped_early;
  // The first cross-shard duplicates, for the log.
  std::vector<std::string> notes;
};

// The shards' entries as one stream, numbered 1.. in the order it yields them: every shard's
// entries in their own order, each registry entry once, after every shard's entries recorded
// before it (so each usage entry is settled after the registry it was decided against, as in
// its shard), and the rest after the last. Every shard must hold the same registry entries in
// the same order with the same decisions; the first that differs is a FAILED_PRECONDITION
// naming both. Each entry's hash in the stream chains the merged order (SHA-256 of the previous
// one, its number and its bytes), not its shard's. `report` (optional) is filled as the stream
// is read. The ledgers must outlive the source.
EntrySource MergeShards(std::vector<const ledger::Ledger*> shards,
                        std::shared_ptr<ShardMergeReport> report = nullptr);

}  // namespace gpuledger::settlement
