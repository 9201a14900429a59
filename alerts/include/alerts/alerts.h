// Alerts (docs/ALERTS.md): conditions of the settled state that someone must hear of without
// polling. A budget or an allocation's GPU-hour cap drawn past a threshold, a month closed, an
// invoice final, an adjustment issued, a CSP's rejected share of a day's events over a
// threshold. Each is raised exactly once per crossing. The monitor's state store records every
// condition's crossings, so a restart or a rebuilt settlement store raises nothing again. Each
// alert is published to the Kafka alerts topic and delivered to the webhooks subscribed to it,
// signed (Standard Webhooks) and retried with backoff until a stated number of attempts.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ledger/ledger.h"
#include "settlement/engine.h"

namespace gpuledger::alerts {

// Alert types, as published ("type" of the payload).
inline constexpr char kBudgetThreshold[] = "budget.threshold_crossed";
inline constexpr char kAllocationBalance[] = "allocation.balance_threshold_crossed";
inline constexpr char kPeriodClosed[] = "period.closed";
inline constexpr char kInvoiceFinal[] = "invoice.final";
inline constexpr char kAdjustmentIssued[] = "adjustment.issued";
inline constexpr char kCspRejectionRate[] = "csp.rejection_rate_exceeded";

struct Alert {
  // The condition's key and its crossing: "budget/GOV_ADVANCED/2026//8000#1".
  std::string id;
  std::string type;
  // Who may hear of it besides the staff (operator, finance, auditor): "" (staff only),
  // "institution:<id>" or "csp:<id>".
  std::string audience;
  uint64_t raised_at_seq = 0;  // the ledger entry the state was settled to
  int64_t raised_at_ms = 0;    // wall clock, when raised (for people; never for money)
  std::string data_json;       // the condition's figures, a JSON object
  // The payload published and delivered: {"id","type","timestamp","audience","raised_at_seq",
  // "data"}.
  std::string Payload() const;
};

// A webhook subscription (the subscriptions file, docs/ALERTS.md).
struct Subscription {
  std::string id;
  std::string url;     // http://host[:port]/path or https://...
  std::string secret;  // "whsec_" + base64 of the signing key
  // "operator", "finance", "auditor" (every alert), "institution:<id>" or "csp:<id>" (alerts
  // whose audience is that one).
  std::string role;
  std::vector<std::string> types;  // empty: every type
};

// Reads {"subscriptions": [ {id, url, secret, role, types?} ]}; every error names the entry.
absl::StatusOr<std::vector<Subscription>> LoadSubscriptions(const std::string& path);
bool Receives(const Subscription& s, const Alert& a);

enum class DeliveryStatus { kPending, kDelivered, kGivenUp };

struct Delivery {
  std::string alert_id;
  std::string subscription_id;
  DeliveryStatus status = DeliveryStatus::kPending;
  int attempts = 0;
  int64_t next_attempt_ms = 0;
  std::string last_error;  // "HTTP 500", "connection refused", ...
  int64_t delivered_at_ms = 0;
};

struct MonitorOptions {
  // Attempts per delivery before it is given up. Default: 8.
  int max_attempts = 8;
  // Wait before the second attempt; doubled after each failure, at most max_backoff_ms.
  int64_t first_backoff_ms = 1'000;
  int64_t max_backoff_ms = 300'000;
};

// The monitor's state (a RocksDB store of its own): conditions and their crossings, alerts
// raised, whether each was published, and each delivery. One process at a time.
class Monitor {
 public:
  static absl::StatusOr<std::unique_ptr<Monitor>> Open(const std::string& path,
                                                       const MonitorOptions& options = {});
  ~Monitor();

  // Evaluates every condition against the engine's state (and the ledger's usage entries not
  // counted yet, read from `entries` up to engine.applied_through(), for rejection rates); raises
  // an alert for each condition that holds now and did not at the last evaluation, queues a
  // delivery to each subscription that receives it, and commits. Returns the alerts raised.
  absl::StatusOr<std::vector<Alert>> Evaluate(settlement::Engine& engine,
                                              const settlement::EntrySource& entries,
                                              const std::vector<Subscription>& subscriptions,
                                              int64_t now_ms);
  // Alerts raised and not published yet, in order of raising; MarkPublished records that the
  // broker acknowledged them.
  std::vector<Alert> Unpublished();
  absl::Status MarkPublished(const std::vector<std::string>& alert_ids);
  // Deliveries due at `now_ms`, each with its alert.
  std::vector<std::pair<Delivery, Alert>> Due(int64_t now_ms);
  // Records an attempt: delivered, or failed with `error` (retried with backoff, given up at
  // max_attempts).
  absl::Status RecordAttempt(const Delivery& d, bool ok, const std::string& error, int64_t now_ms);
  // Everything raised, and every delivery, for `gpuledger alerts list`.
  std::vector<Alert> Alerts();
  std::vector<Delivery> Deliveries();

 private:
  struct Impl;
  explicit Monitor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The Standard Webhooks signature of a message: "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>"
// with key the base64 after "whsec_" (INVALID_ARGUMENT if the secret is not of that form).
absl::StatusOr<std::string> Sign(const std::string& secret, const std::string& message_id,
                                 int64_t timestamp_s, const std::string& body);

// POSTs `alert` to the subscription's URL with the webhook-id, webhook-timestamp and
// webhook-signature headers; OK on a 2xx answer, else the reason (status or transport error).
absl::Status Post(const Subscription& s, const Alert& alert, int64_t now_ms,
                  int64_t timeout_ms = 10'000);

const char* DeliveryStatusName(DeliveryStatus s);

}  // namespace gpuledger::alerts
