#!/usr/bin/env bash
# ops/bench/programme_month.sh [--scale S] [--interval-minutes M] [--no-append]
# Issue 16's "done when": a month of the programmes at their own scale, drawn under the default
# policies (`gpuledger simulate --scale 1 --interval-minutes 10`: 10,000 state GPUs, 1,060 +
# 960 leased, 405 institutions), through a throwaway broker into a fresh ledger, then the
# month's invoices grouped by institution type: invoices, amount due, co-pay, GPU-hours held
# beyond a cap, and the co-pay of usage billed beyond a cap; and what ingest rejected, by
# reason. Academia, research institutes and public agencies should owe 0 won; the rejections
# should be only the simulator's injected faults.
# Appends the table to docs/BENCHMARKS.md unless --no-append. Figures are from this machine;
# no test asserts them.
set -euo pipefail
PROG=programme_month.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SCALE=1
INTERVAL=10
APPEND=1
usage() { echo "usage: $PROG [--scale S] [--interval-minutes M] [--no-append]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --scale) [ $# -ge 2 ] || usage; SCALE=$2; shift 2 ;;
    --interval-minutes) [ $# -ge 2 ] || usage; INTERVAL=$2; shift 2 ;;
    --no-append) APPEND=0; shift ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) usage ;;
  esac
done
BENCH_CMDLINE="ops/bench/programme_month.sh --scale $SCALE --interval-minutes $INTERVAL"
bench_setup
bench_broker
log "simulate --scale $SCALE --interval-minutes $INTERVAL"
"$GPULEDGER" simulate --brokers "$BROKERS" --topic-prefix "$PREFIX" --scale "$SCALE" \
  --interval-minutes "$INTERVAL" >"$WORK/simulate.log" 2>&1 ||
  { tail -20 "$WORK/simulate.log" >&2; die "simulate failed"; }
SIMULATED=$(sed -n 's/.*info simulated \(.*\) in [0-9.]* s$/\1/p' "$WORK/simulate.log" | tail -1)
bench_ingest "$WORK/ledger"
log "ingest: $ING_CONSUMED messages, ledger head $ING_HEAD, $(printf '%.0f' "$ING_SECS") s"
"$GPULEDGER" --log-level warn ledger stats --db "$WORK/ledger" --json >"$WORK/stats.json"
"$GPULEDGER" --log-level warn settle --db "$WORK/ledger" --store "$WORK/store" --period 2026-03 \
  --document invoices --format json -o "$WORK/invoices.json"
{
  echo "Simulated: $SIMULATED. Ingest: $ING_CONSUMED messages, ledger head $ING_HEAD."
  echo "Rejected: $(jq -r '.rejected_by_reason | to_entries | map("\(.key) \(.value)") | join(", ")' "$WORK/stats.json")."
  echo
  echo '| institution type | invoices | due (won) | co-pay (won) | held beyond a cap (GPU-h) | co-pay beyond a cap (won) |'
  echo '|---|---:|---:|---:|---:|---:|'
  jq -r '[.invoices[] | {t: .institution_type, due: (.amount_due_krw|tonumber),
          copay: (.totals.copay_krw|tonumber),
          held: ([.lines[] | select(.kind == "held") | .gpu_ms|tonumber] | add // 0),
          beyond: ([.lines[] | select(.kind == "beyond_cap") | .copay_krw|tonumber] | add // 0)}]
         | group_by(.t)[]
         | "| \(.[0].t) | \(length) | \(map(.due)|add) | \(map(.copay)|add) | \((map(.held)|add) / 3600000 | floor) | \(map(.beyond)|add) |"' \
    "$WORK/invoices.json"
} >"$WORK/table.md"
cat "$WORK/table.md"
if [ "$APPEND" = 1 ]; then bench_append "$WORK/table.md" "A programme month under the default policies (issue 16)"; fi
