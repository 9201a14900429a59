#!/usr/bin/env bash
# Clock skew (issue 8, item 6): the ingest host's wall clock an hour ahead, an hour behind, and
# stepped an hour forward or back mid-stream, through the real broker and the real binary. The
# clock is moved for the ingest process only, by tests/crash/clock_shift.cc (LD_PRELOAD); the
# broker, the producer and settle keep the true time. Every run must make the same decisions
# (accepted, each rejection reason, duplicates, parked) and the same invoices as an uninterrupted
# run on the true clock, and its log must show the clock it had (so that the test cannot pass
# with the shift not applied).
# Needs GPULEDGER_KAFKA_ENV, GPULEDGER_BIN and GPULEDGER_CLOCK_SHIFT_LIB.
set -euo pipefail
: "${GPULEDGER_KAFKA_ENV:?}" "${GPULEDGER_BIN:?}" "${GPULEDGER_CLOCK_SHIFT_LIB:?}"
# shellcheck disable=SC1090
. "$GPULEDGER_KAFKA_ENV"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpuledger-clock-test.XXXXXX")
cleanup() { [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"; }
trap cleanup EXIT
G=$GPULEDGER_BIN
# shellcheck source=tests/crash/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export GPULEDGER_BROKERS=$KAFKA_BOOTSTRAP
export GPULEDGER_TOPIC_PREFIX="clock-test-$$."
[ -r "$GPULEDGER_CLOCK_SHIFT_LIB" ] || fail "no $GPULEDGER_CLOCK_SHIFT_LIB"

# Every decision of a ledger: accepted, rejected by reason, duplicates, parked.
decisions() {
  "$G" ledger stats --db "$1" --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["head_seq"], d["accepted"], d["rejected"], d["duplicates_dropped"], d["parked_entries"],
      sorted(d["rejected_by_reason"].items()))'
}

# Seconds from the real clock to the wall clock of log line $2 (spdlog's ISO time, UTC) of log $1.
skew_of_line() {
  python3 - "$1" "$2" <<'EOF'
import datetime, sys, time
lines = [l for l in open(sys.argv[1]) if l[:4].isdigit()]
line = lines[0] if sys.argv[2] == "first" else lines[-1]
stamp = datetime.datetime.fromisoformat(line.split(" ", 1)[0])
print(round(stamp.timestamp() - float(open(sys.argv[1] + ".real-" + sys.argv[2]).read())))
EOF
}

# Usage around the true present, whose decisions a clock-dependent rule would change (an
# interval may end at most --max-future-skew-ms, 15 min, after its Kafka timestamp): ended 60
# and 10 minutes ago, ending in 10 minutes (accepted); ending in 20 and 70 minutes
# (FUTURE_TIMESTAMP). With the host clock behind, a rule on the host clock would reject the
# second; ahead, it would accept the fourth.
python3 - "$WORK" <<'EOF'
import json, sys, time
now = int(time.time() * 1000)
m = 60_000
reg = [
    {"institution": {"institutionId": "inst-clock", "name": "Clock University", "type": "ACADEMIA"}},
    {"allocation": {"allocationId": "alloc-clock", "institutionId": "inst-clock",
                    "program": "GOV_ADVANCED", "cspId": "csp-clock", "gpuModel": "H200",
                    "gpuCount": 8, "startMs": now - 1440 * m, "endMs": now + 1440 * m}},
]
with open(sys.argv[1] + "/clock-registry.jsonl", "w") as f:
    for i, body in enumerate(reg):
        f.write(json.dumps({"schemaVersion": 1, "eventId": f"reg-clock-{i}", "emittedAtMs": now, **body}) + "\n")
with open(sys.argv[1] + "/clock-usage.jsonl", "w") as f:
    for i, (start, end) in enumerate([(-70, -60), (-20, -10), (-5, 10), (10, 20), (50, 70)]):
        f.write(json.dumps({"schemaVersion": 1, "eventId": f"clock-{i}", "cspId": "csp-clock",
                            "producerId": "clock-meter", "producerSeq": i + 1, "emittedAtMs": now,
                            "usage": {"allocationId": "alloc-clock", "gpuModel": "H200", "gpuCount": 8,
                                      "startMs": now + start * m, "endMs": now + end * m,
                                      "nodeId": "clock-node"}}) + "\n")
EOF
"$G" publish --kind registry "$WORK/clock-registry.jsonl" >/dev/null 2>&1 || fail "publish registry"
"$G" publish --kind usage "$WORK/clock-usage.jsonl" >/dev/null 2>&1 || fail "publish usage"

reference_run
REF_DECISIONS=$(decisions "$WORK/ref")
echo "reference (true clock): head, accepted, rejected, duplicates, parked, reasons: $REF_DECISIONS"
case $REF_DECISIONS in
  *"('FUTURE_TIMESTAMP', 2)"*) ;;
  *) fail "the reference did not reject exactly the two intervals ending 20 and 70 minutes ahead" ;;
esac

# run NAME OFFSET_S STEP_S STEP_AT_MS: ingest with the clock moved, small batches so that it
# runs for a few seconds and a step lands mid-stream.
run() {
  local name=$1 offset=$2 step=$3 at=$4 log=$WORK/$1.log rc=0
  date +%s.%N >"$log.real-first"
  # The library goes to ingest only (through env), not to `timeout`.
  timeout 240 env LD_PRELOAD="$GPULEDGER_CLOCK_SHIFT_LIB" GPULEDGER_CLOCK_OFFSET_S="$offset" \
    GPULEDGER_CLOCK_STEP_S="$step" GPULEDGER_CLOCK_STEP_AT_MS="$at" \
    "$G" ingest --db "$WORK/$name" --group "g-$name" --until-end --unsigned \
    --batch-max-messages 50 --batch-max-ms 5 >"$log" 2>&1 || rc=$?
  date +%s.%N >"$log.real-last"
  [ "$rc" -eq 0 ] || { tail -20 "$log" >&2; fail "$name: ingest exited $rc"; }
  # The clock it had: its first log line at offset, its last at offset + step (± 30 s).
  local first last
  first=$(skew_of_line "$log" first)
  last=$(skew_of_line "$log" last)
  [ $((first - offset)) -ge -30 ] && [ $((first - offset)) -le 30 ] ||
    fail "$name: its log starts ${first} s from the true clock, not $offset s: the shift was not applied"
  [ $((last - offset - step)) -ge -30 ] && [ $((last - offset - step)) -le 30 ] ||
    fail "$name: its log ends ${last} s from the true clock, not $((offset + step)) s: the step did not land mid-run"
  local got
  got=$(decisions "$WORK/$name")
  [ "$got" = "$REF_DECISIONS" ] || fail "$name: decisions $got, true clock $REF_DECISIONS"
  "$G" ledger verify --db "$WORK/$name" >/dev/null 2>&1 || fail "$name: the chain does not verify"
  invoices "$WORK/$name" "$WORK/$name.inv" || { cat "$WORK/$name.inv.err" >&2; fail "$name: settle failed"; }
  cmp -s "$WORK/ref.inv" "$WORK/$name.inv" || fail "$name: invoices differ from the true clock's"
  echo "$name: clock ${first} s off at the start, ${last} s at the end ($(grep -c '' "$log") log lines);" \
    "same decisions and invoices as the true clock"
}

run ahead 3600 0 0
run behind -3600 0 0
run stepped-forward 0 3600 1500
run stepped-back 0 -3600 1500
echo "PASS"
