#!/usr/bin/env bash
# Disk full (issue 8, item 4): the ledger on a small tmpfs that fills up while ingest works.
# Ingest must stop consuming and say why (exit status 1, "No space left" in its error), keep
# a ledger that verifies, and, once space is freed and it is started again, end with the same
# counts and invoices as an uninterrupted run: 0 lost, 0 doubled.
# Needs root (mount), GPULEDGER_KAFKA_ENV (the test broker's env file) and GPULEDGER_BIN.
set -euo pipefail
: "${GPULEDGER_KAFKA_ENV:?}" "${GPULEDGER_BIN:?}"
# shellcheck disable=SC1090
. "$GPULEDGER_KAFKA_ENV"
[ "$(id -u)" -eq 0 ] || { echo "FAIL: needs root to mount a small tmpfs" >&2; exit 1; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpuledger-diskfull-test.XXXXXX")
SMALL=$WORK/small
cleanup() {
  mountpoint -q "$SMALL" && umount "$SMALL"
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
G=$GPULEDGER_BIN
# shellcheck source=tests/crash/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export GPULEDGER_BROKERS=$KAFKA_BOOTSTRAP
export GPULEDGER_TOPIC_PREFIX="diskfull-test-$$."

reference_run
echo "reference: accepted/rejected/duplicates $REF, ledger $(du -sm "$WORK/ref" | cut -f1) MB"

# A small filesystem, mostly taken by another file: the ledger runs out of space part-way.
mkdir -p "$SMALL"
REF_MB=$(du -sm "$WORK/ref" "$WORK/ref.validator" | awk '{s+=$1} END {print s}')
SIZE_MB=256  # RocksDB preallocates its WAL and table files: room beyond the data
mount -t tmpfs -o size=${SIZE_MB}m tmpfs "$SMALL"
# Leave about half of what the whole stream needs.
dd if=/dev/zero of="$SMALL/filler" bs=1M count=$((SIZE_MB - REF_MB / 2)) status=none 2>/dev/null || true
echo "disk: ${SIZE_MB} MB tmpfs, $(df -m --output=avail "$SMALL" | tail -1 | tr -d ' ') MB free"
rc=0
"$G" ingest --db "$SMALL/ledger" --group g-small --until-end --unsigned \
  >"$WORK/full.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "ingest ended normally on a full disk (the test's disk was not too small?)"
grep -q 'the disk is full.*free space and start' "$WORK/full.log" ||
  { tail -5 "$WORK/full.log" >&2; fail "ingest did not say the disk is full and what to do"; }
echo "full: ingest stopped (exit $rc): $(grep -v 'rocksdb (' "$WORK/full.log" | grep -m1 'the disk is full' | cut -c1-240)"
rm -f "$SMALL/filler"  # space is freed
"$G" ledger verify --db "$SMALL/ledger" >"$WORK/full.verify" 2>&1 ||
  { cat "$WORK/full.verify" >&2; fail "the ledger left by the full disk does not verify"; }
echo "full: the ledger verifies at head seq $(sed -n 's/.*head seq \([0-9]*\).*/\1/p' "$WORK/full.verify")"

# Started again, it resumes from its stored offsets.
"$G" ingest --db "$SMALL/ledger" --group g-small --until-end --unsigned >"$WORK/resume.log" 2>&1 ||
  { tail -20 "$WORK/resume.log" >&2; fail "ingest did not resume once space was freed"; }
"$G" ledger verify --db "$SMALL/ledger" >/dev/null 2>&1 || fail "chain does not verify after resuming"
[ "$(counts "$SMALL/ledger")" = "$REF" ] ||
  fail "after resuming: accepted/rejected/duplicates $(counts "$SMALL/ledger"), uninterrupted $REF"
invoices "$SMALL/ledger" "$WORK/small.inv" || fail "settle after resuming failed"
cmp -s "$WORK/ref.inv" "$WORK/small.inv" || fail "invoices differ from the uninterrupted run"
echo "resumed: same counts and invoices as the uninterrupted run"
echo "PASS"
