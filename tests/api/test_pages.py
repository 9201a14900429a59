#!/usr/bin/env python3
"""The pages under /ui in a real browser: Debian's headless Chromium (/usr/bin/chromium) driven
by Playwright (ops/python-requirements.txt; its own browser download is never used).

Signs in through the /ui/login form with the finance token, opens the March invoice list,
follows the link to one invoice and checks the amounts the page shows (amount due, co-pay,
subsidy, list price, VAT) against the JSON API's for that invoice, saves a screenshot (and an
A4 PDF) of it, opens a CSP statement page (its SVG chart of daily GPU-hours), signs out, and
signs in as the auditor to see the audit page say VERIFIED.

Env: GPULEDGER_API_ENV (the `api` fixture's env file), GPULEDGER_TEST_OUT (where the screenshot
goes; default: the current directory), GPULEDGER_CHROMIUM (default /usr/bin/chromium).
"""
import calendar
import json
import os
import re
import subprocess
import sys
import time
import unittest
import urllib.request

from playwright.sync_api import sync_playwright


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_env import ENV  # noqa: E402
URL = ENV["API_URL"]
OUT = os.environ.get("GPULEDGER_TEST_OUT") or os.getcwd()
CHROMIUM = os.environ.get("GPULEDGER_CHROMIUM", "/usr/bin/chromium")
P = "2026-03"
# An SME: a non-zero co-pay and VAT, so every amount on the invoice means something.
INSTITUTION = "inst-daehan-bio"
CSP = "csp-alpha"
# Faces with Hangul glyphs: NanumGothic (ops/setup.sh installs fonts-nanum), Noto CJK, Windows'
# and macOS's Korean faces.
KOREAN_FACE = re.compile(r"Nanum|Noto ?Sans ?(CJK ?)?KR|Noto ?Sans ?CJK|Malgun|AppleSDGothic|"
                         r"Apple SD Gothic", re.I)


def api(path, token):
    req = urllib.request.Request(URL + path, headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def won(n):
    """As the pages print whole won: 1,234,567 (and -1,234)."""
    return ("-" if n < 0 else "") + f"{abs(n):,}"


def won_of(text):
    """'1,234 KRW' -> 1234."""
    m = re.fullmatch(r"\s*(-?[\d,]+)\s*KRW\s*", text)
    assert m, f"not an amount in won: {text!r}"
    return int(m.group(1).replace(",", ""))


class PagesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pw = sync_playwright().start()
        cls.browser = cls.pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox"])

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.pw.stop()

    def sign_in(self, token, locale="en-US"):
        """A signed-in page. The browser's locale sets Accept-Language: en-US asks for English,
        ko-KR (or none) gets the pages' default, Korean."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 900},
                                           locale=locale)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(URL + "/ui/login")
        page.fill("input[name=token]", token)
        with page.expect_navigation():
            page.click("input[type=submit]")
        return context, page

    def test_finance_invoice_statement_and_sign_out(self):
        context, page = self.sign_in(ENV["TOKEN_FINANCE"])
        try:
            # Signed in: redirected to the invoices, with an HttpOnly, SameSite=Strict cookie.
            self.assertTrue(page.url.endswith("/ui/invoices"), page.url)
            self.assertIn("signed in as api-test finance (finance)", page.inner_text("nav"))
            cookies = {c["name"]: c for c in context.cookies()}
            self.assertIn("gpuledger_token", cookies)
            self.assertTrue(cookies["gpuledger_token"]["httpOnly"])
            self.assertEqual(cookies["gpuledger_token"]["sameSite"], "Strict")
            # The cookie is out of reach of scripts.
            self.assertNotIn("gpuledger_token", page.evaluate("document.cookie"))

            # The month's invoice list.
            page.goto(f"{URL}/ui/invoices?period={P}")
            self.assertEqual(page.title(), "Invoices March 2026 - gpuledger")
            self.assertIn("closed (final)", page.inner_text("body"))
            rows = page.locator("table#invoices tr:has(td)")
            self.assertEqual(rows.count(), 8)
            self.assertIn("8 invoice(s).", page.inner_text("body"))
            inv = api(f"/v1/periods/{P}/invoices/{INSTITUTION}", ENV["TOKEN_FINANCE"])
            self.assertGreater(inv["totals"]["copay_krw"], 0)  # the sample's SME pays a share
            row = page.locator(f"table#invoices tr:has(a[href='/ui/invoices/{P}/{INSTITUTION}'])")
            cells = [c.strip() for c in row.locator("td").all_inner_texts()]
            self.assertEqual(cells[-1], won(inv["amount_due_krw"]))
            self.assertEqual(cells[-2], won(inv["totals"]["copay_krw"]))
            self.assertEqual(cells[-3], won(inv["totals"]["subsidy_krw"]))
            self.assertEqual(cells[-4], won(inv["totals"]["list_krw"]))

            # Follow the link to the invoice.
            with page.expect_navigation():
                row.locator("a").click()
            self.assertTrue(page.url.endswith(f"/ui/invoices/{P}/{INSTITUTION}"), page.url)
            section = page.locator("section.invoice")
            self.assertEqual(section.count(), 1)
            self.assertIn(f"Co-pay invoice: {inv['institution_name']}",
                          section.locator("h1").inner_text())
            self.assertIn("FINAL", section.inner_text())

            def amount(label):
                cell = section.locator(f"tr:has(td:text-is('{label}')) td.n")
                self.assertEqual(cell.count(), 1, label)
                return won_of(cell.inner_text())

            t = inv["totals"]
            self.assertEqual(amount("Paid by the state (subsidy)"), t["subsidy_krw"])
            self.assertEqual(amount("List price"), t["list_krw"])
            # Supply value / tax / total, as on a Korean tax invoice.
            tax = section.locator("table.tax")
            self.assertEqual(won_of(tax.locator("td.supply").inner_text()), t["copay_krw"])
            self.assertEqual(won_of(tax.locator("td.tax").inner_text()), inv["vat_krw"])
            self.assertEqual(won_of(tax.locator("td.due").inner_text()), inv["amount_due_krw"])
            self.assertIn("Total (amount due)", tax.inner_text())
            # One table row per invoice line.
            line_rows = section.locator("table.lines").first.locator("tr:has(td)")
            self.assertEqual(line_rows.count(), len(inv["lines"]))
            # Each bill: its number, both parties with registration numbers, supply / tax / total.
            bills = section.locator("div.bill")
            self.assertEqual(bills.count(), len(inv["bills"]))
            for k, b in enumerate(inv["bills"]):
                bill = bills.nth(k)
                self.assertIn(f"Invoice no. {b['number']}", bill.locator("h2").inner_text())
                parties = bill.locator("table.parties").inner_text()
                self.assertIn(inv["recipient"]["registration_number"], parties)
                self.assertIn(b["issuer"]["legal_name"], parties)
                cells = bill.locator("table.bill-tax tr.total td.n")
                self.assertEqual([won_of(cells.nth(i).inner_text()) for i in range(3)],
                                 [b["supply_krw"], b["vat_krw"], b["total_krw"]])
            # The page's own JSON link, fetched with the browser's cookie, says the same.
            href = page.get_attribute("nav.noprint a:text-is('JSON')", "href")
            self.assertEqual(href, f"/v1/periods/{P}/invoices/{INSTITUTION}.json")
            via_cookie = context.request.get(URL + href)
            self.assertEqual(via_cookie.status, 200)
            self.assertEqual(via_cookie.json(), inv)

            shot = os.path.join(OUT, f"invoice-{P}-{INSTITUTION}.png")
            page.screenshot(path=shot, full_page=True)
            with open(shot, "rb") as f:
                png = f.read()
            self.assertTrue(png.startswith(b"\x89PNG\r\n\x1a\n"))
            self.assertGreater(len(png), 10_000)
            print(f"\n  screenshot: {shot} ({len(png)} bytes)", file=sys.stderr)
            # It prints on A4, without the navigation bar.
            pdf = page.pdf(format="A4")
            self.assertTrue(pdf.startswith(b"%PDF-"))
            page.emulate_media(media="print")
            self.assertFalse(page.locator("nav.noprint").is_visible())
            page.emulate_media(media="screen")

            # A CSP statement: the daily GPU-hours chart, one bar per day of the month.
            page.goto(f"{URL}/ui/statements?period={P}")
            with page.expect_navigation():
                page.click(f"a[href='/ui/statements/{P}/{CSP}']")
            self.assertEqual(page.title(), f"Statement {CSP} March 2026 - gpuledger")
            chart = page.locator("svg.chart")
            self.assertEqual(chart.count(), 1)
            self.assertTrue(chart.is_visible())
            days = calendar.monthrange(2026, 3)[1]
            self.assertEqual(chart.locator("rect").count(), days)
            self.assertEqual(chart.get_attribute("aria-label"), "GPU-hours per day")
            st = api(f"/v1/periods/{P}/statements/{CSP}", ENV["TOKEN_FINANCE"])
            body = page.inner_text("body")
            self.assertIn(f"Subsidy owed by the state: {won(st['subsidy_owed_krw'])} KRW", body)
            self.assertIn(f"CSP settlement statement: {CSP}", body)
            # csp-alpha's own use is over its contract cap in the sample.
            self.assertGreater(st["own_use"]["excess_gpu_ms"], 0)
            self.assertIn("Over the cap by", page.inner_text("p.flag"))
            shot2 = os.path.join(OUT, f"statement-{P}-{CSP}.png")
            page.screenshot(path=shot2, full_page=True)
            print(f"  screenshot: {shot2}", file=sys.stderr)

            # Finance may not open the audit page.
            resp = page.goto(f"{URL}/ui/audit")
            self.assertEqual(resp.status, 403)

            # Sign out: the cookie is gone and the pages ask for a sign-in again.
            page.goto(f"{URL}/ui/invoices?period={P}")
            with page.expect_navigation():
                page.click("button:text-is('sign out')")
            self.assertTrue(page.url.endswith("/ui/login"), page.url)
            self.assertNotIn("gpuledger_token", {c["name"] for c in context.cookies()})
            resp = page.goto(f"{URL}/ui/invoices?period={P}")
            self.assertEqual(resp.status, 401)
            self.assertIn("Sign in required", page.inner_text("h1"))
        finally:
            context.close()

    def test_auditor_sees_verified(self):
        context, page = self.sign_in(ENV["TOKEN_AUDITOR"])
        try:
            resp = page.goto(f"{URL}/ui/audit")
            self.assertEqual(resp.status, 200)
            # The server verifies the chain in the background when it starts.
            deadline = time.monotonic() + 30
            while "Running..." in page.inner_text("body") and time.monotonic() < deadline:
                time.sleep(0.5)
                page.reload()
            ok = page.locator("p.ok")
            self.assertEqual(ok.first.inner_text(), "VERIFIED")
            head = api("/v1/ledger/head", ENV["TOKEN_AUDITOR"])
            body = page.inner_text("body")
            self.assertIn(f"Entry {head['seq']}, hash {head['hash']}", body)
            self.assertIn(f"{head['seq']} entries", body)
            cps = api("/v1/checkpoints?limit=1000", ENV["TOKEN_AUDITOR"])["checkpoints"]
            rows = page.locator("h2:text-is('Latest checkpoints') + table tr:has(td)")
            self.assertEqual(rows.count(), min(20, len(cps)))
            rejected = api("/v1/rejected", ENV["TOKEN_AUDITOR"])["rejected"]
            self.assertEqual(page.locator("table#rejected tr:has(td)").count(), len(rejected))
            # The filter form narrows the rejected events.
            page.fill("input[name=reason]", "EMPTY_INTERVAL")
            with page.expect_navigation():
                page.click("input[value=Filter]")
            cells = page.locator("table#rejected tr:has(td) td:nth-child(4)").all_inner_texts()
            self.assertEqual(cells, ["EMPTY_INTERVAL"])
            shot = os.path.join(OUT, "audit.png")
            page.screenshot(path=shot, full_page=True)
            print(f"\n  screenshot: {shot}", file=sys.stderr)
        finally:
            context.close()

    def test_hangul_renders_with_a_korean_face(self):
        """A Hangul institution name is drawn with a real Korean face, on screen (Chromium's
        DevTools protocol names the platform fonts that drew a node and how many glyphs each
        drew) and in the PDF printed from the page (pdffonts names the embedded fonts). Without
        a Korean font, Chromium falls back to a face without Hangul: empty boxes."""
        context, page = self.sign_in(ENV["TOKEN_FINANCE"], locale="ko-KR")
        try:
            inv = api(f"/v1/periods/{P}/invoices/{INSTITUTION}", ENV["TOKEN_FINANCE"])
            name = inv["institution_name"]
            hangul = [c for c in name if "\uac00" <= c <= "\ud7a3"]
            self.assertTrue(hangul, f"the sample's {INSTITUTION} has no Hangul name: {name!r}")
            page.goto(f"{URL}/ui/invoices/{P}/{INSTITUTION}")
            h1 = page.locator("section.invoice h1")
            self.assertIn(name, h1.inner_text())
            cdp = context.new_cdp_session(page)
            cdp.send("DOM.enable")
            cdp.send("CSS.enable")
            root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
            node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": "section.invoice h1"})
            fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]})["fonts"]
            korean = [f for f in fonts if KOREAN_FACE.search(f["familyName"])]
            self.assertTrue(korean, f"no Korean face drew {name!r}: {fonts}")
            self.assertGreaterEqual(sum(f["glyphCount"] for f in korean), len(hangul), fonts)
            print(f"\n  {name!r} drawn with {fonts}", file=sys.stderr)

            pdf_path = os.path.join(OUT, f"invoice-{P}-{INSTITUTION}.pdf")
            with open(pdf_path, "wb") as f:
                f.write(page.pdf(format="A4", print_background=True))
            listing = subprocess.run(["pdffonts", pdf_path], check=True, capture_output=True,
                                     text=True).stdout
            embedded = [ln for ln in listing.splitlines()[2:]
                        if KOREAN_FACE.search(ln.split()[0]) and " yes " in ln]
            self.assertTrue(embedded, f"no Korean face embedded in {pdf_path}:\n{listing}")
            print(f"  {pdf_path}: {embedded[0].split()[0]} embedded", file=sys.stderr)
        finally:
            context.close()

    def test_korean_by_default_english_on_request(self):
        """A Korean browser gets Korean pages and documents: words from the catalog, amounts in
        원, months as 2026년 3월, people's names for types and programmes; the same numbers as
        the JSON. ?lang=en switches one page to English."""
        context, page = self.sign_in(ENV["TOKEN_FINANCE"], locale="ko-KR")
        try:
            inv = api(f"/v1/periods/{P}/invoices/{INSTITUTION}", ENV["TOKEN_FINANCE"])
            page.goto(f"{URL}/ui/invoices?period={P}")
            self.assertEqual(page.title(), "2026년 3월 청구서 - gpuledger")
            self.assertEqual(page.get_attribute("html", "lang"), "ko")
            self.assertIn("마감 (확정)", page.inner_text("body"))
            self.assertIn("청구서 8건.", page.inner_text("body"))
            nav = page.inner_text("nav")
            for word in ("기간", "청구서", "CSP 정산서", "사업 요약", "로그아웃"):
                self.assertIn(word, nav)
            row = page.locator(f"table#invoices tr:has(a[href='/ui/invoices/{P}/{INSTITUTION}'])")
            cells = [c.strip() for c in row.locator("td").all_inner_texts()]
            self.assertEqual(cells[1], "중소기업")  # the SME's type, named for people
            self.assertEqual(cells[-1], won(inv["amount_due_krw"]))

            page.goto(f"{URL}/ui/invoices/{P}/{INSTITUTION}")
            section = page.locator("section.invoice")
            self.assertEqual(section.locator("h1").inner_text(),
                             f"자부담금 청구서: {inv['institution_name']}")
            text = section.inner_text()
            self.assertIn("2026년 3월", text)
            self.assertIn("확정", text)
            self.assertNotIn("LEASE_HPC", text)  # programmes by their names, not their ids

            def amount(label):
                cell = section.locator(f"tr:has(td:text-is('{label}')) td.n")
                self.assertEqual(cell.count(), 1, label)
                m = re.fullmatch(r"(-?[\d,]+)원", cell.inner_text().strip())
                self.assertTrue(m, cell.inner_text())
                return int(m.group(1).replace(",", ""))

            self.assertEqual(amount("정부 지원금"), inv["totals"]["subsidy_krw"])
            self.assertEqual(amount("정가"), inv["totals"]["list_krw"])

            def won_ko(locator):
                m = re.fullmatch(r"(-?[\d,]+)원", locator.inner_text().strip())
                self.assertTrue(m, locator.inner_text())
                return int(m.group(1).replace(",", ""))

            tax = section.locator("table.tax")
            for word in ("공급가액", "세액", "합계금액"):
                self.assertIn(word, tax.inner_text())
            self.assertEqual(won_ko(tax.locator("td.supply")), inv["totals"]["copay_krw"])
            self.assertEqual(won_ko(tax.locator("td.tax")), inv["vat_krw"])
            self.assertEqual(won_ko(tax.locator("td.due")), inv["amount_due_krw"])
            shot = os.path.join(OUT, f"invoice-{P}-{INSTITUTION}-ko.png")
            page.screenshot(path=shot, full_page=True)
            print(f"\n  screenshot: {shot}", file=sys.stderr)

            # One click to English, and the same amounts.
            with page.expect_navigation():
                page.click("nav.noprint a:text-is('English')")
            self.assertEqual(page.get_attribute("html", "lang"), "en")
            self.assertIn("Co-pay invoice:", page.locator("section.invoice h1").inner_text())
        finally:
            context.close()

    def test_korean_documents_on_screen_and_in_print(self):
        """The three documents a Korean reader files, as a Korean browser shows and prints them:
        an invoice, a CSP statement and a programme summary, each a screenshot and an A4 PDF
        under GPULEDGER_TEST_OUT (docs/screenshots/ holds copies). The programme summary is
        reached from the programme list; its totals are the JSON's."""
        context, page = self.sign_in(ENV["TOKEN_FINANCE"], locale="ko-KR")
        try:
            page.goto(f"{URL}/ui/programs?period={P}")
            self.assertEqual(page.title(), "2026년 3월 사업 요약 - gpuledger")
            rows = page.locator("table#programs tr:has(td)")
            self.assertEqual(rows.count(), 3)
            with page.expect_navigation():
                page.click(f"a[href='/ui/programs/{P}/GOV_ADVANCED']")
            summary = api(f"/v1/periods/{P}/programs/GOV_ADVANCED", ENV["TOKEN_FINANCE"])
            section = page.locator("section.program")
            self.assertEqual(section.locator("h1").inner_text(), "사업 요약: 정부 보유 첨단 GPU 지원")
            total = section.locator("tr.total td.n").all_inner_texts()
            self.assertEqual(total[1], won(summary["totals"]["list_krw"]))
            self.assertEqual(total[3], won(summary["totals"]["subsidy_krw"]))
            saved = []
            for name, path in (
                    (f"invoice-{P}-{INSTITUTION}-ko", f"/ui/invoices/{P}/{INSTITUTION}"),
                    (f"statement-{P}-{CSP}-ko", f"/ui/statements/{P}/{CSP}"),
                    (f"program-{P}-GOV_ADVANCED-ko", f"/ui/programs/{P}/GOV_ADVANCED")):
                page.goto(URL + path)
                self.assertEqual(page.get_attribute("html", "lang"), "ko")
                png = os.path.join(OUT, name + ".png")
                page.screenshot(path=png, full_page=True)
                pdf = os.path.join(OUT, name + ".pdf")
                with open(pdf, "wb") as f:
                    f.write(page.pdf(format="A4", print_background=True))
                listing = subprocess.run(["pdffonts", pdf], check=True, capture_output=True,
                                         text=True).stdout
                self.assertTrue(KOREAN_FACE.search(listing), f"{pdf}:\n{listing}")
                saved.append(name)
            print(f"\n  Korean screenshots and PDFs in {OUT}: {', '.join(saved)}",
                  file=sys.stderr)
        finally:
            context.close()

    def test_reflected_text_is_escaped(self):
        context, page = self.sign_in(ENV["TOKEN_FINANCE"])
        try:
            dialogs = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            probe = "<img src=x onerror=alert(1)>"
            page.goto(f"{URL}/ui/invoices?period={P}&q=" + urllib.request.quote(probe))
            self.assertEqual(page.input_value("input[name=q]"), probe)
            self.assertEqual(page.locator("img").count(), 0)
            self.assertEqual(dialogs, [])
        finally:
            context.close()


if __name__ == "__main__":
    start = time.monotonic()
    prog = unittest.main(verbosity=2, exit=False)
    print(f"test_pages.py: {prog.result.testsRun} tests in {time.monotonic() - start:.1f} s",
          file=sys.stderr)
    sys.exit(0 if prog.result.wasSuccessful() else 1)
