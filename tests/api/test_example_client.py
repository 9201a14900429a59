#!/usr/bin/env python3
"""The example CSP client (ops/examples/csp_client.py) against a real broker and server, with
the schemas the build wrote (build/schemas/):

- csp-alpha publishes its month of the sample over HTTP (half its times as RFC 3339 strings,
  CloudEvents batches), csp-beta straight to Kafka (binary messages built from the descriptor
  set, confluent-kafka), both checked against the JSON Schema first. After ingest the month
  settles byte for byte as when `gpuledger publish` sends the same events.
- The JSON Schema refuses what the server would: an unknown field, a wrong type; and accepts
  every event of the sample.
Runs in the venv of ops/python-env.sh (confluent-kafka, protobuf, jsonschema).
"""
import json
import os
import subprocess
import sys
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
        beta = os.path.join(self.work, "beta.jsonl")
        with open(beta, "w") as f:
            for e in by_csp["csp-beta"]:
                f.write(json.dumps(e) + "\n")
        schema = os.path.join(SCHEMAS, "usage-event.schema.json")
        p = self.client("http", "--url", self.url, "--token", self.token["csp:csp-alpha"],
                        "--cloudevents", "--schema", schema, alpha)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["taken"], len(by_csp["csp-alpha"]))
        p = self.client("kafka", "--brokers", base.KAFKA, "--topic-prefix", self.prefix_b,
                        "--descriptors", os.path.join(SCHEMAS, "gpuledger-v1.binpb"),
                        "--schema", schema, beta)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["acknowledged"], len(by_csp["csp-beta"]))
        self.ingest(self.db_b, self.prefix_b)
        docs = {}
        for name, db in (("a", self.db_a), ("b", self.db_b)):
            docs[name] = base.run("settle", "--db", db, "--period", "2026-03", "--format", "json",
                                  "--store", os.path.join(self.work, "client-store-" + name))
        self.assertGreater(len(docs["a"]), 1000)
        self.assertEqual(docs["a"], docs["b"])
        # An event the schema refuses is not sent at all.
        bad = os.path.join(self.work, "bad.jsonl")
        with open(bad, "w") as f:
            f.write(json.dumps(dict(by_csp["csp-alpha"][0], eventId="bad-1", gpuHours=1)) + "\n")
        p = self.client("http", "--url", self.url, "--token", self.token["csp:csp-alpha"],
                        "--schema", schema, bad)
        self.assertEqual(p.returncode, 1)
        self.assertIn("do not match the schema", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
