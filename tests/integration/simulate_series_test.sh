#!/usr/bin/env bash
# `gpuledger simulate --series-start` extends one ledger month after month (issue 16): three
# months of a fleet, with no injected faults, go through the real broker into one ledger with
# nothing rejected: the later months' registry events are exact duplicates (dropped), their usage
# falls inside the allocations of the first. Without --series-start the second month's registry
# conflicts with the first's (the check that the test can fail).
# Needs GPULEDGER_KAFKA_ENV (the test broker's env file) and GPULEDGER_BIN.
set -euo pipefail
: "${GPULEDGER_KAFKA_ENV:?}" "${GPULEDGER_BIN:?}"
# shellcheck disable=SC1090
. "$GPULEDGER_KAFKA_ENV"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpuledger-series-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export GPULEDGER_BROKERS=$KAFKA_BOOTSTRAP
G=$GPULEDGER_BIN
CLEAN=(--scale 0.02 --interval-minutes 60 --duplicates-ppm 0 --conflicts-ppm 0 --late-ppm 0
       --overlaps-ppm 0 --malformed-ppm 0)

stats() {  # prints "accepted rejected duplicates" of ledger $1
  "$G" ledger stats --db "$1" --json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s["accepted"], s["rejected"], s["duplicates_dropped"])'
}

export GPULEDGER_TOPIC_PREFIX="series-test-$$."
for p in 2026-03 2026-04 2026-05; do
  "$G" simulate --period $p --series-start 2026-03 "${CLEAN[@]}" >/dev/null 2>"$WORK/sim-$p.err" \
    || { cat "$WORK/sim-$p.err" >&2; fail "simulate $p failed"; }
  "$G" ingest --db "$WORK/series" --until-end --unsigned >"$WORK/ingest-$p.log" 2>&1 \
    || { cat "$WORK/ingest-$p.log" >&2; fail "ingest $p failed"; }
  read -r acc rej dup < <(stats "$WORK/series")
  echo "after $p: accepted $acc, rejected $rej, duplicates dropped $dup"
  [ "$rej" -eq 0 ] || { "$G" ledger stats --db "$WORK/series" >&2; fail "$p: $rej rejected"; }
done
[ "$dup" -gt 0 ] || fail "the later months' registry events were not dropped as duplicates"
# Every month is billed.
for p in 2026-04 2026-05; do
  "$G" settle --db "$WORK/series" --period $p --format json -o "$WORK/$p.json" 2>/dev/null \
    || fail "settle $p failed"
  python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["invoice_totals"]["gpu_ms"] > 0, "no usage billed in " + d["period"]' "$WORK/$p.json" \
    || fail "$p has no usage"
done

# The same two months without --series-start: the second month's registry conflicts.
export GPULEDGER_TOPIC_PREFIX="series-test-alone-$$."
for p in 2026-03 2026-04; do
  "$G" simulate --period $p "${CLEAN[@]}" >/dev/null 2>&1 || fail "simulate $p (alone) failed"
done
"$G" ingest --db "$WORK/alone" --until-end --unsigned >"$WORK/ingest-alone.log" 2>&1 \
  || fail "ingest (alone) failed"
read -r _ rej _ < <(stats "$WORK/alone")
[ "$rej" -gt 0 ] || fail "months simulated alone into one ledger were all accepted"
echo "simulate series test: OK (months simulated alone: $rej rejected)"
