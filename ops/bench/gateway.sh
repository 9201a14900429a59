#!/usr/bin/env bash
# ops/bench/gateway.sh [--events N] [--duration SECS] [--connections C[,C...]] [--batch B]
#                      [--rounds R] [--broker-dir DIR] [--profile SECS] [--no-append]
#
# Usage over HTTP (POST /v1/events) against `kcat -P` producing to the same topic, in one run:
#   1. a throwaway broker, its log in a tmpfs (/dev/shm; --broker-dir DIR puts it elsewhere,
#      e.g. /tmp for the disk): on this machine's disk the kernel writes the broker's dirty
#      log back every ~30 s, 300-400 MB at once, and the broker stalls for 0.1-0.4 s meanwhile
#      (the gateway's slow requests fall in the same tenth of a second as /proc/meminfo's Dirty
#      dropping to zero) -- the disk's pause, not the gateway's, and kcat's short runs mostly
#      miss it; a ledger holding the sample month's registry (what serve opens);
#   2. kcat: N usage events (the sample's JSON, one per line, keyed by allocation) with
#      `kcat -P -X acks=all -X enable.idempotence=true -X compression.type=lz4`, timed from start
#      to exit (kcat waits for every acknowledgement): events/s;
#   3. the gateway: `gpuledger serve --brokers` with a CSP token (and
#      --max-connections-per-address raised to the largest C: one wrk stands for a CSP's several
#      meters), then after a 2 s warm-up, for each C of --connections (32,40,48 by default)
#      `wrk -t1 -cC -dSECS` POSTing batches of B events (JSON arrays, distinct event ids, cycled):
#      requests/s × B = events/s, p50 and p99 latency of a request (wrk's histogram); any
#      non-2xx answer or socket error fails the run. The topic's end offsets are read before and
#      after (kcat -Q): at least as many messages arrived as the gateway acknowledged.
#      What the gateway sustains in the round: the highest events/s of a C whose p99 is under
#      20 ms. Each request waits for the broker's acknowledgement (linger.ms, then the broker's
#      work on the batch), so throughput grows with the requests in flight until the CPUs are
#      full, and p99 with it: at 32 on this machine the gateway is latency-bound (p50 ~8 ms) with
#      CPU to spare, at 48 p99 nears 20 ms. On the machine's disk instead of a tmpfs p99 was
#      23-445 ms in about one round of three, see step 1.
#   For both, the CPU time the producer (kcat, serve) and the broker used, per event (from
#   bash's `time` and /proc/PID/stat): what each event costs, whatever the two CPUs' sharing.
#   Steps 2 and 3 run R times in turn (R = 3 by default; the machine's speed drifts, kcat's own
#   rate by ±15% between runs): each round's sustained gateway rate is compared with the kcat run
#   just before it, and the verdict is on the median of the rounds' ratios; every C's row is in
#   the table.
#   4. with --profile SECS: another wrk run (the first C) while `perf record --call-graph dwarf` samples serve
#      for SECS seconds (not part of the figures); the report goes to stderr.
# Broker, serve, kcat and wrk share the machine's CPUs (not pinned), the same for both.
# GATEWAY_SERVE_ARGS (words) are added to serve's command line, for experiments.
# Prints a Markdown table and appends it (machine, commit, command) to docs/BENCHMARKS.md unless
# --no-append. Target (issue 19): the gateway sustains >= 50% of kcat's events/s with p99 < 20 ms
# at 100 events a batch. Figures are from this machine; no test asserts them.
set -euo pipefail
PROG=ops/bench/gateway.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BENCH_CMDLINE="ops/bench/gateway.sh${*:+ $*}"

EVENTS=1000000
DURATION=20
CONNS=32,40,48
BATCH=100
ROUNDS=3
APPEND=1
PROFILE=0
WARMUP=2
BROKER_DIR=/dev/shm
usage() {
  echo "usage: $PROG [--events N] [--duration SECS] [--connections C[,C...]] [--batch B] [--rounds R] [--broker-dir DIR] [--profile SECS] [--no-append]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case $1 in
    --events) [ $# -ge 2 ] || usage; EVENTS=$2; shift 2 ;;
    --duration) [ $# -ge 2 ] || usage; DURATION=$2; shift 2 ;;
    --connections) [ $# -ge 2 ] || usage; CONNS=$2; shift 2 ;;
    --batch) [ $# -ge 2 ] || usage; BATCH=$2; shift 2 ;;
    --rounds) [ $# -ge 2 ] || usage; ROUNDS=$2; shift 2 ;;
    --broker-dir) [ $# -ge 2 ] || usage; BROKER_DIR=$2; shift 2 ;;
    --no-append) APPEND=0; shift ;;
    --profile) [ $# -ge 2 ] || usage; PROFILE=$2; shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) usage ;;
  esac
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds takes a whole number of rounds, at least 1"
[[ "$CONNS" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] ||
  die "--connections takes a number of connections, or several separated by commas (32,40,48)"
IFS=, read -r -a CONN_LIST <<<"$CONNS"
MAX_CONNS=$(printf '%s\n' "${CONN_LIST[@]}" | sort -n | tail -1)
if ! command -v wrk >/dev/null; then
  [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null || die "wrk is needed: apt-get install -y wrk"
  log "installing wrk"
  env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600 install \
    --no-install-recommends wrk >&2 || die "apt-get install wrk failed"
fi

SERVE_PID=
gw_cleanup() {
  [ -n "$SERVE_PID" ] && kill -TERM "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
  return 0
}
[ -d "$BROKER_DIR" ] && [ -w "$BROKER_DIR" ] ||
  die "--broker-dir $BROKER_DIR: not a writable directory (on a machine without /dev/shm, give one)"
# Three rounds write ~2.5 GB of log (kept until the run ends).
[ "$(df -Pk "$BROKER_DIR" | awk 'NR == 2 {print $4}')" -ge $((4 * 1024 * 1024)) ] ||
  die "--broker-dir $BROKER_DIR: less than 4 GiB free; give a directory with room for the broker's log"
BROKER_FS=$(df -PT "$BROKER_DIR" | awk 'NR == 2 {print $2}')
bench_setup
trap 'gw_cleanup; bench_cleanup' EXIT
TMPDIR=$BROKER_DIR bench_broker
CSP=csp-alpha
TOPIC=${PREFIX}gpuledger.usage.$CSP

# --- a ledger with the registry, the events, the bodies -----------------------------------
python3 "$ROOT/ops/sample/make_sample.py" "$WORK/sample" --period 2026-03 >/dev/null
"$GPULEDGER" publish --brokers "$BROKERS" --topic-prefix "$PREFIX" --kind registry \
  "$WORK/sample/registry.jsonl" >"$WORK/publish.log" 2>&1 || { cat "$WORK/publish.log" >&2; die "publish failed"; }
"$GPULEDGER" ingest --brokers "$BROKERS" --topic-prefix "$PREFIX" --db "$WORK/ledger" \
  --until-end --unsigned >"$WORK/ingest.log" 2>&1 || { tail "$WORK/ingest.log" >&2; die "ingest failed"; }
# The CSP's topic, created as the gateway and publish create it (3 partitions, log-append time).
printf '' >"$WORK/empty.jsonl"
python3 - "$WORK" "$EVENTS" "$BATCH" "$CSP" <<'PY'
import json, os, sys
work, n, batch, csp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
base = [json.loads(l) for l in open(os.path.join(work, "sample/usage.jsonl")) if csp in l]
base = [e for e in base if "usage" in e]
def event(i):
    e = json.loads(json.dumps(base[i % len(base)]))
    e["eventId"] = f"bench-{i}"
    e["producerSeq"] = i + 1
    return e
with open(os.path.join(work, "kcat.in"), "w") as f:
    for i in range(n):
        e = event(i)
        f.write(e["usage"]["allocationId"] + "\t" + json.dumps(e, separators=(",", ":")) + "\n")
os.makedirs(os.path.join(work, "bodies"))
for b in range(64):
    with open(os.path.join(work, "bodies", f"{b}.json"), "w") as f:
        json.dump([event(n + b * batch + i) for i in range(batch)], f, separators=(",", ":"))
PY

# CPU seconds a process (all its threads) has used so far, from /proc/PID/stat.
TICKS=$(getconf CLK_TCK)
cpu_secs() { awk -v t="$TICKS" '{print ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
BROKER_PID=$(sed -n 's/^KAFKA_PID=//p' "$WORK/kafka.env" | tail -n 1)

end_offsets() {  # the sum of the topic's end offsets
  local args=() p
  for p in 0 1 2; do args+=(-t "$TOPIC:$p:-1"); done
  kcat -Q -b "$BROKERS" "${args[@]}" 2>/dev/null | awk '/offset/ {s += $NF} END {print s + 0}'
}

# --- kcat -P --------------------------------------------------------------------------------
"$GPULEDGER" publish --brokers "$BROKERS" --topic-prefix "$PREFIX" --kind usage \
  <(head -1 "$WORK/sample/usage.jsonl" | grep "$CSP" || sed -n "/$CSP/{p;q}" "$WORK/sample/usage.jsonl") \
  >/dev/null 2>&1 || die "creating $TOPIC failed"
TIMEFORMAT='%U %S'
# One kcat run: sets KCAT_EPS, KCAT_CPU_US, KCAT_BROKER_US.
run_kcat() {
  local off0 off1 b0 b1 t0 t1
  off0=$(end_offsets)
  log "kcat -P: $EVENTS events to $TOPIC"
  b0=$(cpu_secs "$BROKER_PID")
  t0=$(date +%s.%N)
  { time kcat -P -b "$BROKERS" -t "$TOPIC" -K $'\t' -X acks=all -X enable.idempotence=true \
    -X compression.type=lz4 -l "$WORK/kcat.in" 2>"$WORK/kcat.log"; } 2>"$WORK/kcat.time" ||
    { cat "$WORK/kcat.log" >&2; die "kcat failed"; }
  t1=$(date +%s.%N)
  b1=$(cpu_secs "$BROKER_PID")
  off1=$(end_offsets)
  [ "$((off1 - off0))" -ge "$EVENTS" ] || die "kcat: only $((off1 - off0)) of $EVENTS messages on the topic"
  KCAT_EPS=$(div "$EVENTS" "$(echo "$t1 - $t0" | bc -l)")
  # CPU µs an event: the producer's own and the broker's.
  KCAT_CPU_US=$(awk -v n="$EVENTS" '{printf "%.2f", ($1 + $2) * 1e6 / n}' "$WORK/kcat.time")
  KCAT_BROKER_US=$(echo "($b1 - $b0) * 1000000 / $EVENTS" | bc -l)
  log "kcat: $(fmt0 "$KCAT_EPS") events/s, kcat $KCAT_CPU_US CPU µs/event, broker $(printf %.2f "$KCAT_BROKER_US")"
}

# --- the gateway ----------------------------------------------------------------------------
TOKEN=$("$GPULEDGER" tokens add --file "$WORK/tokens" --role "csp:$CSP" --name bench 2>/dev/null) ||
  die "tokens add failed"
"$GPULEDGER" serve --db "$WORK/ledger" --tokens "$WORK/tokens" --listen 127.0.0.1:0 \
  --port-file "$WORK/serve.port" --rate-limit 0 --brokers "$BROKERS" --topic-prefix "$PREFIX" \
  --max-connections-per-address "$((MAX_CONNS > 32 ? MAX_CONNS : 32))" \
  ${GATEWAY_SERVE_ARGS:-} </dev/null >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 300); do
  [ -s "$WORK/serve.port" ] && break
  kill -0 "$SERVE_PID" 2>/dev/null || { tail -20 "$WORK/serve.log" >&2; die "serve exited at start"; }
  sleep 0.2
done
URL=http://127.0.0.1:$(cat "$WORK/serve.port")/v1/events
cat >"$WORK/post.lua" <<EOF
-- POSTs the 64 bodies in turn; one line for ops/bench/gateway.sh at the end
local bodies, n = {}, 0
for b = 0, 63 do
  local f = assert(io.open("$WORK/bodies/" .. b .. ".json"))
  bodies[b] = f:read("*a")
  f:close()
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
-- Each request's text made once and reused: formatting a 29 KB request in Lua every time was
-- most of wrk's CPU, which the gateway shares the machine with.
local formatted = {}
request = function()
  n = n + 1
  local b = n % 64
  if formatted[b] == nil then formatted[b] = wrk.format(nil, nil, nil, bodies[b]) end
  return formatted[b]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d sock_errors=%d non2xx=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
EOF
wrk -t1 -c"$MAX_CONNS" -d"${WARMUP}s" -s "$WORK/post.lua" "$URL" >"$WORK/wrk-warmup.log" 2>&1 ||
  { cat "$WORK/wrk-warmup.log" >&2; die "wrk warm-up failed"; }
# One wrk run against the gateway with $1 connections: sets GW_EPS, GW_CPU_US, GW_BROKER_US,
# WRK_CPU_US, P50, P99.
run_gateway() {
  local conns=$1 off2 off3 s2 s3 b2 b3
  off2=$(end_offsets)
  s2=$(cpu_secs "$SERVE_PID")
  b2=$(cpu_secs "$BROKER_PID")
  log "wrk: POST $URL, $conns connections, $DURATION s, $BATCH events a request"
  { time wrk -t1 -c"$conns" -d"${DURATION}s" --latency -s "$WORK/post.lua" "$URL" >"$WORK/wrk.log" 2>&1; } \
    2>"$WORK/wrk.time" || { cat "$WORK/wrk.log" >&2; die "wrk failed"; }
  s3=$(cpu_secs "$SERVE_PID")
  b3=$(cpu_secs "$BROKER_PID")
  off3=$(end_offsets)
  LINE=$(grep '^BENCH ' "$WORK/wrk.log") || { cat "$WORK/wrk.log" >&2; die "wrk printed no BENCH line"; }
  val() { echo "$LINE" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  [ "$(val non2xx)" = 0 ] && [ "$(val sock_errors)" = 0 ] ||
    { cat "$WORK/wrk.log" >&2; tail -20 "$WORK/serve.log" >&2; die "the gateway answered errors"; }
  GW_EVENTS=$(($(val requests) * BATCH))
  [ "$((off3 - off2))" -ge "$GW_EVENTS" ] ||
    die "the gateway acknowledged $GW_EVENTS events but only $((off3 - off2)) reached the topic"
  GW_EPS=$(div "$GW_EVENTS" "$(echo "$(val duration_us) / 1000000" | bc -l)")
  GW_CPU_US=$(echo "($s3 - $s2) * 1000000 / $GW_EVENTS" | bc -l)
  GW_BROKER_US=$(echo "($b3 - $b2) * 1000000 / $GW_EVENTS" | bc -l)
  WRK_CPU_US=$(awk -v n="$GW_EVENTS" '{printf "%.2f", ($1 + $2) * 1e6 / n}' "$WORK/wrk.time")
  P50=$(val p50_us)
  P99=$(val p99_us)
  log "gateway: $(fmt0 "$GW_EPS") events/s, p50 $P50 µs, p99 $P99 µs, serve $(printf %.2f "$GW_CPU_US") CPU µs/event, broker $(printf %.2f "$GW_BROKER_US"), wrk $WRK_CPU_US"
}

met() { if "$@"; then echo met; else echo "**missed**"; fi; }
lt() { [ "$(echo "$1 < $2" | bc -l)" = 1 ]; }
ms() { printf '%.2f' "$(echo "$1 / 1000" | bc -l)"; }

# --- rounds: kcat, then the gateway at each C, R times -------------------------------------
ROWS=()
RATIOS=()
for round in $(seq 1 "$ROUNDS"); do
  log "round $round of $ROUNDS"
  run_kcat
  BEST_EPS=0
  BEST_ROW=-1
  for conns in "${CONN_LIST[@]}"; do
    run_gateway "$conns"
    ok=no
    if lt "$P99" 20000; then
      ok=yes
      if [ "$(echo "$GW_EPS > $BEST_EPS" | bc -l)" = 1 ]; then BEST_EPS=$GW_EPS; BEST_ROW=${#ROWS[@]}; fi
    fi
    ROWS+=("$(printf '| %s | %s | %.2f | %.2f | %s | %s | %s ms | %s ms | %s | %s | %.2f | %.2f | %.2f |' \
      "$round" "$(fmt0 "$KCAT_EPS")" "$KCAT_CPU_US" "$KCAT_BROKER_US" "$conns" "$(fmt0 "$GW_EPS")" \
      "$(ms "$P50")" "$(ms "$P99")" "$ok" "$(pct "$GW_EPS" "$KCAT_EPS")" "$GW_CPU_US" \
      "$GW_BROKER_US" "$WRK_CPU_US")")
  done
  # The round's sustained rate (0 if no C kept p99 under 20 ms), its row in bold.
  RATIOS+=("$(echo "$BEST_EPS / $KCAT_EPS" | bc -l)")
  if [ "$BEST_ROW" -ge 0 ]; then
    ROWS[BEST_ROW]=$(echo "${ROWS[BEST_ROW]}" | sed 's/| \([0-9]*%\) |/| **\1** |/')
  fi
done
SERVE_RSS_KB=$(sed -n 's/^VmHWM:\s*\([0-9]*\) kB/\1/p' "/proc/$SERVE_PID/status")
MEDIAN_RATIO=$(printf '%s\n' "${RATIOS[@]}" | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')

# --- table ----------------------------------------------------------------------------------
TABLE=$WORK/table.md
{
  printf 'One topic (`%s`, 3 partitions, log-append time) on a throwaway local broker (its log in %s, %s). kcat %s: ' \
    "gpuledger.usage.$CSP" "$BROKER_DIR" "$BROKER_FS" "$(dpkg-query -W -f '${Version}' kcat 2>/dev/null || echo '?')"
  printf '%s events of the sample month (JSON, %s B a line on average), keyed by allocation, with ' \
    "$(fmt0 "$EVENTS")" "$(( $(wc -c <"$WORK/kcat.in") / EVENTS ))"
  printf '`kcat -P -X acks=all -X enable.idempotence=true -X compression.type=lz4`. '
  printf 'Gateway: `gpuledger serve --brokers --max-connections-per-address %s%s` (%s, peak RSS %s MiB), `wrk -t1 -cC -d%ss --latency` for C in %s POSTing ' \
    "$((MAX_CONNS > 32 ? MAX_CONNS : 32))" "${GATEWAY_SERVE_ARGS:+ $GATEWAY_SERVE_ARGS}" \
    "$([ -n "${GATEWAY_SERVE_ARGS:-}" ] && echo 'serve given GATEWAY_SERVE_ARGS' || echo '2 I/O threads')" \
    "$(echo "$SERVE_RSS_KB / 1024" | bc)" "$DURATION" "$CONNS"
  printf 'JSON arrays of %s events (%s B a request) after a %s s warm-up; every answer 200 with every event taken. ' \
    "$BATCH" "$(wc -c <"$WORK/bodies/0.json")" "$WARMUP"
  printf '%s rounds, each kcat then the gateway at each C. Broker, producer and client share the %s CPUs. ' \
    "$ROUNDS" "$(nproc)"
  printf 'The gateway sustains, in a round, the highest events/s of a C whose p99 is under 20 ms (in bold).\n\n'
  echo '| round | kcat events/s | kcat CPU µs/event | broker CPU µs/event | connections | gateway events/s | p50 a request | p99 a request | p99 < 20 ms | as % of kcat | serve CPU µs/event | broker CPU µs/event | wrk CPU µs/event |'
  echo '|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|'
  printf '%s\n' "${ROWS[@]}"
  echo
  echo '| target | needed | gateway | verdict |'
  echo '|---|---:|---:|---|'
  printf '| ≥ 50%% of kcat'"'"'s events/s, p99 < 20 ms at %s events a batch | median of the rounds'"'"' sustained rates ≥ 50%% | %s | %s |\n' \
    "$BATCH" "$(printf '%.0f%%' "$(echo "100 * $MEDIAN_RATIO" | bc -l)")" "$(met ge "$MEDIAN_RATIO" 0.5)"
} >"$TABLE"
echo
cat "$TABLE"
[ "$APPEND" = 1 ] && bench_append "$TABLE" "Usage over HTTP against kcat (issue 19)"
if [ "$PROFILE" -gt 0 ]; then
  command -v perf >/dev/null || die "perf not found (apt-get install -y linux-perf)"
  log "profile: wrk against the gateway, perf record on serve for $PROFILE s"
  wrk -t1 -c"${CONN_LIST[0]}" -d"$((PROFILE + 3))s" -s "$WORK/post.lua" "$URL" >"$WORK/wrk-profile.log" 2>&1 &
  wpid=$!
  sleep 1
  perf record -F 999 --call-graph dwarf,16384 -o "$WORK/perf.data" -p "$SERVE_PID" \
    -- sleep "$PROFILE" >"$WORK/perf-record.log" 2>&1 || true
  wait "$wpid" || true
  bench_perf_report "$WORK/perf.data" 'nlohmann\|google::protobuf\|rd_kafka'
fi
exit 0
