// Crash test of ingest's exactly-once guarantee and of its decisions (docs/LEDGER.md,
// "Guarantees"; issue 4). A seeded stream of usage messages (default 200,000) over two CSP
// topics of 3 partitions each, in which valid usage is mixed with exact duplicates, conflicting
// duplicates, overlapping intervals, GPUs over the grant, late events, corrections (replacements
// and cancellations, some of events already corrected or never accepted) and malformed bytes,
// is ingested from a real Kafka broker into two signed ledgers:
//
// - the killed run: real `gpuledger ingest --until-end` processes, SIGKILLed at random instants
//   (default 50 times). After every kill the ledger, reopened read-only, must verify and be a
//   consistent prefix of every partition: each message before the stored offset is one entry
//   with its expected decision, or an exact duplicate (no entry, counted); the stored offsets,
//   counters, checkpoints and producer progress describe exactly the entries; nothing committed
//   earlier changed. Mid-run a new CSP's usage topic appears: one child, run as a service (so
//   that catching up cannot end it), lives through the consumer-group rebalance that its regex
//   subscription then makes while a stream still arrives (a batch in flight), before it is
//   killed; its log must show the reassignment. Then an uninterrupted run to the end.
//   Beside it all the time, as in production: `gpuledger serve` follows the ledger (polled for
//   its head, which must never go back) and `gpuledger settle` brings a settlement store of its
//   own up to the ledger over and over; neither may fail.
// - the reference run: one uninterrupted ingest of the same topics into a second ledger.
//
// Finally both ledgers must verify, be read to the end of every partition, hold every distinct
// (CSP, event id) exactly once with the same decision, one CONFLICTING_DUPLICATE entry per
// conflicting message and the same count of exact duplicates; and the killed ledger's invoices
// and CSP statements, from the settlement store kept up to date beside the kills and from serve,
// must equal the reference ledger's settled from scratch.
//
// Why decisions can be compared at all: Kafka orders only within a partition, so every message
// that can interact with another (the usage, corrections, duplicates and conflicts of one
// allocation) is keyed by its allocation id and lands in one partition; each allocation belongs
// to one CSP, so to one topic; and the registry is ingested before any usage is published, so
// nothing is parked (parking expiry depends on Kafka timestamps across partitions). Each
// message's decision is also known by construction, and checked.
//
// GPULEDGER_TEST_SEED replays the plan (events, batch sizes, kill points); where in the child's
// work a kill lands still depends on the machine. GPULEDGER_KILL_EVENTS sets the number of usage
// messages (default 200,000), GPULEDGER_KILL_ROUNDS the number of kills (default 50).
// GPULEDGER_BIN names the `gpuledger` binary (default: the one built with this test).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <librdkafka/rdkafkacpp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/period.h"
#include "gpuledger/v1/registry.pb.h"
#include "gpuledger/v1/usage.pb.h"
#include "ingest/publisher.h"
#include "ingest/reasons.h"
#include "ingest/topics.h"
#include "ledger/ledger.h"
#include "ledger/signing.h"
#include "ledger/verify.h"
#include "testsupport/kafka_env.h"
#include "testsupport/kafka_test.h"
#include "testsupport/process.h"
#include "testsupport/temp_dir.h"

namespace gpuledger {
namespace {

namespace v1 = gpuledger::v1;
using Clock = std::chrono::steady_clock;

constexpr int kPartitions = 3;
// Under the sanitizers (GPULEDGER_KILL_TEST_SMALL, tests/CMakeLists.txt) a smaller run: the full
// one took 10.5 minutes there, the longest test of the suite, and the normal build runs it whole
// (ops/soak.sh runs it longer still).
#ifdef GPULEDGER_KILL_TEST_SMALL
constexpr int kDefaultEvents = 60'000;
constexpr int kDefaultRounds = 20;
#else
constexpr int kDefaultEvents = 200'000;
constexpr int kDefaultRounds = 50;
#endif
// The power-cut test: a smaller stream, a power cut after every kill.
constexpr int kPowerCutEvents = 40'000;
constexpr int kPowerCuts = 12;

// CSPs whose usage topics exist from the start, and the one whose topic appears mid-run (its
// allocations are in the registry from the start).
const char* const kCsps[] = {"csp-a", "csp-b"};
constexpr char kNewCsp[] = "csp-n";
constexpr int kAllocationsPerCsp = 40;
constexpr int kNewCspAllocations = 8;
// Shares of the usage messages: the new CSP's; and the tail of the others', published only
// during the rebalance round, bit by bit, so that a stream still arrives when it rebalances.
constexpr double kNewCspShare = 0.05;
constexpr double kHeldBackShare = 0.25;
// Every allocation's window: [start of the first month, end of the last).
const base::Period kWindowFirst{2026, 1};
const base::Period kWindowLast{2026, 6};
constexpr int64_t kDayMs = 86'400'000;
// A late event's interval ends at least this long before the newest usage of its allocation.
constexpr int64_t kLateByMs = 2 * kDayMs;
// Far beyond any Kafka timestamp of this test: usage "reported before it happened".
constexpr int64_t kFutureMs = 4'070'908'800'000;  // 2099-01-01
constexpr int kNodesPerAllocation = 6;
constexpr uint32_t kGrantMin = 4;
constexpr uint32_t kGrantMax = 16;
// A valid usage event leaves a hole before its slot this often (per 1,000); late events fill
// holes.
constexpr int kHolePerMille = 30;

// --batch-max-messages of each child, uniformly at random.
constexpr int kBatchMessagesMin = 50;
constexpr int kBatchMessagesMax = 2'000;
// --checkpoint-interval of each ledger, uniformly at random: many checkpoints per run.
constexpr int kCheckpointIntervalMin = 100;
constexpr int kCheckpointIntervalMax = 5'000;
// Kill rounds: one in kStartupKillOneIn is killed before its first commit, at a random share
// of the time the last child took to make it (while it opens the ledger, rebuilds its state from
// it, or joins its group); the others once the offsets their group committed to Kafka (right
// after each ledger commit) pass a random progress target, after a random delay up to
// kKillDelayMaxMs. The targets spread the remaining messages over the remaining rounds, less
// what kills overshot their targets lately (a child ingests ~25,000 messages a second here).
constexpr int kStartupKillOneIn = 5;
constexpr int64_t kStartupKillMinMs = 20;
constexpr int64_t kFirstCommitGuessMs = 1'000;
constexpr int64_t kKillDelayMaxMs = 100;

// The rebalance round comes after about two thirds of the kill rounds. Before it, kills take the
// ledger at most this far into the messages published by then, so that its child starts with a
// backlog.
constexpr double kBeforeRebalanceShare = 0.85;
// The rebalance round's child runs as a service (no --until-end: catching up must not end it)
// with batches of up to kRebalanceBatchMs, so that one is nearly always in flight while the
// stream arrives. The held-back messages are published in kPaceChunks chunks, one every
// kPaceInterval (25 s in all: the consumer looks for new topics every 10 s), until the child's
// log shows the new topic assigned (at most kRebalanceWaitMs after it was created) and the child
// is killed, at most kRebalanceKillDelayMaxMs after that; the rest of them then.
constexpr int kRebalanceBatchMessages = 100'000;
constexpr int64_t kRebalanceBatchMs = 5'000;
constexpr int kPaceChunks = 250;
constexpr auto kPaceInterval = std::chrono::milliseconds(100);
constexpr int64_t kRebalanceWaitMs = 30'000;
constexpr int64_t kRebalanceKillDelayMaxMs = 1'000;
// Kills that failed to land (the child was done first) are made up by at most this many rounds.
constexpr int kExtraRoundsMax = 6;
// How often the parent looks at a running child.
constexpr auto kPollInterval = std::chrono::milliseconds(10);
// Longest a child may take: to reach a progress target, or to run to the end uninterrupted.
constexpr int64_t kTargetTimeoutMs = 120'000;
constexpr int64_t kFinalRunTimeoutMs = 300'000;

using Identity = std::pair<std::string, std::string>;  // (source_id, event_id)

int64_t Uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

int64_t MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

std::string PartitionName(const ledger::TopicPartition& tp) {
  return absl::StrCat(tp.topic, "[", tp.partition, "]");
}

int EnvInt(const char* name, int fallback, int min) {
  const char* s = std::getenv(name);
  return s != nullptr && *s != '\0' ? std::max(min, std::atoi(s)) : fallback;
}

// ---------------------------------------------------------------------------------------------
// The input.

enum class Kind {
  kRegistry,
  kValid,                // usage in a new slot of its allocation: accepted
  kLate,                 // usage filling a slot left empty days earlier: accepted
  kDuplicate,            // the same bytes again: counted, no entry
  kConflict,             // an event id already recorded, other content: CONFLICTING_DUPLICATE
  kOverlap,              // inside an accepted interval, same node: OVERLAPPING_INTERVAL
  kOverGrant,            // more GPUs than granted: GPUS_OVER_GRANT
  kConcurrentOverGrant,  // inside an accepted interval, other node, sum over the grant: same
  kReplace,              // correction replacing an accepted interval: accepted
  kCancel,               // correction cancelling one: accepted
  kAlreadyCorrected,     // correction of a corrected event: ALREADY_CORRECTED
  kUnknownTarget,        // correction of an event never accepted: UNKNOWN_CORRECTION_TARGET
  kOutsideWindow,        // before the allocation's start: OUTSIDE_ALLOCATION_WINDOW
  kWrongModel,           // WRONG_GPU_MODEL
  kFuture,               // ends decades after its message was written: FUTURE_TIMESTAMP
  kOtherCsp,             // usage of another CSP's allocation: ALLOCATION_OF_OTHER_CSP
  kEmptyInterval,        // EMPTY_INTERVAL
  kMalformed,            // not a protobuf message: MALFORMED
};

const char* KindName(Kind k) {
  constexpr const char* kNames[] = {"registry",
                                    "valid",
                                    "late",
                                    "exact duplicate",
                                    "conflicting duplicate",
                                    "overlap",
                                    "over grant",
                                    "concurrent over grant",
                                    "replacement",
                                    "cancellation",
                                    "correction of a corrected event",
                                    "correction of an unknown event",
                                    "outside window",
                                    "wrong model",
                                    "future",
                                    "other CSP's allocation",
                                    "empty interval",
                                    "malformed"};
  static_assert(std::size(kNames) == static_cast<size_t>(Kind::kMalformed) + 1);
  return kNames[static_cast<size_t>(k)];
}

// Shares of the kinds other than kValid, per 100,000 usage messages.
struct MixShare {
  Kind kind;
  int per_100k;
};
constexpr MixShare kMix[] = {
    {Kind::kDuplicate, 3'000},
    {Kind::kConflict, 500},
    {Kind::kOverlap, 1'000},
    {Kind::kOverGrant, 500},
    {Kind::kConcurrentOverGrant, 300},
    {Kind::kLate, 2'000},
    {Kind::kReplace, 1'000},
    {Kind::kCancel, 500},
    {Kind::kAlreadyCorrected, 200},
    {Kind::kUnknownTarget, 100},
    {Kind::kOutsideWindow, 100},
    {Kind::kWrongModel, 100},
    {Kind::kFuture, 50},
    {Kind::kOtherCsp, 50},
    {Kind::kEmptyInterval, 50},
    {Kind::kMalformed, 50},
};

struct Decision {
  v1::Outcome outcome = v1::OUTCOME_UNSPECIFIED;
  std::string reason_code;
  friend bool operator==(const Decision&, const Decision&) = default;
};

std::string DecisionName(const Decision& d) {
  return d.reason_code.empty() ? v1::Outcome_Name(d.outcome)
                               : absl::StrCat(v1::Outcome_Name(d.outcome), " ", d.reason_code);
}

Decision Accepted() { return {v1::ACCEPTED, ""}; }
Decision Rejected(const char* reason) { return {v1::REJECTED, reason}; }

// One distinct message value. An exact duplicate is the same Message published again.
struct Message {
  std::string topic;
  std::string key;
  std::string value;
  Kind kind = Kind::kValid;
  Identity identity;  // what the ledger must record; no event id for malformed bytes
  Decision expected;  // at its first delivery in its partition
};

struct Stream {
  std::vector<Message> messages;
  // Publication order, as indices into `messages`.
  std::vector<uint32_t> registry;
  std::vector<uint32_t> usage;    // the CSPs of kCsps; the last `held_back` wait
  std::vector<uint32_t> new_csp;  // kNewCsp's, published in the rebalance round
  size_t held_back = 0;
  std::map<Kind, uint64_t> published_by_kind;
  // Identities, and the decision about each (its first message's).
  std::map<Identity, Decision> decisions;
  uint64_t conflicts = 0;
  uint64_t duplicates = 0;
  uint64_t malformed = 0;
  // Message by value; built once `messages` is complete.
  std::unordered_map<std::string_view, uint32_t> by_value;

  size_t usage_messages() const { return usage.size() + new_csp.size(); }
};

struct Interval {
  int64_t start_ms = 0;
  int64_t end_ms = 0;
  std::string node;
  uint32_t gpus = 0;
};

// Where one allocation's generated usage stands. Its time is cut into slots; each accepted
// interval lies inside its own slot, so accepted intervals never overlap and a new interval
// inside a slot overlaps exactly the interval accepted there, if any.
struct AllocationGen {
  std::string id;
  std::string csp;
  std::string topic;
  std::string producer;  // one metering process per allocation: its messages stay in order
  v1::GpuModel model = v1::H200;
  uint32_t grant = 0;
  int64_t window_start_ms = 0;
  int64_t window_end_ms = 0;
  int64_t slot_ms = 0;
  uint64_t slots = 0;
  uint64_t producer_seq = 0;
  uint64_t events = 0;
  // Per slot handed out: the event whose interval counts there now, if any.
  std::vector<std::optional<std::pair<std::string, Interval>>> held;
  std::deque<uint64_t> holes;         // slots skipped, for late events, oldest first
  std::vector<std::string> retired;   // event ids corrected or cancelled
  std::vector<std::string> recorded;  // event ids the ledger records (any decision)
  std::vector<uint32_t> resendable;   // messages whose re-send is an exact duplicate
};

class StreamGenerator {
 public:
  StreamGenerator(std::mt19937_64& rng, ingest::TopicNames topics, Stream* out)
      : rng_(rng), topics_(std::move(topics)), out_(out) {}

  // Allocations of `csp`, sized for about `messages` usage messages over `count` of them.
  void AddAllocations(const std::string& csp, int count, size_t messages) {
    const int64_t start = kWindowFirst.StartMs();
    const int64_t end = kWindowLast.EndMs();
    const uint64_t per_allocation = messages / static_cast<size_t>(count) + 1;
    for (int i = 0; i < count; ++i) {
      AllocationGen a;
      a.id = absl::StrCat(csp, "-", i);
      a.csp = csp;
      a.topic = topics_.Usage(csp);
      a.producer = absl::StrCat("meter-", a.id);
      a.model = i % 2 == 0 ? v1::H200 : v1::B200;
      a.grant = static_cast<uint32_t>(Uniform(rng_, kGrantMin, kGrantMax));
      a.window_start_ms = start;
      a.window_end_ms = end;
      a.slots = per_allocation * 5 / 4 + 32;
      a.slot_ms = (end - start) / static_cast<int64_t>(a.slots);
      allocations_.push_back(std::move(a));
    }
  }

  // Two institutions, the prices and co-pays, each CSP's contract and pools, and every
  // allocation, in order, on the registry's one partition: enough for priced invoices and CSP
  // statements.
  void AddRegistry() {
    const int64_t from = kWindowFirst.StartMs();
    for (const auto& [id, type] : {std::pair{"uni", v1::ACADEMIA}, std::pair{"sme", v1::SME}}) {
      v1::RegistryEvent e = NewRegistryEvent(absl::StrCat("reg-", id));
      e.mutable_institution()->set_institution_id(id);
      e.mutable_institution()->set_name(id);
      e.mutable_institution()->set_type(type);
      AddRegistryEvent(e);
    }
    for (const auto& [type, bp] : {std::pair{v1::ACADEMIA, 0u}, std::pair{v1::SME, 900u}}) {
      v1::RegistryEvent e = NewRegistryEvent(absl::StrCat("reg-copay-", type));
      e.mutable_copay_policy()->set_institution_type(type);
      e.mutable_copay_policy()->set_copay_bp(bp);
      e.mutable_copay_policy()->set_effective_from_ms(from);
      AddRegistryEvent(e);
    }
    std::map<std::pair<std::string, v1::GpuModel>, uint32_t> granted;
    for (const AllocationGen& g : allocations_) granted[{g.csp, g.model}] += g.grant;
    for (const auto& [model, price] : {std::pair{v1::H200, 4'100}, std::pair{v1::B200, 6'300}}) {
      v1::RegistryEvent e = NewRegistryEvent(absl::StrCat("reg-rate-", model));
      e.mutable_rate_card()->set_program(v1::LEASE_RESEARCH);
      e.mutable_rate_card()->set_gpu_model(model);
      e.mutable_rate_card()->set_krw_per_gpu_hour(price);
      e.mutable_rate_card()->set_effective_from_ms(from);
      AddRegistryEvent(e);
    }
    std::set<std::string> csps;
    for (const auto& [key, count] : granted) {
      const auto& [csp, model] = key;
      if (csps.insert(csp).second) {
        v1::RegistryEvent e = NewRegistryEvent(absl::StrCat("reg-contract-", csp));
        e.mutable_csp_contract()->set_csp_id(csp);
        e.mutable_csp_contract()->set_own_use_cap_bp(1'000);
        e.mutable_csp_contract()->set_effective_from_ms(from);
        AddRegistryEvent(e);
      }
      v1::RegistryEvent e = NewRegistryEvent(absl::StrCat("reg-pool-", csp, "-", model));
      v1::GpuPool* pool = e.mutable_gpu_pool();
      pool->set_csp_id(csp);
      pool->set_program(v1::LEASE_RESEARCH);
      pool->set_gpu_model(model);
      pool->set_gpu_count(count + count / 4);
      pool->set_effective_from_ms(from);
      AddRegistryEvent(e);
    }
    for (size_t i = 0; i < allocations_.size(); ++i) {
      const AllocationGen& g = allocations_[i];
      v1::RegistryEvent e = NewRegistryEvent(absl::StrCat("reg-", g.id));
      v1::Allocation* a = e.mutable_allocation();
      a->set_allocation_id(g.id);
      a->set_institution_id(i % 3 == 0 ? "sme" : "uni");
      a->set_program(v1::LEASE_RESEARCH);
      a->set_csp_id(g.csp);
      a->set_gpu_model(g.model);
      a->set_gpu_count(g.grant);
      a->set_start_ms(g.window_start_ms);
      a->set_end_ms(g.window_end_ms);
      AddRegistryEvent(e);
    }
  }

  // `count` usage messages over the allocations of the CSPs in `csps`, appended to `order`.
  void AddUsage(const std::set<std::string>& csps, size_t count, std::vector<uint32_t>* order) {
    std::vector<AllocationGen*> mine;
    for (AllocationGen& a : allocations_) {
      if (csps.contains(a.csp)) mine.push_back(&a);
    }
    order_ = order;
    for (size_t i = 0; i < count; ++i) {
      AllocationGen& a = *mine[Uniform(rng_, 0, static_cast<int64_t>(mine.size()) - 1)];
      Kind kind = Kind::kValid;
      int64_t r = Uniform(rng_, 0, 99'999);
      for (const MixShare& m : kMix) {
        if (r < m.per_100k) {
          kind = m.kind;
          break;
        }
        r -= m.per_100k;
      }
      if (!Make(kind, a) && !Make(Kind::kValid, a)) Make(Kind::kOverGrant, a);
    }
  }

 private:
  static v1::RegistryEvent NewRegistryEvent(const std::string& event_id) {
    v1::RegistryEvent e;
    e.set_schema_version(1);
    e.set_event_id(event_id);
    return e;
  }

  void AddRegistryEvent(const v1::RegistryEvent& e) {
    out_->registry.push_back(static_cast<uint32_t>(out_->messages.size()));
    out_->messages.push_back({topics_.Registry(),
                              "registry",
                              e.SerializeAsString(),
                              Kind::kRegistry,
                              {ingest::kOperatorSourceId, e.event_id()},
                              Accepted()});
    out_->decisions[out_->messages.back().identity] = Accepted();
    ++out_->published_by_kind[Kind::kRegistry];
  }

  // Publishes message `index` (again).
  void Publish(uint32_t index, Kind kind) {
    order_->push_back(index);
    ++out_->published_by_kind[kind];
  }

  // A new message of `a`; returns its index.
  uint32_t Emit(AllocationGen& a, Kind kind, std::string value, const std::string& event_id,
                Decision expected) {
    const auto index = static_cast<uint32_t>(out_->messages.size());
    // A malformed message has no event id, but its source is the CSP of its topic.
    Identity identity{a.csp, kind == Kind::kMalformed ? "" : event_id};
    if (kind == Kind::kConflict) {
      ++out_->conflicts;
    } else if (kind == Kind::kMalformed) {
      ++out_->malformed;
    } else {
      out_->decisions[identity] = expected;
      a.recorded.push_back(event_id);
      a.resendable.push_back(index);
    }
    out_->messages.push_back({a.topic, a.id, std::move(value), kind, identity, expected});
    Publish(index, kind);
    return index;
  }

  std::string NewEventId(AllocationGen& a) { return absl::StrCat(a.id, ".", ++a.events); }

  v1::UsageEvent NewEvent(AllocationGen& a, const std::string& event_id) {
    v1::UsageEvent e;
    e.set_schema_version(1);
    e.set_event_id(event_id);
    e.set_csp_id(a.csp);
    e.set_producer_id(a.producer);
    e.set_producer_seq(++a.producer_seq);
    return e;
  }

  static void SetInterval(v1::UsageInterval* u, const std::string& allocation_id,
                          v1::GpuModel model, const Interval& iv) {
    u->set_allocation_id(allocation_id);
    u->set_gpu_model(model);
    u->set_gpu_count(iv.gpus);
    u->set_start_ms(iv.start_ms);
    u->set_end_ms(iv.end_ms);
    u->set_node_id(iv.node);
  }

  // A usage event of `a` with interval `iv`; `model` defaults to the allocation's.
  uint32_t EmitUsage(AllocationGen& a, Kind kind, const Interval& iv, Decision expected,
                     v1::GpuModel model = v1::GPU_MODEL_UNSPECIFIED) {
    const std::string id = NewEventId(a);
    v1::UsageEvent e = NewEvent(a, id);
    SetInterval(e.mutable_usage(), a.id, model == v1::GPU_MODEL_UNSPECIFIED ? a.model : model, iv);
    return Emit(a, kind, e.SerializeAsString(), id, std::move(expected));
  }

  // A fresh interval inside slot `slot`, within the grant.
  Interval InSlot(const AllocationGen& a, uint64_t slot) {
    Interval iv;
    iv.start_ms = a.window_start_ms + static_cast<int64_t>(slot) * a.slot_ms +
                  Uniform(rng_, 0, a.slot_ms / 4);
    iv.end_ms = iv.start_ms + Uniform(rng_, a.slot_ms / 4, a.slot_ms / 2);
    iv.node = absl::StrCat("n", Uniform(rng_, 0, kNodesPerAllocation - 1));
    iv.gpus = static_cast<uint32_t>(Uniform(rng_, 1, a.grant));
    return iv;
  }

  // An interval inside `h`, which must be at least 4 ms long.
  static Interval Inside(const Interval& h) {
    Interval iv = h;
    const int64_t len = h.end_ms - h.start_ms;
    iv.start_ms = h.start_ms + len / 4;
    iv.end_ms = iv.start_ms + std::max<int64_t>(1, len / 2);
    return iv;
  }

  // A slot whose interval counts now and is at least `min_ms` long, if one is found quickly.
  std::optional<uint64_t> PickHeld(const AllocationGen& a, int64_t min_ms) {
    if (a.held.empty()) return std::nullopt;
    for (int attempt = 0; attempt < 16; ++attempt) {
      const auto slot = static_cast<uint64_t>(Uniform(rng_, 0, std::ssize(a.held) - 1));
      const auto& h = a.held[slot];
      if (h.has_value() && h->second.end_ms - h->second.start_ms >= min_ms) return slot;
    }
    return std::nullopt;
  }

  bool Make(Kind kind, AllocationGen& a);
  bool MakeValid(AllocationGen& a);
  bool MakeLate(AllocationGen& a);
  bool MakeInsideHeld(Kind kind, AllocationGen& a);
  bool MakeCorrection(Kind kind, AllocationGen& a);
  bool MakeConflict(AllocationGen& a);
  uint32_t MakeMalformed(AllocationGen& a);
  const AllocationGen& OtherCspsAllocation(const AllocationGen& a) {
    for (;;) {
      const AllocationGen& o =
          allocations_[Uniform(rng_, 0, static_cast<int64_t>(allocations_.size()) - 1)];
      if (o.csp != a.csp) return o;
    }
  }

  std::mt19937_64& rng_;
  ingest::TopicNames topics_;
  Stream* out_;
  std::vector<AllocationGen> allocations_;
  std::vector<uint32_t>* order_ = nullptr;
};

bool StreamGenerator::Make(Kind kind, AllocationGen& a) {
  switch (kind) {
    case Kind::kValid:
      return MakeValid(a);
    case Kind::kLate:
      return MakeLate(a);
    case Kind::kDuplicate:
      if (a.resendable.empty()) return false;
      Publish(a.resendable[Uniform(rng_, 0, std::ssize(a.resendable) - 1)], kind);
      ++out_->duplicates;
      return true;
    case Kind::kConflict:
      return MakeConflict(a);
    case Kind::kOverlap:
    case Kind::kConcurrentOverGrant:
      return MakeInsideHeld(kind, a);
    case Kind::kOverGrant: {
      Interval iv =
          InSlot(a, static_cast<uint64_t>(Uniform(rng_, 0, static_cast<int64_t>(a.slots) - 1)));
      iv.gpus = a.grant + static_cast<uint32_t>(Uniform(rng_, 1, 4));
      EmitUsage(a, kind, iv, Rejected(ingest::reason::kGpusOverGrant));
      return true;
    }
    case Kind::kReplace:
    case Kind::kCancel:
    case Kind::kAlreadyCorrected:
    case Kind::kUnknownTarget:
      return MakeCorrection(kind, a);
    case Kind::kOutsideWindow: {
      Interval iv = InSlot(a, 0);
      iv.start_ms = a.window_start_ms - 2 * kDayMs;
      iv.end_ms = a.window_start_ms - kDayMs;
      EmitUsage(a, kind, iv, Rejected(ingest::reason::kOutsideAllocationWindow));
      return true;
    }
    case Kind::kWrongModel:
      EmitUsage(
          a, kind,
          InSlot(a, static_cast<uint64_t>(Uniform(rng_, 0, static_cast<int64_t>(a.slots) - 1))),
          Rejected(ingest::reason::kWrongGpuModel), a.model == v1::H200 ? v1::B200 : v1::H200);
      return true;
    case Kind::kFuture: {
      Interval iv = InSlot(a, 0);
      iv.start_ms = kFutureMs;
      iv.end_ms = kFutureMs + 3'600'000;
      EmitUsage(a, kind, iv, Rejected(ingest::reason::kFutureTimestamp));
      return true;
    }
    case Kind::kOtherCsp: {
      const AllocationGen& o = OtherCspsAllocation(a);
      const std::string id = NewEventId(a);
      v1::UsageEvent e = NewEvent(a, id);
      SetInterval(e.mutable_usage(), o.id, o.model, InSlot(o, 0));
      e.mutable_usage()->set_gpu_count(1);
      Emit(a, kind, e.SerializeAsString(), id, Rejected(ingest::reason::kAllocationOfOtherCsp));
      return true;
    }
    case Kind::kEmptyInterval: {
      Interval iv = InSlot(a, 0);
      iv.end_ms = iv.start_ms;
      EmitUsage(a, kind, iv, Rejected(ingest::reason::kEmptyInterval));
      return true;
    }
    case Kind::kMalformed:
      MakeMalformed(a);
      return true;
    case Kind::kRegistry:
      break;
  }
  return false;
}

bool StreamGenerator::MakeValid(AllocationGen& a) {
  if (a.held.size() + 2 > a.slots) return false;
  if (Uniform(rng_, 0, 999) < kHolePerMille) {
    a.holes.push_back(a.held.size());
    a.held.emplace_back();
  }
  const uint64_t slot = a.held.size();
  const Interval iv = InSlot(a, slot);
  a.held.emplace_back();
  const uint32_t index = EmitUsage(a, Kind::kValid, iv, Accepted());
  a.held[slot].emplace(out_->messages[index].identity.second, iv);
  return true;
}

bool StreamGenerator::MakeLate(AllocationGen& a) {
  if (a.holes.empty()) return false;
  const uint64_t slot = a.holes.front();
  // Its slot must end kLateByMs before the newest slot begins.
  if (static_cast<int64_t>(a.held.size() - slot - 1) * a.slot_ms < kLateByMs) return false;
  a.holes.pop_front();
  const Interval iv = InSlot(a, slot);
  const uint32_t index = EmitUsage(a, Kind::kLate, iv, Accepted());
  a.held[slot].emplace(out_->messages[index].identity.second, iv);
  return true;
}

// An interval inside one that counts now: on its node (overlap), or on another node with
// enough GPUs to exceed the grant together.
bool StreamGenerator::MakeInsideHeld(Kind kind, AllocationGen& a) {
  const std::optional<uint64_t> slot = PickHeld(a, 4);
  if (!slot.has_value()) return false;
  const Interval& h = a.held[*slot]->second;
  Interval iv = Inside(h);
  if (kind == Kind::kOverlap) {
    iv.gpus = static_cast<uint32_t>(Uniform(rng_, 1, a.grant));
    EmitUsage(a, kind, iv, Rejected(ingest::reason::kOverlappingInterval));
  } else {
    iv.node = "n-other";
    iv.gpus = static_cast<uint32_t>(Uniform(rng_, a.grant - h.gpus + 1, a.grant));
    EmitUsage(a, kind, iv, Rejected(ingest::reason::kGpusOverGrant));
  }
  return true;
}

bool StreamGenerator::MakeCorrection(Kind kind, AllocationGen& a) {
  std::string target;
  std::optional<uint64_t> slot;
  Decision expected = Accepted();
  if (kind == Kind::kReplace || kind == Kind::kCancel) {
    slot = PickHeld(a, kind == Kind::kReplace ? 64 : 1);
    if (!slot.has_value()) return false;
    target = a.held[*slot]->first;
  } else if (kind == Kind::kAlreadyCorrected) {
    if (a.retired.empty()) return false;
    target = a.retired[Uniform(rng_, 0, std::ssize(a.retired) - 1)];
    expected = Rejected(ingest::reason::kAlreadyCorrected);
  } else {
    target = absl::StrCat(a.id, ".never-", a.events);
    expected = Rejected(ingest::reason::kUnknownCorrectionTarget);
  }
  const std::string id = NewEventId(a);
  v1::UsageEvent e = NewEvent(a, id);
  v1::Correction* c = e.mutable_correction();
  c->set_target_event_id(target);
  c->set_allocation_id(a.id);
  c->set_reason("re-metered");
  std::optional<Interval> replacement;
  if (kind == Kind::kReplace) {
    const Interval& h = a.held[*slot]->second;
    replacement = h;
    replacement->end_ms = h.start_ms + (h.end_ms - h.start_ms) / 2;
    replacement->gpus = static_cast<uint32_t>(Uniform(rng_, 1, a.grant));
    SetInterval(c->mutable_replacement(), a.id, a.model, *replacement);
  }
  Emit(a, kind, e.SerializeAsString(), id, std::move(expected));
  if (slot.has_value()) {
    a.retired.push_back(target);
    a.held[*slot].reset();
    if (replacement.has_value()) a.held[*slot].emplace(id, *replacement);
  }
  return true;
}

bool StreamGenerator::MakeConflict(AllocationGen& a) {
  if (a.recorded.empty()) return false;
  const std::string id = a.recorded[Uniform(rng_, 0, std::ssize(a.recorded) - 1)];
  v1::UsageEvent e = NewEvent(a, id);  // a new producer_seq: other content in any case
  SetInterval(
      e.mutable_usage(), a.id, a.model,
      InSlot(a, static_cast<uint64_t>(Uniform(rng_, 0, static_cast<int64_t>(a.slots) - 1))));
  Emit(a, Kind::kConflict, e.SerializeAsString(), id,
       Rejected(ingest::reason::kConflictingDuplicate));
  return true;
}

// A length-delimited field claiming 1,000 bytes, followed by fewer: never parses.
uint32_t StreamGenerator::MakeMalformed(AllocationGen& a) {
  std::string value("\x0a\xe8\x07", 3);
  absl::StrAppend(&value, "malformed ", a.id, " ", ++a.events);
  return Emit(a, Kind::kMalformed, std::move(value), "", Rejected(ingest::reason::kMalformed));
}

// The whole input: registry, then `usage_messages` usage messages.
Stream MakeStream(const ingest::TopicNames& topics, size_t usage_messages, std::mt19937_64& rng) {
  Stream s;
  const auto new_csp = static_cast<size_t>(static_cast<double>(usage_messages) * kNewCspShare);
  const size_t old_csps = usage_messages - new_csp;
  StreamGenerator gen(rng, topics, &s);
  for (const char* csp : kCsps) {
    gen.AddAllocations(csp, kAllocationsPerCsp, old_csps / std::size(kCsps));
  }
  gen.AddAllocations(kNewCsp, kNewCspAllocations, new_csp);
  gen.AddRegistry();
  gen.AddUsage(std::set<std::string>(std::begin(kCsps), std::end(kCsps)), old_csps, &s.usage);
  gen.AddUsage({kNewCsp}, new_csp, &s.new_csp);
  s.held_back = static_cast<size_t>(static_cast<double>(old_csps) * kHeldBackShare);
  for (uint32_t i = 0; i < s.messages.size(); ++i) {
    const bool fresh = s.by_value.emplace(s.messages[i].value, i).second;
    EXPECT_TRUE(fresh) << "two messages with the same bytes: " << i;
    if (s.messages[i].kind == Kind::kMalformed) {
      v1::UsageEvent e;
      EXPECT_FALSE(e.ParseFromString(s.messages[i].value))
          << "malformed message " << i << " parses";
    }
  }
  return s;
}

std::vector<ingest::EncodedEvent> Encode(const Stream& s, const std::vector<uint32_t>& order,
                                         size_t from, size_t to) {
  std::vector<ingest::EncodedEvent> out;
  out.reserve(to - from);
  for (size_t i = from; i < to; ++i) {
    const Message& m = s.messages[order[i]];
    out.push_back({m.topic, m.key, m.value});
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// What the broker holds.

// Every message of the test's topics, read back by partition and offset and mapped to the
// stream's messages. Owned by the test body; one thread.
class TopicMirror {
 public:
  struct Slot {
    uint32_t message = 0;
    bool duplicate = false;  // the same bytes came earlier in the partition
  };

  absl::Status Open(const std::string& brokers) {
    std::string err;
    std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    for (const auto& [k, v] :
         std::vector<std::pair<std::string, std::string>>{{"bootstrap.servers", brokers},
                                                          {"group.id", "ingest-kill-test-mirror"},
                                                          {"enable.auto.commit", "false"},
                                                          {"enable.partition.eof", "false"}}) {
      if (conf->set(k, v, err) != RdKafka::Conf::CONF_OK) return absl::InternalError(err);
    }
    consumer_.reset(RdKafka::KafkaConsumer::create(conf.get(), err));
    if (!consumer_) return absl::InternalError(err);
    return absl::OkStatus();
  }

  // Reads every partition of `topics` up to its current end.
  absl::Status CatchUp(const std::set<std::string>& topics, const Stream& stream);

  const std::map<ledger::TopicPartition, std::vector<Slot>>& partitions() const {
    return partitions_;
  }
  size_t size() const {
    size_t n = 0;
    for (const auto& [tp, slots] : partitions_) n += slots.size();
    return n;
  }

 private:
  absl::Status Add(const RdKafka::Message& m, const Stream& stream);

  std::unique_ptr<RdKafka::KafkaConsumer> consumer_;
  std::map<ledger::TopicPartition, std::vector<Slot>> partitions_;
  std::map<std::string, ledger::TopicPartition> partition_of_key_;
  std::vector<bool> seen_;  // by stream message
};

absl::Status TopicMirror::CatchUp(const std::set<std::string>& topics, const Stream& stream) {
  seen_.resize(stream.messages.size());
  RdKafka::Metadata* raw = nullptr;
  if (RdKafka::ErrorCode e = consumer_->metadata(true, nullptr, &raw, 10'000); e) {
    return absl::UnavailableError(absl::StrCat("metadata: ", RdKafka::err2str(e)));
  }
  std::unique_ptr<RdKafka::Metadata> metadata(raw);
  std::map<ledger::TopicPartition, int64_t> want;
  std::vector<RdKafka::TopicPartition*> assignment;
  for (const RdKafka::TopicMetadata* t : *metadata->topics()) {
    if (!topics.contains(t->topic())) continue;
    for (const RdKafka::PartitionMetadata* p : *t->partitions()) {
      int64_t low = 0;
      int64_t high = 0;
      if (RdKafka::ErrorCode e =
              consumer_->query_watermark_offsets(t->topic(), p->id(), &low, &high, 10'000);
          e) {
        return absl::UnavailableError(absl::StrCat("watermarks: ", RdKafka::err2str(e)));
      }
      const ledger::TopicPartition tp{t->topic(), p->id()};
      const auto have = static_cast<int64_t>(partitions_[tp].size());
      if (high > have) {
        want[tp] = high;
        assignment.push_back(RdKafka::TopicPartition::create(tp.topic, tp.partition, have));
      }
    }
  }
  consumer_->assign(assignment);
  RdKafka::TopicPartition::destroy(assignment);
  const Clock::time_point started = Clock::now();
  absl::Status status;
  while (status.ok() && !want.empty()) {
    if (MsSince(started) > 60'000) {
      status = absl::DeadlineExceededError("reading the topics back took over 60 s");
      break;
    }
    std::unique_ptr<RdKafka::Message> m(consumer_->consume(200));
    if (m->err() == RdKafka::ERR__TIMED_OUT) continue;
    if (m->err() != RdKafka::ERR_NO_ERROR) {
      status = absl::UnavailableError(absl::StrCat("consume: ", m->errstr()));
      break;
    }
    status = Add(*m, stream);
    const ledger::TopicPartition tp{m->topic_name(), m->partition()};
    if (auto it = want.find(tp); it != want.end() && m->offset() + 1 >= it->second) want.erase(it);
  }
  consumer_->unassign();
  return status;
}

absl::Status TopicMirror::Add(const RdKafka::Message& m, const Stream& stream) {
  const ledger::TopicPartition tp{m.topic_name(), m.partition()};
  std::vector<Slot>& slots = partitions_[tp];
  if (m.offset() != std::ssize(slots)) {
    return absl::DataLossError(absl::StrCat(PartitionName(tp), ": offset ", m.offset(), " where ",
                                            slots.size(), " was due"));
  }
  const std::string_view value(static_cast<const char*>(m.payload()), m.len());
  auto it = stream.by_value.find(value);
  if (it == stream.by_value.end()) {
    return absl::DataLossError(
        absl::StrCat(PartitionName(tp), "@", m.offset(), ": not in the input"));
  }
  const Message& message = stream.messages[it->second];
  // The premise of comparing decisions: all messages of one key are in one partition.
  auto [where, fresh] = partition_of_key_.try_emplace(message.key, tp);
  if (!fresh && where->second != tp) {
    return absl::DataLossError(absl::StrCat("key ", message.key, " is in ", PartitionName(tp),
                                            " and ", PartitionName(where->second)));
  }
  slots.push_back({it->second, seen_[it->second]});
  seen_[it->second] = true;
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Child processes.

// How a child ingest process ended.
struct ChildEnd {
  bool killed = false;  // we SIGKILLed it (it had not exited by then)
  int status = 0;       // from waitpid
  int64_t ran_ms = 0;   // from fork to exit or kill
};

std::string Describe(const ChildEnd& end) {
  if (end.killed) return absl::StrCat("SIGKILLed at ", end.ran_ms, " ms");
  if (WIFEXITED(end.status)) {
    return absl::StrCat("exited ", WEXITSTATUS(end.status), " after ", end.ran_ms, " ms");
  }
  return absl::StrCat("died (wait status ", end.status, ") after ", end.ran_ms, " ms");
}

bool ExitedOk(const ChildEnd& end) {
  return !end.killed && WIFEXITED(end.status) && WEXITSTATUS(end.status) == 0;
}

// The last `lines` lines of a child's log, for failure messages.
std::string LogTail(const std::string& path, size_t lines = 20) {
  return absl::StrCat("\n--- ", path, " (tail) ---\n",
                      testing::TailLines(testing::ReadFile(path), lines));
}

// One `gpuledger` process with stdout and stderr going to a log file. Always reaped: no writer
// outlives the check that follows it.
class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ > 0 && !done_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  // `env`: "NAME=value" settings added to the child's environment.
  absl::Status Start(const std::vector<std::string>& args, const std::string& log_path,
                     const std::vector<std::string>& env = {}) {
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::cout.flush();
    std::cerr.flush();
    started_ = Clock::now();
    pid_ = ::fork();
    if (pid_ < 0) return absl::ErrnoToStatus(errno, "fork");
    if (pid_ == 0) {
      const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      for (const std::string& e : env) ::putenv(const_cast<char*>(e.c_str()));
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    return absl::OkStatus();
  }

  // Whether it has exited (then it is reaped and end() is final).
  absl::StatusOr<bool> Exited() {
    if (done_) return true;
    const pid_t r = ::waitpid(pid_, &end_.status, WNOHANG);
    if (r < 0) return absl::ErrnoToStatus(errno, "waitpid");
    if (r == pid_) Finish();
    return done_;
  }

  // SIGKILLs it unless it has exited, and reaps it.
  absl::Status Kill() {
    if (done_) return absl::OkStatus();
    ::kill(pid_, SIGKILL);
    if (::waitpid(pid_, &end_.status, 0) != pid_) return absl::ErrnoToStatus(errno, "waitpid");
    // It may have exited on its own between the last look and the signal.
    end_.killed = WIFSIGNALED(end_.status) && WTERMSIG(end_.status) == SIGKILL;
    Finish();
    return absl::OkStatus();
  }

  // Waits until it exits; SIGKILLs it after `timeout_ms`.
  absl::Status Wait(int64_t timeout_ms) {
    for (;;) {
      auto exited = Exited();
      if (!exited.ok() || *exited) return exited.status();
      if (MsSince(started_) >= timeout_ms) return Kill();
      std::this_thread::sleep_for(kPollInterval);
    }
  }

  // Sleeps `ms` unless it exits first.
  absl::Status Sleep(int64_t ms) {
    const Clock::time_point until = Clock::now() + std::chrono::milliseconds(ms);
    while (Clock::now() < until) {
      auto exited = Exited();
      if (!exited.ok() || *exited) return exited.status();
      std::this_thread::sleep_for(kPollInterval);
    }
    return absl::OkStatus();
  }

  // SIGTERMs it unless it has exited, and waits up to `timeout_ms` for it (then SIGKILLs it).
  absl::Status Terminate(int64_t timeout_ms) {
    if (done_ || pid_ < 0) return absl::OkStatus();
    ::kill(pid_, SIGTERM);
    const Clock::time_point sent = Clock::now();
    for (;;) {
      auto exited = Exited();
      if (!exited.ok() || *exited) return exited.status();
      if (MsSince(sent) >= timeout_ms) return Kill();
      std::this_thread::sleep_for(kPollInterval);
    }
  }

  int64_t ran_ms() const { return MsSince(started_); }
  const ChildEnd& end() const { return end_; }

 private:
  void Finish() {
    done_ = true;
    end_.ran_ms = MsSince(started_);
  }

  pid_t pid_ = -1;
  bool done_ = false;
  Clock::time_point started_;
  ChildEnd end_;
};

// The offsets a consumer group committed to Kafka: ingest commits them right after each ledger
// commit, so they tell the parent how far a child has durably got without touching the ledger.
class CommittedProgress {
 public:
  absl::Status Open(const std::string& brokers, const std::string& group) {
    std::string err;
    std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    if (conf->set("bootstrap.servers", brokers, err) != RdKafka::Conf::CONF_OK ||
        conf->set("group.id", group, err) != RdKafka::Conf::CONF_OK ||
        conf->set("enable.auto.commit", "false", err) != RdKafka::Conf::CONF_OK) {
      return absl::InternalError(err);
    }
    consumer_.reset(RdKafka::KafkaConsumer::create(conf.get(), err));
    if (!consumer_) return absl::InternalError(err);
    return absl::OkStatus();
  }
  ~CommittedProgress() {
    if (consumer_) consumer_->close();
  }

  // Sum over the partitions of `base` of the group's committed offset, or of `base`'s offset
  // where the group has committed none.
  int64_t Sum(const ledger::OffsetMap& base) {
    std::vector<RdKafka::TopicPartition*> tps;
    for (const auto& [tp, offset] : base) {
      tps.push_back(RdKafka::TopicPartition::create(tp.topic, tp.partition));
    }
    const bool ok = consumer_->committed(tps, 2'000) == RdKafka::ERR_NO_ERROR;
    int64_t sum = 0;
    auto it = base.begin();
    for (const RdKafka::TopicPartition* tp : tps) {
      sum += ok && tp->offset() >= 0 ? std::max(tp->offset(), it->second) : it->second;
      ++it;
    }
    RdKafka::TopicPartition::destroy(tps);
    return sum;
  }

  // The group's committed offset of each partition of `like` (where it has committed one).
  absl::StatusOr<ledger::OffsetMap> Committed(const ledger::OffsetMap& like) {
    std::vector<RdKafka::TopicPartition*> tps;
    for (const auto& [tp, offset] : like) {
      tps.push_back(RdKafka::TopicPartition::create(tp.topic, tp.partition));
    }
    const RdKafka::ErrorCode err = consumer_->committed(tps, 10'000);
    ledger::OffsetMap out;
    for (const RdKafka::TopicPartition* tp : tps) {
      if (tp->offset() >= 0) out[{tp->topic(), tp->partition()}] = tp->offset();
    }
    RdKafka::TopicPartition::destroy(tps);
    if (err != RdKafka::ERR_NO_ERROR) {
      return absl::UnavailableError(absl::StrCat("committed offsets: ", RdKafka::err2str(err)));
    }
    return out;
  }

 private:
  std::unique_ptr<RdKafka::KafkaConsumer> consumer_;
};

// ---------------------------------------------------------------------------------------------
// Power cuts.

// The LD_PRELOAD library that journals what a child made durable (tests/crash/sync_journal.cc).
std::string SyncJournalLibrary() {
#ifdef GPULEDGER_SYNC_JOURNAL_LIB
  return GPULEDGER_SYNC_JOURNAL_LIB;
#else
  return "";
#endif
}

struct CutReport {
  int files = 0;      // created since the journal began, still there
  int truncated = 0;  // of which had bytes beyond their last sync
  int64_t bytes_dropped = 0;
  std::vector<std::string> cut;  // "directory/file" of each file cut back
};

// What a power cut at this instant leaves of the files the journal describes: every file created
// since the journal began is cut back to the size its last fsync/fdatasync made durable (0 if
// none). Directory entries are kept (see sync_journal.cc). Then the journal starts afresh: what is
// left is the durable state.
absl::StatusOr<CutReport> CutPower(const std::string& journal) {
  std::map<std::string, int64_t> durable;  // path -> bytes made durable (-1: never synced)
  std::istringstream in(testing::ReadFile(journal));
  for (std::string line; std::getline(in, line);) {
    if (line.size() < 3 || line[1] != ' ') {
      return absl::DataLossError(absl::StrCat(journal, ": bad line '", line, "'"));
    }
    const std::string rest = line.substr(2);
    switch (line[0]) {
      case 'C':
        durable[rest] = -1;
        break;
      case 'S': {
        const size_t space = rest.rfind(' ');
        const std::string path = rest.substr(0, space);
        if (auto it = durable.find(path); it != durable.end()) {
          it->second = std::strtoll(rest.c_str() + space + 1, nullptr, 10);
        }
        break;
      }
      case 'R': {
        // Paths hold no spaces here (temp dirs and RocksDB's file names).
        const size_t space = rest.find(' ');
        const std::string from = rest.substr(0, space), to = rest.substr(space + 1);
        auto it = durable.find(from);
        if (it != durable.end()) {
          durable[to] = it->second;
          durable.erase(from);
        } else {
          durable.erase(to);
        }
        break;
      }
      case 'U':
        durable.erase(rest);
        break;
      default:
        return absl::DataLossError(absl::StrCat(journal, ": bad line '", line, "'"));
    }
  }
  CutReport report;
  for (const auto& [path, synced] : durable) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    ++report.files;
    const int64_t keep = std::max<int64_t>(synced, 0);
    if (st.st_size <= keep) continue;
    if (::truncate(path.c_str(), keep) != 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("truncate ", path));
    }
    ++report.truncated;
    report.bytes_dropped += st.st_size - keep;
    const std::filesystem::path p(path);
    report.cut.push_back((p.parent_path().filename() / p.filename()).string());
  }
  if (::truncate(journal.c_str(), 0) != 0 && errno != ENOENT) {
    return absl::ErrnoToStatus(errno, absl::StrCat("truncate ", journal));
  }
  return report;
}

// ---------------------------------------------------------------------------------------------
// Settlement and serve beside the killed ingest.

// The standard output of `command` (run by /bin/sh), and whether it exited 0.
std::pair<bool, std::string> Capture(const std::string& command) {
  std::string out;
  FILE* f = ::popen(command.c_str(), "r");
  if (f == nullptr) return {false, ""};
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
  const int status = ::pclose(f);
  return {status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0, out};
}

// The number after `"key":` in a JSON text, or -1.
int64_t JsonInt(const std::string& json, const std::string& key) {
  const std::string needle = absl::StrCat("\"", key, "\":");
  const size_t at = json.find(needle);
  if (at == std::string::npos) return -1;
  return std::strtoll(json.c_str() + at + needle.size(), nullptr, 10);
}

// A CSV document without its comment lines (they name the ledger head and its hash, which
// differ between two ledgers holding the same decisions in another interleaving).
std::string WithoutComments(const std::string& csv) {
  std::string out;
  std::istringstream in(csv);
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with("#")) absl::StrAppend(&out, line, "\n");
  }
  return out;
}

// While ingest is killed again and again on a ledger: `gpuledger serve` follows it (one process
// for the whole run, polled for its head every kServePollInterval), and `gpuledger settle` brings
// a settlement store of its own up to it over and over (one process every kSettleInterval). Both
// must keep answering: every poll and every settle succeeds, and serve's head never goes back.
constexpr auto kServePollInterval = std::chrono::milliseconds(200);
constexpr auto kSettleInterval = std::chrono::milliseconds(500);
constexpr char kSettlePeriod[] = "2026-03";
constexpr int64_t kSettleTimeoutMs = 120'000;
constexpr int64_t kServeCatchUpMs = 60'000;

class Beside {
 public:
  Beside(std::string binary, std::string db, const testing::TempDir& dir)
      : binary_(std::move(binary)),
        db_(std::move(db)),
        tokens_(dir.Sub("tokens")),
        port_file_(dir.Sub("serve.port")),
        serve_log_(dir.Sub("serve.log")),
        settle_log_(dir.Sub("settle.log")),
        settle_out_(dir.Sub("settle-loop.csv")) {}
  Beside(const Beside&) = delete;
  Beside& operator=(const Beside&) = delete;
  ~Beside() { StopLoops(); }

  absl::Status Start() {
    auto [ok, token] = Capture(absl::StrCat(binary_, " tokens add --file ", tokens_,
                                            " --role auditor --name kill-test 2>/dev/null"));
    while (!token.empty() && (token.back() == '\n' || token.back() == ' ')) token.pop_back();
    if (!ok || token.empty()) return absl::InternalError("gpuledger tokens add failed");
    token_ = token;
    absl::Status s = serve_.Start({binary_, "--log-level", "info", "serve", "--db", db_, "--store",
                                   db_ + ".serve-store", "--tokens", tokens_, "--listen",
                                   "127.0.0.1:0", "--port-file", port_file_, "--refresh-ms", "100"},
                                  serve_log_);
    if (!s.ok()) return s;
    for (int i = 0; i < 300 && testing::ReadFile(port_file_).empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    const std::string port = testing::ReadFile(port_file_);
    if (port.empty())
      return absl::InternalError(absl::StrCat("serve did not start", LogTail(serve_log_)));
    url_ = absl::StrCat("http://127.0.0.1:", std::strtol(port.c_str(), nullptr, 10));
    poller_ = std::thread([this] { Poll(); });
    settler_ = std::thread([this] { Settle(); });
    return absl::OkStatus();
  }

  // Waits until serve has followed and settled the ledger to `head`; then stops the loops (serve
  // keeps running for Document()).
  absl::Status CatchUp(uint64_t head) {
    StopLoops();
    const Clock::time_point start = Clock::now();
    std::string last;
    while (MsSince(start) < kServeCatchUpMs) {
      last = Capture(absl::StrCat("curl -sS -m 5 ", url_, "/readyz")).second;
      if (JsonInt(last, "ledger_head") == static_cast<int64_t>(head) &&
          JsonInt(last, "settled_through") == static_cast<int64_t>(head)) {
        return absl::OkStatus();
      }
      std::this_thread::sleep_for(kServePollInterval);
    }
    return absl::DeadlineExceededError(absl::StrCat("serve did not reach ledger head ", head,
                                                    " in ", kServeCatchUpMs, " ms; /readyz: ", last,
                                                    LogTail(serve_log_)));
  }

  // A document from serve, e.g. "invoices.csv" of the settle period.
  absl::StatusOr<std::string> Document(const std::string& name) {
    auto [ok, body] =
        Capture(absl::StrCat("curl -sS -m 30 -w '\\n%{http_code}' -H 'Authorization: Bearer ",
                             token_, "' ", url_, "/v1/periods/", kSettlePeriod, "/", name));
    const size_t last = body.rfind('\n');
    if (!ok || last == std::string::npos || body.substr(last + 1) != "200") {
      return absl::InternalError(absl::StrCat("GET ", name, ": ", body, LogTail(serve_log_)));
    }
    body.resize(last);
    return body;
  }

  // Stops the loops, and serve with SIGTERM; whether serve then exited 0.
  bool Stop() {
    StopLoops();
    return serve_.Terminate(10'000).ok() && ExitedOk(serve_.end());
  }

  int polls() const { return polls_; }
  int settles() const { return settles_; }
  int64_t max_head_seen() const { return max_head_; }
  // What went wrong in the loops, if anything.
  const std::vector<std::string>& failures() const { return failures_; }

 private:
  void StopLoops() {
    stop_ = true;
    if (poller_.joinable()) poller_.join();
    if (settler_.joinable()) settler_.join();
  }

  void Fail(std::string what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (failures_.size() < 20) failures_.push_back(std::move(what));
  }

  void Poll() {
    while (!stop_) {
      auto [ok, body] = Capture(absl::StrCat("curl -sS -f -m 5 ", url_, "/readyz"));
      const int64_t head = JsonInt(body, "ledger_head");
      if (!ok || head < 0) {
        Fail(absl::StrCat("serve /readyz failed: ", body));
      } else if (head < max_head_) {
        Fail(absl::StrCat("serve's ledger head went back from ", max_head_.load(), " to ", head));
      } else {
        max_head_ = head;
        ++polls_;
      }
      // Before the first usage of the period there is no invoice yet: 404 is an answer too.
      if (polls_ % 10 == 0) {
        auto invoice = Document("invoices/uni.csv");
        if (!invoice.ok() && !absl::StrContains(invoice.status().message(), "no invoice for uni")) {
          Fail(std::string(invoice.status().message()));
        }
      }
      std::this_thread::sleep_for(kServePollInterval);
    }
  }

  void Settle() {
    while (!stop_) {
      Child settle;
      absl::Status s = settle.Start(
          {binary_, "settle", "--db", db_, "--store", db_ + ".settle-store", "--period",
           kSettlePeriod, "--document", "invoices", "--format", "csv", "-o", settle_out_},
          settle_log_);
      if (s.ok()) s = settle.Wait(kSettleTimeoutMs);
      if (!s.ok() || !ExitedOk(settle.end())) {
        Fail(absl::StrCat("settle beside ingest: ", s.ToString(), " ", Describe(settle.end()),
                          LogTail(settle_log_)));
      } else {
        ++settles_;
      }
      std::this_thread::sleep_for(kSettleInterval);
    }
  }

  std::string binary_, db_, tokens_, port_file_, serve_log_, settle_log_, settle_out_;
  std::string token_, url_;
  Child serve_;
  std::thread poller_, settler_;
  std::atomic<bool> stop_{false};
  std::atomic<int> polls_{0}, settles_{0};
  std::atomic<int64_t> max_head_{0};
  std::mutex mu_;
  std::vector<std::string> failures_;
};

// ---------------------------------------------------------------------------------------------
// Checking a ledger.

// What a check of a ledger found.
struct LedgerState {
  uint64_t head_seq = 0;
  ledger::Digest head_hash = ledger::kZeroDigest;
  // The decision recorded about each identity (its first entry).
  std::map<Identity, Decision> decisions;
  // CONFLICTING_DUPLICATE entries, per identity.
  std::map<Identity, uint64_t> conflicts;
  uint64_t malformed = 0;
  // Per partition, in order: each entry's offset and decision.
  std::map<ledger::TopicPartition, std::vector<std::pair<int64_t, Decision>>> entries;
  // Per partition: the next offset to consume, as the ledger stores it.
  ledger::OffsetMap stored_offsets;
  // Exact duplicates among the messages before the stored offsets.
  uint64_t duplicates = 0;
  // Counted from the entries.
  uint64_t accepted = 0;
  uint64_t rejected = 0;
  std::map<std::string, uint64_t> rejected_by_reason;
  // Per (CSP, producer): the producer sequence numbers of the entries.
  std::map<Identity, std::set<uint64_t>> producer_seqs;

  // Messages of usage topics consumed.
  int64_t UsageProgress(const std::string& registry_topic) const {
    int64_t sum = 0;
    for (const auto& [tp, next] : stored_offsets) sum += tp.topic == registry_topic ? 0 : next;
    return sum;
  }
};

// Each entry must be the message at its (topic, partition, offset), not an exact duplicate,
// with the decision expected for it; offsets rise within a partition and skip only exact
// duplicates; each identity is recorded once, and a conflicting duplicate only after it.
absl::Status ScanEntries(const ledger::Ledger& l, const Stream& stream, const TopicMirror& mirror,
                         LedgerState* state) {
  std::map<ledger::TopicPartition, int64_t> next_offset;
  return l.Scan(1, [&](const ledger::StoredEntry& e) -> absl::StatusOr<bool> {
    const v1::LedgerEntry& x = e.entry;
    const std::string at =
        absl::StrCat("seq ", e.seq, " (", x.topic(), "[", x.partition(), "]@", x.offset(), ")");
    if (e.seq != state->head_seq + 1 || x.seq() != e.seq) {
      return absl::DataLossError(absl::StrCat(at, ": entry says seq ", x.seq(), ", seq ",
                                              state->head_seq + 1, " was due"));
    }
    const ledger::TopicPartition tp{x.topic(), x.partition()};
    auto partition = mirror.partitions().find(tp);
    if (partition == mirror.partitions().end() || x.offset() < 0 ||
        x.offset() >= std::ssize(partition->second)) {
      return absl::DataLossError(absl::StrCat(at, ": no such message in Kafka"));
    }
    const std::vector<TopicMirror::Slot>& slots = partition->second;
    int64_t& next = next_offset[tp];
    if (x.offset() < next) return absl::DataLossError(absl::StrCat(at, ": offset went back"));
    for (int64_t o = next; o < x.offset(); ++o) {
      if (!slots[o].duplicate) {
        return absl::DataLossError(
            absl::StrCat(at, ": the message at offset ", o, " (not a duplicate) has no entry"));
      }
    }
    next = x.offset() + 1;
    const TopicMirror::Slot& slot = slots[x.offset()];
    const Message& m = stream.messages[slot.message];
    if (slot.duplicate) return absl::DataLossError(absl::StrCat(at, ": an exact duplicate"));
    if (x.payload() != m.value) return absl::DataLossError(absl::StrCat(at, ": other payload"));
    const Identity id{x.source_id(), x.event_id()};
    const Decision d{x.outcome(), x.reason_code()};
    if (id != m.identity || d != m.expected || x.resolves_seq() != 0) {
      return absl::DataLossError(absl::StrCat(
          at, ": (", id.first, ", ", id.second, ") ", DecisionName(d), " (", x.reason_detail(),
          "), expected (", m.identity.first, ", ", m.identity.second, ") ",
          DecisionName(m.expected), " for a message of kind '", KindName(m.kind), "'"));
    }
    if (d.reason_code == ingest::reason::kConflictingDuplicate) {
      if (!state->decisions.contains(id)) {
        return absl::DataLossError(absl::StrCat(at, ": conflicts with an unrecorded event"));
      }
      ++state->conflicts[id];
    } else if (id.second.empty()) {
      ++state->malformed;
    } else if (!state->decisions.emplace(id, d).second) {
      return absl::DataLossError(absl::StrCat(at, ": ", id.second, " recorded twice"));
    }
    if (d.outcome == v1::ACCEPTED) {
      ++state->accepted;
    } else {
      ++state->rejected;
      ++state->rejected_by_reason[d.reason_code];
    }
    if (!x.producer_id().empty() && x.producer_seq() != 0) {
      state->producer_seqs[{x.source_id(), x.producer_id()}].insert(x.producer_seq());
    }
    state->entries[tp].emplace_back(x.offset(), d);
    state->head_seq = e.seq;
    state->head_hash = e.hash;
    return true;
  });
}

// Each stored offset is past the partition's last entry, and what lies between is exact
// duplicates; no partition has entries without a stored offset. Counts the duplicates passed.
void CheckStoredOffsets(const TopicMirror& mirror, LedgerState* state) {
  for (const auto& [tp, entries] : state->entries) {
    EXPECT_TRUE(state->stored_offsets.contains(tp))
        << PartitionName(tp) << ": " << entries.size() << " entries but no stored offset";
  }
  for (const auto& [tp, stored] : state->stored_offsets) {
    auto partition = mirror.partitions().find(tp);
    if (partition == mirror.partitions().end() || stored > std::ssize(partition->second)) {
      ADD_FAILURE() << PartitionName(tp) << ": stored offset " << stored << " is past the end";
      continue;
    }
    auto entries = state->entries.find(tp);
    const int64_t last = entries == state->entries.end() ? -1 : entries->second.back().first;
    EXPECT_LT(last, stored) << PartitionName(tp) << ": an entry at or after the stored offset";
    for (int64_t o = 0; o < stored; ++o) {
      const bool duplicate = partition->second[o].duplicate;
      state->duplicates += duplicate ? 1 : 0;
      EXPECT_TRUE(o <= last || duplicate)
          << PartitionName(tp) << ": stored offset " << stored << " passes offset " << o
          << ", which is no duplicate and has no entry";
    }
  }
}

// Checkpoints exist for exactly the multiples of the interval up to the head; counters and
// producer progress describe exactly the entries.
void CheckSideRecords(const ledger::Ledger& l, const LedgerState& state) {
  const uint64_t interval = l.checkpoint_interval();
  ASSERT_GT(interval, 0u) << "the ledger is not signed";
  std::vector<uint64_t> checkpoints;
  ASSERT_TRUE(l.ScanCheckpoints([&](const v1::Checkpoint& cp) {
                 checkpoints.push_back(cp.seq());
                 return absl::OkStatus();
               }).ok());
  // One at every multiple of the interval, and others where a clean stop or a period close
  // signed the head; none past the head, none twice.
  EXPECT_TRUE(std::is_sorted(checkpoints.begin(), checkpoints.end()) &&
              std::adjacent_find(checkpoints.begin(), checkpoints.end()) == checkpoints.end());
  EXPECT_TRUE(checkpoints.empty() || checkpoints.back() <= state.head_seq);
  const std::set<uint64_t> have(checkpoints.begin(), checkpoints.end());
  for (uint64_t seq = interval; seq <= state.head_seq; seq += interval) {
    EXPECT_TRUE(have.contains(seq))
        << "no checkpoint at " << seq << " (every " << interval << " entries)";
  }

  const v1::LedgerCounters counters = l.Counters();
  EXPECT_EQ(counters.accepted(), state.accepted);
  EXPECT_EQ(counters.rejected(), state.rejected);
  EXPECT_EQ(counters.parked(), 0u);
  EXPECT_EQ(counters.duplicates(), state.duplicates)
      << "duplicates counted vs exact duplicates before the stored offsets";
  const std::map<std::string, uint64_t> by_reason(counters.rejected_by_reason().begin(),
                                                  counters.rejected_by_reason().end());
  EXPECT_EQ(by_reason, state.rejected_by_reason);

  std::map<Identity, std::set<uint64_t>> unseen = state.producer_seqs;
  ASSERT_TRUE(l.ScanProducers([&](const std::string& source_id, const std::string& producer_id,
                                  const ledger::ProducerProgress& p) {
                 const Identity key{source_id, producer_id};
                 const std::set<uint64_t>& seqs = unseen[key];
                 uint64_t contiguous = 0;
                 while (seqs.contains(contiguous + 1)) ++contiguous;
                 const uint64_t highest = seqs.empty() ? 0 : *seqs.rbegin();
                 EXPECT_FALSE(p.overflowed()) << producer_id;
                 EXPECT_EQ(p.contiguous(), contiguous) << producer_id;
                 EXPECT_EQ(p.highest(), highest) << producer_id;
                 EXPECT_EQ(p.MissingCount(), highest - seqs.size()) << producer_id;
                 unseen.erase(key);
                 return absl::OkStatus();
               }).ok());
  for (const auto& [key, seqs] : unseen) {
    EXPECT_TRUE(seqs.empty()) << key.second << ": " << seqs.size() << " entries, no progress";
  }
}

// Opens the ledger at `path` read-only, after its writer exited or was killed, and checks that
// it is a consistent prefix of every partition (ScanEntries, CheckStoredOffsets) that verifies
// with the operator's public `key`, whose side records match its entries, and which still holds
// what was committed before (`before`) unchanged.
void CheckConsistentPrefix(const std::string& path, const Stream& stream, const TopicMirror& mirror,
                           const ledger::SignatureVerifier& key, const LedgerState& before,
                           LedgerState* state) {
  ledger::LedgerOptions ro;
  ro.read_only = true;
  auto opened = ledger::Ledger::Open(path, ro);
  ASSERT_TRUE(opened.ok()) << opened.status();
  const ledger::Ledger& l = **opened;

  // A killed writer leaves the entries since its last checkpoint unsigned; a clean one signs
  // its head.
  ledger::VerifyOptions allow;
  allow.allow_unsigned_tail = true;
  auto report = ledger::Verify(l, &key, allow);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->ok) << "Verify: FAILED at seq " << report->first_bad_seq << ": "
                          << report->problem;

  LedgerState now;
  const absl::Status scanned = ScanEntries(l, stream, mirror, &now);
  ASSERT_TRUE(scanned.ok()) << scanned;
  EXPECT_EQ(l.head().seq, now.head_seq);
  EXPECT_TRUE(l.head().hash == now.head_hash) << "head hash is not the last entry's";
  now.stored_offsets = l.Offsets();
  CheckStoredOffsets(mirror, &now);
  ASSERT_NO_FATAL_FAILURE(CheckSideRecords(l, now));
  EXPECT_GE(report->last_checkpoint_seq, now.head_seq - now.head_seq % l.checkpoint_interval());

  // Append-only across crashes: what was committed before is still there, byte for byte.
  ASSERT_GE(now.head_seq, before.head_seq) << "committed entries disappeared";
  if (before.head_seq > 0) {
    auto old_head = l.Get(before.head_seq);
    ASSERT_TRUE(old_head.ok()) << old_head.status();
    EXPECT_TRUE(old_head->hash == before.head_hash) << "entry " << before.head_seq << " changed";
  }
  for (const auto& [tp, offset] : before.stored_offsets) {
    auto it = now.stored_offsets.find(tp);
    EXPECT_TRUE(it != now.stored_offsets.end() && it->second >= offset)
        << PartitionName(tp) << ": stored offset went back from " << offset;
  }
  *state = std::move(now);
}

// Read to the end of every partition of the mirror (which must have caught up).
void CheckComplete(const TopicMirror& mirror, const LedgerState& state, const std::string& what) {
  for (const auto& [tp, slots] : mirror.partitions()) {
    // The ledger stores no offset for a partition that never held a message.
    auto it = state.stored_offsets.find(tp);
    const int64_t stored = it == state.stored_offsets.end() ? 0 : it->second;
    EXPECT_EQ(stored, std::ssize(slots))
        << what << ": " << PartitionName(tp) << ": stored offset vs high watermark";
  }
}

// ---------------------------------------------------------------------------------------------
// The test.

// The plan of one kill round, drawn before it starts.
struct KillPlan {
  int batch_messages = 0;
  bool at_startup = false;
  double startup_share = 0;  // at_startup: when, as a share of the last time to a first commit
  double target_share = 0;   // else: how far into its share of the remaining messages
  int64_t delay_after_target_ms = 0;
};

class IngestKillTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    brokers_ = testing::KafkaBootstrap(&why);
    ASSERT_FALSE(brokers_.empty()) << why;
    binary_ = testing::GpuledgerBinary();
    ASSERT_FALSE(binary_.empty()) << "set GPULEDGER_BIN to the gpuledger binary";
    ASSERT_EQ(::access(binary_.c_str(), X_OK), 0) << binary_ << " is not executable";
    seed_ = testing::TestSeed();
    std::cout << "seed " << seed_ << " (GPULEDGER_TEST_SEED=" << seed_ << " replays it)\n";
    // Topic names are unique per run, not per seed, so that a replay on the same broker does
    // not find the topics of the run it replays.
    topics_ = ingest::TopicNames(
        absl::StrCat("kill", seed_ % 1'000'000'007, "-", std::random_device{}() % 1'000'000, "."));
    // Signed ledgers, as in production: checkpoints are part of what a crash must not tear.
    auto signer = ledger::Signer::Generate();
    ASSERT_TRUE(signer.ok()) << signer.status();
    auto key = ledger::SignatureVerifier::FromPublicKeyPem((*signer)->PublicKeyPem());
    ASSERT_TRUE(key.ok()) << key.status();
    key_ = std::move(*key);
    signing_key_file_ = dir_.Sub("signing-key.pem");
    std::ofstream out(signing_key_file_);
    out << (*signer)->PrivateKeyPem();
    out.close();
    ASSERT_TRUE(out.good()) << "cannot write " << signing_key_file_;
    ASSERT_TRUE(mirror_.Open(brokers_).ok());
  }

  struct TestLedger {
    std::string name;
    std::string db;
    int checkpoint_interval = 0;
    LedgerState state;  // as last checked
  };

  // How a child runs.
  struct ChildOptions {
    int batch_messages = 0;  // --batch-max-messages
    int64_t batch_ms = 0;    // --batch-max-ms, if not 0
    bool until_end = true;   // --until-end, or run as a service
  };

  // `gpuledger ingest` into `l.db`. Each run joins a consumer group of its own: a SIGKILLed
  // member stays in its group until its session times out (ingest's 10 s), and a successor in
  // the same group would get no partition until then.
  std::vector<std::string> IngestCommand(const TestLedger& l, const ChildOptions& o) {
    std::vector<std::string> args = {binary_,
                                     "--log-level",
                                     "info",
                                     "ingest",
                                     "--brokers",
                                     brokers_,
                                     "--db",
                                     l.db,
                                     "--topic-prefix",
                                     topics_.prefix(),
                                     "--group",
                                     group_,
                                     "--batch-max-messages",
                                     absl::StrCat(o.batch_messages),
                                     "--signing-key",
                                     signing_key_file_,
                                     "--checkpoint-interval",
                                     absl::StrCat(l.checkpoint_interval)};
    args.insert(args.end(), extra_args_.begin(), extra_args_.end());
    if (o.until_end) args.push_back("--until-end");
    if (o.batch_ms > 0) {
      args.push_back("--batch-max-ms");
      args.push_back(absl::StrCat(o.batch_ms));
    }
    return args;
  }

  // Starts a child on `l`, in a new group, logging to a new file.
  absl::Status StartChild(const TestLedger& l, const ChildOptions& o, Child* child) {
    ++runs_;
    group_ = absl::StrCat(topics_.prefix(), "ingest-", runs_);
    log_ = dir_.Sub(absl::StrCat("ingest-", runs_, ".log"));
    std::vector<std::string> env;
    if (power_cut_) {
      env = {"LD_PRELOAD=" + SyncJournalLibrary(), "GPULEDGER_SYNC_JOURNAL=" + journal_,
             "GPULEDGER_SYNC_JOURNAL_UNDER=" + dir_.path()};
    }
    return child->Start(IngestCommand(l, o), log_, env);
  }

  // Power-cut mode: every child runs with the sync journal, and after it ends (killed or not)
  // the power is cut (CutPower) before the ledger is checked.
  void EnablePowerCuts() {
    ASSERT_FALSE(SyncJournalLibrary().empty()) << "built without the sync_journal library";
    ASSERT_EQ(::access(SyncJournalLibrary().c_str(), R_OK), 0) << SyncJournalLibrary();
    power_cut_ = true;
    journal_ = dir_.Sub("sync.journal");
  }

  void Cut() {
    auto report = CutPower(journal_);
    ASSERT_TRUE(report.ok()) << report.status();
    ++cuts_;
    truncated_files_ += report->truncated;
    bytes_cut_ += report->bytes_dropped;
    last_cut_ = absl::StrCat("power cut: ", report->truncated, " of ", report->files,
                             " new files cut back (", absl::StrJoin(report->cut, ", "), "), ",
                             report->bytes_dropped, " bytes dropped");
  }

  // Messages the last child's group acknowledged to Kafka (committed offsets) that the ledger
  // `db` no longer holds: the sum over partitions of how far the committed offset is ahead of the
  // ledger's stored offset.
  absl::StatusOr<int64_t> AcknowledgedButLost(const std::string& db) {
    ledger::LedgerOptions lo;
    lo.read_only = true;
    lo.create_if_missing = false;
    auto l = ledger::Ledger::Open(db, lo);
    if (!l.ok()) return l.status();
    const ledger::OffsetMap stored = (*l)->Offsets();
    CommittedProgress probe;
    absl::Status s = probe.Open(brokers_, group_);
    if (!s.ok()) return s;
    ledger::OffsetMap all;
    for (const auto& [tp, slots] : mirror_.partitions()) all[tp] = 0;
    auto committed = probe.Committed(all);
    if (!committed.ok()) return committed.status();
    int64_t lost = 0;
    for (const auto& [tp, acked] : *committed) {
      auto it = stored.find(tp);
      lost += std::max<int64_t>(0, acked - (it == stored.end() ? 0 : it->second));
    }
    return lost;
  }

  absl::Status Publish(const std::vector<ingest::EncodedEvent>& events) {
    ingest::PublishOptions po;
    po.brokers = brokers_;
    po.topics = topics_;
    po.partitions_if_created = kPartitions;
    return testing::PublishAll(events, po);
  }

  std::set<std::string> Topics(bool with_new_csp) const {
    std::set<std::string> t = {topics_.Registry()};
    for (const char* csp : kCsps) t.insert(topics_.Usage(csp));
    if (with_new_csp) t.insert(topics_.Usage(kNewCsp));
    return t;
  }

  // Reads back what was published since the last look, then checks `l`.
  void Check(TestLedger* l) {
    const absl::Status read = mirror_.CatchUp(Topics(new_topic_created_), stream_);
    ASSERT_TRUE(read.ok()) << read;
    ASSERT_NO_FATAL_FAILURE(
        CheckConsistentPrefix(l->db, stream_, mirror_, *key_, l->state, &l->state));
  }

  int64_t Progress(const TestLedger& l) const { return l.state.UsageProgress(topics_.Registry()); }

  // Runs ingest on `l` to the end without a kill and checks the ledger.
  void IngestToEnd(std::mt19937_64& rng, TestLedger* l, const std::string& what) {
    const auto batch = static_cast<int>(Uniform(rng, kBatchMessagesMin, kBatchMessagesMax));
    Child child;
    ASSERT_TRUE(StartChild(*l, {.batch_messages = batch}, &child).ok());
    ASSERT_TRUE(child.Wait(kFinalRunTimeoutMs).ok());
    ASSERT_TRUE(ExitedOk(child.end()))
        << what << ": ingest " << Describe(child.end()) << LogTail(log_);
    const uint64_t head_before = l->state.head_seq;
    // A power cut after a clean exit must drop nothing that matters either.
    if (power_cut_) {
      ASSERT_NO_FATAL_FAILURE(Cut());
    }
    ASSERT_NO_FATAL_FAILURE(Check(l));
    std::cout << what << ": " << l->name << ", batch " << batch << ", " << Describe(child.end())
              << ", head " << head_before << " -> " << l->state.head_seq << std::endl;
  }

  KillPlan DrawPlan(std::mt19937_64& rng) {
    KillPlan p;
    p.batch_messages = static_cast<int>(Uniform(rng, kBatchMessagesMin, kBatchMessagesMax));
    p.at_startup = Uniform(rng, 1, kStartupKillOneIn) == 1;
    p.startup_share = static_cast<double>(Uniform(rng, 0, 1'000)) / 1'000.0;
    p.target_share = static_cast<double>(Uniform(rng, 500, 1'500)) / 1'000.0;
    p.delay_after_target_ms = Uniform(rng, 0, kKillDelayMaxMs);
    return p;
  }

  // One kill round on `l`: kills the child at the planned instant, or once its committed
  // progress passes `target` (messages of usage topics) and the planned delay. Notes when the
  // child first committed, if it was seen.
  void KillRound(const KillPlan& plan, int64_t target, TestLedger* l, ChildEnd* end) {
    Child child;
    ASSERT_TRUE(StartChild(*l, {.batch_messages = plan.batch_messages}, &child).ok());
    if (plan.at_startup) {
      const auto kill_ms =
          static_cast<int64_t>(plan.startup_share * static_cast<double>(first_commit_ms_));
      ASSERT_TRUE(child.Sleep(std::max(kStartupKillMinMs, kill_ms)).ok());
    } else {
      CommittedProgress probe;
      ASSERT_TRUE(probe.Open(brokers_, group_).ok());
      ledger::OffsetMap base;
      for (const auto& [tp, slots] : mirror_.partitions()) {
        if (tp.topic == topics_.Registry()) continue;
        auto it = l->state.stored_offsets.find(tp);
        base[tp] = it == l->state.stored_offsets.end() ? 0 : it->second;
      }
      const int64_t progress_before = Progress(*l);
      bool committed = false;
      for (;;) {
        auto exited = child.Exited();
        ASSERT_TRUE(exited.ok()) << exited.status();
        if (*exited) break;
        const int64_t progress = probe.Sum(base);
        if (!committed && progress > progress_before) {
          committed = true;
          first_commit_ms_ = child.ran_ms();
        }
        if (progress >= target) {
          ASSERT_TRUE(child.Sleep(plan.delay_after_target_ms).ok());
          break;
        }
        ASSERT_LT(child.ran_ms(), kTargetTimeoutMs)
            << "progress target " << target << " not reached" << LogTail(log_);
        std::this_thread::sleep_for(kPollInterval);
      }
    }
    ASSERT_TRUE(child.Kill().ok());
    *end = child.end();
    ASSERT_TRUE(end->killed || ExitedOk(*end)) << "ingest " << Describe(*end) << LogTail(log_);
  }

  // The rebalance round: while a child ingests the backlog, the new CSP's topic is created and
  // its usage published, and the held-back usage of the others is published bit by bit, until
  // the child's log shows the assignment of the new topic's partitions; the child is killed a
  // random instant after that.
  void RebalanceRound(std::mt19937_64& rng, TestLedger* l, ChildEnd* end);

  // The killed run: `rounds` kills (more if some land after the child was done), the
  // rebalance round among them, then a run to the end.
  void KilledRun(std::mt19937_64& rng, int rounds, TestLedger* l);

  void CompareLedgers(const TestLedger& killed, const TestLedger& reference);

  // The whole test: a stream of `events` usage messages, a killed run of `rounds` kills (with
  // serve and settle beside it if `with_beside`) and a reference run, compared.
  void Run(int events, int rounds, bool with_beside);

  // `gpuledger settle` of `db` into `store`: one document of the settle period as CSV, e.g.
  // {"invoices", "--institution", "uni"}.
  void SettleCsv(const std::string& db, const std::string& store,
                 const std::vector<std::string>& which, std::string* csv) {
    const std::string out = dir_.Sub(absl::StrCat("settled-", ++runs_, ".csv"));
    const std::string log = dir_.Sub(absl::StrCat("settle-", runs_, ".log"));
    std::vector<std::string> args = {binary_, "settle",   "--db",        db,         "--store",
                                     store,   "--period", kSettlePeriod, "--format", "csv",
                                     "-o",    out,        "--document"};
    args.insert(args.end(), which.begin(), which.end());
    Child settle;
    ASSERT_TRUE(settle.Start(args, log).ok());
    ASSERT_TRUE(settle.Wait(kSettleTimeoutMs).ok());
    ASSERT_TRUE(ExitedOk(settle.end())) << "settle " << Describe(settle.end()) << LogTail(log);
    *csv = testing::ReadFile(out);
    ASSERT_FALSE(csv->empty()) << out;
  }

  // The killed ledger's documents, from the store settle kept up to date beside the kills and
  // from serve, equal the reference ledger's, settled from scratch.
  void CompareDocuments(Beside* beside, const TestLedger& killed, const TestLedger& reference);

  std::string brokers_;
  std::string binary_;
  uint64_t seed_ = 0;
  ingest::TopicNames topics_;
  testing::TempDir dir_;
  std::string signing_key_file_;
  std::unique_ptr<ledger::SignatureVerifier> key_;
  Stream stream_;
  TopicMirror mirror_;
  bool new_topic_created_ = false;
  int runs_ = 0;  // child processes started
  // What the last kill rounds saw: how long a child took to its first commit, and how far past
  // their targets the kills landed (messages).
  int64_t first_commit_ms_ = kFirstCommitGuessMs;
  int64_t overshoot_ = 0;
  std::string group_;  // of the last child started
  std::string log_;    // of the last child started
  // Power-cut mode (EnablePowerCuts), and what the cuts did.
  bool power_cut_ = false;
  std::string journal_;
  int cuts_ = 0;
  int truncated_files_ = 0;
  int64_t bytes_cut_ = 0;
  std::string last_cut_;
  std::vector<std::string> extra_args_;  // of every child's command
};

size_t CountLines(const std::string& log, const std::string& needle) {
  size_t n = 0;
  for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
  return n;
}

void IngestKillTest::RebalanceRound(std::mt19937_64& rng, TestLedger* l, ChildEnd* end) {
  const int64_t kill_delay_ms = Uniform(rng, 0, kRebalanceKillDelayMaxMs);
  const std::string registry_assigned = absl::StrCat("assigned ", topics_.Registry(), "[0]");
  const std::string new_assigned = absl::StrCat("assigned ", topics_.Usage(kNewCsp), "[");
  Child child;
  ASSERT_TRUE(StartChild(*l,
                         {.batch_messages = kRebalanceBatchMessages,
                          .batch_ms = kRebalanceBatchMs,
                          .until_end = false},
                         &child)
                  .ok());
  // Its first assignment.
  while (CountLines(testing::ReadFile(log_), registry_assigned) == 0) {
    auto exited = child.Exited();
    ASSERT_TRUE(exited.ok() && !*exited && child.ran_ms() < kTargetTimeoutMs)
        << "no partition assigned" << LogTail(log_);
    std::this_thread::sleep_for(kPollInterval);
  }
  const Clock::time_point created = Clock::now();
  ASSERT_TRUE(ingest::EnsureTopics(brokers_, {topics_.Usage(kNewCsp)}, kPartitions).ok());
  new_topic_created_ = true;
  ASSERT_TRUE(Publish(Encode(stream_, stream_.new_csp, 0, stream_.new_csp.size())).ok());
  // The held-back messages, in chunks, until the new topic is assigned and the kill is due.
  const size_t first = stream_.usage.size() - stream_.held_back;
  size_t next = first;
  int64_t assigned_after_ms = -1;
  std::optional<Clock::time_point> kill_at;
  for (int chunk = 1;; ++chunk) {
    const Clock::time_point tick = Clock::now();
    if (kill_at.has_value() ? tick >= *kill_at : MsSince(created) >= kRebalanceWaitMs) break;
    const size_t to =
        std::min(stream_.usage.size(), first + stream_.held_back * chunk / kPaceChunks);
    if (to > next) {
      ASSERT_TRUE(Publish(Encode(stream_, stream_.usage, next, to)).ok());
    }
    next = to;
    if (!kill_at.has_value() && CountLines(testing::ReadFile(log_), new_assigned) > 0) {
      assigned_after_ms = MsSince(created);
      kill_at = Clock::now() + std::chrono::milliseconds(kill_delay_ms);
    }
    auto exited = child.Exited();
    ASSERT_TRUE(exited.ok()) << exited.status();
    if (*exited) break;
    std::this_thread::sleep_until(
        std::min(tick + kPaceInterval, kill_at.value_or(tick + kPaceInterval)));
  }
  ASSERT_TRUE(child.Kill().ok());
  *end = child.end();
  const size_t paced = next - first;
  if (next < stream_.usage.size()) {
    ASSERT_TRUE(Publish(Encode(stream_, stream_.usage, next, stream_.usage.size())).ok());
  }
  ASSERT_GE(assigned_after_ms, 0) << "the child (" << Describe(*end)
                                  << ") never got the new topic's partitions" << LogTail(log_);
  ASSERT_TRUE(end->killed) << "ingest " << Describe(*end) << LogTail(log_);
  const std::string log = testing::ReadFile(log_);
  // Assigned twice: at the start, and again with the new topic's partitions.
  EXPECT_GE(CountLines(log, registry_assigned), 2u) << LogTail(log_);
  EXPECT_GE(CountLines(log, new_assigned), static_cast<size_t>(kPartitions)) << LogTail(log_);
  std::cout << "rebalance: " << topics_.Usage(kNewCsp) << " created, its " << stream_.new_csp.size()
            << " messages published; the child's log shows it assigned " << assigned_after_ms
            << " ms later, while " << paced << " of " << stream_.held_back
            << " held-back messages were published in chunks until it was killed " << kill_delay_ms
            << " ms after that" << std::endl;
}

void IngestKillTest::KilledRun(std::mt19937_64& rng, int rounds, TestLedger* l) {
  const int rebalance_round =
      rounds < 2
          ? 1
          : static_cast<int>(Uniform(rng, std::max(2, rounds * 2 / 3), std::max(2, rounds - 2)));
  int kills = 0;
  int mid_run_kills = 0;
  for (int round = 1; kills < rounds && round <= rounds + kExtraRoundsMax; ++round) {
    const Clock::time_point started = Clock::now();
    const int64_t progress_before = Progress(*l);
    const uint64_t head_before = l->state.head_seq;
    ChildEnd end;
    std::string plan_text;
    std::optional<int64_t> target;  // of a progress kill
    if (round == rebalance_round) {
      ASSERT_NO_FATAL_FAILURE(RebalanceRound(rng, l, &end));
      plan_text = "rebalance";
    } else {
      KillPlan plan = DrawPlan(rng);
      // Everything published so far consumed but kills still owed (ingest can outrun the plan,
      // before the rebalance round too on a small stream): kill the next children while they
      // start up (loading the validator from the ledger), which is a crash point too.
      const size_t published =
          new_topic_created_ ? stream_.usage_messages() : stream_.usage.size() - stream_.held_back;
      if (progress_before >= static_cast<int64_t>(published)) {
        plan.at_startup = true;
        plan.startup_share = 0;
      }
      // Before the rebalance round, only the first part of the stream is there.
      const bool before = !new_topic_created_;
      const auto available = static_cast<int64_t>(
          before ? static_cast<double>(stream_.usage.size() - stream_.held_back) *
                       kBeforeRebalanceShare
                 : static_cast<double>(stream_.usage_messages()));
      // Kill rounds left until that limit, plus the round (or the final run) after it.
      const int shares = before ? rebalance_round - round + 1 : rounds - kills + 1;
      const auto advance = static_cast<int64_t>(
          plan.target_share * static_cast<double>(available - progress_before) / shares);
      // Past at least one commit of this child.
      target = progress_before + std::max<int64_t>(1, advance - overshoot_);
      ASSERT_NO_FATAL_FAILURE(KillRound(plan, *target, l, &end));
      plan_text =
          plan.at_startup
              ? absl::StrCat("kill at ", plan.startup_share, " of ", first_commit_ms_, " ms")
              : absl::StrCat("kill past ", *target, " + ", plan.delay_after_target_ms, " ms");
      plan_text += absl::StrCat(", batch ", plan.batch_messages);
    }
    const Clock::time_point check_started = Clock::now();
    if (power_cut_) {
      ASSERT_NO_FATAL_FAILURE(Cut());
    }
    ASSERT_NO_FATAL_FAILURE(Check(l));
    if (power_cut_) {
      auto lost = AcknowledgedButLost(l->db);
      ASSERT_TRUE(lost.ok()) << lost.status();
      EXPECT_EQ(*lost, 0) << "messages acknowledged to Kafka are not in the ledger after the cut";
      plan_text += absl::StrCat("; ", last_cut_);
    }
    const int64_t progress = Progress(*l);
    if (target.has_value() && end.killed) {
      overshoot_ = (overshoot_ + std::max<int64_t>(0, progress - *target)) / 2;
    }
    kills += end.killed ? 1 : 0;
    const bool mid_run = end.killed && progress > progress_before &&
                         progress < static_cast<int64_t>(stream_.usage_messages());
    mid_run_kills += mid_run ? 1 : 0;
    std::cout << "round " << round << ": " << plan_text << "; " << Describe(end) << "; consumed "
              << progress_before << " -> " << progress << " of "
              << (new_topic_created_ ? stream_.usage_messages()
                                     : stream_.usage.size() - stream_.held_back)
              << ", head " << head_before << " -> " << l->state.head_seq
              << (mid_run ? " (mid-run kill)" : "") << "; checked in " << MsSince(check_started)
              << " ms, round " << MsSince(started) << " ms" << std::endl;
    ASSERT_FALSE(HasFailure()) << "round " << round << ", ledger " << l->db << LogTail(log_);
    if (new_topic_created_ && progress == static_cast<int64_t>(stream_.usage_messages()) &&
        kills >= rounds) {
      break;
    }
  }
  std::cout << kills << " SIGKILLs, " << mid_run_kills << " of them mid-run" << std::endl;
  EXPECT_GE(kills, rounds) << "too few children were killed before they were done";
  EXPECT_GE(mid_run_kills, rounds / 2)
      << "too few kills interrupted an ingest that had committed something and was not done";
  ASSERT_NO_FATAL_FAILURE(IngestToEnd(rng, l, "final"));
}

void IngestKillTest::CompareLedgers(const TestLedger& killed, const TestLedger& reference) {
  for (const TestLedger* l : {&killed, &reference}) {
    const LedgerState& s = l->state;
    CheckComplete(mirror_, s, l->name);
    EXPECT_EQ(s.decisions.size(), stream_.decisions.size()) << l->name << ": identities";
    EXPECT_TRUE(s.decisions == stream_.decisions) << l->name << ": decisions as expected";
    uint64_t conflicts = 0;
    for (const auto& [id, n] : s.conflicts) conflicts += n;
    EXPECT_EQ(conflicts, stream_.conflicts) << l->name << ": CONFLICTING_DUPLICATE entries";
    EXPECT_EQ(s.malformed, stream_.malformed) << l->name << ": MALFORMED entries";
    EXPECT_EQ(s.duplicates, stream_.duplicates) << l->name << ": exact duplicates";
  }
  const LedgerState& k = killed.state;
  const LedgerState& r = reference.state;
  EXPECT_EQ(k.head_seq, r.head_seq);
  size_t differ = 0;
  for (const auto& [id, d] : r.decisions) {
    auto it = k.decisions.find(id);
    const bool same = it != k.decisions.end() && it->second == d;
    if (!same && ++differ <= 10) {
      ADD_FAILURE() << "(" << id.first << ", " << id.second << "): reference " << DecisionName(d)
                    << ", killed run "
                    << (it == k.decisions.end() ? std::string("absent") : DecisionName(it->second));
    }
  }
  EXPECT_EQ(differ, 0u) << "identities decided differently";
  EXPECT_EQ(k.decisions.size(), r.decisions.size());
  EXPECT_TRUE(k.conflicts == r.conflicts) << "conflicting duplicates differ";
  EXPECT_TRUE(k.entries == r.entries) << "per-partition (offset, decision) sequences differ";
  EXPECT_EQ(k.duplicates, r.duplicates);
  EXPECT_EQ(k.accepted, r.accepted);
  EXPECT_EQ(k.rejected_by_reason, r.rejected_by_reason);
  EXPECT_TRUE(k.stored_offsets == r.stored_offsets);
}

void IngestKillTest::CompareDocuments(Beside* beside, const TestLedger& killed,
                                      const TestLedger& reference) {
  ASSERT_TRUE(beside->CatchUp(killed.state.head_seq).ok());
  // The institution's invoice and each CSP's statement; the API path of each.
  std::vector<std::pair<std::vector<std::string>, std::string>> documents = {
      {{"invoices", "--institution", "uni"}, "invoices/uni.csv"},
      {{"invoices", "--institution", "sme"}, "invoices/sme.csv"}};
  for (const char* csp : {kCsps[0], kCsps[1], kNewCsp}) {
    documents.push_back({{"statements", "--csp", csp}, absl::StrCat("statements/", csp, ".csv")});
  }
  for (const auto& [which, path] : documents) {
    std::string from_reference, from_killed;
    ASSERT_NO_FATAL_FAILURE(
        SettleCsv(reference.db, dir_.Sub("reference.settle-store"), which, &from_reference));
    ASSERT_NO_FATAL_FAILURE(SettleCsv(killed.db, killed.db + ".settle-store", which, &from_killed));
    auto served = beside->Document(path);
    ASSERT_TRUE(served.ok()) << served.status();
    const std::string want = WithoutComments(from_reference);
    ASSERT_GT(std::count(want.begin(), want.end(), '\n'), 1) << path << " has no rows";
    EXPECT_EQ(WithoutComments(from_killed), want)
        << path << ": settled beside the kills vs the uninterrupted run";
    EXPECT_EQ(WithoutComments(*served), want)
        << path << ": served beside the kills vs the uninterrupted run";
    std::cout << kSettlePeriod << " " << path << ": " << want.size()
              << " bytes, equal from the reference, from the settlement store kept beside the "
                 "kills and from serve"
              << std::endl;
  }
  const bool serve_ok = beside->Stop();
  for (const std::string& f : beside->failures()) ADD_FAILURE() << f;
  EXPECT_TRUE(serve_ok) << "serve did not stop cleanly on SIGTERM";
  std::cout << "beside the kills: " << beside->settles() << " settle runs, " << beside->polls()
            << " serve polls (head up to " << beside->max_head_seen() << "), "
            << beside->failures().size() << " failures" << std::endl;
  EXPECT_GE(beside->settles(), 5) << "settle hardly ran beside the kills";
  EXPECT_GE(beside->polls(), 20) << "serve was hardly polled beside the kills";
}

void IngestKillTest::Run(int events, int rounds, bool with_beside) {
  SCOPED_TRACE(absl::StrCat("seed ", seed_, " (GPULEDGER_TEST_SEED=", seed_, " replays it)"));
  const Clock::time_point test_started = Clock::now();
  std::mt19937_64 rng(seed_);
  stream_ = MakeStream(topics_, static_cast<size_t>(events), rng);
  ASSERT_FALSE(HasFailure());
  std::cout << stream_.usage_messages() << " usage messages under " << topics_.prefix() << "*:";
  for (const auto& [kind, n] : stream_.published_by_kind)
    std::cout << " " << KindName(kind) << " " << n << ";";
  std::cout << " " << stream_.decisions.size() << " distinct events; " << events << " asked, "
            << rounds << " kills" << std::endl;

  TestLedger killed{"killed",
                    dir_.Sub("ledger-killed"),
                    static_cast<int>(Uniform(rng, kCheckpointIntervalMin, kCheckpointIntervalMax)),
                    {}};
  TestLedger reference{
      "reference",
      dir_.Sub("ledger-reference"),
      static_cast<int>(Uniform(rng, kCheckpointIntervalMin, kCheckpointIntervalMax)),
      {}};
  // The registry first, into both ledgers, before any usage exists: nothing is parked.
  std::vector<std::string> usage_topics;
  for (const char* csp : kCsps) usage_topics.push_back(topics_.Usage(csp));
  ASSERT_TRUE(ingest::EnsureTopics(brokers_, usage_topics, kPartitions).ok());
  ASSERT_TRUE(Publish(Encode(stream_, stream_.registry, 0, stream_.registry.size())).ok());
  ASSERT_NO_FATAL_FAILURE(IngestToEnd(rng, &killed, "registry"));
  ASSERT_NO_FATAL_FAILURE(IngestToEnd(rng, &reference, "registry"));
  Clock::time_point t = Clock::now();
  ASSERT_TRUE(
      Publish(Encode(stream_, stream_.usage, 0, stream_.usage.size() - stream_.held_back)).ok());
  std::cout << "published " << stream_.usage.size() - stream_.held_back << " usage messages in "
            << MsSince(t) << " ms" << std::endl;

  // serve and settle run beside the killed ingest from here to the end.
  Beside beside(binary_, killed.db, dir_);
  if (with_beside) {
    ASSERT_TRUE(beside.Start().ok());
  }
  t = Clock::now();
  ASSERT_NO_FATAL_FAILURE(KilledRun(rng, rounds, &killed));
  std::cout << "killed run: " << MsSince(t) << " ms" << std::endl;
  t = Clock::now();
  ASSERT_NO_FATAL_FAILURE(IngestToEnd(rng, &reference, "reference"));
  std::cout << "reference run: " << MsSince(t) << " ms (with its check)" << std::endl;
  ASSERT_EQ(mirror_.size(), stream_.registry.size() + stream_.usage_messages())
      << "the broker holds other messages than were published";
  CompareLedgers(killed, reference);
  if (with_beside) {
    ASSERT_NO_FATAL_FAILURE(CompareDocuments(&beside, killed, reference));
  }
  if (power_cut_) {
    std::cout << cuts_ << " power cuts: " << truncated_files_ << " files cut back, " << bytes_cut_
              << " unsynced bytes dropped; every message acknowledged to Kafka still in the ledger"
              << std::endl;
  }

  std::cout << "decisions:";
  std::cout << " ACCEPTED " << reference.state.accepted << ";";
  for (const auto& [reason, n] : reference.state.rejected_by_reason)
    std::cout << " " << reason << " " << n << ";";
  std::cout << " exact duplicates " << reference.state.duplicates << "; entries "
            << reference.state.head_seq << std::endl;
  std::cout << "total " << MsSince(test_started) << " ms" << std::endl;
}

TEST_F(IngestKillTest, KilledIngestDecidesEveryEventOnceAsAnUninterruptedRunDoes) {
  Run(EnvInt("GPULEDGER_KILL_EVENTS", kDefaultEvents, 1'000),
      EnvInt("GPULEDGER_KILL_ROUNDS", kDefaultRounds, 1), /*with_beside=*/true);
}

// Item 2 of issue 8: after every kill the power is cut too (what no fsync made durable is
// dropped, tests/crash/sync_journal.cc); no message acknowledged to Kafka may be missing from the
// ledger, and the rest is as above.
TEST_F(IngestKillTest, PowerCutsLoseNoAcknowledgedEvent) {
  ASSERT_NO_FATAL_FAILURE(EnablePowerCuts());
  Run(EnvInt("GPULEDGER_POWER_CUT_EVENTS", kPowerCutEvents, 1'000),
      EnvInt("GPULEDGER_POWER_CUTS", kPowerCuts, 1), /*with_beside=*/false);
}

// The power-cut check can fail: a ledger that does not fsync its commits (`ingest --no-sync`, for
// benchmarks only) loses messages it acknowledged to Kafka when the power is cut.
TEST_F(IngestKillTest, PowerCutCheckCatchesALedgerThatDoesNotSync) {
  ASSERT_NO_FATAL_FAILURE(EnablePowerCuts());
  std::mt19937_64 rng(seed_);
  stream_ = MakeStream(topics_, kPowerCutEvents, rng);
  ASSERT_FALSE(HasFailure());
  TestLedger l{"unsynced", dir_.Sub("ledger-unsynced"), kCheckpointIntervalMax, {}};
  std::vector<std::string> usage_topics;
  for (const char* csp : kCsps) usage_topics.push_back(topics_.Usage(csp));
  ASSERT_TRUE(ingest::EnsureTopics(brokers_, usage_topics, kPartitions).ok());
  ASSERT_TRUE(Publish(Encode(stream_, stream_.registry, 0, stream_.registry.size())).ok());
  ASSERT_NO_FATAL_FAILURE(IngestToEnd(rng, &l, "registry"));
  ASSERT_TRUE(
      Publish(Encode(stream_, stream_.usage, 0, stream_.usage.size() - stream_.held_back)).ok());
  ASSERT_TRUE(mirror_.CatchUp(Topics(false), stream_).ok());
  extra_args_ = {"--no-sync"};
  KillPlan plan = DrawPlan(rng);
  plan.at_startup = false;
  plan.delay_after_target_ms = 0;
  ChildEnd end;
  ASSERT_NO_FATAL_FAILURE(KillRound(plan, Progress(l) + 1'000, &l, &end));
  ASSERT_TRUE(end.killed) << Describe(end);
  ASSERT_NO_FATAL_FAILURE(Cut());
  auto lost = AcknowledgedButLost(l.db);
  ASSERT_TRUE(lost.ok()) << lost.status();
  std::cout << "--no-sync: " << last_cut_ << "; " << *lost
            << " messages acknowledged to Kafka are missing from the ledger" << std::endl;
  EXPECT_GT(*lost, 0) << "the power-cut check did not notice a ledger that never syncs";
}

}  // namespace
}  // namespace gpuledger
