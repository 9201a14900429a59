#!/usr/bin/env bash
# ops/bench/ingest.sh [--events N] [--scale S] [--profile SECS] [--no-append]
#
# Ingest throughput against this machine's own limits, all in one run on one broker:
#   1. starts a throwaway Kafka broker (ops/kafka/start.sh, own env file, stopped on exit);
#   2. pre-fills topics bench-<pid>.* with `gpuledger simulate --max-events N --scale S`;
#   3. limit A: kcat drains every topic of that prefix to /dev/null (messages/s);
#   4. limit B: db_bench fillseq, as many values as messages, of their average size, synced
#      batches of ingest's default group-commit size (5,000) (ops/s);
#   5. `gpuledger ingest --until-end --unsigned` (default synced commits) from the same topics
#      into a fresh ledger: messages/s, ledger entries/s, peak RSS (/usr/bin/time -v);
#   6. with --profile SECS: a second ingest into another fresh ledger under `perf record --call-graph dwarf`
#      for SECS seconds (not part of the measured figures); the report goes to stderr.
# Prints one Markdown table and appends it (with the machine, commit and command) to
# docs/BENCHMARKS.md unless --no-append. Figures are from this machine; no test asserts them.
set -euo pipefail
PROG=ops/bench/ingest.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BENCH_CMDLINE="ops/bench/ingest.sh${*:+ $*}"

EVENTS=1000000
SCALE=0.05
PROFILE=0
APPEND=1
BATCH=5000   # ingest's default --batch-max-messages (ingest/include/ingest/ingestor.h)
usage() { echo "usage: $PROG [--events N] [--scale S] [--profile SECS] [--no-append]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --events) [ $# -ge 2 ] || usage; EVENTS=$2; shift 2 ;;
    --scale) [ $# -ge 2 ] || usage; SCALE=$2; shift 2 ;;
    --profile) [ $# -ge 2 ] || usage; PROFILE=$2; shift 2 ;;
    --no-append) APPEND=0; shift ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) usage ;;
  esac
done

bench_setup
bench_broker
bench_fill "$EVENTS" "$SCALE"

# --- A: kcat drains every topic of the prefix --------------------------------------------
# First an untimed pass for the message count and average payload size; it also creates the
# broker's __consumer_offsets topic and warms the page cache, so neither is charged to A or C.
# shellcheck disable=SC2086
read -r MSGS AVG_BYTES < <(kcat -C -b "$BROKERS" -G "kcat-size.$$" -o beginning -e -q -f '%S\n' $TOPICS |
  awk '{n++; s+=$1} END {printf "%d %.0f\n", n, (n ? s/n : 0)}')
log "kcat: draining $TOPICS"
t0=$(date +%s.%N)
# shellcheck disable=SC2086
kcat -C -b "$BROKERS" -G "kcat-drain.$$" -o beginning -e -q $TOPICS >/dev/null
t1=$(date +%s.%N)
KCAT_SECS=$(echo "$t1 - $t0" | bc -l)
[ "$MSGS" -gt 0 ] || die "kcat read no messages"
KCAT_RATE=$(div "$MSGS" "$KCAT_SECS")
log "kcat: $MSGS messages (avg $AVG_BYTES bytes) in $(printf %.2f "$KCAT_SECS") s"

# --- B: db_bench fillseq, synced batches --------------------------------------------------
log "db_bench: fillseq --num=$MSGS --value_size=$AVG_BYTES --sync=1 --batch_size=$BATCH"
"$DB_BENCH" --benchmarks=fillseq --num="$MSGS" --value_size="$AVG_BYTES" --sync=1 \
  --batch_size="$BATCH" --db="$WORK/db_bench" --disable_wal=0 >"$WORK/db_bench.log" 2>&1 ||
  { tail -20 "$WORK/db_bench.log" >&2; die "db_bench failed"; }
DBB_RATE=$(sed -n 's/^fillseq *:.* \([0-9.]*\) ops\/sec.*/\1/p' "$WORK/db_bench.log" | head -1)
[ -n "$DBB_RATE" ] || { cat "$WORK/db_bench.log" >&2; die "cannot read db_bench's ops/sec"; }
rm -rf "$WORK/db_bench"

# --- C: gpuledger ingest ------------------------------------------------------------------
log "gpuledger ingest --until-end --unsigned (synced commits)"
bench_ingest "$WORK/ledger"
ING_RATE=$(div "$ING_CONSUMED" "$ING_SECS")
ING_ENTRY_RATE=$(div "$ING_HEAD" "$ING_SECS")
log "ingest: $ING_CONSUMED messages, $ING_HEAD ledger entries in $(printf %.2f "$ING_SECS") s"

# --- table --------------------------------------------------------------------------------
LIMIT=$KCAT_RATE
LIMIT_NAME="kcat drain"
if ge "$KCAT_RATE" "$DBB_RATE"; then LIMIT=$DBB_RATE; LIMIT_NAME="db_bench fillseq"; fi
met() { if ge "$1" "$2"; then echo met; else echo "**missed**"; fi; }
T1=$(met "$ING_RATE" "$(echo "0.7 * $LIMIT" | bc -l)")
T2=$(met "$ING_RATE" 500000)
TABLE=$WORK/table.md
{
  printf '%s usage events simulated at `--scale %s` (%s messages in %s topics, average %s bytes); ' \
    "$(fmt0 "$EVENTS")" "$SCALE" "$(fmt0 "$MSGS")" "$(echo "$TOPICS" | wc -w)" "$AVG_BYTES"
  printf 'simulate published them in %.1f s.\n\n' "$SIM_SECS"
  echo '| measure | figure | ingest as % of it |'
  echo '|---|---:|---:|'
  printf '| A. kcat drain of the topics to /dev/null | %s msg/s (%.2f s) | %s |\n' \
    "$(fmt0 "$KCAT_RATE")" "$KCAT_SECS" "$(pct "$ING_RATE" "$KCAT_RATE")"
  printf '| B. db_bench fillseq, %s values of %s B, sync=1, batch_size=%s | %s ops/s | %s |\n' \
    "$(fmt0 "$MSGS")" "$AVG_BYTES" "$BATCH" "$(fmt0 "$DBB_RATE")" "$(pct "$ING_RATE" "$DBB_RATE")"
  printf '| C. gpuledger ingest --until-end --unsigned (synced commits) | %s msg/s (%.2f s) | — |\n' \
    "$(fmt0 "$ING_RATE")" "$ING_SECS"
  printf '| C. … ledger entries written | %s entries/s (%s entries) | — |\n' \
    "$(fmt0 "$ING_ENTRY_RATE")" "$(fmt0 "$ING_HEAD")"
  printf '| C. … peak RSS | %s MiB | — |\n' "$(echo "$ING_RSS_KB / 1024" | bc)"
  echo
  echo '| target | needed | ingest | verdict |'
  echo '|---|---:|---:|---|'
  printf '| ≥ 70%% of the smaller limit (%s) | %s msg/s | %s msg/s (%s) | %s |\n' \
    "$LIMIT_NAME" "$(fmt0 "$(echo "0.7 * $LIMIT" | bc -l)")" "$(fmt0 "$ING_RATE")" \
    "$(pct "$ING_RATE" "$LIMIT")" "$T1"
  printf '| ≥ 500,000 events/s | 500,000 msg/s | %s msg/s | %s |\n' "$(fmt0 "$ING_RATE")" "$T2"
} >"$TABLE"
echo
cat "$TABLE"
[ "$APPEND" = 1 ] && bench_append "$TABLE" "Ingest"

# --- optional profile ---------------------------------------------------------------------
if [ "$PROFILE" -gt 0 ]; then
  command -v perf >/dev/null || die "perf not found (apt-get install -y linux-perf)"
  log "profile: a second ingest into a fresh ledger, perf record --call-graph dwarf for $PROFILE s"
  "$GPULEDGER" ingest --brokers "$BROKERS" --topic-prefix "$PREFIX" --db "$WORK/ledger-prof" \
    --until-end --unsigned >"$WORK/ingest-prof.log" 2>&1 &
  ipid=$!
  sleep 1
  perf record -F 499 --call-graph dwarf,16384 -o "$WORK/perf.data" -p "$ipid" -- sleep "$PROFILE" >"$WORK/perf-record.log" 2>&1 || true
  log "profile taken; waiting for that ingest to finish"
  wait "$ipid" || true
  bench_perf_report "$WORK/perf.data" 'rocksdb::DBImpl::Write\|RdKafka\|rd_kafka_consume'
fi
