#!/usr/bin/env python3
"""Writes a small, deterministic sample month for gpuledger's main job.

Outputs two JSON-lines files in the protobuf JSON mapping (docs/FORMATS.md):
  registry.jsonl  the operator's reference data: institutions, allocations, rate cards,
                  co-pay policies, CSP contracts and GPU pools;
  usage.jsonl     two CSPs' metered usage for the month, one event per node-hour or less,
                  with a few exact duplicates (as a retrying CSP sends), one conflicting
                  duplicate and one zero-length interval mixed in, so the run shows what
                  ingest does with each; own use and outages;
  late.jsonl      events sent after the month is closed (a late interval, a cancellation).

Usage: make_sample.py OUT_DIR [--period 2026-03] [--seed 7]
Integers only: times in ms since the epoch (UTC), money in whole won.
"""
import argparse
import calendar
import json
import os
import random
import time

HOUR = 3_600_000
DAY = 24 * HOUR
KST = 9 * HOUR


def month_start_ms(year, month):
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000 - KST


def registry_events(start, end):
    ev = []

    def add(body_key, body):
        ev.append({"schemaVersion": 1, "eventId": f"reg-{len(ev) + 1:04d}",
                   "emittedAtMs": start - DAY, body_key: body})

    before = start - 30 * DAY
    for t, bp in [("ACADEMIA", 0), ("RESEARCH_INSTITUTE", 0), ("PUBLIC_AGENCY", 0),
                  ("SME", 900), ("STARTUP", 900), ("MID_SIZED_ENTERPRISE", 3000),
                  ("LARGE_ENTERPRISE", 5000)]:
        add("copayPolicy", {"institutionType": t, "copayBp": bp, "effectiveFromMs": before})
    rates = [("GOV_ADVANCED", "H200", 4800), ("GOV_ADVANCED", "B200", 7900),
             ("LEASE_HPC", "H100", 3600), ("LEASE_HPC", "H200", 5100),
             ("LEASE_RESEARCH", "H200", 5100), ("LEASE_RESEARCH", "B200", 8300)]
    for program, model, krw in rates:
        add("rateCard", {"program": program, "gpuModel": model, "krwPerGpuHour": krw,
                         "effectiveFromMs": before})
    # A mid-month price change: usage is split at this instant.
    add("rateCard", {"program": "GOV_ADVANCED", "gpuModel": "H200", "krwPerGpuHour": 5000,
                     "effectiveFromMs": start + 15 * DAY})
    for csp, cap in [("csp-alpha", 1500), ("csp-beta", 1000)]:
        add("cspContract", {"cspId": csp, "ownUseCapBp": cap, "effectiveFromMs": before})
    pools = [("csp-alpha", "GOV_ADVANCED", "H200", 64), ("csp-alpha", "GOV_ADVANCED", "B200", 32),
             ("csp-beta", "LEASE_HPC", "H100", 32), ("csp-beta", "LEASE_RESEARCH", "H200", 48)]
    for csp, program, model, n in pools:
        pool = {"cspId": csp, "program": program, "gpuModel": model, "gpuCount": n,
                "effectiveFromMs": before}
        # csp-beta's HPC lease is paid per reserved capacity (docs/SETTLEMENT.md).
        if (csp, program) == ("csp-beta", "LEASE_HPC"):
            pool["leasePricing"] = "LEASE_PRICING_RESERVED"
        add("gpuPool", pool)
    institutions = [
        ("inst-hanbit-univ", "한빛대학교", "ACADEMIA"),
        ("inst-seoul-tech", "서울과학기술원", "ACADEMIA"),
        ("inst-nari", "국립인공지능연구원", "RESEARCH_INSTITUTE"),
        ("inst-daehan-bio", "(주)대한바이오", "SME"),
        ("inst-mirae-robot", "미래로보틱스(주)", "STARTUP"),
        ("inst-nuri-vision", "누리비전", "STARTUP"),
        ("inst-kangnam-semi", "강남반도체(주)", "MID_SIZED_ENTERPRISE"),
        ("inst-pyeong-llm", "평LLM연구소", "SME"),
    ]
    for iid, name, t in institutions:
        add("institution", {"institutionId": iid, "name": name, "type": t,
                            "effectiveFromMs": before})
    # 평LLM연구소 (Pyeong LLM Lab) becomes a research institute on the 20th: its co-pay drops to 0%.
    add("institution", {"institutionId": "inst-pyeong-llm", "name": "평LLM연구소",
                        "type": "RESEARCH_INSTITUTE", "effectiveFromMs": start + 19 * DAY})
    allocations = [
        ("alloc-0001", "inst-hanbit-univ", "LEASE_RESEARCH", "csp-beta", "H200", 16),
        ("alloc-0002", "inst-seoul-tech", "GOV_ADVANCED", "csp-alpha", "H200", 8),
        ("alloc-0003", "inst-nari", "GOV_ADVANCED", "csp-alpha", "B200", 16),
        ("alloc-0004", "inst-daehan-bio", "LEASE_HPC", "csp-beta", "H100", 4),
        ("alloc-0005", "inst-mirae-robot", "LEASE_HPC", "csp-beta", "H100", 8),
        ("alloc-0006", "inst-nuri-vision", "GOV_ADVANCED", "csp-alpha", "H200", 2),
        ("alloc-0007", "inst-kangnam-semi", "GOV_ADVANCED", "csp-alpha", "H200", 8),
        ("alloc-0008", "inst-pyeong-llm", "GOV_ADVANCED", "csp-alpha", "B200", 8),
        ("alloc-0009", "inst-hanbit-univ", "GOV_ADVANCED", "csp-alpha", "H200", 4),
    ]
    for aid, iid, program, csp, model, n in allocations:
        add("allocation", {"allocationId": aid, "institutionId": iid, "program": program,
                           "cspId": csp, "gpuModel": model, "gpuCount": n,
                           "startMs": start - 10 * DAY, "endMs": end + 60 * DAY})
    # Parties of the invoices (docs/SETTLEMENT.md, "Invoices"): the operator, the CSPs and the
    # institutions, with registration numbers whose check digits are right (fictitious ones).
    parties = [
        ("nipa", "정보통신산업진흥원", "220820001", "박진흥", "충청북도 진천군 덕산읍 정통로 10"),
        ("csp-alpha", "(주)알파클라우드", "120810002", "이알파", "서울특별시 강남구 테헤란로 101"),
        ("csp-beta", "베타컴퓨팅(주)", "214860003", "최베타", "경기도 성남시 분당구 판교역로 235"),
        ("inst-hanbit-univ", "학교법인 한빛학원 한빛대학교", "305820004", "김한빛",
         "대전광역시 유성구 대학로 99"),
        ("inst-seoul-tech", "서울과학기술원", "217820005", "정과기", "서울특별시 노원구 공릉로 232"),
        ("inst-nari", "국립인공지능연구원", "314820006", "윤나리", "대전광역시 유성구 가정로 218"),
        ("inst-daehan-bio", "(주)대한바이오", "124860007", "한대한", "인천광역시 연수구 송도과학로 32"),
        ("inst-mirae-robot", "미래로보틱스(주)", "131860008", "오미래", "경기도 안산시 상록구 해안로 705"),
        ("inst-nuri-vision", "누리비전", "605260009", "강누리", "부산광역시 해운대구 센텀중앙로 48"),
        ("inst-kangnam-semi", "강남반도체(주)", "211880010", "서강남", "서울특별시 서초구 강남대로 465"),
        ("inst-pyeong-llm", "평LLM연구소(주)", "110860011", "문평", "서울특별시 마포구 월드컵북로 396"),
    ]
    for pid, name, nine, rep, address in parties:
        contact = {"name": "정산 담당자", "department": "재무팀", "email": f"billing@{pid}.example.kr",
                   "phone": "02-0000-0000"}
        add("party", {"partyId": pid, "legalName": name,
                      "registrationNumber": registration_number(nine), "representative": rep,
                      "address": address, "businessType": "서비스", "businessItem": "연구개발",
                      "billingContact": contact, "taxType": "TAX_TAXABLE",
                      "effectiveFromMs": before})
    # The operator issues the invoices of the state's own GPUs; each CSP those of its leases.
    # VAT 10%, rounded half away from zero: the rule of docs/SETTLEMENT.md without terms.
    add("billingTerms", {"effectiveFromMs": before, "operatorPartyId": "nipa",
                         "issuers": [{"program": "LEASE_HPC", "issuer": "ISSUER_CSP"},
                                     {"program": "LEASE_RESEARCH", "issuer": "ISSUER_CSP"}],
                         "vatBp": 1000, "vatRounding": "VAT_ROUND_HALF_AWAY_FROM_ZERO",
                         "paymentDueDays": 30,
                         "paymentInstructions": "기업은행 000-000000-00-000 (예금주: 각 청구서의 공급자). "
                                                "입금자명에 청구서 번호를 적어 주십시오."})
    # The year's budgets (docs/REPORTS.md): the state's GPUs, and the second call within them;
    # alerts when half, 80%, 90% and all of it is drawn.
    year = time.gmtime((start + KST) // 1000).tm_year
    add("budget", {"program": "GOV_ADVANCED", "fiscalYear": year, "amountKrw": 300000000,
                   "effectiveFromMs": before, "alertThresholdsBp": [5000, 8000, 9000, 10000],
                   "note": f"{year}년 본예산"})
    add("budget", {"program": "LEASE_HPC", "fiscalYear": year, "amountKrw": 320000000,
                   "effectiveFromMs": before, "alertThresholdsBp": [5000, 8000, 10000]})
    # Alerts beyond the budgets: an allocation's cap 80% and 95% used; a CSP whose rejected
    # events are 5% or more of a day's (at least 10 events).
    add("alertSettings", {"effectiveFromMs": before, "allocationBalanceThresholdsBp": [8000, 9500],
                          "cspRejectionRateBp": 500, "cspRejectionMinEvents": 10})
    return ev, allocations


def registration_number(nine):
    """A business registration number: nine digits and the National Tax Service's check digit."""
    weights = [1, 3, 7, 1, 3, 7, 1, 3, 5]
    total = sum(int(d) * w for d, w in zip(nine, weights)) + int(nine[8]) * 5 // 10
    digits = nine + str((10 - total % 10) % 10)
    return f"{digits[:3]}-{digits[3:5]}-{digits[5:]}"


def usage_events(allocations, start, end, rng):
    events = []
    seqs = {}

    def add(csp, body_key, body):
        producer = f"{csp}-meter-1"
        seqs[producer] = seqs.get(producer, 0) + 1
        events.append({"schemaVersion": 1, "eventId": f"{csp}-{seqs[producer]:06d}",
                       "cspId": csp, "producerId": producer, "producerSeq": seqs[producer],
                       "emittedAtMs": body.get("endMs", start), body_key: body})

    for aid, _iid, _program, csp, model, granted in allocations:
        day = start
        while day < end:
            if rng.random() < 0.55:  # a job on this day
                job_start = day + rng.randrange(0, 14) * HOUR + rng.randrange(0, 60) * 60_000
                # Jobs of one allocation never overlap: each ends before the next day starts.
                job_end = min(job_start + rng.randrange(1, 10) * HOUR + rng.randrange(0, 60) * 60_000,
                              day + DAY)
                gpus = rng.randrange(1, granted + 1)
                nodes = [(f"{csp}-node-{int(aid[-4:]) * 4 + k:03d}", min(8, gpus - 8 * k))
                         for k in range((gpus + 7) // 8)]
                t = job_start
                while t < job_end:  # metered hour by hour
                    t_next = min(t + HOUR, job_end)
                    for node, n in nodes:
                        add(csp, "usage", {"allocationId": aid, "gpuModel": model, "gpuCount": n,
                                           "startMs": t, "endMs": t_next, "nodeId": node})
                    t = t_next
            day += DAY
    # csp-alpha's own use of the government GPUs it hosts: 16 H200s 16 h a day (over its 15%
    # cap of the 64-GPU pool) and 4 B200s 12 h a day (under it).
    day = start
    while day < end:
        for model, gpus, hours in [("H200", 16, 16), ("B200", 4, 12)]:
            add("csp-alpha", "ownUse", {"program": "GOV_ADVANCED", "gpuModel": model,
                                        "gpuCount": gpus, "startMs": day + 8 * HOUR,
                                        "endMs": day + (8 + hours) * HOUR,
                                        "nodeId": "csp-alpha-own-1"})
        day += DAY
    # Outages: 2 GPUs of one allocation for 6 hours (its usage then is credited), and 8 GPUs of
    # csp-beta's H100 pool for 12 hours of maintenance.
    add("csp-alpha", "outage", {"allocationId": "alloc-0002", "program": "GOV_ADVANCED",
                                "gpuModel": "H200", "gpuCount": 2, "startMs": start + 4 * DAY,
                                "endMs": start + 4 * DAY + 6 * HOUR, "cause": "gpu-xid-79"})
    add("csp-beta", "outage", {"program": "LEASE_HPC", "gpuModel": "H100", "gpuCount": 8,
                               "startMs": start + 10 * DAY, "endMs": start + 10 * DAY + 12 * HOUR,
                               "cause": "power-maintenance"})
    lines = [json.dumps(e, separators=(",", ":")) for e in events]
    # A CSP retrying: 3% of events are sent twice, byte for byte.
    dups = sorted(rng.sample(range(len(lines)), len(lines) * 3 // 100))
    # A CSP bug: one event id reused with different content, and one zero-length interval.
    conflict = dict(events[10])
    conflict["usage"] = dict(conflict["usage"], gpuCount=conflict["usage"]["gpuCount"] + 1)
    zero = dict(events[20])
    zero["usage"] = dict(zero["usage"], endMs=zero["usage"]["startMs"])
    zero["eventId"] = zero["eventId"] + "-z"
    out = list(lines) + [lines[i] for i in dups] + [
        json.dumps(conflict, separators=(",", ":")), json.dumps(zero, separators=(",", ":"))]
    # Sent after the month is closed: one late usage event for the month, and a correction
    # that cancels one of its events. They show up as adjustments on the next month.
    first = next(e for e in events if "usage" in e)
    alloc = first["usage"]["allocationId"]
    busy = [(e["usage"]["startMs"], e["usage"]["endMs"]) for e in events
            if "usage" in e and e["usage"]["allocationId"] == alloc]
    late_start = end - 2 * HOUR  # the latest 2-hour stretch of the month with no usage
    while any(s < late_start + 2 * HOUR and late_start < t for s, t in busy):
        late_start -= HOUR
    late = []
    for body_key, body in [
            ("usage", dict(first["usage"], startMs=late_start, endMs=late_start + 2 * HOUR)),
            ("correction", {"targetEventId": first["eventId"], "reason": "metering fault",
                            "allocationId": first["usage"]["allocationId"]})]:
        csp = first["cspId"]
        producer = f"{csp}-meter-1"
        seqs[producer] += 1
        late.append(json.dumps({"schemaVersion": 1, "eventId": f"{csp}-{seqs[producer]:06d}",
                                "cspId": csp, "producerId": producer,
                                "producerSeq": seqs[producer], "emittedAtMs": end + 2 * DAY,
                                body_key: body}, separators=(",", ":")))
    return out, len(events), len(dups), late


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--period", default="2026-03", help="month, YYYY-MM (KST)")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    year, month = (int(x) for x in a.period.split("-"))
    start = month_start_ms(year, month)
    end = month_start_ms(year + (month == 12), month % 12 + 1)
    rng = random.Random(a.seed)
    reg, allocations = registry_events(start, end)
    usage, distinct, dups, late = usage_events(allocations, start, end, rng)
    os.makedirs(a.out_dir, exist_ok=True)
    with open(os.path.join(a.out_dir, "registry.jsonl"), "w") as f:
        f.writelines(json.dumps(e, separators=(",", ":")) + "\n" for e in reg)
    with open(os.path.join(a.out_dir, "usage.jsonl"), "w") as f:
        f.writelines(line + "\n" for line in usage)
    with open(os.path.join(a.out_dir, "late.jsonl"), "w") as f:
        f.writelines(line + "\n" for line in late)
    print(f"sample {a.period} (seed {a.seed}): {len(reg)} registry events, {distinct} usage "
          f"events + {dups} exact duplicates + 1 conflicting duplicate + 1 zero-length interval; "
          f"{len(late)} late events for after the close")


if __name__ == "__main__":
    main()
