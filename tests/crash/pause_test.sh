#!/usr/bin/env bash
# A paused consumer (issue 8, item 5): ingest SIGSTOPped mid-stream for longer than its Kafka
# session timeout, so that the group coordinator expels it and revokes its partitions; a second
# ingest started meanwhile on the same ledger must be refused (one writer per ledger); then the
# first is resumed (SIGCONT), rejoins, and ends with the same counts and invoices as an
# uninterrupted run: 0 lost, 0 doubled.
# Needs GPULEDGER_KAFKA_ENV (the test broker's env file) and GPULEDGER_BIN.
set -euo pipefail
: "${GPULEDGER_KAFKA_ENV:?}" "${GPULEDGER_BIN:?}"
# shellcheck disable=SC1090
. "$GPULEDGER_KAFKA_ENV"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpuledger-pause-test.XXXXXX")
PID=
cleanup() {
  if [ -n "$PID" ]; then kill -CONT "$PID" 2>/dev/null; kill -9 "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
G=$GPULEDGER_BIN
# shellcheck source=tests/crash/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export GPULEDGER_BROKERS=$KAFKA_BOOTSTRAP
export GPULEDGER_TOPIC_PREFIX="pause-test-$$."

reference_run
echo "reference: accepted/rejected/duplicates $REF"

# Slow commits (small batches) so that the pause lands mid-stream.
"$G" ingest --db "$WORK/paused" --group g-paused --until-end --unsigned \
  --batch-max-messages 20 --batch-max-ms 5 >"$WORK/paused.log" 2>&1 &
PID=$!
for _ in $(seq 1 400); do
  head=$(sed -n 's/.*ledger head \([0-9]*\).*/\1/p' "$WORK/paused.log" | tail -1)
  [ "${head:-0}" -ge 3000 ] && break
  sleep 0.05
done
kill -STOP "$PID"
echo "paused at ledger head ${head:-?}"
# A second writer while the first is paused: refused at once, the ledger untouched.
rc=0
timeout 60 "$G" ingest --db "$WORK/paused" --group g-paused --until-end --unsigned \
  >"$WORK/second.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "a second ingest on the same ledger ran"
grep -q 'only one writer may run per ledger' "$WORK/second.log" ||
  { tail -3 "$WORK/second.log" >&2; fail "the second ingest did not say why it was refused"; }
echo "second writer refused: $(grep -m1 'only one writer' "$WORK/second.log" | cut -c1-160)"
# Past the session timeout (10 s): the coordinator expels the paused member.
sleep 16
kill -CONT "$PID"
wait "$PID" || { tail -20 "$WORK/paused.log" >&2; fail "the resumed ingest failed"; }
PID=
grep -c 'assigned ' "$WORK/paused.log" >/dev/null
echo "resumed: $(grep -c 'assigned ' "$WORK/paused.log") partition assignments in its log" \
  "($(grep -ci 'revoke\|rebalance\|expired\|fenced\|session' "$WORK/paused.log") lines about the group)"
"$G" ledger verify --db "$WORK/paused" >/dev/null 2>&1 || fail "chain does not verify"
[ "$(counts "$WORK/paused")" = "$REF" ] ||
  fail "accepted/rejected/duplicates $(counts "$WORK/paused"), uninterrupted run $REF"
invoices "$WORK/paused" "$WORK/paused.inv" || fail "settle failed"
cmp -s "$WORK/ref.inv" "$WORK/paused.inv" || fail "invoices differ from the uninterrupted run"
echo "same counts and invoices as the uninterrupted run"
echo "PASS"
