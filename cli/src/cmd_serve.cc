#include <spdlog/spdlog.h>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "api/auth.h"
#include "api/server.h"
#include "api/service.h"
#include "commands.h"
#include "ingest/gateway.h"

namespace gpuledger::cli {

namespace {
std::atomic<bool> g_stop{false};
void OnServeSignal(int) { g_stop = true; }
}  // namespace

void AddServeCommand(CLI::App& app, int* exit_code) {
  struct Args {
    api::ServiceOptions service;
    api::ServerOptions server;
    ingest::EventProducerOptions producer;
    std::string kafka_config;
    std::string topic_prefix;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "Serve the HTTP API (/v1, docs/openapi.yaml) and pages (/ui) over the ledger while ingest\n"
      "keeps writing: the ledger is followed as a RocksDB secondary instance (refreshed every\n"
      "--refresh-ms) and the settlement store is kept up to date from it (so `gpuledger settle`\n"
      "cannot run at the same time: use the API). Bearer tokens from --tokens (hashed; the file\n"
      "is re-read when it changes: `gpuledger tokens add`; only its owner may write it and others\n"
      "may not read it, chmod 600; a bad line grants nothing, a missing file revokes every\n"
      "token). SIGTERM or SIGINT stops it.");
  cmd->add_option("--db", args->service.db, "Ledger directory")
      ->required()
      ->envname("GPULEDGER_DB");
  cmd->add_option("--store", args->service.store, "Settlement store (default <db>.settlement)")
      ->envname("GPULEDGER_STORE");
  cmd->add_option("--tokens", args->service.tokens_file, "Tokens file (sha256:<hex> <role> [name])")
      ->required()
      ->envname("GPULEDGER_TOKENS");
  cmd->add_option("--listen", args->server.listen, "host:port to listen on (port 0: any free)")
      ->capture_default_str();
  cmd->add_option("--tls-cert", args->server.tls_cert, "PEM certificate chain: serve HTTPS");
  cmd->add_option("--tls-key", args->server.tls_key, "PEM private key for --tls-cert");
  cmd->add_option("--threads", args->server.threads, "I/O threads")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--max-connections", args->server.max_connections,
                  "Open connections beyond which new ones get 503 (an idle keep-alive is closed "
                  "first to make room, if there is one)")
      ->check(CLI::Range(1, 100'000))
      ->capture_default_str();
  cmd->add_option("--max-connections-per-address", args->server.max_connections_per_address,
                  "Open connections from one client address beyond which its new ones get 503 "
                  "(behind a reverse proxy every client has its address: raise this)")
      ->check(CLI::Range(1, 100'000))
      ->capture_default_str();
  cmd->add_option("--max-response-bytes", args->service.response_bytes_max,
                  "Bytes beyond which an answer that is not paged or streamed (a document, a "
                  "period's list, one entry, a page of the UI) is refused with 422 "
                  "response_too_large, instead of being built and sent whole")
      ->check(CLI::Range(size_t{64} << 10, size_t{1} << 32))
      ->capture_default_str();
  cmd->add_option("--rate-limit", args->server.rate_limit_per_s,
                  "Requests a second per client address after --rate-burst (beyond: 429 with "
                  "Retry-After; /healthz and /readyz are not counted); 0: no limit")
      ->check(CLI::Range(0, 1'000'000))
      ->capture_default_str();
  cmd->add_option("--rate-burst", args->server.rate_burst,
                  "Requests a client address may make at once before --rate-limit applies")
      ->check(CLI::Range(1, 1'000'000))
      ->capture_default_str();
  cmd->add_option("--read-timeout-s", args->server.read_timeout_s,
                  "Seconds a client has to send a whole request")
      ->check(CLI::Range(1, 3'600))
      ->capture_default_str();
  cmd->add_option("--header-timeout-s", args->server.header_timeout_s,
                  "Seconds a new connection has to send its request's headers (then closed)")
      ->check(CLI::Range(1, 3'600))
      ->capture_default_str();
  cmd->add_option("--handshake-timeout-s", args->server.handshake_timeout_s,
                  "Seconds a TLS handshake may take (then closed)")
      ->check(CLI::Range(1, 3'600))
      ->capture_default_str();
  cmd->add_option("--refresh-ms", args->service.refresh_ms,
                  "How often to follow the ledger and update the settlement store")
      ->check(CLI::Range(50, 600'000))
      ->capture_default_str();
  cmd->add_option("--verify-every-s", args->service.verify_every_s,
                  "Re-verify the chain this often for the audit page (0: at start only)")
      ->check(CLI::Range(0, 86'400 * 7))
      ->capture_default_str();
  cmd->add_option("--vat-bp", args->service.settle.vat_bp, "VAT on co-pay, basis points")
      ->check(CLI::Range(0, 10'000))
      ->capture_default_str();
  cmd->add_option("--port-file", args->server.port_file,
                  "Write the bound port here once listening (for scripts using port 0)");
  cmd->add_option(
         "--access-log", args->server.access_log,
         "One JSON line per request (time, request id, client, principal name, method,\n"
         "path, status, bytes, ms; never a token), written out within 0.2 s: '-' standard\n"
         "error, 'off', or a file (appended to)")
      ->capture_default_str();
  cmd->add_option("--invoice-read-log", args->server.invoice_read_log,
                  "Who read which invoice (API and pages, lists and e-tax too): one JSON line per\n"
                  "answered read, appended (flushed within 0.2 s), for auditors (default "
                  "<db>.invoice-reads.jsonl;\n"
                  "'off': none)");
  cmd->add_option("--brokers", args->producer.brokers,
                  "Kafka bootstrap servers: turns on POST /v1/events, where a CSP's token\n"
                  "publishes usage to that CSP's topic over HTTP (JSON or CloudEvents; answered\n"
                  "once the broker acknowledged each event). Without it that endpoint answers 503")
      ->envname("GPULEDGER_BROKERS");
  AddKafkaConfigOption(cmd, &args->kafka_config);
  cmd->add_option("--topic-prefix", args->topic_prefix,
                  "Namespace prefix of every topic, e.g. 'staging.' (default: none)")
      ->envname("GPULEDGER_TOPIC_PREFIX");
  cmd->add_option("--max-events-per-request", args->server.max_events_per_request,
                  "Most events in one POST /v1/events (beyond: 400)")
      ->check(CLI::Range(1, 100'000))
      ->capture_default_str();
  cmd->add_option("--max-events-body-bytes", args->server.max_events_body_bytes,
                  "Largest POST /v1/events body, bytes (beyond: 413)")
      ->check(CLI::Range(1024, 256 << 20))
      ->capture_default_str();
  cmd->add_option("--events-delivery-timeout-ms", args->producer.delivery_timeout_ms,
                  "How long an event over HTTP waits for the broker's acknowledgement before it\n"
                  "is answered failed (503: send it again)")
      ->check(CLI::Range(1'000, 300'000))
      ->capture_default_str();
  cmd->callback([args, exit_code] {
    if (args->server.tls_cert.empty() != args->server.tls_key.empty()) {
      *exit_code = UsageError(absl::InvalidArgumentError("--tls-cert and --tls-key go together"));
      return;
    }
    if (args->server.invoice_read_log.empty()) {
      args->server.invoice_read_log = args->service.db + ".invoice-reads.jsonl";
    } else if (args->server.invoice_read_log == "off") {
      args->server.invoice_read_log.clear();
    }
    args->service.invoice_read_log = args->server.invoice_read_log;
    auto service = api::Service::Open(args->service);
    if (!service.ok()) {
      *exit_code = Report(service.status());
      return;
    }
    std::unique_ptr<ingest::EventProducer> producer;
    if (absl::Status st = ingest::TopicNames::CheckPrefix(args->topic_prefix); !st.ok()) {
      *exit_code = UsageError(st);
      return;
    }
    args->server.topics = ingest::TopicNames(args->topic_prefix);
    if (!args->producer.brokers.empty()) {
      auto kafka_config = LoadKafkaConfig(args->kafka_config);
      if (!kafka_config.ok()) {
        *exit_code = Report(kafka_config.status());
        return;
      }
      args->producer.kafka_config = *std::move(kafka_config);
      auto created = ingest::EventProducer::Create(args->producer);
      if (!created.ok()) {
        *exit_code = Report(created.status());
        return;
      }
      producer = *std::move(created);
      args->server.event_producer = producer.get();
      spdlog::info("taking usage events over HTTP (POST /v1/events) for {}",
                   args->producer.brokers);
    }
    (*service)->Start();
    std::signal(SIGTERM, OnServeSignal);
    std::signal(SIGINT, OnServeSignal);
    absl::Status st = api::RunServer(args->server, **service, g_stop);
    (*service)->Stop();
    if (!st.ok()) *exit_code = Report(st);
  });
}

void AddTokensCommand(CLI::App& app, int* exit_code) {
  struct Args {
    std::string file;
    std::string role;
    std::string name;
  };
  auto args = std::make_shared<Args>();
  CLI::App* tokens = app.add_subcommand("tokens", "Access tokens for `gpuledger serve`.");
  tokens->require_subcommand(1);
  CLI::App* add = tokens->add_subcommand(
      "add",
      "Create a token for a role and append its SHA-256 to the tokens file (created with mode\n"
      "0600 if missing). The token itself is printed once, on stdout, and stored nowhere. A\n"
      "running server picks the change up within a second. To revoke, delete the line (a\n"
      "malformed line elsewhere does not keep it alive).");
  add->add_option("--file", args->file, "Tokens file")->required()->envname("GPULEDGER_TOKENS");
  add->add_option("--role", args->role,
                  "operator, finance, auditor, csp:<csp id> or institution:<institution id>")
      ->required();
  add->add_option("--name", args->name, "Who holds it (for logs), e.g. 'finance team'");
  add->callback([args, exit_code] {
    auto principal = api::ParseRole(args->role);
    if (!principal.ok()) {
      *exit_code = Report(principal.status());
      return;
    }
    auto token = api::NewToken();
    if (!token.ok()) {
      *exit_code = Report(token.status());
      return;
    }
    const bool existed = std::filesystem::exists(args->file);
    std::ofstream out(args->file, std::ios::app);
    if (!existed) {
      std::filesystem::permissions(
          args->file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    }
    std::string name = args->name;
    for (char& c : name) {
      if (c == '\n' || c == '#') c = ' ';
    }
    out << "sha256:" << api::HashToken(*token) << " " << args->role
        << (name.empty() ? "" : " " + name) << "\n";
    out.close();
    if (!out) {
      *exit_code = Report(absl::UnavailableError("cannot write " + args->file));
      return;
    }
    std::cout << *token << "\n";
    spdlog::info("added a {} token to {}; it is shown once, above", args->role, args->file);
  });
}

}  // namespace gpuledger::cli
