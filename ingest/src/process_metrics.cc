#include "ingest/process_metrics.h"

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>
#include <prometheus/metric_type.h>
#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "base/build_info.h"

namespace gpuledger::ingest {

namespace {

prometheus::MetricFamily Family(const char* name, const char* help, prometheus::MetricType type,
                                double value) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(std::move(m));
  return f;
}

// Seconds since the epoch at which the system booted (/proc/stat's btime).
double BootTime() {
  std::ifstream in("/proc/stat");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("btime ")) return std::stod(line.substr(6));
  }
  return 0;
}

}  // namespace

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  // /proc/self/stat: fields after the command name, which is in parentheses.
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  const size_t paren = stat.rfind(')');
  if (paren != std::string::npos) {
    std::istringstream fields(stat.substr(paren + 2));
    std::vector<std::string> f;
    for (std::string x; fields >> x;) f.push_back(x);
    // f[0] is field 3 (state): utime is field 14, stime 15, starttime 22, vsize 23, rss 24.
    if (f.size() > 21) {
      const double cpu = (std::stod(f[11]) + std::stod(f[12])) / ticks;
      out.push_back(Family("process_cpu_seconds_total", "User and system CPU time, seconds.",
                           MetricType::Counter, cpu));
      out.push_back(Family("process_start_time_seconds",
                           "Start time of the process since the epoch, seconds.", MetricType::Gauge,
                           BootTime() + std::stod(f[19]) / ticks));
      out.push_back(Family("process_virtual_memory_bytes", "Virtual memory size, bytes.",
                           MetricType::Gauge, std::stod(f[20])));
      out.push_back(Family("process_resident_memory_bytes", "Resident memory size, bytes.",
                           MetricType::Gauge, std::stod(f[21]) * page));
    }
  }
  std::error_code ec;
  double fds = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++fds;
  }
  out.push_back(Family("process_open_fds", "Open file descriptors.", MetricType::Gauge, fds));
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    out.push_back(Family("process_max_fds", "Limit on open file descriptors.", MetricType::Gauge,
                         static_cast<double>(lim.rlim_cur)));
  }
  prometheus::MetricFamily build =
      Family("gpuledger_build_info", "The gpuledger build: version and git commit (always 1).",
             MetricType::Gauge, 1);
  build.metric[0].label = {{"version", std::string(base::BuildVersion())},
                           {"commit", std::string(base::BuildCommit())}};
  out.push_back(std::move(build));
  return out;
}

}  // namespace gpuledger::ingest
