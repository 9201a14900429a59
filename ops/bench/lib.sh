# ops/bench/lib.sh — shared pieces of ops/bench/*.sh (sourced, not run).
#
# bench_setup             temp dir ($WORK), cleanup trap (broker stopped, temp dir removed)
# bench_broker            starts a throwaway broker; sets $BROKERS
# bench_fill N SCALE      `gpuledger simulate` N usage events into topics "$PREFIX*"; sets $TOPICS
# bench_ingest DB         `gpuledger ingest --until-end --unsigned` into DB (synced commits);
#                         sets ING_SECS ING_RSS_KB ING_CONSUMED ING_HEAD
# bench_append FILE TITLE appends a heading, the machine, the commit, the command and FILE
#                         (a Markdown table) to docs/BENCHMARKS.md
# Environment: GPULEDGER (binary, default build/cli/gpuledger), BENCH_TMPDIR (parent of the
# temp dir, default $TMPDIR or /tmp), BENCH_KEEP=1 keeps the temp dir.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
GPULEDGER=${GPULEDGER:-$ROOT/build/cli/gpuledger}
DB_BENCH=$(command -v db_bench || command -v rocksdb_db_bench || true)
BENCH_CMDLINE=
WORK=
BROKERS=
PREFIX=bench-$$.   # ingest allows one segment: [A-Za-z0-9_-]{1,63} then '.'
TOPICS=

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

bench_cleanup() {
  if [ -n "$WORK" ] && [ -f "$WORK/kafka.env" ]; then
    bash "$ROOT/ops/kafka/stop.sh" --env-file "$WORK/kafka.env" >/dev/null 2>&1 || true
  fi
  if [ -n "$WORK" ] && [ -d "$WORK" ] && [ -z "${BENCH_KEEP:-}" ]; then rm -rf "$WORK"; fi
}

bench_setup() {
  [ -x "$GPULEDGER" ] || die "no gpuledger binary at $GPULEDGER (cmake --build build --target gpuledger)"
  [ -n "$DB_BENCH" ] || die "db_bench not found: apt-get install -y rocksdb-tools"
  command -v kcat >/dev/null || die "kcat not found: apt-get install -y kcat"
  [ -x /usr/bin/time ] || die "/usr/bin/time not found: apt-get install -y time"
  command -v jq >/dev/null || die "jq not found: apt-get install -y jq"
  local parent=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
  WORK=$(mktemp -d "$parent/gpuledger-bench.XXXXXX")
  # The commit measured is the one at the start (a long run may outlive later commits).
  BENCH_COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  BENCH_DIRTY=$(git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || echo ' (working tree modified)')
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  log "work directory $WORK"
}

bench_broker() {
  bash "$ROOT/ops/kafka/start.sh" --env-file "$WORK/kafka.env" >/dev/null
  BROKERS=$(sed -n 's/^KAFKA_BOOTSTRAP=//p' "$WORK/kafka.env")
  [ -n "$BROKERS" ] || die "the broker did not report KAFKA_BOOTSTRAP"
}

# Topics of our prefix (before ingest runs: it adds <prefix>gpuledger.rejected).
bench_topics() {
  kcat -L -b "$BROKERS" | sed -n "s/^ *topic \"\\(${PREFIX%.}\\.[^\"]*\\)\".*/\\1/p" | sort
}

bench_fill() {
  local n=$1 scale=$2
  log "simulate: $n usage events at --scale $scale into ${PREFIX}*"
  local t0 t1
  t0=$(date +%s.%N)
  "$GPULEDGER" simulate --brokers "$BROKERS" --topic-prefix "$PREFIX" --scale "$scale" \
    --max-events "$n" >"$WORK/simulate.log" 2>&1 || { tail -20 "$WORK/simulate.log" >&2; die "simulate failed"; }
  t1=$(date +%s.%N)
  SIM_SECS=$(echo "$t1 - $t0" | bc -l)
  TOPICS=$(bench_topics | tr '\n' ' ')
  [ -n "$TOPICS" ] || die "no topics with prefix $PREFIX after simulate"
  log "topics: $TOPICS"
}

# peak RSS (kB) and wall seconds from a /usr/bin/time -v log
rss_kb() { sed -n 's/^\s*Maximum resident set size (kbytes): //p' "$1"; }

# bench_ingest DB [EXTRA INGEST ARGS...]
bench_ingest() {
  local db=$1 t0 t1
  shift
  t0=$(date +%s.%N)
  /usr/bin/time -v -o "$WORK/ingest.time" "$GPULEDGER" ingest --brokers "$BROKERS" \
    --topic-prefix "$PREFIX" --db "$db" --until-end --unsigned "$@" >"$WORK/ingest.log" 2>&1 ||
    { tail -20 "$WORK/ingest.log" >&2; die "ingest failed"; }
  t1=$(date +%s.%N)
  ING_SECS=$(echo "$t1 - $t0" | bc -l)
  ING_RSS_KB=$(rss_kb "$WORK/ingest.time")
  ING_CONSUMED=$(sed -n 's/.*info done: consumed \([0-9]*\) .*/\1/p' "$WORK/ingest.log" | tail -1)
  ING_HEAD=$(sed -n 's/.*stopped at ledger head seq \([0-9]*\).*/\1/p' "$WORK/ingest.log" | tail -1)
  [ -n "$ING_CONSUMED" ] && [ -n "$ING_HEAD" ] || die "cannot read ingest's summary from $WORK/ingest.log"
}

machine() {
  local cpu ram fs
  cpu=$(sed -n 's/^model name\s*:\s*//p' /proc/cpuinfo | head -1)
  ram=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
  fs=$(findmnt -n -T "$WORK" -o FSTYPE,SOURCE 2>/dev/null | head -1 | tr -s ' ')
  local dev blk=
  dev=$(df --output=source "$WORK" 2>/dev/null | tail -1)
  if [ -b "$dev" ]; then
    blk=$(lsblk -ndo NAME,MODEL,ROTA,SIZE "$dev" 2>/dev/null | tr -s ' ')
    [ -n "$blk" ] && blk=", device (lsblk NAME MODEL ROTA SIZE): $blk"
  fi
  printf -- '- machine: %s CPUs (`nproc`), %s, %s RAM, kernel %s\n' "$(nproc)" "$cpu" "$ram" "$(uname -r)"
  printf -- '- temp dir: %s on %s%s\n' "$(dirname "$WORK")" "${fs:-unknown}" "$blk"
  printf -- '- gpuledger commit: %s%s; db_bench: RocksDB %s; kcat %s\n' \
    "${BENCH_COMMIT:-unknown}" "${BENCH_DIRTY:-}" \
    "$(dpkg-query -W -f '${Version}' librocksdb7.8 2>/dev/null || dpkg-query -W -f '${Version}' rocksdb-tools 2>/dev/null || echo '?')" \
    "$(dpkg-query -W -f '${Version}' kcat 2>/dev/null || echo '?')"
}

bench_append() {
  local table=$1 title=$2 out=$ROOT/docs/BENCHMARKS.md
  {
    printf '\n### %s — %s\n\n' "$title" "$(date -u '+%Y-%m-%d %H:%M UTC')"
    machine
    printf -- '- command: `%s`\n\n' "$BENCH_CMDLINE"
    cat "$table"
  } >>"$out"
  log "appended to docs/BENCHMARKS.md"
}

# float helpers
div() { echo "scale=6; $1 / $2" | bc -l; }
fmt0() { printf '%.0f' "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
pct() { printf '%.0f%%' "$(echo "100 * $1 / $2" | bc -l)"; }
ge() { [ "$(echo "$1 >= $2" | bc -l)" = 1 ]; }

# perf report of $1 (perf.data) to stderr: gpuledger's functions inclusive, shared objects, and
# the flat self-time list. $2: an extra grep pattern for the inclusive list.
bench_perf_report() {
  local data=$1 extra=${2:-'rocksdb::DBImpl::Write'}
  echo '--- inclusive (children), gpuledger functions ---' >&2
  perf report -i "$data" --stdio --children -g none --percent-limit 3 2>/dev/null |
    grep -v '^#' | grep -v '^$' | grep "gpuledger::\|$extra" | head -40 >&2 || true
  echo '--- by shared object ---' >&2
  perf report -i "$data" --stdio --no-children -g none --sort dso 2>/dev/null |
    grep -v '^#' | grep -v '^$' | grep '%' | head -8 >&2 || true
  echo '--- flat (self) ---' >&2
  perf report -i "$data" --stdio --no-children -g none --percent-limit 1.5 2>/dev/null |
    grep -v '^#' | grep -v '^$' | head -30 >&2 || true
}
