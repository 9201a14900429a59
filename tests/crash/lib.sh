# tests/crash/lib.sh — pieces shared by the crash tests' scripts (sourced, not run).
# Needs G (the gpuledger binary) and WORK (the test's temp dir) to be set first.

fail() { echo "FAIL: $*" >&2; exit 1; }

# "accepted rejected duplicates" of the ledger DB: what no fault may change.
counts() {
  "$G" ledger stats --db "$1" --json 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["accepted"], d["rejected"], d["duplicates_dropped"])'
}

# invoices DB OUT: the month's invoices of DB as CSV, settled into a store of its own, in
# OUT.csv, and in OUT without comment lines (so that two ledgers' invoices compare with cmp);
# errors in OUT.err.
invoices() {
  "$G" settle --db "$1" --store "$WORK/store-$(basename "$1")" --period 2026-03 \
    --document invoices --format csv -o "$2.csv" 2>"$2.err" && grep -v '^#' "$2.csv" >"$2"
}

# reference_run: 40,000 simulated usage events (with duplicates, conflicts, overlaps and
# malformed bytes) published under $GPULEDGER_TOPIC_PREFIX, and one uninterrupted ingest of
# them into $WORK/ref; sets REF (its counts) and writes its invoices to $WORK/ref.inv.
reference_run() {
  "$G" simulate --scale 0.01 --max-events 40000 >"$WORK/simulate.log" 2>&1 ||
    { tail "$WORK/simulate.log" >&2; fail "simulate failed"; }
  "$G" ingest --db "$WORK/ref" --group g-ref --until-end --unsigned >"$WORK/ref.log" 2>&1 ||
    fail "reference ingest failed"
  REF=$(counts "$WORK/ref")
  invoices "$WORK/ref" "$WORK/ref.inv" || fail "settle on the reference failed"
}
