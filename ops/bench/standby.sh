#!/usr/bin/env bash
# ops/bench/standby.sh [--events N] [--scale S] [--no-append]
#
# What the ledger topic costs and carries (docs/RELIABILITY.md, "Standbys and failover";
# docs/SCALING.md), all in one run on one throwaway broker:
#   1. pre-fills topics bench-<pid>.* with `gpuledger simulate --max-events N --scale S`;
#   2. C: `gpuledger ingest --until-end --unsigned` into a fresh ledger, without a ledger topic;
#   3. D: the same into another fresh ledger with `--node a`: every commit published to the
#      ledger topic in a Kafka transaction before it is written;
#   4. E: `gpuledger ledger follow --until-end` into a fresh standby from that topic; its head hash
#      must equal D's (the run fails otherwise);
#   5. the ledger topic's size on the broker's disk (its partition directory) and the ledger's
#      (RocksDB, `ledger stats`), per entry.
# Prints a Markdown table and appends it (machine, commit, command) to docs/BENCHMARKS.md unless
# --no-append. Figures are from this machine; no test asserts them.
set -euo pipefail
PROG=ops/bench/standby.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BENCH_CMDLINE="ops/bench/standby.sh${*:+ $*}"

EVENTS=500000
SCALE=0.05
APPEND=1
usage() { echo "usage: $PROG [--events N] [--scale S] [--no-append]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --events) [ $# -ge 2 ] || usage; EVENTS=$2; shift 2 ;;
    --scale) [ $# -ge 2 ] || usage; SCALE=$2; shift 2 ;;
    --no-append) APPEND=0; shift ;;
    -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
    *) usage ;;
  esac
done

bench_setup
bench_broker
bench_fill "$EVENTS" "$SCALE"

stats() { "$GPULEDGER" ledger stats --db "$1" --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)[\"$2\"])"; }

log "C: gpuledger ingest --until-end --unsigned, no ledger topic"
bench_ingest "$WORK/ledger-c"
C_SECS=$ING_SECS C_MSGS=$ING_CONSUMED C_HEAD=$ING_HEAD C_RSS=$ING_RSS_KB
C_DISK=$(stats "$WORK/ledger-c" disk_bytes)

log "D: gpuledger ingest --until-end --unsigned --node a (the ledger topic)"
bench_ingest "$WORK/ledger-d" --node a
D_SECS=$ING_SECS D_MSGS=$ING_CONSUMED D_HEAD=$ING_HEAD D_RSS=$ING_RSS_KB
D_COMMITS=$(grep -c . <(kcat -C -b "$BROKERS" -t "${PREFIX}gpuledger.ledger" -o beginning -e -q -X isolation.level=read_committed -f 'x\n' 2>/dev/null) || true)

log "E: gpuledger ledger follow --until-end into a fresh standby"
t0=$(date +%s.%N)
/usr/bin/time -v -o "$WORK/follow.time" "$GPULEDGER" ledger follow --brokers "$BROKERS" \
  --topic-prefix "$PREFIX" --db "$WORK/standby" --until-end >"$WORK/follow.out" 2>"$WORK/follow.log" ||
  { tail -20 "$WORK/follow.log" >&2; die "ledger follow failed"; }
t1=$(date +%s.%N)
E_SECS=$(echo "$t1 - $t0" | bc -l)
E_RSS=$(rss_kb "$WORK/follow.time")
[ "$(stats "$WORK/standby" head_hash)" = "$(stats "$WORK/ledger-d" head_hash)" ] ||
  die "the standby's head hash differs from the writer's"
E_HEAD=$(stats "$WORK/standby" head_seq)

# The topic's partition directory on the broker.
KAFKA_LOG_DIRS="$(sed -n 's/^KAFKA_RUN_DIR=//p' "$WORK/kafka.env")/data"
TOPIC_DIR=$(find "$KAFKA_LOG_DIRS" -maxdepth 1 -type d -name "${PREFIX}gpuledger.ledger-0" 2>/dev/null | head -1)
[ -n "$TOPIC_DIR" ] || die "cannot find the ledger topic's directory under $KAFKA_LOG_DIRS"
TOPIC_BYTES=$(du -sb "$TOPIC_DIR" | cut -f1)
D_DISK=$(stats "$WORK/ledger-d" disk_bytes)

TABLE=$WORK/table.md
{
  printf '%s usage events simulated at `--scale %s` (%s messages). Ingest with its defaults (group commits of up to 5,000 messages or 200 ms, synced), `--unsigned`; broker, ingest and follower share the machine.\n\n' \
    "$(fmt0 "$EVENTS")" "$SCALE" "$(fmt0 "$C_MSGS")"
  echo '| run | messages/s | entries | seconds | peak RSS |'
  echo '|---|---:|---:|---:|---:|'
  printf '| C. ingest, no ledger topic | %s | %s | %.2f | %s MiB |\n' \
    "$(fmt0 "$(div "$C_MSGS" "$C_SECS")")" "$(fmt0 "$C_HEAD")" "$C_SECS" "$((C_RSS / 1024))"
  printf '| D. ingest `--node a` (a transaction per commit, %s commits) | %s (%s of C) | %s | %.2f | %s MiB |\n' \
    "$(fmt0 "$D_COMMITS")" "$(fmt0 "$(div "$D_MSGS" "$D_SECS")")" \
    "$(pct "$(div "$D_MSGS" "$D_SECS")" "$(div "$C_MSGS" "$C_SECS")")" "$(fmt0 "$D_HEAD")" "$D_SECS" "$((D_RSS / 1024))"
  printf '| E. `ledger follow --until-end` (same head hash as D) | %s entries/s | %s | %.2f | %s MiB |\n' \
    "$(fmt0 "$(div "$E_HEAD" "$E_SECS")")" "$(fmt0 "$E_HEAD")" "$E_SECS" "$((E_RSS / 1024))"
  echo
  echo '| storage | bytes | per entry |'
  echo '|---|---:|---:|'
  printf '| ledger topic on the broker (lz4, one replica) | %s | %s |\n' "$(fmt0 "$TOPIC_BYTES")" "$(div "$TOPIC_BYTES" "$D_HEAD" | xargs printf '%.0f')"
  printf '| ledger D (RocksDB, `ledger stats` disk_bytes) | %s | %s |\n' "$(fmt0 "$D_DISK")" "$(div "$D_DISK" "$D_HEAD" | xargs printf '%.0f')"
  printf '| ledger C (no topic) | %s | %s |\n' "$(fmt0 "$C_DISK")" "$(div "$C_DISK" "$C_HEAD" | xargs printf '%.0f')"
} >"$TABLE"
echo
cat "$TABLE"
[ "$APPEND" = 1 ] && bench_append "$TABLE" "Standby (the ledger topic)"
exit 0
