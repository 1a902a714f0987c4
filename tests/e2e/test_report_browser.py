"""Reports of a real pipeline run on a simulated cohort, checked in headless Chromium.

The pipeline runs once (reads -> reports). Then:
- each sample report lists exactly the sample's truth pathogenic/likely pathogenic alleles
  with the right zygosity and names no other sample;
- Chromium opens every report with no console error, no exception and no request other than
  the report file itself, prints it to PDF and takes a screenshot (kept under the test's
  temporary folder, or in $COHORTFLOW_SCREENSHOTS when set).

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (file
descriptors 3 and 4, NUL-separated JSON), so no websocket client or driver is needed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pysam
import pytest

from cohortflow.report import clinvar_class
from cohortflow.simulate import SimulatedCohort, simulate_cohort

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)


class Chromium:
    """A headless Chromium spoken to with the DevTools protocol over a pipe."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def child_fds() -> None:
            # Chromium reads commands on fd 3 and writes replies on fd 4; dup first so that a
            # pipe end that already is 3 or 4 is not clobbered, and dup2 makes them inheritable.
            read_end, write_end = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            close_fds=False,  # only the inheritable fds 3 and 4 (set up above) reach Chromium
            preexec_fn=child_fds,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium exited (status {self.proc.poll()})")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(
        self, method: str, params: dict | None = None, session: str | None = None, timeout=60.0
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(
            e.get("method") == method and e.get("sessionId") == session for e in self.events
        ):
            self.events.append(self._message(deadline))

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if CHROMIUM is None:
        pytest.skip("chromium not found on PATH (Debian package chromium)")
    chrome = Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield chrome
    finally:
        chrome.close()


@pytest.fixture(scope="module")
def cohort_run(
    run_pipeline: Callable[[Path], None], tmp_path_factory: pytest.TempPathFactory
) -> SimulatedCohort:
    outdir = tmp_path_factory.mktemp("report_run")
    cohort = simulate_cohort(outdir, n_samples=3, seed=5, depth=25.0, genome_length=300_000)
    samples_tsv = cohort.samples_tsv.read_text().splitlines()
    # a run date column, shown in the identity section
    lines = [samples_tsv[0] + "\trun_date"] + [
        f"{line}\t2024-06-0{i + 1}" for i, line in enumerate(samples_tsv[1:])
    ]
    cohort.samples_tsv.write_text("\n".join(lines) + "\n")
    run_pipeline(outdir)
    return cohort


def _truth(vcf: Path, wanted: str) -> dict[str, str]:
    """ClinVar variation ID -> zygosity of a sample's truth alleles of class ``wanted``."""
    out = {}
    with pysam.VariantFile(str(vcf)) as fh:
        for rec in fh:
            sig = rec.info.get("CLNSIG")
            sig = ",".join(sig) if isinstance(sig, tuple) else sig
            if clinvar_class(sig) == wanted:
                hom = rec.samples[0]["GT"] == (1, 1)
                out[str(rec.info["CLNVID"])] = "homozygous" if hom else "heterozygous"
    return out


def _listed(part: str) -> dict[str, str]:
    out = {}
    for row in re.findall(r"<tr>(.*?)</tr>", part, flags=re.S):
        ids = re.findall(r"clinvar/variation/(\d+)/", row)
        if ids:
            cells = re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
            out[ids[0]] = cells[4].split("<br>")[0]
    return out


def test_reports_list_the_truth_pathogenic_alleles(cohort_run: SimulatedCohort) -> None:
    reports = cohort_run.outdir / "results" / "reports"
    total = 0
    for i, sample in enumerate(cohort_run.samples):
        page = (reports / f"{sample}.html").read_text()
        findings = page[page.index("<h2>Findings") : page.index("<details>")]
        expected = _truth(cohort_run.truth_vcfs[sample], "pathogenic")
        assert _listed(findings) == expected, sample
        total += len(expected)
        assert f"<tr><th>run date</th><td>2024-06-0{i + 1}</td></tr>" in page
        assert "<svg" in page and "QC minimum mean 20x" in page  # coverage plot
        for other in cohort_run.samples:
            assert other == sample or other not in page
    assert total >= 20


def _open(browser: Chromium, html: Path, screenshot: Path) -> dict[str, Any]:
    """Load ``html`` in a new tab; return its events, DOM facts and PDF size; save a PNG."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
        "sessionId"
    ]
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.send(f"{domain}.enable", session=session)
    browser.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        session=session,
    )
    browser.send("Page.navigate", {"url": html.resolve().as_uri()}, session=session)
    browser.wait_for("Page.loadEventFired", session)
    facts = browser.send(
        "Runtime.evaluate",
        {
            "expression": "JSON.stringify({title: document.title, details: "
            "document.querySelectorAll('details').length, svgs: "
            "document.querySelectorAll('svg').length, width: document.body.scrollWidth})",
            "returnByValue": True,
        },
        session=session,
    )["result"]["value"]
    shot = browser.send(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=session
    )
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    pdf = base64.b64decode(browser.send("Page.printToPDF", {}, session=session)["data"])
    opened = browser.send(
        "Runtime.evaluate",
        {
            "expression": "Array.from(document.querySelectorAll('details')).every(d => d.open)",
            "returnByValue": True,
        },
        session=session,
    )["result"]["value"]
    events = [e for e in browser.events if e.get("sessionId") == session]
    browser.send("Target.closeTarget", {"targetId": target})
    return {"events": events, "facts": json.loads(facts), "pdf": pdf, "printed_open": opened}


def test_every_report_opens_offline_without_errors(
    cohort_run: SimulatedCohort, browser: Chromium, tmp_path: Path
) -> None:
    reports = cohort_run.outdir / "results" / "reports"
    shots = Path(os.environ.get("COHORTFLOW_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    pages = [reports / f"{s}.html" for s in cohort_run.samples] + [reports / "cohort.html"]
    for html in pages:
        shot = shots / f"{html.stem}.png"
        seen = _open(browser, html, shot)
        methods = [e["method"] for e in seen["events"]]
        assert "Runtime.exceptionThrown" not in methods, html
        console = [
            e["params"]
            for e in seen["events"]
            if e["method"] == "Runtime.consoleAPICalled"
            and e["params"]["type"] in ("error", "assert")
        ]
        logged = [
            e["params"]["entry"]
            for e in seen["events"]
            if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"
        ]
        assert not console and not logged, (html, console, logged)
        requested = [
            e["params"]["request"]["url"]
            for e in seen["events"]
            if e["method"] == "Network.requestWillBeSent"
        ]
        assert requested == [html.resolve().as_uri()], requested
        facts = seen["facts"]
        if html.stem == "cohort":
            assert facts["title"] == "Cohort report" and facts["svgs"] == 1
        else:
            assert facts["title"] == f"Sample report: {html.stem}"
            assert facts["details"] == 1 and facts["svgs"] == 1
        assert facts["width"] <= 1280  # nothing wider than the window
        assert seen["pdf"].startswith(b"%PDF") and len(seen["pdf"]) > 10_000
        assert seen["printed_open"] is True  # printing expands the collapsed VUS section
        png = shot.read_bytes()
        assert png.startswith(b"\x89PNG")
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert width == 1280 and height > 900, (html, width, height)
