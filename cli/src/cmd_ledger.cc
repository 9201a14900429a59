#include <spdlog/spdlog.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "api/routes.h"
#include "base/process_memory.h"
#include "commands.h"
#include "ledger/export.h"
#include "ledger/ledger.h"
#include "ledger/verify.h"

namespace gpuledger::cli {

std::function<void(std::string_view, uint64_t, uint64_t)> VerifyProgressLog() {
  struct State {
    std::string stage;
    std::chrono::steady_clock::time_point stage_start, last_log;
  };
  auto state = std::make_shared<State>();
  return [state](std::string_view stage, uint64_t done, uint64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (stage != state->stage) {
      state->stage = std::string(stage);
      state->stage_start = now;
      state->last_log = now;
    }
    const bool end = total != 0 ? done >= total : false;
    if (now - state->last_log < std::chrono::seconds(2) && !end) return;
    state->last_log = now;
    const double secs = std::chrono::duration<double>(now - state->stage_start).count();
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    const base::ProcessMemory mem = base::ReadProcessMemory();
    const double resident = static_cast<double>(mem.rss) / (1 << 20);
    const double heap = static_cast<double>(mem.heap_in_use) / (1 << 20);
    if (total != 0) {
      spdlog::info(
          "verify {}: {} of {} ({:.1f}%), {:.0f}/s; resident {:.0f} MiB, heap in use {:.0f}", stage,
          done, total, 100.0 * static_cast<double>(done) / static_cast<double>(total), rate,
          resident, heap);
    } else {
      spdlog::info("verify {}: {}, {:.0f}/s; resident {:.0f} MiB, heap in use {:.0f}", stage, done,
                   rate, resident, heap);
    }
  };
}

namespace {

// `for_verify`: open a ledger whose head does not match its last entry too, so that verification
// names the first entry that does not verify instead of refusing to look.
absl::StatusOr<std::unique_ptr<ledger::Ledger>> OpenReadOnly(const std::string& db,
                                                             bool for_verify = false) {
  ledger::LedgerOptions lo;
  lo.read_only = true;
  lo.open_inconsistent = for_verify;
  return ledger::Ledger::Open(db, lo);
}

void PrintReport(const ledger::VerifyReport& r, int* exit_code) {
  if (!r.ok) {
    std::cout << "FAILED at seq " << r.first_bad_seq << ": " << r.problem << "\n"
              << "entries verified before it: " << r.entries_checked << "\n";
    *exit_code = kExitFailed;
    return;
  }
  std::cout << "OK: " << r.entries_checked << " entries chained";
  if (r.first_seq > 1) {
    std::cout << " (entries " << r.first_seq << ".." << r.head.seq << ", a slice starting after "
              << "the signed checkpoint at seq " << r.first_seq - 1 << ")";
  }
  std::cout << ", head seq " << r.head.seq << " hash " << ledger::ToHex(r.head.hash) << "\n";
  if (r.dedup_records_checked > 0) {
    std::cout << "dedup index: " << r.dedup_records_checked << " records match the entries\n";
  }
  if (r.key_source == "none") {
    std::cout << "signatures: NOT checked (no public key given)\n";
    return;
  }
  std::cout << "signatures: " << r.checkpoints_verified << " checkpoints verified with the "
            << (r.key_source == "given" ? "given public key"
                                        : "key stored in the ledger (give --public-key to "
                                          "check authorship)");
  if (r.key_rotations > 0)
    std::cout << " and the " << r.key_rotations << " key rotation(s) from it";
  std::cout << "; signed up to seq " << r.last_checkpoint_seq << "\n";
  if (r.unsigned_entries() > 0) {
    std::cout << "UNSIGNED: entries " << r.unsigned_from() << ".." << r.head.seq << " ("
              << r.unsigned_entries()
              << ") are chained but no signed checkpoint covers them: anyone with disk access "
                 "could have appended or rewritten them"
              << (r.key_source == "given" ? " (accepted because of --allow-unsigned-tail)" : "")
              << "\n";
  }
}

void AddVerify(CLI::App& ledger_cmd, int* exit_code) {
  struct Args {
    std::string db;
    std::string export_file;
    std::string public_key;
    ledger::VerifyOptions options;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = ledger_cmd.add_subcommand(
      "verify",
      "Prove the ledger was not changed: every entry's hash chains to the one before, seqs are\n"
      "dense from 1, every signed checkpoint matches the chain and verifies with the public key,\n"
      "and (live ledger) the head, the dedup index and the counters match the entries.\n"
      "With --public-key, signed checkpoints must cover every entry (a writer that stopped\n"
      "cleanly signs its head); key rotations recorded in the ledger are followed from the\n"
      "first published key. Exit 0 if it verifies, 1 (naming the first bad seq) if not, 3 if\n"
      "it cannot be read.");
  cmd->add_option("--db", args->db, "Ledger directory")->envname("GPULEDGER_DB");
  cmd->add_option("--export", args->export_file,
                  "An export file (`ledger export`) to verify instead of a live ledger (takes "
                  "precedence over --db)");
  cmd->add_option("--public-key", args->public_key,
                  "The operator's first published public key (PEM) to check checkpoint "
                  "signatures");
  cmd->add_flag("--allow-unsigned-tail", args->options.allow_unsigned_tail,
                "With --public-key: accept entries after the last signed checkpoint (a live "
                "ledger); they are listed as UNSIGNED");
  cmd->callback([args, exit_code] {
    std::unique_ptr<ledger::SignatureVerifier> key;
    if (!args->public_key.empty()) {
      auto k = ledger::SignatureVerifier::FromPublicKeyFile(args->public_key);
      if (!k.ok()) {
        *exit_code = Report(k.status());
        return;
      }
      key = std::move(*k);
    }
    args->options.progress = VerifyProgressLog();
    absl::StatusOr<ledger::VerifyReport> report;
    if (!args->export_file.empty()) {
      std::ifstream in(args->export_file, std::ios::binary);
      if (!in) {
        Report(absl::NotFoundError("cannot read " + args->export_file));
        *exit_code = kExitUnreadable;
        return;
      }
      report = ledger::VerifyExport(in, key.get(), args->options);
    } else if (!args->db.empty()) {
      auto l = OpenReadOnly(args->db, /*for_verify=*/true);
      if (!l.ok()) {
        Report(l.status());
        *exit_code = kExitUnreadable;
        return;
      }
      report = ledger::Verify(**l, key.get(), args->options);
    } else {
      *exit_code = UsageError(absl::InvalidArgumentError("give --db PATH or --export FILE"));
      return;
    }
    if (!report.ok()) {
      Report(report.status());
      *exit_code = kExitUnreadable;
      return;
    }
    PrintReport(*report, exit_code);
  });
}

void AddExport(CLI::App& ledger_cmd, int* exit_code) {
  struct Args {
    std::string db;
    std::string out;
    ledger::ExportOptions options;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = ledger_cmd.add_subcommand(
      "export",
      "Write the ledger (or a slice) as a length-delimited protobuf stream of ExportRecord\n"
      "(docs/LEDGER.md), for auditors: `ledger verify --export FILE --public-key KEY.pem`\n"
      "checks it with nothing else.");
  cmd->add_option("--db", args->db, "Ledger directory")->required()->envname("GPULEDGER_DB");
  cmd->add_option("--out,-o", args->out, "Output file ('-': stdout)")->required();
  cmd->add_option("--from", args->options.from_seq, "First seq")->capture_default_str();
  cmd->add_option("--to", args->options.to_seq, "Last seq (0: the head)")->capture_default_str();
  cmd->callback([args, exit_code] {
    auto l = OpenReadOnly(args->db);
    if (!l.ok()) {
      *exit_code = Report(l.status());
      return;
    }
    const uint64_t head = (*l)->head().seq;
    args->options.progress = [head](uint64_t seq) {
      spdlog::info("exported {} of {} entries", seq, head);
    };
    std::ofstream file;
    if (args->out != "-") file.open(args->out, std::ios::binary | std::ios::trunc);
    std::ostream& out = args->out == "-" ? std::cout : file;
    auto summary = ledger::ExportLedger(**l, out, args->options);
    if (!summary.ok()) {
      *exit_code = Report(summary.status());
      return;
    }
    spdlog::info("exported entries {}..{} ({} entries, {} checkpoints) to {}", summary->first_seq,
                 summary->last_seq, summary->entries, summary->checkpoints, args->out);
    if (summary->first_seq != std::max<uint64_t>(args->options.from_seq, 1) ||
        (args->options.to_seq != 0 && summary->last_seq != args->options.to_seq)) {
      spdlog::info(
          "the slice was widened to signed checkpoints at both ends, so that it "
          "verifies on its own with the public key");
    }
  });
}

void AddStats(CLI::App& ledger_cmd, int* exit_code) {
  struct Args {
    std::string db;
    bool json = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = ledger_cmd.add_subcommand(
      "stats",
      "Counts by outcome and reason, duplicates dropped, head, checkpoints, disk size, and\n"
      "for a ledger with a ledger topic its writer, epoch and position in the topic.");
  cmd->add_option("--db", args->db, "Ledger directory")->required()->envname("GPULEDGER_DB");
  cmd->add_flag("--json", args->json, "Print JSON instead of text");
  cmd->callback([args, exit_code] {
    auto l = OpenReadOnly(args->db);
    if (!l.ok()) {
      *exit_code = Report(l.status());
      return;
    }
    const auto counters = (*l)->Counters();
    const ledger::Head head = (*l)->head();
    uint64_t checkpoints = 0;
    uint64_t last_checkpoint = 0;
    absl::Status st = (*l)->ScanCheckpoints([&](const gpuledger::v1::Checkpoint& cp) {
      ++checkpoints;
      last_checkpoint = cp.seq();
      return absl::OkStatus();
    });
    if (!st.ok()) {
      *exit_code = Report(st);
      return;
    }
    nlohmann::ordered_json j;
    j["head_seq"] = head.seq;
    j["head_hash"] = ledger::ToHex(head.hash);
    j["accepted"] = counters.accepted();
    j["rejected"] = counters.rejected();
    j["duplicates_dropped"] = counters.duplicates();
    j["parked_entries"] = counters.parked();
    std::map<std::string, uint64_t> reasons(counters.rejected_by_reason().begin(),
                                            counters.rejected_by_reason().end());
    j["rejected_by_reason"] = reasons;
    j["checkpoint_interval"] = (*l)->checkpoint_interval();
    j["checkpoints"] = checkpoints;
    j["last_checkpoint_seq"] = last_checkpoint;
    j["disk_bytes"] = (*l)->ApproximateDiskBytes();
    const auto replication = (*l)->replication();
    if (replication.epoch() > 0) {
      j["ledger_topic"] = {{"epoch", replication.epoch()},
                           {"writer", replication.writer()},
                           {"next_offset", replication.next_offset()}};
    }
    if (args->json) {
      std::cout << j.dump(2) << "\n";
      return;
    }
    std::cout << "head seq            " << head.seq << "\n"
              << "head hash           " << ledger::ToHex(head.hash) << "\n"
              << "accepted            " << counters.accepted() << "\n"
              << "rejected            " << counters.rejected() << "\n";
    for (const auto& [reason, n] : reasons) std::cout << "  " << reason << " " << n << "\n";
    std::cout << "parked (resolved later by another entry) " << counters.parked() << "\n"
              << "duplicates dropped  " << counters.duplicates() << "\n"
              << "checkpoints         " << checkpoints << " (every " << (*l)->checkpoint_interval()
              << ", last at seq " << last_checkpoint << ")\n"
              << "disk                " << (*l)->ApproximateDiskBytes() << " bytes\n";
    if (replication.epoch() > 0) {
      std::cout << "ledger topic        writer '" << replication.writer() << "', epoch "
                << replication.epoch() << ", applied to offset " << replication.next_offset()
                << "\n";
    }
  });
}

void AddGaps(CLI::App& ledger_cmd, int* exit_code) {
  struct Args {
    std::string db;
    bool all = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = ledger_cmd.add_subcommand(
      "gaps",
      "Producer sequence numbers a CSP sent that never reached the ledger: per (CSP, producer),\n"
      "the highest contiguous seq and the missing ranges above it. Exit 0 whether or not there\n"
      "are gaps; the output says.");
  cmd->add_option("--db", args->db, "Ledger directory")->required()->envname("GPULEDGER_DB");
  cmd->add_flag("--all", args->all, "Also list producers without gaps");
  cmd->callback([args, exit_code] {
    auto l = OpenReadOnly(args->db);
    if (!l.ok()) {
      *exit_code = Report(l.status());
      return;
    }
    uint64_t producers = 0;
    uint64_t with_gaps = 0;
    absl::Status st = (*l)->ScanProducers([&](const std::string& csp, const std::string& producer,
                                              const ledger::ProducerProgress& p) {
      ++producers;
      const auto missing = p.Missing();
      if (!missing.empty() || p.overflowed()) ++with_gaps;
      if (missing.empty() && !p.overflowed() && !args->all) return absl::OkStatus();
      std::cout << csp << " " << producer << ": contiguous to " << p.contiguous() << ", highest "
                << p.highest() << ", missing " << p.MissingCount();
      size_t shown = 0;
      for (const auto& [first, last] : missing) {
        if (++shown > 20) {
          std::cout << " ...";
          break;
        }
        std::cout << (shown == 1 ? ": " : ", ") << first;
        if (last != first) std::cout << "-" << last;
      }
      if (p.overflowed()) std::cout << " (too many gaps to track them all)";
      std::cout << "\n";
      return absl::OkStatus();
    });
    if (!st.ok()) {
      *exit_code = Report(st);
      return;
    }
    std::cout << producers << " producer(s), " << with_gaps << " with gaps\n";
  });
}

void AddShow(CLI::App& ledger_cmd, int* exit_code) {
  struct Args {
    std::string db;
    uint64_t seq = 0;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = ledger_cmd.add_subcommand(
      "show",
      "Print one ledger entry as JSON, as GET /v1/ledger/entries/{seq} shows it: its fields, its\n"
      "chain hash, and the event it recorded decoded to JSON (`payload`; null when the bytes do\n"
      "not decode, as for MALFORMED) beside the bytes in base64 (`payload_base64`).");
  cmd->add_option("seq", args->seq, "Sequence number")->required()->check(CLI::PositiveNumber);
  cmd->add_option("--db", args->db, "Ledger directory")->required()->envname("GPULEDGER_DB");
  cmd->callback([args, exit_code] {
    auto l = OpenReadOnly(args->db);
    if (!l.ok()) {
      *exit_code = Report(l.status());
      return;
    }
    auto entry = (*l)->Get(args->seq);
    if (!entry.ok()) {
      *exit_code = Report(entry.status());
      return;
    }
    std::cout << api::EntryAsJson(*entry);
  });
}

}  // namespace

void AddLedgerCommand(CLI::App& app, int* exit_code) {
  CLI::App* cmd = app.add_subcommand(
      "ledger", "Inspect, export and verify the ledger; follow its ledger topic as a standby.");
  cmd->require_subcommand(1);
  AddVerify(*cmd, exit_code);
  AddExport(*cmd, exit_code);
  AddStats(*cmd, exit_code);
  AddGaps(*cmd, exit_code);
  AddShow(*cmd, exit_code);
  AddLedgerReplicationCommands(*cmd, exit_code);
}

}  // namespace gpuledger::cli
