#!/usr/bin/env python3
"""ops/bench/crosscheck_scenario.py OUT_DIR — a small hand-written March 2026 for
`ops/bench/crosscheck.sh --scenario`: the rules that `gpuledger simulate` never exercises
(corrections, amendments, reference data that starts late), so that the cross-check tests them.

Writes JSON-lines files for `gpuledger publish` (docs/FORMATS.md), in two phases: whatever is in
phase 2 is recorded after everything in phase 1 (crosscheck.sh ingests phase 1 to the end first).
  phase1-registry.jsonl, phase1-usage.jsonl, phase2-registry.jsonl, phase2-usage.jsonl
What is in it (one CSP, csp-x; KST month from p0 = 2026-03-01T00:00+09:00):
  al-1  inst-a, GOV_ADVANCED H200 × 8, capped at 800 GPU-hours: 4 h across the February/March
        boundary, then 24 × 6 h (the cap is crossed); phase 2: u1-3 corrected (c1), c1 corrected
        (c2), u1-3 corrected again (c3: refused, already corrected), u1-5 cancelled (c4), a
        correction of an unknown event (c5) and of the cancellation (c6), both refused; two
        overlapping outages (6 and 4 GPUs out of 8) and one across the period boundary; a
        fourth outage withdrawn (w1), and withdrawn again (w2: refused).
  al-2  inst-b (SME), LEASE_HPC H100 × 4, p0+1d..p0+8d; the rate card starts at p0+5d (the part
        before it cannot be priced); an outage of 3 GPUs over p0+4d..p0+6d. Phase 2 records a
        rate card effective before the month and re-rates p0+1d..p0+4d 12:00: that part is
        priced, p0+4d 12:00..p0+5d stays unpriced.
  al-3  inst-c, whose only institution record is effective from p0+10d; usage p0+9d..p0+12d.
  al-4  inst-a, 2 GPUs, usage p0+15d..p0+25d; phase 2 revokes it from p0+20d 06:00, and an outage
        covers p0+19d..p0+22d (no credit after the revocation).
  al-5  inst-b, 2 GPUs, usage p0+10d..p0+20d; phase 2 moves its end to p0+15d 03:00, then
        extends it to p0+40d (the usage cut off does not come back), and corrects u5-2.
  al-6  inst-b, 6 GPUs: two 3-GPU intervals at once (nodes n1, n2) under one 2-GPU outage (o7):
        each GPU out is credited once (4 GPU-hours), not once per interval (8).
  al-7  inst-a, 2 GPUs, usage p0+2d..p0+6d (one interval a day); phase 2 transfers it to inst-b
        from p0+4d 12:00 as al-7b (the usage after that leaves inst-a's invoice), and al-7b has
        usage p0+4d 12:00..p0+7d (inst-b's).
  u99   usage of an allocation that is never announced (parked, never counted).
Deterministic: no randomness, no clock.
"""
import json
import os
import sys

HOUR = 3_600_000
DAY = 24 * HOUR
P0 = 1772290800000  # 2026-03-01T00:00+09:00
BEFORE = P0 - 30 * DAY


class Scenario:
    def __init__(self):
        self.files = {"phase1-registry": [], "phase1-usage": [], "phase2-registry": [],
                      "phase2-usage": []}
        self.reg_n = 0
        self.producer_seq = 0

    def reg(self, phase, key, body):
        self.reg_n += 1
        self.files[phase + "-registry"].append(
            {"schemaVersion": 1, "eventId": "r-%03d" % self.reg_n, "emittedAtMs": P0 - DAY,
             key: body})

    def use(self, phase, event_id, key, body):
        self.producer_seq += 1
        self.files[phase + "-usage"].append(
            {"schemaVersion": 1, "eventId": event_id, "cspId": "csp-x", "producerId": "csp-x-m1",
             "producerSeq": self.producer_seq, "emittedAtMs": P0 + 40 * DAY, key: body})


def interval(alloc, model, gpus, start, end, node="n0"):
    return {"allocationId": alloc, "gpuModel": model, "gpuCount": gpus, "startMs": start,
            "endMs": end, "nodeId": node}


def build():
    s = Scenario()
    s.reg("phase1", "copayPolicy", {"institutionType": "ACADEMIA", "copayBp": 0,
                                    "effectiveFromMs": BEFORE})
    s.reg("phase1", "copayPolicy", {"institutionType": "SME", "copayBp": 900,
                                    "effectiveFromMs": BEFORE})
    s.reg("phase1", "rateCard", {"program": "GOV_ADVANCED", "gpuModel": "H200",
                                 "krwPerGpuHour": 4800, "effectiveFromMs": BEFORE})
    s.reg("phase1", "rateCard", {"program": "LEASE_HPC", "gpuModel": "H100",
                                 "krwPerGpuHour": 3600, "effectiveFromMs": P0 + 5 * DAY})
    s.reg("phase1", "cspContract", {"cspId": "csp-x", "ownUseCapBp": 1000,
                                    "effectiveFromMs": BEFORE})
    for program, model, n in (("GOV_ADVANCED", "H200", 64), ("LEASE_HPC", "H100", 32)):
        s.reg("phase1", "gpuPool", {"cspId": "csp-x", "program": program, "gpuModel": model,
                                    "gpuCount": n, "effectiveFromMs": BEFORE})
    for inst, kind, start in (("inst-a", "ACADEMIA", BEFORE), ("inst-b", "SME", BEFORE),
                              ("inst-c", "SME", P0 + 10 * DAY)):
        s.reg("phase1", "institution", {"institutionId": inst, "name": inst.upper(),
                                        "type": kind, "effectiveFromMs": start})
    for alloc, inst, program, model, gpus, cap in (
            ("al-1", "inst-a", "GOV_ADVANCED", "H200", 8, 8 * 100 * HOUR),
            ("al-2", "inst-b", "LEASE_HPC", "H100", 4, 0),
            ("al-3", "inst-c", "GOV_ADVANCED", "H200", 4, 0),
            ("al-4", "inst-a", "GOV_ADVANCED", "H200", 2, 0),
            ("al-5", "inst-b", "GOV_ADVANCED", "H200", 2, 0),
            ("al-6", "inst-b", "GOV_ADVANCED", "H200", 6, 0),
            ("al-7", "inst-a", "GOV_ADVANCED", "H200", 2, 0)):
        a = {"allocationId": alloc, "institutionId": inst, "program": program, "cspId": "csp-x",
             "gpuModel": model, "gpuCount": gpus, "startMs": P0 - 10 * DAY,
             "endMs": P0 + 60 * DAY}
        if cap:
            a["gpuMsCap"] = cap
        s.reg("phase1", "allocation", a)

    s.use("phase1", "u1-boundary", "usage", interval("al-1", "H200", 8, P0 - 2 * HOUR,
                                                     P0 + 2 * HOUR))
    for i in range(24):
        t = P0 + DAY + i * 6 * HOUR
        s.use("phase1", "u1-%d" % i, "usage", interval("al-1", "H200", 8, t, t + 6 * HOUR))
    for i in range(14):
        t = P0 + DAY + i * 12 * HOUR
        s.use("phase1", "u2-%d" % i, "usage", interval("al-2", "H100", 4, t, t + 12 * HOUR))
    for i in range(6):
        t = P0 + 9 * DAY + i * 12 * HOUR
        s.use("phase1", "u3-%d" % i, "usage", interval("al-3", "H200", 4, t, t + 12 * HOUR))
    for i in range(10):
        t = P0 + 15 * DAY + i * DAY
        s.use("phase1", "u4-%d" % i, "usage", interval("al-4", "H200", 2, t, t + DAY))
    for i in range(10):
        t = P0 + 10 * DAY + i * DAY
        s.use("phase1", "u5-%d" % i, "usage", interval("al-5", "H200", 2, t, t + DAY))
    for node in ("n1", "n2"):  # two 3-GPU intervals at once on one allocation
        s.use("phase1", "u6-" + node, "usage",
              interval("al-6", "H200", 3, P0 + 25 * DAY, P0 + 25 * DAY + 4 * HOUR, node))
    for i in range(4):
        t = P0 + 2 * DAY + i * DAY
        s.use("phase1", "u7-%d" % i, "usage", interval("al-7", "H200", 2, t, t + DAY))
    s.use("phase1", "u99", "usage", interval("al-99", "H200", 1, P0 + 3 * DAY,
                                             P0 + 3 * DAY + HOUR))

    s.reg("phase2", "allocationAmendment", {"allocationId": "al-4",
                                            "effectiveFromMs": P0 + 20 * DAY + 6 * HOUR,
                                            "revoke": True})
    s.reg("phase2", "allocationAmendment", {"allocationId": "al-5",
                                            "effectiveFromMs": P0 + 14 * DAY,
                                            "newEndMs": P0 + 15 * DAY + 3 * HOUR})
    s.reg("phase2", "allocationAmendment", {"allocationId": "al-5",
                                            "effectiveFromMs": P0 + 14 * DAY,
                                            "newEndMs": P0 + 40 * DAY})

    s.reg("phase2", "allocationAmendment",
          {"allocationId": "al-7", "effectiveFromMs": P0 + 4 * DAY + 12 * HOUR,
           "transfer": {"newAllocationId": "al-7b", "toInstitutionId": "inst-b"}})
    for i, (start, end) in enumerate(((P0 + 4 * DAY + 12 * HOUR, P0 + 5 * DAY),
                                      (P0 + 5 * DAY, P0 + 6 * DAY), (P0 + 6 * DAY, P0 + 7 * DAY))):
        s.use("phase2", "u7b-%d" % i, "usage", interval("al-7b", "H200", 2, start, end))

    # A rate card effective before the month but recorded after the usage changes nothing by
    # itself; the operator's re-rating of [p0+1d, p0+4d 12:00) prices that part of al-2's usage,
    # and with it part of the o3 outage's credit.
    s.reg("phase2", "rateCard", {"program": "LEASE_HPC", "gpuModel": "H100",
                                 "krwPerGpuHour": 3500, "effectiveFromMs": BEFORE})
    s.reg("phase2", "rerating", {"program": "LEASE_HPC", "gpuModel": "H100",
                                 "fromMs": P0 + DAY, "toMs": P0 + 4 * DAY + 12 * HOUR,
                                 "reason": "rate card recorded late"})

    def correction(event_id, target, alloc, replacement=None):
        c = {"targetEventId": target, "reason": "scenario", "allocationId": alloc}
        if replacement:
            c["replacement"] = replacement
        s.use("phase2", event_id, "correction", c)

    t3 = P0 + DAY + 3 * 6 * HOUR
    t5 = P0 + DAY + 5 * 6 * HOUR
    correction("c1", "u1-3", "al-1", interval("al-1", "H200", 4, t3, t3 + 5 * HOUR))
    correction("c2", "c1", "al-1", interval("al-1", "H200", 2, t3, t3 + 4 * HOUR))
    correction("c3", "u1-3", "al-1", interval("al-1", "H200", 8, t3, t3 + 6 * HOUR))
    correction("c4", "u1-5", "al-1")
    correction("c5", "no-such-event", "al-1",
               interval("al-1", "H200", 1, P0 + 20 * DAY, P0 + 20 * DAY + HOUR, "n9"))
    correction("c6", "c4", "al-1", interval("al-1", "H200", 1, t5, t5 + HOUR))
    correction("c7", "u5-2", "al-5",
               interval("al-5", "H200", 1, P0 + 12 * DAY, P0 + 12 * DAY + 20 * HOUR))

    def outage(event_id, alloc, program, model, gpus, start, end):
        s.use("phase2", event_id, "outage",
              {"allocationId": alloc, "program": program, "gpuModel": model, "gpuCount": gpus,
               "startMs": start, "endMs": end, "cause": "scenario"})

    t10 = P0 + DAY + 10 * 6 * HOUR
    outage("o1", "al-1", "GOV_ADVANCED", "H200", 6, t10, t10 + 3 * HOUR)
    outage("o2", "al-1", "GOV_ADVANCED", "H200", 4, t10 + HOUR, t10 + 5 * HOUR)
    outage("o3", "al-2", "LEASE_HPC", "H100", 3, P0 + 4 * DAY, P0 + 6 * DAY)
    outage("o4", "al-4", "GOV_ADVANCED", "H200", 1, P0 + 19 * DAY, P0 + 22 * DAY)
    outage("o5", "al-1", "GOV_ADVANCED", "H200", 8, P0 - 3 * HOUR, P0 + HOUR)
    # 2 GPUs out under both al-6 intervals: credited 2 GPUs × 2 h once, not once per interval.
    outage("o7", "al-6", "GOV_ADVANCED", "H200", 2, P0 + 25 * DAY + HOUR, P0 + 25 * DAY + 3 * HOUR)
    # A mistaken outage, withdrawn (its credit goes); withdrawn again: refused.
    outage("o6", "al-1", "GOV_ADVANCED", "H200", 2, t10 + 6 * HOUR, t10 + 12 * HOUR)
    for w in ("w1", "w2"):
        s.use("phase2", w, "outageWithdrawal",
              {"targetEventId": "o6", "allocationId": "al-1", "program": "GOV_ADVANCED",
               "gpuModel": "H200", "reason": "declared by mistake"})
    return s


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    os.makedirs(argv[1], exist_ok=True)
    for name, events in build().files.items():
        with open(os.path.join(argv[1], name + ".jsonl"), "w") as f:
            f.writelines(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
