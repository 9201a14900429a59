#!/usr/bin/env bash
# ops/soak.sh [--duration MINUTES] [--kills-per-round N]
#
# The heavy fault tests of the suite (docs/RELIABILITY.md), repeated until MINUTES have passed
# (default 60), each round with a new seed:
#   - ingest_kill_test: N SIGKILLs per round with serve and settle beside ingest (default 50;
#     GPULEDGER_KILL_ROUNDS), then 12 kills each followed by a power cut (GPULEDGER_POWER_CUTS),
#     and the check that a ledger without fsync is caught,
#   - corruption_test (torn and garbled WAL, SST and export bit flips),
#   - disk_full_test (needs root),
#   - pause_test (consumer paused past its session timeout),
#   - clock_skew_test (ingest's clock ±1 h and stepped ±1 h mid-stream),
#   - broker_restart_test (the broker killed and restarted under a running ingest),
#   - LedgerTest.ReadOnlyOpenSeesEveryCommitMadeBeforeItBegan (readers opening the ledger while
#     100 writer processes crash or close one after another; no open may see an older head).
# One throwaway Kafka broker for the whole soak (ops/kafka/start.sh; stopped on exit). Needs a
# build (ops/setup.sh; BUILD_DIR, default build/). Prints a line per test run and, at the end,
# a table of rounds, kills and failures per test for docs/RELIABILITY.md's "last soak" column.
# Exit 1 if any run failed; its log is kept under the printed work directory.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
PROG=ops/soak.sh
DURATION=60
KILLS=50
usage() { echo "usage: $PROG [--duration MINUTES] [--kills-per-round N]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --duration) [ $# -ge 2 ] || usage; DURATION=$2; shift 2 ;;
    --kills-per-round) [ $# -ge 2 ] || usage; KILLS=$2; shift 2 ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) usage ;;
  esac
done
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || { echo "$PROG: --duration wants whole minutes" >&2; exit 2; }
[[ $KILLS =~ ^[1-9][0-9]*$ ]] || { echo "$PROG: --kills-per-round wants a positive count" >&2; exit 2; }
G=$BUILD_DIR/cli/gpuledger
KILL_TEST=$BUILD_DIR/tests/ingest_kill_test
[ -x "$G" ] && [ -x "$KILL_TEST" ] || { echo "$PROG: no build in $BUILD_DIR (run ops/setup.sh)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpuledger-soak.XXXXXX")
ENV_FILE=$WORK/kafka.env
cleanup() { bash "$ROOT/ops/kafka/stop.sh" --env-file "$ENV_FILE" >/dev/null 2>&1 || true; }
trap cleanup EXIT
bash "$ROOT/ops/kafka/start.sh" --env-file "$ENV_FILE" >/dev/null
export GPULEDGER_KAFKA_ENV=$ENV_FILE GPULEDGER_BIN=$G
echo "$PROG: soaking for $DURATION min; logs in $WORK" >&2

declare -A runs fails
kills=0
cuts=0
end=$(( $(date +%s) + DURATION * 60 ))
round=0
run_one() {  # NAME COMMAND...
  local name=$1; shift
  local log=$WORK/$name-$round.log
  runs[$name]=$(( ${runs[$name]:-0} + 1 ))
  if "$@" >"$log" 2>&1; then
    echo "round $round $name: ok"
    [ -n "${KEEP_LOGS:-}" ] || rm -f "$log"
  else
    fails[$name]=$(( ${fails[$name]:-0} + 1 ))
    echo "round $round $name: FAILED (log: $log)"
  fi
}
while [ "$(date +%s)" -lt "$end" ]; do
  round=$((round + 1))
  seed=$(od -An -tu8 -N8 /dev/urandom | tr -d ' ')
  log=$WORK/kill-$round.log
  runs[kill]=$(( ${runs[kill]:-0} + 1 ))
  if GPULEDGER_TEST_SEED=$seed GPULEDGER_KILL_ROUNDS=$KILLS "$KILL_TEST" >"$log" 2>&1; then
    n=$(sed -n 's/^\([0-9]*\) SIGKILLs.*/\1/p' "$log" | awk '{s += $1} END {print s + 0}')
    c=$(sed -n 's/^\([0-9]*\) power cuts:.*/\1/p' "$log" | tail -1)
    kills=$((kills + ${n:-0}))
    cuts=$((cuts + ${c:-0}))
    echo "round $round kill (seed $seed): ok, ${n:-?} SIGKILLs, ${c:-?} power cuts"
    [ -n "${KEEP_LOGS:-}" ] || rm -f "$log"
  else
    fails[kill]=$(( ${fails[kill]:-0} + 1 ))
    echo "round $round kill (seed $seed): FAILED (log: $log)"
  fi
  [ "$(date +%s)" -lt "$end" ] || break
  run_one corruption bash "$ROOT/tests/crash/corruption_test.sh"
  if [ "$(id -u)" -eq 0 ]; then run_one disk_full bash "$ROOT/tests/crash/disk_full_test.sh"; fi
  run_one pause bash "$ROOT/tests/crash/pause_test.sh"
  GPULEDGER_CLOCK_SHIFT_LIB=$BUILD_DIR/tests/libclock_shift.so \
    run_one clock_skew bash "$ROOT/tests/crash/clock_skew_test.sh"
  run_one broker_restart "$BUILD_DIR/tests/broker_restart_test"
  run_one readonly_open "$BUILD_DIR/ledger/ledger_test" \
    --gtest_filter=LedgerTest.ReadOnlyOpenSeesEveryCommitMadeBeforeItBegan
done

echo
echo "| test | runs | failed |"
echo "|---|---:|---:|"
failed=0
for name in kill corruption disk_full pause clock_skew broker_restart readonly_open; do
  [ -n "${runs[$name]:-}" ] || continue
  printf '| %s | %s | %s |\n' "$name" "${runs[$name]}" "${fails[$name]:-0}"
  failed=$((failed + ${fails[$name]:-0}))
done
echo
echo "$round rounds in $DURATION min, $kills SIGKILLs and $cuts power cuts in all, $failed failed run(s)"
[ "$failed" -eq 0 ]
