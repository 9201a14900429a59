#!/usr/bin/env bash
# ops/kafka/start.sh [--sasl] [--env-file PATH]
# ops/kafka/start.sh --resume RUN_DIR [--env-file PATH]
#
# Start a throwaway single-node Apache Kafka (KRaft) broker on 127.0.0.1 in a fresh run
# directory, wait until it answers metadata requests, and print on stdout:
#   KAFKA_BOOTSTRAP=127.0.0.1:PORT
#   KAFKA_RUN_DIR=/tmp/gpuledger-kafka.XXXXXX
#   KAFKA_PID=12345
# (also written to PATH with --env-file). The broker keeps running after this script
# exits; stop it with  ops/kafka/stop.sh RUN_DIR  or  ops/kafka/stop.sh --env-file PATH.
#
# --resume RUN_DIR starts again the broker of a run directory that `stop.sh --keep` (or
# KAFKA_KEEP_RUN_DIR) left behind: same RUN_DIR/server.properties, so the same ports and the
# same topics and messages; the storage is not formatted again. Readiness and output are
# those of a fresh start (with the new PID). If it fails, RUN_DIR and its data are kept.
#
# --sasl (or KAFKA_SASL=1) adds a SASL_PLAINTEXT listener with SASL/PLAIN users admin,
# gpuledger-operator, gpuledger-ingest, csp-a and csp-b (random passwords, one librdkafka
# properties file per user in RUN_DIR/sasl/) and turns on the ACL authorizer
# (StandardAuthorizer, allow.everyone.if.no.acl.found=false; super users: User:admin and the
# PLAINTEXT listener's User:ANONYMOUS, which the broker and controller use between themselves).
# It also prints KAFKA_SASL_BOOTSTRAP=127.0.0.1:PORT and KAFKA_SASL_DIR=RUN_DIR/sasl.
# ops/kafka/acls.sh grants the ACLs of docs/OPERATIONS.md. A resumed broker keeps its mode.
#
# Failure (jars cannot be fetched, broker does not start within KAFKA_START_TIMEOUT)
# is exit 1 with a message and the broker log tail on stderr; whatever this script
# started is killed. Environment: see ops/kafka/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROG=ops/kafka/start.sh

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }
usage() { printf 'usage: %s [--sasl] [--resume RUN_DIR] [--env-file PATH]\n' "$PROG" >&2; }

ENV_FILE=
RESUME=
SASL=
case ${KAFKA_SASL:-} in ''|0) ;; 1) SASL=1 ;; *) die "KAFKA_SASL must be 1 or unset, got '$KAFKA_SASL'" ;; esac
while [ $# -gt 0 ]; do
  case $1 in
    --sasl) SASL=1; shift ;;
    --env-file) [ $# -ge 2 ] || { usage; exit 2; }; ENV_FILE=$2; shift 2 ;;
    --env-file=*) ENV_FILE=${1#*=}; shift ;;
    --resume) { [ $# -ge 2 ] && [ -n "$2" ]; } || { usage; exit 2; }; RESUME=$2; shift 2 ;;
    --resume=?*) RESUME=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage; exit 2 ;;
  esac
done

# alive PID: process exists and is not a zombie
alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [ "${st%% *}" != Z ]
}

# --- --resume: the stopped broker of an existing run directory ---------------------------
RUN=
if [ -n "$RESUME" ]; then
  [ -d "$RESUME" ] || die "--resume $RESUME: no such directory"
  RUN=$(cd "$RESUME" && pwd)
  [ -e "$RUN/.gpuledger-kafka-run" ] ||
    die "--resume $RUN: not a run directory made by ops/kafka/start.sh (no .gpuledger-kafka-run marker)"
  case $RUN in
    *[!A-Za-z0-9._/+@,:=-]*) die "--resume $RUN: the path contains spaces or shell-special characters" ;;
  esac
  if [ -n "${KAFKA_RUN_DIR:-}" ] &&
     [ "$(cd "$KAFKA_RUN_DIR" 2>/dev/null && pwd)" != "$RUN" ]; then
    die "KAFKA_RUN_DIR=$KAFKA_RUN_DIR and --resume $RUN name different run directories; unset KAFKA_RUN_DIR"
  fi
  [ -f "$RUN/server.properties" ] ||
    die "--resume $RUN: no server.properties (the first start did not get that far); start a fresh broker instead"
  [ -f "$RUN/data/meta.properties" ] ||
    die "--resume $RUN: no formatted storage in $RUN/data (the first start did not get that far); start a fresh broker instead"
  # The broker must find its data where server.properties says, i.e. in this directory.
  [ "$(sed -n 's/^log\.dirs=//p' "$RUN/server.properties")" = "$RUN/data" ] ||
    die "--resume $RUN: server.properties does not name log.dirs=$RUN/data (was the directory moved?)"
  PORT=$(sed -n 's|^listeners=\(.*,\)*PLAINTEXT://127\.0\.0\.1:\([0-9][0-9]*\).*|\2|p' "$RUN/server.properties")
  CPORT=$(sed -n 's|^listeners=.*CONTROLLER://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$RUN/server.properties")
  { [ -n "$PORT" ] && [ -n "$CPORT" ]; } ||
    die "--resume $RUN: cannot read the PLAINTEXT and CONTROLLER ports from listeners= in server.properties"
  # The mode is the run directory's: a SASL broker resumes with its listener and users.
  SPORT=$(sed -n 's|^listeners=.*SASL_PLAINTEXT://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$RUN/server.properties")
  if [ -n "$SPORT" ]; then
    SASL=1
    [ -f "$RUN/sasl/admin.properties" ] ||
      die "--resume $RUN: a SASL broker without its credentials in $RUN/sasl (removed?); start a fresh broker instead"
  elif [ -n "$SASL" ]; then
    die "--resume $RUN: this broker was started without --sasl; a resumed broker keeps its mode"
  fi
  if [ -n "${KAFKA_PORT:-}" ] && [ "$KAFKA_PORT" != "$PORT" ]; then
    die "KAFKA_PORT=$KAFKA_PORT, but the broker of $RUN listens on $PORT; a resumed broker keeps its ports (unset KAFKA_PORT)"
  fi
  if [ -n "${KAFKA_CONTROLLER_PORT:-}" ] && [ "$KAFKA_CONTROLLER_PORT" != "$CPORT" ]; then
    die "KAFKA_CONTROLLER_PORT=$KAFKA_CONTROLLER_PORT, but the controller of $RUN listens on $CPORT; a resumed broker keeps its ports (unset KAFKA_CONTROLLER_PORT)"
  fi
  # One resume at a time per run directory (the lock is released when this script exits;
  # the broker does not inherit it: its launcher closes every fd other than 0-2).
  exec 8>"$RUN/.start.lock"
  flock -n 8 || die "another ops/kafka/start.sh --resume $RUN is running"
  # Its broker must be stopped: whatever kafka.pid says, no process may run its config.
  for proc in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null <"$proc/cmdline" || true)
    if [[ $cmd == *" kafka.Kafka $RUN/server.properties"* ]] && alive "${proc#/proc/}"; then
      die "the broker of $RUN is still running (pid ${proc#/proc/}); stop it first: ops/kafka/stop.sh --keep $RUN"
    fi
  done
  rm -f "$RUN/kafka.pid"
fi

if [ -n "$ENV_FILE" ]; then
  [ -d "$(dirname "$ENV_FILE")" ] || die "directory of --env-file $ENV_FILE does not exist"
  old_run=
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
  if [ -n "$RESUME" ] && [ "$old_run" = "$RUN" ]; then
    # The file of the run being resumed stays until it is replaced: should the resume fail,
    # stop.sh --env-file still finds (and removes) the run directory.
    :
  else
    rm -f "$ENV_FILE"          # never leave a stale file from an earlier run behind
  fi
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
if [ -n "$RESUME" ]; then
  :                                     # RUN was checked above
elif [ -n "${KAFKA_RUN_DIR:-}" ]; then
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
if [ -n "$RESUME" ]; then
  # The earlier runs' logs move aside (server.log is appended to, and readiness is read from
  # it): logs/server.log.runN and logs/kafka.out.runN, N = 1 for the first run.
  n=1
  while [ -e "$LOGS/server.log.run$n" ] || [ -e "$LOGS/kafka.out.run$n" ]; do n=$((n + 1)); done
  for f in server.log kafka.out; do
    if [ -e "$LOGS/$f" ]; then mv "$LOGS/$f" "$LOGS/$f.run$n"; fi
  done
fi

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
  if [ -n "$RESUME" ]; then             # its data is never ours to delete
    if [ -d "$RUN" ]; then
      log "run directory kept with its data: $RUN (logs in $LOGS); retry with ops/kafka/start.sh --resume $RUN, or remove it with ops/kafka/stop.sh $RUN"
    fi
  elif [ "$rc" -ge 128 ]; then          # interrupted: nothing worth keeping
    rm -rf "$RUN"
  elif [ "$rc" -ne 0 ] && [ -d "$RUN" ]; then
    log "run directory kept for debugging: $RUN (logs in $LOGS; remove with ops/kafka/stop.sh $RUN)"
  fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

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

# --sasl: a SASL_PLAINTEXT listener on $SPORT, PLAIN users with random passwords, the ACL
# authorizer. Each user's librdkafka properties (gpuledger --kafka-config, kcat -F) go to
# RUN/sasl/USER.properties; the administrator's for Kafka's Java tools (--command-config) to
# RUN/sasl/admin.java.properties. The passwords are [A-Za-z0-9_-]: nothing to quote.
SASL_USERS=(admin gpuledger-operator gpuledger-ingest csp-a csp-b)
add_sasl() {      # add_sasl SERVER_PROPERTIES
  local conf=$1 dir=$RUN/sasl user pw jaas
  rm -rf "$dir"
  (umask 077 && mkdir "$dir")
  jaas='org.apache.kafka.common.security.plain.PlainLoginModule required'
  for user in "${SASL_USERS[@]}"; do
    pw=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
    jaas="$jaas user_$user=\"$pw\""
    (umask 077 && printf '%s\n' \
      "# SASL/PLAIN credentials of User:$user on the test broker 127.0.0.1:$SPORT (ops/kafka/start.sh --sasl)" \
      'security.protocol=SASL_PLAINTEXT' 'sasl.mechanism=PLAIN' \
      "sasl.username=$user" "sasl.password=$pw" >"$dir/$user.properties")
    if [ "$user" = admin ]; then
      (umask 077 && printf '%s\n' 'security.protocol=SASL_PLAINTEXT' 'sasl.mechanism=PLAIN' \
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"admin\" password=\"$pw\";" \
        >"$dir/admin.java.properties")
    fi
  done
  sed -i \
    -e "s|^listeners=PLAINTEXT://127.0.0.1:$PORT,|listeners=PLAINTEXT://127.0.0.1:$PORT,SASL_PLAINTEXT://127.0.0.1:$SPORT,|" \
    -e "s|^advertised.listeners=.*|&,SASL_PLAINTEXT://127.0.0.1:$SPORT|" \
    -e "s|^listener.security.protocol.map=.*|&,SASL_PLAINTEXT:SASL_PLAINTEXT|" "$conf"
  grep -q "^listeners=.*SASL_PLAINTEXT://127.0.0.1:$SPORT," "$conf" ||
    die "server.properties.in: its listeners= line is not PLAINTEXT://127.0.0.1:@PORT@,..."
  (umask 077 && cat >>"$conf" <<EOF_SASL

# --sasl: clients authenticate with SASL/PLAIN on the SASL_PLAINTEXT listener and are authorized
# by ACLs. The PLAINTEXT and CONTROLLER listeners stay unauthenticated (User:ANONYMOUS): the
# broker and its controller talk over them, so ANONYMOUS is a super user, as is User:admin.
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=$jaas;
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:ANONYMOUS
EOF_SASL
  )
}

read -r -a HEAP <<<"${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
COMMON_OPTS=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError -XX:-UsePerfData
  -Djava.awt.headless=true "-Djava.io.tmpdir=$RUN/tmp" "-Dkafka.logs.dir=$LOGS"
  "-Dlog4j.configuration=file:$HERE/log4j.properties")
CP="$LIBS/*"

START=$SECONDS
if [ -z "$RESUME" ]; then               # (a resumed broker keeps the ports read above)
  PORT=${KAFKA_PORT:-}
  CPORT=${KAFKA_CONTROLLER_PORT:-}
  SPORT=
fi
for attempt in 1 2 3; do
  if [ -n "$RESUME" ]; then
    # Same config, same data: no new ports, no formatting. The ports must be free again
    # (a connection left in TIME_WAIT does not count: Java binds with SO_REUSEADDR).
    for p in "$PORT" "$CPORT" ${SPORT:+"$SPORT"}; do
      if port_busy "$p"; then
        die "port $p of the broker of $RUN is in use by another process; a resumed broker keeps its ports: free it and retry"
      fi
    done
  else
    [ -n "${KAFKA_PORT:-}" ] || pick_port PORT "$CPORT"
    [ -n "${KAFKA_CONTROLLER_PORT:-}" ] || pick_port CPORT "$PORT"
    [ "$PORT" != "$CPORT" ] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"

    tmpl=$(<"$HERE/server.properties.in")
    tmpl=${tmpl//@PORT@/$PORT}
    tmpl=${tmpl//@CPORT@/$CPORT}
    tmpl=${tmpl//@DATA@/$RUN/data}
    printf '%s\n' "$tmpl" >"$RUN/server.properties"
    if [ -n "$SASL" ]; then
      pick_port SPORT "$PORT"
      [ "$SPORT" != "$CPORT" ] || pick_port SPORT "$CPORT"
      add_sasl "$RUN/server.properties"
    fi

    rm -rf "$RUN/data"
    if ! "$JAVA" -Xmx256m "${COMMON_OPTS[@]}" -cp "$CP" kafka.tools.StorageTool format \
           -t "$(new_cluster_id)" -c "$RUN/server.properties" >"$LOGS/format.log" 2>&1; then
      FAIL_LOGS=("$LOGS/format.log" "$LOGS/server.log")
      fail "formatting the KRaft storage in $RUN/data failed (java: $JAVA)"
    fi
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
         [ "$attempt" -lt 3 ] && [ -z "$RESUME${KAFKA_PORT:-}${KAFKA_CONTROLLER_PORT:-}" ]; then
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
       kcat -L -b "127.0.0.1:$PORT" -m 2 >/dev/null 2>&1 &&
       { [ -z "$SASL" ] ||
         kcat -L -b "127.0.0.1:$SPORT" -F "$RUN/sasl/admin.properties" -m 2 >/dev/null 2>&1; }; then
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
if [ -n "$SASL" ]; then
  OUT+=$(printf '\nKAFKA_SASL_BOOTSTRAP=127.0.0.1:%s\nKAFKA_SASL_DIR=%s\n' "$SPORT" "$RUN/sasl")
fi
printf '%s\n' "$OUT" >"$RUN/kafka.env"
if [ -n "$ENV_FILE" ]; then
  if ! { printf '%s\n' "$OUT" >"$ENV_FILE.tmp.$$" && mv "$ENV_FILE.tmp.$$" "$ENV_FILE"; }; then
    fail "cannot write --env-file $ENV_FILE"
  fi
fi
READY=1
log "broker ${RESUME:+resumed and }ready at 127.0.0.1:$PORT${SASL:+ (SASL_PLAINTEXT with ACLs at 127.0.0.1:$SPORT)} after $((SECONDS - START)) s (pid $PID, logs in $LOGS)"
printf '%s\n' "$OUT"
