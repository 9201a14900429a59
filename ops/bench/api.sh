#!/usr/bin/env bash
# ops/bench/api.sh [--events N] [--scale S] [--duration SECS] [--connections C] [--no-pin]
#                  [--profile SECS] [--no-append]
#
# Serving one invoice from `gpuledger serve` against nginx serving the same bytes, in one run:
#   1. makes a ledger as ops/bench/ingest.sh does (throwaway broker, `gpuledger simulate
#      --max-events N --scale S`, `gpuledger ingest --until-end --unsigned`), then stops the
#      broker; catches the settlement store up (`gpuledger settle --period 2026-03 --document
#      invoices`) and picks the institution with the largest invoice;
#   2. starts `gpuledger serve` (its own finance token, --threads 1) and waits until it has
#      settled the whole ledger and is idle (the chain verification at start has finished);
#      fetches GET /v1/periods/2026-03/invoices/ID once with curl and saves the body;
#   3. starts nginx (own config in the temp dir, one worker, access_log off, sendfile on,
#      keep-alive without a request limit, on a free loopback port) serving that file at the
#      same path with the same Content-Type, Cache-Control and X-Content-Type-Options;
#   4. for each server: a 2 s warm-up, then `wrk -t1 -cC -dSECS` with the same request (same
#      path, same Authorization header): requests/s, p50 and p99 latency (wrk's own histogram,
#      from a Lua done() hook), bytes per response; any non-2xx response or socket error fails.
#   5. with --profile SECS: another wrk run against serve while `perf record --call-graph dwarf`
#      samples serve for SECS seconds (not part of the measured figures); the report goes to stderr.
# Unless --no-pin, each server runs on CPU 1 and wrk on CPU 0 (taskset), the same for both.
# Prints one Markdown table and appends it (with the machine, commit and command) to
# docs/BENCHMARKS.md unless --no-append. Figures are from this machine; no test asserts them.
# Needs wrk and nginx (Debian `wrk`, `nginx`; installed by this script when missing and run as
# root), curl, and the tools ops/bench/ingest.sh needs.
set -euo pipefail
PROG=ops/bench/api.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BENCH_CMDLINE="ops/bench/api.sh${*:+ $*}"

EVENTS=200000
SCALE=0.05
DURATION=10
CONNS=16
PIN=1
PROFILE=0
APPEND=1
PERIOD=2026-03
WARMUP=2
usage() {
  echo "usage: $PROG [--events N] [--scale S] [--duration SECS] [--connections C] [--no-pin] [--profile SECS] [--no-append]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case $1 in
    --events) [ $# -ge 2 ] || usage; EVENTS=$2; shift 2 ;;
    --scale) [ $# -ge 2 ] || usage; SCALE=$2; shift 2 ;;
    --duration) [ $# -ge 2 ] || usage; DURATION=$2; shift 2 ;;
    --connections) [ $# -ge 2 ] || usage; CONNS=$2; shift 2 ;;
    --no-pin) PIN=0; shift ;;
    --profile) [ $# -ge 2 ] || usage; PROFILE=$2; shift 2 ;;
    --no-append) APPEND=0; shift ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) usage ;;
  esac
done
# wrk and nginx are needed by this script only: installed here, not by ops/setup.sh.
if ! command -v wrk >/dev/null || ! { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; }; then
  [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null ||
    die "wrk and nginx are needed: apt-get install -y wrk nginx"
  log "installing wrk and nginx"
  env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600 install \
    --no-install-recommends wrk nginx >&2 || die "apt-get install wrk nginx failed"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || die "nginx not found: apt-get install -y nginx"
command -v curl >/dev/null || die "curl not found: apt-get install -y curl"
if [ "$PROFILE" -gt 0 ]; then
  command -v perf >/dev/null || die "perf not found (apt-get install -y linux-perf)"
fi
if [ "$PIN" = 1 ] && [ "$(nproc)" -lt 2 ]; then
  log "fewer than 2 CPUs: not pinning"
  PIN=0
fi
SERVER_CPU=()
CLIENT_CPU=()
if [ "$PIN" = 1 ]; then
  SERVER_CPU=(taskset -c 1)
  CLIENT_CPU=(taskset -c 0)
fi

SERVE_PID=
NGINX_PID=
api_cleanup() {
  # Our own children only, by pid.
  [ -n "$SERVE_PID" ] && kill -TERM "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
  [ -n "$NGINX_PID" ] && kill -QUIT "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
  return 0
}

bench_setup
trap 'api_cleanup; bench_cleanup' EXIT
bench_broker
bench_fill "$EVENTS" "$SCALE"
log "gpuledger ingest --until-end --unsigned"
LEDGER=$WORK/ledger
bench_ingest "$LEDGER"
log "ledger: $ING_HEAD entries from $ING_CONSUMED messages"
# The broker is no longer needed: stop it so it does not compete for the CPUs.
bash "$ROOT/ops/kafka/stop.sh" --env-file "$WORK/kafka.env" >/dev/null 2>&1 || true

# --- settlement store, institution with the largest invoice -------------------------------
log "settle: catching the settlement store up"
"$GPULEDGER" settle --db "$LEDGER" --period "$PERIOD" --document invoices --format json \
  -o "$WORK/invoices.json" >"$WORK/catchup.log" 2>&1 ||
  { tail -20 "$WORK/catchup.log" >&2; die "settle failed"; }
INST=$(jq -r '[.invoices[] | {id: .institution_id, ms: (.totals.gpu_ms | tonumber)}] |
              max_by(.ms) | .id' "$WORK/invoices.json")
[ -n "$INST" ] && [ "$INST" != null ] || die "no invoice in $WORK/invoices.json"
INV_PATH=/v1/periods/$PERIOD/invoices/$INST

# --- gpuledger serve ----------------------------------------------------------------------
# CPU seconds (user + system) a process has used so far.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }
# Waits until process $1 uses < 2% of a CPU over each of two consecutive seconds.
wait_idle() {
  local pid=$1 quiet=0 a b
  for _ in $(seq 1 300); do
    a=$(cpu_secs "$pid"); sleep 1; b=$(cpu_secs "$pid")
    if [ "$(echo "$b - $a < 0.02" | bc -l)" = 1 ]; then
      quiet=$((quiet + 1)); [ "$quiet" -ge 2 ] && return 0
    else
      quiet=0
    fi
  done
  die "process $pid did not become idle within 300 s"
}

TOKEN=$("$GPULEDGER" tokens add --file "$WORK/tokens" --role finance --name bench 2>/dev/null) ||
  die "tokens add failed"
log "serve: starting (--threads 1)"
"${SERVER_CPU[@]}" "$GPULEDGER" serve --db "$LEDGER" --tokens "$WORK/tokens" \
  --listen 127.0.0.1:0 --port-file "$WORK/serve.port" --threads 1 --rate-limit 0 \
  </dev/null >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 300); do
  [ -s "$WORK/serve.port" ] && break
  kill -0 "$SERVE_PID" 2>/dev/null || { tail -20 "$WORK/serve.log" >&2; die "serve exited at start"; }
  sleep 0.2
done
[ -s "$WORK/serve.port" ] || die "serve did not write its port within 60 s"
API_URL=http://127.0.0.1:$(cat "$WORK/serve.port")
for _ in $(seq 1 600); do
  ready=$(curl -sf "$API_URL/readyz" | jq -r 'select(.status == "ready" and
            .settled_through == .ledger_head and .ledger_head > 0) | .ledger_head' || true)
  [ -n "$ready" ] && break
  sleep 0.5
done
[ -n "$ready" ] || die "serve did not catch up with the ledger within 300 s"
log "serve: ready at $API_URL; waiting for the start-up chain verification to finish"
wait_idle "$SERVE_PID"

BODY=$WORK/www$INV_PATH
mkdir -p "$(dirname "$BODY")"
curl -sS -f -H "Authorization: Bearer $TOKEN" -D "$WORK/api.headers" -o "$BODY" \
  "$API_URL$INV_PATH" || die "GET $INV_PATH failed"
CTYPE=$(sed -n 's/^[Cc]ontent-[Tt]ype: *//p' "$WORK/api.headers" | tr -d '\r')
[ "$CTYPE" = application/json ] || die "GET $INV_PATH: Content-Type '$CTYPE', not application/json"
BODY_BYTES=$(wc -c <"$BODY")
jq -e --arg id "$INST" '.institution_id == $id' "$BODY" >/dev/null ||
  die "GET $INV_PATH did not return $INST's invoice"
log "invoice of $INST: $BODY_BYTES bytes of $CTYPE"

# --- nginx on the same bytes --------------------------------------------------------------
NGINX_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
# ops/bench/api.sh: one worker serving $INV_PATH from $WORK/www
user $(id -un);
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 30s;
  keepalive_requests 100000000;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  types { }
  default_type $CTYPE;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $WORK/www;
    location / {
      add_header Cache-Control no-store;
      add_header X-Content-Type-Options nosniff;
    }
  }
}
EOF
"${SERVER_CPU[@]}" "$NGINX" -p "$WORK/nginx" -e "$WORK/nginx/error.log" \
  -c "$WORK/nginx/nginx.conf" -g 'daemon off;' </dev/null >"$WORK/nginx/stdout.log" 2>&1 &
NGINX_PID=$!
NGINX_URL=http://127.0.0.1:$NGINX_PORT
for _ in $(seq 1 50); do
  curl -sf -o /dev/null "$NGINX_URL$INV_PATH" && break
  kill -0 "$NGINX_PID" 2>/dev/null || { cat "$WORK/nginx/error.log" >&2; die "nginx exited at start"; }
  sleep 0.2
done
curl -sS -f -H "Authorization: Bearer $TOKEN" -D "$WORK/nginx.headers" -o "$WORK/nginx.body" \
  "$NGINX_URL$INV_PATH" || { cat "$WORK/nginx/error.log" >&2; die "nginx does not serve $INV_PATH"; }
cmp -s "$BODY" "$WORK/nginx.body" || die "nginx serves different bytes"
NGINX_CTYPE=$(sed -n 's/^[Cc]ontent-[Tt]ype: *//p' "$WORK/nginx.headers" | tr -d '\r')
[ "$NGINX_CTYPE" = "$CTYPE" ] || die "nginx's Content-Type is '$NGINX_CTYPE', not '$CTYPE'"

# --- wrk ----------------------------------------------------------------------------------
cat >"$WORK/report.lua" <<'EOF'
-- one line for ops/bench/api.sh: counts, errors, latency percentiles in microseconds
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d sock_errors=%d non2xx=%d p50_us=%d p99_us=%d mean_us=%.0f max_us=%d\n",
    summary.requests, summary.duration, summary.bytes, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
EOF
WRK_ARGS=(-t1 -c"$CONNS" --latency -H "Authorization: Bearer $TOKEN" -s "$WORK/report.lua")
WRK_SHOWN="wrk -t1 -c$CONNS -d${DURATION}s --latency -H 'Authorization: Bearer …'"
# run_wrk NAME URL: warm-up, then the measured run; sets <NAME>_{RPS,P50,P99,BPR}
run_wrk() {
  local name=$1 url=$2 out=$WORK/wrk-$1.log line
  "${CLIENT_CPU[@]}" wrk "${WRK_ARGS[@]}" -d"${WARMUP}s" "$url" >"$WORK/wrk-$name-warmup.log" 2>&1 ||
    { cat "$WORK/wrk-$name-warmup.log" >&2; die "wrk warm-up against $name failed"; }
  "${CLIENT_CPU[@]}" wrk "${WRK_ARGS[@]}" -d"${DURATION}s" "$url" >"$out" 2>&1 ||
    { cat "$out" >&2; die "wrk against $name failed"; }
  line=$(grep '^BENCH ' "$out") || { cat "$out" >&2; die "wrk printed no BENCH line"; }
  val() { echo "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
  [ "$(val non2xx)" = 0 ] && [ "$(val sock_errors)" = 0 ] ||
    { cat "$out" >&2; die "wrk against $name saw errors or non-2xx responses"; }
  [ "$(val requests)" -gt 0 ] || die "wrk against $name made no requests"
  printf -v "${name}_RPS" '%s' "$(div "$(val requests)" "$(echo "$(val duration_us) / 1000000" | bc -l)")"
  printf -v "${name}_P50" '%s' "$(val p50_us)"
  printf -v "${name}_P99" '%s' "$(val p99_us)"
  printf -v "${name}_BPR" '%s' "$(( $(val bytes) / $(val requests) ))"
  log "$name: $(val requests) requests in $(val duration_us) µs, p50 $(val p50_us) µs, p99 $(val p99_us) µs"
}
log "wrk: nginx ($NGINX_URL$INV_PATH)"
run_wrk NGINX "$NGINX_URL$INV_PATH"
log "wrk: gpuledger serve ($API_URL$INV_PATH)"
run_wrk API "$API_URL$INV_PATH"
SERVE_RSS_KB=$(sed -n 's/^VmHWM:\s*\([0-9]*\) kB/\1/p' "/proc/$SERVE_PID/status")

# --- table --------------------------------------------------------------------------------
met() { if "$@"; then echo met; else echo "**missed**"; fi; }
lt() { [ "$(echo "$1 < $2" | bc -l)" = 1 ]; }
ms() { printf '%.2f' "$(echo "$1 / 1000" | bc -l)"; }
T1=$(met ge "$API_RPS" "$(echo "0.5 * $NGINX_RPS" | bc -l)")
T2=$(met lt "$API_P99" 5000)
if [ "$PIN" = 1 ]; then
  PINNING="each server pinned to CPU 1 and wrk to CPU 0 (\`taskset\`)"
else
  PINNING="not pinned: servers and wrk share the CPUs"
fi
TABLE=$WORK/table.md
{
  printf '%s usage events simulated at `--scale %s` → ledger of %s entries; GET `%s` (%s, %s bytes, ' \
    "$(fmt0 "$EVENTS")" "$SCALE" "$(fmt0 "$ING_HEAD")" "/v1/periods/$PERIOD/invoices/<largest>" \
    "$INST" "$(fmt0 "$BODY_BYTES")"
  printf 'finance token). Both servers on the same %s-CPU machine as wrk: %s; `gpuledger serve --threads 1`, ' \
    "$(nproc)" "$PINNING"
  printf 'nginx %s with one worker, access_log off, sendfile on, no keep-alive request limit. ' \
    "$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')"
  printf 'Same wrk run for both (wrk %s): `%s URL`, after a %s s warm-up.\n\n' \
    "$(dpkg-query -W -f '${Version}' wrk 2>/dev/null || echo '?')" "$WRK_SHOWN" "$WARMUP"
  echo '| server | requests/s | p50 | p99 | bytes per response | as % of nginx (requests/s) |'
  echo '|---|---:|---:|---:|---:|---:|'
  printf '| A. nginx, the same bytes as a static file | %s | %s ms | %s ms | %s | — |\n' \
    "$(fmt0 "$NGINX_RPS")" "$(ms "$NGINX_P50")" "$(ms "$NGINX_P99")" "$(fmt0 "$NGINX_BPR")"
  printf '| B. gpuledger serve (peak RSS %s MiB) | %s | %s ms | %s ms | %s | %s |\n' \
    "$(echo "$SERVE_RSS_KB / 1024" | bc)" "$(fmt0 "$API_RPS")" "$(ms "$API_P50")" \
    "$(ms "$API_P99")" "$(fmt0 "$API_BPR")" "$(pct "$API_RPS" "$NGINX_RPS")"
  echo
  echo '| target | needed | gpuledger serve | verdict |'
  echo '|---|---:|---:|---|'
  printf '| ≥ 50%% of nginx'"'"'s requests/s | %s requests/s | %s requests/s (%s) | %s |\n' \
    "$(fmt0 "$(echo "0.5 * $NGINX_RPS" | bc -l)")" "$(fmt0 "$API_RPS")" \
    "$(pct "$API_RPS" "$NGINX_RPS")" "$T1"
  printf '| p99 < 5 ms (at %s connections) | < 5.00 ms | %s ms (nginx: %s ms) | %s |\n' \
    "$CONNS" "$(ms "$API_P99")" "$(ms "$NGINX_P99")" "$T2"
} >"$TABLE"
echo
cat "$TABLE"
[ "$APPEND" = 1 ] && bench_append "$TABLE" "API"

# --- optional profile ---------------------------------------------------------------------
if [ "$PROFILE" -gt 0 ]; then
  log "profile: wrk against serve, perf record --call-graph dwarf on serve for $PROFILE s"
  "${CLIENT_CPU[@]}" wrk "${WRK_ARGS[@]}" -d"$((PROFILE + 3))s" "$API_URL$INV_PATH" \
    >"$WORK/wrk-profile.log" 2>&1 &
  wpid=$!
  sleep 1
  perf record -F 999 --call-graph dwarf,16384 -o "$WORK/perf.data" -p "$SERVE_PID" \
    -- sleep "$PROFILE" >"$WORK/perf-record.log" 2>&1 || true
  wait "$wpid" || true
  # Beast's and Asio's template names run to kilobytes: cut every line.
  echo '--- inclusive (children), gpuledger functions, libc, kernel send ---' >&2
  perf report -i "$WORK/perf.data" --stdio --children -g none --percent-limit 2 2>/dev/null |
    grep -v '^#' | grep -v '^$' | grep 'gpuledger::\|sendmsg\|recvmsg\|epoll_wait\|malloc\|operator new' |
    cut -c1-160 | head -40 >&2 || true
  echo '--- by shared object ---' >&2
  perf report -i "$WORK/perf.data" --stdio --no-children -g none --sort dso 2>/dev/null |
    grep -v '^#' | grep -v '^$' | grep '%' | head -8 >&2 || true
  echo '--- flat (self) ---' >&2
  perf report -i "$WORK/perf.data" --stdio --no-children -g none --percent-limit 1 2>/dev/null |
    grep -v '^#' | grep -v '^$' | cut -c1-160 | head -30 >&2 || true
fi
exit 0
