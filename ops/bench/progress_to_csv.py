#!/usr/bin/env python3
"""ops/bench/progress_to_csv.py LOG OUT.csv — ingest's progress lines as a time series.

`gpuledger ingest` logs a progress line every 2 s and a last one when it stops:
  2026-11-23T15:28:02.932+00:00 info consumed 28547 (14007/s), accepted ..., ledger head N, lag L
  2026-11-23T15:28:03.248+00:00 info done: consumed 50397 (69146/s), accepted ..., lag 0
(--log-format text; `--log-format json` lines {"ts_ms": ..., "level": ..., "msg": "consumed ..."}
and spdlog's default "[2026-11-23 14:46:01.123] [info] consumed ..." are read too).
Writes OUT.csv with the header `elapsed_s,consumed,rate_per_s`, one row per progress line:
  elapsed_s   seconds from the first timestamped line of LOG (ingest's start-up line) to the
              progress line, by the log's own timestamps (millisecond resolution);
  consumed    messages consumed so far (the line's "consumed N");
  rate_per_s  the line's "(N/s)": messages consumed since the previous progress line divided by
              the time since it, as ingest measured it (monotonic clock).
Standard library only. Exit 1 if LOG has no progress line.
"""
import csv
import datetime
import json
import re
import sys

TEXT = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d:?\d\d|Z)?\s+\S+\s+(.*)$")
BRACKETS = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)\]\s+\[[^\]]*\]\s+(.*)$")
PROGRESS = re.compile(r"^(?:done: )?consumed (\d+) \((\d+(?:\.\d+)?)/s\)")


def parse(line):
    """(seconds since the epoch, message) of a log line, or None."""
    line = line.rstrip("\n")
    if line.startswith("{"):
        try:
            obj = json.loads(line)
            return obj["ts_ms"] / 1000.0, obj["msg"]
        except (ValueError, KeyError, TypeError):
            return None
    m = TEXT.match(line)
    if m:
        tz = m.group(2) or "+00:00"
        tz = "+00:00" if tz == "Z" else tz
        if ":" not in tz:
            tz = tz[:3] + ":" + tz[3:]
        ts = datetime.datetime.fromisoformat(m.group(1) + tz)
        return ts.timestamp(), m.group(3)
    m = BRACKETS.match(line)
    if m:  # spdlog's default pattern: local time without a zone; only differences matter
        ts = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
        return ts.timestamp(), m.group(2)
    return None


def convert(log_path, out_path):
    origin = None
    rows = []
    with open(log_path, errors="replace") as f:
        for line in f:
            parsed = parse(line)
            if parsed is None:
                continue
            ts, msg = parsed
            if origin is None:
                origin = ts
            m = PROGRESS.match(msg)
            if m:
                rows.append(("%.3f" % (ts - origin), int(m.group(1)),
                             "%.0f" % float(m.group(2))))
    if not rows:
        return 0
    with open(out_path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["elapsed_s", "consumed", "rate_per_s"])
        w.writerows(rows)
    return len(rows)


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    n = convert(argv[1], argv[2])
    if n == 0:
        print("progress_to_csv: no ingest progress line in %s" % argv[1], file=sys.stderr)
        return 1
    print("progress_to_csv: %d rows to %s" % (n, argv[2]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
