#!/usr/bin/env python3
"""Usage over HTTP (POST /v1/events) against a real broker, with only what curl does.

- The sample month is published twice: once to Kafka by `gpuledger publish` (ledger A), once
  over HTTP by each CSP with its own token (ledger B), in every form the gateway takes: JSON
  arrays with epoch or RFC 3339 times, NDJSON, CloudEvents batches, structured and binary
  CloudEvents. Each request is answered 200 with every event taken (partition and offset).
  Ingest then gives both ledgers the same settlement documents for the month, byte for byte,
  and the same rejections: nothing decided over HTTP differs from Kafka.
- A CSP reads its rejections and its statement with the same token.
- What is not a usage event of the token's CSP is refused, each with its reason, and never
  produced; whole bodies that cannot be read are refused with 400/413/415; other roles get 403.
- A gateway killed (SIGKILL) while batches are in flight loses no event it acknowledged: after
  ingest, every acknowledged event id is in the ledger.
"""
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request


def load_env(path):
    """KEY=VALUE lines, as ops/kafka/start.sh writes them."""
    with open(path) as f:
        return dict(line.strip().split("=", 1) for line in f if "=" in line and
                    not line.startswith("#"))


BIN = os.environ["GPULEDGER_BIN"]
KAFKA = load_env(os.environ["GPULEDGER_KAFKA_ENV"])["KAFKA_BOOTSTRAP"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KST = datetime.timezone(datetime.timedelta(hours=9))


def run(*args, **kw):
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=300, **kw)
    if p.returncode != 0:
        raise AssertionError(f"{args}: exit {p.returncode}\n{p.stderr[-3000:]}")
    return p.stdout


def iso(ms):
    """An epoch-ms time as RFC 3339 in KST, to the millisecond."""
    t = datetime.datetime.fromtimestamp(ms / 1000, KST)
    return t.isoformat(timespec="milliseconds")


def post(url, token, body, content_type, headers=None, timeout=60):
    h = {"Content-Type": content_type}
    if token:
        h["Authorization"] = "Bearer " + token
    h.update(headers or {})
    data = body if isinstance(body, bytes) else body.encode()
    req = urllib.request.Request(url + "/v1/events", data=data, headers=h, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def get(url, token, path):
    req = urllib.request.Request(url + path, headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def start_serve(work, db, tokens, prefix, name):
    port_file = os.path.join(work, name + ".port")
    log_path = os.path.join(work, name + ".log")
    log = open(log_path, "w")
    p = subprocess.Popen([BIN, "serve", "--db", db, "--tokens", tokens, "--listen", "127.0.0.1:0",
                          "--port-file", port_file, "--refresh-ms", "200", "--rate-limit", "0",
                          "--store", os.path.join(work, name + ".settlement"),
                          "--brokers", KAFKA, "--topic-prefix", prefix],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    for _ in range(150):
        if os.path.exists(port_file) and os.path.getsize(port_file) > 0:
            break
        if p.poll() is not None:
            with open(log_path) as f:
                raise AssertionError(f"serve exited at start: {f.read()[-2000:]}")
        time.sleep(0.2)
    url = "http://127.0.0.1:" + open(port_file).read().strip()
    return p, url


def wait_settled(url, head_at_least):
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as r:
                d = json.load(r)
            if d.get("status") == "ready" and d["ledger_head"] >= head_at_least and \
                    d["settled_through"] == d["ledger_head"]:
                return d["ledger_head"]
        except Exception:
            pass
        time.sleep(0.2)
    raise AssertionError("serve did not catch up within 60 s")


class EventsOverHttpTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="gpuledger-events-test.")
        w = cls.work = cls.tmp.name
        tag = f"{os.getpid()}-{int(time.time())}"
        cls.prefix_a, cls.prefix_b = f"events-a-{tag}.", f"events-b-{tag}."
        cls.db_a, cls.db_b = os.path.join(w, "ledger-a"), os.path.join(w, "ledger-b")
        subprocess.run([sys.executable, os.path.join(ROOT, "ops/sample/make_sample.py"),
                        os.path.join(w, "sample"), "--period", "2026-03"], check=True,
                       capture_output=True)
        cls.sample = os.path.join(w, "sample")
        for db, prefix in ((cls.db_a, cls.prefix_a), (cls.db_b, cls.prefix_b)):
            run("publish", "--brokers", KAFKA, "--topic-prefix", prefix, "--kind", "registry",
                os.path.join(cls.sample, "registry.jsonl"))
        # A: the month through Kafka, as before.
        run("publish", "--brokers", KAFKA, "--topic-prefix", cls.prefix_a, "--kind", "usage",
            os.path.join(cls.sample, "usage.jsonl"))
        cls.ingest(cls.db_a, cls.prefix_a)
        cls.ingest(cls.db_b, cls.prefix_b)  # the registry only, so that serve has a ledger
        cls.tokens = os.path.join(w, "tokens")
        cls.token = {}
        for role in ("operator", "finance", "csp:csp-alpha", "csp:csp-beta", "csp:csp-gamma"):
            cls.token[role] = run("tokens", "add", "--file", cls.tokens, "--role", role,
                                  "--name", "events-test " + role).strip()
        cls.serve, cls.url = start_serve(w, cls.db_b, cls.tokens, cls.prefix_b, "serve")
        wait_settled(cls.url, 1)

    @classmethod
    def tearDownClass(cls):
        cls.serve.send_signal(signal.SIGTERM)
        try:
            cls.serve.wait(30)
        except subprocess.TimeoutExpired:
            cls.serve.kill()
        cls.tmp.cleanup()

    @classmethod
    def ingest(cls, db, prefix):
        run("ingest", "--brokers", KAFKA, "--topic-prefix", prefix, "--db", db, "--until-end",
            "--unsigned",
            "--group", "g-" + prefix.rstrip("."))

    def csp_events(self):
        by_csp = {}
        with open(os.path.join(self.sample, "usage.jsonl")) as f:
            for line in f:
                if line.strip():
                    e = json.loads(line)
                    by_csp.setdefault(e["cspId"], []).append(e)
        return by_csp

    def test_1_a_month_over_http_settles_as_over_kafka(self):
        by_csp = self.csp_events()
        forms = ["json", "json-iso", "ndjson", "ce-batch", "ce-structured", "ce-binary"]
        requests = 0
        for csp, events in sorted(by_csp.items()):
            token = self.token.get("csp:" + csp)
            self.assertIsNotNone(token, f"the sample has a CSP the test has no token for: {csp}")
            i = 0
            while i < len(events):
                form = forms[requests % len(forms)]
                requests += 1
                single = form in ("ce-structured", "ce-binary")
                batch = events[i:i + (1 if single else 100)]
                i += len(batch)
                status, answer = self.send(form, token, batch)
                self.assertEqual(status, 200, (form, str(answer)[:1000]))
                self.assertEqual(answer["taken"], len(batch), answer)
                self.assertEqual([e["eventId"] for e in answer["events"]],
                                 [e["eventId"] for e in batch])
                self.assertEqual(answer["topic"], self.prefix_b + "gpuledger.usage." + csp)
                for e in answer["events"]:
                    self.assertEqual(e["status"], "taken")
                    self.assertGreaterEqual(e["offset"], 0)
        self.assertGreaterEqual(requests, 6 * 3)
        self.ingest(self.db_b, self.prefix_b)
        docs = {}
        for name, db in (("a", self.db_a), ("b", self.db_b)):
            docs[name] = run("settle", "--db", db, "--period", "2026-03", "--format", "json",
                             "--store", os.path.join(self.work, "store-" + name))
        self.assertGreater(len(docs["a"]), 1000)
        self.assertEqual(docs["a"], docs["b"], "the month over HTTP settles differently")

        # The CSP, with its token only: its rejections and its statement.
        wait_settled(self.url, 2)
        for csp in sorted(by_csp):
            token = self.token["csp:" + csp]
            status, rejected = get(self.url, token, "/v1/rejected?limit=1000")
            self.assertEqual(status, 200, rejected)
            for r in rejected["rejected"]:
                self.assertEqual(r["source_id"], csp)
            status, statement = get(self.url, token, f"/v1/periods/2026-03/statements/{csp}")
            self.assertEqual(status, 200, statement)
            self.assertEqual(statement["csp_id"], csp)
        # The same decisions as through Kafka: entries accepted, rejected by reason, parked.
        self.assertEqual(self.decisions(self.db_a), self.decisions(self.db_b))
        # `ledger show` prints an entry with its event decoded (not base64 alone).
        shown = json.loads(run("ledger", "show", "--db", self.db_b, str(self.decisions(self.db_b)["head_seq"])))
        self.assertEqual(shown["source"], "SOURCE_USAGE")
        self.assertEqual(shown["payload"]["event_id"], shown["event_id"])
        self.assertIn("payload_base64", shown)

    def decisions(self, db):
        s = json.loads(run("ledger", "stats", "--db", db, "--json"))
        return {k: s[k] for k in ("head_seq", "accepted", "rejected", "duplicates_dropped",
                                  "parked_entries", "rejected_by_reason")}

    def send(self, form, token, batch):
        if form == "json":
            return post(self.url, token, json.dumps(batch), "application/json")
        if form == "json-iso":
            return post(self.url, token, json.dumps([self.with_iso(e) for e in batch]),
                        "application/json; charset=utf-8")
        if form == "ndjson":
            return post(self.url, token, "\n".join(map(json.dumps, batch)) + "\n",
                        "application/x-ndjson")
        if form == "ce-batch":
            return post(self.url, token, json.dumps([self.cloudevent(e) for e in batch]),
                        "application/cloudevents-batch+json")
        if form == "ce-structured":
            return post(self.url, token, json.dumps(self.cloudevent(batch[0])),
                        "application/cloudevents+json")
        e = dict(batch[0])
        headers = {"ce-specversion": "1.0", "ce-id": e.pop("eventId"),
                   "ce-source": e.pop("producerId"), "ce-type": "gpuledger.v1.UsageEvent",
                   "ce-time": iso(e.pop("emittedAtMs"))}
        e.pop("cspId")
        return post(self.url, token, json.dumps(e), "application/json", headers)

    @staticmethod
    def with_iso(e):
        e = json.loads(json.dumps(e))
        for body in ("usage", "ownUse", "outage"):
            if body in e:
                for k in ("startMs", "endMs"):
                    if k in e[body]:
                        e[body][k] = iso(e[body][k])
        e["emittedAtMs"] = iso(e["emittedAtMs"])
        return e

    @staticmethod
    def cloudevent(e):
        data = dict(e)
        ce = {"specversion": "1.0", "id": data.pop("eventId"), "source": data.pop("producerId"),
              "type": "gpuledger.v1.UsageEvent", "time": iso(data.pop("emittedAtMs")),
              "datacontenttype": "application/json"}
        data.pop("cspId")
        ce["data"] = data
        return ce

    def test_2_what_is_not_this_csps_usage_is_refused(self):
        token = self.token["csp:csp-alpha"]
        usage = {"eventId": "refusal-ok-1", "producerId": "t", "producerSeq": 1,
                 "usage": {"allocationId": "alloc-x", "gpuModel": "H200", "gpuCount": 1,
                           "startMs": "2026-03-02T09:00:00+09:00",
                           "endMs": "2026-03-02T10:00:00+09:00", "nodeId": "n"}}
        other = dict(usage, eventId="refusal-other-csp", cspId="csp-beta")
        unknown = dict(usage, eventId="refusal-unknown-field", gpuHours=3)
        sub_ms = json.loads(json.dumps(usage))
        sub_ms["eventId"] = "refusal-sub-ms"
        sub_ms["usage"]["startMs"] = "2026-03-02T09:00:00.0005+09:00"
        wrong_type = {"specversion": "1.0", "id": "refusal-ce-type", "source": "t",
                      "type": "com.example.other", "data": {}}
        status, answer = post(self.url, token, json.dumps([usage, other, unknown, sub_ms]),
                              "application/json")
        self.assertEqual(status, 422, answer)
        self.assertEqual((answer["taken"], answer["refused"]), (1, 3), answer)
        got = [(e["eventId"], e["status"], e.get("reason")) for e in answer["events"]]
        self.assertEqual(got, [("refusal-ok-1", "taken", None),
                               ("refusal-other-csp", "refused", "CSP_TOPIC_MISMATCH"),
                               ("refusal-unknown-field", "refused", "MALFORMED"),
                               ("refusal-sub-ms", "refused", "MALFORMED")])
        self.assertIn("millisecond", answer["events"][3]["detail"])
        status, answer = post(self.url, token, json.dumps(wrong_type),
                              "application/cloudevents+json")
        self.assertEqual((status, answer["events"][0]["reason"]), (422, "MALFORMED"), answer)
        # Whole bodies.
        self.assertEqual(post(self.url, token, "{not json", "application/json")[0], 400)
        self.assertEqual(post(self.url, token, "[]", "application/json")[0], 400)
        self.assertEqual(post(self.url, token, "x", "text/plain")[0], 415)
        self.assertEqual(post(self.url, token, json.dumps([usage] * 1001),
                              "application/json")[0], 400)
        # A body declared beyond --max-events-body-bytes is refused before it is read.
        host, port = self.url[len("http://"):].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall((f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}"
                       f"\r\nContent-Type: application/json\r\nContent-Length: {5 << 20}"
                       "\r\n\r\n[").encode())
            self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 413 "))
        # Who may publish.
        self.assertEqual(post(self.url, None, json.dumps(usage), "application/json")[0], 401)
        for role in ("operator", "finance"):
            self.assertEqual(post(self.url, self.token[role], json.dumps(usage),
                                  "application/json")[0], 403)
        req = urllib.request.Request(self.url + "/v1/events",
                                     headers={"Authorization": "Bearer " + token})
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=10)
        self.assertEqual(cm.exception.code, 405)
        # Nothing refused reached the topic: after ingest, only the taken one is in the ledger.
        self.ingest(self.db_b, self.prefix_b)
        wait_settled(self.url, 2)
        op = self.token["operator"]
        self.assertEqual(get(self.url, op, "/v1/ledger/events/csp-alpha/refusal-ok-1")[0], 200)
        for refused in ("refusal-unknown-field", "refusal-sub-ms", "refusal-ce-type"):
            self.assertEqual(get(self.url, op, f"/v1/ledger/events/csp-alpha/{refused}")[0], 404)
        self.assertEqual(get(self.url, op, "/v1/ledger/events/csp-beta/refusal-other-csp")[0], 404)

    def test_3_a_kill_mid_batch_loses_no_acknowledged_event(self):
        gateway, url = start_serve(self.work, self.db_b, self.tokens, self.prefix_b, "gateway")
        wait_settled(url, 1)
        token = self.token["csp:csp-gamma"]
        acked, lock, stop = [], threading.Lock(), threading.Event()
        start = int(datetime.datetime(2026, 3, 20, tzinfo=KST).timestamp() * 1000)

        def sender(worker):
            n = 0
            while not stop.is_set():
                batch = []
                for _ in range(100):
                    n += 1
                    s = start + (worker * 1_000_000 + n) * 60_000
                    batch.append({"eventId": f"kill-{worker}-{n}", "producerId": f"k{worker}",
                                  "producerSeq": n,
                                  "usage": {"allocationId": "alloc-kill", "gpuModel": "H200",
                                            "gpuCount": 1, "startMs": s, "endMs": s + 60_000,
                                            "nodeId": "n"}})
                try:
                    status, answer = post(url, token, json.dumps(batch), "application/json",
                                          timeout=20)
                except Exception:
                    return  # the gateway is gone
                if status == 200:
                    with lock:
                        acked.extend(e["eventId"] for e in answer["events"])

        threads = [threading.Thread(target=sender, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            with lock:
                if len(acked) >= 2000:
                    break
            time.sleep(0.05)
        os.killpg(gateway.pid, signal.SIGKILL)  # while the senders still send
        gateway.wait(30)
        stop.set()
        for t in threads:
            t.join(60)
        self.assertGreaterEqual(len(acked), 2000)
        self.ingest(self.db_b, self.prefix_b)
        head = wait_settled(self.url, 2)
        self.assertGreater(head, len(acked))
        op = self.token["operator"]
        missing = [i for i in acked
                   if get(self.url, op, f"/v1/ledger/events/csp-gamma/{i}")[0] != 200]
        self.assertEqual(missing, [], f"{len(missing)} of {len(acked)} acknowledged events lost")


if __name__ == "__main__":
    unittest.main(verbosity=2)
