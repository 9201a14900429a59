#include <google/protobuf/util/json_util.h>
#include <spdlog/spdlog.h>

#include <iostream>

#include "absl/strings/str_cat.h"
#include "commands.h"
#include "ledger/ledger.h"
#include "ledger/verify.h"

namespace gpuledger::cli {

namespace {

absl::StatusOr<std::unique_ptr<ledger::Ledger>> OpenReadOnly(const std::string& db) {
  ledger::LedgerOptions lo;
  lo.read_only = true;
  return ledger::Ledger::Open(db, lo);
}

void AddVerify(CLI::App& ledger_cmd, int* exit_code) {
  auto db = std::make_shared<std::string>();
  CLI::App* cmd = ledger_cmd.add_subcommand(
      "verify",
      "Check the whole ledger: every entry's hash chains to the one before, sequence numbers are\n"
      "dense from 1, the head matches the last entry, and the dedup index matches the entries.\n"
      "Exit 0 if it verifies, 1 (naming the first bad seq) if not.");
  cmd->add_option("--db", *db, "Ledger directory")->required()->envname("GPULEDGER_DB");
  cmd->callback([db, exit_code] {
    auto ledger = OpenReadOnly(*db);
    if (!ledger.ok()) {
      *exit_code = Report(ledger.status());
      return;
    }
    auto report = ledger::Verify(**ledger);
    if (!report.ok()) {
      *exit_code = Report(report.status());
      return;
    }
    if (!report->ok) {
      std::cout << "FAILED at seq " << report->first_bad_seq << ": " << report->problem << "\n"
                << "entries verified before it: " << report->entries_checked << "\n";
      *exit_code = kExitFailed;
      return;
    }
    std::cout << "OK: " << report->entries_checked << " entries, " << report->dedup_records_checked
              << " dedup records; head seq " << report->head.seq << " hash "
              << ledger::ToHex(report->head.hash) << "\n";
  });
}

void AddShow(CLI::App& ledger_cmd, int* exit_code) {
  struct Args {
    std::string db;
    uint64_t seq = 0;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = ledger_cmd.add_subcommand(
      "show", "Print one ledger entry as JSON, with its decoded event and its chain hash.");
  cmd->add_option("seq", args->seq, "Sequence number")->required()->check(CLI::PositiveNumber);
  cmd->add_option("--db", args->db, "Ledger directory")->required()->envname("GPULEDGER_DB");
  cmd->callback([args, exit_code] {
    auto ledger = OpenReadOnly(args->db);
    if (!ledger.ok()) {
      *exit_code = Report(ledger.status());
      return;
    }
    auto entry = (*ledger)->Get(args->seq);
    if (!entry.ok()) {
      *exit_code = Report(entry.status());
      return;
    }
    google::protobuf::util::JsonPrintOptions po;
    po.add_whitespace = true;
    po.preserve_proto_field_names = true;
    std::string json;
    (void)google::protobuf::util::MessageToJsonString(entry->entry, &json, po);
    std::cout << json << "hash: " << ledger::ToHex(entry->hash) << "\n";
  });
}

}  // namespace

void AddLedgerCommand(CLI::App& app, int* exit_code) {
  CLI::App* cmd = app.add_subcommand("ledger", "Inspect and verify the ledger.");
  cmd->require_subcommand(1);
  AddVerify(*cmd, exit_code);
  AddShow(*cmd, exit_code);
}

}  // namespace gpuledger::cli
