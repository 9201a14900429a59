#!/usr/bin/env python3
"""`gpuledger alerts run` against the sample month of the `api` fixture (closed 2026-03, its late
events, two budgets, alert settings): real Kafka, real local HTTP receivers.

- Each alert is raised once: the month closed, each of its invoices final, the budget thresholds
  the budget report says are crossed. A second run (a restart) raises nothing and publishes
  nothing more.
- Every alert is on the Kafka alerts topic exactly once, keyed by its id.
- Webhooks get what their role may hear of: finance everything, an institution only its own.
  The signature is checked here with Python's hmac, independently of the C++ code.
- A receiver that fails twice gets each alert on the third attempt. One that always fails is
  given up after --max-attempts, and `alerts list` shows it.
"""
import base64
import hashlib
import hmac
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_env import ENV, load_env  # noqa: E402

BIN = os.environ["GPULEDGER_BIN"]
KAFKA = load_env(os.environ["GPULEDGER_KAFKA_ENV"])["KAFKA_BOOTSTRAP"]
KEY = b"gpuledger-test-signing-key-0001"
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def api(path):
    req = urllib.request.Request(ENV["API_URL"] + path,
                                 headers={"Authorization": "Bearer " + ENV["TOKEN_OPERATOR"]})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


class Receiver:
    """A local HTTP receiver: fails the first `fail_first` requests of each message id with 500
    (every request when fail_first is None), then answers 204; checks every signature."""

    def __init__(self, fail_first):
        self.fail_first = fail_first
        self.attempts = {}     # webhook-id -> requests
        self.accepted = {}     # webhook-id -> payload
        self.bad_signatures = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                msg_id = self.headers["webhook-id"]
                ts = self.headers["webhook-timestamp"]
                signed = f"{msg_id}.{ts}.".encode() + body
                want = "v1," + base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
                if self.headers["webhook-signature"] != want:
                    outer.bad_signatures.append(msg_id)
                n = outer.attempts[msg_id] = outer.attempts.get(msg_id, 0) + 1
                if outer.fail_first is None or n <= outer.fail_first:
                    self.send_response(500)
                    self.end_headers()
                    return
                outer.accepted[msg_id] = json.loads(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


class AlertsTest(unittest.TestCase):
    def test_alerts_raised_once_published_and_delivered_with_retries(self):
        flaky = Receiver(fail_first=2)
        own = Receiver(fail_first=2)
        broken = Receiver(fail_first=None)
        self.addCleanup(flaky.close)
        self.addCleanup(own.close)
        self.addCleanup(broken.close)
        work = tempfile.mkdtemp(prefix="gpuledger-alerts-test.")
        prefix = f"alerts-test-{os.getpid()}."
        subs = {"subscriptions": [
            {"id": "finance", "url": flaky.url, "secret": SECRET, "role": "finance"},
            {"id": "kangnam", "url": own.url, "secret": SECRET,
             "role": "institution:inst-kangnam-semi"},
            {"id": "broken", "url": broken.url, "secret": SECRET, "role": "operator",
             "types": ["period.closed"]},
        ]}
        with open(os.path.join(work, "subs.json"), "w") as f:
            json.dump(subs, f)
        run = [BIN, "alerts", "run", "--db", ENV["API_DB"],
               "--store", os.path.join(work, "settlement"), "--state", os.path.join(work, "state"),
               "--subscriptions", os.path.join(work, "subs.json"), "--brokers", KAFKA,
               "--topic-prefix", prefix, "--first-backoff-ms", "50", "--max-attempts", "3",
               "--poll-ms", "50", "--until-delivered"]
        first = subprocess.run(run, capture_output=True, text=True, timeout=240)
        self.assertEqual(first.returncode, 0, first.stderr[-3000:])
        listed = json.loads(subprocess.run(
            [BIN, "alerts", "list", "--state", os.path.join(work, "state"), "--format", "json"],
            capture_output=True, text=True, check=True).stdout)
        ids = [a["id"] for a in listed["alerts"]]
        self.assertEqual(len(ids), len(set(ids)))

        # What must have been raised, from the API: the close, each invoice, the budgets.
        invoices = api("/v1/periods/2026-03/invoices")["invoices"]
        expected = {"closed/2026-03#1"} | {f"invoice/2026-03/{i['institution_id']}#1"
                                             for i in invoices}
        for b in api("/v1/reports/budget?year=2026")["budgets"]:
            for t in b["thresholds_crossed_bp"]:
                expected.add(f"budget/{b['program']}/2026/{b['call_id']}/{t}#1")
        self.assertTrue(any(i.startswith("budget/LEASE_HPC/2026//5000") for i in expected))
        raised = {i for i in ids if not i.startswith("rejections/")}
        self.assertEqual(raised, expected)
        for a in listed["alerts"]:
            if a["type"] == "csp.rejection_rate_exceeded":
                d = a["data"]
                self.assertGreaterEqual(d["accepted"] + d["rejected"], 10)
                self.assertGreaterEqual(d["rejected"] * 10000, 500 * (d["accepted"] + d["rejected"]))

        # Kafka: every alert once, keyed by its id.
        topic = prefix + "gpuledger.alerts"
        keys = subprocess.run(["kcat", "-C", "-b", KAFKA, "-t", topic, "-e", "-q", "-f", "%k\\n"],
                              capture_output=True, text=True, timeout=60, check=True).stdout.split()
        self.assertEqual(sorted(keys), sorted(ids))

        # Webhooks: finance got everything on the third attempt; the institution its invoice.
        self.assertEqual(flaky.bad_signatures, [])
        self.assertEqual(own.bad_signatures, [])
        self.assertEqual(set(own.accepted), {"invoice/2026-03/inst-kangnam-semi#1"})
        self.assertEqual(broken.bad_signatures, [])
        self.assertEqual(set(flaky.accepted), set(ids))
        kangnam = [d for d in listed["deliveries"] if d["subscription_id"] == "kangnam"]
        self.assertEqual({d["alert_id"] for d in kangnam}, {"invoice/2026-03/inst-kangnam-semi#1"})
        for d in listed["deliveries"]:
            if d["subscription_id"] in ("finance", "kangnam"):
                self.assertEqual((d["status"], d["attempts"]), ("delivered", 3), d)
        self.assertEqual(flaky.attempts["closed/2026-03#1"], 3)
        self.assertEqual(flaky.accepted["closed/2026-03#1"]["type"], "period.closed")
        gave_up = [d for d in listed["deliveries"] if d["subscription_id"] == "broken"]
        self.assertEqual(len(gave_up), 1)
        self.assertEqual((gave_up[0]["status"], gave_up[0]["attempts"], gave_up[0]["last_error"]),
                         ("given_up", 3, "HTTP 500"))
        self.assertEqual(broken.attempts, {"closed/2026-03#1": 3})

        # A restart: nothing raised, published or delivered again.
        before = dict(flaky.attempts)
        second = subprocess.run(run, capture_output=True, text=True, timeout=240)
        self.assertEqual(second.returncode, 0, second.stderr[-3000:])
        self.assertNotIn("alert raised", second.stderr)
        again = subprocess.run(["kcat", "-C", "-b", KAFKA, "-t", topic, "-e", "-q", "-f", "%k\\n"],
                               capture_output=True, text=True, timeout=60, check=True).stdout.split()
        self.assertEqual(sorted(again), sorted(ids))
        self.assertEqual(flaky.attempts, before)


if __name__ == "__main__":
    unittest.main()
