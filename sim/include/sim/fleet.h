// A deterministic (seeded) month of a GPU programme fleet, at the scale of ../shared/DOMAIN.md
// by default: CSPs hosting government H200/B200 pools and leasing H100/H200/B200 pools, about
// 400 institutions of every type in the survey's proportions, allocations sized by who uses them,
// per-minute usage intervals per node, own use, outages, and a configurable rate of duplicates,
// conflicting duplicates, late events, overlaps and malformed bytes. The same options and seed
// give the same events, byte for byte.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "base/period.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"

namespace gpuledger::sim {

struct FleetOptions {
  base::Period period{2026, 3};
  // The first month of a series that one ledger takes in month after month (unset: `period`
  // alone). The registry (institutions, allocations, pools, policies, rates) is drawn for it and
  // is the same, byte for byte, in every month of the series, so that a later month's registry
  // events are exact duplicates and its usage falls inside the same allocations; its producers,
  // pool outages and random draws are the month's own. Never after `period`.
  std::optional<base::Period> series_start;
  uint64_t seed = 1;
  int csps = 4;
  // Government-owned GPUs hosted by the CSPs (gov-advanced), and GPUs leased from them.
  int gov_h200 = 6'400;
  int gov_b200 = 3'600;
  int lease_hpc_h100 = 1'060;     // lease-hpc: SMEs and startups, small jobs
  int lease_research_h200 = 960;  // lease-research: academia and research
  int institutions = 405;         // 115 industry, 273 academia, 17 research and other
  int interval_minutes = 1;       // one usage event per node per interval while busy
  int utilisation_pct = 65;       // busy share of each node's allocated time
  // Anomalies, per million usage events.
  int duplicates_ppm = 1'000;  // the same bytes again (a retry)
  int conflicts_ppm = 100;     // an event id reused with other content
  int late_ppm = 1'000;        // sent after the month, emitted days later
  int overlaps_ppm = 100;      // an interval overlapping the node's previous one
  int malformed_ppm = 50;      // bytes that are not a UsageEvent
  // Stop after this many usage events (0: the whole month). For quick runs and tests.
  uint64_t max_usage_events = 0;
};

// Scales every GPU count and the number of institutions by `factor` (e.g. 0.01 for a quick run).
FleetOptions Scaled(FleetOptions options, double factor);

struct SimMessage {
  bool registry = false;
  std::string csp_id;  // usage: the CSP whose topic carries it
  std::string key;     // the Kafka key (allocation id, pool, or event id)
  std::string value;   // a serialized RegistryEvent or UsageEvent, or malformed bytes
};

struct SimStats {
  uint64_t registry_events = 0;
  uint64_t usage_events = 0;  // valid usage intervals generated (first copies)
  uint64_t own_use_events = 0;
  uint64_t outage_events = 0;
  uint64_t duplicates = 0;
  uint64_t conflicts = 0;
  uint64_t late = 0;
  uint64_t overlaps = 0;
  uint64_t malformed = 0;
  uint64_t allocations = 0;
  uint64_t institutions = 0;
  uint64_t messages = 0;  // everything emitted
};

// Emits the registry first (in dependency order), then the month's usage in time order per
// node, then the late events. `progress` is called with the fraction done (0..1) now and then.
SimStats Generate(const FleetOptions& options, const std::function<void(const SimMessage&)>& emit,
                  const std::function<void(double)>& progress = {});

}  // namespace gpuledger::sim
