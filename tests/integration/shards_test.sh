#!/usr/bin/env bash
# Three shards, each a writer and a standby, on loopback (docs/SCALING.md, docs/RELIABILITY.md):
# `ingest --shard K/3 --node pK` writes shard K's ledger (the whole registry and usage partition
# K of every usage topic) and `ledger follow --shard K/3` keeps its standby. The sample month's
# first half is ingested; shard 1's writer is SIGKILLed; the second half is published; shard 1's
# standby is promoted and ingests the rest; the old writer, started again, is refused and then
# follows. Then: each shard's two ledgers have the same head hash and verify; the three shards
# settled together (`settle --shard-dbs`) hold exactly the one-node run's entries (the registry
# once) and give its invoices byte for byte. Needs GPULEDGER_KAFKA_ENV and GPULEDGER_BIN.
set -euo pipefail
: "${GPULEDGER_KAFKA_ENV:?}" "${GPULEDGER_BIN:?}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck disable=SC1090
. "$GPULEDGER_KAFKA_ENV"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpuledger-shards-test.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$WORK"/*.log; do echo "--- $f" >&2; tail -8 "$f" >&2; done
  exit 1
}
export GPULEDGER_BROKERS=$KAFKA_BOOTSTRAP
export GPULEDGER_TOPIC_PREFIX="shards-test-$$."
G=$GPULEDGER_BIN
stat_of() { "$G" ledger stats --db "$1" --json 2>/dev/null | python3 -c "import json,sys; print(json.load(sys.stdin)[\"$2\"])" 2>/dev/null; }
# The head once it has not moved for 2 s.
settled_head() {
  local prev=-1 now
  for _ in $(seq 1 120); do
    now=$(stat_of "$1" head_seq || echo -1)
    [ "$now" = "$prev" ] && [ "$now" -gt 0 ] && { echo "$now"; return; }
    prev=$now
    sleep 2
  done
  fail "the ledger at $1 never stopped growing"
}

python3 "$ROOT/ops/sample/make_sample.py" "$WORK/sample" --period 2026-03 >/dev/null
lines=$(wc -l <"$WORK/sample/usage.jsonl")
head -n $((lines / 2)) "$WORK/sample/usage.jsonl" >"$WORK/first.jsonl"
tail -n +$((lines / 2 + 1)) "$WORK/sample/usage.jsonl" >"$WORK/second.jsonl"
"$G" publish --kind registry "$WORK/sample/registry.jsonl" 2>/dev/null
"$G" publish --kind usage "$WORK/first.jsonl" 2>/dev/null

# Writers and standbys of the three shards.
start_writer() { # shard node db
  "$G" ingest --db "$3" --unsigned --shard "$1/3" --node "$2" >"$WORK/$2.log" 2>&1 &
  PIDS+=($!)
  eval "WRITER_$1=$!"
}
start_follower() { # shard name db
  "$G" ledger follow --db "$3" --shard "$1/3" >"$WORK/$2.log" 2>&1 &
  PIDS+=($!)
  eval "FOLLOWER_$1=$!"
}
for k in 0 1 2; do
  start_writer $k "p$k" "$WORK/p$k"
  start_follower $k "s$k" "$WORK/s$k"
done
sleep 2
first_head=$(settled_head "$WORK/p1")
kill -9 "$WRITER_1"
echo "shard 1's writer killed at head seq $first_head"

# The rest of the month arrives while shard 1 has no writer.
"$G" publish --kind usage "$WORK/second.jsonl" 2>/dev/null
"$G" publish --kind usage "$WORK/sample/late.jsonl" 2>/dev/null
sleep 2
kill -TERM "$FOLLOWER_1"
wait "$FOLLOWER_1" || fail "shard 1's standby stopped with an error"
"$G" ledger promote --db "$WORK/s1" --shard 1/3 --node s1 --unsigned >"$WORK/promote.out" \
  2>"$WORK/promote.log" || fail "promote failed"
grep -q "epoch 2" "$WORK/promote.out" || fail "promote did not start epoch 2"
"$G" ingest --db "$WORK/s1" --unsigned --shard 1/3 --node s1 --until-end \
  >"$WORK/s1-writer.log" 2>&1 || fail "shard 1's new writer failed"
if "$G" ingest --db "$WORK/p1" --unsigned --shard 1/3 --node p1 --until-end \
  >"$WORK/p1-again.log" 2>&1; then
  fail "shard 1's old writer wrote again after the takeover"
fi
grep -q "written by 's1'" "$WORK/p1-again.log" || fail "the refusal does not name the new writer"
"$G" ledger follow --db "$WORK/p1" --shard 1/3 --until-end >"$WORK/p1-follow.log" 2>&1 \
  || fail "shard 1's old writer cannot follow"

# Shards 0 and 2 finish and stop; their standbys catch up.
for k in 0 2; do
  settled_head "$WORK/p$k" >/dev/null
  eval "kill -TERM \$WRITER_$k; wait \$WRITER_$k" || fail "shard $k's writer stopped with an error"
  eval "kill -TERM \$FOLLOWER_$k; wait \$FOLLOWER_$k" || fail "shard $k's standby stopped with an error"
  "$G" ledger follow --db "$WORK/s$k" --shard "$k/3" --until-end >>"$WORK/s$k.log" 2>&1 \
    || fail "shard $k's standby cannot catch up"
done

# Each shard's writer and standby hold one ledger, which verifies.
for pair in "p0 s0" "s1 p1" "p2 s2"; do
  set -- $pair
  [ "$(stat_of "$WORK/$1" head_hash)" = "$(stat_of "$WORK/$2" head_hash)" ] \
    || fail "$1 and $2 hold different ledgers"
  for l in "$1" "$2"; do
    "$G" ledger verify --db "$WORK/$l" >"$WORK/verify-$l.out" 2>&1 || fail "ledger verify $l"
  done
done

# The one-node reference, from the same topics.
"$G" ingest --db "$WORK/ref" --unsigned --group shards-test-ref --until-end >"$WORK/ref.log" 2>&1 \
  || fail "reference ingest"
"$G" settle --db "$WORK/ref" --store "$WORK/ref.store" --period 2026-03 --format json \
  -o "$WORK/ref.json" 2>/dev/null || fail "settle ref"
"$G" settle --shard-dbs "$WORK/p0,$WORK/s1,$WORK/p2" --period 2026-03 --format json \
  -o "$WORK/shards.json" 2>"$WORK/settle-shards.log" || fail "settle --shard-dbs"
merged=$(sed -n 's/.*settled 3 shards as one: \([0-9]*\) entries.*/\1/p' "$WORK/settle-shards.log")
ref_head=$(stat_of "$WORK/ref" head_seq)
[ "$merged" = "$ref_head" ] || fail "the shards hold $merged entries, one node $ref_head"
grep -q "recorded in two shards" "$WORK/settle-shards.log" && fail "an event was in two shards"
cmp -s "$WORK/shards.json" "$WORK/ref.json" || fail "the shards' invoices differ from one node's"
echo "PASS: 3 shards x 2; shard 1 failed over at seq $first_head; $merged entries as one node's"
