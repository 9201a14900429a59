#!/usr/bin/env bash
# A close covers exactly the usage published before it, in any ledger built from the same topics
# (issue 16): the month's usage and registry are published, then `settle close` (no ingest
# running), then late usage of the month. Ledger A is built afterwards from scratch (ingest reads
# the registry first, so it reads the close before any usage); ledger B was built before the close
# and catches up after it. Both must close March on all its usage and show the late usage as
# April adjustments, with byte-identical documents.
# Needs GPULEDGER_KAFKA_ENV (the test broker's env file) and GPULEDGER_BIN.
set -euo pipefail
: "${GPULEDGER_KAFKA_ENV:?}" "${GPULEDGER_BIN:?}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck disable=SC1090
. "$GPULEDGER_KAFKA_ENV"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpuledger-close-offsets-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export GPULEDGER_BROKERS=$KAFKA_BOOTSTRAP
export GPULEDGER_TOPIC_PREFIX="close-offsets-test-$$."
G=$GPULEDGER_BIN

python3 "$ROOT/ops/sample/make_sample.py" "$WORK/sample" --period 2026-03 >/dev/null
"$G" publish --kind registry "$WORK/sample/registry.jsonl" 2>/dev/null
"$G" publish --kind usage "$WORK/sample/usage.jsonl" 2>/dev/null
# Ledger B takes in the month before the close.
"$G" ingest --db "$WORK/b" --until-end --unsigned >"$WORK/b1.log" 2>&1 \
  || { cat "$WORK/b1.log" >&2; fail "ingest B (before the close) failed"; }

"$G" settle close --db "$WORK/b" --period 2026-03 --wait-s 0 >/dev/null 2>"$WORK/close.err" \
  || { cat "$WORK/close.err" >&2; fail "settle close failed"; }
grep -q 'close markers written to [1-9][0-9]* usage partition' "$WORK/close.err" \
  || fail "the close did not mark the usage partitions: $(cat "$WORK/close.err")"
"$G" publish --kind usage "$WORK/sample/late.jsonl" 2>/dev/null

"$G" ingest --db "$WORK/b" --until-end --unsigned >"$WORK/b2.log" 2>&1 \
  || { cat "$WORK/b2.log" >&2; fail "ingest B (after the close) failed"; }
"$G" ingest --db "$WORK/a" --until-end --unsigned >"$WORK/a.log" 2>&1 \
  || { cat "$WORK/a.log" >&2; fail "ingest A (from scratch) failed"; }
grep -q 'period 2026-03 close read: recorded once the usage it covers is read' "$WORK/a.log" \
  || fail "ingest A did not wait for the usage: $(grep -i close "$WORK/a.log")"

for l in a b; do
  for p in 2026-03 2026-04; do
    "$G" settle --db "$WORK/$l" --store "$WORK/$l.store" --period $p --format json \
      -o "$WORK/$l-$p.json" 2>/dev/null || fail "settle $l $p failed"
  done
done
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
def load(n):
    return json.load(open(f"{w}/{n}.json"))
for l in "ab":
    march, april = load(f"{l}-2026-03"), load(f"{l}-2026-04")
    assert march["status"] == "closed", f"{l}: March is not closed"
    due = int(march["invoice_totals"]["list_krw"])
    assert due > 0, f"{l}: March closed with no usage (list {due} won)"
    adj = [a for i in april.get("invoices", []) + april.get("nothing_owed", [])
           for a in i.get("adjustments", [])]
    assert adj and all(a["adjusts_period"] == "2026-03" for a in adj), \
        f"{l}: the late usage is not an April adjustment of March"
    print(f"{l}: March closed, list {due} won; {len(adj)} adjustment line(s) on April")
PY
cmp -s "$WORK/a-2026-03.json" "$WORK/b-2026-03.json" || fail "March differs between ledgers A and B"
cmp -s "$WORK/a-2026-04.json" "$WORK/b-2026-04.json" || fail "April differs between ledgers A and B"
# A close naming an offset past a partition's end (not written by `settle close`) would wait
# forever; once ingest has read that partition to its end it refuses it (INVALID_FIELD), and the
# registry event after it is recorded.
topic="${GPULEDGER_TOPIC_PREFIX}gpuledger.usage.csp-alpha"
cat >"$WORK/bad-close.jsonl" <<JSON
{"schemaVersion":1,"eventId":"close-2026-04-by-hand","emittedAtMs":"1785510000000","periodClose":{"period":"2026-04","usageOffsets":[{"topic":"$topic","partition":0,"offset":"999999"}]}}
{"schemaVersion":1,"eventId":"after-the-bad-close","institution":{"institutionId":"inst-late","name":"Late","type":"SME"}}
JSON
"$G" publish --kind registry "$WORK/bad-close.jsonl" 2>/dev/null
"$G" ingest --db "$WORK/a" --until-end --unsigned >"$WORK/a2.log" 2>&1 \
  || { cat "$WORK/a2.log" >&2; fail "ingest A (bad close) failed"; }
grep -q 'period close refused: period_close.usage_offsets: .*ends at offset' "$WORK/a2.log" \
  || fail "the unreachable close was not refused: $(grep -i close "$WORK/a2.log")"
"$G" ledger stats --db "$WORK/a" --json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
assert s["rejected_by_reason"].get("INVALID_FIELD", 0) >= 1, s["rejected_by_reason"]' \
  || fail "no INVALID_FIELD entry for the unreachable close"
grep -q 'done: consumed 2 .*accepted 1, rejected 1,' "$WORK/a2.log" \
  || fail "the registry event after the refused close was not recorded: $(grep 'done:' "$WORK/a2.log")"
"$G" settle --db "$WORK/a" --store "$WORK/a.store" --period 2026-04 --format json \
  -o "$WORK/a-april-after.json" 2>/dev/null || fail "settle April after the bad close failed"
python3 -c '
import json, sys
assert json.load(open(sys.argv[1]))["status"] != "closed", "April closed by a refused close"' \
  "$WORK/a-april-after.json" || fail "April is closed"

# The race a running ingest meets: usage published after `settle close` wrote its markers, read
# by ingest before the close itself. Ledger B reads the markers and that usage first (the close
# is held back by GPULEDGER_TEST_CLOSE_GATE): it must hold the partitions at the markers, record
# nothing after them, and record the usage only after the close. Ledger A reads the close first.
# Both must freeze April the same, with the usage as a May adjustment of March.
"$G" ingest --db "$WORK/b" --until-end --unsigned >"$WORK/b3.log" 2>&1 \
  || { cat "$WORK/b3.log" >&2; fail "ingest B (bad close) failed"; }
GPULEDGER_TEST_CLOSE_GATE="$WORK/gate" "$G" settle close --db "$WORK/b" --period 2026-04 \
  --wait-s 0 >/dev/null 2>"$WORK/close2.err" &
closer=$!
for _ in $(seq 1 300); do
  grep -q 'waiting for .* before publishing the close' "$WORK/close2.err" && break
  kill -0 $closer 2>/dev/null || break
  sleep 0.1
done
grep -q 'close markers written to [1-9][0-9]* usage partition' "$WORK/close2.err" \
  || { kill $closer 2>/dev/null; fail "settle close wrote no markers: $(cat "$WORK/close2.err")"; }
cat >"$WORK/after-markers.jsonl" <<'JSON'
{"schemaVersion":1,"eventId":"csp-beta-900001","cspId":"csp-beta","producerId":"csp-beta-meter-9","producerSeq":1,"emittedAtMs":1775142000000,"usage":{"allocationId":"alloc-0001","gpuModel":"H200","gpuCount":1,"startMs":1774962000000,"endMs":1774969200000,"nodeId":"csp-beta-node-099"}}
JSON
"$G" publish --kind usage "$WORK/after-markers.jsonl" 2>/dev/null
"$G" ingest --db "$WORK/b" --until-end --unsigned >"$WORK/b4.log" 2>&1 \
  || { kill $closer 2>/dev/null; cat "$WORK/b4.log" >&2; fail "ingest B (markers) failed"; }
grep -q 'close marker of 2026-04 at .*: the partition waits until that close is recorded' \
  "$WORK/b4.log" || { kill $closer 2>/dev/null; fail "ingest B did not hold at a marker"; }
grep -q 'done: consumed 0 ' "$WORK/b4.log" \
  || { kill $closer 2>/dev/null; fail "ingest B recorded usage after a marker before the close: $(grep 'done:' "$WORK/b4.log")"; }
touch "$WORK/gate"
wait $closer || { cat "$WORK/close2.err" >&2; fail "settle close of April failed"; }
"$G" ingest --db "$WORK/b" --until-end --unsigned >"$WORK/b5.log" 2>&1 \
  || { cat "$WORK/b5.log" >&2; fail "ingest B (after the April close) failed"; }
"$G" ingest --db "$WORK/a" --until-end --unsigned >"$WORK/a3.log" 2>&1 \
  || { cat "$WORK/a3.log" >&2; fail "ingest A (April close) failed"; }
for l in a b; do
  for p in 2026-04 2026-05; do
    "$G" settle --db "$WORK/$l" --store "$WORK/$l.store" --period $p --format json \
      -o "$WORK/$l-$p-late.json" 2>/dev/null || fail "settle $l $p (April closed) failed"
  done
done
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
for l in "ab":
    april = json.load(open(f"{w}/{l}-2026-04-late.json"))
    may = json.load(open(f"{w}/{l}-2026-05-late.json"))
    assert april["status"] == "closed", f"{l}: April is not closed"
    adj = [a for i in may.get("invoices", []) + may.get("nothing_owed", [])
           for a in i.get("adjustments", [])]
    gpu_ms = sum(int(a["gpu_ms"]) for a in adj if a["adjusts_period"] == "2026-03")
    assert gpu_ms == 2 * 3_600_000, f"{l}: May adjusts March by {gpu_ms} GPU-ms, not 2 GPU-hours"
    print(f"{l}: April closed without the usage after the markers; May adjusts March by {gpu_ms} GPU-ms")
PY
cmp -s "$WORK/a-2026-04-late.json" "$WORK/b-2026-04-late.json" \
  || fail "April differs between ledgers A and B (usage after the markers)"
cmp -s "$WORK/a-2026-05-late.json" "$WORK/b-2026-05-late.json" \
  || fail "May differs between ledgers A and B (usage after the markers)"
echo "close offsets test: OK"
