"""Case libraries and a page reload in a real browser (Chromium through Playwright, the app under ``streamlit run``).

A clinician labels real chest X-rays, saves them as a case library and reloads the page: the page
offers the unsaved session of this browser and restores it. A colleague in another browser loads the
library and sees the scans. The server and browser come from ``tests/test_app_browser.py``; the
database is a SQLite file in a temporary folder (``MEDFEW_DB_URL``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_app_browser import (  # noqa: F401 (app_url and browser are fixtures)
    RARE,
    TIMEOUT_MS,
    add_class,
    app_url,
    browser,
    choose,
    first_files,
    upload,
    wait_idle,
)

from medfew.store import Store

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module", autouse=True)
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh database for the app server of this module (set before ``app_url`` starts it)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'medfew.db'}"
    before = os.environ.get("MEDFEW_DB_URL")
    os.environ["MEDFEW_DB_URL"] = url
    yield url
    if before is None:
        os.environ.pop("MEDFEW_DB_URL", None)
    else:
        os.environ["MEDFEW_DB_URL"] = before


def open_app(page, url: str) -> None:
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.get_by_role("heading", name="1. Classes").wait_for()
    wait_idle(page)


def test_save_reload_restore_and_load_a_library(browser, app_url: str, database: str, data_root: Path) -> None:  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    open_app(page, app_url)
    supports = {name: first_files(data_root / RARE / name, 2) for name in ("Pneumocystis", "Streptococcus")}
    for name in supports:
        add_class(page, name)
    for name, files in supports.items():
        choose(page, "Class of these scans", name)
        upload(page, 0, files)
        page.get_by_role("button", name="Add to support set").click()
        page.get_by_text(f"{name}: 2 scans").wait_for()
        wait_idle(page)
    page.get_by_label("Name of the library").fill("Browser CXR")
    page.get_by_role("button", name="Save support set as library").click()
    page.get_by_text("Saved Browser CXR v1: 2 Pneumocystis, 2 Streptococcus.").wait_for()
    assert "browser=" in page.url

    page.reload()  # a reload used to lose everything
    page.get_by_text("This browser has an unsaved session: 2 Pneumocystis, 2 Streptococcus.").wait_for()
    wait_idle(page)
    assert page.get_by_text("Pneumocystis: 2 scans").count() == 0
    page.get_by_role("button", name="Restore session").click()
    page.get_by_text("Restored your unsaved session: 4 scans.").wait_for()
    page.get_by_text("Pneumocystis: 2 scans").wait_for()
    page.get_by_text("Streptococcus: 2 scans").wait_for()
    wait_idle(page)
    assert page.locator('[data-testid="stMain"] [data-testid="stImage"]').count() >= 4

    colleague = browser.new_context().new_page()  # another browser: no unsaved session, the library is there
    open_app(colleague, app_url)
    assert colleague.get_by_text("This browser has an unsaved session").count() == 0
    colleague.get_by_role("button", name="Load library", exact=True).click()
    colleague.get_by_text("Loaded case library 'Browser CXR' version 1: 4 scans.").wait_for()
    colleague.get_by_text("Pneumocystis: 2 scans").wait_for()
    colleague.get_by_text("Streptococcus: 2 scans").wait_for()
    wait_idle(colleague)
    assert colleague.locator('[data-testid="stMain"] [data-testid="stImage"]').count() >= 4
    library = Store(database).load_library("Browser CXR")
    assert library.counts == {"Pneumocystis": 2, "Streptococcus": 2}
    colleague.context.close()
    page.close()
