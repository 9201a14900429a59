#!/usr/bin/env bash
# tests/api/serve_fixture.sh start|stop ENV_FILE — the CTest fixture `api`: one `gpuledger
# serve` over a ledger holding the sample month, for the API, page and schema tests.
#
# start: in a fresh temp data dir, publish the sample month 2026-03 through the test broker
#   (unique topic prefix), ingest it with a signing key, close 2026-03, publish the late events
#   (so 2026-04's drafts carry adjustments to March), create one token per role, start
#   `gpuledger serve` on a free port (plain HTTP) in the background, wait until it is ready and
#   has settled the whole ledger, and write ENV_FILE (KEY=VALUE lines, values without spaces):
#     API_URL=http://127.0.0.1:PORT   API_DATA_DIR  API_SERVE_PID  API_DB  API_TOKENS_FILE
#     API_PUBLIC_KEY  API_LEDGER_HEAD  API_SERVE_LOG
#     TOKEN_OPERATOR TOKEN_FINANCE TOKEN_AUDITOR TOKEN_CSP_ALPHA TOKEN_CSP_BETA
#     TOKEN_INST_NARI TOKEN_INST_HANBIT_UNIV
#   A fixture left over from an interrupted run (ENV_FILE exists) is stopped first.
# stop: SIGTERM the server and wait for it, remove the data dir and ENV_FILE (no-op without
#   ENV_FILE).
# Needs GPULEDGER_BIN (the gpuledger binary) and, for start, GPULEDGER_KAFKA_ENV (the test
# broker's env file, from the `kafka` fixture).
set -euo pipefail

PROG=tests/api/serve_fixture.sh
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
[ $# -eq 2 ] || { echo "usage: $PROG start|stop ENV_FILE" >&2; exit 2; }
ACTION=$1
ENV_FILE=$2
: "${GPULEDGER_BIN:?GPULEDGER_BIN must name the gpuledger binary}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
G=$GPULEDGER_BIN

env_value() { sed -n "s/^$1=//p" "$ENV_FILE" | head -1; }

stop() {
  [ -f "$ENV_FILE" ] || return 0
  local pid dir
  pid=$(env_value API_SERVE_PID)
  dir=$(env_value API_DATA_DIR)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    # Not our child (started by an earlier process): poll until it is gone.
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      log "serve (pid $pid) did not stop within 20 s of SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  case $dir in
    */gpuledger-api-fixture.*) rm -rf "$dir" ;;
    "") ;;
    *) log "not removing unexpected data dir '$dir'" ;;
  esac
  rm -f "$ENV_FILE"
}

if [ "$ACTION" = stop ]; then
  stop
  echo "api fixture stopped"
  exit 0
fi
[ "$ACTION" = start ] || { echo "usage: $PROG start|stop ENV_FILE" >&2; exit 2; }
: "${GPULEDGER_KAFKA_ENV:?GPULEDGER_KAFKA_ENV must name the test broker env file}"
[ -f "$GPULEDGER_KAFKA_ENV" ] ||
  die "no broker env file $GPULEDGER_KAFKA_ENV (is the kafka fixture running?)"
stop  # a fixture left over from an interrupted run

# shellcheck disable=SC1090
. "$GPULEDGER_KAFKA_ENV"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpuledger-api-fixture.XXXXXX")
SERVE_PID=
started=0
on_exit() {
  if [ "$started" != 1 ]; then
    [ -f "$WORK/serve.log" ] && { echo "--- serve.log" >&2; tail -30 "$WORK/serve.log" >&2; }
    [ -n "$SERVE_PID" ] && kill -TERM "$SERVE_PID" 2>/dev/null && sleep 1
    rm -rf "$WORK"
  fi
}
trap on_exit EXIT

export GPULEDGER_BROKERS=$KAFKA_BOOTSTRAP GPULEDGER_DB=$WORK/ledger
export GPULEDGER_TOPIC_PREFIX="api-test-$$-$RANDOM."
GROUP="api-test-$$-$RANDOM"
run() {  # run a step quietly; on failure show its output
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 || { cat "$WORK/$name.log" >&2; die "step '$name' failed: $*"; }
}
INGEST=("$G" ingest --until-end --signing-key "$WORK/op.pem" --checkpoint-interval 200
        --group "$GROUP")

run sample python3 "$ROOT/ops/sample/make_sample.py" "$WORK/sample" --period 2026-03
run keys "$G" keys generate --private-key "$WORK/op.pem" --public-key "$WORK/op-pub.pem"
run publish-registry "$G" publish --kind registry "$WORK/sample/registry.jsonl"
run publish-usage "$G" publish --kind usage "$WORK/sample/usage.jsonl"
run ingest-1 "${INGEST[@]}"
run close "$G" settle close --period 2026-03 --wait-s 0
run ingest-2 "${INGEST[@]}"
run publish-late "$G" publish --kind usage "$WORK/sample/late.jsonl"
run ingest-3 "${INGEST[@]}"

TOKENS=$WORK/tokens
declare -A TOKEN
for role in operator finance auditor csp:csp-alpha csp:csp-beta institution:inst-nari \
            institution:inst-hanbit-univ; do
  TOKEN[$role]=$("$G" tokens add --file "$TOKENS" --role "$role" --name "api-test $role" \
    2>/dev/null) || die "tokens add --role $role failed"
done

# No rate limit: these tests make hundreds of requests a second from one address
# (test_api.py's RateLimitTest starts a limited server of its own).
setsid "$G" serve --db "$WORK/ledger" --tokens "$TOKENS" --listen 127.0.0.1:0 \
  --port-file "$WORK/port" --refresh-ms 200 --rate-limit 0 </dev/null >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 150); do
  [ -s "$WORK/port" ] && break
  kill -0 "$SERVE_PID" 2>/dev/null || die "serve exited at start"
  sleep 0.2
done
[ -s "$WORK/port" ] || die "serve did not write its port within 30 s"
URL="http://127.0.0.1:$(cat "$WORK/port")"
# Ready, and the settlement store has caught up with the whole ledger.
HEAD=$(python3 - "$URL" <<'PY'
import json, sys, time, urllib.request
url = sys.argv[1]
deadline = time.time() + 60
while time.time() < deadline:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as r:
            d = json.load(r)
        if d.get("status") == "ready" and d["ledger_head"] > 0 and \
                d["settled_through"] == d["ledger_head"]:
            print(d["ledger_head"])
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.2)
sys.exit("serve was not ready within 60 s")
PY
) || die "serve did not become ready"

{
  echo "API_URL=$URL"
  echo "API_DATA_DIR=$WORK"
  echo "API_SERVE_PID=$SERVE_PID"
  echo "API_SERVE_LOG=$WORK/serve.log"
  echo "API_DB=$WORK/ledger"
  echo "API_TOKENS_FILE=$TOKENS"
  echo "API_PUBLIC_KEY=$WORK/op-pub.pem"
  echo "API_LEDGER_HEAD=$HEAD"
  echo "TOKEN_OPERATOR=${TOKEN[operator]}"
  echo "TOKEN_FINANCE=${TOKEN[finance]}"
  echo "TOKEN_AUDITOR=${TOKEN[auditor]}"
  echo "TOKEN_CSP_ALPHA=${TOKEN[csp:csp-alpha]}"
  echo "TOKEN_CSP_BETA=${TOKEN[csp:csp-beta]}"
  echo "TOKEN_INST_NARI=${TOKEN[institution:inst-nari]}"
  echo "TOKEN_INST_HANBIT_UNIV=${TOKEN[institution:inst-hanbit-univ]}"
} >"$ENV_FILE.tmp"
mv "$ENV_FILE.tmp" "$ENV_FILE"
started=1
echo "api fixture: serving $URL (pid $SERVE_PID, ledger head $HEAD, data $WORK)"
