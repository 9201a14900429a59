#!/usr/bin/env python3
"""`gpuledger serve` over real HTTP: every endpoint of api/src/routes.cc against the sample
month, errors, who may read what (the role x endpoint matrix), the server's limits, token
rotation without a restart, and TLS.

Runs against the CTest fixture `api` (tests/api/serve_fixture.sh): GPULEDGER_API_ENV names its
env file (API_URL, tokens, data dir), GPULEDGER_BIN the gpuledger binary. Python 3 stdlib only.
The ledger holds the sample month 2026-03 (closed) and its late events (adjustments on the
2026-04 drafts). Assertions are about behaviour; the only clock bounds are liveness bounds
(something must happen within 10 s) that a working server meets by orders of magnitude.
"""
import base64
import concurrent.futures
import csv
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_env import ENV  # noqa: E402
BIN = os.environ["GPULEDGER_BIN"]
_url = urllib.parse.urlsplit(ENV["API_URL"])
HOST, PORT = _url.hostname, _url.port
P = "2026-03"  # the sample month, closed
NEXT = "2026-04"  # open; its drafts carry the late events as adjustments to 2026-03

# The columns of the role matrix, and each role's token.
ROLES = ("operator", "finance", "auditor", "csp:csp-alpha", "csp:csp-beta",
         "institution:inst-nari", "institution:inst-hanbit-univ")
TOKENS = {
    "operator": ENV["TOKEN_OPERATOR"],
    "finance": ENV["TOKEN_FINANCE"],
    "auditor": ENV["TOKEN_AUDITOR"],
    "csp:csp-alpha": ENV["TOKEN_CSP_ALPHA"],
    "csp:csp-beta": ENV["TOKEN_CSP_BETA"],
    "institution:inst-nari": ENV["TOKEN_INST_NARI"],
    "institution:inst-hanbit-univ": ENV["TOKEN_INST_HANBIT_UNIV"],
}
OP = TOKENS["operator"]
LIVENESS_S = 10  # generous: each of these takes milliseconds on a working server


# ---- HTTP helpers ----

class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case name -> list of values
        self.body = body

    def header(self, name):
        v = self.headers.get(name.lower())
        return v[0] if v else None

    @property
    def text(self):
        return self.body.decode("utf-8")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.header('content-type')} {self.body[:300]!r}>"


def request(method, path, token=None, headers=None, body=None, host=None, port=None,
            context=None, timeout=30):
    host = host or HOST
    port = port or PORT
    if context is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer " + token
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        hdrs = {}
        for k, v in r.getheaders():
            hdrs.setdefault(k.lower(), []).append(v)
        return Resp(r.status, hdrs, data)
    finally:
        conn.close()


def get(path, token=OP, **kw):
    return request("GET", path, token=token, **kw)


def every_institution(invoice_list):
    """The invoices and the institutions that owe nothing (no invoice issued) of a list."""
    return invoice_list["invoices"] + invoice_list["nothing_owed"]


def get_json(path, token=OP, **kw):
    r = get(path, token=token, **kw)
    assert r.status == 200, f"GET {path}: {r!r}"
    assert r.header("content-type") == "application/json", r
    return r.json()


def raw_exchange(data, port=None, timeout=LIVENESS_S):
    """Sends raw bytes on a new connection, returns everything read until the server closes."""
    with socket.create_connection((HOST, port or PORT), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
        return out


def status_of(raw):
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", raw)
    return int(m.group(1)) if m else None


def body_of(raw):
    return raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""


def parse_csv(text):
    """Rows of one of gpuledger's CSVs, which start with a UTF-8 byte-order mark."""
    assert text.startswith("\ufeff"), text[:40]
    return list(csv.DictReader(io.StringIO(text[1:])))


def yyyymm(period):
    """'2026-03' as the CSVs write it: 202603."""
    return period.replace("-", "")


def wait_until(predicate, what, limit_s=LIVENESS_S, every_s=0.1):
    start = time.monotonic()
    last = None
    while time.monotonic() - start < limit_s:
        last = predicate()
        if last:
            return time.monotonic() - start
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {limit_s} s (last: {last!r})")


class ApiTest(unittest.TestCase):
    maxDiff = 4000

    def assertError(self, r, status, code=None):
        """An API error: the status, and RFC 9457 problem details with gpuledger's code."""
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.header("content-type"), "application/problem+json", r)
        body = r.json()
        self.assertEqual(sorted(body), ["code", "detail", "status", "title", "type"], body)
        self.assertEqual(body["status"], status, body)
        self.assertEqual(body["type"], "tag:gpuledger,2026:problem/" + body["code"], body)
        self.assertIsInstance(body["detail"], str)
        self.assertTrue(body["detail"], body)
        self.assertTrue(body["title"], body)
        if code is not None:
            self.assertEqual(body["code"], code, body)
        return body


# ---- the sample's facts, read once through the API as the operator ----

class Sample:
    _loaded = False

    @classmethod
    def load(cls):
        if cls._loaded:
            return cls
        cls.head = get_json("/v1/ledger/head")["seq"]
        entries = []
        frm = 1
        while frm:
            page = get_json(f"/v1/ledger/entries?from={frm}&limit=1000")
            entries += page["entries"]
            frm = page["next_from"]
        cls.entries = entries
        cls.by_source = {}
        for e in entries:
            cls.by_source.setdefault(e["source_id"], []).append(e)
        cls.closes = get_json("/v1/periods")
        cls.status = {p: get_json(f"/v1/periods/{p}") for p in (P, NEXT)}
        cls._loaded = True
        return cls


# ---- every endpoint ----

class EndpointTest(ApiTest):
    @classmethod
    def setUpClass(cls):
        cls.s = Sample.load()

    def test_healthz_readyz(self):
        r = request("GET", "/healthz")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json(), {"status": "ok"})
        self.assertEqual(r.header("cache-control"), "no-store")
        self.assertEqual(r.header("x-content-type-options"), "nosniff")
        ready = request("GET", "/readyz").json()
        self.assertEqual(ready["status"], "ready")
        self.assertEqual(ready["ledger_head"], self.s.head)
        self.assertEqual(ready["settled_through"], self.s.head)
        self.assertEqual(self.s.head, int(ENV["API_LEDGER_HEAD"]))

    def test_openapi_is_served_as_built(self):
        r = request("GET", "/v1/openapi.yaml")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("content-type"), "application/yaml")
        spec = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../docs/openapi.yaml")
        with open(spec, "rb") as f:
            self.assertEqual(r.body, f.read())

    def test_root_redirects_to_pages(self):
        r = request("GET", "/")
        self.assertEqual(r.status, 302)
        self.assertEqual(r.header("location"), "/ui/invoices")

    def test_head_request_has_headers_only(self):
        full = get("/v1/periods")
        r = request("HEAD", "/v1/periods", token=OP)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"")
        self.assertEqual(r.header("content-length"), str(len(full.body)))

    def test_periods(self):
        c = self.s.closes
        self.assertEqual(c["format"], "gpuledger.closes/1")
        self.assertEqual(c["last_closed"], P)
        self.assertEqual(c["first_open"], NEXT)
        self.assertEqual(c["applied_through"], self.s.head)
        self.assertEqual([x["period"] for x in c["closes"]], [P])
        close = c["closes"][0]
        self.assertLess(close["covered_seq"], close["close_seq"])
        self.assertLessEqual(close["close_seq"], self.s.head)
        # 5 invoices, 3 institutions that owe nothing (academia and research: 0% co-pay),
        # 2 CSP statements, 3 programme summaries.
        docs = sorted(d["document"] for d in close["digests"])
        self.assertEqual(len(docs), 13, docs)
        self.assertEqual(sum(d.startswith("invoice/") for d in docs), 5)
        self.assertEqual([d for d in docs if d.startswith("usage/")],
                         ["usage/inst-hanbit-univ", "usage/inst-nari", "usage/inst-seoul-tech"])
        self.assertEqual([d for d in docs if d.startswith("statement/")],
                         ["statement/csp-alpha", "statement/csp-beta"])
        self.assertEqual(sum(d.startswith("program/") for d in docs), 3)
        for d in close["digests"]:
            self.assertRegex(d["sha256"], r"^[0-9a-f]{64}$")

    def test_period_status_closed_and_open(self):
        closed, open_ = self.s.status[P], self.s.status[NEXT]
        close = self.s.closes["closes"][0]
        self.assertEqual(closed["period"], P)
        self.assertEqual(closed["status"], "closed")
        self.assertEqual(closed["close_seq"], close["close_seq"])
        self.assertEqual(closed["covered_seq"], close["covered_seq"])
        self.assertEqual(closed["closed_at_ms"], close["closed_at_ms"])
        self.assertEqual(closed["digests"], close["digests"])
        self.assertEqual(open_["period"], NEXT)
        self.assertEqual(open_["status"], "open")
        self.assertEqual(open_["close_seq"], 0)
        self.assertEqual(open_["covered_seq"], self.s.head)
        self.assertEqual(open_["digests"], [])
        # A period before anything happened is open and empty, not an error.
        early = get_json("/v1/periods/2025-01")
        self.assertEqual(early["status"], "open")

    def test_invoice_list(self):
        d = get_json(f"/v1/periods/{P}/invoices")
        self.assertEqual(d["status"], "closed")
        self.assertEqual(d["covered_seq"], self.s.status[P]["covered_seq"])
        ids = [i["institution_id"] for i in d["invoices"]]
        self.assertEqual(len(ids), 5)
        self.assertIn("inst-daehan-bio", ids)
        # Academia and research pay 0%: they owe nothing and get no invoice, only their usage.
        self.assertEqual([i["institution_id"] for i in d["nothing_owed"]],
                         ["inst-hanbit-univ", "inst-nari", "inst-seoul-tech"])
        for inv in d["nothing_owed"]:
            self.assertEqual((inv["amount_due_krw"], inv["numbers"]), (0, []), inv)
        for inv in d["invoices"]:
            # Closed: every bill is numbered.
            self.assertTrue(inv["numbers"] and all(inv["numbers"]), inv)
        for inv in every_institution(d):
            t = inv["totals"]
            self.assertEqual(t["list_krw"], t["copay_krw"] + t["subsidy_krw"], inv)
            self.assertEqual(inv["amount_due_krw"], t["copay_krw"] + inv["vat_krw"], inv)
            self.assertEqual(inv["adjustments"], 0, inv)
            one = get_json(f"/v1/periods/{P}/invoices/{inv['institution_id']}")
            self.assertEqual(one["totals"], t)
            self.assertEqual(one["amount_due_krw"], inv["amount_due_krw"])
            self.assertEqual(len(one["lines"]), inv["lines"])

    def test_invoice_formats_by_suffix_and_accept(self):
        base = f"/v1/periods/{P}/invoices/inst-daehan-bio"
        js = get(base)
        self.assertEqual(js.status, 200)
        self.assertEqual(js.header("content-type"), "application/json")
        inv = js.json()
        self.assertEqual(inv["format"], "gpuledger.invoice/1")
        # A Korean billing document: numbered bills with both parties (issue 17).
        self.assertEqual(inv["recipient"]["registration_number"], "124-86-00071")
        self.assertTrue(inv["bills"] and all(b["number"] for b in inv["bills"]), inv["bills"])
        self.assertEqual({b["issuer_party_id"] for b in inv["bills"]}, {"csp-beta"})
        self.assertEqual((inv["period"], inv["institution_id"]), (P, "inst-daehan-bio"))
        self.assertEqual(get(base + ".json").body, js.body)
        self.assertEqual(get(base, headers={"Accept": "application/json"}).body, js.body)
        csv_ = get(base + ".csv")
        self.assertEqual(csv_.status, 200)
        self.assertEqual(csv_.header("content-type"), "text/csv; charset=utf-8")
        self.assertTrue(csv_.body.startswith(
            b"\xef\xbb\xbfperiod_yyyymm,institution_id,institution_name,"), csv_.body[:80])
        self.assertEqual(csv_.header("content-disposition"),
                         f'attachment; filename="gpuledger-{P}-invoice-inst-daehan-bio.csv"')
        self.assertEqual(get(base, headers={"Accept": "text/csv"}).body, csv_.body)
        html = get(base + ".html")
        self.assertEqual(html.status, 200)
        self.assertEqual(html.header("content-type"), "text/html; charset=utf-8")
        # For people: Korean unless English is asked for (Accept-Language or ?lang=).
        self.assertIn("자부담금 청구서: (주)대한바이오", html.text)
        self.assertIn("확정", html.text)
        self.assertIn('<html lang="ko">', html.text)
        self.assertEqual(html.header("content-language"), "ko")
        english = get(base + ".html", headers={"Accept-Language": "en-US,en;q=0.9"})
        self.assertIn("Co-pay invoice: (주)대한바이오", english.text)
        self.assertIn("FINAL", english.text)
        self.assertEqual(english.header("content-language"), "en")
        self.assertEqual(get(base + ".html?lang=en").body, english.body)
        self.assertEqual(get(base + ".html?lang=ko",
                             headers={"Accept-Language": "en"}).body, html.body)
        # Only the page's words differ: the JSON, and so the digest, is the same.
        self.assertEqual(get(base + ".json", headers={"Accept-Language": "en"}).body, js.body)
        browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        self.assertEqual(get(base, headers={"Accept": browser_accept}).body, html.body)
        # Closed: each representation has its own ETag, the SHA-256 of its bytes; the JSON's is
        # the document's digest recorded at the close. Cacheable, privately.
        digest = {d["document"]: d["sha256"] for d in self.s.status[P]["digests"]}
        self.assertEqual(js.header("etag"), '"%s"' % digest["invoice/inst-daehan-bio"])
        for r in (js, csv_, html):
            self.assertEqual(r.header("x-gpuledger-status"), "closed")
            self.assertEqual(r.header("x-gpuledger-covered-seq"),
                             str(self.s.status[P]["covered_seq"]))
            self.assertEqual(r.header("etag"), '"%s"' % hashlib.sha256(r.body).hexdigest())
            self.assertEqual(r.header("cache-control"), "private, max-age=86400")
            self.assertIn("Accept", r.header("vary"))
        self.assertEqual(len({js.header("etag"), csv_.header("etag"), html.header("etag"),
                              english.header("etag")}), 4)

    def test_conditional_requests_negotiation_and_compression(self):
        base = f"/v1/periods/{P}/invoices/inst-daehan-bio"
        for suffix in ("", ".csv", ".html"):
            full = get(base + suffix)
            etag = full.header("etag")
            for asked in (etag, "W/" + etag, f'"nope", {etag}', "*"):
                with self.subTest(suffix=suffix, asked=asked):
                    r = get(base + suffix, headers={"If-None-Match": asked})
                    self.assertEqual(r.status, 304, r)
                    self.assertEqual(r.body, b"")
                    self.assertEqual(r.header("etag"), etag)
            self.assertEqual(get(base + suffix, headers={"If-None-Match": '"other"'}).status, 200)
        # Another representation's ETag does not match this one.
        self.assertEqual(get(base + ".csv", headers={"If-None-Match": get(base).header("etag")})
                         .status, 200)
        # A draft changes with the ledger: no ETag, never stored.
        draft = get(f"/v1/periods/{NEXT}/statements/csp-alpha")
        self.assertEqual(draft.status, 200, draft)
        self.assertIsNone(draft.header("etag"))
        self.assertEqual(draft.header("cache-control"), "no-store")
        # q-values: a format refused with q=0 is not chosen; nothing acceptable is 406.
        for accept, want in [("text/html;q=0, application/json", "application/json"),
                             ("text/html;q=0.5, text/csv;q=0.9", "text/csv; charset=utf-8"),
                             ("*/*;q=0.1, text/html", "text/html; charset=utf-8"),
                             ("text/*;q=0.3, application/json;q=0.2", "text/html; charset=utf-8"),
                             ("text/*;q=0.3, text/html;q=0.1", "text/csv; charset=utf-8"),
                             ("application/*", "application/json")]:
            with self.subTest(accept=accept):
                r = get(base, headers={"Accept": accept})
                self.assertEqual((r.status, r.header("content-type")), (200, want), r)
        self.assertError(get(base, headers={"Accept": "text/html;q=0"}), 406, "not_acceptable")
        self.assertError(get(base, headers={"Accept": "image/png"}), 406, "not_acceptable")
        # gzip when asked for; the ETag becomes weak (same content, other bytes) and still
        # matches If-None-Match.
        plain = get(base + ".html")
        gz = get(base + ".html", headers={"Accept-Encoding": "gzip, br;q=0.5"})
        self.assertEqual(gz.header("content-encoding"), "gzip")
        self.assertEqual(gzip.decompress(gz.body), plain.body)
        self.assertLess(len(gz.body), len(plain.body))
        self.assertEqual(gz.header("etag"), "W/" + plain.header("etag"))
        self.assertEqual(get(base + ".html", headers={"Accept-Encoding": "gzip",
                                                      "If-None-Match": gz.header("etag")}).status,
                         304)
        self.assertIsNone(get(base + ".html", headers={"Accept-Encoding": "gzip;q=0"})
                          .header("content-encoding"))
        # In a path '+' is itself, not a space.
        r = get("/v1/ledger/events/csp-alpha/no+such+event")
        self.assertError(r, 404, "not_found")
        self.assertIn("no+such+event", r.json()["detail"])

    def test_an_institution_that_owes_nothing_gets_its_usage_not_an_invoice(self):
        base = f"/v1/periods/{P}/invoices/inst-nari"
        js = get(base)
        self.assertEqual(js.status, 200)
        inv = js.json()
        self.assertEqual((inv["bills"], inv["amount_due_krw"]), ([], 0))
        self.assertGreater(inv["totals"]["subsidy_krw"], 0)
        digest = {d["document"]: d["sha256"] for d in self.s.status[P]["digests"]}
        self.assertNotIn("invoice/inst-nari", digest)
        self.assertEqual(js.header("etag"), '"%s"' % digest["usage/inst-nari"])
        self.assertEqual(get(base + ".csv").header("content-disposition"),
                         f'attachment; filename="gpuledger-{P}-usage-inst-nari.csv"')
        html = get(base + ".html").text
        self.assertIn("이용 내역서: 국립인공지능연구원", html)
        self.assertIn("청구서를 발행하지 않습니다", html)
        self.assertNotIn("청구서 번호", html)

    def test_etax_export_of_a_closed_period(self):
        r = get(f"/v1/periods/{P}/etax")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("content-disposition"),
                         f'attachment; filename="gpuledger-etax-{P}.json"')
        d = r.json()
        self.assertEqual((d["format"], d["period"], d["status"]), ("gpuledger.etax/1", P, "closed"))
        numbers = [n for i in get_json(f"/v1/periods/{P}/invoices")["invoices"]
                   for n in i["numbers"]]
        self.assertEqual(sorted(x["number"] for x in d["invoices"]), sorted(numbers))
        self.assertEqual(len(set(numbers)), len(numbers))
        for x in d["invoices"]:
            for party in (x["invoicer"], x["invoicee"]):
                self.assertRegex(party["registration_number"], r"^[0-9]{10}$", x["number"])
                self.assertTrue(party["name"], x["number"])
            self.assertEqual(x["total_krw"], x["supply_krw"] + x["tax_krw"])
            self.assertEqual(sum(i["supply_krw"] for i in x["items"]), x["supply_krw"])
            self.assertEqual(x["type_code"], "0101")
        # An open month has no numbers yet; institutions and CSPs do not get the export.
        self.assertError(get(f"/v1/periods/{NEXT}/etax"), 409, "period_open")
        self.assertError(get(f"/v1/periods/{P}/etax", token=TOKENS["institution:inst-nari"]),
                         403, "forbidden")

    def test_usage_report_sums_equal_the_documents(self):
        # The closed month by institution: each row is that institution's invoice lines (with
        # the adjustments pending on the next month's drafts) in GPU-ms and won.
        r = get_json(f"/v1/reports/usage?from={P}&to={P}&group_by=institution")
        self.assertEqual((r["format"], r["granularity"]), ("gpuledger.usage_report/1", "month"))
        self.assertEqual(r["periods"], [{"period": P, "closed": True}])
        expected = {}
        for item in every_institution(get_json(f"/v1/periods/{P}/invoices")):
            inv = get_json(f"/v1/periods/{P}/invoices/{item['institution_id']}")
            expected[inv["institution_id"]] = [sum(l["copay_krw"] for l in inv["lines"]),
                                               sum(l["subsidy_krw"] for l in inv["lines"])]
        for item in every_institution(get_json(f"/v1/periods/{NEXT}/invoices")):
            inv = get_json(f"/v1/periods/{NEXT}/invoices/{item['institution_id']}")
            for adj in inv["adjustments"]:
                if adj["adjusts_period"] == P:
                    e = expected.setdefault(inv["institution_id"], [0, 0])
                    e[0] += adj["copay_krw"]
                    e[1] += adj["subsidy_krw"]
        got = {row["group"]["institution"]: [row["copay_krw"], row["subsidy_krw"]]
               for row in r["rows"]}
        self.assertEqual(got, {k: v for k, v in expected.items() if v != [0, 0] or k in got})
        self.assertGreater(len(got), 3)
        # By day: GPU-ms only; the days of the month sum to the month.
        days = get_json(f"/v1/reports/usage?from={P}-01&to={P}-31&granularity=day&group_by=csp")
        self.assertNotIn("list_krw", days["rows"][0])
        self.assertEqual(sum(x["used_gpu_ms"] for x in days["rows"]), r["totals"]["used_gpu_ms"])
        cap = {(c["group"]["csp"]): c for c in get_json(
            f"/v1/reports/usage?from={P}&to={P}&group_by=csp")["capacity"]}
        self.assertEqual(set(cap), {"csp-alpha", "csp-beta"})
        for c in cap.values():
            self.assertEqual(c["capacity_gpu_ms"],
                             c["programme_use_gpu_ms"] + c["own_use_gpu_ms"] +
                             c["planned_outage_gpu_ms"] + c["unplanned_outage_gpu_ms"] +
                             c["idle_gpu_ms"])
        csv_text = get(f"/v1/reports/usage.csv?from={P}&to={P}&group_by=institution").text
        self.assertTrue(csv_text.startswith("\ufeffbucket,institution,used_gpu_ms"))
        self.assertIn("\r\n202603,", csv_text)

    def test_usage_report_is_scoped_by_role(self):
        nari = TOKENS["institution:inst-nari"]
        mine = get_json(f"/v1/reports/usage?from={P}&to={P}&group_by=institution", token=nari)
        self.assertEqual({row["group"]["institution"] for row in mine["rows"]}, {"inst-nari"})
        self.assertIsNone(mine["capacity"])
        self.assertError(get(f"/v1/reports/usage?from={P}&to={P}&institution=inst-hanbit-univ",
                             token=nari), 403, "forbidden")
        alpha = TOKENS["csp:csp-alpha"]
        theirs = get_json(f"/v1/reports/usage?from={P}&to={P}&group_by=csp", token=alpha)
        self.assertEqual({row["group"]["csp"] for row in theirs["rows"]}, {"csp-alpha"})
        self.assertEqual({c["group"]["csp"] for c in theirs["capacity"]}, {"csp-alpha"})
        self.assertError(get(f"/v1/reports/usage?from={P}&to={P}&csp=csp-beta", token=alpha),
                         403, "forbidden")
        for bad in ("from=2026-03-05&to=2026-03", "from=2026-03&to=2026-03&granularity=week",
                    "from=2026-03&to=2026-03&group_by=region", "to=2026-03"):
            self.assertError(get(f"/v1/reports/usage?{bad}"), 400, "bad_parameter")

    def test_report_pages_draw_their_charts_on_the_server(self):
        page = get(f"/ui/reports?from={P}&to={P}&granularity=month&group_by=csp,model").text
        self.assertIn('<svg xmlns="http://www.w3.org/2000/svg" class="chart"', page)
        self.assertIn('id="capacity"', page)
        self.assertIn(f"/v1/reports/usage.csv?from={P}", page)
        self.assertNotIn("<script", page)
        # Korean by default; an institution's page has no capacity.
        self.assertIn("용량의 용도별 구분", page)
        mine = get(f"/ui/reports?from={P}&to={P}", token=TOKENS["institution:inst-nari"]).text
        self.assertNotIn('id="capacity"', mine)
        bad = get("/ui/reports?from=2026-03-05&to=2026-03")
        self.assertEqual(bad.status, 400)
        self.assertIn("whole months", bad.text)
        budgets = get("/ui/budgets?year=2026").text
        self.assertEqual(budgets.count('<svg xmlns="http://www.w3.org/2000/svg" viewBox'), 2)
        self.assertIn('id="budgets"', budgets)
        self.assertEqual(get("/ui/budgets?year=20x6").status, 400)

    def test_budget_report(self):
        b = get_json(f"/v1/reports/budget?year=2026")
        self.assertEqual(b["format"], "gpuledger.budget_report/1")
        by_program = {x["program"]: x for x in b["budgets"]}
        self.assertEqual(set(by_program), {"GOV_ADVANCED", "LEASE_HPC"})
        gov = by_program["GOV_ADVANCED"]
        periods = [m["period"] for m in gov["months"]]
        self.assertEqual(periods[:3], ["2026-01", "2026-02", P])
        programs = {x["program"]: x for x in get_json(f"/v1/periods/{P}/programs")["programs"]}
        summary = get_json(f"/v1/periods/{P}/programs/GOV_ADVANCED")
        self.assertEqual(gov["months"][2]["drawdown_krw"],
                         summary["totals"]["subsidy_krw"] + summary["reservation_difference_krw"])
        self.assertTrue(gov["months"][2]["closed"])
        self.assertEqual(gov["remaining_krw"], gov["amount_krw"] - gov["drawn_krw"])
        self.assertEqual(gov["drawn_krw"], sum(m["drawdown_krw"] for m in gov["months"]))
        self.assertIn("GOV_ADVANCED", programs)
        self.assertTrue(get(f"/v1/reports/budget.csv?year=2026").text.startswith("\ufeffyear,"))
        self.assertEqual(get_json("/v1/reports/budget?year=2027")["budgets"], [])
        self.assertError(get("/v1/reports/budget"), 400, "bad_parameter")
        self.assertError(get("/v1/reports/budget?year=2026&program=NOPE"), 400, "bad_parameter")
        self.assertError(get("/v1/reports/budget?year=2026", token=TOKENS["csp:csp-alpha"]),
                         403, "forbidden")

    def test_invoice_json_totals_equal_csv_rows(self):
        for period in (P, NEXT):
            for item in get_json(f"/v1/periods/{period}/invoices")["invoices"]:
                iid = item["institution_id"]
                inv = get_json(f"/v1/periods/{period}/invoices/{iid}.json")
                rows = parse_csv(get(f"/v1/periods/{period}/invoices/{iid}.csv").text)
                self.assertEqual(len(rows), len(inv["lines"]) + len(inv["adjustments"]), iid)
                for row in rows:
                    self.assertEqual((row["period_yyyymm"], row["institution_id"]),
                                     (yyyymm(period), iid))
                    self.assertEqual(row["copay_percent"],
                                     "%d.%02d%%" % divmod(int(row["copay_bp"]), 100))
                    # The number of the bill the line is on (closed: numbered; drafts: none).
                    numbers = {b["number"] for b in inv["bills"]}
                    self.assertIn(row["invoice_number"], numbers, row)
                    self.assertEqual(bool(row["invoice_number"]), period == P, row)
                for k in ("gpu_ms", "list_krw", "copay_krw", "subsidy_krw"):
                    self.assertEqual(sum(int(r[k]) for r in rows), inv["totals"][k],
                                     f"{period} {iid} {k}")
                lines = inv["lines"] + inv["adjustments"]
                self.assertEqual([r["allocation_id"] for r in rows],
                                 [x["allocation_id"] for x in lines])

    def test_april_draft_has_adjustments_to_march(self):
        d = get_json(f"/v1/periods/{NEXT}/invoices")
        self.assertEqual(d["status"], "draft")
        adjusted = [i for i in every_institution(d) if i["adjustments"] > 0]
        self.assertTrue(adjusted, d)
        for item in adjusted:
            r = get(f"/v1/periods/{NEXT}/invoices/{item['institution_id']}")
            self.assertEqual(r.header("x-gpuledger-status"), "draft")
            self.assertIsNone(r.header("etag"))  # drafts have no digest
            inv = r.json()
            self.assertEqual(len(inv["adjustments"]), item["adjustments"])
            for line in inv["adjustments"]:
                self.assertEqual(line["adjusts_period"], P)
        csv_rows = parse_csv(get(f"/v1/periods/{NEXT}/invoices/{adjusted[0]['institution_id']}"
                                 ".csv").text)
        self.assertTrue(all(r["adjusts_period_yyyymm"] == yyyymm(P) for r in csv_rows), csv_rows)
        st = get_json(f"/v1/periods/{NEXT}/statements/csp-beta")
        self.assertTrue(st["adjustments"], st)
        self.assertTrue(all(a["adjusts_period"] == P for a in st["adjustments"]))
        # csp-beta's HPC lease is reserved: the state pays each month's charge less the co-pay.
        for period in (P, NEXT):
            st = get_json(f"/v1/periods/{period}/statements/csp-beta")
            self.assertEqual([(r["program"], r["gpu_model"]) for r in st["reserved"]],
                             [("LEASE_HPC", "H100")], st)
            r = st["reserved"][0]
            self.assertEqual(r["charged_gpu_ms"], r["reserved_gpu_ms"] - r["out_of_service_gpu_ms"])
            self.assertEqual(r["subsidy_krw"], r["charge_krw"] - r["copay_krw"])
            self.assertEqual(st["payable_krw"], st["subsidy_owed_krw"]
                             - st["own_use"]["netted_krw"] + st["reservation_difference_krw"])
        # March's 8-GPU, 12-hour maintenance outage is out of service on the reservation.
        march = get_json(f"/v1/periods/{P}/statements/csp-beta")["reserved"][0]
        self.assertEqual(march["out_of_service_gpu_ms"], 8 * 12 * 3_600_000)

    def test_statements(self):
        d = get_json(f"/v1/periods/{P}/statements")
        self.assertEqual(d["status"], "closed")
        self.assertEqual([s["csp_id"] for s in d["statements"]], ["csp-alpha", "csp-beta"])
        invoices = every_institution(get_json(f"/v1/periods/{P}/invoices"))
        # What the state owes the CSPs is what the invoices (and usage owing nothing) say it pays.
        self.assertEqual(sum(s["subsidy_owed_krw"] for s in d["statements"]),
                         sum(i["totals"]["subsidy_krw"] for i in invoices))
        digest = {x["document"]: x["sha256"] for x in self.s.status[P]["digests"]}
        names = {i["institution_id"]: i["institution_name"] for i in invoices}
        for item in d["statements"]:
            csp = item["csp_id"]
            r = get(f"/v1/periods/{P}/statements/{csp}")
            self.assertEqual(r.status, 200)
            # Each delivered row names its institution as the institution's invoice does.
            for row in r.json()["delivered"]:
                self.assertEqual(row["institution_name"], names[row["institution_id"]], row)
            st = r.json()
            self.assertEqual(st["format"], "gpuledger.csp_statement/2")
            self.assertEqual(st["csp_id"], csp)
            self.assertEqual(st["totals"], item["totals"])
            self.assertEqual(st["subsidy_owed_krw"], st["totals"]["subsidy_krw"])
            self.assertEqual(st["own_use"]["share_bp"], item["own_use_share_bp"])
            self.assertEqual(st["payable_krw"], item["payable_krw"])
            self.assertEqual(st["payable_krw"],
                             st["subsidy_owed_krw"] - st["own_use"]["netted_krw"]
                             + st["reservation_difference_krw"])
            self.assertEqual(r.header("etag"), '"%s"' % digest[f"statement/{csp}"])
            c = get(f"/v1/periods/{P}/statements/{csp}.csv")
            self.assertEqual(c.header("content-type"), "text/csv; charset=utf-8")
            rows = parse_csv(c.text)
            self.assertTrue(rows and all(x["csp_id"] == csp for x in rows))
            delivered = [x for x in rows if x["section"] == "delivered"]
            self.assertEqual(sum(int(x["subsidy_krw"]) for x in delivered),
                             st["subsidy_owed_krw"])
            h = get(f"/v1/periods/{P}/statements/{csp}", headers={"Accept": "text/html"})
            self.assertEqual(h.header("content-type"), "text/html; charset=utf-8")
            self.assertIn(f"CSP 정산서: {csp}", h.text)
        # csp-alpha's own use of the H200 pool is over its 15% cap in the sample.
        alpha = get_json(f"/v1/periods/{P}/statements/csp-alpha")
        self.assertGreater(alpha["own_use"]["excess_gpu_ms"], 0)

    def test_programs(self):
        invoices = every_institution(get_json(f"/v1/periods/{P}/invoices"))
        digest = {x["document"]: x["sha256"] for x in self.s.status[P]["digests"]}
        total_list = 0
        reservations = 0
        for prog in ("GOV_ADVANCED", "LEASE_HPC", "LEASE_RESEARCH"):
            r = get(f"/v1/periods/{P}/programs/{prog}")
            self.assertEqual(r.status, 200, r)
            d = r.json()
            self.assertEqual((d["format"], d["program"]), ("gpuledger.program_summary/1", prog))
            self.assertEqual(r.header("etag"), '"%s"' % digest[f"program/{prog}"])
            total_list += d["totals"]["list_krw"]
            reservations += d["reservation_difference_krw"]
            rows = parse_csv(get(f"/v1/periods/{P}/programs/{prog}.csv").text)
            lines = [x for x in rows if x["section"] in ("by_type", "adjustment")]
            self.assertEqual(sum(int(x["list_krw"]) for x in lines), d["totals"]["list_krw"])
            # The same own lines again, by call: they add up to the by-type rows.
            self.assertEqual(
                sum(int(x["list_krw"]) for x in rows if x["section"] == "by_call"),
                sum(int(x["list_krw"]) for x in rows if x["section"] == "by_type"))
        self.assertEqual(total_list, sum(i["totals"]["list_krw"] for i in invoices))
        # What reservations change is the same over the programmes as over the CSPs.
        statements = get_json(f"/v1/periods/{P}/statements")["statements"]
        self.assertNotEqual(reservations, 0)
        self.assertEqual(reservations,
                         sum(get_json(f"/v1/periods/{P}/statements/{s['csp_id']}")
                             ["reservation_difference_krw"] for s in statements))
        # The programme's name is case-insensitive.
        self.assertEqual(get_json(f"/v1/periods/{P}/programs/lease_hpc")["program"], "LEASE_HPC")

    def test_list_csvs_hold_every_document_the_role_may_see(self):
        """The lists as CSV (a suffix or Accept: text/csv): the rows of every single document's
        CSV, once, with a download name; an institution's list holds its own invoice only."""
        for kind, ids, key in (("invoices", [i["institution_id"] for i in every_institution(
                get_json(f"/v1/periods/{P}/invoices"))], "invoice"),
                               ("statements", [s["csp_id"] for s in get_json(
                                   f"/v1/periods/{P}/statements")["statements"]], "statement")):
            r = get(f"/v1/periods/{P}/{kind}.csv")
            self.assertEqual((r.status, r.header("content-type")), (200, "text/csv; charset=utf-8"))
            self.assertEqual(r.header("content-disposition"),
                             f'attachment; filename="gpuledger-{P}-{kind}.csv"')
            self.assertEqual(get(f"/v1/periods/{P}/{kind}", headers={"Accept": "text/csv"}).body,
                             r.body)
            rows = parse_csv(r.text)
            one = []
            for i in ids:
                one += parse_csv(get(f"/v1/periods/{P}/{kind}/{i}.csv").text)
            self.assertEqual(len(rows), len(one), kind)
            self.assertEqual(sorted(map(str, rows)), sorted(map(str, one)), kind)
        own = parse_csv(get(f"/v1/periods/{P}/invoices.csv",
                            token=TOKENS["institution:inst-nari"]).text)
        self.assertTrue(own and {x["institution_id"] for x in own} == {"inst-nari"}, own)
        # A browser's Accept (text/html first) still gets the JSON list.
        self.assertEqual(get(f"/v1/periods/{P}/invoices", headers={
            "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}).header("content-type"),
            "application/json")

    def test_program_list(self):
        d = get_json(f"/v1/periods/{P}/programs")
        self.assertEqual((d["period"], d["status"]), (P, "closed"))
        names = [x["program"] for x in d["programs"]]
        self.assertEqual(names, ["GOV_ADVANCED", "LEASE_HPC", "LEASE_RESEARCH"])
        for x in d["programs"]:
            one = get_json(f"/v1/periods/{P}/programs/{x['program']}")
            self.assertEqual(x["totals"], {k: one["totals"][k] for k in x["totals"]})
            self.assertEqual(x["reservation_difference_krw"], one["reservation_difference_krw"])
        rows = parse_csv(get(f"/v1/periods/{P}/programs.csv").text)
        self.assertEqual({x["program"] for x in rows}, set(names))

    def test_ledger_head(self):
        h = get_json("/v1/ledger/head")
        self.assertEqual(h["seq"], self.s.head)
        self.assertRegex(h["hash"], r"^[0-9a-f]{64}$")
        self.assertEqual(h["hash"], self.s.entries[-1]["hash"])
        self.assertEqual(h["settled_through"], self.s.head)
        self.assertEqual(h["checkpoint_interval"], 200)
        self.assertEqual(int(h["counters"]["rejected"]), 2)
        self.assertEqual(h["counters"]["rejected_by_reason"],
                         {"CONFLICTING_DUPLICATE": "1", "EMPTY_INTERVAL": "1"})

    def test_entries_by_range_and_by_seq(self):
        self.assertEqual([e["seq"] for e in self.s.entries], list(range(1, self.s.head + 1)))
        page = get_json("/v1/ledger/entries?from=3&limit=5")
        self.assertEqual(page["head"], self.s.head)
        self.assertEqual([e["seq"] for e in page["entries"]], [3, 4, 5, 6, 7])
        self.assertEqual(page["next_from"], 8)
        self.assertEqual(get_json("/v1/ledger/entries?limit=2")["entries"][0]["seq"], 1)
        last = get_json(f"/v1/ledger/entries?from={self.s.head}")
        self.assertEqual([e["seq"] for e in last["entries"]], [self.s.head])
        self.assertEqual(last["next_from"], 0)
        self.assertEqual(get_json(f"/v1/ledger/entries?from={self.s.head + 1}")["entries"], [])
        for seq in (1, 5, self.s.head):
            one = get_json(f"/v1/ledger/entries/{seq}")
            self.assertEqual(one, self.s.entries[seq - 1])
        e = get_json("/v1/ledger/entries/5")
        self.assertEqual(base64.b64decode(e["payload_base64"]) != b"", True)
        self.assertEqual(e["payload"]["event_id"], e["event_id"])
        outcomes = {x["outcome"] for x in self.s.entries}
        self.assertTrue({"ACCEPTED", "REJECTED"} <= outcomes, outcomes)

    def test_event_lookup(self):
        for source in ("csp-alpha", "csp-beta"):
            e = next(x for x in self.s.by_source[source] if x["outcome"] == "ACCEPTED")
            got = get_json(f"/v1/ledger/events/{source}/{e['event_id']}")
            self.assertEqual((got["source_id"], got["event_id"]), (source, e["event_id"]))
            self.assertEqual(got, self.s.entries[got["seq"] - 1])
        reg = next(x for x in self.s.entries if x["source"] == "SOURCE_REGISTRY")
        got = get_json(f"/v1/ledger/events/{reg['source_id']}/{reg['event_id']}")
        self.assertEqual(got["event_id"], reg["event_id"])
        self.assertError(get("/v1/ledger/events/csp-alpha/no-such-event"), 404, "not_found")

    def test_rejected_with_filters(self):
        d = get_json("/v1/rejected")
        self.assertEqual(d["head"], self.s.head)
        self.assertEqual(d["next_after_seq"], 0)
        rej = d["rejected"]
        expected = [e["seq"] for e in self.s.entries if e["outcome"] == "REJECTED"]
        self.assertEqual([x["seq"] for x in rej], expected)
        self.assertEqual(sorted(x["reason_code"] for x in rej),
                         ["CONFLICTING_DUPLICATE", "EMPTY_INTERVAL"])
        for x in rej:
            e = self.s.entries[x["seq"] - 1]
            self.assertEqual((x["source_id"], x["event_id"], x["reason_code"]),
                             (e["source_id"], e["event_id"], e["reason_code"]))
        # By CSP: the sample's two rejections are csp-beta's.
        self.assertEqual([x["seq"] for x in get_json("/v1/rejected?csp=csp-beta")["rejected"]],
                         expected)
        self.assertEqual(get_json("/v1/rejected?csp=csp-alpha")["rejected"], [])
        # By reason.
        only = get_json("/v1/rejected?reason=EMPTY_INTERVAL")["rejected"]
        self.assertEqual([x["reason_code"] for x in only], ["EMPTY_INTERVAL"])
        self.assertEqual(get_json("/v1/rejected?reason=NO_SUCH_REASON")["rejected"], [])
        # By Kafka time, inclusive at both ends.
        ts = sorted(x["kafka_timestamp_ms"] for x in rej)
        both = get_json(f"/v1/rejected?from_ms={ts[0]}&to_ms={ts[-1]}")["rejected"]
        self.assertEqual(len(both), 2)
        self.assertEqual(get_json(f"/v1/rejected?from_ms={ts[-1] + 1}")["rejected"], [])
        self.assertEqual(get_json(f"/v1/rejected?to_ms={ts[0] - 1}")["rejected"], [])
        # Paging: limit=1, then on from next_after_seq.
        first = get_json("/v1/rejected?limit=1")
        self.assertEqual([x["seq"] for x in first["rejected"]], expected[:1])
        self.assertGreaterEqual(first["next_after_seq"], expected[0])
        rest = get_json(f"/v1/rejected?after_seq={first['next_after_seq']}")
        self.assertEqual([x["seq"] for x in rest["rejected"]], expected[1:])
        self.assertEqual(get_json(f"/v1/rejected?after_seq={expected[-1]}")["rejected"], [])

    def test_gaps(self):
        d = get_json("/v1/gaps")
        producers = {(p["csp_id"], p["producer_id"]): p for p in d["producers"]}
        self.assertEqual(sorted(producers), [("csp-alpha", "csp-alpha-meter-1"),
                                             ("csp-beta", "csp-beta-meter-1")])
        for p in producers.values():
            # The sample leaves no gaps: every producer seq up to the highest arrived.
            self.assertEqual((p["missing_count"], p["missing"]), (0, []))
            self.assertEqual(p["contiguous"], p["highest"])
        only = get_json("/v1/gaps?csp=csp-alpha")["producers"]
        self.assertEqual([p["csp_id"] for p in only], ["csp-alpha"])

    def test_checkpoints(self):
        cps = get_json("/v1/checkpoints?limit=1000")["checkpoints"]
        self.assertTrue(cps)
        seqs = [int(c["seq"]) for c in cps]  # uint64 as strings (protobuf JSON mapping)
        self.assertEqual(seqs, sorted(seqs))
        self.assertIn(200, seqs)
        self.assertLessEqual(seqs[-1], self.s.head)
        for c in cps:
            self.assertTrue(c["signature"] and c["key_id"] and c["head_hash"], c)
            # The checkpoint's hash is the chain hash of its entry.
            self.assertEqual(base64.b64decode(c["head_hash"]).hex(),
                             self.s.entries[int(c["seq"]) - 1]["hash"])
        later = get_json(f"/v1/checkpoints?from_seq={seqs[1]}")["checkpoints"]
        self.assertEqual([int(c["seq"]) for c in later], seqs[1:][:100])
        self.assertEqual(len(get_json("/v1/checkpoints?limit=1")["checkpoints"]), 1)

    def test_public_key(self):
        r = get("/v1/public-key")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("content-type"), "application/x-pem-file")
        self.assertIn("BEGIN PUBLIC KEY", r.text)
        with open(ENV["API_PUBLIC_KEY"]) as f:
            self.assertEqual(r.text.strip(), f.read().strip())

    def test_export_streams_a_verifiable_ledger(self):
        with tempfile.TemporaryDirectory() as tmp:
            r = get("/v1/ledger/export", token=TOKENS["auditor"])
            self.assertEqual(r.status, 200)
            self.assertEqual(r.header("content-type"), "application/octet-stream")
            self.assertEqual(r.header("transfer-encoding"), "chunked")
            self.assertIn("ledger.export", r.header("content-disposition"))
            export = os.path.join(tmp, "ledger.export")
            pub = os.path.join(tmp, "pub.pem")
            with open(export, "wb") as f:
                f.write(r.body)
            with open(pub, "wb") as f:
                f.write(get("/v1/public-key", token=TOKENS["auditor"]).body)
            v = subprocess.run([BIN, "ledger", "verify", "--export", export, "--public-key", pub],
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
            # A flipped byte in the middle does not verify.
            data = bytearray(r.body)
            data[len(data) // 2] ^= 0x01
            with open(export, "wb") as f:
                f.write(bytes(data))
            bad = subprocess.run([BIN, "ledger", "verify", "--export", export, "--public-key",
                                  pub], capture_output=True, text=True, timeout=60)
            self.assertNotEqual(bad.returncode, 0, bad.stdout + bad.stderr)
            # A range of the ledger.
            part = get("/v1/ledger/export?from_seq=1&to_seq=10")
            self.assertEqual(part.status, 200)
            self.assertLess(len(part.body), len(r.body))

    def test_every_list_pages_by_limit_and_cursor(self):
        lists = {
            "/v1/ledger/entries": lambda d: [e["seq"] for e in d["entries"]],
            "/v1/rejected": lambda d: [e["seq"] for e in d["rejected"]],
            "/v1/checkpoints": lambda d: [c["seq"] for c in d["checkpoints"]],
            "/v1/gaps": lambda d: [(g["csp_id"], g["producer_id"]) for g in d["producers"]],
            f"/v1/periods/{P}/invoices": lambda d: [i["institution_id"] for i in
                                                    d["invoices"] + d["nothing_owed"]],
            f"/v1/periods/{P}/statements": lambda d: [s["csp_id"] for s in d["statements"]],
            f"/v1/periods/{P}/programs": lambda d: [s["program"] for s in d["programs"]],
            "/v1/audit/invoice-reads": lambda d: [r["line"] for r in d["reads"]],
        }
        def walk(path, items, size):
            got, cursor, pages = [], None, 0
            while True:
                q = f"?limit={size}" + (f"&cursor={cursor}" if cursor else "")
                page = get_json(path + q)
                self.assertLessEqual(len(items(page)), size)
                got += items(page)
                pages += 1
                cursor = page["next_cursor"]
                if cursor is None:
                    return got, pages
                self.assertLess(pages, 10_000)

        for path, items in lists.items():
            with self.subTest(path=path):
                want, _ = walk(path, items, 1000)
                self.assertGreaterEqual(len(want), 2, path)  # so that paging is tried
                got, pages = walk(path, items, 1 if len(want) < 50 else 40)
                # The record of reads may grow meanwhile (other tests read invoices).
                self.assertEqual(got[:len(want)] if "invoice-reads" in path else got, want, path)
                self.assertGreater(pages, 1, path)
        # A cursor names its list: another list's is refused, as is a made-up one.
        cursor = get_json("/v1/ledger/entries?limit=1")["next_cursor"]
        self.assertError(get(f"/v1/rejected?cursor={cursor}"), 400, "bad_parameter")
        self.assertError(get("/v1/gaps?cursor=bm9wZQ"), 400, "bad_parameter")
        self.assertError(get("/v1/gaps?limit=0"), 400, "bad_parameter")

    def test_access_log_and_the_record_of_invoice_reads(self):
        path = f"/v1/periods/{P}/invoices/inst-daehan-bio.csv"
        rid = f"access-test-{os.getpid()}"
        r = get(path, token=TOKENS["finance"], headers={"X-Request-Id": rid})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("x-request-id"), rid)
        generated = get("/v1/periods").header("x-request-id")
        self.assertRegex(generated, r"^[0-9a-f]{8}-[0-9]+$")
        self.assertEqual(get("/v1/periods", headers={"X-Request-Id": "not a plain id"})
                         .header("x-request-id").count("-"), 1)

        def logged():
            with open(ENV["API_SERVE_LOG"]) as f:
                lines = [json.loads(line[line.index("{"):]) for line in f
                         if '"id":' in line and rid in line]
            return lines[0] if lines else None

        wait_until(logged, "the access log line")
        line = logged()
        self.assertEqual((line["principal"], line["method"], line["path"], line["status"]),
                         ("api-test finance", "GET", path, 200))
        self.assertEqual(line["bytes"], len(r.body))
        self.assertEqual(line["route"], "/v1/periods/{period}/invoices/{institution}")
        with open(ENV["API_SERVE_LOG"]) as f:
            text = f.read()
        for token in TOKENS.values():
            self.assertNotIn(token, text)  # never a token
        # Auditors read who read which invoice.
        q = f"/v1/audit/invoice-reads?period={P}&institution=inst-daehan-bio&limit=1000"
        self.assertError(get(q, token=TOKENS["finance"]), 403, "forbidden")
        # The record reaches its file within 0.2 s (flushed by the server's ticker).
        wait_until(lambda: any(x["id"] == rid for x in
                               get_json(q, token=TOKENS["auditor"])["reads"]), "the read record")
        reads = get_json(q, token=TOKENS["auditor"])["reads"]
        mine = [x for x in reads if x["id"] == rid]
        self.assertEqual(len(mine), 1, reads[-5:])
        self.assertEqual((mine[0]["principal"], mine[0]["path"]), ("api-test finance", path))
        for x in reads:
            self.assertIn("inst-daehan-bio", x["path"])
            self.assertIn(P, x["path"])
        # Not every read: a statement is not an invoice.
        get(f"/v1/periods/{P}/statements/csp-alpha", headers={"X-Request-Id": rid + "-st"})
        all_reads = get_json("/v1/audit/invoice-reads?limit=1000", token=TOKENS["auditor"])
        self.assertFalse([x for x in all_reads["reads"] if x["id"] == rid + "-st"])

    def test_metrics(self):
        get("/v1/periods")  # at least one counted request
        r = get("/metrics", token=TOKENS["auditor"])
        self.assertEqual(r.status, 200)
        self.assertTrue(r.header("content-type").startswith("text/plain"), r)
        text = r.text
        self.assertRegex(text, r'gpuledger_http_requests_total\{[^}]*route="/v1/periods"')
        self.assertIn("gpuledger_http_request_seconds", text)
        self.assertRegex(text, r"(?m)^gpuledger_http_connections [0-9]")
        self.assertIn("gpuledger_http_connections_refused_total", text)
        m = re.search(r'(?m)^gpuledger_serve_ledger_seq\{what="head"\} (\S+)$', text)
        self.assertTrue(m, text[:2000])
        self.assertEqual(int(float(m.group(1))), self.s.head)
        m = re.search(r'(?m)^gpuledger_serve_ledger_seq\{what="settled"\} (\S+)$', text)
        self.assertEqual(int(float(m.group(1))), self.s.head)
        # Process and build metrics, as Prometheus' client libraries name them.
        rss = re.search(r"(?m)^process_resident_memory_bytes (\S+)$", text)
        self.assertTrue(rss and float(rss.group(1)) > 1e6, text[-3000:])
        self.assertRegex(text, r"(?m)^process_cpu_seconds_total [0-9.e+]+$")
        self.assertRegex(text, r"(?m)^process_open_fds [1-9]")
        start = float(re.search(r"(?m)^process_start_time_seconds (\S+)$", text).group(1))
        self.assertLess(abs(start - time.time()), 86400)
        self.assertRegex(text, r'(?m)^gpuledger_build_info\{version="[0-9.]+",'
                               r'commit="(?:[0-9a-f]{12}|unknown)"\} 1$')

    def test_head_of_streamed_export(self):
        # HEAD of the streamed export: the headers only, so that a second request on the same
        # connection gets its own response right after them.
        raw = raw_exchange(
            f"HEAD /v1/ledger/export?to_seq=3 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
            f"{OP}\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            .encode(), timeout=5)
        self.assertEqual(status_of(raw), 200, raw[:300])
        head_end = raw.index(b"\r\n\r\n") + 4
        self.assertIn(b"ledger.export", raw[:head_end])
        rest = raw[head_end:]
        self.assertTrue(rest.startswith(b"HTTP/1.1 200 "), rest[:80])
        self.assertEqual(json.loads(body_of(rest)), {"status": "ok"})


# ---- errors ----

class ErrorTest(ApiTest):
    def test_bad_parameters_are_400(self):
        for path in [
            "/v1/periods/2026-13",
            "/v1/periods/march",
            "/v1/periods/2026-3/invoices",
            "/v1/periods/20260-03/statements/csp-alpha",
            f"/v1/periods/{P}/programs/NOT_A_PROGRAMME",
            f"/v1/periods/{P}/programs/PROGRAM_UNSPECIFIED",
            "/v1/ledger/entries?limit=abc",
            "/v1/ledger/entries?limit=0",
            "/v1/ledger/entries?limit=1001",
            "/v1/ledger/entries?limit=-1",
            "/v1/ledger/entries?from=0",
            "/v1/ledger/entries/abc",
            "/v1/ledger/entries/0",
            "/v1/rejected?limit=abc",
            "/v1/rejected?limit=0",
            "/v1/rejected?after_seq=x",
            "/v1/rejected?from_ms=abc",
            "/v1/rejected?from_ms=2000&to_ms=1000",
            "/v1/checkpoints?limit=0",
            "/v1/checkpoints?from_seq=abc",
            "/v1/ledger/export?from_seq=0",
            "/v1/ledger/export?to_seq=abc",
            "/v1/ledger/export?from_seq=999999999",
        ]:
            with self.subTest(path=path):
                self.assertError(get(path), 400, "bad_parameter")

    def test_bad_percent_escapes_are_400(self):
        for path in ["/v1/rejected?csp=%zz", "/v1/rejected?reason=%4", "/v1/periods/%G1",
                     "/v1/periods?x%=1", "/healthz%"]:
            with self.subTest(path=path):
                self.assertError(get(path), 400, "bad_request")
        # A well-formed escape is decoded: %2D is '-'.
        self.assertEqual(get_json("/v1/periods/2026%2D03")["period"], P)

    def test_unknown_paths_and_ids_are_404(self):
        for path in ["/v1/nope", "/v1", "/v1/periods/2026-03/nope",
                     "/v1/periods/2026-03/invoices/inst-nari/extra", "/nope", "/v2/periods",
                     "/v1/ledger", "/v1/ledger/head/x", "/v1/rejected/1",
                     f"/v1/periods/{P}/invoices/inst-nope",
                     f"/v1/periods/{P}/statements/csp-nope",
                     f"/v1/ledger/entries/{10**9}",
                     "/v1/ledger/events/csp-alpha/no-such-event",
                     "/v1/ledger/events/nobody/x"]:
            with self.subTest(path=path):
                self.assertError(get(path), 404, "not_found")

    def test_writes_to_the_api_are_405(self):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            for path in ("/v1/periods", f"/v1/periods/{P}/invoices", "/v1/ledger/head"):
                with self.subTest(method=method, path=path):
                    r = request(method, path, token=OP, body=b"{}",
                                headers={"Content-Type": "application/json"})
                    self.assertError(r, 405, "method_not_allowed")
                    self.assertEqual(r.header("allow"), "GET, HEAD")
        # Even without a token: the method is wrong whoever asks.
        self.assertError(request("POST", "/v1/periods", body=b""), 405)
        for path in ("/healthz", "/readyz", "/metrics"):
            with self.subTest(path=path):
                r = request("POST", path, token=OP, body=b"")
                self.assertError(r, 405, "method_not_allowed")
                self.assertEqual(r.header("allow"), "GET, HEAD")

    def test_invalid_utf8_in_parameters_is_a_client_error(self):
        for path, status in [("/v1/periods/%FF%FE", 400),
                             (f"/v1/periods/{P}/invoices/%FF%FE", 404),
                             (f"/v1/periods/{P}/statements/%C3%28.csv", 404),
                             (f"/v1/periods/{P}/programs/%FF", 400),
                             ("/v1/ledger/entries/%FF", 400),
                             ("/v1/ledger/events/csp-alpha/%FF%FE", 404),
                             ("/v1/rejected?limit=%FF", 400)]:
            with self.subTest(path=path):
                self.assertError(get(path), status)
        self.assertEqual(get_json("/v1/rejected?reason=%FF%FE")["rejected"], [])

    def test_after_seq_at_the_top_of_the_range(self):
        self.assertError(get(f"/v1/rejected?after_seq={2**64 - 1}"), 400, "bad_parameter")
        self.assertError(get(f"/v1/rejected?after_seq={2**64}"), 400, "bad_parameter")
        self.assertEqual(get_json(f"/v1/rejected?after_seq={2**64 - 2}")["rejected"], [])

    def test_unauthenticated_is_401(self):
        for token in (None, "", "0" * 64, OP[:-1], OP + "0", OP.upper()):
            with self.subTest(token=token):
                r = get("/v1/periods", token=token)
                self.assertError(r, 401, "unauthorized")
                self.assertEqual(r.header("www-authenticate"), 'Bearer realm="gpuledger"')
        self.assertError(request("GET", "/v1/periods", headers={"Authorization": OP}), 401)
        self.assertError(request("GET", "/v1/periods",
                                 headers={"Authorization": "Basic " + OP}), 401)

    def test_bearer_scheme_case(self):
        r = request("GET", "/v1/periods", headers={"Authorization": "Bearer " + OP})
        self.assertEqual(r.status, 200)
        # The auth scheme is case-insensitive (RFC 9110 section 11.1, RFC 6750).
        for scheme in ("bearer", "BEARER"):
            r = request("GET", "/v1/periods", headers={"Authorization": f"{scheme} {OP}"})
            self.assertEqual(r.status, 200, scheme)


# ---- who may read what ----

def matrix():
    """(path, expected status per role in ROLES order). Placeholders are filled from the
    sample: {alpha_seq}/{beta_seq}/{reg_seq} are entries of csp-alpha, csp-beta and the
    operator's registry; {alpha_event}/{beta_event} their event ids."""
    return [
        # path                                            op   fin  aud  alpha beta nari hanbit
        ("/v1/periods",                                   (200, 200, 200, 200, 200, 200, 200)),
        (f"/v1/periods/{P}",                              (200, 200, 200, 200, 200, 200, 200)),
        (f"/v1/periods/{P}/invoices",                     (200, 200, 200, 403, 403, 200, 200)),
        (f"/v1/periods/{P}/invoices.csv",                 (200, 200, 200, 403, 403, 200, 200)),
        (f"/v1/periods/{P}/invoices/inst-nari",           (200, 200, 200, 403, 403, 200, 403)),
        (f"/v1/periods/{P}/invoices/inst-nari.csv",       (200, 200, 200, 403, 403, 200, 403)),
        (f"/v1/periods/{P}/invoices/inst-hanbit-univ.html", (200, 200, 200, 403, 403, 403, 200)),
        (f"/v1/periods/{NEXT}/invoices/inst-hanbit-univ", (200, 200, 200, 403, 403, 403, 200)),
        # Another institution's id is 403 whether or not it has an invoice.
        (f"/v1/periods/{P}/invoices/inst-nope",           (404, 404, 404, 403, 403, 403, 403)),
        (f"/v1/periods/{P}/statements",                   (200, 200, 200, 200, 200, 403, 403)),
        (f"/v1/periods/{P}/statements.csv",               (200, 200, 200, 200, 200, 403, 403)),
        (f"/v1/periods/{P}/programs",                     (200, 200, 200, 403, 403, 403, 403)),
        (f"/v1/periods/{P}/programs.csv",                 (200, 200, 200, 403, 403, 403, 403)),
        (f"/v1/periods/{P}/statements/csp-alpha",         (200, 200, 200, 200, 403, 403, 403)),
        (f"/v1/periods/{P}/statements/csp-beta.csv",      (200, 200, 200, 403, 200, 403, 403)),
        (f"/v1/periods/{P}/programs/GOV_ADVANCED",        (200, 200, 200, 403, 403, 403, 403)),
        (f"/v1/periods/{P}/programs/LEASE_HPC.csv",       (200, 200, 200, 403, 403, 403, 403)),
        # The head (seq, hash, ledger-wide counters) is open to every signed-in role.
        ("/v1/ledger/head",                               (200, 200, 200, 200, 200, 200, 200)),
        ("/v1/ledger/entries?limit=3",                    (200, 403, 200, 200, 200, 403, 403)),
        ("/v1/ledger/entries/{alpha_seq}",                (200, 403, 200, 200, 403, 403, 403)),
        ("/v1/ledger/entries/{beta_seq}",                 (200, 403, 200, 403, 200, 403, 403)),
        ("/v1/ledger/entries/{reg_seq}",                  (200, 403, 200, 403, 403, 403, 403)),
        ("/v1/ledger/events/csp-alpha/{alpha_event}",     (200, 403, 200, 200, 403, 403, 403)),
        ("/v1/ledger/events/csp-beta/{beta_event}",       (200, 403, 200, 403, 200, 403, 403)),
        ("/v1/ledger/export?to_seq=5",                    (200, 403, 200, 403, 403, 403, 403)),
        ("/v1/rejected",                                  (200, 403, 200, 200, 200, 403, 403)),
        ("/v1/rejected?csp=csp-beta",                     (200, 403, 200, 403, 200, 403, 403)),
        ("/v1/gaps",                                      (200, 403, 200, 200, 200, 403, 403)),
        ("/v1/checkpoints",                               (200, 403, 200, 403, 403, 403, 403)),
        ("/v1/public-key",                                (200, 200, 200, 200, 200, 200, 200)),
        ("/metrics",                                      (200, 403, 200, 403, 403, 403, 403)),
        # Pages (HTML), the same rules.
        (f"/ui/invoices?period={P}",                      (200, 200, 200, 403, 403, 200, 200)),
        (f"/ui/invoices/{P}/inst-nari",                   (200, 200, 200, 403, 403, 200, 403)),
        (f"/ui/statements?period={P}",                    (200, 200, 200, 200, 200, 403, 403)),
        (f"/ui/statements/{P}/csp-alpha",                 (200, 200, 200, 200, 403, 403, 403)),
        ("/ui/audit",                                     (200, 403, 200, 403, 403, 403, 403)),
        ("/ui/periods",                                   (200, 200, 200, 200, 200, 200, 200)),
        (f"/ui/programs?period={P}",                      (200, 200, 200, 403, 403, 403, 403)),
        (f"/ui/programs/{P}/GOV_ADVANCED",                (200, 200, 200, 403, 403, 403, 403)),
        # Reports: every role, each scoped to what it may see; budgets for staff only.
        (f"/v1/reports/usage?from={P}&to={P}",            (200, 200, 200, 200, 200, 200, 200)),
        (f"/v1/reports/usage?from={P}&to={P}&csp=csp-beta", (200, 200, 200, 403, 200, 403, 403)),
        (f"/v1/reports/usage?from={P}&to={P}&institution=inst-nari",
                                                          (200, 200, 200, 403, 403, 200, 403)),
        ("/v1/reports/budget?year=2026",                  (200, 200, 200, 403, 403, 403, 403)),
        ("/v1/reports/budget.csv?year=2026",              (200, 200, 200, 403, 403, 403, 403)),
        (f"/ui/reports?from={P}&to={P}",                  (200, 200, 200, 200, 200, 200, 200)),
        ("/ui/budgets?year=2026",                         (200, 200, 200, 403, 403, 403, 403)),
    ]


class RoleMatrixTest(ApiTest):
    @classmethod
    def setUpClass(cls):
        s = Sample.load()
        alpha = next(e for e in s.by_source["csp-alpha"] if e["outcome"] == "ACCEPTED")
        beta = next(e for e in s.by_source["csp-beta"] if e["outcome"] == "ACCEPTED")
        reg = next(e for e in s.entries if e["source"] == "SOURCE_REGISTRY")
        cls.fill = dict(alpha_seq=alpha["seq"], beta_seq=beta["seq"], reg_seq=reg["seq"],
                        alpha_event=alpha["event_id"], beta_event=beta["event_id"])
        cls.s = s

    def test_matrix(self):
        rows = matrix()
        self.assertEqual(len({path for path, _ in rows}), len(rows))
        failures = []
        checked = 0
        for path, want in rows:
            path = path.format(**self.fill)
            self.assertEqual(len(want), len(ROLES), path)
            ui = path.startswith("/ui")
            for role, status in zip(ROLES, want):
                r = get(path, token=TOKENS[role])
                checked += 1
                if r.status != status:
                    failures.append(f"{role:30} GET {path}: want {status}, got {r.status}")
                    continue
                if status == 403:
                    ctype = r.header("content-type")
                    if ui:
                        self.assertEqual(ctype, "text/html; charset=utf-8", path)
                    else:
                        self.assertEqual(r.json()["code"], "forbidden", path)
            # Without a token, or with a wrong one: 401 for every endpoint.
            for token in (None, "f" * 64):
                r = get(path, token=token)
                checked += 1
                if r.status != 401:
                    failures.append(f"{'token ' + str(token)[:8]:30} GET {path}: want 401, "
                                    f"got {r.status}")
        self.assertEqual(failures, [], "\n" + "\n".join(failures))
        print(f"\n  role matrix: {len(rows)} endpoints x {len(ROLES) + 2} callers = {checked} "
              "requests as expected", file=sys.stderr)

    def test_cookie_is_accepted_like_a_bearer_token(self):
        r = request("GET", f"/v1/periods/{P}/invoices/inst-nari",
                    headers={"Cookie": f"a=b; gpuledger_token={TOKENS['institution:inst-nari']}"})
        self.assertEqual(r.status, 200)
        r = request("GET", f"/v1/periods/{P}/invoices/inst-hanbit-univ",
                    headers={"Cookie": f"gpuledger_token={TOKENS['institution:inst-nari']}"})
        self.assertError(r, 403, "forbidden")

    def test_an_institution_lists_only_itself(self):
        for role, iid in (("institution:inst-nari", "inst-nari"),
                          ("institution:inst-hanbit-univ", "inst-hanbit-univ")):
            for period in (P, NEXT):
                d = get_json(f"/v1/periods/{period}/invoices", token=TOKENS[role])
                ids = [i["institution_id"] for i in d["invoices"]]
                self.assertTrue(set(ids) <= {iid}, (role, period, ids))
            self.assertEqual([i["institution_id"] for i in every_institution(get_json(
                f"/v1/periods/{P}/invoices", token=TOKENS[role]))], [iid])
            page = get(f"/ui/invoices?period={P}", token=TOKENS[role]).text
            self.assertIn("청구서 1건.", page)
            self.assertIn(f"({iid})", page)
            self.assertIn("청구 없음", page)  # academia and research owe nothing
        # Staff see all eight: five invoices, three institutions that owe nothing.
        for role in ("operator", "finance", "auditor"):
            d = get_json(f"/v1/periods/{P}/invoices", token=TOKENS[role])
            self.assertEqual((len(d["invoices"]), len(d["nothing_owed"])), (5, 3))

    def test_menus_show_only_what_the_role_may_open(self):
        """Each role's navigation links are the pages it may open (the matrix above says which);
        the periods page lists the closed month and the open one after it."""
        menus = {
            "operator": ["/ui/periods", "/ui/invoices", "/ui/statements", "/ui/programs",
                         "/ui/reports", "/ui/budgets", "/ui/audit"],
            "finance": ["/ui/periods", "/ui/invoices", "/ui/statements", "/ui/programs",
                        "/ui/reports", "/ui/budgets"],
            "auditor": ["/ui/periods", "/ui/invoices", "/ui/statements", "/ui/programs",
                        "/ui/reports", "/ui/budgets", "/ui/audit"],
            "csp:csp-alpha": ["/ui/periods", "/ui/statements", "/ui/reports"],
            "institution:inst-nari": ["/ui/periods", "/ui/invoices", "/ui/reports"],
        }
        for role, want in menus.items():
            page = get("/ui/periods", token=TOKENS[role]).text
            nav = page[page.index("<nav>"):page.index("</nav>")]
            self.assertEqual(re.findall(r'href="(/ui/[a-z]+)"', nav), want, role)
            for href in want:
                self.assertEqual(get(href, token=TOKENS[role]).status, 200, (role, href))
            self.assertIn(f"?period={P}", page)
            self.assertIn(f"?period={NEXT}", page)
        # Without ?period=, the lists open on the last closed month, not an empty draft.
        page = get("/ui/invoices", token=TOKENS["finance"]).text
        self.assertIn(f'value="{P}"', page)
        self.assertIn("청구서 8건.", page)

    def test_a_csp_sees_only_its_own(self):
        for csp in ("csp-alpha", "csp-beta"):
            tok = TOKENS["csp:" + csp]
            st = get_json(f"/v1/periods/{P}/statements", token=tok)["statements"]
            self.assertEqual([x["csp_id"] for x in st], [csp])
            # Entries: paged through to the end, exactly its own source's entries.
            seqs = []
            frm = 1
            while frm:
                page = get_json(f"/v1/ledger/entries?from={frm}&limit=1000", token=tok)
                self.assertTrue(all(e["source_id"] == csp for e in page["entries"]), csp)
                seqs += [e["seq"] for e in page["entries"]]
                frm = page["next_from"]
            self.assertEqual(seqs, [e["seq"] for e in self.s.by_source[csp]])
            # Rejected: its own only, also when it asks for nothing in particular.
            rej = get_json("/v1/rejected?limit=1000", token=tok)["rejected"]
            self.assertTrue(all(x["source_id"] == csp for x in rej), rej)
            self.assertEqual([x["seq"] for x in rej],
                             [e["seq"] for e in self.s.by_source[csp]
                              if e["outcome"] == "REJECTED"])
            # Gaps: its own producers, whatever csp= says.
            for q in ("", "?csp=csp-alpha", "?csp=csp-beta"):
                prods = get_json("/v1/gaps" + q, token=tok)["producers"]
                self.assertEqual([p["csp_id"] for p in prods], [csp], q)
        self.assertEqual(len(get_json("/v1/rejected", token=TOKENS["csp:csp-beta"])["rejected"]),
                         2)
        self.assertEqual(get_json("/v1/rejected", token=TOKENS["csp:csp-alpha"])["rejected"], [])


# ---- limits ----

class LimitsTest(ApiTest):
    def test_headers_over_8k_get_431(self):
        raw = raw_exchange(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Filler: " + b"a" * 9000 +
                           b"\r\n\r\n")
        self.assertEqual(status_of(raw), 431, raw[:200])
        self.assertEqual(json.loads(body_of(raw))["code"], "headers_too_large")
        # Many smaller headers adding up to more than 8 KiB.
        many = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(100))
        raw = raw_exchange(b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n")
        self.assertEqual(status_of(raw), 431, raw[:200])
        # Just under the limit is fine.
        self.assertEqual(request("GET", "/healthz", headers={"X-Filler": "a" * 7000}).status, 200)

    def test_login_body_over_8k_gets_413(self):
        form = b"token=" + b"a" * 9000
        raw = raw_exchange(b"POST /ui/login HTTP/1.1\r\nHost: t\r\nContent-Type: "
                           b"application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n"
                           % len(form) + form)
        self.assertEqual(status_of(raw), 413, raw[:200])
        self.assertEqual(json.loads(body_of(raw))["code"], "body_too_large")
        # Chunked, without a Content-Length: the same.
        raw = raw_exchange(b"POST /ui/login HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked"
                           b"\r\n\r\n%x\r\n" % len(form) + form + b"\r\n0\r\n\r\n")
        self.assertEqual(status_of(raw), 413, raw[:200])
        # A body to the read-only API: 413 as well, before anything else.
        raw = raw_exchange(b"POST /v1/periods HTTP/1.1\r\nHost: t\r\nContent-Length: 9000\r\n"
                           b"\r\n" + b"x" * 9000)
        self.assertEqual(status_of(raw), 413, raw[:200])
        # Between the form's own limit (4 KiB) and the server's: a 400 page.
        r = request("POST", "/ui/login", body=b"token=" + b"a" * 5000,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 400)

    def test_idle_connections_do_not_block_others(self):
        idle = []
        try:
            for i in range(20):
                s = socket.create_connection((HOST, PORT), timeout=LIVENESS_S)
                if i % 2:  # half send an unfinished request, half nothing at all
                    s.sendall(b"GET /v1/periods HTTP/1.1\r\nHost: t\r\n")
                idle.append(s)
            t0 = time.monotonic()
            r = request("GET", "/healthz", timeout=LIVENESS_S)
            self.assertEqual(r.status, 200)
            self.assertEqual(get(f"/v1/periods/{P}/invoices/inst-nari",
                                 timeout=LIVENESS_S).status, 200)
            elapsed = time.monotonic() - t0
            # The read timeout is 15 s: a server blocked by the idle clients could not answer
            # within the liveness bound.
            self.assertLess(elapsed, LIVENESS_S)
            # The idle ones are still open (not refused), and a finished request on one of
            # them is answered.
            idle[1].sendall(f"Authorization: Bearer {OP}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = idle[1].recv(65536)
                if not chunk:
                    break
                data += chunk
            self.assertEqual(status_of(data), 200, data[:200])
        finally:
            for s in idle:
                s.close()

    def test_concurrent_clients_are_all_served(self):
        paths = [f"/v1/periods/{P}/invoices", f"/v1/periods/{P}/statements/csp-alpha",
                 "/v1/ledger/head", f"/v1/periods/{NEXT}/invoices/inst-hanbit-univ.csv"]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda i: get(paths[i % len(paths)]).status, range(64)))
        self.assertEqual(results, [200] * 64)

    def test_keep_alive_serves_several_requests_on_one_connection(self):
        conn = http.client.HTTPConnection(HOST, PORT, timeout=LIVENESS_S)
        try:
            for path in ("/healthz", "/v1/periods", f"/v1/periods/{P}/invoices/inst-nari.csv",
                         "/v1/nope", "/healthz"):
                conn.request("GET", path, headers={"Authorization": "Bearer " + OP})
                r = conn.getresponse()
                r.read()
                self.assertIn(r.status, (200, 404))
        finally:
            conn.close()


# ---- pages without a browser: sign-in and cookies ----

class LoginTest(ApiTest):
    def test_login_sets_an_httponly_strict_cookie(self):
        r = request("POST", "/ui/login", body=f"token={TOKENS['finance']}".encode(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 303)
        self.assertEqual(r.header("location"), "/ui/invoices")
        cookie = r.header("set-cookie")
        self.assertEqual(cookie, f"gpuledger_token={TOKENS['finance']}; Path=/; HttpOnly; "
                                 "SameSite=Strict")  # no Secure over plain HTTP
        page = request("GET", f"/ui/invoices?period={P}",
                       headers={"Cookie": f"gpuledger_token={TOKENS['finance']}"})
        self.assertEqual(page.status, 200)
        self.assertIn("api-test finance (재무) 로그인 중", page.text)
        self.assertIn("청구서 8건.", page.text)

    def test_login_with_a_wrong_token_is_401(self):
        r = request("POST", "/ui/login", body=b"token=" + b"0" * 64,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 401)
        self.assertIsNone(r.header("set-cookie"))
        self.assertIn("유효하지 않은 토큰입니다.", r.text)

    def test_pages_need_a_sign_in(self):
        for path in ("/ui", "/ui/invoices", f"/ui/statements/{P}/csp-alpha", "/ui/audit"):
            r = request("GET", path)
            self.assertEqual(r.status, 401, path)
            self.assertIn('href="/ui/login"', r.text)
        self.assertEqual(request("GET", "/ui/login").status, 200)

    def test_logout_clears_the_cookie(self):
        r = request("POST", "/ui/logout", body=b"")
        self.assertEqual(r.status, 303)
        self.assertEqual(r.header("location"), "/ui/login")
        self.assertIn("Max-Age=0", r.header("set-cookie"))

    def test_logout_is_a_same_site_post(self):
        # A link or an image on another site must not sign anyone out.
        r = request("GET", "/ui/logout", token=TOKENS["finance"])
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.header("set-cookie"))
        self.assertIn('method="post" action="/ui/logout"', r.text)
        r = request("POST", "/ui/logout", body=b"",
                    headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
        self.assertEqual(r.status, 403)
        self.assertIsNone(r.header("set-cookie"))
        self.assertEqual(request("PUT", "/ui/logout", body=b"").status, 405)

    def test_ui_home_redirects_by_role(self):
        for role, where in (("finance", "/ui/invoices"), ("auditor", "/ui/audit"),
                            ("csp:csp-alpha", "/ui/statements"),
                            ("institution:inst-nari", "/ui/invoices")):
            r = get("/ui", token=TOKENS[role])
            self.assertEqual((r.status, r.header("location")), (302, where), role)

    def test_unknown_page_is_404_and_post_is_405(self):
        self.assertEqual(get("/ui/nope", token=TOKENS["finance"]).status, 404)
        self.assertEqual(get(f"/ui/invoices/{P}/inst-nope", token=TOKENS["finance"]).status, 404)
        self.assertEqual(get("/ui/invoices/2026-13/inst-nari", token=TOKENS["finance"]).status,
                         400)
        self.assertEqual(request("POST", "/ui/invoices", token=TOKENS["finance"], body=b"").status,
                         405)


# ---- tokens rotate without a restart ----

def replace_file(path, text):
    """Atomically: readers see the old file or the new one, never a half-written one."""
    tmp = path + ".rotate.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


class TokenRotationTest(ApiTest):
    def test_add_then_revoke(self):
        path = ENV["API_TOKENS_FILE"]
        name = f"rotation-{os.getpid()}"
        url = f"/v1/periods/{P}/statements/csp-beta"
        new = subprocess.run([BIN, "tokens", "add", "--file", path, "--role", "csp:csp-beta",
                              "--name", name], capture_output=True, text=True, check=True,
                             timeout=30).stdout.strip()
        self.assertRegex(new, r"^[0-9a-f]{64}$")
        with open(path) as f:
            self.assertNotIn(new, f.read())  # only its hash is stored
        took = wait_until(lambda: get(url, token=new).status == 200, "the new token works")
        print(f"\n  new token accepted after {took:.1f} s", file=sys.stderr)
        self.assertEqual(get(url, token=TOKENS["csp:csp-beta"]).status, 200)
        self.assertEqual(get(f"/v1/periods/{P}/statements/csp-alpha", token=new).status, 403)
        # Revoke: delete its line.
        with open(path) as f:
            lines = f.readlines()
        kept = [ln for ln in lines if not ln.rstrip().endswith(name)]
        self.assertEqual(len(kept), len(lines) - 1)
        replace_file(path, "".join(kept))
        took = wait_until(lambda: get(url, token=new).status == 401, "the revoked token fails")
        print(f"  revoked token refused after {took:.1f} s", file=sys.stderr)
        for role, tok in TOKENS.items():
            self.assertNotEqual(get("/v1/periods", token=tok).status, 401, role)

    def test_tokens_never_reach_the_log(self):
        """Issue 8, item 8: no bearer token, valid or not, is written to serve's log."""
        wrong = "f" * 64
        for tok in list(TOKENS.values()) + [wrong]:
            get("/v1/periods", token=tok)
            get("/v1/periods/2026-03/invoices/nobody", token=tok)
            request("POST", "/ui/login", body=f"token={tok}".encode(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
            request("GET", "/ui/invoices", headers={"Cookie": f"gpuledger_token={tok}"})
        with open(ENV["API_SERVE_LOG"], errors="replace") as f:
            text = f.read()
        self.assertGreater(len(text), 0)
        for role, tok in list(TOKENS.items()) + [("wrong", wrong)]:
            self.assertNotIn(tok, text, f"the {role} token is in serve's log")

    def test_a_bad_line_grants_nothing_and_the_other_lines_take_effect(self):
        """Issue 14 item 5: a removed line is revoked even while another line is malformed."""
        path = ENV["API_TOKENS_FILE"]
        log = ENV["API_SERVE_LOG"]
        name = f"bad-line-{os.getpid()}"
        url = f"/v1/periods/{P}/statements/csp-beta"
        with open(path) as f:
            good = f.read()
        extra = subprocess.run([BIN, "tokens", "add", "--file", path, "--role", "csp:csp-beta",
                                "--name", name], capture_output=True, text=True, check=True,
                               timeout=30).stdout.strip()
        try:
            wait_until(lambda: get(url, token=extra).status == 200, "the added token works")
            bad_text = "this line is not a token " + extra[:8]
            # The added line removed and a malformed one in its place (line n + 1).
            replace_file(path, good + bad_text + "\n")
            wait_until(lambda: get(url, token=extra).status == 401,
                       "the removed token is refused although another line is malformed")
            for role, tok in TOKENS.items():
                self.assertEqual(get("/v1/periods", token=tok).status, 200, role)
            n = good.count("\n") + 1
            with open(log, errors="replace") as f:
                text = f.read()
            self.assertIn(f"tokens file {path}:{n}: ", text)
            self.assertIn("this line grants nothing", text)
            self.assertNotIn(bad_text, text)
        finally:
            replace_file(path, good)
        wait_until(lambda: get("/v1/periods").status == 200, "tokens work after the repair")

    def test_a_deleted_tokens_file_revokes_every_token(self):
        path = ENV["API_TOKENS_FILE"]
        with open(path) as f:
            good = f.read()
        os.rename(path, path + ".away")
        try:
            wait_until(lambda: get("/v1/periods").status == 401,
                       "every token is refused once the file is gone")
            for role, tok in TOKENS.items():
                self.assertEqual(get("/v1/periods", token=tok).status, 401, role)
            with open(ENV["API_SERVE_LOG"], errors="replace") as f:
                self.assertIn("every token is revoked", f.read())
        finally:
            os.rename(path + ".away", path)
        wait_until(lambda: get("/v1/periods").status == 200, "tokens work once it is back")
        with open(path) as f:
            self.assertEqual(f.read(), good)

    def test_serve_refuses_a_tokens_file_others_may_write_or_read(self):
        tmp = tempfile.mkdtemp(prefix="gpuledger-api-perm.")
        try:
            tokens = os.path.join(tmp, "tokens")
            shutil.copy(ENV["API_TOKENS_FILE"], tokens)
            for mode in (0o666, 0o620, 0o604):
                os.chmod(tokens, mode)
                r = subprocess.run(
                    [BIN, "serve", "--db", ENV["API_DB"], "--store", os.path.join(tmp, "store"),
                     "--tokens", tokens, "--listen", "127.0.0.1:0"],
                    capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
                self.assertNotEqual(r.returncode, 0, oct(mode))
                self.assertIn(f"chmod 600 {tokens}", r.stderr + r.stdout, oct(mode))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# ---- a second server over the same ledger: HTTPS, and the connection limit ----

class SecondServer:
    """`gpuledger serve` on port 0 over the fixture's ledger, with its own settlement store
    (serve is the single writer of its store)."""

    def __init__(self, tmp, *args):
        self.tmp = tmp
        os.makedirs(tmp, exist_ok=True)
        self.port_file = os.path.join(tmp, "port")
        self.log_path = os.path.join(tmp, "serve.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--db", ENV["API_DB"], "--store", os.path.join(tmp, "store"),
             "--tokens", ENV["API_TOKENS_FILE"], "--listen", "127.0.0.1:0", "--port-file",
             self.port_file, "--refresh-ms", "200", "--verify-every-s", "0", *args],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: self.proc.poll() is None and self.read_port(),
                       "the second server listens", limit_s=30)
        except AssertionError:
            self.stop()
            raise AssertionError("second serve did not start: " + self.log_text())
        self.port = self.read_port()

    def read_port(self):
        try:
            with open(self.port_file) as f:
                text = f.read().strip()
            return int(text) if text else None
        except (OSError, ValueError):
            return None

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()[-3000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class TlsTest(ApiTest):
    MAX_CONNECTIONS = 6  # for the refusal test; the others use one connection at a time

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="gpuledger-api-tls.")
        try:
            cls.start_server(cls.tmp)
        except BaseException:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise

    @classmethod
    def start_server(cls, t):
        # A throwaway CA, and a server certificate it signs for 127.0.0.1 and localhost.
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                "-subj", "/CN=gpuledger test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=t)
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=t)
        with open(os.path.join(t, "ext.cnf"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf",
                cwd=t)
        cls.ca = os.path.join(t, "ca.pem")
        cls.server = SecondServer(os.path.join(t, "serve"), "--tls-cert",
                                  os.path.join(t, "server.pem"), "--tls-key",
                                  os.path.join(t, "server.key"),
                                  "--max-connections", str(cls.MAX_CONNECTIONS))
        cls.ctx = ssl.create_default_context(cafile=cls.ca)

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        assert rc == 0, f"the TLS server exited with {rc}"

    def https(self, method, path, **kw):
        return request(method, path, port=self.server.port, context=self.ctx, **kw)

    def test_https_verified_against_the_ca(self):
        wait_until(lambda: self.https("GET", "/readyz").status == 200, "TLS server ready")
        r = self.https("GET", "/healthz")
        self.assertEqual((r.status, r.json()), (200, {"status": "ok"}))
        # The same ledger through a store of its own: the same closes, to the digest.
        d = self.https("GET", "/v1/periods", token=OP)
        self.assertEqual(d.status, 200)
        self.assertEqual(d.json()["closes"], get_json("/v1/periods")["closes"])
        inv = self.https("GET", f"/v1/periods/{P}/invoices/inst-nari.csv",
                         token=TOKENS["institution:inst-nari"])
        self.assertEqual(inv.body, get(f"/v1/periods/{P}/invoices/inst-nari.csv").body)
        self.assertEqual(self.https("GET", "/v1/periods").status, 401)
        # TLS 1.2 or later only.
        with socket.create_connection((HOST, self.server.port), timeout=LIVENESS_S) as s:
            with self.ctx.wrap_socket(s, server_hostname="127.0.0.1") as tls:
                self.assertIn(tls.version(), ("TLSv1.2", "TLSv1.3"))
        # Verified by name too.
        r = request("GET", "/healthz", host="localhost", port=self.server.port,
                    context=self.ctx)
        self.assertEqual(r.status, 200)

    def test_login_cookie_is_secure_under_tls(self):
        r = self.https("POST", "/ui/login", body=f"token={TOKENS['auditor']}".encode(),
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(r.status, 303)
        self.assertEqual(r.header("set-cookie"), f"gpuledger_token={TOKENS['auditor']}; Path=/; "
                                                 "HttpOnly; SameSite=Strict; Secure")

    def test_tls12_offers_only_forward_secret_aead_suites(self):
        """Issue 14 item 8: no static RSA and no CBC-SHA1 suites under TLS 1.2."""
        def handshake(ciphers):
            ctx = ssl.create_default_context(cafile=self.ca)
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(ciphers)
            with socket.create_connection((HOST, self.server.port), timeout=LIVENESS_S) as s:
                with ctx.wrap_socket(s, server_hostname="127.0.0.1") as tls:
                    return tls.cipher()[0]

        self.assertEqual(handshake("ECDHE-ECDSA-AES128-GCM-SHA256"),
                         "ECDHE-ECDSA-AES128-GCM-SHA256")
        for weak in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA",
                     "ECDHE-ECDSA-AES128-SHA256", "AES128-SHA:AES256-GCM-SHA384:@SECLEVEL=0"):
            with self.assertRaises(ssl.SSLError, msg=weak):
                handshake(weak)

    def test_hsts_and_framing_headers_on_the_tls_listener(self):
        r = self.https("GET", "/ui/login")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("strict-transport-security"), "max-age=31536000")
        self.assertEqual(r.header("x-frame-options"), "DENY")
        self.assertIn("frame-ancestors 'none'", r.header("content-security-policy"))

    def test_an_unknown_ca_is_refused(self):
        with self.assertRaises(ssl.SSLCertVerificationError):
            request("GET", "/healthz", port=self.server.port,
                    context=ssl.create_default_context())

    def test_plain_http_to_the_tls_port_fails(self):
        raw = raw_exchange(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                           port=self.server.port)
        self.assertFalse(raw.startswith(b"HTTP/"), raw[:100])
        with self.assertRaises((http.client.HTTPException, ConnectionError, OSError)):
            r = request("GET", "/healthz", port=self.server.port, timeout=LIVENESS_S)
            raise AssertionError(f"plain HTTP got an answer: {r!r}")  # not an OSError


    def test_refused_beyond_the_connection_limit(self):
        idle = []
        try:
            for _ in range(self.MAX_CONNECTIONS):
                idle.append(socket.create_connection((HOST, self.server.port),
                                                     timeout=LIVENESS_S))
            got = {}

            def at_limit():
                try:
                    r = self.https("GET", "/healthz")
                except (ssl.SSLError, OSError, http.client.HTTPException):
                    return False
                got["status"], got["retry"] = r.status, r.header("retry-after")
                return r.status == 503

            # Beyond --max-connections a TLS client reads "503 busy, Retry-After: 1" over TLS.
            wait_until(at_limit, "the TLS server at its connection limit")
            self.assertEqual(got["retry"], "1")
        finally:
            for s in idle:
                s.close()

        def served():
            try:
                return self.https("GET", "/healthz").status == 200
            except (ssl.SSLError, OSError, http.client.HTTPException):
                return False

        wait_until(served, "served over TLS again once the idle connections are gone")


class RateLimitTest(ApiTest):
    RATE, BURST = 20, 40

    def test_rate_and_size_limits_hold_under_a_burst(self):
        tmp = tempfile.mkdtemp(prefix="gpuledger-api-rate.")
        server = SecondServer(tmp, "--rate-limit", str(self.RATE), "--rate-burst",
                              str(self.BURST))
        try:
            wait_until(lambda: request("GET", "/readyz", port=server.port).status == 200,
                       "rate-limited server ready")
            oversized = (b"GET /v1/ledger/head HTTP/1.1\r\nHost: t\r\nX-Filler: " +
                         b"a" * 9000 + b"\r\n\r\n")

            def one(i):
                if i % 25 == 0:  # an oversized request in the burst: still 431, never served
                    return status_of(raw_exchange(oversized, port=server.port)), None, None
                r = request("GET", "/v1/ledger/head", token=OP, port=server.port)
                return r.status, r.header("Retry-After"), r.text

            t0 = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                results = list(pool.map(one, range(400)))
                # Probes during the burst are not limited.
                self.assertEqual(request("GET", "/healthz", port=server.port).status, 200)
            elapsed = time.monotonic() - t0
            statuses = [s for s, _, _ in results]
            served, limited = statuses.count(200), statuses.count(429)
            self.assertEqual(statuses.count(431), 16, statuses)
            self.assertEqual(served + limited + 16, 400, sorted(set(statuses)))
            # At most the burst plus the rate over the burst's duration (one token of slack).
            self.assertLessEqual(served, self.BURST + self.RATE * elapsed + 1,
                                 f"{served} served in {elapsed:.2f} s")
            self.assertGreaterEqual(served, self.BURST, "the burst allowance was not given")
            self.assertGreater(limited, 0)
            for status, retry_after, text in results:
                if status == 429:
                    self.assertGreaterEqual(int(retry_after), 1)
                    self.assertEqual(json.loads(text)["code"], "rate_limited")
            print(f"burst of 400 requests from 16 threads in {elapsed:.2f} s: {served} served, "
                  f"{limited} got 429, 16 oversized got 431", file=sys.stderr)
            # The bucket refills: after a second at the rate, the client is served again, and
            # the refusals are counted.
            time.sleep(self.BURST / self.RATE + 0.2)
            self.assertEqual(request("GET", "/v1/ledger/head", token=OP,
                                     port=server.port).status, 200)
            metrics = request("GET", "/metrics", token=OP, port=server.port).text
            m = re.search(r"(?m)^gpuledger_http_rate_limited_total (\S+)$", metrics)
            self.assertTrue(m, metrics[-500:])
            self.assertEqual(float(m.group(1)), limited)
        finally:
            rc = server.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        self.assertEqual(rc, 0, "the rate-limited server did not stop cleanly on SIGTERM")


class ConnectionLimitTest(ApiTest):
    def test_beyond_max_connections_is_503(self):
        tmp = tempfile.mkdtemp(prefix="gpuledger-api-limit.")
        server = SecondServer(tmp, "--max-connections", "4")
        idle = []
        try:
            wait_until(lambda: request("GET", "/readyz", port=server.port).status == 200,
                       "limited server ready")
            for _ in range(4):
                idle.append(socket.create_connection((HOST, server.port), timeout=LIVENESS_S))
            got = {}

            def refused():
                # Connection: close, so that a probe admitted before the idle connections are
                # counted comes back at once instead of being kept alive until the socket's
                # timeout (which, on a slow sanitized build, used the whole wait on one probe).
                raw = raw_exchange(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                                   port=server.port)
                got["raw"] = raw
                if status_of(raw) == 503:
                    return True
                # On a loaded machine a probe can be admitted before an idle connection is;
                # that one is then refused (closed with a 503) and the probes keep fitting:
                # open it again.
                for i, s in enumerate(idle):
                    s.setblocking(False)
                    try:
                        closed = s.recv(4096) is not None  # a 503, or b"": closed
                    except BlockingIOError:
                        closed = False
                    except OSError:
                        closed = True
                    if closed:
                        s.close()
                        idle[i] = socket.create_connection((HOST, server.port), timeout=LIVENESS_S)
                    else:
                        s.settimeout(LIVENESS_S)
                return False

            # The idle connections are counted as their sessions start: retry until they are.
            wait_until(refused, "a connection beyond the limit is refused", limit_s=3 * LIVENESS_S)
            raw = got["raw"]
            self.assertIn(b"\r\nRetry-After: 1\r\n", raw)
            self.assertEqual(json.loads(body_of(raw))["code"], "busy")
            for s in idle:
                s.close()
            idle = []
            wait_until(lambda: request("GET", "/healthz", port=server.port).status == 200,
                       "served again once the idle connections are gone")
            metrics = request("GET", "/metrics", token=OP, port=server.port).text
            m = re.search(r"(?m)^gpuledger_http_connections_refused_total (\S+)$", metrics)
            self.assertTrue(m and float(m.group(1)) >= 1, metrics[-500:])
        finally:
            for s in idle:
                s.close()
            rc = server.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        self.assertEqual(rc, 0, "the limited server did not stop cleanly on SIGTERM")


if __name__ == "__main__":
    start = time.monotonic()
    prog = unittest.main(verbosity=2, exit=False)
    print(f"test_api.py: {prog.result.testsRun} tests in {time.monotonic() - start:.1f} s",
          file=sys.stderr)
    sys.exit(0 if prog.result.wasSuccessful() else 1)
