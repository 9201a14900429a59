#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "commands.h"
#include "ledger/signing.h"

namespace gpuledger::cli {

namespace {

absl::Status WriteNew(const std::string& path, const std::string& content, mode_t mode) {
  if (std::filesystem::exists(path)) {
    return absl::AlreadyExistsError(
        absl::StrCat(path, " already exists; refusing to overwrite a key (move it away first)"));
  }
  {
    std::ofstream out(path, std::ios::binary);
    out << content;
    if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  }
  if (::chmod(path.c_str(), mode) != 0) {
    return absl::UnavailableError(absl::StrCat("cannot set permissions of ", path));
  }
  return absl::OkStatus();
}

}  // namespace

void AddKeysCommand(CLI::App& app, int* exit_code) {
  CLI::App* keys = app.add_subcommand("keys", "Manage the operator's checkpoint signing key.");
  keys->require_subcommand(1);
  struct Args {
    std::string private_key;
    std::string public_key;
  };
  auto args = std::make_shared<Args>();
  CLI::App* gen = keys->add_subcommand(
      "generate",
      "Create a new Ed25519 key pair. The private key (mode 0600) is for `ingest --signing-key`;\n"
      "the public key is what the operator publishes to auditors for `ledger verify`.");
  gen->add_option("--private-key", args->private_key, "Where to write the private key (PEM)")
      ->required();
  gen->add_option("--public-key", args->public_key, "Where to write the public key (PEM)")
      ->required();
  gen->callback([args, exit_code] {
    auto signer = ledger::Signer::Generate();
    if (!signer.ok()) {
      *exit_code = Report(signer.status());
      return;
    }
    absl::Status st = WriteNew(args->private_key, (*signer)->PrivateKeyPem(), 0600);
    if (st.ok()) st = WriteNew(args->public_key, (*signer)->PublicKeyPem(), 0644);
    if (!st.ok()) {
      *exit_code = Report(st);
      return;
    }
    spdlog::info("wrote {} and {} (key id {})", args->private_key, args->public_key,
                 ledger::ToHex((*signer)->KeyId()).substr(0, 16));
  });
}

}  // namespace gpuledger::cli
