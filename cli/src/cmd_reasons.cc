#include <iostream>

#include "commands.h"
#include "ingest/reasons.h"

namespace gpuledger::cli {

void AddReasonsCommand(CLI::App& app, int* /*exit_code*/) {
  auto markdown = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand(
      "reasons",
      "List every reason code a rejected event can carry, what it means and what the "
      "sender should do.");
  cmd->add_flag("--markdown", *markdown, "Print a Markdown table (as in docs/REASON_CODES.md)");
  cmd->callback([markdown] {
    if (*markdown) {
      std::cout << "| code | meaning | what the sender should do |\n|---|---|---|\n";
      for (const auto& r : ingest::reason::AllReasons()) {
        std::cout << "| `" << r.code << "` | " << r.meaning << " | " << r.what_to_do << " |\n";
      }
      return;
    }
    for (const auto& r : ingest::reason::AllReasons()) {
      std::cout << r.code << "\n    " << r.meaning << "\n    -> " << r.what_to_do << "\n";
    }
  });
}

}  // namespace gpuledger::cli
