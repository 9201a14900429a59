#!/usr/bin/env bash
# `gpuledger serve` follows a live ingest: with ingest running as a service and serve running
# beside it, events published afterwards show up through the API (ledger head, invoices)
# without restarting either. Needs GPULEDGER_KAFKA_ENV and GPULEDGER_BIN.
set -euo pipefail
: "${GPULEDGER_KAFKA_ENV:?}" "${GPULEDGER_BIN:?}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck disable=SC1090
. "$GPULEDGER_KAFKA_ENV"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpuledger-follow-test.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$WORK/serve.log" ] && tail -20 "$WORK/serve.log" >&2; exit 1; }
export GPULEDGER_BROKERS=$KAFKA_BOOTSTRAP GPULEDGER_DB=$WORK/ledger
export GPULEDGER_TOPIC_PREFIX="follow-test-$$."
G=$GPULEDGER_BIN

python3 "$ROOT/ops/sample/make_sample.py" "$WORK/sample" --period 2026-03 >/dev/null
"$G" publish --kind registry "$WORK/sample/registry.jsonl" 2>/dev/null
"$G" publish --kind usage "$WORK/sample/usage.jsonl" 2>/dev/null
"$G" ingest --unsigned >"$WORK/ingest.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -d "$WORK/ledger" ] && break; sleep 0.2; done
TOKEN=$("$G" tokens add --file "$WORK/tokens" --role auditor 2>/dev/null)
"$G" serve --tokens "$WORK/tokens" --listen 127.0.0.1:0 --port-file "$WORK/port" \
  --refresh-ms 200 >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$WORK/port" ] && break; sleep 0.2; done
[ -s "$WORK/port" ] || fail "serve did not start"
URL="http://127.0.0.1:$(cat "$WORK/port")"
get() { curl -sf -H "Authorization: Bearer $TOKEN" "$URL$1"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# Wait until the month is in (the head stops moving), then note the university's invoice.
prev=-1
for _ in $(seq 1 120); do
  sleep 0.5
  head=$(get /v1/ledger/head | json 'd["seq"]')
  settled=$(get /readyz | json 'd["settled_through"]')
  [ "$head" -ge 1000 ] && [ "$head" = "$prev" ] && [ "$settled" = "$head" ] && break
  prev=$head
done
[ "$head" -ge 1000 ] || fail "serve never saw the month (head $head)"
before=$(get /v1/periods/2026-03/invoices/inst-hanbit-univ | json 'd["totals"]["gpu_ms"]')

# New events while both run: serve shows them without a restart.
"$G" publish --kind usage "$WORK/sample/late.jsonl" 2>/dev/null
for _ in $(seq 1 60); do
  sleep 0.5
  now=$(get /v1/ledger/head | json 'd["seq"]')
  after=$(get /v1/periods/2026-03/invoices/inst-hanbit-univ | json 'd["totals"]["gpu_ms"]')
  [ "$now" -gt "$head" ] && [ "$after" != "$before" ] && break
done
[ "$now" -gt "$head" ] || fail "the ledger head did not move through the API"
[ "$after" != "$before" ] || fail "the invoice did not change ($before)"
echo "serve follow test: OK (head $head -> $now, gpu_ms $before -> $after)"
