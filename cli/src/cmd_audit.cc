#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/process_memory.h"
#include "base/status.h"
#include "commands.h"
#include "ingest/redecide.h"
#include "ingest/topics.h"
#include "ledger/export.h"
#include "ledger/signing.h"
#include "ledger/verify.h"
#include "settle_common.h"

namespace gpuledger::cli {

std::string RenderCloses(const std::vector<settlement::CloseRecord>& closes,
                         std::optional<base::Period> last_closed, uint64_t applied_through,
                         const std::string& format) {
  if (format == "json") {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const auto& c : closes) {
      nlohmann::ordered_json digests = nlohmann::ordered_json::array();
      for (const auto& [doc, sha] : c.digests) {
        digests.push_back({{"document", doc}, {"sha256", sha}});
      }
      list.push_back({{"period", c.period.ToString()},
                      {"close_seq", c.close_seq},
                      {"covered_seq", c.covered_seq},
                      {"closed_at_ms", c.closed_at_ms},
                      {"digests", digests}});
    }
    nlohmann::ordered_json doc = {{"format", "gpuledger.closes/1"},
                                  {"applied_through", applied_through},
                                  {"last_closed", last_closed ? last_closed->ToString() : ""},
                                  {"first_open", last_closed ? last_closed->Next().ToString() : ""},
                                  {"closes", list}};
    return doc.dump(2) + "\n";
  }
  std::string out = absl::StrFormat("Settlement store at ledger entry %d\n", applied_through);
  if (closes.empty()) {
    absl::StrAppend(&out, "No period is closed yet; every period is an open draft.\n");
    return out;
  }
  absl::StrAppendFormat(&out, "%-8s %10s %12s  %-25s %s\n", "period", "close seq", "covered",
                        "closed at (KST)", "documents");
  for (const auto& c : closes) {
    absl::StrAppendFormat(&out, "%-8s %10d %12s  %-25s %d\n", c.period.ToString(), c.close_seq,
                          absl::StrCat("1..", c.covered_seq), base::FormatKst(c.closed_at_ms),
                          c.digests.size());
  }
  absl::StrAppendFormat(&out, "First open period: %s (adjustments to closed periods go there)\n",
                        last_closed->Next().ToString());
  return out;
}

namespace {

// What a replay holds, every 10 s and at its end: a long replay's peak broken down by part, as
// ingest's `memory (MiB)` lines do (ops/bench/memory.sh keeps them). `ledger` is null when the
// replay reads an export.
void LogReplayMemory(const ledger::Ledger* ledger, const settlement::Store* store) {
  const base::ProcessMemory proc = base::ReadProcessMemory();
  const ledger::StoreMemory s = store->Memory();
  const ledger::StoreMemory l = ledger != nullptr ? ledger->Memory() : ledger::StoreMemory{};
  auto mib = [](uint64_t b) { return static_cast<double>(b) / (1 << 20); };
  spdlog::info(
      "memory (MiB): resident {:.0f}, heap in use {:.0f} and free {:.0f}; settlement store "
      "memtables {:.0f}, table readers {:.1f}, block cache {:.0f} ({:.0f} pinned), staged writes "
      "{:.1f}; ledger memtables {:.0f}, table readers {:.1f}, block cache {:.0f} ({:.0f} pinned)",
      mib(proc.rss), mib(proc.heap_in_use), mib(proc.heap_free), mib(s.memtables),
      mib(s.table_readers), mib(s.block_cache), mib(s.block_cache_pinned),
      mib(store->staged_bytes()), mib(l.memtables), mib(l.table_readers), mib(l.block_cache),
      mib(l.block_cache_pinned));
}

struct Recorded {
  uint64_t close_seq = 0;
  uint64_t covered_seq = 0;
  std::map<std::string, std::string> digests;
};

absl::StatusOr<std::map<std::string, Recorded>> FromCloses(
    const std::vector<settlement::CloseRecord>& closes) {
  std::map<std::string, Recorded> out;
  for (const auto& c : closes) {
    Recorded& r = out[c.period.ToString()];
    r.close_seq = c.close_seq;
    r.covered_seq = c.covered_seq;
    for (const auto& [doc, sha] : c.digests) r.digests[doc] = sha;
  }
  return out;
}

absl::StatusOr<std::map<std::string, Recorded>> FromJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("cannot read " + path);
  nlohmann::json doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || doc.value("format", "") != "gpuledger.closes/1") {
    return absl::InvalidArgumentError(
        path + " is not a gpuledger.closes/1 document (`gpuledger settle status --format json`)");
  }
  std::map<std::string, Recorded> out;
  for (const auto& c : doc["closes"]) {
    if (!c.is_object() || !c.contains("period") || !c["period"].is_string()) {
      return absl::InvalidArgumentError(path + ": a close without a period");
    }
    Recorded& r = out[c["period"].get<std::string>()];
    r.close_seq = c.value("close_seq", uint64_t{0});
    r.covered_seq = c.value("covered_seq", uint64_t{0});
    for (const auto& d : c.value("digests", nlohmann::json::array())) {
      r.digests[d.value("document", "")] = d.value("sha256", "");
    }
  }
  return out;
}

}  // namespace

void AddAuditCommand(CLI::App& app, int* exit_code) {
  struct Args {
    std::string db;
    std::string export_file;
    std::string public_key;
    std::string store;
    std::string expect;
    std::string format = "table";
    settlement::SettleOptions options;
    ledger::VerifyOptions verify;
  };
  auto args = std::make_shared<Args>();
  CLI::App* audit = app.add_subcommand("audit", "Auditor tools.");
  audit->require_subcommand(1);
  CLI::App* cmd = audit->add_subcommand(
      "replay",
      "Rebuild every closed period from the ledger (or an export) on a fresh, throw-away\n"
      "settlement store, and compare each document's digest with the one recorded at close:\n"
      "in the operator's settlement store (--store, default <db>.settlement) or in a\n"
      "`gpuledger settle status --format json` file (--expect). The chain is verified first.\n"
      "Exit status: 0 every digest matches; 1 a difference or a failure (each is listed).");
  auto* src = cmd->add_option_group("source", "What to replay");
  src->add_option("--db", args->db, "Ledger directory");
  src->add_option("--export", args->export_file, "An export file (`gpuledger ledger export`)");
  src->require_option(1);
  cmd->add_option("--public-key", args->public_key,
                  "The operator's first published public key (PEM) to check signed checkpoints "
                  "with; every entry must then be signed");
  cmd->add_flag("--allow-unsigned-tail", args->verify.allow_unsigned_tail,
                "With --public-key: accept entries after the last signed checkpoint");
  cmd->add_option("--store", args->store, "Settlement store holding the recorded digests");
  cmd->add_option("--expect", args->expect, "gpuledger.closes/1 JSON with the recorded digests");
  cmd->add_option("--vat-bp", args->options.vat_bp, "VAT basis points the documents used")
      ->check(CLI::Range(0, 10'000))
      ->capture_default_str();
  cmd->add_option("--format", args->format, "table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  cmd->callback([args, exit_code] {
    std::unique_ptr<ledger::SignatureVerifier> key;
    if (!args->public_key.empty()) {
      auto k = ledger::SignatureVerifier::FromPublicKeyFile(args->public_key);
      if (!k.ok()) {
        *exit_code = Report(k.status());
        return;
      }
      key = *std::move(k);
    }
    // 0. What was recorded at close, read first so a missing store fails before a long replay.
    absl::StatusOr<std::map<std::string, Recorded>> recorded;
    std::string recorded_from;
    if (!args->expect.empty()) {
      recorded = FromJsonFile(args->expect);
      recorded_from = args->expect;
    } else {
      std::string path = args->store;
      if (path.empty() && !args->db.empty()) path = DefaultStorePath(args->db);
      if (path.empty()) {
        *exit_code = UsageError(absl::InvalidArgumentError(
            "replaying an export needs the recorded digests: --store DIR or --expect FILE"));
        return;
      }
      settlement::StoreOptions ro;
      ro.read_only = true;
      ro.create_if_missing = false;
      auto rstore = settlement::Store::Open(path, ro);
      if (!rstore.ok()) {
        *exit_code = Report(absl::Status(
            rstore.status().code(),
            absl::StrCat(rstore.status().message(),
                         "; audit replay compares against the digests recorded at close: "
                         "point --store at the operator's settlement store, or pass --expect "
                         "with the output of `gpuledger settle status --format json`")));
        return;
      }
      auto rengine = settlement::Engine::Open(rstore->get(), args->options);
      if (!rengine.ok()) {
        *exit_code = Report(rengine.status());
        return;
      }
      recorded = FromCloses((*rengine)->Closes());
      recorded_from = path;
    }
    if (!recorded.ok()) {
      *exit_code = Report(recorded.status());
      return;
    }

    // 1. The chain.
    args->verify.progress = VerifyProgressLog();
    std::unique_ptr<ledger::Ledger> ledger;
    absl::StatusOr<ledger::VerifyReport> report;
    if (!args->db.empty()) {
      ledger::LedgerOptions lo;
      lo.read_only = true;
      lo.create_if_missing = false;
      auto opened = ledger::Ledger::Open(args->db, lo);
      if (!opened.ok()) {
        *exit_code = Report(opened.status());
        return;
      }
      ledger = *std::move(opened);
      report = ledger::Verify(*ledger, key.get(), args->verify);
    } else {
      std::ifstream in(args->export_file, std::ios::binary);
      if (!in) {
        *exit_code = Report(absl::NotFoundError("cannot read " + args->export_file));
        return;
      }
      report = ledger::VerifyExport(in, key.get(), args->verify);
    }
    if (!report.ok()) {
      *exit_code = Report(report.status());
      return;
    }
    if (!report->ok) {
      *exit_code = Report(absl::DataLossError(absl::StrCat("the ledger does not verify at entry ",
                                                           report->first_bad_seq, ": ",
                                                           report->problem, "; nothing replayed")));
      return;
    }
    spdlog::info("chain verified: {} entries, {} signed checkpoints (key: {})",
                 report->entries_checked, report->checkpoints_verified, report->key_source);
    if (report->key_source != "none" && report->unsigned_entries() > 0) {
      spdlog::warn("entries {}..{} ({}) are not covered by a signed checkpoint",
                   report->unsigned_from(), report->head.seq, report->unsigned_entries());
    }

    // 2. Replay on a fresh store.
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/gpuledger-replay.XXXXXX");
    if (::mkdtemp(templ.data()) == nullptr) {
      *exit_code = Report(absl::UnavailableError("cannot create a temporary directory"));
      return;
    }
    struct Cleanup {
      std::string dir;
      ~Cleanup() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
      }
    } cleanup{templ};
    settlement::StoreOptions so;
    so.sync = false;
    auto store = settlement::Store::Open(templ + "/store", so);
    if (!store.ok()) {
      *exit_code = Report(store.status());
      return;
    }
    auto engine = settlement::Engine::Open(store->get(), args->options);
    if (!engine.ok()) {
      *exit_code = Report(engine.status());
      return;
    }
    const auto start = std::chrono::steady_clock::now();
    settlement::CatchUpOptions catch_up;
    catch_up.batch = 50'000;
    uint64_t logged = 0;
    auto memory_logged = start;
    catch_up.progress = [&](uint64_t applied, uint64_t) {
      if (applied % catch_up.batch != 0 || applied == logged) return;  // not the end of the run
      logged = applied;
      spdlog::info("replayed {} entries", applied);
      const auto now = std::chrono::steady_clock::now();
      if (now - memory_logged < std::chrono::seconds(10)) return;
      memory_logged = now;
      LogReplayMemory(ledger.get(), store->get());
    };
    absl::StatusOr<uint64_t> replayed_count;
    if (ledger) {
      catch_up.until_seq = report->head.seq;
      replayed_count = settlement::CatchUp(*ledger, engine->get(), catch_up);
    } else {
      std::ifstream in(args->export_file, std::ios::binary);
      replayed_count = settlement::CatchUp(
          [&](uint64_t from_seq, const settlement::EntryVisitor& visit) -> absl::Status {
            bool more = true;
            return ledger::ReadExport(in, [&](const ledger::StoredEntry& e) -> absl::Status {
              if (!more || e.seq < from_seq) return absl::OkStatus();
              GPULEDGER_ASSIGN_OR_RETURN(more, visit(e));
              return absl::OkStatus();
            });
          },
          0, engine->get(), catch_up);
    }
    if (!replayed_count.ok()) {
      *exit_code = Report(replayed_count.status());
      return;
    }
    const uint64_t applied = *replayed_count;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    spdlog::info("replayed {} entries in {:.2f} s", applied, secs);
    LogReplayMemory(ledger.get(), store->get());
    auto replayed = FromCloses((*engine)->Closes());
    // 4. Compare.
    std::vector<std::string> problems;
    int documents = 0;
    for (const auto& [period, want] : *recorded) {
      auto it = replayed->find(period);
      if (it == replayed->end()) {
        problems.push_back(absl::StrCat(period,
                                        ": recorded as closed, but the ledger has no "
                                        "close of it"));
        continue;
      }
      const Recorded& got = it->second;
      if (got.close_seq != want.close_seq || got.covered_seq != want.covered_seq) {
        problems.push_back(absl::StrCat(period, ": closed at entry ", got.close_seq,
                                        " in the ledger, recorded at ", want.close_seq));
      }
      for (const auto& [doc, sha] : want.digests) {
        ++documents;
        auto d = got.digests.find(doc);
        if (d == got.digests.end()) {
          problems.push_back(absl::StrCat(period, " ", doc, ": recorded, not in the replay"));
        } else if (d->second != sha) {
          problems.push_back(absl::StrCat(period, " ", doc, ": digest ", d->second, " replayed, ",
                                          sha, " recorded"));
        }
      }
      for (const auto& [doc, sha] : got.digests) {
        if (!want.digests.contains(doc)) {
          problems.push_back(absl::StrCat(period, " ", doc, ": in the replay, not recorded"));
        }
      }
    }
    std::vector<std::string> unrecorded;
    for (const auto& [period, got] : *replayed) {
      if (!recorded->contains(period)) unrecorded.push_back(period);
    }
    if (args->format == "json") {
      nlohmann::ordered_json doc = {{"format", "gpuledger.audit_replay/1"},
                                    {"entries_replayed", applied},
                                    {"periods_compared", recorded->size()},
                                    {"documents_compared", documents},
                                    {"recorded_from", recorded_from},
                                    {"differences", problems},
                                    {"closed_in_ledger_not_recorded", unrecorded},
                                    {"ok", problems.empty()}};
      std::cout << doc.dump(2) << "\n";
    } else {
      std::cout << absl::StrFormat(
          "Replayed %d ledger entries in %.2f s; compared %d closed period(s), %d document "
          "digest(s) with %s\n",
          applied, secs, recorded->size(), documents, recorded_from);
      for (const auto& p : problems) std::cout << "  DIFFERENCE " << p << "\n";
      for (const auto& p : unrecorded) {
        std::cout << "  note: " << p << " is closed in the ledger but not in " << recorded_from
                  << " (that store has not caught up)\n";
      }
      std::cout << (problems.empty()
                        ? "OK: every digest matches\n"
                        : absl::StrCat("FAILED: ", problems.size(), " difference(s)\n"));
    }
    if (!problems.empty()) *exit_code = kExitFailed;
  });

  struct DecisionArgs {
    std::string db;
    std::string topic_prefix;
    std::string format = "table";
    size_t max_listed = 100;
  };
  auto dargs = std::make_shared<DecisionArgs>();
  CLI::App* decisions = audit->add_subcommand(
      "decisions",
      "Decide every ledger entry's input again, from the ledger alone, with the code ingest\n"
      "runs (decode, field checks, the registry and usage checks), and compare each decision\n"
      "with the one recorded: accepted, parked, or the reason code. The validation limits are\n"
      "the ones recorded in the ledger (ValidationSettings), so no configuration is needed; a\n"
      "ledger that recorded none is decided with the defaults. The validator's state follows\n"
      "the recorded decisions, so one difference does not cascade.\n"
      "Exit status: 0 every decision agrees; 1 a difference (each listed, up to --max-listed)\n"
      "or a failure.");
  decisions->add_option("--db", dargs->db, "Ledger directory")->required()->envname("GPULEDGER_DB");
  decisions
      ->add_option("--topic-prefix", dargs->topic_prefix,
                   "Namespace prefix of the topics ingest read (as given to ingest)")
      ->envname("GPULEDGER_TOPIC_PREFIX");
  decisions->add_option("--max-listed", dargs->max_listed, "Differences listed at most")
      ->capture_default_str();
  decisions->add_option("--format", dargs->format, "table or json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  decisions->callback([dargs, exit_code] {
    if (absl::Status st = ingest::TopicNames::CheckPrefix(dargs->topic_prefix); !st.ok()) {
      *exit_code = UsageError(st);
      return;
    }
    ledger::LedgerOptions lo;
    lo.read_only = true;
    lo.create_if_missing = false;
    auto ledger = ledger::Ledger::Open(dargs->db, lo);
    if (!ledger.ok()) {
      *exit_code = Report(ledger.status());
      return;
    }
    ingest::RedecideOptions options;
    options.topics = ingest::TopicNames(dargs->topic_prefix);
    options.max_listed = dargs->max_listed;
    const auto start = std::chrono::steady_clock::now();
    options.progress = [&](uint64_t done, uint64_t head) {
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      spdlog::info("decided {} of {} entries again ({:.0f} entries/s)", done, head,
                   secs > 0 ? done / secs : 0.0);
    };
    auto report = ingest::Redecide(**ledger, options);
    if (!report.ok()) {
      *exit_code = Report(report.status());
      return;
    }
    if (dargs->format == "json") {
      nlohmann::ordered_json differences = nlohmann::ordered_json::array();
      for (const auto& d : report->differences) {
        differences.push_back({{"seq", d.seq},
                               {"recorded", d.recorded},
                               {"decided", d.decided},
                               {"detail", d.detail}});
      }
      nlohmann::ordered_json doc = {{"format", "gpuledger.audit_decisions/1"},
                                    {"entries", report->entries},
                                    {"agree", report->agree},
                                    {"differ", report->differ},
                                    {"duplicates_checked", report->duplicates_checked},
                                    {"differences", differences},
                                    {"ok", report->differ == 0}};
      std::cout << doc.dump(2) << "\n";
    } else {
      std::cout << absl::StrFormat(
          "Decided %d ledger entries again: %d agree, %d differ (%d conflicting duplicates "
          "checked against the ledger's identity index)\n",
          report->entries, report->agree, report->differ, report->duplicates_checked);
      for (const auto& d : report->differences) {
        std::cout << "  DIFFERENCE entry " << d.seq << ": recorded " << d.recorded
                  << ", decided again " << d.decided
                  << (d.detail.empty() ? "" : absl::StrCat(" (", d.detail, ")")) << "\n";
      }
      if (report->differ > report->differences.size()) {
        std::cout << "  ... and " << report->differ - report->differences.size() << " more\n";
      }
      std::cout << (report->differ == 0
                        ? "OK: every decision agrees\n"
                        : absl::StrCat("FAILED: ", report->differ, " decision(s) differ\n"));
    }
    if (report->differ > 0) *exit_code = kExitFailed;
  });
}

}  // namespace gpuledger::cli
