// `gpuledger alerts run` and `gpuledger alerts list` (docs/ALERTS.md): the alert monitor follows
// the ledger (a RocksDB secondary instance, as serve does), settles it into a store of its own,
// raises each condition once per crossing, publishes the alerts to the Kafka alerts topic and
// delivers them to signed webhooks with retries.

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "alerts/alerts.h"
#include "commands.h"
#include "ingest/publisher.h"
#include "settle_common.h"
#include "spdlog/spdlog.h"

namespace gpuledger::cli {

namespace {

std::atomic<bool> g_stop{false};
void OnAlertsSignal(int) { g_stop = true; }

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Trimmed(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

struct RunArgs {
  std::string db;
  std::string store;
  std::string state;
  std::string subscriptions;
  ingest::PublishOptions publish;
  std::string topic_prefix;
  std::string kafka_config;
  settlement::SettleOptions settle;
  alerts::MonitorOptions monitor;
  int poll_ms = 1'000;
  bool until_delivered = false;
};

absl::Status Run(const RunArgs& a) {
  std::vector<alerts::Subscription> subscriptions;
  if (!a.subscriptions.empty()) {
    auto loaded = alerts::LoadSubscriptions(a.subscriptions);
    if (!loaded.ok()) return loaded.status();
    subscriptions = *std::move(loaded);
  }
  const std::string db = Trimmed(a.db);
  const std::string secondary = absl::StrCat(db, ".alerts-secondary/", ::getpid());
  std::error_code ec;
  std::filesystem::create_directories(secondary, ec);
  struct RemoveSecondary {
    std::string path;
    ~RemoveSecondary() {
      std::error_code e;
      std::filesystem::remove_all(path, e);
    }
  } remove_secondary{secondary};
  ledger::LedgerOptions lo;
  lo.read_only = true;
  lo.create_if_missing = false;
  lo.secondary_path = secondary;
  auto ledger = ledger::Ledger::Open(db, lo);
  if (!ledger.ok()) return ledger.status();
  const std::string store = a.store.empty() ? db + ".alerts.settlement" : a.store;
  auto settled = settlement::OpenSettlement(store, **ledger, a.settle);
  if (!settled.ok()) return settled.status();
  auto monitor = alerts::Monitor::Open(a.state.empty() ? db + ".alerts" : a.state, a.monitor);
  if (!monitor.ok()) return monitor.status();
  std::unique_ptr<ingest::Publisher> publisher;
  ingest::PublishOptions po = a.publish;
  if (!po.brokers.empty()) {
    po.topics = ingest::TopicNames(a.topic_prefix);
    auto kafka = LoadKafkaConfig(a.kafka_config);
    if (!kafka.ok()) return kafka.status();
    po.kafka_config = *kafka;
    auto created = ingest::Publisher::Create(po);
    if (!created.ok()) return created.status();
    publisher = *std::move(created);
    if (absl::Status st = publisher->PrepareTopics({po.topics.Alerts()}); !st.ok()) return st;
  } else {
    spdlog::warn("no --brokers: alerts are not published to Kafka (webhooks only)");
  }
  spdlog::info("alerts: {} subscription(s); state {}; settlement store {}", subscriptions.size(),
               a.state.empty() ? db + ".alerts" : a.state, store);
  settlement::Engine& engine = *settled->engine;
  const settlement::EntrySource entries = [&](uint64_t from,
                                              const settlement::EntryVisitor& visit) {
    return (*ledger)->Scan(from, visit);
  };
  uint64_t evaluated_through = UINT64_MAX;
  while (!g_stop) {
    if (absl::Status st = (*ledger)->Refresh(); !st.ok()) return st;
    auto applied = settlement::CatchUp(**ledger, &engine);
    if (!applied.ok()) return applied.status();
    if (engine.applied_through() != evaluated_through) {
      auto raised = (*monitor)->Evaluate(engine, entries, subscriptions, NowMs());
      if (!raised.ok()) return raised.status();
      evaluated_through = engine.applied_through();
    }
    if (publisher) {
      std::vector<alerts::Alert> pending = (*monitor)->Unpublished();
      if (!pending.empty()) {
        std::vector<std::string> ids;
        for (const auto& alert : pending) {
          ingest::EncodedEvent e{po.topics.Alerts(), alert.id, alert.Payload(), 0};
          if (absl::Status st = publisher->Send(e); !st.ok()) return st;
          ids.push_back(alert.id);
        }
        auto done = publisher->Finish();
        if (!done.ok()) return done.status();
        if (absl::Status st = (*monitor)->MarkPublished(ids); !st.ok()) return st;
        spdlog::info("alerts: {} published to {}", ids.size(), po.topics.Alerts());
        auto again = ingest::Publisher::Create(po);  // Finish ends a publisher
        if (!again.ok()) return again.status();
        publisher = *std::move(again);
      }
    }
    int64_t now = NowMs();
    for (const auto& [delivery, alert] : (*monitor)->Due(now)) {
      const alerts::Subscription* sub = nullptr;
      for (const auto& s : subscriptions) {
        if (s.id == delivery.subscription_id) sub = &s;
      }
      absl::Status sent = sub == nullptr
                              ? absl::NotFoundError("the subscription is no longer in the file")
                              : alerts::Post(*sub, alert, now);
      if (absl::Status st =
              (*monitor)->RecordAttempt(delivery, sent.ok(), std::string(sent.message()), NowMs());
          !st.ok()) {
        return st;
      }
      if (sent.ok()) spdlog::info("alert {} delivered to {}", alert.id, delivery.subscription_id);
    }
    if (a.until_delivered) {
      bool pending = false;
      for (const auto& d : (*monitor)->Deliveries()) {
        pending = pending || d.status == alerts::DeliveryStatus::kPending;
      }
      const bool unpublished = publisher && !(*monitor)->Unpublished().empty();
      if (!pending && !unpublished) break;
    }
    for (int waited = 0; waited < a.poll_ms && !g_stop; waited += 50) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return absl::OkStatus();
}

}  // namespace

void AddAlertsCommand(CLI::App& app, int* exit_code) {
  CLI::App* alerts = app.add_subcommand(
      "alerts",
      "Alerts: budgets and caps past a threshold, months closed, invoices final,\n"
      "adjustments issued, CSPs' rejections (docs/ALERTS.md)");
  alerts->require_subcommand(1);

  auto args = std::make_shared<RunArgs>();
  CLI::App* run = alerts->add_subcommand(
      "run",
      "Follow the ledger, raise each alert once per crossing (recorded in the state store, so a\n"
      "restart raises nothing again), publish it to the Kafka alerts topic\n"
      "(<prefix>gpuledger.alerts, keyed by alert id) and deliver it to the subscribed webhooks:\n"
      "signed (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature), retried\n"
      "with doubling backoff, given up after --max-attempts (shown by `alerts list`). SIGTERM\n"
      "or SIGINT stops it.");
  run->add_option("--db", args->db, "Ledger directory (followed read-only)")
      ->required()
      ->envname("GPULEDGER_DB");
  run->add_option("--store", args->store,
                  "Its own settlement store (default: <db>.alerts.settlement)");
  run->add_option("--state", args->state, "The alert state store (default: <db>.alerts)");
  run->add_option("--subscriptions", args->subscriptions,
                  "Webhook subscriptions, JSON: {\"subscriptions\": [{\"id\", \"url\",\n"
                  "\"secret\": \"whsec_<base64>\", \"role\", \"types\"?}]}");
  run->add_option("--brokers", args->publish.brokers, "Publish alerts to these Kafka brokers")
      ->envname("GPULEDGER_BROKERS");
  AddKafkaConfigOption(run, &args->kafka_config);
  run->add_option("--topic-prefix", args->topic_prefix, "Namespace prefix of every topic")
      ->envname("GPULEDGER_TOPIC_PREFIX");
  run->add_option("--vat-bp", args->settle.vat_bp, "VAT, basis points (as settle)")
      ->capture_default_str();
  run->add_option("--max-attempts", args->monitor.max_attempts,
                  "Delivery attempts before giving up")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  run->add_option("--first-backoff-ms", args->monitor.first_backoff_ms,
                  "Wait before the second attempt (doubled after each failure)")
      ->check(CLI::Range(int64_t{1}, int64_t{3'600'000}))
      ->capture_default_str();
  run->add_option("--max-backoff-ms", args->monitor.max_backoff_ms, "Longest wait between attempts")
      ->check(CLI::Range(int64_t{1}, int64_t{86'400'000}))
      ->capture_default_str();
  run->add_option("--poll-ms", args->poll_ms, "How often to look for new ledger entries")
      ->check(CLI::Range(10, 60'000))
      ->capture_default_str();
  run->add_flag("--until-delivered", args->until_delivered,
                "Stop once every alert is published and every delivery delivered or given up\n"
                "(a batch run; by default it runs until stopped)");
  run->callback([args, exit_code] {
    std::signal(SIGTERM, OnAlertsSignal);
    std::signal(SIGINT, OnAlertsSignal);
    if (absl::Status st = Run(*args); !st.ok()) *exit_code = Report(st);
  });

  struct ListArgs {
    std::string db, state, format = "table";
  };
  auto largs = std::make_shared<ListArgs>();
  CLI::App* list = alerts->add_subcommand(
      "list", "Every alert raised, and each delivery: delivered, pending or given up");
  list->add_option("--db", largs->db, "Ledger directory (names the default state store)")
      ->envname("GPULEDGER_DB");
  list->add_option("--state", largs->state, "The alert state store (default: <db>.alerts)");
  list->add_option("--format", largs->format, "table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  list->callback([largs, exit_code] {
    if (largs->db.empty() && largs->state.empty()) {
      *exit_code = UsageError(absl::InvalidArgumentError("give --db or --state"));
      return;
    }
    const std::string state = largs->state.empty() ? Trimmed(largs->db) + ".alerts" : largs->state;
    if (!std::filesystem::exists(state)) {
      *exit_code = Report(absl::NotFoundError(
          absl::StrCat("no alert state at ", state, ": `gpuledger alerts run` has not run")));
      return;
    }
    auto monitor = alerts::Monitor::Open(state);
    if (!monitor.ok()) {
      *exit_code = Report(monitor.status());
      return;
    }
    const auto all = (*monitor)->Alerts();
    const auto deliveries = (*monitor)->Deliveries();
    if (largs->format == "json") {
      nlohmann::ordered_json out = {{"format", "gpuledger.alerts/1"}};
      nlohmann::ordered_json list_alerts = nlohmann::ordered_json::array();
      for (const auto& al : all) list_alerts.push_back(nlohmann::ordered_json::parse(al.Payload()));
      nlohmann::ordered_json list_deliveries = nlohmann::ordered_json::array();
      for (const auto& d : deliveries) {
        list_deliveries.push_back({{"alert_id", d.alert_id},
                                   {"subscription_id", d.subscription_id},
                                   {"status", alerts::DeliveryStatusName(d.status)},
                                   {"attempts", d.attempts},
                                   {"last_error", d.last_error}});
      }
      out["alerts"] = list_alerts;
      out["deliveries"] = list_deliveries;
      std::printf("%s\n", out.dump(2).c_str());
      return;
    }
    std::printf("%zu alert(s)\n", all.size());
    for (const auto& al : all) {
      std::printf("  %-48s %-38s %s\n", al.id.c_str(), al.type.c_str(),
                  al.audience.empty() ? "staff" : al.audience.c_str());
    }
    std::printf("%zu deliver%s\n", deliveries.size(), deliveries.size() == 1 ? "y" : "ies");
    for (const auto& d : deliveries) {
      std::printf("  %-48s %-16s %-10s %2d attempt(s) %s\n", d.alert_id.c_str(),
                  d.subscription_id.c_str(), alerts::DeliveryStatusName(d.status), d.attempts,
                  d.last_error.c_str());
    }
  });
}

}  // namespace gpuledger::cli
