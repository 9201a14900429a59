#!/usr/bin/env python3
"""An example CSP client for gpuledger: publishes usage events (JSON lines, as
ops/sample/make_sample.py writes them) either over HTTP or straight to Kafka.

  csp_client.py http  --url https://gpuledger.example.kr --token TOKEN [--cloudevents] FILE
  csp_client.py kafka --brokers HOST:9092 --descriptors gpuledger-v1.binpb [--topic-prefix P]
                      [--cloudevents binary|structured] FILE

Both check each event against the JSON Schema first when given --schema
(build/schemas/usage-event.schema.json; `gpuledger schemas json-schema usage`).

- http: POST /v1/events in batches (--batch, 100): a JSON array, or with --cloudevents a
  CloudEvents batch (type gpuledger.v1.UsageEvent). Events answered "failed" are sent again
  (an event sent twice is recorded once); "refused" ones are reported and not resent.
- kafka: each event encoded as the binary gpuledger.v1.UsageEvent from the descriptor set
  (build/schemas/gpuledger-v1.binpb; no protoc needed), keyed as gpuledger keys it (the
  allocation, or the pool), produced to gpuledger.usage.<cspId> by an idempotent producer with
  acks=all (confluent-kafka, i.e. librdkafka), and waited for. With --cloudevents each is a
  CloudEvent in the Kafka binding instead: `binary` (ce_* headers, the JSON event as the value,
  content-type application/json) or `structured` (content-type application/cloudevents+json,
  the envelope as the value); keyed the same way.

Times may be epoch milliseconds or RFC 3339 strings in both. Exit 0 when every event was taken
(http) or acknowledged (kafka), 1 otherwise. Needs Python 3.9+, and for kafka the packages
confluent-kafka and protobuf, for --schema jsonschema (all in ops/python-requirements.txt).
"""
import argparse
import datetime
import json
import sys
import time
import urllib.error
import urllib.request


def load_events(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def validate(events, schema_path):
    import jsonschema  # only with --schema
    with open(schema_path) as f:
        schema = json.load(f)
    validator = jsonschema.Draft202012Validator(schema)
    bad = []
    for i, e in enumerate(events):
        errors = sorted(validator.iter_errors(e), key=lambda x: list(x.path))
        if errors:
            bad.append(f"event {i + 1} ({e.get('eventId', '?')}): {errors[0].message}")
    return bad


# ---- over HTTP ------------------------------------------------------------------------------

def to_cloudevent(e):
    data = dict(e)
    ce = {"specversion": "1.0", "type": "gpuledger.v1.UsageEvent",
          "id": data.pop("eventId"), "source": data.pop("producerId", "csp-client"),
          "datacontenttype": "application/json"}
    data.pop("cspId", None)  # the token says which CSP
    ce["data"] = data
    return ce


def post(url, token, body, content_type, timeout=60):
    req = urllib.request.Request(url.rstrip("/") + "/v1/events", data=body.encode(), method="POST",
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as err:
        payload = err.read()
        try:
            return err.code, json.loads(payload)
        except ValueError:
            return err.code, {"detail": payload[:300].decode("utf-8", "replace")}


def publish_http(args, events):
    taken, refused = 0, []
    for start in range(0, len(events), args.batch):
        pending = events[start:start + args.batch]
        for attempt in range(1, args.attempts + 1):
            if args.cloudevents:
                body = json.dumps([to_cloudevent(e) for e in pending])
                ctype = "application/cloudevents-batch+json"
            else:
                body, ctype = json.dumps(pending), "application/json"
            status, answer = post(args.url, args.token, body, ctype)
            if "events" not in answer:  # the whole request refused: a problem details object
                raise SystemExit(f"POST /v1/events: {status} {answer.get('detail', answer)}")
            again = []
            for sent, result in zip(pending, answer["events"]):
                if result["status"] == "taken":
                    taken += 1
                elif result["status"] == "refused":
                    refused.append(f"{result['eventId']}: {result['reason']} {result['detail']}")
                else:
                    again.append(sent)
            pending = again
            if not pending:
                break
            time.sleep(min(2 ** attempt, 30))
        if pending:
            print(f"{len(pending)} event(s) not acknowledged after {args.attempts} attempts",
                  file=sys.stderr)
            return taken, refused, len(pending)
    return taken, refused, 0


# ---- straight to Kafka ----------------------------------------------------------------------

def epoch_ms(value):
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        t = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        return int(t.timestamp() * 1000)  # RFC 3339 to the millisecond
    return int(value)


def times_to_ms(obj):
    if isinstance(obj, dict):
        return {k: (epoch_ms(v) if k.endswith("Ms") and not isinstance(v, (dict, list)) else
                    times_to_ms(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [times_to_ms(v) for v in obj]
    return obj


def kafka_key(m):
    """The key gpuledger gives an event (ingest/src/publisher.cc, EncodeUsageEvent): its
    allocation (a correction's target's), or for own use and pool outages the pool."""
    def enum_name(x, field):
        return x.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number[
            getattr(x, field)].name

    def pool(x):
        return f"pool:{enum_name(x, 'program')}:{enum_name(x, 'gpu_model')}"
    body = m.WhichOneof("body")
    if body in ("usage", "correction"):
        return getattr(m, body).allocation_id
    if body in ("outage", "outage_withdrawal"):
        b = getattr(m, body)
        return b.allocation_id or pool(b)
    if body == "own_use":
        return pool(m.own_use)
    return m.event_id


def usage_event_class(descriptor_set_path):
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    fds = descriptor_pb2.FileDescriptorSet()
    with open(descriptor_set_path, "rb") as f:
        fds.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for file in fds.file:
        pool.Add(file)
    descriptor = pool.FindMessageTypeByName("gpuledger.v1.UsageEvent")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def publish_kafka(args, events):
    from confluent_kafka import Producer
    from google.protobuf import json_format
    UsageEvent = usage_event_class(args.descriptors)
    producer = Producer({"bootstrap.servers": args.brokers, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 5})
    acked, failed = [], []

    def on_delivery(err, msg):
        (failed if err is not None else acked).append(err or msg.offset())

    for original in events:
        e = times_to_ms(dict(original))
        e.setdefault("schemaVersion", 1)
        if args.csp:
            e.setdefault("cspId", args.csp)
        message = json_format.ParseDict(e, UsageEvent())
        topic = f"{args.topic_prefix}gpuledger.usage.{message.csp_id}"
        value, headers = message.SerializeToString(), None
        if args.cloudevents == "binary":
            data = dict(original)
            headers = [("ce_specversion", b"1.0"), ("ce_type", b"gpuledger.v1.UsageEvent"),
                       ("ce_id", data.pop("eventId").encode()),
                       ("ce_source", data.pop("producerId", "csp-client").encode()),
                       ("content-type", b"application/json")]
            data.pop("cspId", None)  # the topic says which CSP
            value = json.dumps(data).encode()
        elif args.cloudevents == "structured":
            headers = [("content-type", b"application/cloudevents+json")]
            value = json.dumps(to_cloudevent(original)).encode()
        while True:
            try:
                producer.produce(topic, value=value, key=kafka_key(message).encode(),
                                 on_delivery=on_delivery, **({"headers": headers} if headers else {}))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    producer.flush(60)
    return len(acked), [str(f) for f in failed]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    h = sub.add_parser("http", help="POST /v1/events")
    h.add_argument("--url", required=True)
    h.add_argument("--token", required=True, help="the CSP's bearer token")
    h.add_argument("--batch", type=int, default=100)
    h.add_argument("--attempts", type=int, default=5)
    h.add_argument("--cloudevents", action="store_true", help="send CloudEvents batches")
    k = sub.add_parser("kafka", help="produce to gpuledger.usage.<cspId>")
    k.add_argument("--brokers", required=True)
    k.add_argument("--descriptors", required=True, help="build/schemas/gpuledger-v1.binpb")
    k.add_argument("--topic-prefix", default="")
    k.add_argument("--csp", help="cspId for events that do not name one")
    k.add_argument("--cloudevents", choices=("binary", "structured"),
                   help="send each event as a CloudEvent in the Kafka binding's mode")
    for s in (h, k):
        s.add_argument("--schema", help="JSON Schema to check every event against first")
        s.add_argument("file", help="JSON lines, one usage event each")
    args = p.parse_args()
    events = load_events(args.file)
    if args.schema:
        bad = validate(events, args.schema)
        if bad:
            print("not sent: events that do not match the schema:\n  " + "\n  ".join(bad[:20]),
                  file=sys.stderr)
            return 1
    if args.mode == "http":
        taken, refused, unacked = publish_http(args, events)
        print(json.dumps({"taken": taken, "refused": len(refused), "unacknowledged": unacked}))
        for r in refused[:20]:
            print("refused:", r, file=sys.stderr)
        return 0 if not refused and not unacked else 1
    acked, failed = publish_kafka(args, events)
    print(json.dumps({"acknowledged": acked, "failed": len(failed)}))
    return 0 if not failed and acked == len(events) else 1


if __name__ == "__main__":
    sys.exit(main())
