"""Case libraries, session restore and the audit trail in the clinician app (``AppTest``, real model and scans).

The page runs for real against a SQLite database in ``tmp_path`` (``MEDFEW_DB_URL``); a "reload" is
a new ``AppTest`` with the same ``?browser=`` id in its address, as a reloaded page has.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from synthetic import FAKE_PATIENT_ID, FAKE_PATIENT_NAME
from test_app import APP, CLASSES, Clinician, scans, synthetic_dicom

from medfew.cli import main
from medfew.store import Store, export_library, read_audit
from medfew.training.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # each test drives the whole app with the real model (about a minute on 2 CPUs)


class Browser(Clinician):
    """A page session; ``browser`` is the id a reloaded page keeps in its address."""

    def __init__(self, browser: str | None = None) -> None:
        self.at = AppTest.from_file(str(APP), default_timeout=120)
        if browser is not None:
            self.at.query_params["browser"] = browser
        self.run()

    @property
    def browser(self) -> str:
        value = self.at.query_params["browser"]
        return value[0] if isinstance(value, list) else value

    def save_library(self, name: str) -> Browser:
        self.at.text_input(key="library_name").input(name)
        return self.click("save_library")

    def has_button(self, key: str) -> bool:
        return any(b.key == key for b in self.at.button)

    def click(self, key: str) -> Browser:
        self.at.button(key=key).click()
        return self.run()


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    path = tmp_path / "medfew.db"
    monkeypatch.setenv("MEDFEW_DB_URL", f"sqlite:///{path}")
    return f"sqlite:///{path}", path


def labelled_browser(data_root: Path) -> Browser:
    user = Browser()
    for name in CLASSES:
        user.add_class(name)
    for name in CLASSES:
        user.upload_support(scans(data_root, name, 3), name)
    return user


def test_a_reloaded_page_offers_its_own_unsaved_session_and_restores_it(database, data_root: Path) -> None:
    first = labelled_browser(data_root)
    browser = first.browser
    assert len(browser) == 32
    other = Browser()  # another browser: nothing to restore
    assert other.browser != browser and not other.has_button("restore_session")
    reloaded = Browser(browser)
    assert reloaded.counts() == []
    assert any(i.startswith("This browser has an unsaved session: 3 Pneumocystis, 3 Streptococcus.")
               for i in reloaded.texts("info"))
    reloaded.click("restore_session")
    assert reloaded.counts() == ["**Pneumocystis**: 3 scans", "**Streptococcus**: 3 scans"]
    assert "Restored your unsaved session: 6 scans." in reloaded.texts("success")
    assert not reloaded.has_button("restore_session")
    restored = reloaded.at.session_state["workspace"]
    original = first.at.session_state["workspace"]
    assert [v.loaded.sha256 for v in restored.views] == [v.loaded.sha256 for v in original.views]  # JPEGs: exact
    reloaded.at.button(key=f"remove_{restored.views[0].id}").click()
    reloaded.run()  # autosaved again once restored
    again = Browser(browser)
    assert any("2 Pneumocystis, 3 Streptococcus" in i for i in again.texts("info"))
    again.click("discard_session")
    assert not Browser(browser).has_button("restore_session")  # started afresh: the draft is gone


def test_audit_records_of_a_full_session_with_a_library(database, data_root: Path) -> None:
    url, path = database
    user = labelled_browser(data_root).adapt()
    query = scans(data_root, "Pneumocystis", 1, start=5)
    user.diagnose(query + [("query.dcm", synthetic_dicom(), "application/dicom")])
    shown = [o.prediction for o in user.at.session_state["workspace"].outcomes]
    user.save_library("Pneumocystis vs Streptococcus, CXR")
    assert "Saved Pneumocystis vs Streptococcus, CXR v1: 3 Pneumocystis, 3 Streptococcus." in user.texts("success")
    user.adapt()
    workspace = user.at.session_state["workspace"]
    store = Store(url)
    records = read_audit(store)
    assert [r.action for r in records] == ["adapt", "diagnose", "diagnose", "adapt"]
    _, info = load_checkpoint("default", map_location="cpu")
    assert all(r.user == "local" and r.model_sha256 == info.weights_sha256 for r in records)
    assert all(r.support_counts == {"Pneumocystis": 3, "Streptococcus": 3} for r in records)
    assert len({r.support_sha256 for r in records}) == 1
    assert [(r.library_name, r.library_version) for r in records] == [(None, None)] * 3 + [
        ("Pneumocystis vs Streptococcus, CXR", 1)]
    first, second = records[1:3]
    assert first.event_id == second.event_id != records[0].event_id
    assert first.query_sha256 != second.query_sha256 and len(first.query_sha256) == 64
    for record, prediction in zip([first, second], shown, strict=True):
        assert (record.query_sha256, record.prediction) == (prediction.image_sha256, prediction.predicted)
        assert record.probabilities == pytest.approx(prediction.probabilities, abs=1e-6)
        assert abs(sum(record.probabilities.values()) - 1) < 1e-4 and set(record.probabilities) == set(CLASSES)
        assert isinstance(record.uncertain, bool) and sorted(record.prediction_set) == sorted(CLASSES)
        assert record.out_of_distribution in (True, False)
    assert records[0].query_sha256 is None and records[0].prediction is None

    today = datetime.now(UTC).date().isoformat()
    out = path.parent / "audit.csv"
    assert main(["audit", "export", "--since", today, "--until", today, "--csv", "--out", str(out), "--db", url]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("event_id,time_utc,user,action,model_sha256,library_name") and len(lines) == 5
    assert main(["audit", "export", "--since", "2000-01-01", "--until", "2000-01-02", "--db", url]) == 0
    assert main(["audit", "export", "--since", "yesterday", "--db", url]) == 2

    content = b"".join(f.read_bytes() for f in path.parent.glob("medfew.db*"))
    names = [n for n, _, _ in scans(data_root, "Pneumocystis", 3)] + [query[0][0], "query.dcm"]
    for forbidden in [FAKE_PATIENT_NAME, FAKE_PATIENT_ID, *names]:
        assert forbidden.encode() not in content, forbidden
    assert workspace.outcomes == []  # Adapt again cleared the diagnoses; the records stay


def test_load_a_library_in_another_browser_and_import_a_bad_zip(database, data_root: Path) -> None:
    url, _ = database
    labelled_browser(data_root).save_library("Rare CXR")
    colleague = Browser()
    assert colleague.at.selectbox(key="library_choice").value == "Rare CXR v1: 3 Pneumocystis, 3 Streptococcus"
    colleague.click("load_library")
    assert colleague.counts() == ["**Pneumocystis**: 3 scans", "**Streptococcus**: 3 scans"]
    assert "Loaded case library 'Rare CXR' version 1: 6 scans." in colleague.texts("success")
    colleague.adapt()
    assert read_audit(Store(url))[-1].library_name == "Rare CXR"

    good = export_library(Store(url).load_library("Rare CXR"))
    assert len(colleague.at.get("file_uploader")) == 2  # the import uploader shows only when asked for
    colleague.at.toggle(key="library_import").set_value(True)
    colleague.run()
    colleague.uploader("Library zip").set_value([("broken.zip", good[:len(good) // 2], "application/zip")])
    colleague.run().click("import_library")
    assert any(e.startswith("Not imported: broken.zip: is not a readable zip archive")
               for e in colleague.texts("error"))
    assert len(Store(url).list_libraries(all_versions=True)) == 1
    colleague.uploader("Library zip").set_value([("rare.zip", good, "application/zip")])
    colleague.run().click("import_library")
    assert "Imported Rare CXR v2: 3 Pneumocystis, 3 Streptococcus." in colleague.texts("success")
