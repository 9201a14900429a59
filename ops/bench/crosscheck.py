#!/usr/bin/env python3
"""ops/bench/crosscheck.py — recompute a month's per-institution GPU-milliseconds from a ledger
export with DuckDB, without gpuledger's settlement code, and compare them with gpuledger's
invoices. Run by ops/bench/crosscheck.sh (which explains the measures); usable on its own:

  crosscheck.py --pb-dir DIR --export FILE --invoices FILE --period YYYY-MM --work DIR
                [--result FILE]

--pb-dir holds the Python classes that `protoc --python_out` generated from schemas/ (the
gpuledger/v1/*_pb2.py modules); --invoices is `gpuledger settle --period P --document invoices
--format json`. Two stages, timed separately:
  decode  the export stream (varint length ‖ ExportRecord, docs/LEDGER.md) → every entry's
          outcome and identity, its payload decoded, into usage.csv and registry.csv;
  sql     DuckDB loads the CSV files and runs ops/bench/crosscheck.sql, which applies the rules
          of docs/SETTLEMENT.md to the accepted entries (see the comments there).
Then every institution's figures are compared exactly with the invoices: used GPU-ms (lines of
kind usage + beyond_cap + held + refused), outage-credit GPU-ms (lines of kind outage_credit),
GPU-ms that could not be priced (lines of kind unpriced), net GPU-ms
(totals.gpu_ms) and net GPU-hours as the invoice prints them (totals.gpu_hours). Differing rows
go to stderr and the exit status is 1. --result writes the counts and times as JSON.
"""
import argparse
import csv
import datetime
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KST = datetime.timezone(datetime.timedelta(hours=9))
MS_PER_HOUR = 3_600_000


def varint(buf, pos):
    """Reads a base-128 varint at pos; returns (value, next position)."""
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes at %d" % pos)


USAGE_COLUMNS = ["seq", "outcome", "source_id", "event_id", "body", "allocation_id",
                 "gpu_model", "gpu_count", "start_ms", "end_ms", "target_event_id",
                 "has_replacement"]
REGISTRY_COLUMNS = ["seq", "outcome", "event_id", "body", "institution_id", "allocation_id",
                    "program", "gpu_model", "inst_type", "gpu_count", "start_ms", "end_ms",
                    "effective_from_ms", "new_end_ms", "revoke", "period", "new_allocation_id",
                    "to_institution_id"]


def usage_row(e, u, v1):
    body = u.WhichOneof("body")
    row = [e.seq, e.outcome, e.source_id, u.event_id, body or "", "", "", "", "", "", "", ""]
    if body == "usage" or body == "correction":
        iv = u.usage
        if body == "correction":
            c = u.correction
            row[10] = c.target_event_id
            row[11] = "true" if c.HasField("replacement") else "false"
            iv = c.replacement if c.HasField("replacement") else None
            row[5] = c.allocation_id
        if iv is not None:
            row[5:10] = [iv.allocation_id, iv.gpu_model, iv.gpu_count, iv.start_ms, iv.end_ms]
    elif body == "outage":
        o = u.outage
        row[5:10] = [o.allocation_id, o.gpu_model, o.gpu_count, o.start_ms, o.end_ms]
    elif body == "outage_withdrawal":
        row[10] = u.outage_withdrawal.target_event_id
    elif body == "own_use":
        o = u.own_use
        row[6:10] = [o.gpu_model, o.gpu_count, o.start_ms, o.end_ms]
    return row


def registry_row(e, r):
    body = r.WhichOneof("body")
    row = [e.seq, e.outcome, r.event_id, body or ""] + [""] * 14
    if body == "institution":
        i = r.institution
        row[4] = i.institution_id
        row[8] = i.type
        row[12] = i.effective_from_ms
    elif body == "allocation":
        a = r.allocation
        row[4:12] = [a.institution_id, a.allocation_id, a.program, a.gpu_model, "", a.gpu_count,
                     a.start_ms, a.end_ms]
    elif body == "rate_card":
        c = r.rate_card
        row[6:8] = [c.program, c.gpu_model]
        row[12] = c.effective_from_ms
    elif body == "copay_policy":
        c = r.copay_policy
        row[8] = c.institution_type
        row[12] = c.effective_from_ms
    elif body == "allocation_amendment":
        a = r.allocation_amendment
        row[5] = a.allocation_id
        row[12] = a.effective_from_ms
        change = a.WhichOneof("change")
        if change == "new_end_ms":
            row[13] = a.new_end_ms
        elif change == "new_gpu_count":
            row[9] = a.new_gpu_count
        # A transfer ends the allocation at its date, as a revocation does (rule 4), and
        # names the allocation that continues it (rule 3b).
        row[14] = "true" if (change == "revoke" and a.revoke) or change == "transfer" else "false"
        if change == "transfer":
            row[16:18] = [a.transfer.new_allocation_id, a.transfer.to_institution_id]
    elif body == "period_close":
        row[15] = r.period_close.period
    elif body == "rerating":
        x = r.rerating
        row[6:8] = [x.program, x.gpu_model]  # gpu_model 0: every model
        row[10:12] = [x.from_ms, x.to_ms]
    return row


def decode(export_path, work, pb):
    """Export stream → usage.csv, registry.csv. Returns counts by outcome."""
    ledger_pb2, usage_pb2, registry_pb2 = pb
    with open(export_path, "rb") as f:
        buf = memoryview(f.read())
    counts = {"entries": 0, "accepted": 0, "rejected": 0, "parked": 0, "undecodable": 0}
    outcome_name = {ledger_pb2.ACCEPTED: "accepted", ledger_pb2.REJECTED: "rejected",
                    ledger_pb2.PARKED: "parked"}
    rec = ledger_pb2.ExportRecord()
    e = ledger_pb2.LedgerEntry()
    u = usage_pb2.UsageEvent()
    r = registry_pb2.RegistryEvent()
    header_seen = False
    expect_seq = None
    with open(os.path.join(work, "usage.csv"), "w", newline="") as uf, \
            open(os.path.join(work, "registry.csv"), "w", newline="") as rf:
        uw, rw = csv.writer(uf), csv.writer(rf)
        uw.writerow(USAGE_COLUMNS)
        rw.writerow(REGISTRY_COLUMNS)
        pos, end = 0, len(buf)
        while pos < end:
            n, pos = varint(buf, pos)
            rec.ParseFromString(buf[pos:pos + n])
            pos += n
            kind = rec.WhichOneof("record")
            if kind == "header":
                # Version 2 adds key rotation records and a slice's leading checkpoint; the
                # entries read the same.
                if rec.header.format != "gpuledger-export" or rec.header.format_version not in (1, 2):
                    raise SystemExit("not a gpuledger-export/1 or /2 stream: %r" % rec.header.format)
                header_seen = True
                expect_seq = rec.header.first_seq
                continue
            if kind != "entry":
                continue  # checkpoints
            if not header_seen:
                raise SystemExit("export stream has no header before its first entry")
            e.ParseFromString(rec.entry.entry)
            if e.seq != rec.entry.seq or e.seq != expect_seq:
                raise SystemExit("entry seq %d where %d was expected" % (e.seq, expect_seq))
            expect_seq += 1
            counts["entries"] += 1
            counts[outcome_name.get(e.outcome, "undecodable")] += 1
            # A CloudEvent's event is recorded beside its payload (docs/FORMATS.md).
            event = e.decoded_event or e.payload
            try:
                if e.source == ledger_pb2.SOURCE_USAGE:
                    u.ParseFromString(event)
                    uw.writerow(usage_row(e, u, None))
                elif e.source == ledger_pb2.SOURCE_REGISTRY:
                    r.ParseFromString(event)
                    rw.writerow(registry_row(e, r))
            except Exception:  # a malformed payload (rejected): nothing to decode
                if e.outcome == ledger_pb2.ACCEPTED:
                    raise SystemExit("accepted entry %d does not decode" % e.seq)
                counts["undecodable"] += 1
    return counts


def period_bounds(period):
    """[start, end) of a KST calendar month, UTC ms."""
    y, m = (int(x) for x in period.split("-"))
    start = datetime.datetime(y, m, 1, tzinfo=KST)
    end = datetime.datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=KST)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def run_sql(work, period):
    import duckdb
    p0, p1 = period_bounds(period)
    con = duckdb.connect(os.path.join(work, "crosscheck.duckdb"))
    con.execute("SET VARIABLE p0 = %d; SET VARIABLE p1 = %d;" % (p0, p1))
    types_u = {"seq": "UBIGINT", "outcome": "INTEGER", "source_id": "VARCHAR",
               "event_id": "VARCHAR", "body": "VARCHAR", "allocation_id": "VARCHAR",
               "gpu_model": "INTEGER", "gpu_count": "BIGINT", "start_ms": "BIGINT",
               "end_ms": "BIGINT", "target_event_id": "VARCHAR", "has_replacement": "BOOLEAN"}
    types_r = {"seq": "UBIGINT", "outcome": "INTEGER", "event_id": "VARCHAR", "body": "VARCHAR",
               "institution_id": "VARCHAR", "allocation_id": "VARCHAR", "program": "INTEGER",
               "gpu_model": "INTEGER", "inst_type": "INTEGER", "gpu_count": "BIGINT",
               "start_ms": "BIGINT", "end_ms": "BIGINT", "effective_from_ms": "BIGINT",
               "new_end_ms": "BIGINT", "revoke": "BOOLEAN", "period": "VARCHAR",
               "new_allocation_id": "VARCHAR", "to_institution_id": "VARCHAR"}
    for table, path, types in (("usage_raw", "usage.csv", types_u),
                               ("registry_raw", "registry.csv", types_r)):
        con.execute("CREATE OR REPLACE TABLE %s AS SELECT * FROM read_csv(?, header = true, "
                    "columns = %s, quote = '\"', escape = '\"')" % (table, _struct(types)),
                    [os.path.join(work, path)])
    t_loaded = time.monotonic()
    with open(os.path.join(HERE, "crosscheck.sql")) as f:
        con.execute(f.read())
    rows = con.execute("SELECT institution_id, used_gpu_ms, credit_gpu_ms, unpriced_gpu_ms, "
                       "net_gpu_ms, net_gpu_hours FROM xcheck ORDER BY institution_id").fetchall()
    closes = con.execute("SELECT count(*) FROM registry_raw WHERE outcome = 1 AND "
                         "body = 'period_close'").fetchone()[0]
    con.close()
    return t_loaded, {r[0]: {"used": int(r[1]), "credit": int(r[2]), "unpriced": int(r[3]),
                             "net": int(r[4]), "hours": r[5]}
                      for r in rows}, closes


def _struct(types):
    return "{" + ", ".join("'%s': '%s'" % kv for kv in types.items()) + "}"


def invoice_figures(path):
    with open(path) as f:
        doc = json.load(f)
    out = {}
    adjustments = 0
    # Institutions that owe nothing (no invoice issued) have their lines under "nothing_owed".
    for inv in doc["invoices"] + doc.get("nothing_owed", []):
        used = sum(int(l["gpu_ms"]) for l in inv["lines"] if l["kind"] in ("usage", "beyond_cap", "held", "refused"))
        credit = sum(int(l["gpu_ms"]) for l in inv["lines"] if l["kind"] == "outage_credit")
        unpriced_ms = sum(int(l["gpu_ms"]) for l in inv["lines"] if l["kind"] == "unpriced")
        adjustments += len(inv["adjustments"])
        out[inv["institution_id"]] = {"used": used, "credit": credit, "unpriced": unpriced_ms,
                                      "net": int(inv["totals"]["gpu_ms"]),
                                      "hours": inv["totals"]["gpu_hours"]}
    return out, doc.get("status"), adjustments, len(doc.get("unpriced", []))


def hours(gpu_ms):
    """GPU-hours with three decimals, half away from zero (docs/SETTLEMENT.md, 'Quantity')."""
    q, r = divmod(abs(gpu_ms), MS_PER_HOUR // 1000)
    q += 1 if 2 * r >= MS_PER_HOUR // 1000 else 0
    return "%s%d.%03d" % ("-" if gpu_ms < 0 and q else "", q // 1000, q % 1000)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pb-dir", required=True)
    ap.add_argument("--export", required=True)
    ap.add_argument("--invoices", required=True)
    ap.add_argument("--report", help="`gpuledger report usage --by institution --format json` "
                    "of the period: compared with DuckDB as the invoices are")
    ap.add_argument("--period", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--result")
    args = ap.parse_args()
    sys.path.insert(0, args.pb_dir)
    from gpuledger.v1 import ledger_pb2, registry_pb2, usage_pb2  # generated at run time

    t0 = time.monotonic()
    counts = decode(args.export, args.work, (ledger_pb2, usage_pb2, registry_pb2))
    t1 = time.monotonic()
    t_loaded, duck, closes = run_sql(args.work, args.period)
    t2 = time.monotonic()
    inv, status, adjustments, unpriced = invoice_figures(args.invoices)

    zero = {"used": 0, "credit": 0, "unpriced": 0, "net": 0, "hours": "0.000"}
    mismatches = []
    for inst in sorted(set(duck) | set(inv)):
        d, g = duck.get(inst, zero), inv.get(inst, zero)
        if d != g:
            mismatches.append((inst, d, g))
    for inst, d, g in mismatches:
        print("MISMATCH %s: duckdb used=%d credit=%d unpriced=%d net=%d hours=%s | gpuledger "
              "used=%d credit=%d unpriced=%d net=%d hours=%s"
              % (inst, d["used"], d["credit"], d["unpriced"], d["net"], d["hours"], g["used"],
                 g["credit"], g["unpriced"], g["net"], g["hours"]),
              file=sys.stderr)
    # The usage report (docs/REPORTS.md) per institution: used = every non-credit line (the
    # invoice's used + unpriced), credited = the credit lines.
    report_mismatches = 0
    if args.report:
        with open(args.report) as f:
            rep = json.load(f)
        got = {row["group"]["institution"]: (row["used_gpu_ms"], row["credited_gpu_ms"])
               for row in rep["rows"]}
        for inst in sorted(set(duck) | set(got)):
            d = duck.get(inst, zero)
            want = (d["used"] + d["unpriced"], d["credit"])
            if got.get(inst, (0, 0)) != want:
                report_mismatches += 1
                print("REPORT %s: duckdb used=%d credit=%d | report %s"
                      % (inst, want[0], want[1], got.get(inst)), file=sys.stderr)
    # The SQL's hours and this file's must agree too (two implementations of one rule).
    bad_hours = [i for i, d in duck.items() if d["hours"] != hours(d["net"])]
    for i in bad_hours:
        print("HOURS %s: SQL %s, Python %s" % (i, duck[i]["hours"], hours(duck[i]["net"])),
              file=sys.stderr)
    result = dict(counts)
    result.update({
        "institutions_duckdb": len(duck), "institutions_gpuledger": len(inv),
        "institutions_compared": len(set(duck) | set(inv)), "mismatches": len(mismatches),
        "report_mismatches": report_mismatches,
        "status": status, "closes": closes, "adjustment_lines": adjustments,
        "unpriced_gpuledger": unpriced,
        "used_gpu_ms": sum(d["used"] for d in duck.values()),
        "credit_gpu_ms": sum(d["credit"] for d in duck.values()),
        "net_gpu_ms": sum(d["net"] for d in duck.values()),
        "used_gpu_ms_gpuledger": sum(g["used"] for g in inv.values()),
        "credit_gpu_ms_gpuledger": sum(g["credit"] for g in inv.values()),
        "net_gpu_ms_gpuledger": sum(g["net"] for g in inv.values()),
        "decode_s": max(round(t1 - t0, 3), 0.001), "sql_s": round(t2 - t1, 3),
        "sql_load_s": round(t_loaded - t1, 3), "sql_aggregate_s": round(t2 - t_loaded, 3),
    })
    result["unpriced_gpu_ms"] = sum(d["unpriced"] for d in duck.values())
    result["unpriced_gpu_ms_gpuledger"] = sum(g["unpriced"] for g in inv.values())
    for k in ("used", "credit", "unpriced", "net"):
        result[k + "_gpu_hours"] = hours(result[k + "_gpu_ms"])
        result[k + "_gpu_hours_gpuledger"] = hours(result[k + "_gpu_ms_gpuledger"])
    if args.result:
        with open(args.result, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result), file=sys.stderr)
    return 1 if mismatches or bad_hours or report_mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
