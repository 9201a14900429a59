#!/usr/bin/env python3
"""ops/bench/plot.py [--data-dir DIR] [--out-dir DIR] [--only ingest|scaling|rss]

Charts of the benchmark figures (issue 7), as PNG files, from CSV files the bench scripts write:
  DIR/ingest-timeseries.csv (elapsed_s,consumed,rate_per_s; ops/bench/progress_to_csv.py from an
      ingest log)  →  OUT/ingest-throughput.png: messages/s over elapsed seconds of one ingest
      run, with the run's mean (last consumed / last elapsed_s) as a dashed line;
  DIR/scaling.csv (events,ingest_s,ingest_msgs_per_s,ingest_rss_mib,replay_s,
      replay_entries_per_s,replay_rss_mib; ops/bench/memory.sh)  →  OUT/scaling.png: two panels
      over the event count (log scale): throughput (ingest messages/s, replay entries/s) and
      peak RSS (ingest, replay);
  DIR/ingest-rss.csv (elapsed_s,rss_mib; ops/bench/memory.sh samples the largest ingest every
      second)  →  OUT/ingest-rss.png: ingest's resident memory over the run.
DIR and OUT default to docs/bench. Each chart whose CSV exists is drawn (--only: just that one);
exit 1 if none exists or a CSV's header is not the one above. Run with the venv's python
(`$(ops/python-env.sh) ops/bench/plot.py`): matplotlib is pinned in ops/python-requirements.txt.
Uses the Agg backend (no display needed).
"""
import argparse
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import FuncFormatter  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
INGEST_HEADER = ["elapsed_s", "consumed", "rate_per_s"]
SCALING_HEADER = ["events", "ingest_s", "ingest_msgs_per_s", "ingest_rss_mib", "replay_s",
                  "replay_entries_per_s", "replay_rss_mib"]
RSS_HEADER = ["elapsed_s", "rss_mib"]
THOUSANDS = FuncFormatter(lambda v, _: "{:,.0f}".format(v))


class BadCsv(Exception):
    pass


def read_csv(path, header):
    """Rows of a CSV with exactly `header`, as dicts of floats, in file order."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        got = next(reader, None)
        if got != header:
            raise BadCsv("%s: header %s, expected %s" % (path, ",".join(got or []),
                                                         ",".join(header)))
        rows = []
        for n, rec in enumerate(reader, start=2):
            if not rec:
                continue
            if len(rec) != len(header):
                raise BadCsv("%s:%d: %d fields, expected %d" % (path, n, len(rec), len(header)))
            try:
                rows.append({k: float(v) for k, v in zip(header, rec)})
            except ValueError as e:
                raise BadCsv("%s:%d: %s" % (path, n, e))
    if not rows:
        raise BadCsv("%s: no data rows" % path)
    return rows


def plot_ingest(csv_path, png_path):
    rows = read_csv(csv_path, INGEST_HEADER)
    t = [r["elapsed_s"] for r in rows]
    rate = [r["rate_per_s"] for r in rows]
    mean = rows[-1]["consumed"] / rows[-1]["elapsed_s"] if rows[-1]["elapsed_s"] > 0 else 0
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    ax.plot(t, rate, marker="o", markersize=3, linewidth=1.5, label="messages/s (per progress interval)")
    ax.axhline(mean, linestyle="--", linewidth=1, color="gray",
               label="mean over the run: {:,.0f}/s".format(mean))
    ax.set_xlabel("elapsed seconds since ingest started")
    ax.set_ylabel("messages consumed per second")
    ax.set_title("gpuledger ingest: {:,.0f} messages in {:.1f} s".format(
        rows[-1]["consumed"], rows[-1]["elapsed_s"]))
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(THOUSANDS)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


def plot_scaling(csv_path, png_path):
    rows = sorted(read_csv(csv_path, SCALING_HEADER), key=lambda r: r["events"])
    ev = [r["events"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    left.plot(ev, [r["ingest_msgs_per_s"] for r in rows], marker="o", label="ingest (messages/s)")
    left.plot(ev, [r["replay_entries_per_s"] for r in rows], marker="s",
              label="audit replay (entries/s)")
    left.set_title("throughput")
    left.set_ylabel("per second")
    right.plot(ev, [r["ingest_rss_mib"] for r in rows], marker="o", label="ingest")
    right.plot(ev, [r["replay_rss_mib"] for r in rows], marker="s", label="audit replay")
    right.set_title("peak RSS")
    right.set_ylabel("MiB")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("usage events simulated (log scale)")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(THOUSANDS)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="best")
    fig.suptitle("gpuledger by event count")
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


def plot_rss(csv_path, png_path):
    rows = read_csv(csv_path, RSS_HEADER)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    ax.plot([r["elapsed_s"] for r in rows], [r["rss_mib"] for r in rows], linewidth=1.5,
            label="resident set size, sampled every second")
    ax.set_xlabel("elapsed seconds since ingest started")
    ax.set_ylabel("MiB")
    ax.set_title("gpuledger ingest: memory over the run (peak {:,.0f} MiB)".format(
        max(r["rss_mib"] for r in rows)))
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].split("\n")[0])
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "docs", "bench"))
    ap.add_argument("--out-dir", default=None, help="default: docs/bench")
    ap.add_argument("--only", choices=["ingest", "scaling", "rss"])
    args = ap.parse_args()
    out_dir = args.out_dir or os.path.join(ROOT, "docs", "bench")
    charts = [("ingest", "ingest-timeseries.csv", "ingest-throughput.png", plot_ingest),
              ("scaling", "scaling.csv", "scaling.png", plot_scaling),
              ("rss", "ingest-rss.csv", "ingest-rss.png", plot_rss)]
    drawn = 0
    for name, data, png, draw in charts:
        if args.only and args.only != name:
            continue
        src = os.path.join(args.data_dir, data)
        if not os.path.exists(src):
            print("plot: no %s, skipping %s" % (src, png), file=sys.stderr)
            continue
        os.makedirs(out_dir, exist_ok=True)
        dst = os.path.join(out_dir, png)
        try:
            draw(src, dst)
        except BadCsv as e:
            print("plot: ERROR: %s" % e, file=sys.stderr)
            return 1
        print("plot: %s -> %s" % (src, dst), file=sys.stderr)
        drawn += 1
    if drawn == 0:
        print("plot: ERROR: nothing to draw", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
