#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/period.h"
#include "base/status.h"
#include "commands.h"
#include "gpuledger/v1/ledger.pb.h"
#include "ingest/publisher.h"
#include "ingest/topics.h"
#include "ledger/ledger.h"
#include "settle_common.h"
#include "settlement/engine.h"
#include "settlement/render.h"
#include "settlement/shards.h"

namespace gpuledger::cli {

namespace v1 = gpuledger::v1;

std::string DefaultStorePath(const std::string& db) {
  std::string base = db;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  return base + ".settlement";
}

void AddStoreOptions(CLI::App* cmd, StoreArgs* args, bool db_required) {
  auto* db = cmd->add_option("--db", args->db, "Ledger directory")->envname("GPULEDGER_DB");
  if (db_required) db->required();
  cmd->add_option("--store", args->store,
                  "Settlement store directory (derived data, rebuilt from the ledger if "
                  "deleted). Default: <db>.settlement")
      ->envname("GPULEDGER_STORE");
  cmd->add_option("--vat-bp", args->options.vat_bp,
                  "VAT on co-pay, basis points (1000 = 10%); fixed for a store")
      ->check(CLI::Range(0, 10'000))
      ->capture_default_str();
}

namespace {

absl::StatusOr<OpenedSettlement> OpenShardsAndCatchUp(const StoreArgs& args) {
  if (!args.store.empty()) {
    return absl::InvalidArgumentError(
        "--store cannot go with --shard-dbs: the shards are settled together into a temporary "
        "store each time");
  }
  OpenedSettlement out;
  ledger::LedgerOptions lo;
  lo.read_only = true;
  lo.create_if_missing = false;
  std::vector<const ledger::Ledger*> shards;
  for (const std::string& db : args.shard_dbs) {
    GPULEDGER_ASSIGN_OR_RETURN(std::unique_ptr<ledger::Ledger> l, ledger::Ledger::Open(db, lo));
    shards.push_back(l.get());
    out.shards.push_back(std::move(l));
  }
  std::string dir = (std::filesystem::temp_directory_path() / "gpuledger-shards.XXXXXX").string();
  if (::mkdtemp(dir.data()) == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot make a temporary settlement store under ",
                                               std::filesystem::temp_directory_path().string()));
  }
  out.cleanup = std::shared_ptr<void>(nullptr, [dir](void*) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  });
  settlement::StoreOptions so;
  so.sync = false;
  GPULEDGER_ASSIGN_OR_RETURN(out.settlement.store, settlement::Store::Open(dir + "/store", so));
  GPULEDGER_ASSIGN_OR_RETURN(out.settlement.engine,
                             settlement::Engine::Open(out.settlement.store.get(), args.options));
  auto report = std::make_shared<settlement::ShardMergeReport>();
  settlement::CatchUpOptions catch_up;
  auto last_log = std::chrono::steady_clock::now();
  catch_up.progress = [&](uint64_t applied, uint64_t) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_log < std::chrono::seconds(2)) return;
    last_log = now;
    spdlog::info("settling {} shards: {} entries applied", shards.size(), applied);
  };
  GPULEDGER_RETURN_IF_ERROR(settlement::CatchUp(settlement::MergeShards(shards, report), 0,
                                                out.settlement.engine.get(), catch_up)
                                .status());
  spdlog::info("settled {} shards as one: {} entries ({} registry entries, once)", shards.size(),
               report->entries, report->registry_entries);
  if (report->cross_shard_duplicates > 0) {
    spdlog::warn("{} accepted usage event(s) were recorded in two shards and are settled once",
                 report->cross_shard_duplicates);
    for (const std::string& note : report->notes) spdlog::warn("  {}", note);
  }
  if (!report->stopped_early.empty()) spdlog::warn("{}", report->stopped_early);
  return out;
}

}  // namespace

absl::StatusOr<OpenedSettlement> OpenAndCatchUp(const StoreArgs& args) {
  if (!args.shard_dbs.empty()) return OpenShardsAndCatchUp(args);
  OpenedSettlement out;
  ledger::LedgerOptions lo;
  lo.read_only = true;
  lo.create_if_missing = false;
  GPULEDGER_ASSIGN_OR_RETURN(out.ledger, ledger::Ledger::Open(args.db, lo));
  const std::string store = args.store.empty() ? DefaultStorePath(args.db) : args.store;
  settlement::CatchUpOptions catch_up;
  auto last_log = std::chrono::steady_clock::now();
  catch_up.progress = [&](uint64_t applied, uint64_t target) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_log < std::chrono::seconds(2) && applied != target) return;
    last_log = now;
    spdlog::info("settlement store: applied ledger entries up to {} of {}", applied, target);
  };
  const auto start = std::chrono::steady_clock::now();
  GPULEDGER_ASSIGN_OR_RETURN(
      out.settlement, settlement::OpenSettlement(store, *out.ledger, args.options, {}, catch_up));
  if (out.settlement.rebuilt) {
    spdlog::info("settlement store {} had an older format: rebuilt from the ledger", store);
  }
  spdlog::debug("settlement store {} at entry {} ({} ms)", store,
                out.settlement.engine->applied_through(),
                std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - start)
                    .count());
  return out;
}

absl::Status WriteOutput(const std::string& path, const std::string& text) {
  if (path.empty() || path == "-") {
    std::cout << text << std::flush;
    return absl::OkStatus();
  }
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) return absl::UnavailableError("cannot write " + path);
  return absl::OkStatus();
}

namespace {

void AddCloseCommand(CLI::App* settle, int* exit_code) {
  struct Args {
    StoreArgs store;
    std::string period;
    ingest::PublishOptions publish;
    std::string topic_prefix;
    std::string kafka_config;
    int wait_s = 120;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = settle->add_subcommand(
      "close",
      "Close a billing period: write a close marker to every partition of every usage topic,\n"
      "publish a PeriodClose event on the registry topic naming the markers' offsets, wait\n"
      "until ingest has recorded it in the ledger (ingest records it only once it has recorded\n"
      "every usage message before the markers, and none after them, even those it reads before\n"
      "the close; it seals it with a signed checkpoint), then\n"
      "freeze the period's invoices, CSP statements and programme summaries as of the entry\n"
      "before the close, and print the covered sequence number and each document's digest.\n"
      "Periods close in order, after they end. A closed period never changes: events\n"
      "accepted later that touch it appear as adjustment lines on the next open period.");
  AddStoreOptions(cmd, &args->store, true);
  cmd->add_option("--period", args->period, "Billing month to close, YYYY-MM (KST)")->required();
  cmd->add_option("--brokers", args->publish.brokers, "Kafka bootstrap servers, host:port[,...]")
      ->required()
      ->envname("GPULEDGER_BROKERS");
  AddKafkaConfigOption(cmd, &args->kafka_config);
  cmd->add_option("--topic-prefix", args->topic_prefix, "Namespace prefix of every topic")
      ->envname("GPULEDGER_TOPIC_PREFIX");
  cmd->add_option("--wait-s", args->wait_s,
                  "Seconds to wait for ingest to record the close; 0: publish and return")
      ->check(CLI::Range(0, 86'400))
      ->capture_default_str();
  cmd->callback([args, exit_code] {
    auto period = base::ParsePeriod(args->period);
    if (!period.ok()) {
      *exit_code = UsageError(period.status());
      return;
    }
    args->publish.topics = ingest::TopicNames(args->topic_prefix);
    auto kafka_config = LoadKafkaConfig(args->kafka_config);
    if (!kafka_config.ok()) {
      *exit_code = Report(kafka_config.status());
      return;
    }
    args->publish.kafka_config = *std::move(kafka_config);
    const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    if (now_ms < period->EndMs()) {
      *exit_code = Report(absl::FailedPreconditionError(
          absl::StrCat(period->ToString(), " has not ended yet (it ends at ",
                       base::FormatKst(period->EndMs()), "); close it after that")));
      return;
    }
    const std::string event_id = absl::StrCat("close-", period->ToString(), "-", now_ms);
    // The close covers the usage before a marker written now to each usage partition, and no
    // usage after it, in any ledger built from these topics: ingest records it once it has read
    // up to the markers, and holds a partition at a marker until it has (usage.proto,
    // CloseMarker).
    auto ends = ingest::PublishCloseMarkers(args->publish.brokers, args->publish.kafka_config,
                                            args->publish.topics, period->ToString(), now_ms);
    if (!ends.ok()) {
      *exit_code = Report(ends.status());
      return;
    }
    v1::RegistryEvent close;
    close.set_schema_version(1);
    close.set_event_id(event_id);
    close.set_emitted_at_ms(now_ms);
    close.mutable_period_close()->set_period(period->ToString());
    for (const auto& end : *ends) {
      v1::UsageOffset* o = close.mutable_period_close()->add_usage_offsets();
      o->set_topic(end.topic);
      o->set_partition(end.partition);
      o->set_offset(end.offset);
    }
    spdlog::info(
        "close markers written to {} usage partition(s): the close covers the usage "
        "before them",
        ends->size());
    // Tests only (tests/integration/close_offsets_test.sh): wait for a file before publishing
    // the close, so that usage published after the markers can be read before the close.
    if (const char* gate = std::getenv("GPULEDGER_TEST_CLOSE_GATE"); gate != nullptr) {
      spdlog::info("waiting for {} before publishing the close (GPULEDGER_TEST_CLOSE_GATE)", gate);
      while (!std::filesystem::exists(gate)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    }
    auto one = ingest::EncodeRegistryEvent(close, args->publish.topics);
    if (!one.ok()) {
      *exit_code = Report(one.status());
      return;
    }
    absl::StatusOr<std::vector<ingest::EncodedEvent>> encoded =
        std::vector<ingest::EncodedEvent>{*std::move(one)};
    auto published = ingest::Publish(*encoded, args->publish);
    if (!published.ok()) {
      *exit_code = Report(published.status());
      return;
    }
    spdlog::info("published close of {} as registry event {}", period->ToString(), event_id);
    if (args->wait_s == 0) {
      spdlog::info("not waiting: run `gpuledger settle status` once ingest has recorded it");
      return;
    }
    // Wait for the ledger to record it (ingest writes; we reopen read-only to see new entries).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(args->wait_s);
    std::optional<ledger::DedupRecord> record;
    auto last_note = std::chrono::steady_clock::now();
    while (true) {
      ledger::LedgerOptions lo;
      lo.read_only = true;
      lo.create_if_missing = false;
      auto ledger = ledger::Ledger::Open(args->store.db, lo);
      if (ledger.ok()) {
        auto found = (*ledger)->LookupEvent(ingest::kOperatorSourceId, event_id);
        if (found.ok() && found->has_value()) {
          record = **found;
          if (record->outcome == v1::REJECTED) {
            auto entry = (*ledger)->Get(record->seq);
            *exit_code = Report(absl::FailedPreconditionError(absl::StrCat(
                "ingest refused the close of ", period->ToString(), " (entry ", record->seq, "): ",
                entry.ok()
                    ? absl::StrCat(entry->entry.reason_code(), ": ", entry->entry.reason_detail())
                    : "see `gpuledger ledger show`")));
            return;
          }
          break;
        }
      }
      if (std::chrono::steady_clock::now() > deadline) {
        *exit_code = Report(absl::DeadlineExceededError(absl::StrCat(
            "the close was published but not recorded within ", args->wait_s,
            " s: is `gpuledger ingest` running on this ledger? Once it has recorded the close, "
            "`gpuledger settle status` shows it")));
        return;
      }
      if (std::chrono::steady_clock::now() - last_note > std::chrono::seconds(10)) {
        spdlog::info("waiting for ingest to record the close ...");
        last_note = std::chrono::steady_clock::now();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    auto opened = OpenAndCatchUp(args->store);
    if (!opened.ok() && absl::IsFailedPrecondition(opened.status()) &&
        opened.status().message().find("in use") != std::string::npos) {
      // `gpuledger serve` owns the store: it freezes the documents itself.
      std::cout << absl::StrFormat(
          "closed %s at ledger entry %d; the settlement store is in use (gpuledger serve?): "
          "its documents and digests are at /v1/periods/%s\n",
          period->ToString(), record->seq, period->ToString());
      return;
    }
    if (!opened.ok()) {
      *exit_code = Report(opened.status());
      return;
    }
    auto docs = opened->settlement.engine->Documents(*period);
    if (!docs.ok() || !docs->closed()) {
      *exit_code = Report(docs.ok() ? absl::InternalError("the period is not closed in the store")
                                    : docs.status());
      return;
    }
    std::cout << absl::StrFormat("closed %s at ledger entry %d; documents cover entries 1..%d\n",
                                 docs->period(), docs->close_seq(), docs->covered_seq());
    for (const auto& d : docs->digests()) {
      std::cout << absl::StrFormat("  %-32s sha256 %s\n", d.document(), d.sha256());
    }
    // Closed without them: they come back as adjustments of the next period.
    for (const auto& e : docs->errors()) {
      *exit_code = Report(absl::FailedPreconditionError(absl::StrCat(
          e.document(), " of ", docs->period(), " cannot be computed: ", e.message())));
    }
  });
}

void AddStatusCommand(CLI::App* settle, int* exit_code) {
  struct Args {
    StoreArgs store;
    std::string format = "table";
    std::string output;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = settle->add_subcommand(
      "status",
      "List closed periods (close entry, covered entries, document digests) and the first open\n"
      "period, after bringing the settlement store up to the ledger's head.");
  AddStoreOptions(cmd, &args->store, true);
  cmd->add_option("--format", args->format, "table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  cmd->add_option("--output,-o", args->output, "Write to this file instead of stdout");
  cmd->callback([args, exit_code] {
    auto opened = OpenAndCatchUp(args->store);
    if (!opened.ok()) {
      *exit_code = Report(opened.status());
      return;
    }
    settlement::Engine& engine = *opened->settlement.engine;
    absl::Status st =
        WriteOutput(args->output, RenderCloses(engine.Closes(), engine.last_closed(),
                                               engine.applied_through(), args->format));
    if (!st.ok()) *exit_code = Report(st);
  });
}

}  // namespace

void AddSettleCommand(CLI::App& app, int* exit_code) {
  struct Args {
    StoreArgs store;
    std::string period;
    std::string format = "table";
    std::string document = "all";
    std::string institution;
    std::string csp;
    std::string output;
    std::string lang = "ko";
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "settle",
      "Settlement documents for one billing period (a calendar month in KST): a co-pay invoice\n"
      "per institution, a settlement statement per CSP (delivered GPU-hours, subsidy owed,\n"
      "outages, own-use share against the contract cap, capacity identity) and a summary per\n"
      "programme. Closed periods show their frozen documents; open ones a live draft.\n"
      "The ledger is read read-only (ingest may keep writing); new entries are first applied\n"
      "to the settlement store, so a draft is read without rescanning the month.\n"
      "Rules: docs/SETTLEMENT.md. Formats: docs/FORMATS.md.\n"
      "Subcommands: `settle close` freezes a period, `settle status` lists closes.");
  cmd->require_subcommand(0, 1);
  // Not required here: `settle close` and `settle status` take their own --db.
  AddStoreOptions(cmd, &args->store, false);
  cmd->add_option("--shard-dbs", args->store.shard_dbs,
                  "The ledgers of every shard (`ingest --shard K/N`), comma-separated, settled\n"
                  "together as one ledger instead of --db (docs/SCALING.md): lines per\n"
                  "allocation from the shard that holds it, the registry once (every shard must\n"
                  "hold the same), totals and the capacity identity over all of them")
      ->delimiter(',');
  cmd->add_option("--period", args->period, "Billing month, YYYY-MM (KST)");
  cmd->add_option("--format", args->format,
                  "table (for people), json (canonical, docs/FORMATS.md), csv, html (printable) "
                  "or etax (the invoices' bills as electronic tax invoice data, "
                  "gpuledger.etax/1; closed periods only)")
      ->check(CLI::IsMember({"table", "json", "csv", "html", "etax"}))
      ->capture_default_str();
  cmd->add_option("--document", args->document,
                  "Which documents: all, invoices, statements or programs (csv: one kind at a "
                  "time; all means invoices)")
      ->check(CLI::IsMember({"all", "invoices", "statements", "programs"}))
      ->capture_default_str();
  cmd->add_option("--institution", args->institution, "Only this institution's invoice");
  cmd->add_option("--csp", args->csp, "Only this CSP's statement");
  cmd->add_option("--output,-o", args->output, "Write to this file instead of stdout");
  cmd->add_option("--lang", args->lang,
                  "Language of the html format: ko (Korean, the default) or en; json and csv are "
                  "the same in every language")
      ->check(CLI::IsMember({"ko", "en"}))
      ->capture_default_str();
  AddCloseCommand(cmd, exit_code);
  AddStatusCommand(cmd, exit_code);
  cmd->callback([cmd, args, exit_code] {
    if (!cmd->get_subcommands().empty()) return;
    if (args->store.db.empty() && args->store.shard_dbs.empty()) {
      *exit_code =
          UsageError(absl::InvalidArgumentError("--db LEDGER (or GPULEDGER_DB) is required"));
      return;
    }
    if (args->period.empty()) {
      *exit_code = UsageError(absl::InvalidArgumentError(
          "--period YYYY-MM is required (or use `settle close` / `settle status`)"));
      return;
    }
    auto period = base::ParsePeriod(args->period);
    if (!period.ok()) {
      *exit_code = UsageError(period.status());
      return;
    }
    auto opened = OpenAndCatchUp(args->store);
    if (!opened.ok()) {
      *exit_code = absl::IsInvalidArgument(opened.status()) && !args->store.shard_dbs.empty()
                       ? UsageError(opened.status())
                       : Report(opened.status());
      return;
    }
    settlement::DocumentFilter filter;
    const std::string& which = args->document;
    filter.invoices = which == "all" || which == "invoices";
    filter.statements = which == "all" || which == "statements";
    filter.programs = which == "all" || which == "programs";
    if (!args->institution.empty()) {
      filter.institution_id = args->institution;
      filter.invoices = true;
      if (which == "all") filter.statements = filter.programs = false;
    }
    if (!args->csp.empty()) {
      filter.csp_id = args->csp;
      filter.statements = true;
      if (which == "all") filter.invoices = filter.programs = !args->institution.empty();
    }
    const auto start = std::chrono::steady_clock::now();
    auto docs = opened->settlement.engine->Documents(*period, filter);
    if (!docs.ok()) {
      *exit_code = Report(docs.status());
      return;
    }
    spdlog::debug("documents of {} built in {} us", args->period,
                  std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count());
    std::string text;
    if (args->format == "etax" && !docs->closed()) {
      *exit_code = Report(absl::FailedPreconditionError(absl::StrCat(
          args->period,
          " is open: tax invoice data are exported for closed periods only, because the close "
          "assigns the invoice numbers and dates (`settle close --period ",
          args->period, "`, or choose a closed month: `settle status`)")));
      return;
    }
    if (args->format == "json") {
      text = settlement::PeriodJson(*docs);
    } else if (args->format == "etax") {
      text = settlement::EtaxJson(*docs);
    } else if (args->format == "csv") {
      text = settlement::RenderCsv(*docs, which == "all" ? "invoices" : which);
    } else if (args->format == "html") {
      text = settlement::RenderHtml(*docs, *i18n::ParseLang(args->lang));
    } else {
      text = settlement::RenderTable(*docs);
    }
    if (absl::Status st = WriteOutput(args->output, text); !st.ok()) {
      *exit_code = Report(st);
      return;
    }
    if (!args->output.empty()) {
      spdlog::info("wrote {} {} ({} invoice(s), {} statement(s)) to {}", args->period,
                   docs->closed() ? "final documents" : "draft documents", docs->invoices_size(),
                   docs->statements_size(), args->output);
    }
    if (docs->unpriced_size() > 0) {
      spdlog::warn("{} usage event(s) could not be priced; they are listed in the output",
                   docs->unpriced_size());
    }
    // The other documents are written; the command still fails (issue 14).
    for (const auto& e : docs->errors()) {
      *exit_code = Report(absl::FailedPreconditionError(absl::StrCat(
          e.document(), " of ", docs->period(), " cannot be computed: ", e.message())));
    }
  });
}

}  // namespace gpuledger::cli
