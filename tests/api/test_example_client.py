#!/usr/bin/env python3
"""The example CSP client (ops/examples/csp_client.py) against a real broker and server, with
the schemas the build wrote (build/schemas/):

- csp-alpha publishes its month of the sample over HTTP (half its times as RFC 3339 strings,
  CloudEvents batches), csp-beta straight to Kafka (confluent-kafka), both checked against the
  JSON Schema first: a third of csp-beta's allocations as binary messages built from the
  descriptor set, a third as CloudEvents in the Kafka binding's binary mode (ce_ headers) and a
  third in its structured mode. After ingest the month settles byte for byte as when `gpuledger
  publish` sends the same events, every entry is decided again the same (`audit decisions`),
  and an entry of a CloudEvent shows its headers and its event.
- CloudEvents on Kafka that are not usage events (kcat with -H) are rejected MALFORMED, each
  with its reason; one that repeats an event is a duplicate, one that changes it a conflict.
- The JSON Schema refuses what the server would: an unknown field, a wrong type; and accepts
  every event of the sample.
Runs in the venv of ops/python-env.sh (confluent-kafka, protobuf, jsonschema).
"""
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_events as base  # noqa: E402  (helpers: run, start_serve, iso, KAFKA, BIN)

ROOT = base.ROOT
CLIENT = os.path.join(ROOT, "ops/examples/csp_client.py")
SCHEMAS = os.environ["GPULEDGER_SCHEMAS_DIR"]


class ExampleClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # The same set-up as test_events: ledger A through `gpuledger publish`, B by the client.
        base.EventsOverHttpTest.setUpClass.__func__(cls)

    @classmethod
    def tearDownClass(cls):
        base.EventsOverHttpTest.tearDownClass.__func__(cls)

    ingest = base.EventsOverHttpTest.ingest
    csp_events = base.EventsOverHttpTest.csp_events

    sent_as = {}  # csp-beta's event ids by the form they were sent in (test_a_...)

    @staticmethod
    def key_of(e):
        for body in ("usage", "correction", "outage", "outageWithdrawal", "ownUse"):
            if body in e:
                b = e[body]
                return b.get("allocationId") or f"pool:{b.get('program')}:{b.get('gpuModel')}"
        return e["eventId"]

    def client(self, *args):
        return subprocess.run([sys.executable, CLIENT, *args], capture_output=True, text=True,
                              timeout=300)

    def test_the_schema_takes_the_sample_and_refuses_what_the_server_refuses(self):
        import jsonschema
        with open(os.path.join(SCHEMAS, "usage-event.schema.json")) as f:
            schema = json.load(f)
        v = jsonschema.Draft202012Validator(schema)
        for events in self.csp_events().values():
            for e in events:
                self.assertEqual(list(v.iter_errors(e)), [], e)
                self.assertEqual(list(v.iter_errors(base.EventsOverHttpTest.with_iso(e))), [])
        e = self.csp_events()["csp-alpha"][0]
        for bad in (dict(e, gpuHours=3), dict(e, producerSeq="x"),
                    dict(e, usage=dict(e["usage"], gpuModel="A100")),
                    dict(e, ownUse={"program": "GOV_ADVANCED"})):
            self.assertTrue(list(v.iter_errors(bad)), bad)
        with open(os.path.join(SCHEMAS, "registry-event.schema.json")) as f:
            registry = jsonschema.Draft202012Validator(json.load(f))
        with open(os.path.join(self.sample, "registry.jsonl")) as f:
            for line in f:
                self.assertEqual(list(registry.iter_errors(json.loads(line))), [], line)

    def test_a_month_by_the_example_client_settles_as_by_publish(self):
        by_csp = self.csp_events()
        alpha = os.path.join(self.work, "alpha.jsonl")
        with open(alpha, "w") as f:
            for i, e in enumerate(by_csp["csp-alpha"]):
                f.write(json.dumps(base.EventsOverHttpTest.with_iso(e) if i % 2 else e) + "\n")
        # csp-beta's events in three files by their key (allocation or pool), so that each key's
        # events keep their order whichever way they travel.
        beta = {form: os.path.join(self.work, f"beta-{form}.jsonl")
                for form in ("protobuf", "binary", "structured")}
        files = {form: open(path, "w") for form, path in beta.items()}
        keys = []
        for e in by_csp["csp-beta"]:
            key = self.key_of(e)
            if key not in keys:
                keys.append(key)
            form = ("protobuf", "binary", "structured")[keys.index(key) % 3]
            files[form].write(json.dumps(e) + "\n")
            self.sent_as.setdefault(form, []).append(e["eventId"])
        for f in files.values():
            f.close()
        self.assertTrue(all(self.sent_as.get(form) for form in beta), self.sent_as.keys())
        schema = os.path.join(SCHEMAS, "usage-event.schema.json")
        p = self.client("http", "--url", self.url, "--token", self.token["csp:csp-alpha"],
                        "--cloudevents", "--schema", schema, alpha)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["taken"], len(by_csp["csp-alpha"]))
        for form, path in beta.items():
            mode = [] if form == "protobuf" else ["--cloudevents", form]
            p = self.client("kafka", "--brokers", base.KAFKA, "--topic-prefix", self.prefix_b,
                            "--descriptors", os.path.join(SCHEMAS, "gpuledger-v1.binpb"),
                            "--schema", schema, *mode, path)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(json.loads(p.stdout)["acknowledged"], len(self.sent_as[form]))
        self.ingest(self.db_b, self.prefix_b)
        docs = {}
        for name, db in (("a", self.db_a), ("b", self.db_b)):
            docs[name] = base.run("settle", "--db", db, "--period", "2026-03", "--format", "json",
                                  "--store", os.path.join(self.work, "client-store-" + name))
        self.assertGreater(len(docs["a"]), 1000)
        self.assertEqual(docs["a"], docs["b"])
        # Every entry decided again from the ledger alone, CloudEvents too, the same way.
        audit = subprocess.run([base.BIN, "audit", "decisions", "--db", self.db_b,
                                "--topic-prefix", self.prefix_b],
                               capture_output=True, text=True, timeout=300)
        self.assertEqual(audit.returncode, 0, audit.stdout + audit.stderr)
        # An entry of each form: the headers as consumed, the event decoded.
        for form in ("binary", "structured"):
            event_id = self.sent_as[form][0]
            status, entry = self.entry_of(event_id)
            self.assertEqual(status, 200, entry)
            self.assertEqual(entry["outcome"], "ACCEPTED", entry)
            self.assertEqual(entry["payload"]["event_id"], event_id)
            self.assertEqual(entry["payload"]["csp_id"], "csp-beta")
            headers = {h["key"]: h["value"] for h in entry["headers"]}
            if form == "binary":
                self.assertEqual(headers["ce_id"], event_id)
                self.assertEqual(headers["content-type"], "application/json")
            else:
                self.assertEqual(headers, {"content-type": "application/cloudevents+json"})
        status, entry = self.entry_of(self.sent_as["protobuf"][0])
        self.assertEqual(status, 200, entry)
        self.assertNotIn("headers", entry)
        # An event the schema refuses is not sent at all.
        bad = os.path.join(self.work, "bad.jsonl")
        with open(bad, "w") as f:
            f.write(json.dumps(dict(by_csp["csp-alpha"][0], eventId="bad-1", gpuHours=1)) + "\n")
        p = self.client("http", "--url", self.url, "--token", self.token["csp:csp-alpha"],
                        "--schema", schema, bad)
        self.assertEqual(p.returncode, 1)
        self.assertIn("do not match the schema", p.stderr)


    def test_b_cloudevents_on_kafka_that_are_not_usage_events_are_rejected(self):
        # After test_a: csp-beta's month is in ledger B.
        event = self.csp_events()["csp-beta"][0]
        data = {k: v for k, v in event.items() if k not in ("eventId", "producerId", "cspId")}
        topic = self.prefix_b + "gpuledger.usage.csp-beta"
        ce = ["ce_specversion=1.0", "ce_type=gpuledger.v1.UsageEvent",
              f"ce_source={event['producerId']}", "content-type=application/json"]

        def kcat(headers, value):
            args = ["kcat", "-P", "-b", base.KAFKA, "-t", topic, "-k", self.key_of(event)]
            for h in headers:
                args += ["-H", h]
            p = subprocess.run(args, input=value + "\n", capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)

        before = self.stats()
        bad = [
            (["ce_specversion=1.0", "ce_type=com.example.Other", "ce_id=ce-bad-type",
              "ce_source=x", "content-type=application/json"], json.dumps(data),
             "is not gpuledger.v1.UsageEvent"),
            (["ce_id=ce-no-specversion", "ce_source=x"], json.dumps(data),
             "without ce_specversion"),
            (ce + ["ce_id=ce-twice", "ce_id=ce-twice-again"], json.dumps(data), "given twice"),
            (["content-type=application/cloudevents-batch+json"],
             json.dumps([{"specversion": "1.0"}]), "batch"),
            (["content-type=application/cloudevents+json"], "{not json",
             "structured CloudEvent is not JSON"),
            (ce + ["ce_id=ce-unknown-field"], json.dumps(dict(data, gpuHours=1)), "gpuHours"),
            (ce + [f"ce_id={event['eventId']}x", f"ce_source={event['producerId']}"],
             json.dumps(data), "given twice"),
        ]
        for headers, value, _ in bad:
            kcat(headers, value)
        # The same event again as a CloudEvent: a duplicate; changed: a conflicting duplicate.
        kcat(ce + [f"ce_id={event['eventId']}"], json.dumps(data))
        changed = json.loads(json.dumps(data))
        changed["producerSeq"] = changed.get("producerSeq", 0) + 1000
        kcat(ce + [f"ce_id={event['eventId']}"], json.dumps(changed))
        self.ingest(self.db_b, self.prefix_b)
        after = self.stats()
        reasons = lambda s, r: s["rejected_by_reason"].get(r, 0)  # noqa: E731
        self.assertEqual(reasons(after, "MALFORMED") - reasons(before, "MALFORMED"), len(bad))
        self.assertEqual(reasons(after, "CONFLICTING_DUPLICATE") -
                         reasons(before, "CONFLICTING_DUPLICATE"), 1)
        self.assertEqual(after["duplicates_dropped"] - before["duplicates_dropped"], 1)
        self.assertEqual(after["head_seq"] - before["head_seq"], len(bad) + 1)
        details = []
        for seq in range(before["head_seq"] + 1, after["head_seq"] + 1):
            shown = json.loads(base.run("ledger", "show", "--db", self.db_b, str(seq)))
            self.assertEqual(shown["outcome"], "REJECTED", shown)
            self.assertTrue(shown["headers"], shown)  # kept as consumed
            details.append(shown["reason_detail"])
        for _, _, why in bad:
            self.assertTrue(any(why in d for d in details), (why, details))
        # Each rejection's notice on the rejected topic carries the headers it was sent with
        # (a binary-mode CloudEvent's attributes are not in its value), then gpuledger's own.
        sent = [h for h, _, _ in bad] + [ce + [f"ce_id={event['eventId']}"]]
        seqs = list(range(before["head_seq"] + 1, after["head_seq"] + 1))
        p = subprocess.run(["kcat", "-C", "-b", base.KAFKA, "-t",
                            self.prefix_b + "gpuledger.rejected", "-e", "-q", "-f", "%h\n"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        notices = {}
        for line in p.stdout.splitlines():
            pairs = [h.split("=", 1) for h in line.split(",") if "=" in h]
            seq = dict(pairs).get("gpuledger-seq")
            if seq is not None:
                notices[int(seq)] = ["=".join(kv) for kv in pairs
                                     if not kv[0].startswith("gpuledger-")]
        for seq, headers in zip(seqs, sent):
            self.assertIn(seq, notices, "no rejected notice for seq %d" % seq)
            self.assertEqual(notices[seq], headers, "seq %d" % seq)
        audit = subprocess.run([base.BIN, "audit", "decisions", "--db", self.db_b,
                                "--topic-prefix", self.prefix_b],
                               capture_output=True, text=True, timeout=300)
        self.assertEqual(audit.returncode, 0, audit.stdout + audit.stderr)

    def entry_of(self, event_id):
        """csp-beta's entry of `event_id` as the server shows it, once the server has read it."""
        deadline = time.time() + 30
        while True:
            status, entry = base.get(self.url, self.token["operator"],
                                     f"/v1/ledger/events/csp-beta/{event_id}")
            if status != 404 or time.time() > deadline:
                return status, entry
            time.sleep(0.2)

    def stats(self):
        return json.loads(base.run("ledger", "stats", "--db", self.db_b, "--json"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
