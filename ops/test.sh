#!/usr/bin/env bash
# ops/test.sh — set up, build, and run every test with CTest: unit tests, and integration
# tests against a real Kafka broker that CTest starts (fixture `kafka`) and stops itself.
# Extra arguments go to ctest, e.g.:  ops/test.sh -L unit     ops/test.sh -R Ledger
# Environment: BUILD_DIR (default build/), JOBS (default 2), GPULEDGER_SANITIZE=1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
[ "${GPULEDGER_SANITIZE:-0}" = 1 ] && BUILD_DIR=${BUILD_DIR%/}-asan
export BUILD_DIR

"$ROOT/ops/setup.sh"
cd "$BUILD_DIR"
exec ctest --output-on-failure --timeout 900 -j "${JOBS:-2}" "$@"
