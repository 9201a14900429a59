#!/usr/bin/env bash
# ops/setup.sh — make this Debian machine ready to build and run gpuledger, then build it.
#   * installs the Debian packages the build and the scripts need (only those missing);
#   * fetches the Kafka broker jars from Maven Central (ops/kafka/fetch.sh);
#   * configures and builds with CMake + Ninja into $BUILD_DIR (default: build/), -j2.
# Idempotent: a second run installs nothing and rebuilds only what changed.
# Environment: BUILD_DIR, BUILD_TYPE (default RelWithDebInfo), JOBS (default 2),
#              GPULEDGER_SANITIZE=1 for an ASan+UBSan build with clang (its fuzzers are real
#              libFuzzer binaries), GPULEDGER_VENV (default $BUILD_DIR/venv).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}
JOBS=${JOBS:-2}

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

PACKAGES=(
  build-essential cmake ninja-build pkg-config python3
  librdkafka-dev librocksdb-dev rocksdb-tools libprotobuf-dev protobuf-compiler
  libboost-dev libssl-dev zlib1g-dev libgtest-dev libgmock-dev googletest libabsl-dev
  libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev libsimdjson-dev prometheus-cpp-dev libcivetweb-dev libjemalloc-dev
  kcat openjdk-17-jre-headless maven clang-format
  clang libclang-rt-14-dev
  python3-venv chromium openssl curl
  # A Korean face for the pages and their PDFs (NanumGothic); Gnumeric's ssconvert, the
  # spreadsheet the CSV test opens every CSV with; pdffonts, which names a PDF's embedded fonts.
  fonts-nanum gnumeric poppler-utils
  # Boost.Locale reads the message catalogs; GNU gettext's msgfmt compiles them at build time.
  libboost-locale-dev gettext
  # The documents' HTML is rendered from Mustache templates (settlement/templates/).
  libkainjow-mustache-dev
  # systemd-analyze checks the service units of ops/systemd/ (tests/cli/test_cli.py).
  systemd
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "not a Debian machine; install: ${missing[*]}"
  [ "$(id -u)" -eq 0 ] || die "run as root (or install first: apt-get install ${missing[*]})"
  log "installing ${missing[*]}"
  apt=(env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600)
  "${apt[@]}" update >&2 || die "apt-get update failed: check the network to Debian's mirrors"
  "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2 ||
    die "apt-get install failed for: ${missing[*]}"
else
  log "all ${#PACKAGES[@]} Debian packages present"
fi

"$ROOT/ops/kafka/fetch.sh"
# The browser and API-fuzzing tests' Python packages (pinned), in a venv beside the build.
GPULEDGER_VENV=${GPULEDGER_VENV:-$BUILD_DIR/venv} "$ROOT/ops/python-env.sh" >/dev/null

log "configuring $BUILD_DIR ($BUILD_TYPE)"
sanitize=(-DGPULEDGER_SANITIZE=OFF)
# The sanitized build uses clang (Debian's, with libFuzzer from libclang-rt-14-dev).
[ "${GPULEDGER_SANITIZE:-0}" = 1 ] && sanitize=(-DGPULEDGER_SANITIZE=ON -DCMAKE_CXX_COMPILER=clang++)
cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE="$BUILD_TYPE" "${sanitize[@]}" >&2 ||
  die "cmake configure failed (see above)"
# When a compiler cache is in use (ccache via CMAKE_CXX_COMPILER_LAUNCHER), paths under this
# checkout are hashed relative to it, so a fresh clone elsewhere reuses the objects of another.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$ROOT}
log "building with -j$JOBS"
cmake --build "$BUILD_DIR" -j "$JOBS" >&2 || die "build failed (see above)"
log "built $BUILD_DIR/cli/gpuledger"
