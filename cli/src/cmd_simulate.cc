#include <google/protobuf/util/json_util.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include "absl/strings/str_cat.h"
#include "base/period.h"
#include "commands.h"
#include "ingest/publisher.h"
#include "sim/fleet.h"

namespace gpuledger::cli {

namespace v1 = gpuledger::v1;

void AddSimulateCommand(CLI::App& app, int* exit_code) {
  struct Args {
    sim::FleetOptions fleet;
    std::string period = "2026-03";
    std::string series_start;
    double scale = 1.0;
    std::string out;
    ingest::PublishOptions publish;
    std::string topic_prefix;
    std::string kafka_config;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "simulate",
      "Generate a deterministic month of a programme fleet (the scale of the program brief by\n"
      "default: 6,400 H200 + 3,600 B200 hosted, 1,060 + 960 leased, 405 institutions,\n"
      "per-minute usage per node), drawn under the programmes' default policies (published as\n"
      "ProgrammePolicy records: eligible types, at most 2 servers per institution on the HPC\n"
      "lease, state GPUs for 4 months at most, co-pay bounds, usage beyond a cap held except\n"
      "industry's; docs/PROGRAMMES.md), the year's budgets and alert settings (docs/REPORTS.md,\n"
      "docs/ALERTS.md), with own use, outages and a configurable rate of duplicates,\n"
      "conflicts, late events, overlaps and malformed bytes. The same options and seed give the\n"
      "same events. Writes to Kafka (--brokers: registry then usage, as the operator and the\n"
      "CSPs would) or to JSON-lines files (--out DIR: registry.jsonl, usage.jsonl for\n"
      "`gpuledger publish`; malformed bytes cannot be written as JSON and are left out).");
  cmd->add_option("--period", args->period, "Month, YYYY-MM (KST)")->capture_default_str();
  cmd->add_option("--series-start", args->series_start,
                  "First month, YYYY-MM, of a series of months taken into one ledger: the\n"
                  "registry is drawn for it (and published again, as exact duplicates), the\n"
                  "usage for --period. Run each month with the same --series-start, seed and\n"
                  "scale (default: --period, a month on its own)");
  cmd->add_option("--seed", args->fleet.seed, "Random seed")->capture_default_str();
  cmd->add_option("--scale", args->scale,
                  "Multiply every GPU count and the institutions by this (e.g. 0.01)")
      ->check(CLI::Range(0.0001, 100.0))
      ->capture_default_str();
  cmd->add_option("--csps", args->fleet.csps, "CSPs")
      ->check(CLI::Range(1, 99))
      ->capture_default_str();
  cmd->add_option("--interval-minutes", args->fleet.interval_minutes,
                  "Metering interval: one usage event per node per interval")
      ->check(CLI::Range(1, 1440))
      ->capture_default_str();
  cmd->add_option("--utilisation-pct", args->fleet.utilisation_pct, "Busy share of allocated time")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  cmd->add_option("--duplicates-ppm", args->fleet.duplicates_ppm, "Retries per million events")
      ->capture_default_str();
  cmd->add_option("--conflicts-ppm", args->fleet.conflicts_ppm,
                  "Reused ids with other content per million")
      ->capture_default_str();
  cmd->add_option("--late-ppm", args->fleet.late_ppm, "Late events per million")
      ->capture_default_str();
  cmd->add_option("--overlaps-ppm", args->fleet.overlaps_ppm, "Overlapping intervals per million")
      ->capture_default_str();
  cmd->add_option("--malformed-ppm", args->fleet.malformed_ppm, "Malformed messages per million")
      ->capture_default_str();
  cmd->add_option("--max-events", args->fleet.max_usage_events,
                  "Stop after this many usage events (0: the whole month)")
      ->capture_default_str();
  cmd->add_option("--out", args->out, "Write JSON-lines files to this directory");
  cmd->add_option("--brokers", args->publish.brokers, "Publish to these Kafka brokers")
      ->envname("GPULEDGER_BROKERS");
  AddKafkaConfigOption(cmd, &args->kafka_config);
  cmd->add_option("--topic-prefix", args->topic_prefix, "Namespace prefix of every topic")
      ->envname("GPULEDGER_TOPIC_PREFIX");
  cmd->callback([args, exit_code] {
    if (args->out.empty() == args->publish.brokers.empty()) {
      *exit_code =
          UsageError(absl::InvalidArgumentError("give exactly one of --out DIR or --brokers"));
      return;
    }
    auto period = base::ParsePeriod(args->period);
    if (!period.ok()) {
      *exit_code = UsageError(period.status());
      return;
    }
    sim::FleetOptions fleet = sim::Scaled(args->fleet, args->scale);
    fleet.period = *period;
    if (!args->series_start.empty()) {
      auto first = base::ParsePeriod(args->series_start);
      if (!first.ok()) {
        *exit_code = UsageError(first.status());
        return;
      }
      if (*period < *first) {
        *exit_code = UsageError(absl::InvalidArgumentError(absl::StrCat(
            "--series-start ", first->ToString(), " is after --period ", period->ToString(),
            ": a series starts at or before the month simulated")));
        return;
      }
      fleet.series_start = *first;
    }
    args->publish.topics = ingest::TopicNames(args->topic_prefix);
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    auto last = std::chrono::steady_clock::now();
    int last_pct = -1;
    auto progress = [&](double f) {
      const int pct = static_cast<int>(f * 100);
      const auto now = std::chrono::steady_clock::now();
      if (pct == last_pct || (now - last < std::chrono::milliseconds(500) && pct < 100)) return;
      last = now;
      last_pct = pct;
      if (tty) {
        const int bar = pct / 4;
        std::cerr << "\r[" << std::string(bar, '#') << std::string(25 - bar, ' ') << "] " << pct
                  << "%" << (pct >= 100 ? "\n" : "") << std::flush;
      } else if (pct % 10 == 0) {
        spdlog::info("simulate: {}% of allocations done", pct);
      }
    };
    absl::Status failed;
    std::unique_ptr<ingest::Publisher> publisher;
    std::ofstream registry_out, usage_out;
    std::set<std::string> prepared;
    if (!args->out.empty()) {
      std::filesystem::create_directories(args->out);
      registry_out.open(args->out + "/registry.jsonl");
      usage_out.open(args->out + "/usage.jsonl");
      if (!registry_out || !usage_out) {
        *exit_code = Report(absl::UnavailableError("cannot write to " + args->out));
        return;
      }
    } else {
      auto kafka_config = LoadKafkaConfig(args->kafka_config);
      if (!kafka_config.ok()) {
        *exit_code = Report(kafka_config.status());
        return;
      }
      args->publish.kafka_config = *std::move(kafka_config);
      auto p = ingest::Publisher::Create(args->publish);
      if (!p.ok()) {
        *exit_code = Report(p.status());
        return;
      }
      publisher = *std::move(p);
    }
    uint64_t skipped = 0;
    google::protobuf::util::JsonPrintOptions json_opts;
    auto emit = [&](const sim::SimMessage& m) {
      if (!failed.ok()) return;
      if (publisher) {
        const std::string topic =
            m.registry ? args->publish.topics.Registry() : args->publish.topics.Usage(m.csp_id);
        if (!prepared.contains(topic)) {
          failed = publisher->PrepareTopics({topic});
          prepared.insert(topic);
        }
        if (failed.ok()) failed = publisher->Send({topic, m.key, m.value});
        return;
      }
      std::string line;
      if (m.registry) {
        v1::RegistryEvent e;
        e.ParseFromString(m.value);
        (void)google::protobuf::util::MessageToJsonString(e, &line, json_opts);
        registry_out << line << "\n";
        return;
      }
      v1::UsageEvent e;
      if (!e.ParseFromString(m.value) || e.event_id().empty()) {
        ++skipped;  // malformed bytes: not representable as a JSON line
        return;
      }
      (void)google::protobuf::util::MessageToJsonString(e, &line, json_opts);
      usage_out << line << "\n";
    };
    const auto start = std::chrono::steady_clock::now();
    const sim::SimStats stats = sim::Generate(fleet, emit, progress);
    if (failed.ok() && publisher) {
      auto done = publisher->Finish();
      if (!done.ok()) failed = done.status();
    }
    if (!failed.ok()) {
      *exit_code = Report(failed);
      return;
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    spdlog::info(
        "simulated {}: {} institutions, {} allocations, {} registry events, {} usage intervals, "
        "{} own use, {} outages; injected {} duplicates, {} conflicts, {} late, {} overlaps, {} "
        "malformed{}; {} messages in {:.1f} s",
        fleet.period.ToString(), stats.institutions, stats.allocations, stats.registry_events,
        stats.usage_events, stats.own_use_events, stats.outage_events, stats.duplicates,
        stats.conflicts, stats.late, stats.overlaps, stats.malformed,
        skipped > 0 ? absl::StrCat(" (", skipped, " malformed left out of the files)") : "",
        stats.messages, secs);
  });
}

}  // namespace gpuledger::cli
