"""The app's PACS panel through ``streamlit.testing.v1.AppTest`` against a real Orthanc (DICOMweb).

Search, take series as labelled scans, adapt, diagnose a series, store the SR and PDF back and find them
in Orthanc; then the error paths (refused login, empty search, a series without images, wrong URL, no
PACS configured), each a message that keeps the support set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from orthanc_server import PATIENT_ID, SERIES_SIZES, serve_orthanc, synthetic_study
from pydicom.uid import ComprehensiveSRStorage
from test_app import Clinician

from medfew.pacs import PacsClient
from medfew.pacs.local_orthanc import LocalOrthanc, free_port

pytestmark = pytest.mark.slow  # drives the whole app with the real model (about 30 s on 2 busy CPUs)
NOTE = "Reviewed at the PACS workstation"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalOrthanc]:
    yield from serve_orthanc(tmp_path_factory.mktemp("orthanc"))


@pytest.fixture(scope="module")
def series(server: LocalOrthanc) -> dict[str, str]:
    """The synthetic study's series (``fine``, ``coarse``, ``query``, ``pdf``) stored on the server."""
    _, uids, datasets = synthetic_study(seed=1)
    PacsClient(server.settings).store(datasets)
    return uids


@pytest.fixture()
def pacs_env(server: LocalOrthanc, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/medfew/pacs.toml
    monkeypatch.delenv("MEDFEW_PACS_SETTINGS", raising=False)
    monkeypatch.delenv("MEDFEW_PACS_TOKEN", raising=False)
    monkeypatch.setenv("MEDFEW_PACS_URL", server.url)
    monkeypatch.setenv("MEDFEW_PACS_USER", server.user)
    monkeypatch.setenv("MEDFEW_PACS_PASSWORD", server.settings.password or "")
    return monkeypatch


def search(user: Clinician, patient_id: str = PATIENT_ID) -> Clinician:
    user.at.text_input(key="pacs_patient_id").input(patient_id)
    user.at.button(key="pacs_search").click()
    return user.run()


def pick(user: Clinician, series_uid: str) -> None:
    matches = user.at.session_state["pacs_matches"]
    user.at.selectbox(key="pacs_series").set_value(next(i for i, m in enumerate(matches) if m.series_uid == series_uid))
    user.run()


def add_series(user: Clinician, series_uid: str, label: str) -> Clinician:
    pick(user, series_uid)
    user.at.selectbox(key="pacs_label").select(label)
    user.at.button(key="pacs_add").click()
    return user.run()


def test_pull_support_diagnose_and_store_back(pacs_env: pytest.MonkeyPatch, server: LocalOrthanc,
                                              series: dict[str, str]) -> None:
    user = Clinician().add_class("fine").add_class("coarse")
    assert any(c.startswith("DICOMweb server: http://127.0.0.1:") for c in user.texts("caption"))
    search(user)
    assert len(user.at.session_state["pacs_matches"]) == 4
    assert any(o.startswith("20240301 · CR · 3 image(s) · fine stripes · patient ")
               for o in user.at.selectbox(key="pacs_series").options)
    add_series(user, series["fine"], "fine")
    assert "Added 3 scan(s) of the series to fine." in user.texts("success")
    add_series(user, series["coarse"], "coarse")
    assert user.counts() == ["**fine**: 3 scans", "**coarse**: 3 scans"]
    assert user.at.button(key="pacs_diagnose").disabled
    user.adapt()
    pick(user, series["query"])
    user.at.button(key="pacs_diagnose").click()
    user.run()
    workspace = user.at.session_state["workspace"]
    assert [o.prediction.predicted for o in workspace.outcomes] == ["fine"] * SERIES_SIZES["query"]
    assert not user.texts("error")
    user.at.text_area(key=f"note_{workspace.results_version}_0").input(NOTE)
    user.run()
    user.at.button(key="pacs_store").click()
    user.run()
    assert any(s.startswith("Stored the DICOM SR and PDF of 2 scan(s) in their studies") for s in user.texts("success"))

    client = PacsClient(server.settings)
    stored = [m for m in client.search(patient_id=PATIENT_ID) if m.modality in ("SR", "DOC")
              and m.series_uid != series["pdf"]]
    assert sorted(m.modality for m in stored) == ["DOC", "DOC", "SR", "SR"]
    notes = []
    for match in (m for m in stored if m.modality == "SR"):
        (sr,) = client.fetch_series(match.series_uid)
        assert sr.SOPClassUID == ComprehensiveSRStorage and sr.PatientID == PATIENT_ID
        notes += [i.TextValue for i in sr.ContentSequence[-1].ContentSequence
                  if i.ConceptNameCodeSequence[0].CodeMeaning == "Comment"]
    assert notes == [NOTE]
    assert user.counts() == ["**fine**: 3 scans", "**coarse**: 3 scans"] and len(workspace.outcomes) == 2


def test_errors_are_messages_and_keep_the_support_set(pacs_env: pytest.MonkeyPatch, server: LocalOrthanc,
                                                      series: dict[str, str]) -> None:
    user = Clinician().add_class("fine")
    search(user)
    add_series(user, series["fine"], "fine")
    kept = ["**fine**: 3 scans"]
    assert user.counts() == kept

    add_series(user, series["pdf"], "fine")
    assert any("holds no image to diagnose" in e for e in user.texts("error")) and user.counts() == kept
    search(user, "NOBODY-HERE")
    assert any("matches the search" in e for e in user.texts("error")) and user.counts() == kept

    pacs_env.setenv("MEDFEW_PACS_PASSWORD", "wrong-password-77")
    search(user)
    errors = user.texts("error")
    assert any("refused the login (HTTP 401)" in e for e in errors) and user.counts() == kept
    assert not any("wrong-password-77" in e for e in errors)

    pacs_env.setenv("MEDFEW_PACS_URL", f"http://127.0.0.1:{free_port()}/dicom-web")
    search(user)
    assert any("cannot reach the PACS" in e for e in user.texts("error")) and user.counts() == kept

    for name in ("MEDFEW_PACS_URL", "MEDFEW_PACS_USER", "MEDFEW_PACS_PASSWORD"):
        pacs_env.delenv(name)
    user.run()
    assert any(c.startswith("No PACS: no PACS configured: set MEDFEW_PACS_URL") for c in user.texts("caption"))
    assert user.counts() == kept
