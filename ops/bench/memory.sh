#!/usr/bin/env bash
# ops/bench/memory.sh [--sizes "1000000 10000000 50000000"] [--scale S] [--no-append]
#
# Peak memory (RSS) and throughput of ingest and of a full replay as the event count grows
# (issue 15: flat within 10% from 10M events on, and under 512 MiB). For each size N, in turn:
#   1. starts a throwaway Kafka broker (stopped and deleted after that size, to free the disk);
#   2. `gpuledger simulate --max-events N --scale S` into topics bench-<pid>-<N>.*;
#   3. `gpuledger ingest --until-end --unsigned` (default synced commits) into a fresh ledger,
#      under /usr/bin/time -v (peak RSS), while sampling its RSS every second;
#   4. `gpuledger audit replay --db LEDGER --expect NO-CLOSES` under /usr/bin/time -v (nothing
#      is closed in a bench ledger, so it compares against an empty gpuledger.closes/1 file);
#   5. deletes the ledger.
# Writes docs/bench/scaling.csv (one row per size), docs/bench/ingest-timeseries.csv (ingest
# throughput over time, from the largest size's progress log) and docs/bench/ingest-rss.csv
# (its RSS over time), docs/bench/replay-rss.csv (the largest replay's RSS over time) and
# docs/bench/memory-{ingest,replay}-N.log (each run's `memory (MiB)` lines: what it held, part
# by part); makes the PNG plots with ops/bench/plot.py when the Python venv has
# matplotlib (ops/python-env.sh); prints one Markdown table and appends it to
# docs/BENCHMARKS.md unless --no-append. The default scale, 1.5, gives a month of about 60M
# usage events, so every size is a prefix of the same fleet.
# Disk: about 0.5 KB per event at the largest size (broker log, ledger, validator state).
set -euo pipefail
PROG=ops/bench/memory.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BENCH_CMDLINE="ops/bench/memory.sh${*:+ $*}"

SIZES="1000000 10000000 50000000"
SCALE=1.5
APPEND=1
usage() { echo "usage: $PROG [--sizes \"N1 N2 ...\"] [--scale S] [--no-append]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --sizes) [ $# -ge 2 ] || usage; SIZES=$2; shift 2 ;;
    --scale) [ $# -ge 2 ] || usage; SCALE=$2; shift 2 ;;
    --no-append) APPEND=0; shift ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) usage ;;
  esac
done
for n in $SIZES; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "--sizes: '$n' is not a positive count"; done

bench_setup
OUT=$ROOT/docs/bench
mkdir -p "$OUT"
ROWS=$WORK/rows.csv
echo 'events,ingest_s,ingest_msgs_per_s,ingest_rss_mib,replay_s,replay_entries_per_s,replay_rss_mib' >"$ROWS"
TABLE_ROWS=$WORK/table-rows.md
: >"$TABLE_ROWS"
LARGEST=0

# RSS of PID every second, "elapsed_s,rss_mib", until it exits.
sample_rss() {
  local pid=$1 out=$2 t=0 kb
  echo 'elapsed_s,rss_mib' >"$out"
  while kill -0 "$pid" 2>/dev/null; do
    kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$kb" ] && echo "$t,$((kb / 1024))" >>"$out"
    sleep 1
    t=$((t + 1))
  done
}

for N in $SIZES; do
  log "=== $N events ==="
  PREFIX=bench-$$-$N.
  bench_broker
  bench_fill "$N" "$SCALE"
  LEDGER=$WORK/ledger-$N
  # bench_ingest, with an RSS sampler on the gpuledger process beside it.
  t0=$(date +%s.%N)
  /usr/bin/time -v -o "$WORK/ingest.time" "$GPULEDGER" ingest --brokers "$BROKERS" \
    --topic-prefix "$PREFIX" --db "$LEDGER" --until-end --unsigned >"$WORK/ingest-$N.log" 2>&1 &
  tpid=$!
  ipid=
  for _ in $(seq 50); do ipid=$(pgrep -P "$tpid" || true); [ -n "$ipid" ] && break; sleep 0.1; done
  [ -n "$ipid" ] && sample_rss "$ipid" "$WORK/ingest-rss-$N.csv" &
  spid=$!
  wait "$tpid" || { tail -20 "$WORK/ingest-$N.log" >&2; die "ingest failed at $N events"; }
  wait "$spid" 2>/dev/null || true
  t1=$(date +%s.%N)
  ING_SECS=$(echo "$t1 - $t0" | bc -l)
  ING_RSS_KB=$(rss_kb "$WORK/ingest.time")
  ING_CONSUMED=$(sed -n 's/.*info done: consumed \([0-9]*\) .*/\1/p' "$WORK/ingest-$N.log" | tail -1)
  ING_HEAD=$(sed -n 's/.*stopped at ledger head seq \([0-9]*\).*/\1/p' "$WORK/ingest-$N.log" | tail -1)
  [ -n "$ING_CONSUMED" ] && [ -n "$ING_HEAD" ] || die "cannot read ingest's summary from $WORK/ingest-$N.log"
  ING_RATE=$(div "$ING_CONSUMED" "$ING_SECS")
  log "ingest: $ING_CONSUMED messages, $ING_HEAD entries in $(printf %.1f "$ING_SECS") s, peak RSS $((ING_RSS_KB / 1024)) MiB"
  bash "$ROOT/ops/kafka/stop.sh" --env-file "$WORK/kafka.env" >/dev/null 2>&1 || true
  rm -f "$WORK/kafka.env"

  log "audit replay of $ING_HEAD entries"
  rc=0
  echo '{"format": "gpuledger.closes/1", "closes": []}' >"$WORK/no-closes.json"
  /usr/bin/time -v -o "$WORK/replay.time" "$GPULEDGER" audit replay --db "$LEDGER" \
    --expect "$WORK/no-closes.json" \
    >"$WORK/replay.out" 2>"$WORK/replay-$N.log" &
  tpid=$!
  rpid=
  for _ in $(seq 50); do rpid=$(pgrep -P "$tpid" || true); [ -n "$rpid" ] && break; sleep 0.1; done
  [ -n "$rpid" ] && sample_rss "$rpid" "$WORK/replay-rss-$N.csv" &
  spid=$!
  wait "$tpid" || rc=$?
  wait "$spid" 2>/dev/null || true
  line=$(grep -o 'replayed [0-9]* entries in [0-9.]* s' "$WORK/replay-$N.log" | tail -1 || true)
  [ -n "$line" ] || { tail -20 "$WORK/replay-$N.log" >&2; die "audit replay did not report its replay"; }
  [ "$rc" = 0 ] || { tail -20 "$WORK/replay-$N.log" >&2; die "audit replay exited $rc at $N events"; }
  REPLAY_SECS=$(echo "$line" | awk '{print $5}')
  REPLAY_RATE=$(div "$(echo "$line" | awk '{print $2}')" "$REPLAY_SECS")
  REPLAY_RSS_KB=$(rss_kb "$WORK/replay.time")
  log "replay: $(printf %.1f "$REPLAY_SECS") s, peak RSS $((REPLAY_RSS_KB / 1024)) MiB"

  printf '%s,%.2f,%.0f,%d,%.2f,%.0f,%d\n' "$N" "$ING_SECS" "$ING_RATE" $((ING_RSS_KB / 1024)) \
    "$REPLAY_SECS" "$REPLAY_RATE" $((REPLAY_RSS_KB / 1024)) >>"$ROWS"
  printf '| %s | %s | %s | %s msg/s | %s MiB | %s entries/s | %s MiB |\n' "$(fmt0 "$N")" \
    "$(fmt0 "$ING_CONSUMED")" "$(fmt0 "$ING_HEAD")" "$(fmt0 "$ING_RATE")" \
    "$((ING_RSS_KB / 1024))" "$(fmt0 "$REPLAY_RATE")" "$((REPLAY_RSS_KB / 1024))" >>"$TABLE_ROWS"
  if [ "$N" -gt "$LARGEST" ]; then
    LARGEST=$N
    cp "$WORK/ingest-$N.log" "$WORK/ingest-largest.log"
    [ -f "$WORK/ingest-rss-$N.csv" ] && cp "$WORK/ingest-rss-$N.csv" "$WORK/ingest-rss-largest.csv"
    [ -f "$WORK/replay-rss-$N.csv" ] && cp "$WORK/replay-rss-$N.csv" "$WORK/replay-rss-largest.csv"
  fi
  # What each run held, part by part (the `memory (MiB)` lines of ingest and of the replay, and
  # the replay's verify lines with their resident set).
  grep -h 'memory (MiB)' "$WORK/ingest-$N.log" >"$OUT/memory-ingest-$N.log" || true
  grep -h 'memory (MiB)\|verify .*resident' "$WORK/replay-$N.log" >"$OUT/memory-replay-$N.log" || true
  rm -rf "$LEDGER" "$LEDGER.validator" "$LEDGER.settlement"
done

cp "$ROWS" "$OUT/scaling.csv"
[ -f "$WORK/ingest-rss-largest.csv" ] && cp "$WORK/ingest-rss-largest.csv" "$OUT/ingest-rss.csv"
[ -f "$WORK/replay-rss-largest.csv" ] && cp "$WORK/replay-rss-largest.csv" "$OUT/replay-rss.csv"
PY=$(bash "$ROOT/ops/python-env.sh" 2>/dev/null || true)
if [ -n "$PY" ] && [ -f "$ROOT/ops/bench/progress_to_csv.py" ]; then
  "$PY" "$ROOT/ops/bench/progress_to_csv.py" "$WORK/ingest-largest.log" "$OUT/ingest-timeseries.csv" ||
    log "WARNING: could not convert the ingest log to a time series"
fi
if [ -n "$PY" ] && [ -f "$ROOT/ops/bench/plot.py" ]; then
  "$PY" "$ROOT/ops/bench/plot.py" || log "WARNING: plot.py failed; the CSVs are in $OUT"
fi

# Issue 15's targets: ingest's and replay's peaks flat within 10% from the first size of at
# least 10M events (else the smallest) to the largest, and every peak under 512 MiB.
base_row=$(awk -F, 'NR > 1 && $1 >= 10000000 {print NR; exit}' "$ROWS")
base_row=${base_row:-2}
verdict_flat() {  # column of the peak; prints "first last verdict"
  local first last
  first=$(sed -n "${base_row}p" "$ROWS" | cut -d, -f"$1")
  last=$(tail -1 "$ROWS" | cut -d, -f"$1")
  if [ "$last" -le $((first + first / 10)) ]; then echo "$first $last met"; else echo "$first $last **missed**"; fi
}
verdict_under() {  # column of the peak; prints "max verdict"
  local max
  max=$(awk -F, -v c="$1" 'NR > 1 && $c > m {m = $c} END {print m + 0}' "$ROWS")
  if [ "$max" -lt 512 ]; then echo "$max met"; else echo "$max **missed**"; fi
}
BASE_N=$(sed -n "${base_row}p" "$ROWS" | cut -d, -f1)
read -r ING_FIRST ING_LAST ING_FLAT <<<"$(verdict_flat 4)"
read -r REP_FIRST REP_LAST REP_FLAT <<<"$(verdict_flat 7)"
read -r ING_MAX ING_UNDER <<<"$(verdict_under 4)"
read -r REP_MAX REP_UNDER <<<"$(verdict_under 7)"
TABLE=$WORK/table.md
{
  printf 'Sizes are usage events simulated at `--scale %s` (a prefix of the same fleet month); ' "$SCALE"
  printf 'messages include duplicates, conflicts, overlaps and malformed ones.\n\n'
  echo '| usage events | messages | ledger entries | ingest | ingest peak RSS | replay | replay peak RSS |'
  echo '|---:|---:|---:|---:|---:|---:|---:|'
  cat "$TABLE_ROWS"
  echo
  echo '| target | figure | verdict |'
  echo '|---|---:|---|'
  printf '| ingest peak RSS flat within 10%% from %s to %s events | %s → %s MiB | %s |\n' \
    "$(fmt0 "$BASE_N")" "$(fmt0 "$LARGEST")" "$ING_FIRST" "$ING_LAST" "$ING_FLAT"
  printf '| replay peak RSS flat within 10%% from %s to %s events | %s → %s MiB | %s |\n' \
    "$(fmt0 "$BASE_N")" "$(fmt0 "$LARGEST")" "$REP_FIRST" "$REP_LAST" "$REP_FLAT"
  printf '| ingest peak RSS under 512 MiB at every size | %s MiB at most | %s |\n' "$ING_MAX" "$ING_UNDER"
  printf '| replay peak RSS under 512 MiB at every size | %s MiB at most | %s |\n' "$REP_MAX" "$REP_UNDER"
} >"$TABLE"
echo
cat "$TABLE"
[ "$APPEND" = 1 ] && bench_append "$TABLE" "Memory and scaling"
exit 0
