// `gpuledger schemas`: what a CSP's developer builds a client from, generated from the
// compiled-in descriptors of schemas/gpuledger/v1 (the build writes them to build/schemas/).
#include <google/protobuf/descriptor.pb.h>

#include <fstream>
#include <iostream>
#include <set>

#include "absl/strings/str_cat.h"
#include "commands.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/json_schema.h"

namespace gpuledger::cli {

namespace {

// `file` and the files it imports, imports first (a FileDescriptorSet protoc would write with
// --include_imports).
void AddFile(const google::protobuf::FileDescriptor* file, std::set<std::string>* seen,
             google::protobuf::FileDescriptorSet* out) {
  if (!seen->insert(file->name()).second) return;
  for (int i = 0; i < file->dependency_count(); ++i) AddFile(file->dependency(i), seen, out);
  file->CopyTo(out->add_file());
}

absl::Status WriteOut(const std::string& path, const std::string& bytes) {
  if (path.empty() || path == "-") {
    std::cout << bytes;
    return std::cout ? absl::OkStatus() : absl::UnavailableError("cannot write to stdout");
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  out.close();
  return out ? absl::OkStatus() : absl::UnavailableError(absl::StrCat("cannot write ", path));
}

}  // namespace

void AddSchemasCommand(CLI::App& app, int* exit_code) {
  struct Args {
    std::string kind = "usage";
    std::string output;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "schemas",
      "The event schemas for clients, from the schemas gpuledger was built with: JSON Schema of\n"
      "the JSON forms `publish` and POST /v1/events read, and the protobuf descriptor set of the\n"
      "binary messages a Kafka producer writes (docs/FORMATS.md).");
  cmd->require_subcommand(1);
  CLI::App* js = cmd->add_subcommand(
      "json-schema", "JSON Schema (draft 2020-12) of a usage or a registry event's JSON form.");
  js->add_option("kind", args->kind, "usage or registry")
      ->check(CLI::IsMember({"usage", "registry"}))
      ->capture_default_str();
  js->add_option("-o,--output", args->output, "Write here instead of stdout");
  js->callback([args, exit_code] {
    const bool usage = args->kind == "usage";
    const std::string schema = ingest::JsonSchemaOf(
        usage ? v1::UsageEvent::descriptor() : v1::RegistryEvent::descriptor(),
        usage ? "urn:gpuledger:schema:v1:usage-event" : "urn:gpuledger:schema:v1:registry-event");
    if (absl::Status st = WriteOut(args->output, schema); !st.ok()) *exit_code = Report(st);
  });
  CLI::App* ds = cmd->add_subcommand(
      "descriptor-set",
      "A FileDescriptorSet (protobuf binary) of gpuledger/v1's usage and registry messages with\n"
      "their imports: what a client loads to encode and decode the Kafka messages without\n"
      "protoc (the build also writes it with protoc: build/schemas/gpuledger-v1.binpb).");
  ds->add_option("-o,--output", args->output, "Write here (required: the set is binary)")
      ->required();
  ds->callback([args, exit_code] {
    google::protobuf::FileDescriptorSet set;
    std::set<std::string> seen;
    AddFile(v1::UsageEvent::descriptor()->file(), &seen, &set);
    AddFile(v1::RegistryEvent::descriptor()->file(), &seen, &set);
    if (absl::Status st = WriteOut(args->output, set.SerializeAsString()); !st.ok()) {
      *exit_code = Report(st);
    }
  });
}

}  // namespace gpuledger::cli
