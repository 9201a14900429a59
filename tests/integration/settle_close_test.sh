#!/usr/bin/env bash
# End to end through the real broker: ingest runs as a service while `gpuledger settle close`
# publishes the close and waits for it; a second close of the same month is refused; late usage
# becomes an adjustment on the next month; `audit replay` matches the recorded digests and
# reports a tampered one.
# Needs GPULEDGER_KAFKA_ENV (the test broker's env file) and GPULEDGER_BIN.
set -euo pipefail
: "${GPULEDGER_KAFKA_ENV:?}" "${GPULEDGER_BIN:?}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck disable=SC1090
. "$GPULEDGER_KAFKA_ENV"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpuledger-close-test.XXXXXX")
INGEST_PID=
cleanup() {
  [ -n "$INGEST_PID" ] && kill "$INGEST_PID" 2>/dev/null && wait "$INGEST_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export GPULEDGER_BROKERS=$KAFKA_BOOTSTRAP GPULEDGER_DB=$WORK/ledger
export GPULEDGER_TOPIC_PREFIX="close-test-$$."
G=$GPULEDGER_BIN

python3 "$ROOT/ops/sample/make_sample.py" "$WORK/sample" --period 2026-03 >/dev/null
"$G" keys generate --private-key "$WORK/op.pem" --public-key "$WORK/op-pub.pem" 2>/dev/null
"$G" publish --kind registry "$WORK/sample/registry.jsonl" 2>/dev/null
"$G" publish --kind usage "$WORK/sample/usage.jsonl" 2>/dev/null

"$G" ingest --signing-key "$WORK/op.pem" --checkpoint-interval 200 >"$WORK/ingest.log" 2>&1 &
INGEST_PID=$!

# The close waits for the running ingest to record it. Let it take in the month first: until
# the count of accepted entries stops moving.
accepted() { "$G" ledger stats 2>/dev/null | awk '$1 == "accepted" {print $2}'; }
prev=-1
for _ in $(seq 1 120); do
  sleep 1
  now=$(accepted || echo 0)
  [ "${now:-0}" -ge 1000 ] && [ "$now" = "$prev" ] && break
  prev=${now:-0}
done
"$G" settle close --period 2026-03 --wait-s 60 >"$WORK/close.out" 2>"$WORK/close.err" \
  || { cat "$WORK/close.err" "$WORK/ingest.log" >&2; fail "settle close failed"; }
grep -q '^closed 2026-03 at ledger entry' "$WORK/close.out" || fail "no close line"
[ "$(grep -c 'sha256' "$WORK/close.out")" -eq 13 ] || fail "expected 13 document digests"
grep -q 'period 2026-03 closed at seq .*signed checkpoint staged' "$WORK/ingest.log" \
  || fail "ingest did not seal the close with a checkpoint"

# Closing it again is refused with the reason code, exit status 1.
if "$G" settle close --period 2026-03 --wait-s 60 >/dev/null 2>"$WORK/again.err"; then
  fail "a second close of 2026-03 succeeded"
fi
grep -q PERIOD_ALREADY_CLOSED "$WORK/again.err" || fail "no PERIOD_ALREADY_CLOSED in: $(cat "$WORK/again.err")"

# Late events: March's documents do not change; April's draft carries the adjustment.
"$G" settle --period 2026-03 --format json -o "$WORK/march-before.json" 2>/dev/null
"$G" publish --kind usage "$WORK/sample/late.jsonl" 2>/dev/null
for _ in $(seq 1 60); do
  "$G" settle --period 2026-04 --format json -o "$WORK/april.json" 2>/dev/null
  grep -q '"adjusts_period": "2026-03"' "$WORK/april.json" && break
  sleep 0.5
done
grep -q '"adjusts_period": "2026-03"' "$WORK/april.json" || fail "no adjustment on April"
"$G" settle --period 2026-03 --format json -o "$WORK/march-after.json" 2>/dev/null
cmp -s "$WORK/march-before.json" "$WORK/march-after.json" || fail "closed March changed"

kill -TERM "$INGEST_PID"; wait "$INGEST_PID" || fail "ingest did not stop cleanly"; INGEST_PID=

# The auditor: replay from the ledger against the store, and from an export against a file.
"$G" audit replay --db "$WORK/ledger" --public-key "$WORK/op-pub.pem" >"$WORK/replay.out" 2>&1 \
  || { cat "$WORK/replay.out" >&2; fail "replay against the store differs"; }
grep -q 'OK: every digest matches' "$WORK/replay.out" || fail "replay did not say OK"
"$G" ledger export --out "$WORK/ledger.export" 2>/dev/null
"$G" settle status --format json -o "$WORK/closes.json" 2>/dev/null
"$G" audit replay --export "$WORK/ledger.export" --public-key "$WORK/op-pub.pem" \
  --expect "$WORK/closes.json" >/dev/null 2>&1 || fail "replay of the export differs"
# A tampered digest is reported, with exit status 1.
python3 - "$WORK/closes.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["closes"][0]["digests"][0]["sha256"] = "0" * 64
json.dump(d, open(sys.argv[1], "w"))
PY
if "$G" audit replay --export "$WORK/ledger.export" --expect "$WORK/closes.json" \
    >"$WORK/bad.out" 2>&1; then
  fail "a tampered digest was not reported"
fi
grep -q 'DIFFERENCE 2026-03 invoice/' "$WORK/bad.out" || fail "no DIFFERENCE line: $(cat "$WORK/bad.out")"
# No recorded digests to compare with: said before the replay, with what to pass instead.
if "$G" audit replay --db "$WORK/ledger" --store "$WORK/no-such-store" >"$WORK/nostore.out" 2>&1; then
  fail "audit replay without a settlement store succeeded"
fi
grep -q 'no settlement store at .*--expect' "$WORK/nostore.out" || fail "no hint: $(cat "$WORK/nostore.out")"
if grep -q 'replayed' "$WORK/nostore.out"; then fail "replayed before looking for the store"; fi
echo "settle close test: OK"
