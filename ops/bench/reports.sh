#!/usr/bin/env bash
# ops/bench/reports.sh [--scale S] [--interval-minutes M] [--months N] [--runs R] [--no-append]
#
# Issue 18's target: a year's usage report grouped by CSP and GPU model answers in under 100 ms,
# from a ledger of a simulated year at the programmes' scale (ten-minute metering).
#   1. simulates N months (default 12: a series from 2026-01, `simulate --series-start 2026-01
#      --period 2026-MM --scale S --interval-minutes M`) into a throwaway broker, and ingests them
#      (`ingest --until-end --unsigned`) into a fresh ledger;
#   2. catches the settlement store up and reads the year's budgets (`report budget`, timed:
#      every roll-up is kept as entries are applied);
#   3. R runs (default 11) of `gpuledger --log-level debug report usage --from 2026-01 --to
#      2026-MM --by csp,model --format json`: medians of the report's own build time ("usage
#      report built in N us", the store open and caught up) and of the command's wall time;
#   4. `gpuledger serve` on the ledger: R GETs of the same report from /v1/reports/usage with
#      curl (after one warm-up): median time_total;
#   5. the limit: db_bench fillseq (untimed), then readseq over as many keys as the report read,
#      of their average size (key and value): the time RocksDB takes to read them alone;
#   6. issue 18's "done when" on the same year: the budgets the simulator records drawn down
#      (`report budget`), and `alerts run --until-delivered` (its own settlement store) publishing
#      to the broker and delivering to a local receiver that refuses each alert's first attempt;
#      then a second run, which must raise, publish and deliver nothing.
# Prints one Markdown table and appends it (with the machine, commit and command) to
# docs/BENCHMARKS.md unless --no-append. About 35 minutes at the defaults on this machine.
set -euo pipefail
PROG=ops/bench/reports.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BENCH_CMDLINE="ops/bench/reports.sh${*:+ $*}"

SCALE=1
INTERVAL=10
MONTHS=12
RUNS=11
APPEND=1
usage() {
  echo "usage: $PROG [--scale S] [--interval-minutes M] [--months N] [--runs R] [--no-append]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case $1 in
    --scale) [ $# -ge 2 ] || usage; SCALE=$2; shift 2 ;;
    --interval-minutes) [ $# -ge 2 ] || usage; INTERVAL=$2; shift 2 ;;
    --months) [ $# -ge 2 ] || usage; MONTHS=$2; shift 2 ;;
    --runs) [ $# -ge 2 ] || usage; RUNS=$2; shift 2 ;;
    --no-append) APPEND=0; shift ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) usage ;;
  esac
done
[[ $MONTHS =~ ^[0-9]+$ ]] && [ "$MONTHS" -ge 1 ] && [ "$MONTHS" -le 12 ] || die "--months: 1 to 12"
command -v curl >/dev/null || die "curl not found: apt-get install -y curl"

median() { sort -g | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

bench_setup
bench_broker
LAST=$(printf '2026-%02d' "$MONTHS")
t0=$(date +%s.%N)
: >"$WORK/simulate.log"
for m in $(seq 1 "$MONTHS"); do
  period=$(printf '2026-%02d' "$m")
  log "simulate: $period at --scale $SCALE, every $INTERVAL minutes"
  "$GPULEDGER" simulate --brokers "$BROKERS" --topic-prefix "$PREFIX" --series-start 2026-01 \
    --period "$period" --scale "$SCALE" --interval-minutes "$INTERVAL" >>"$WORK/simulate.log" 2>&1 ||
    { tail -20 "$WORK/simulate.log" >&2; die "simulate $period failed"; }
done
SIM_SECS=$(echo "$(date +%s.%N) - $t0" | bc -l)
LEDGER=$WORK/ledger
log "gpuledger ingest --until-end --unsigned"
bench_ingest "$LEDGER"
log "ledger: $ING_HEAD entries from $ING_CONSUMED messages in $(printf '%.0f' "$ING_SECS") s"

# --- budgets and alerts (before the timings: the broker is still up) ----------------------
log "settlement store catch-up, then the year's budgets"
t0=$(date +%s.%N)
"$GPULEDGER" report budget --db "$LEDGER" --year 2026 --format json -o "$WORK/budget.json" \
  >"$WORK/budget.log" 2>&1 || { tail -20 "$WORK/budget.log" >&2; die "report budget failed"; }
CATCHUP_SECS=$(echo "$(date +%s.%N) - $t0" | bc -l)
python3 - "$WORK/receiver.port" "$WORK/receiver.json" <<'PY' &
import http.server, json, sys, threading, time
attempts, accepted = {}, {}
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        i = self.headers["webhook-id"]
        attempts[i] = attempts.get(i, 0) + 1
        ok = attempts[i] > 1  # each alert's first attempt is refused
        if ok:
            accepted[i] = True
        self.send_response(204 if ok else 503)
        self.end_headers()
        with open(sys.argv[2], "w") as f:
            json.dump({"attempts": attempts, "accepted": len(accepted)}, f)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_address[1]))
s.serve_forever()
PY
RECEIVER_PID=$!
trap 'kill $RECEIVER_PID 2>/dev/null || true; bench_cleanup' EXIT
for _ in $(seq 1 50); do [ -s "$WORK/receiver.port" ] && break; sleep 0.1; done
printf '{"subscriptions":[{"id":"finance","url":"http://127.0.0.1:%s/hook","secret":"whsec_%s","role":"finance"}]}\n' \
  "$(cat "$WORK/receiver.port")" "$(printf bench-key | base64)" >"$WORK/subs.json"
ALERTS=("$GPULEDGER" alerts run --db "$LEDGER" --brokers "$BROKERS" --topic-prefix "$PREFIX"
        --subscriptions "$WORK/subs.json" --first-backoff-ms 100 --poll-ms 100 --until-delivered)
log "alerts run (its own settlement store catches up first)"
t0=$(date +%s.%N)
"${ALERTS[@]}" >"$WORK/alerts1.log" 2>&1 || { tail -20 "$WORK/alerts1.log" >&2; die "alerts run failed"; }
ALERTS_SECS=$(echo "$(date +%s.%N) - $t0" | bc -l)
"${ALERTS[@]}" >"$WORK/alerts2.log" 2>&1 || { tail -20 "$WORK/alerts2.log" >&2; die "alerts run (again) failed"; }
kill "$RECEIVER_PID" 2>/dev/null || true
"$GPULEDGER" alerts list --db "$LEDGER" --format json >"$WORK/alerts.json"
RAISED=$(jq '.alerts | length' "$WORK/alerts.json")
RAISED_AGAIN=$(grep -c 'alert raised' "$WORK/alerts2.log" || true)
BY_TYPE=$(jq -r '[.alerts[].type] | group_by(.) | map("\(.[0]) \(length)") | join(", ")' "$WORK/alerts.json")
DELIVERED=$(jq '[.deliveries[] | select(.status == "delivered")] | length' "$WORK/alerts.json")
ATTEMPTS=$(jq '[.deliveries[].attempts] | add // 0' "$WORK/alerts.json")
ON_TOPIC=$(kcat -C -b "$BROKERS" -t "${PREFIX}gpuledger.alerts" -e -q -f '%k\n' | wc -l)
DISTINCT_ON_TOPIC=$(kcat -C -b "$BROKERS" -t "${PREFIX}gpuledger.alerts" -e -q -f '%k\n' | sort -u | wc -l)
RECEIVED=$(jq '.accepted' "$WORK/receiver.json" 2>/dev/null || echo 0)
bash "$ROOT/ops/kafka/stop.sh" --env-file "$WORK/kafka.env" >/dev/null 2>&1 || true

REPORT=(report usage --db "$LEDGER" --from 2026-01 --to "$LAST" --by csp,model --format json)
"$GPULEDGER" "${REPORT[@]}" -o "$WORK/report.json" >"$WORK/catchup.log" 2>&1 ||
  { tail -20 "$WORK/catchup.log" >&2; die "report usage failed"; }
ROWS=$(jq '.rows | length' "$WORK/report.json")

log "$RUNS reports from the caught-up store"
: >"$WORK/walls"; : >"$WORK/builds"
for _ in $(seq "$RUNS"); do
  t0=$(date +%s.%N)
  "$GPULEDGER" --log-level debug "${REPORT[@]}" -o "$WORK/again.json" 2>"$WORK/run.log" ||
    { tail -20 "$WORK/run.log" >&2; die "report usage failed"; }
  echo "($(date +%s.%N) - $t0) * 1000" | bc -l >>"$WORK/walls"
  sed -n 's/.*usage report built in \([0-9]*\) us.*/\1/p' "$WORK/run.log" | tail -1 >>"$WORK/builds"
  cmp -s "$WORK/report.json" "$WORK/again.json" || die "two runs of the same report differ"
done
WALL_MS=$(median <"$WORK/walls")
BUILD_MS=$(echo "$(median <"$WORK/builds") / 1000" | bc -l)
KEYS=$(sed -n 's/.*: \([0-9]*\) roll-up keys read (\([0-9]*\) bytes).*/\1/p' "$WORK/run.log" | tail -1)
KBYTES=$(sed -n 's/.*: \([0-9]*\) roll-up keys read (\([0-9]*\) bytes).*/\2/p' "$WORK/run.log" | tail -1)
[ -n "$KEYS" ] && [ "$KEYS" -gt 0 ] || die "the report did not log the keys it read"

log "serve: $RUNS GETs of /v1/reports/usage"
TOKEN=$("$GPULEDGER" tokens add --file "$WORK/tokens" --role finance --name bench 2>/dev/null)
"$GPULEDGER" serve --db "$LEDGER" --tokens "$WORK/tokens" --listen 127.0.0.1:0 \
  --port-file "$WORK/port" --rate-limit 0 >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
trap 'kill $SERVE_PID 2>/dev/null || true; bench_cleanup' EXIT
for _ in $(seq 1 600); do
  [ -s "$WORK/port" ] && curl -sf "http://127.0.0.1:$(cat "$WORK/port")/readyz" >/dev/null && break
  sleep 0.5
done
URL="http://127.0.0.1:$(cat "$WORK/port")/v1/reports/usage?from=2026-01&to=$LAST&group_by=csp,model"
curl -sf -o "$WORK/api.json" -H "Authorization: Bearer $TOKEN" "$URL" || die "GET $URL failed"
: >"$WORK/api"
for _ in $(seq "$RUNS"); do
  curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $TOKEN" "$URL" >>"$WORK/api"
done
API_MS=$(echo "$(median <"$WORK/api") * 1000" | bc -l)
kill "$SERVE_PID" 2>/dev/null || true
wait "$SERVE_PID" 2>/dev/null || true

AVG=$(( KBYTES / KEYS ))
KEY_SIZE=$(( AVG > 32 ? AVG - 16 : 16 ))
log "db_bench: fillseq,readseq --num=$KEYS --key_size=$KEY_SIZE --value_size=16"
"$DB_BENCH" --benchmarks=fillseq,readseq --num="$KEYS" --key_size="$KEY_SIZE" --value_size=16 \
  --db="$WORK/db_bench" >"$WORK/db_bench.log" 2>&1 ||
  { tail -20 "$WORK/db_bench.log" >&2; die "db_bench failed"; }
READSEQ_RATE=$(sed -n 's/^readseq *:.* \([0-9.]*\) ops\/sec.*/\1/p' "$WORK/db_bench.log" | head -1)
[ -n "$READSEQ_RATE" ] || { cat "$WORK/db_bench.log" >&2; die "cannot read db_bench's readseq ops/sec"; }
READ_MS=$(echo "1000 * $KEYS / $READSEQ_RATE" | bc -l)

VERDICT=met
ge 100 "$BUILD_MS" && ge 100 "$API_MS" || VERDICT="**missed**"
TABLE=$WORK/table.md
{
  printf '%s months (2026-01 to %s) simulated at `--scale %s --interval-minutes %s` → %s messages → ledger of %s entries; ingest %.0f s. The report: %s rows, %s roll-up keys read (%s B each on average).\n\n' \
    "$MONTHS" "$LAST" "$SCALE" "$INTERVAL" "$(fmt0 "$ING_CONSUMED")" "$(fmt0 "$ING_HEAD")" \
    "$ING_SECS" "$ROWS" "$(fmt0 "$KEYS")" "$AVG"
  echo '| measure | figure |'
  echo '|---|---:|'
  printf '| settlement store catch-up from empty + the year'"'"'s budget report (wall) | %.1f s (%s entries/s) |\n' \
    "$CATCHUP_SECS" "$(fmt0 "$(div "$ING_HEAD" "$CATCHUP_SECS")")"
  printf '| `report usage --by csp,model`, the year: build time (median of %s) | %.2f ms |\n' "$RUNS" "$BUILD_MS"
  printf '| … the command'"'"'s wall time (open ledger and store, build, write; median) | %.1f ms |\n' "$WALL_MS"
  printf '| `GET /v1/reports/usage` from `serve`, curl time_total (median of %s) | %.2f ms |\n' "$RUNS" "$API_MS"
  printf '| db_bench readseq of %s keys of %s B | %.3f ms (%s ops/s) |\n' \
    "$(fmt0 "$KEYS")" "$AVG" "$READ_MS" "$(fmt0 "$READSEQ_RATE")"
  echo
  echo '| target | needed | measured | verdict |'
  echo '|---|---:|---:|---|'
  printf '| a year by CSP and model in under 100 ms | < 100 ms | build %.2f ms, API %.2f ms | %s |\n' \
    "$BUILD_MS" "$API_MS" "$VERDICT"
  echo
  echo 'Budgets of 2026 as the simulator records them (`report budget`: each month'"'"'s documents, drafts here):'
  echo
  echo '| programme | budget (won) | drawn (won) | drawn | thresholds crossed | forecast (won) |'
  echo '|---|---:|---:|---:|---|---:|'
  jq -r '.budgets[] | "| \(.program) | \(.amount_krw) | \(.drawn_krw) | \(.drawn_bp / 100)% | \(.thresholds_crossed_bp | map(. / 100 | tostring + "%") | join(", ")) | \(.forecast_krw) |"' \
    "$WORK/budget.json"
  echo
  printf 'Alerts (`alerts run --until-delivered`, %.0f s with its own settlement store'"'"'s catch-up): %s raised (%s); %s on the Kafka alerts topic (%s distinct keys); %s delivered to a receiver that refused each first attempt, in %s attempts (%s accepted by it); a second run raised %s.\n' \
    "$ALERTS_SECS" "$RAISED" "$BY_TYPE" "$ON_TOPIC" "$DISTINCT_ON_TOPIC" "$DELIVERED" "$ATTEMPTS" \
    "$RECEIVED" "$RAISED_AGAIN"
} >"$TABLE"
echo
cat "$TABLE"
[ "$APPEND" = 1 ] && bench_append "$TABLE" "A year's usage report (issue 18)"
exit 0
