#!/usr/bin/env python3
"""Every CSV the API serves, opened by a spreadsheet: Gnumeric's ssconvert (Debian's gnumeric,
ops/setup.sh), which guesses types on import as Excel and LibreOffice do, then writes each cell
back out as its raw value.

For each CSV (the lists of invoices, statements and programme summaries of the closed month and
of the next month's draft, with its adjustments, and one invoice) it checks, cell by cell, that
the spreadsheet read what gpuledger meant:
  - text stays the same text: Hangul names intact (no mojibake: the file starts with a UTF-8
    byte-order mark), no id or period turned into a date, no formula evaluated (a cell that
    starts with = + - @ is written with a leading apostrophe, which the spreadsheet hides);
  - numbers stay the same numbers (won, GPU-ms; GPU-hours to their three decimals, as a
    spreadsheet holds a double), percentages read as fractions
    (9.00% is 0.09, the column beside them holds the basis points), true/false as booleans.

Env: GPULEDGER_API_ENV (the `api` fixture's env file); GPULEDGER_SSCONVERT (default ssconvert).
"""
import csv
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest
import urllib.request
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_env import ENV  # noqa: E402

URL = ENV["API_URL"]
TOKEN = ENV["TOKEN_FINANCE"]
SSCONVERT = os.environ.get("GPULEDGER_SSCONVERT", "ssconvert")
P, NEXT = "2026-03", "2026-04"
NUMBER = re.compile(r"-?\d+(\.\d+)?")
PERCENT = re.compile(r"-?\d+\.\d\d%")


def fetch(path):
    req = urllib.request.Request(URL + path, headers={"Authorization": "Bearer " + TOKEN})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def spreadsheet_cells(data, tmp):
    """The cells of CSV bytes `data` as the spreadsheet read them (raw values, UTF-8)."""
    src = os.path.join(tmp, "in.csv")
    out = os.path.join(tmp, "out.txt")
    with open(src, "wb") as f:
        f.write(data)
    subprocess.run([SSCONVERT, "--export-type=Gnumeric_stf:stf_assistant", "-O",
                    "separator=, format=raw quoting-mode=auto charset=UTF-8 eol=unix", src, out],
                   check=True, capture_output=True)
    with open(out, encoding="utf-8") as f:
        return list(csv.reader(f))


def misreads(data):
    """(What the spreadsheet misread in CSV bytes `data`, Hangul syllables seen)."""
    problems = []
    if not data.startswith(b"\xef\xbb\xbf"):
        problems.append("no UTF-8 byte-order mark")
        text = data.decode("utf-8")
    else:
        text = data[3:].decode("utf-8")
    ours = list(csv.reader(io.StringIO(text, newline="")))
    with tempfile.TemporaryDirectory() as tmp:
        theirs = spreadsheet_cells(data, tmp)
    if len(ours) < 2:
        problems.append("no rows")
    if len(theirs) != len(ours):
        problems.append(f"{len(ours)} rows written, {len(theirs)} read")
    header = ours[0] if ours else []
    hangul = 0
    for i, (a, b) in enumerate(zip(ours, theirs)):
        b = b + [""] * (len(a) - len(b))  # the spreadsheet drops trailing empty cells
        for col, mine, read in zip(header, a, b):
            if i > 0 and PERCENT.fullmatch(mine):
                ok = NUMBER.fullmatch(read) and Decimal(read) == Decimal(mine[:-1]) / 100
            elif i > 0 and NUMBER.fullmatch(mine):
                # A spreadsheet holds a double: 508.833 comes back as 508.83299999999999999.
                places = Decimal(10) ** -(len(mine.split(".")[1]) if "." in mine else 0)
                ok = NUMBER.fullmatch(read) and Decimal(read).quantize(places) == Decimal(mine)
            elif mine in ("true", "false"):
                ok = read.lower() == mine
            elif mine.startswith("'") and mine[1:2] in ("=", "+", "-", "@", "\t", "\r"):
                ok = read == mine[1:]
            else:
                ok = read == mine
            if not ok:
                problems.append(f"row {i} column {col}: {mine!r} read as {read!r}")
            hangul += sum(1 for c in mine if "\uac00" <= c <= "\ud7a3")
    return problems, hangul


class SpreadsheetTest(unittest.TestCase):
    def test_every_csv_reads_as_written(self):
        hangul = 0
        paths = []
        for period in (P, NEXT):
            for kind in ("invoices", "statements", "programs"):
                paths.append(f"/v1/periods/{period}/{kind}.csv")
        first = json.loads(fetch(f"/v1/periods/{P}/invoices"))["invoices"][0]["institution_id"]
        paths.append(f"/v1/periods/{P}/invoices/{first}.csv")
        for path in paths:
            with self.subTest(path=path):
                problems, n = misreads(fetch(path))
                self.assertEqual(problems, [], path)
                hangul += n
        # The sample's institutions have Korean names, so the invoice lists carry Hangul.
        self.assertGreater(hangul, 0, "no Hangul in any CSV: the check proves nothing about it")
        print(f"\n  {len(paths)} CSVs read as written; {hangul} Hangul syllables intact",
              file=sys.stderr)

    def test_the_check_catches_what_a_spreadsheet_misreads(self):
        """A period written as 2026-03 becomes a date, an unguarded formula is evaluated, a
        file without a byte-order mark is named: the comparison above would fail on each."""
        bad = "period,name,institution\r\n2026-03,=1+1,한빛대학교\r\n".encode("utf-8")
        problems, _ = misreads(bad)
        self.assertTrue(any("byte-order" in x for x in problems), problems)
        self.assertTrue(any("'2026-03' read as" in x for x in problems), problems)
        self.assertTrue(any("'=1+1' read as" in x for x in problems), problems)
        good = "\ufeffperiod_yyyymm,name,institution\r\n202603,'=1+1,한빛대학교\r\n"
        self.assertEqual(misreads(good.encode("utf-8")), ([], 5))


if __name__ == "__main__":
    sys.exit(0 if unittest.main(verbosity=2, exit=False).result.wasSuccessful() else 1)
