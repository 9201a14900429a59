// The process and build metrics every long-running command exposes beside its own (ingest's
// --metrics-listen, serve's /metrics), in the names Prometheus' client libraries use:
//   process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
//   process_open_fds, process_max_fds, process_start_time_seconds,
//   gpuledger_build_info{version, commit} 1.
// Read from /proc/self at each scrape.
#pragma once

#include <prometheus/collectable.h>

#include <vector>

namespace gpuledger::ingest {

class ProcessCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace gpuledger::ingest
