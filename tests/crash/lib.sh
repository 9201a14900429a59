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
