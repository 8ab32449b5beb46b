"""The clinician app in a real browser: Playwright drives Debian's Chromium against ``streamlit run``.

A clinician's whole path without a command: define classes, upload real scans from ``../shared/data``
(JPEG chest X-rays and DICOM CTs), label them, Adapt, upload query scans (a JPEG and a JPEG 2000 DICOM),
Diagnose, write a note, download the PDF and DICOM reports and read them back. A second browser
context (another user) must see none of it.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``; ``.ci/run`` installs it) and the
``playwright`` package (never ``playwright install``). Skipped without Chromium, except in CI.
Set ``MEDFEW_SCREENSHOTS=DIR`` to save a screenshot of each step (``make screenshots``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from test_reporting import pdf_text

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 180_000
RARE = "covid_chestxray_ieee8023_rare"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``streamlit run apps/clinician/app.py`` on 127.0.0.1 and a free port, until the module ends."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found: apt-get install -y chromium"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    port = _free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    command = [sys.executable, "-m", "streamlit", "run", str(REPO / "apps" / "clinician" / "app.py"),
               "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false"]
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                        if response.read() == b"ok":
                            break
                except OSError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"streamlit did not come up:\n{log.read_text(errors='replace')}")
                time.sleep(0.5)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(app_url: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


class Screens:
    """Saves numbered full-page screenshots when ``MEDFEW_SCREENSHOTS`` names a folder."""

    def __init__(self, page) -> None:
        folder = os.environ.get("MEDFEW_SCREENSHOTS")
        self.folder = Path(folder) if folder else None
        self.page = page
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> None:
        if self.folder:
            self.page.wait_for_timeout(500)  # let charts and images paint
            self.page.screenshot(path=str(self.folder / f"{name}.png"), full_page=True)


def wait_idle(page) -> None:
    """Wait until Streamlit finished the rerun (the status widget says 'Running' while it works)."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=TIMEOUT_MS)


def add_class(page, name: str) -> None:
    page.get_by_label("New class").fill(name)
    page.get_by_role("button", name="Add class").click()
    page.get_by_text(f"{name}: 0 scans").wait_for(timeout=TIMEOUT_MS)


def choose(page, label: str, option: str) -> None:
    page.get_by_label(label).click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page)


def upload(page, index: int, files: list[Path]) -> None:
    """Put ``files`` into the ``index``-th file uploader and wait until every one is uploaded."""
    from playwright.sync_api import expect

    uploader = page.locator('[data-testid="stFileUploader"]').nth(index)
    uploader.locator('input[type="file"]').set_input_files([str(f) for f in files])
    expect(uploader.locator('[data-testid="stFileChip"]')).to_have_count(len(files), timeout=TIMEOUT_MS)
    expect(uploader.locator('[data-testid="stFileChipIconSpinner"]')).to_have_count(0, timeout=TIMEOUT_MS)
    wait_idle(page)


def first_files(folder: Path, count: int, start: int = 0) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))[start:start + count]


def test_clinician_path_in_chromium(browser, app_url: str, data_root: Path) -> None:
    rare, dicoms = data_root / RARE, data_root / "dicom_samples"
    tall = bool(os.environ.get("MEDFEW_SCREENSHOTS"))  # Streamlit scrolls inside the page: a tall window shows all
    page = browser.new_page(viewport={"width": 1400, "height": 2600 if tall else 1000}, accept_downloads=True)
    page.set_default_timeout(TIMEOUT_MS)
    shot = Screens(page)
    page.goto(app_url)
    page.get_by_role("heading", name="1. Classes").wait_for()
    wait_idle(page)
    shot("1-start")

    supports = {"Pneumocystis": first_files(rare / "Pneumocystis", 3),
                "Streptococcus": first_files(rare / "Streptococcus", 3),
                "CT head": [dicoms / "693_UNCR.dcm", dicoms / "ctbrain1.dcm"]}
    for name in supports:
        add_class(page, name)
    shot("2-classes")
    for name, files in supports.items():
        choose(page, "Class of these scans", name)
        upload(page, 0, files)
        page.get_by_role("button", name="Add to support set").click()
        page.get_by_text(f"{name}: {len(files)} scans").wait_for()
        wait_idle(page)
    assert page.get_by_role("img").count() >= 8  # thumbnails of every scan
    shot("3-support-set")

    page.get_by_role("button", name="Adapt").click()
    page.get_by_text("Adapted to 3 classes from 8 scans").wait_for()
    page.get_by_text("support scans are predicted as their own class").wait_for()
    wait_idle(page)
    shot("4-adapted")

    query_jpeg = first_files(rare / "Pneumocystis", 1, start=5)[0]
    query_dicom = dicoms / "RG3_J2KI.dcm"  # a JPEG 2000 compressed radiograph
    upload(page, 1, [query_jpeg, query_dicom])
    page.get_by_role("button", name="Diagnose").click()
    page.get_by_role("button", name="Download PDF report").wait_for()
    page.get_by_text(f"{query_dicom.name}: ").first.wait_for()
    page.get_by_text("Grad-CAM saliency").first.wait_for()
    page.get_by_text("Prediction set (90%)").first.wait_for()  # 8 support scans: every class, said so
    page.get_by_text("Prediction sets: with 8 support scans a 90% set must hold every class").wait_for()
    note = page.get_by_label("Clinician's note (goes into the report)").first
    note.fill("Browser test note: review with CT")
    # Straight from typing to Download, as a clinician does: the note must be in this very file.
    with page.expect_download() as download:
        page.get_by_role("button", name="Download PDF report").click()
    page.get_by_text("Clinician's notes in the report: 1 of 2 scans.").wait_for()
    wait_idle(page)
    shot("5-diagnosed")
    assert page.get_by_role("button", name="Deploy").count() == 0  # no developer toolbar for clinicians
    text = pdf_text(Path(download.value.path()).read_bytes())
    assert "RESEARCH USE ONLY" in text and "Browser test note: review with CT" in text
    assert "Prediction set (90%): " in " ".join(text.split())
    predicted = [line.split(": predicted ")[1] for line in text.splitlines() if line.startswith("Query ")]
    assert len(predicted) == 2 and all(p in supports for p in predicted), predicted
    source = dcmread(query_dicom, stop_before_pixels=True)
    for identifier in (str(source.PatientName), str(source.PatientID), query_jpeg.name, query_dicom.name):
        assert identifier not in text

    with page.expect_download() as download:
        page.get_by_role("button", name=f"Download DICOM report ({query_dicom.name})").click()
    report = dcmread(download.value.path())
    assert report.StudyInstanceUID == source.StudyInstanceUID and report.PatientID == source.PatientID
    assert "RESEARCH USE ONLY" in pdf_text(bytes(report.EncapsulatedDocument).rstrip(b"\x00"))
    shot("6-report")

    other = browser.new_context().new_page()
    other.goto(app_url)
    other.get_by_role("heading", name="1. Classes").wait_for(timeout=TIMEOUT_MS)
    wait_idle(other)
    assert other.get_by_text("Pneumocystis").count() == 0  # another session sees none of these scans
    other.context.close()
    page.close()
