#!/usr/bin/env bash
# ops/bench/replay.sh [--events N] [--scale S] [--profile SECS] [--no-append]
#
# Replay and settle against this machine's own limits, in one run:
#   1. makes a ledger as ops/bench/ingest.sh does (throwaway broker, `gpuledger simulate
#      --max-events N --scale S`, `gpuledger ingest --until-end --unsigned`);
#   2. catches the settlement store up (`gpuledger settle --period 2026-03 --document invoices
#      --format json`, timed) and picks the institution with the largest invoice;
#   3. `gpuledger audit replay --db LEDGER`: entries/s from its own "replayed N entries in S s"
#      line (the replay proper; the chain check before it is in the wall time), peak RSS;
#   4. limit: db_bench fillseq (untimed) then readseq over as many values as ledger entries, of
#      the ledger's average entry size (bytes of `gpuledger ledger export` / entries) (ops/s);
#   5. reading one draft invoice from the caught-up store: `gpuledger settle --db LEDGER
#      --period 2026-03 --institution ID --format json`, 5 runs, median wall time and median
#      "documents of ... built in N us" (--log-level debug);
#   6. with --profile SECS: a second `audit replay` under `perf record --call-graph dwarf` for
#      SECS seconds (from its start: the chain check, then the replay), `perf report` to stderr.
# Prints one Markdown table and appends it (with the machine, commit and command) to
# docs/BENCHMARKS.md unless --no-append. Figures are from this machine; no test asserts them.
set -euo pipefail
PROG=ops/bench/replay.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BENCH_CMDLINE="ops/bench/replay.sh${*:+ $*}"

EVENTS=1000000
SCALE=0.05
APPEND=1
PERIOD=2026-03
RUNS=5
PROFILE=0
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
[[ $PROFILE =~ ^[0-9]+$ ]] || die "--profile: '$PROFILE' is not a number of seconds"

median() { sort -g | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

bench_setup
bench_broker
bench_fill "$EVENTS" "$SCALE"
log "gpuledger ingest --until-end --unsigned"
LEDGER=$WORK/ledger
bench_ingest "$LEDGER"
ENTRIES=$ING_HEAD
log "ledger: $ENTRIES entries from $ING_CONSUMED messages"
# The broker is no longer needed: stop it so it does not compete for the CPUs.
bash "$ROOT/ops/kafka/stop.sh" --env-file "$WORK/kafka.env" >/dev/null 2>&1 || true

# --- entry size ---------------------------------------------------------------------------
EXPORT_BYTES=$("$GPULEDGER" --log-level warn ledger export --db "$LEDGER" -o - | wc -c)
VALUE_SIZE=$(( EXPORT_BYTES / ENTRIES ))

# --- settlement store catch-up, institution with the largest invoice -----------------------
log "settle: catching the settlement store up"
t0=$(date +%s.%N)
"$GPULEDGER" settle --db "$LEDGER" --period "$PERIOD" --document invoices --format json \
  -o "$WORK/invoices.json" >"$WORK/catchup.log" 2>&1 ||
  { tail -20 "$WORK/catchup.log" >&2; die "settle failed"; }
t1=$(date +%s.%N)
CATCHUP_SECS=$(echo "$t1 - $t0" | bc -l)
INST=$(jq -r '[.invoices[] | {id: .institution_id, ms: (.totals.gpu_ms | tonumber)}] |
              max_by(.ms) | .id' "$WORK/invoices.json")
NINV=$(jq '.invoices | length' "$WORK/invoices.json")
[ -n "$INST" ] && [ "$INST" != null ] || die "no invoice in $WORK/invoices.json"
log "settle: $NINV invoices; timing $INST"

# --- audit replay -------------------------------------------------------------------------
log "gpuledger audit replay --db LEDGER"
t0=$(date +%s.%N)
rc=0
/usr/bin/time -v -o "$WORK/replay.time" "$GPULEDGER" audit replay --db "$LEDGER" \
  >"$WORK/replay.out" 2>"$WORK/replay.log" || rc=$?
t1=$(date +%s.%N)
REPLAY_WALL=$(echo "$t1 - $t0" | bc -l)
line=$(grep -o 'replayed [0-9]* entries in [0-9.]* s' "$WORK/replay.log" | tail -1 || true)
[ -n "$line" ] || { tail -20 "$WORK/replay.log" >&2; die "audit replay did not report its replay"; }
[ "$rc" = 0 ] || log "WARNING: audit replay exited $rc (digest comparison); the replay itself finished"
REPLAYED=$(echo "$line" | awk '{print $2}')
REPLAY_SECS=$(echo "$line" | awk '{print $5}')
REPLAY_RATE=$(div "$REPLAYED" "$REPLAY_SECS")
REPLAY_RSS_KB=$(rss_kb "$WORK/replay.time")

# --- db_bench readseq ---------------------------------------------------------------------
log "db_bench: fillseq,readseq --num=$ENTRIES --value_size=$VALUE_SIZE"
"$DB_BENCH" --benchmarks=fillseq,readseq --num="$ENTRIES" --value_size="$VALUE_SIZE" \
  --db="$WORK/db_bench" >"$WORK/db_bench.log" 2>&1 ||
  { tail -20 "$WORK/db_bench.log" >&2; die "db_bench failed"; }
READSEQ_RATE=$(sed -n 's/^readseq *:.* \([0-9.]*\) ops\/sec.*/\1/p' "$WORK/db_bench.log" | head -1)
[ -n "$READSEQ_RATE" ] || { cat "$WORK/db_bench.log" >&2; die "cannot read db_bench's readseq ops/sec"; }
rm -rf "$WORK/db_bench"

# --- one draft invoice, store caught up ---------------------------------------------------
log "settle: $RUNS reads of $INST's draft invoice"
: >"$WORK/settle.walls"; : >"$WORK/settle.builds"
for _ in $(seq "$RUNS"); do
  t0=$(date +%s.%N)
  "$GPULEDGER" --log-level debug settle --db "$LEDGER" --period "$PERIOD" --institution "$INST" \
    --format json >"$WORK/invoice.json" 2>"$WORK/settle.log" ||
    { tail -20 "$WORK/settle.log" >&2; die "settle --institution $INST failed"; }
  t1=$(date +%s.%N)
  echo "($t1 - $t0) * 1000" | bc -l >>"$WORK/settle.walls"
  sed -n 's/.*documents of .* built in \([0-9]*\) us.*/\1/p' "$WORK/settle.log" | tail -1 >>"$WORK/settle.builds"
done
SETTLE_MS=$(median <"$WORK/settle.walls")
BUILD_US=$(median <"$WORK/settle.builds")
[ -s "$WORK/settle.builds" ] || BUILD_US="(not logged)"

# --- table --------------------------------------------------------------------------------
VERDICT=met
ge "$REPLAY_RATE" "$(echo "0.6 * $READSEQ_RATE" | bc -l)" || VERDICT="**missed**"
TABLE=$WORK/table.md
{
  printf '%s usage events simulated at `--scale %s` → %s messages → ledger of %s entries ' \
    "$(fmt0 "$EVENTS")" "$SCALE" "$(fmt0 "$ING_CONSUMED")" "$(fmt0 "$ENTRIES")"
  printf '(%s B per entry as exported); %s draft invoices for %s.\n\n' "$VALUE_SIZE" "$NINV" "$PERIOD"
  echo '| measure | figure |'
  echo '|---|---:|'
  printf '| gpuledger audit replay --db LEDGER: replay | %s entries/s (%s entries in %s s) |\n' \
    "$(fmt0 "$REPLAY_RATE")" "$(fmt0 "$REPLAYED")" "$REPLAY_SECS"
  printf '| … wall time incl. chain verification | %.2f s |\n' "$REPLAY_WALL"
  printf '| … peak RSS | %s MiB |\n' "$(echo "$REPLAY_RSS_KB / 1024" | bc)"
  printf '| db_bench readseq, %s values of %s B | %s ops/s |\n' \
    "$(fmt0 "$ENTRIES")" "$VALUE_SIZE" "$(fmt0 "$READSEQ_RATE")"
  printf '| settlement store catch-up from empty (`settle --document invoices`, wall) | %.2f s (%s entries/s) |\n' \
    "$CATCHUP_SECS" "$(fmt0 "$(div "$ENTRIES" "$CATCHUP_SECS")")"
  printf '| one draft invoice (`settle --institution %s --format json`), median of %s, wall | %.1f ms |\n' \
    "$INST" "$RUNS" "$SETTLE_MS"
  printf '| … "documents of %s built in" (median, `--log-level debug`) | %s µs |\n' "$PERIOD" "$BUILD_US"
  echo
  echo '| target | needed | replay | verdict |'
  echo '|---|---:|---:|---|'
  printf '| replay ≥ 60%% of readseq | %s entries/s | %s entries/s (%s) | %s |\n' \
    "$(fmt0 "$(echo "0.6 * $READSEQ_RATE" | bc -l)")" "$(fmt0 "$REPLAY_RATE")" \
    "$(pct "$REPLAY_RATE" "$READSEQ_RATE")" "$VERDICT"
} >"$TABLE"
echo
cat "$TABLE"
[ "$APPEND" = 1 ] && bench_append "$TABLE" "Replay and settle"

# --- optional profile ---------------------------------------------------------------------
if [ "$PROFILE" -gt 0 ]; then
  command -v perf >/dev/null || die "perf not found (apt-get install -y linux-perf)"
  log "profile: a second audit replay, perf record --call-graph dwarf for $PROFILE s"
  perf record -F 499 --call-graph dwarf,16384 -o "$WORK/perf.data" -- \
    timeout "$PROFILE" "$GPULEDGER" audit replay --db "$LEDGER" >"$WORK/perf-record.log" 2>&1 || true
  bench_perf_report "$WORK/perf.data" 'rocksdb::DBImpl::Write\|rocksdb::DBIter'
fi
exit 0
