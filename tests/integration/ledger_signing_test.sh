#!/usr/bin/env bash
# Signed checkpoints end to end through the real broker and the CLI (issue 14, item 4): a clean
# stop of ingest signs the head, so the ledger and its export verify with the public key and no
# unsigned tail, and so does a closed month; a new signing key is refused without the old one
# and, with it, recorded as a rotation that the first published key follows.
# Needs GPULEDGER_KAFKA_ENV (the test broker's env file) and GPULEDGER_BIN.
set -euo pipefail
: "${GPULEDGER_KAFKA_ENV:?}" "${GPULEDGER_BIN:?}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck disable=SC1090
. "$GPULEDGER_KAFKA_ENV"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpuledger-signing-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
export GPULEDGER_BROKERS=$KAFKA_BOOTSTRAP GPULEDGER_DB=$WORK/ledger
export GPULEDGER_TOPIC_PREFIX="signing-test-$$."
G=$GPULEDGER_BIN

python3 "$ROOT/ops/sample/make_sample.py" "$WORK/sample" --period 2026-03 >/dev/null
"$G" keys generate --private-key "$WORK/a.pem" --public-key "$WORK/a-pub.pem" 2>/dev/null
"$G" keys generate --private-key "$WORK/b.pem" --public-key "$WORK/b-pub.pem" 2>/dev/null
"$G" publish --kind registry "$WORK/sample/registry.jsonl" 2>/dev/null
"$G" publish --kind usage "$WORK/sample/usage.jsonl" 2>/dev/null

# 1. A clean stop signs the head: no unsigned tail, whatever the interval.
"$G" ingest --until-end --signing-key "$WORK/a.pem" --checkpoint-interval 997 \
  >"$WORK/ingest1.log" 2>&1 || { cat "$WORK/ingest1.log" >&2; fail "ingest failed"; }
"$G" ledger stats --json >"$WORK/stats1.json" 2>/dev/null
python3 - "$WORK/stats1.json" <<'PY' || fail "the head is not signed after a clean stop"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["head_seq"] > 997, s
assert s["last_checkpoint_seq"] == s["head_seq"], s
PY
"$G" ledger verify --public-key "$WORK/a-pub.pem" >"$WORK/verify1.out" 2>&1 ||
  { cat "$WORK/verify1.out" >&2; fail "a cleanly stopped ledger does not verify with its key"; }
grep -q UNSIGNED "$WORK/verify1.out" && fail "unsigned entries after a clean stop"
"$G" ledger export --out "$WORK/full.export" 2>/dev/null
"$G" ledger verify --export "$WORK/full.export" --public-key "$WORK/a-pub.pem" >/dev/null 2>&1 ||
  fail "the export of a cleanly stopped ledger does not verify"

# 2. A closed month is covered by a signature at its close entry.
"$G" settle close --period 2026-03 --wait-s 0 >/dev/null 2>&1 || fail "settle close did not publish"
"$G" ingest --until-end --signing-key "$WORK/a.pem" >"$WORK/ingest2.log" 2>&1 ||
  { cat "$WORK/ingest2.log" >&2; fail "ingest of the close failed"; }
grep -q 'period 2026-03 closed at seq .*signed checkpoint staged' "$WORK/ingest2.log" ||
  fail "the close was not sealed by a checkpoint"

# 3. Another key without the old one is refused, and says what to do.
if "$G" ingest --until-end --signing-key "$WORK/b.pem" >"$WORK/refused.log" 2>&1; then
  fail "ingest accepted a new signing key without the previous one"
fi
grep -q -- '--previous-signing-key' "$WORK/refused.log" ||
  fail "the refusal does not say what to do: $(cat "$WORK/refused.log")"

# 4. With the old key, the rotation is recorded; later entries are signed by the new key; the
# first published key verifies everything, the new key alone does not.
"$G" publish --kind usage "$WORK/sample/late.jsonl" 2>/dev/null
"$G" ingest --until-end --signing-key "$WORK/b.pem" --previous-signing-key "$WORK/a.pem" \
  >"$WORK/ingest3.log" 2>&1 || { cat "$WORK/ingest3.log" >&2; fail "rotation refused"; }
"$G" ledger verify --public-key "$WORK/a-pub.pem" >"$WORK/verify3.out" 2>&1 ||
  { cat "$WORK/verify3.out" >&2; fail "the first key does not verify across the rotation"; }
grep -q '1 key rotation' "$WORK/verify3.out" || fail "no rotation followed: $(cat "$WORK/verify3.out")"
if "$G" ledger verify --public-key "$WORK/b-pub.pem" >/dev/null 2>&1; then
  fail "the new key alone verified checkpoints the old key signed"
fi
"$G" ledger export --out "$WORK/rotated.export" 2>/dev/null
"$G" ledger verify --export "$WORK/rotated.export" --public-key "$WORK/a-pub.pem" >/dev/null 2>&1 ||
  fail "the export does not verify across the rotation"
head=$("$G" ledger stats --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["head_seq"])')
"$G" ledger export --from $((head - 3)) --out "$WORK/slice.export" 2>/dev/null
"$G" ledger verify --export "$WORK/slice.export" --public-key "$WORK/a-pub.pem" \
  >"$WORK/slice.out" 2>&1 || { cat "$WORK/slice.out" >&2; fail "a slice after the rotation does not verify"; }
echo "ledger signing test: OK ($(grep -m1 "^OK" "$WORK/verify3.out"))"
