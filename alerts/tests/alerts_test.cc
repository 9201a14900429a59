// The alert monitor (alerts/alerts.h): each condition raised once per crossing, not again after a
// restart or a replay into a fresh settlement store; who hears of what; deliveries retried with
// backoff and given up; the Standard Webhooks signature.
#include "alerts/alerts.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "events.h"
#include "harness.h"
#include "testsupport/temp_dir.h"

namespace gpuledger::alerts {
namespace {

using settlement::testing::Harness;
using settlement::testing::kHour;
namespace ev = settlement::testing;
namespace v1 = gpuledger::v1;

const base::Period kJan{2026, 1}, kFeb{2026, 2};

settlement::EntrySource SourceOf(const Harness& h) {
  return [&h](uint64_t from, const settlement::EntryVisitor& visit) -> absl::Status {
    for (const auto& e : h.entries()) {
      if (e.seq < from) continue;
      auto more = visit(e);
      if (!more.ok()) return more.status();
      if (!*more) break;
    }
    return absl::OkStatus();
  };
}

std::vector<std::string> Ids(const std::vector<Alert>& alerts) {
  std::vector<std::string> out;
  for (const auto& a : alerts) out.push_back(a.id);
  return out;
}

v1::RegistryEvent Budget(int64_t krw, std::vector<uint32_t> thresholds) {
  v1::RegistryEvent e;
  auto* b = e.mutable_budget();
  b->set_program(v1::GOV_ADVANCED);
  b->set_fiscal_year(2026);
  b->set_amount_krw(krw);
  for (uint32_t t : thresholds) b->add_alert_thresholds_bp(t);
  return e;
}

// One SME with a capped allocation, a budget of 1,000,000 won, alerts at half and all of it.
void SmeWithABudget(Harness& h) {
  h.Registry(ev::Rate(10'000, 0));
  h.Registry(ev::Copay(v1::SME, 1'000, 0));
  h.Registry(ev::Institution("s1", v1::SME, 0));
  v1::RegistryEvent a = ev::Allocation("a1", "s1");
  a.mutable_allocation()->set_gpu_ms_cap(200 * kHour);
  h.Registry(a);
  h.Registry(Budget(1'000'000, {5'000, 10'000}));
  v1::RegistryEvent s;
  s.mutable_alert_settings()->add_allocation_balance_thresholds_bp(9'000);
  s.mutable_alert_settings()->set_csp_rejection_rate_bp(2'000);
  s.mutable_alert_settings()->set_csp_rejection_min_events(5);
  h.Registry(s);
}

TEST(MonitorTest, EachCrossingIsRaisedOnceAndNotAgainAfterARestartOrAReplay) {
  gpuledger::testing::TempDir dir;
  Harness h;
  SmeWithABudget(h);
  auto monitor = Monitor::Open(dir.Sub("alerts"));
  ASSERT_TRUE(monitor.ok()) << monitor.status();
  auto eval = [&](Monitor& m, Harness& with) {
    auto raised = m.Evaluate(with.engine(), SourceOf(with), {}, 1'000);
    EXPECT_TRUE(raised.ok()) << raised.status();
    return raised.ok() ? Ids(*raised) : std::vector<std::string>{};
  };
  EXPECT_TRUE(eval(**monitor, h).empty());
  // 60 GPU-hours: 600,000 won list, 540,000 subsidy: half the budget.
  h.Usage("csp-a", ev::Usage("e1", "a1", 6, kJan.StartMs(), kJan.StartMs() + 10 * kHour));
  EXPECT_EQ(eval(**monitor, h), (std::vector<std::string>{"budget/GOV_ADVANCED/2026//5000#1"}));
  EXPECT_TRUE(eval(**monitor, h).empty());
  // 190 of the cap's 200 GPU-hours: past 90%.
  h.Usage("csp-a",
          ev::Usage("e2", "a1", 13, kJan.StartMs() + 10 * kHour, kJan.StartMs() + 20 * kHour));
  EXPECT_EQ(eval(**monitor, h), (std::vector<std::string>{"budget/GOV_ADVANCED/2026//10000#1",
                                                          "allocation/a1/9000#1"}));

  // A restart: the monitor's state holds.
  monitor->reset();
  monitor = Monitor::Open(dir.Sub("alerts"));
  ASSERT_TRUE(monitor.ok());
  EXPECT_TRUE(eval(**monitor, h).empty());
  // A replay into a fresh settlement store gives the same state: nothing new.
  Harness replay;
  for (const auto& e : h.entries()) {
    v1::LedgerEntry entry = e.entry;
    if (entry.source() == v1::SOURCE_REGISTRY) {
      v1::RegistryEvent r;
      ASSERT_TRUE(r.ParseFromString(entry.payload()));
      replay.Registry(r);
    } else {
      v1::UsageEvent u;
      ASSERT_TRUE(u.ParseFromString(entry.payload()));
      replay.Usage(entry.source_id(), u);
    }
  }
  EXPECT_TRUE(eval(**monitor, replay).empty());

  // Taken back below a threshold and crossing it again: a second crossing, a new alert.
  h.Usage("csp-a", ev::Correction("c1", "e2", "a1", nullptr));
  EXPECT_TRUE(eval(**monitor, h).empty());
  h.Usage("csp-a",
          ev::Usage("e3", "a1", 13, kJan.StartMs() + 30 * kHour, kJan.StartMs() + 40 * kHour));
  EXPECT_EQ(eval(**monitor, h), (std::vector<std::string>{"budget/GOV_ADVANCED/2026//10000#2",
                                                          "allocation/a1/9000#2"}));

  // Closes: the month, each invoice final; the next close, the adjustment of January's late
  // usage.
  h.Close(kJan);
  EXPECT_EQ(eval(**monitor, h),
            (std::vector<std::string>{"closed/2026-01#1", "invoice/2026-01/s1#1"}));
  h.Usage("csp-a",
          ev::Usage("e4", "a1", 1, kJan.StartMs() + 50 * kHour, kJan.StartMs() + 51 * kHour));
  h.Close(kFeb);
  EXPECT_EQ(eval(**monitor, h),
            (std::vector<std::string>{"closed/2026-02#1", "invoice/2026-02/s1#1",
                                      "adjustment/2026-02/s1#1"}));
  const std::vector<Alert> all = (*monitor)->Alerts();
  ASSERT_EQ(all.size(), 10u);
  const Alert& invoice = all[all.size() - 2];
  EXPECT_EQ(invoice.type, kInvoiceFinal);
  EXPECT_EQ(invoice.audience, "institution:s1");
  const auto data = nlohmann::json::parse(invoice.data_json);
  EXPECT_EQ(data["period"], "2026-02");
  EXPECT_GT(data["amount_due_krw"].get<int64_t>(), 0);
}

TEST(MonitorTest, ARejectedShareOfADayOverTheThresholdIsRaisedForTheCsp) {
  gpuledger::testing::TempDir dir;
  Harness h;
  SmeWithABudget(h);
  auto monitor = Monitor::Open(dir.Sub("alerts"));
  ASSERT_TRUE(monitor.ok());
  for (int i = 0; i < 3; ++i) {
    h.Usage("csp-a", ev::Usage(absl::StrCat("ok", i), "a1", 1, kJan.StartMs() + i * kHour,
                               kJan.StartMs() + (i + 1) * kHour));
  }
  h.Rejected("csp-a", ev::Usage("bad1", "a1", 1, 0, 1));
  // 1 of 4: under the minimum of 5 events.
  auto raised = (*monitor)->Evaluate(h.engine(), SourceOf(h), {}, 0);
  ASSERT_TRUE(raised.ok());
  EXPECT_TRUE(raised->empty());
  h.Rejected("csp-a", ev::Usage("bad2", "a1", 1, 0, 1));  // 2 of 5: 40% ≥ 20%
  raised = (*monitor)->Evaluate(h.engine(), SourceOf(h), {}, 0);
  ASSERT_TRUE(raised.ok());
  ASSERT_EQ(Ids(*raised), (std::vector<std::string>{"rejections/csp-a/1970-01-01#1"}));
  EXPECT_EQ((*raised)[0].audience, "csp:csp-a");
  EXPECT_EQ(nlohmann::json::parse((*raised)[0].data_json)["rejected"], 2);
}

TEST(MonitorTest, DeliveriesGoToWhoMayHearAndAreRetriedWithBackoffThenGivenUp) {
  gpuledger::testing::TempDir dir;
  Harness h;
  SmeWithABudget(h);
  MonitorOptions o;
  o.max_attempts = 3;
  o.first_backoff_ms = 1'000;
  auto monitor = Monitor::Open(dir.Sub("alerts"), o);
  ASSERT_TRUE(monitor.ok());
  const std::vector<Subscription> subs = {
      {"fin", "http://127.0.0.1:1/f", "whsec_c2VjcmV0", "finance", {}},
      {"s1", "http://127.0.0.1:1/s", "whsec_c2VjcmV0", "institution:s1", {}},
      {"s2", "http://127.0.0.1:1/t", "whsec_c2VjcmV0", "institution:s2", {}},
      {"csp", "http://127.0.0.1:1/c", "whsec_c2VjcmV0", "csp:csp-a", {kCspRejectionRate}},
  };
  h.Usage("csp-a", ev::Usage("e1", "a1", 19, kJan.StartMs(), kJan.StartMs() + 10 * kHour));
  auto raised = (*monitor)->Evaluate(h.engine(), SourceOf(h), subs, 10'000);
  ASSERT_TRUE(raised.ok());
  ASSERT_EQ(raised->size(), 3u);  // two budget thresholds and the allocation's
  auto due = (*monitor)->Due(10'000);
  std::multiset<std::string> to;
  for (const auto& [d, a] : due) to.insert(d.subscription_id);
  // Finance hears of all three; s1 of its allocation only; s2 and the CSP of nothing.
  EXPECT_EQ(to, (std::multiset<std::string>{"fin", "fin", "fin", "s1"}));
  EXPECT_EQ((*monitor)->Unpublished().size(), 3u);
  ASSERT_TRUE((*monitor)->MarkPublished(Ids(*raised)).ok());
  EXPECT_TRUE((*monitor)->Unpublished().empty());

  // s1's delivery fails: retried after 1 s, then 2 s, then given up (3 attempts).
  auto mine = [&](int64_t now) {
    for (auto& [d, a] : (*monitor)->Due(now)) {
      if (d.subscription_id == "s1") return std::optional<Delivery>(d);
    }
    return std::optional<Delivery>();
  };
  for (auto& [d, a] : due) {
    if (d.subscription_id == "fin") {
      ASSERT_TRUE((*monitor)->RecordAttempt(d, true, "", 10'000).ok());
    }
  }
  auto d = mine(10'000);
  ASSERT_TRUE(d);
  ASSERT_TRUE((*monitor)->RecordAttempt(*d, false, "HTTP 500", 10'000).ok());
  EXPECT_FALSE(mine(10'999));
  d = mine(11'000);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->attempts, 1);
  ASSERT_TRUE((*monitor)->RecordAttempt(*d, false, "HTTP 500", 11'000).ok());
  EXPECT_FALSE(mine(12'999));
  d = mine(13'000);
  ASSERT_TRUE(d);
  ASSERT_TRUE((*monitor)->RecordAttempt(*d, false, "connection refused", 13'000).ok());
  EXPECT_FALSE(mine(1'000'000));
  int given_up = 0, delivered = 0;
  for (const Delivery& x : (*monitor)->Deliveries()) {
    if (x.status == DeliveryStatus::kGivenUp) {
      ++given_up;
      EXPECT_EQ(x.subscription_id, "s1");
      EXPECT_EQ(x.attempts, 3);
      EXPECT_EQ(x.last_error, "connection refused");
    }
    if (x.status == DeliveryStatus::kDelivered) ++delivered;
  }
  EXPECT_EQ(given_up, 1);
  EXPECT_EQ(delivered, 3);
}

TEST(WebhookTest, SignaturesFollowStandardWebhooks) {
  // The example of the Standard Webhooks specification.
  auto sig = Sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
                  1614265330, R"({"test": 2432232314})");
  ASSERT_TRUE(sig.ok()) << sig.status();
  EXPECT_EQ(*sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  EXPECT_FALSE(Sign("secret", "m", 0, "").ok());
  EXPECT_FALSE(Sign("whsec_", "m", 0, "").ok());
}

TEST(WebhookTest, SubscriptionsFileErrorsNameTheEntry) {
  gpuledger::testing::TempDir dir;
  auto write = [&](const std::string& text) {
    std::ofstream(dir.Sub("subs.json")) << text;
    return LoadSubscriptions(dir.Sub("subs.json"));
  };
  EXPECT_FALSE(LoadSubscriptions(dir.Sub("missing.json")).ok());
  EXPECT_FALSE(write("[]").ok());
  auto bad = write(
      R"({"subscriptions":[{"id":"a","url":"ftp://x","secret":"whsec_eA==","role":"finance"}]})");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("subscription 1 (a)"), std::string::npos);
  EXPECT_FALSE(
      write(
          R"({"subscriptions":[{"id":"a","url":"http://x","secret":"whsec_eA==","role":"boss"}]})")
          .ok());
  EXPECT_FALSE(
      write(
          R"({"subscriptions":[{"id":"a","url":"http://x","secret":"whsec_eA==","role":"finance","types":["x"]}]})")
          .ok());
  auto ok = write(
      R"({"subscriptions":[{"id":"a","url":"http://x/h","secret":"whsec_eA==","role":"institution:s1","types":["invoice.final"]}]})");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)[0].role, "institution:s1");
}

}  // namespace
}  // namespace gpuledger::alerts
