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
grep -q 'the close covers the usage now on [1-9][0-9]* usage partition' "$WORK/close.err" \
  || fail "the close did not name the usage partitions: $(cat "$WORK/close.err")"
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
    adj = [a for i in april.get("invoices", []) for a in i.get("adjustments", [])]
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
echo "close offsets test: OK"
