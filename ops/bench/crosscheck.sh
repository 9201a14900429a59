#!/usr/bin/env bash
# ops/bench/crosscheck.sh [--events N] [--scale S] [--no-append]
# ops/bench/crosscheck.sh --scenario [--no-append]
#
# Cross-check (issue 7): a simulated month's GPU-hours per institution, computed by DuckDB from a
# ledger export without gpuledger's settlement code, against gpuledger's invoices; both timed.
#   1. makes a ledger as ops/bench/ingest.sh does (throwaway broker, `gpuledger simulate
#      --max-events N --scale S`, `gpuledger ingest --until-end --unsigned`);
#   2. `gpuledger ledger export --db LEDGER -o FILE` (length-delimited ExportRecord stream);
#   3. gpuledger's figures: `gpuledger settle --period 2026-03 --document invoices --format json`
#      on an empty settlement store (wall time = catching the store up from entry 1, then the
#      invoices), and `gpuledger audit replay --db LEDGER` (its "replayed N entries in S s" line
#      and the wall time incl. chain verification);
#   4. DuckDB's figures (ops/bench/crosscheck.py, venv from ops/python-env.sh): Python classes
#      generated at run time with `protoc --python_out` from schemas/, the export decoded into CSV
#      (timed: "decode"), then ops/bench/crosscheck.sql in DuckDB (timed: "SQL", incl. loading
#      the CSV), which applies docs/SETTLEMENT.md's rules itself;
#   5. compares per institution, exactly: used GPU-ms (invoice lines of kind usage + beyond_cap),
#      outage-credit GPU-ms (lines of kind outage_credit), net GPU-ms (`totals.gpu_ms`) and net
#      GPU-hours as printed (`totals.gpu_hours`, three decimals). Any difference: the differing
#      rows on stderr and exit status 1.
# Prints one Markdown table and appends it (with the machine, commit and command) to
# docs/BENCHMARKS.md unless --no-append. Figures are from this machine; no test asserts them.
# --scenario: instead of simulate, the small hand-written month of ops/bench/crosscheck_scenario.py
# (corrections of corrections, cancellations, revocations, a shortened then extended allocation,
# overlapping outages, reference data that starts mid-month, a cap, the February boundary),
# published and ingested in two phases; the comparison is the same, the times are meaningless.
# Needs protoc (Debian protobuf-compiler) besides what ops/bench/lib.sh checks.
set -euo pipefail
PROG=ops/bench/crosscheck.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BENCH_CMDLINE="ops/bench/crosscheck.sh${*:+ $*}"

EVENTS=1000000
SCALE=0.05
APPEND=1
SCENARIO=0
PERIOD=2026-03
usage() { echo "usage: $PROG [--events N] [--scale S] [--scenario] [--no-append]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --events) [ $# -ge 2 ] || usage; EVENTS=$2; shift 2 ;;
    --scale) [ $# -ge 2 ] || usage; SCALE=$2; shift 2 ;;
    --no-append) APPEND=0; shift ;;
    --scenario) SCENARIO=1; shift ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) usage ;;
  esac
done

command -v protoc >/dev/null || die "protoc not found: apt-get install -y protobuf-compiler"
PY=$(bash "$ROOT/ops/python-env.sh") || die "ops/python-env.sh failed"
secs() { echo "$2 - $1" | bc -l; }

publish() {
  "$GPULEDGER" publish --brokers "$BROKERS" --topic-prefix "$PREFIX" --kind "$1" "$2" \
    >>"$WORK/publish.log" 2>&1 || { tail -20 "$WORK/publish.log" >&2; die "publish $2 failed"; }
}

bench_setup
bench_broker
LEDGER=$WORK/ledger
if [ "$SCENARIO" = 1 ]; then
  python3 "$ROOT/ops/bench/crosscheck_scenario.py" "$WORK/scenario"
  MESSAGES=0
  for phase in phase1 phase2; do
    log "scenario $phase: publish, gpuledger ingest --until-end --unsigned"
    publish registry "$WORK/scenario/$phase-registry.jsonl"
    publish usage "$WORK/scenario/$phase-usage.jsonl"
    bench_ingest "$LEDGER"
    MESSAGES=$((MESSAGES + ING_CONSUMED))
  done
  ING_CONSUMED=$MESSAGES
  SOURCE="the hand-written month of \`ops/bench/crosscheck_scenario.py\` (two phases)"
else
  bench_fill "$EVENTS" "$SCALE"
  log "gpuledger ingest --until-end --unsigned"
  bench_ingest "$LEDGER"
  SOURCE="$(fmt0 "$EVENTS") usage events simulated at \`--scale $SCALE\`"
fi
log "ledger: $ING_HEAD entries from $ING_CONSUMED messages"
bash "$ROOT/ops/kafka/stop.sh" --env-file "$WORK/kafka.env" >/dev/null 2>&1 || true

# --- export -------------------------------------------------------------------------------
log "gpuledger ledger export"
t0=$(date +%s.%N)
"$GPULEDGER" --log-level warn ledger export --db "$LEDGER" -o "$WORK/ledger.export" ||
  die "ledger export failed"
t1=$(date +%s.%N)
EXPORT_SECS=$(secs "$t0" "$t1")
EXPORT_MIB=$(echo "$(stat -c %s "$WORK/ledger.export") / 1048576" | bc -l)

# --- gpuledger: settle from an empty store, audit replay -----------------------------------
log "gpuledger settle --period $PERIOD --document invoices (empty store)"
t0=$(date +%s.%N)
"$GPULEDGER" settle --db "$LEDGER" --store "$WORK/store-empty" --period "$PERIOD" \
  --document invoices --format json -o "$WORK/invoices.json" >"$WORK/settle.log" 2>&1 ||
  { tail -20 "$WORK/settle.log" >&2; die "settle failed"; }
t1=$(date +%s.%N)
SETTLE_SECS=$(secs "$t0" "$t1")

# The usage report of the month by institution (docs/REPORTS.md), read from the roll-ups of the
# store just caught up: compared with DuckDB too.
"$GPULEDGER" report usage --db "$LEDGER" --store "$WORK/store-empty" --from "$PERIOD" \
  --to "$PERIOD" --by institution --format json -o "$WORK/report.json" >>"$WORK/settle.log" 2>&1 ||
  { tail -20 "$WORK/settle.log" >&2; die "report usage failed"; }

log "gpuledger audit replay --db LEDGER"
t0=$(date +%s.%N)
rc=0
"$GPULEDGER" audit replay --db "$LEDGER" --store "$WORK/store-empty" \
  >"$WORK/replay.out" 2>"$WORK/replay.log" || rc=$?
t1=$(date +%s.%N)
REPLAY_WALL=$(secs "$t0" "$t1")
line=$(grep -o 'replayed [0-9]* entries in [0-9.]* s' "$WORK/replay.log" | tail -1 || true)
[ -n "$line" ] || { tail -20 "$WORK/replay.log" >&2; die "audit replay did not report its replay"; }
[ "$rc" = 0 ] || log "WARNING: audit replay exited $rc; the replay itself finished"
REPLAY_SECS=$(echo "$line" | awk '{print $5}')

# --- DuckDB -------------------------------------------------------------------------------
log "protoc --python_out; decode the export; DuckDB SQL"
mkdir -p "$WORK/pb" "$WORK/duck"
protoc -I "$ROOT/schemas" --python_out="$WORK/pb" "$ROOT"/schemas/gpuledger/v1/*.proto
rc=0
"$PY" "$ROOT/ops/bench/crosscheck.py" --pb-dir "$WORK/pb" --export "$WORK/ledger.export" \
  --invoices "$WORK/invoices.json" --report "$WORK/report.json" --period "$PERIOD" \
  --work "$WORK/duck" --result "$WORK/result.json" 2>"$WORK/crosscheck.log" || rc=$?
[ -s "$WORK/result.json" ] || { tail -30 "$WORK/crosscheck.log" >&2; die "crosscheck.py failed"; }
r() { jq -r ".$1" "$WORK/result.json"; }
[ "$(r closes)" = 0 ] && [ "$(r adjustment_lines)" = 0 ] ||
  log "WARNING: the ledger has period closes or adjustment lines, which crosscheck.sql does not model"

# --- table --------------------------------------------------------------------------------
MISMATCHES=$(r mismatches)
VERDICT="**0**"
[ "$MISMATCHES" = 0 ] || VERDICT="**$MISMATCHES MISMATCHED**"
DUCK_SECS=$(echo "$(r decode_s) + $(r sql_s)" | bc -l)
TABLE=$WORK/table.md
{
  printf '%s → %s messages → ledger of %s entries ' \
    "$SOURCE" "$(fmt0 "$ING_CONSUMED")" "$(fmt0 "$ING_HEAD")"
  printf '(%s accepted, %s rejected, %s parked); export %.0f MiB; period %s (%s, %s unpriced).\n\n' \
    "$(fmt0 "$(r accepted)")" "$(fmt0 "$(r rejected)")" "$(fmt0 "$(r parked)")" "$EXPORT_MIB" \
    "$PERIOD" "$(r status)" "$(r unpriced_gpuledger)"
  echo '| measure | gpuledger | DuckDB (independent) |'
  echo '|---|---:|---:|'
  printf '| institutions (invoices / result rows) | %s | %s |\n' \
    "$(r institutions_gpuledger)" "$(r institutions_duckdb)"
  printf '| institutions that differ, of %s compared | %s | %s |\n' \
    "$(r institutions_compared)" "$VERDICT" "$VERDICT"
  printf '| institutions whose usage report (`report usage --by institution`) differs from DuckDB | **%s** | |\n' \
    "$(r report_mismatches)"
  printf '| GPU-hours used (lines `usage` + `beyond_cap` + `held` + `refused`), sum over institutions | %s | %s |\n' \
    "$(r used_gpu_hours_gpuledger)" "$(r used_gpu_hours)"
  printf '| GPU-hours of outage credits (lines `outage_credit`), sum | %s | %s |\n' \
    "$(r credit_gpu_hours_gpuledger)" "$(r credit_gpu_hours)"
  printf '| GPU-hours that could not be priced (lines `unpriced`), sum | %s | %s |\n' \
    "$(r unpriced_gpu_hours_gpuledger)" "$(r unpriced_gpu_hours)"
  printf '| GPU-hours net (`totals.gpu_ms`), sum | %s | %s |\n' \
    "$(r net_gpu_hours_gpuledger)" "$(r net_gpu_hours)"
  printf '| `ledger export` (wall) | %.2f s | |\n' "$EXPORT_SECS"
  printf '| settle from an empty store: catch-up + invoices (wall) | %.2f s | |\n' "$SETTLE_SECS"
  printf '| `audit replay --db`: replay / wall incl. chain verification | %s s / %.2f s | |\n' \
    "$REPLAY_SECS" "$REPLAY_WALL"
  printf '| decode: export → CSV (Python protobuf %s) | | %.2f s (%s entries/s) |\n' \
    "$("$PY" -c 'import google.protobuf as p; print(p.__version__)')" "$(r decode_s)" \
    "$(fmt0 "$(div "$(r entries)" "$(r decode_s)")")"
  printf '| SQL (DuckDB %s): load the CSV + aggregate | | %.2f s + %.2f s |\n' \
    "$("$PY" -c 'import duckdb; print(duckdb.__version__)')" "$(r sql_load_s)" "$(r sql_aggregate_s)"
  printf '| total (settle vs decode + SQL) | %.2f s | %.2f s |\n' "$SETTLE_SECS" "$DUCK_SECS"
  echo
  echo 'Compared per institution, exactly: GPU-ms of the lines of kind `usage` + `beyond_cap` +'
  echo '`held` + `refused` (used), of kind `outage_credit`, of kind `unpriced`, the invoice total'
  echo '`totals.gpu_ms` (net) and `totals.gpu_hours` as'
  echo 'printed (three decimals, half away from zero). Rules in ops/bench/crosscheck.sql.'
} >"$TABLE"
echo
cat "$TABLE"
if [ "$rc" != 0 ]; then
  grep -E '^(MISMATCH|HOURS|REPORT) ' "$WORK/crosscheck.log" >&2 || tail -30 "$WORK/crosscheck.log" >&2
  die "the cross-check found differences (rows above; BENCH_KEEP=1 keeps $WORK)"
fi
TITLE="Cross-check: DuckDB vs gpuledger settle"
[ "$SCENARIO" = 1 ] && TITLE="$TITLE (scenario)"
[ "$APPEND" = 1 ] && bench_append "$TABLE" "$TITLE"
exit 0
