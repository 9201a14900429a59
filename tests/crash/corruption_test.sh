#!/usr/bin/env bash
# Damage on disk (issue 8, item 3), through the real broker and the real binary:
#   1. a torn WAL tail: ingest SIGKILLed mid-stream, the last bytes of its newest WAL cut off;
#   2. garbled bytes inside that WAL;
#   3. a flipped byte in a table file (SST) of a cleanly closed ledger;
#   4. a flipped byte in an export file.
# For 1 and 2 the ledger must open at a consistent prefix (`ledger verify` reports a damaged log,
# exit 1, and checks the prefix before it; a torn tail reads as the log's end), resume from
# its stored offsets, and end with the same decisions and invoices as an uninterrupted run: 0
# lost, 0 doubled. For 3 and 4 the damage must be reported (exit status, a message naming it),
# and no invoice produced from the damaged ledger.
# Needs GPULEDGER_KAFKA_ENV (the test broker's env file) and GPULEDGER_BIN.
set -euo pipefail
: "${GPULEDGER_KAFKA_ENV:?}" "${GPULEDGER_BIN:?}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck disable=SC1090
. "$GPULEDGER_KAFKA_ENV"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpuledger-corruption-test.XXXXXX")
INGEST_PID=
cleanup() {
  [ -n "$INGEST_PID" ] && kill -9 "$INGEST_PID" 2>/dev/null && wait "$INGEST_PID" 2>/dev/null
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
G=$GPULEDGER_BIN
# shellcheck source=tests/crash/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export GPULEDGER_BROKERS=$KAFKA_BOOTSTRAP
export GPULEDGER_TOPIC_PREFIX="corrupt-test-$$."

# A simulated month's first 30,000 usage events (with duplicates, conflicts, overlaps and
# malformed messages mixed in): enough that ingest is still working when it is killed.
"$G" simulate --scale 0.01 --max-events 30000 >"$WORK/simulate.log" 2>&1 ||
  { tail "$WORK/simulate.log" >&2; fail "simulate failed"; }

ingest_to_end() {  # DB LOG
  "$G" ingest --db "$1" --group "g-$(basename "$1")" --until-end --unsigned \
    >>"$2" 2>&1 || { tail -20 "$2" >&2; fail "ingest into $1 failed"; }
}

# --- reference: one uninterrupted run ----------------------------------------------------
ingest_to_end "$WORK/ref" "$WORK/ref.log"
invoices "$WORK/ref" "$WORK/ref.inv" || { cat "$WORK/ref.inv.err" >&2; fail "settle on the reference failed"; }
REF_COUNTS=$(counts "$WORK/ref")
echo "reference: accepted/rejected/duplicates $REF_COUNTS"

# --- 1 and 2: a WAL cut or garbled after a SIGKILL ----------------------------------------
wal_case() {  # NAME DAMAGE(cut|garble)
  local name=$1 damage=$2 db=$WORK/$1 head=0
  "$G" ingest --db "$db" --group "g-$name" --unsigned --batch-max-messages 20 --batch-max-ms 5 \
    >"$WORK/$name.log" 2>&1 &
  INGEST_PID=$!
  # Kill it once it has committed a few hundred entries (but before the end of the stream).
  for _ in $(seq 1 400); do
    head=$(sed -n 's/.*ledger head \([0-9]*\).*/\1/p' "$WORK/$name.log" | tail -1)
    [ "${head:-0}" -ge 5000 ] && break
    sleep 0.05
  done
  kill -9 "$INGEST_PID"; wait "$INGEST_PID" 2>/dev/null || true; INGEST_PID=
  local wal
  wal=$(ls -t "$db"/*.log 2>/dev/null | head -1)
  [ -n "$wal" ] && [ -s "$wal" ] || fail "$name: no WAL with data after the kill"
  local size
  size=$(stat -c %s "$wal")
  if [ "$damage" = cut ]; then
    truncate -s $((size - size / 5)) "$wal"  # a torn tail: the last fifth of it gone
  else
    # 64 bytes of garbage in the middle of the log
    printf '%064d' 0 | tr 0 '\377' | dd of="$wal" bs=1 seek=$((size / 2)) conv=notrunc status=none
  fi
  echo "$name: killed near head ${head:-?}, WAL $(basename "$wal") of $size bytes $damage"
  # A damaged log is reported (exit 1, naming it), with the consistent prefix before it; a cut
  # that looks like an unfinished last write is read as the end of the log.
  local rc=0
  "$G" ledger verify --db "$db" >"$WORK/$name.verify" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 1 ] && grep -q 'write-ahead log is damaged' "$WORK/$name.verify" ||
      { cat "$WORK/$name.verify" >&2; fail "$name: the damaged ledger does not open at a consistent prefix"; }
  elif [ "$damage" = garble ]; then
    fail "$name: ledger verify passed a garbled write-ahead log silently"
  fi
  echo "$name: verify exit $rc at the consistent prefix before the damage: $(grep -m1 -o 'FAILED at seq [0-9]*\|head seq [0-9]*' "$WORK/$name.verify")"
  ingest_to_end "$db" "$WORK/$name.log"
  "$G" ledger verify --db "$db" >/dev/null 2>&1 || fail "$name: chain does not verify after resuming"
  [ "$(counts "$db")" = "$REF_COUNTS" ] ||
    fail "$name: accepted/rejected/duplicates $(counts "$db"), uninterrupted run $REF_COUNTS"
  invoices "$db" "$WORK/$name.inv" || fail "$name: settle failed"
  cmp -s "$WORK/ref.inv" "$WORK/$name.inv" ||
    { diff "$WORK/ref.inv" "$WORK/$name.inv" | head >&2
      fail "$name: invoices differ from the uninterrupted run"; }
  echo "$name: resumed; same counts and invoices as the uninterrupted run"
}
wal_case torn cut
wal_case garbled garble

# --- 3: a flipped byte in a table file -----------------------------------------------------
cp -r "$WORK/ref" "$WORK/flipped"
sst=$(ls -S "$WORK/flipped"/*.sst | head -1)
[ -n "$sst" ] || fail "the reference ledger has no table file"
byte=$(od -An -tu1 -j 200 -N1 "$sst" | tr -d ' ')
printf "\\x$(printf %02x $(((byte + 1) % 256)))" | dd of="$sst" bs=1 seek=200 conv=notrunc status=none
rc=0
"$G" ledger verify --db "$WORK/flipped" >"$WORK/flipped.verify" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "a flipped byte in $(basename "$sst") went unnoticed by ledger verify"
grep -qi 'corrupt\|checksum\|damaged' "$WORK/flipped.verify" ||
  fail "ledger verify did not name the damage: $(cat "$WORK/flipped.verify")"
if invoices "$WORK/flipped" "$WORK/flipped.inv"; then
  fail "settle produced invoices from a ledger with a damaged table file"
fi
echo "sst: flipped byte reported (verify exit $rc: $(grep -i -m1 'corrupt\|checksum\|damaged' "$WORK/flipped.verify" | cut -c1-120))"

# --- 4: a flipped byte in an export file ---------------------------------------------------
"$G" ledger export --db "$WORK/ref" -o "$WORK/ref.export" 2>/dev/null
"$G" ledger verify --export "$WORK/ref.export" >/dev/null 2>&1 || fail "the intact export does not verify"
size=$(stat -c %s "$WORK/ref.export")
at=$((size / 2))
byte=$(od -An -tu1 -j "$at" -N1 "$WORK/ref.export" | tr -d ' ')
printf "\\x$(printf %02x $(((byte + 1) % 256)))" | dd of="$WORK/ref.export" bs=1 seek="$at" conv=notrunc status=none
rc=0
"$G" ledger verify --export "$WORK/ref.export" >"$WORK/export.verify" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "a flipped byte in the export went unnoticed"
echo "export: flipped byte reported (exit $rc: $(grep -v '^$' "$WORK/export.verify" | tail -1 | cut -c1-120))"
echo "PASS"
