#!/usr/bin/env bash
# Failover on the ledger topic, through the CLI (docs/RELIABILITY.md): node a ingests the sample
# month as the writer (`ingest --node a`) while node b follows as a standby (`ledger follow`);
# a is SIGKILLed mid-stream; b is promoted (`ledger promote`, fencing a) and ingests the rest;
# a, started again as the writer, is refused, then follows as a standby. Then: both ledgers
# have the same head hash and verify; nothing was lost or doubled (counts equal a one-node
# run's); invoices equal the one-node run's byte for byte. Needs GPULEDGER_KAFKA_ENV and
# GPULEDGER_BIN.
set -euo pipefail
: "${GPULEDGER_KAFKA_ENV:?}" "${GPULEDGER_BIN:?}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck disable=SC1090
. "$GPULEDGER_KAFKA_ENV"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpuledger-failover-test.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$WORK"/*.log; do echo "--- $f" >&2; tail -15 "$f" >&2; done
  exit 1
}
export GPULEDGER_BROKERS=$KAFKA_BOOTSTRAP
export GPULEDGER_TOPIC_PREFIX="failover-test-$$."
G=$GPULEDGER_BIN
head_of() { "$G" ledger stats --db "$1" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["head_seq"])' 2>/dev/null; }
stat_of() {
  "$G" ledger stats --db "$1" --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["accepted"], d["rejected"], d["duplicates_dropped"], d["parked_entries"], sorted(d["rejected_by_reason"].items()))'
}
hash_of() { "$G" ledger stats --db "$1" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["head_hash"])'; }

python3 "$ROOT/ops/sample/make_sample.py" "$WORK/sample" --period 2026-03 >/dev/null
lines=$(wc -l <"$WORK/sample/usage.jsonl")
head -n $((lines / 2)) "$WORK/sample/usage.jsonl" >"$WORK/first.jsonl"
tail -n +$((lines / 2 + 1)) "$WORK/sample/usage.jsonl" >"$WORK/second.jsonl"
"$G" publish --kind registry "$WORK/sample/registry.jsonl" 2>/dev/null
"$G" publish --kind usage "$WORK/first.jsonl" 2>/dev/null

# a writes, in small batches (a Kafka transaction each); b follows. Once a has recorded part of
# the first half, the second half is published and a is SIGKILLed while it ingests.
"$G" ingest --db "$WORK/a" --unsigned --node a --group failover-a --batch-max-messages 5 \
  --batch-max-ms 20 >"$WORK/a.log" 2>&1 &
A=$!
PIDS+=("$A")
"$G" ledger follow --db "$WORK/b" >"$WORK/b-follow.log" 2>&1 &
B=$!
PIDS+=("$B")
for _ in $(seq 1 300); do
  h=$(head_of "$WORK/a" || echo 0)
  [ "${h:-0}" -ge $((lines / 4)) ] && break
  sleep 0.1
done
[ "${h:-0}" -ge $((lines / 4)) ] || fail "a never got a quarter of the way ($h)"
"$G" publish --kind usage "$WORK/second.jsonl" 2>/dev/null
sleep 0.3
kill -9 "$A"
wait "$A" 2>/dev/null || true
"$G" publish --kind usage "$WORK/sample/late.jsonl" 2>/dev/null
killed_at=$(head_of "$WORK/a")
echo "a killed at head seq $killed_at"

# b catches up with what a committed, stops following, and takes over.
sleep 2
kill -TERM "$B"
wait "$B" || fail "the standby stopped with an error"
"$G" ledger promote --db "$WORK/b" --node b --unsigned >"$WORK/promote.out" 2>"$WORK/promote.log" \
  || fail "promote failed"
grep -q "epoch 2" "$WORK/promote.out" || fail "promote did not start epoch 2: $(cat "$WORK/promote.out")"
"$G" ingest --db "$WORK/b" --unsigned --node b --group failover-b --until-end \
  >"$WORK/b.log" 2>&1 || fail "b's ingest after the takeover failed"

# a comes back as the writer: refused, with the way out named.
if "$G" ingest --db "$WORK/a" --unsigned --node a --group failover-a --until-end \
  >"$WORK/a-again.log" 2>&1; then
  fail "the old writer started writing again after the takeover"
fi
grep -q "written by 'b'" "$WORK/a-again.log" || fail "the refusal does not name the new writer"
grep -q "ledger follow" "$WORK/a-again.log" || fail "the refusal does not say what to do"
# ...and follows as a standby.
"$G" ledger follow --db "$WORK/a" --until-end >"$WORK/a-follow.log" 2>&1 || fail "a cannot follow b"

# The one-node reference run, without a ledger topic.
"$G" ingest --db "$WORK/ref" --unsigned --until-end >"$WORK/ref.log" 2>&1 || fail "reference ingest"
TOTAL=$(head_of "$WORK/ref")
[ "$TOTAL" -ge 1000 ] || fail "the reference run recorded only $TOTAL entries"

[ "$(hash_of "$WORK/a")" = "$(hash_of "$WORK/b")" ] || fail "a and b hold different ledgers"
for l in a b; do
  topic=$("$G" ledger stats --db "$WORK/$l" --json 2>/dev/null |
    python3 -c 'import json,sys; t=json.load(sys.stdin)["ledger_topic"]; print(t["writer"], t["epoch"])')
  [ "$topic" = "b 2" ] || fail "$l's ledger says its topic's writer and epoch are '$topic', not 'b 2'"
done
for l in a b; do
  "$G" ledger verify --db "$WORK/$l" >"$WORK/verify-$l.log" 2>&1 || fail "ledger verify $l"
done
# Nothing lost, nothing doubled: the same decisions as the one-node run.
[ "$(stat_of "$WORK/b")" = "$(stat_of "$WORK/ref")" ] \
  || fail "counts differ: b $(stat_of "$WORK/b"), one node $(stat_of "$WORK/ref")"
# Invoices equal the one-node run's.
for l in b ref; do
  "$G" settle --db "$WORK/$l" --store "$WORK/$l.store" --period 2026-03 --format json \
    -o "$WORK/$l.json" 2>/dev/null || fail "settle $l"
done
cmp -s "$WORK/b.json" "$WORK/ref.json" || fail "invoices after the failover differ from one node's"
echo "PASS: failover at seq $killed_at of $TOTAL; a and b at $(hash_of "$WORK/b")"
