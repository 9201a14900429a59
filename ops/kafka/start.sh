#!/usr/bin/env bash
# ops/kafka/start.sh [--env-file PATH]
#
# Start a throwaway single-node Apache Kafka (KRaft) broker on 127.0.0.1 in a fresh run
# directory, wait until it answers metadata requests, and print on stdout:
#   KAFKA_BOOTSTRAP=127.0.0.1:PORT
#   KAFKA_RUN_DIR=/tmp/gpuledger-kafka.XXXXXX
#   KAFKA_PID=12345
# (also written to PATH with --env-file). The broker keeps running after this script
# exits; stop it with  ops/kafka/stop.sh RUN_DIR  or  ops/kafka/stop.sh --env-file PATH.
#
# Failure (jars cannot be fetched, broker does not start within KAFKA_START_TIMEOUT)
# is exit 1 with a message and the broker log tail on stderr; whatever this script
# started is killed. Environment: see ops/kafka/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROG=ops/kafka/start.sh

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }
usage() { printf 'usage: %s [--env-file PATH]\n' "$PROG" >&2; }

ENV_FILE=
while [ $# -gt 0 ]; do
  case $1 in
    --env-file) [ $# -ge 2 ] || { usage; exit 2; }; ENV_FILE=$2; shift 2 ;;
    --env-file=*) ENV_FILE=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage; exit 2 ;;
  esac
done
if [ -n "$ENV_FILE" ]; then
  [ -d "$(dirname "$ENV_FILE")" ] || die "directory of --env-file $ENV_FILE does not exist"
  if [ -f "$ENV_FILE" ]; then
    # Overwriting the env file of a broker that still runs would orphan that broker.
    old_run=$(sed -n 's/^KAFKA_RUN_DIR=//p' "$ENV_FILE" | tail -n 1)
    old_pid=$(sed -n 's/^KAFKA_PID=//p' "$ENV_FILE" | tail -n 1)
    old_cmd=
    if [ -n "$old_pid" ]; then old_cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$old_pid/cmdline" || true); fi
    if [ -n "$old_run" ] && [[ $old_cmd == *" kafka.Kafka $old_run/server.properties"* ]]; then
      die "$ENV_FILE belongs to a broker that is still running (pid $old_pid); stop it first: ops/kafka/stop.sh --env-file $ENV_FILE"
    fi
  fi
  rm -f "$ENV_FILE"            # never leave a stale file from an earlier run behind
fi

TIMEOUT=${KAFKA_START_TIMEOUT:-90}
case $TIMEOUT in ''|*[!0-9]*) die "KAFKA_START_TIMEOUT must be whole seconds, got '$TIMEOUT'" ;; esac

# --- prerequisites: java, kcat, jars -----------------------------------------------------
export KAFKA_LIBS=${KAFKA_LIBS:-$HERE/libs}
"$HERE/fetch.sh" ||
  die "Kafka broker prerequisites are missing (see above). Fix that, then run ops/kafka/fetch.sh until it succeeds."
LIBS=$(cd "$KAFKA_LIBS" && pwd)
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java

# --- fresh run directory ---------------------------------------------------------------
if [ -n "${KAFKA_RUN_DIR:-}" ]; then
  mkdir -p "$KAFKA_RUN_DIR" || die "cannot create KAFKA_RUN_DIR=$KAFKA_RUN_DIR"
  [ -z "$(ls -A "$KAFKA_RUN_DIR")" ] ||
    die "KAFKA_RUN_DIR=$KAFKA_RUN_DIR is not empty; every start needs a fresh directory"
  RUN=$(cd "$KAFKA_RUN_DIR" && pwd)
else
  RUN=$(mktemp -d "${TMPDIR:-/tmp}/gpuledger-kafka.XXXXXX") ||
    die "cannot create a run directory under ${TMPDIR:-/tmp}"
fi
# The KEY=VALUE output must be usable both by `source` and by naive parsers.
case $RUN in
  *[!A-Za-z0-9._/+@,:=-]*)
    [ -n "${KAFKA_RUN_DIR:-}" ] || rmdir "$RUN"
    die "run directory '$RUN' contains spaces or shell-special characters; set TMPDIR or KAFKA_RUN_DIR to a plain path" ;;
esac
: >"$RUN/.gpuledger-kafka-run"          # marker: stop.sh only deletes directories that have it
mkdir -p "$RUN/logs" "$RUN/tmp"
LOGS=$RUN/logs

# --- cleanup if we do not get to "ready" -------------------------------------------------
PID=
READY=0
kill_broker() {
  [ -n "$PID" ] || return 0
  kill -TERM "$PID" 2>/dev/null || return 0
  for _ in $(seq 1 40); do alive "$PID" || return 0; sleep 0.25; done
  kill -KILL "$PID" 2>/dev/null || true
  for _ in $(seq 1 40); do alive "$PID" || return 0; sleep 0.25; done
}
on_exit() {
  local rc=$?
  [ "$READY" = 1 ] && return 0
  kill_broker
  rm -f "$RUN/kafka.pid"
  if [ "$rc" -ge 128 ]; then            # interrupted: nothing worth keeping
    rm -rf "$RUN"
  elif [ "$rc" -ne 0 ] && [ -d "$RUN" ]; then
    log "run directory kept for debugging: $RUN (logs in $LOGS; remove with ops/kafka/stop.sh $RUN)"
  fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# alive PID: process exists and is not a zombie
alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [ "${st%% *}" != Z ]
}

FAIL_LOGS=("$LOGS/kafka.out" "$LOGS/server.log")    # tails shown by fail()
fail() {
  local f
  for f in "${FAIL_LOGS[@]}"; do
    if [ -s "$f" ]; then
      printf '%s: ---- last lines of %s ----\n' "$PROG" "$f" >&2
      tail -n 30 "$f" >&2
    fi
  done
  # The cause is usually the first ERROR (plus its exception line), long before the tail.
  if grep -q -E '^\[[^]]*\] (ERROR|FATAL) ' "$LOGS/server.log" 2>/dev/null; then
    printf '%s: ---- first errors in %s ----\n' "$PROG" "$LOGS/server.log" >&2
    grep -m 3 -A 1 -E '^\[[^]]*\] (ERROR|FATAL) ' "$LOGS/server.log" >&2 || true
  fi
  die "$*"
}

# --- ports ------------------------------------------------------------------------------
# Random ports in 20000-32767 (below Linux's default ephemeral range) that nothing listens
# on. Another process can still grab one before the broker binds; that case is detected
# ("Address already in use") and retried with new ports.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {      # pick_port VAR [AVOID]
  local p
  for _ in $(seq 1 200); do
    p=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
    p=$((20000 + p % 12768))
    if [ "$p" != "${2:-}" ] && ! port_busy "$p"; then
      printf -v "$1" '%s' "$p"
      return 0
    fi
  done
  die "no free TCP port found on 127.0.0.1"
}

# Kafka cluster ids are 16 random bytes in URL-safe base64 without padding; like
# Uuid.randomUuid(), avoid a leading '-' (it would look like a command-line option).
new_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    case $id in -*) ;; *) printf '%s' "$id"; return 0 ;; esac
  done
}

read -r -a HEAP <<<"${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
COMMON_OPTS=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError -XX:-UsePerfData
  -Djava.awt.headless=true "-Djava.io.tmpdir=$RUN/tmp" "-Dkafka.logs.dir=$LOGS"
  "-Dlog4j.configuration=file:$HERE/log4j.properties")
CP="$LIBS/*"

START=$SECONDS
PORT=${KAFKA_PORT:-}
CPORT=${KAFKA_CONTROLLER_PORT:-}
for attempt in 1 2 3; do
  [ -n "${KAFKA_PORT:-}" ] || pick_port PORT "$CPORT"
  [ -n "${KAFKA_CONTROLLER_PORT:-}" ] || pick_port CPORT "$PORT"
  [ "$PORT" != "$CPORT" ] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"

  tmpl=$(<"$HERE/server.properties.in")
  tmpl=${tmpl//@PORT@/$PORT}
  tmpl=${tmpl//@CPORT@/$CPORT}
  tmpl=${tmpl//@DATA@/$RUN/data}
  printf '%s\n' "$tmpl" >"$RUN/server.properties"

  rm -rf "$RUN/data"
  if ! "$JAVA" -Xmx256m "${COMMON_OPTS[@]}" -cp "$CP" kafka.tools.StorageTool format \
         -t "$(new_cluster_id)" -c "$RUN/server.properties" >"$LOGS/format.log" 2>&1; then
    FAIL_LOGS=("$LOGS/format.log" "$LOGS/server.log")
    fail "formatting the KRaft storage in $RUN/data failed (java: $JAVA)"
  fi

  # New session (setsid) and SIGHUP ignored (nohup): the broker outlives this script and
  # the caller's terminal. The wrapper writes the PID it execs into and closes every fd
  # other than 0-2, so a caller reading our output through a pipe is not held open.
  rm -f "$RUN/kafka.pid"
  # shellcheck disable=SC2016  # $$ and $1 are for the inner bash
  setsid nohup bash -c '
      for fd in /proc/$$/fd/*; do
        fd=${fd##*/}
        case $fd in 0|1|2) ;; *) eval "exec $fd>&-" 2>/dev/null || true ;; esac
      done
      echo $$ >"$1.tmp" && mv "$1.tmp" "$1"
      shift
      exec "$@"' kafka-broker "$RUN/kafka.pid" \
    "$JAVA" "${HEAP[@]}" "${COMMON_OPTS[@]}" -cp "$CP" kafka.Kafka "$RUN/server.properties" \
    >"$LOGS/kafka.out" 2>&1 </dev/null &
  LAUNCHER=$!
  for _ in $(seq 1 100); do [ -s "$RUN/kafka.pid" ] && break; sleep 0.05; done
  PID=$(cat "$RUN/kafka.pid" 2>/dev/null) || PID=$LAUNCHER

  # Ready = our broker logged "Kafka Server started" (so it bound its own ports: a stranger
  # on the same port cannot fool us) and answers a metadata request.
  retry=0
  while :; do
    if ! alive "$PID"; then
      if grep -q 'Address already in use' "$LOGS/server.log" "$LOGS/kafka.out" 2>/dev/null &&
         [ "$attempt" -lt 3 ] && [ -z "${KAFKA_PORT:-}${KAFKA_CONTROLLER_PORT:-}" ]; then
        log "port $PORT or $CPORT was taken before the broker bound it; retrying with new ports"
        mv "$LOGS/server.log" "$LOGS/server.log.attempt$attempt" 2>/dev/null || true
        PID=
        retry=1
        break
      fi
      PID=
      fail "the Kafka broker exited during startup (logs above, full logs in $LOGS)"
    fi
    if grep -q 'Kafka Server started' "$LOGS/server.log" 2>/dev/null &&
       kcat -L -b "127.0.0.1:$PORT" -m 2 >/dev/null 2>&1; then
      break
    fi
    if [ $((SECONDS - START)) -ge "$TIMEOUT" ]; then
      fail "the Kafka broker did not become ready within $TIMEOUT s (KAFKA_START_TIMEOUT); full logs in $LOGS"
    fi
    sleep 0.2
  done
  [ "$retry" = 1 ] || break
done
[ -n "$PID" ] || fail "the Kafka broker could not start"

OUT=$(printf 'KAFKA_BOOTSTRAP=127.0.0.1:%s\nKAFKA_RUN_DIR=%s\nKAFKA_PID=%s\n' "$PORT" "$RUN" "$PID")
printf '%s\n' "$OUT" >"$RUN/kafka.env"
if [ -n "$ENV_FILE" ]; then
  if ! { printf '%s\n' "$OUT" >"$ENV_FILE.tmp.$$" && mv "$ENV_FILE.tmp.$$" "$ENV_FILE"; }; then
    fail "cannot write --env-file $ENV_FILE"
  fi
fi
READY=1
log "broker ready at 127.0.0.1:$PORT after $((SECONDS - START)) s (pid $PID, logs in $LOGS)"
printf '%s\n' "$OUT"
