#!/usr/bin/env bash
# ops/test.sh — set up, build, and run every test with CTest: unit tests, and integration
# tests against a real Kafka broker that CTest starts (fixture `kafka`) and stops itself; then
# the same again in the sanitized build ($BUILD_DIR-asan: clang, ASan+UBSan, the fuzzers as
# libFuzzer binaries fuzzing for a bounded time).
# Extra arguments go to ctest in both passes, e.g.:  ops/test.sh -L unit     ops/test.sh -R Ledger
# Environment: BUILD_DIR (default build/), JOBS (default 2),
#   GPULEDGER_SANITIZE  unset: both passes; 0: the normal build only; 1: the sanitized one only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
BUILD_DIR=${BUILD_DIR%/}
JOBS=${JOBS:-2}

log() { printf 'test: %s\n' "$*" >&2; }

# The normal pass: GCC, the default build.
normal_pass() {
  # `|| return`: called as `normal_pass || rc=$?`, where set -e does not stop a failed set-up.
  BUILD_DIR=$BUILD_DIR GPULEDGER_SANITIZE=0 "$ROOT/ops/setup.sh" || return
  (cd "$BUILD_DIR" && ctest --output-on-failure --timeout 900 -j "$JOBS" "$@")
}

# The sanitized pass. Any ASan, UBSan or LeakSanitizer report fails the process that makes it,
# and every report is also written under $dir/sanitizer-reports: a report from a process whose
# exit status no test looks at (a server stopped by a fixture, a child of a crash test) fails
# the pass as well. Leaks inside Debian's uninstrumented libraries would be suppressed, each
# with its reason, in tests/sanitizers/lsan.supp. The Python venv of the normal build is shared.
sanitized_pass() {
  local dir=$BUILD_DIR-asan start=$SECONDS rc=0
  BUILD_DIR=$dir GPULEDGER_SANITIZE=1 GPULEDGER_VENV=${GPULEDGER_VENV:-$BUILD_DIR/venv} \
    "$ROOT/ops/setup.sh" || return
  log "sanitized build ready in $((SECONDS - start)) s; running the suite under ASan+UBSan"
  local reports=$dir/sanitizer-reports
  rm -rf "$reports" && mkdir -p "$reports"
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:check_initialization_order=1:log_path=$reports/asan}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan}
  export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$ROOT/tests/sanitizers/lsan.supp:print_suppressions=0}
  start=$SECONDS
  (cd "$dir" && ctest --output-on-failure --timeout 1800 -j "$JOBS" "$@") || rc=$?
  log "sanitized suite took $((SECONDS - start)) s"
  if [ -n "$(ls -A "$reports")" ]; then
    for f in "$reports"/*; do
      log "sanitizer report $f:"
      head -n 60 "$f" >&2
    done
    log "FAILED: $(ls "$reports" | wc -l) sanitizer report(s) in $reports"
    rc=1
  fi
  return $rc
}

case "${GPULEDGER_SANITIZE:-}" in
  0) normal_pass "$@" ;;
  1) BUILD_DIR=${BUILD_DIR%-asan} sanitized_pass "$@" ;;
  *)
    rc=0
    normal_pass "$@" || rc=$?
    sanitized_pass "$@" || rc=$?
    exit $rc
    ;;
esac
