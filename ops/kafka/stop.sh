#!/usr/bin/env bash
# ops/kafka/stop.sh [--keep] RUN_DIR
# ops/kafka/stop.sh [--keep] --env-file PATH     (the file written by start.sh --env-file)
#
# Stop the broker that start.sh started in RUN_DIR: SIGTERM (clean shutdown, up to
# KAFKA_STOP_TIMEOUT s, default 30), then SIGKILL; wait until it is gone; then delete
# RUN_DIR unless --keep is given or KAFKA_KEEP_RUN_DIR is set to something non-empty.
# With --keep, RUN_DIR (its data, server.properties with its ports, kafka.env) and the env
# file stay, so that  ops/kafka/start.sh --resume RUN_DIR  starts the same broker again.
# Only the PID recorded in RUN_DIR/kafka.pid is signalled, and only if that process
# really is the kafka.Kafka started with RUN_DIR/server.properties: other Kafka
# processes (other runs, other users) are never touched.
# Idempotent: an already stopped broker, a removed RUN_DIR or a missing env file is
# fine (exit 0).
set -euo pipefail

PROG=ops/kafka/stop.sh
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }
usage() { printf 'usage: %s [--keep] RUN_DIR | %s [--keep] --env-file PATH\n' "$PROG" "$PROG" >&2; }

KEEP=
args=()
for arg in "$@"; do
  if [ "$arg" = --keep ]; then KEEP=1; else args+=("$arg"); fi
done
set -- "${args[@]+"${args[@]}"}"
RUN=
case ${1:-} in
  --env-file|--env-file=*)
    if [ "$1" = --env-file ]; then
      [ $# -eq 2 ] || { usage; exit 2; }
      ENV_FILE=$2
    else
      [ $# -eq 1 ] || { usage; exit 2; }
      ENV_FILE=${1#*=}
    fi
    if [ ! -e "$ENV_FILE" ]; then
      log "$ENV_FILE does not exist: nothing to stop"
      exit 0
    fi
    RUN=$(sed -n 's/^KAFKA_RUN_DIR=//p' "$ENV_FILE" | tail -n 1)
    [ -n "$RUN" ] || die "$ENV_FILE has no KAFKA_RUN_DIR= line"
    ;;
  -h|--help) usage; exit 0 ;;
  ''|-*) usage; exit 2 ;;
  *) [ $# -eq 1 ] || { usage; exit 2; }; RUN=$1 ;;
esac

STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
case $STOP_TIMEOUT in ''|*[!0-9]*) die "KAFKA_STOP_TIMEOUT must be whole seconds, got '$STOP_TIMEOUT'" ;; esac

if [ ! -d "$RUN" ]; then
  log "$RUN does not exist: already stopped"
  exit 0
fi
RUN=$(cd "$RUN" && pwd)
[ -e "$RUN/.gpuledger-kafka-run" ] ||
  die "$RUN is not a run directory made by ops/kafka/start.sh (no .gpuledger-kafka-run marker); not touching it"

# alive PID: process exists and is not a zombie
alive() {
  local st
  st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  st=${st##*) }
  [ "${st%% *}" != Z ]
}
# ours PID: it is the broker of this run (guards against a recycled PID)
ours() {
  local cmd
  cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
  case $cmd in *" kafka.Kafka $RUN/server.properties"*) return 0 ;; *) return 1 ;; esac
}
wait_gone() {      # wait_gone PID SECONDS
  local end=$((SECONDS + $2))
  while alive "$1"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.2
  done
}

PID=$(cat "$RUN/kafka.pid" 2>/dev/null || true)
case $PID in
  '') log "no broker PID recorded in $RUN: not running" ;;
  *[!0-9]*) die "$RUN/kafka.pid does not hold a PID ('$PID')" ;;
  *)
    if alive "$PID" && ! ours "$PID"; then
      log "PID $PID is alive but is not the broker of $RUN (PID reused?); not touching it"
    elif alive "$PID"; then
      kill -TERM "$PID" 2>/dev/null || true
      if ! wait_gone "$PID" "$STOP_TIMEOUT"; then
        log "broker $PID ignored SIGTERM for $STOP_TIMEOUT s; sending SIGKILL"
        kill -KILL "$PID" 2>/dev/null || true
        wait_gone "$PID" 30 || die "broker $PID is still alive after SIGKILL"
      fi
      log "broker $PID stopped"
    else
      log "broker $PID is not running: already stopped"
    fi
    rm -f "$RUN/kafka.pid"
    ;;
esac

if [ -n "$KEEP" ]; then
  log "kept $RUN (data, ports, kafka.env); start the same broker again with: ops/kafka/start.sh --resume $RUN"
elif [ -n "${KAFKA_KEEP_RUN_DIR:-}" ]; then
  log "keeping $RUN (KAFKA_KEEP_RUN_DIR is set)"
else
  rm -rf "$RUN"
fi
