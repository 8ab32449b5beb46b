"""The clinician app through ``streamlit.testing.v1.AppTest``: the whole flow and its error paths.

The app runs for real (default model, real scans from the rare chest X-ray folder and real DICOMs);
only the browser is simulated. ``tests/test_app_browser.py`` drives a real browser.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from streamlit.testing.v1 import AppTest
from synthetic import FAKE_PATIENT_ID, FAKE_PATIENT_NAME, dicom_dataset
from test_reporting import pdf_text

APP = Path(__file__).resolve().parents[1] / "apps" / "clinician" / "app.py"
RARE = "covid_chestxray_ieee8023_rare"
CLASSES = ("Pneumocystis", "Streptococcus")


def scans(data_root: Path, label: str, count: int, start: int = 0) -> list[tuple[str, bytes, str]]:
    files = sorted(p for p in (data_root / RARE / label).iterdir() if not p.name.startswith("."))
    return [(f.name, f.read_bytes(), "image/jpeg") for f in files[start:start + count]]


def synthetic_dicom() -> bytes:
    """A CR scan carrying the fake patient's name and id (in memory)."""
    rng = np.random.default_rng(0)
    ds = dicom_dataset(rng.integers(0, 4096, (64, 64), dtype=np.uint16), modality="CR", bits_stored=12,
                       StudyInstanceUID="1.2.826.0.1.3680043.8.498.1")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


class Clinician:
    """What a user does on the page, one call per action."""

    def __init__(self) -> None:
        self.at = AppTest.from_file(str(APP), default_timeout=120).run()
        assert not self.at.exception, self.at.exception

    def run(self) -> Clinician:
        self.at.run()
        assert not self.at.exception, self.at.exception
        return self

    def add_class(self, name: str) -> Clinician:
        self.at.text_input(key="new_class").input(name)
        self.at.button(key="add_class").click()
        return self.run()

    def upload_support(self, files: list[tuple[str, bytes, str]], label: str | None = None) -> Clinician:
        if label is not None:
            self.at.selectbox(key="upload_label").select(label)
        self.uploader("Scans: DICOM").set_value(files)
        self.run()
        self.at.button(key="add_support").click()
        return self.run()

    def uploader(self, label_start: str):
        return next(u for u in self.at.get("file_uploader") if u.label.startswith(label_start))

    def adapt(self) -> Clinician:
        self.at.button(key="adapt").click()
        return self.run()

    def diagnose(self, files: list[tuple[str, bytes, str]]) -> Clinician:
        self.uploader("Scans to diagnose").set_value(files)
        self.run()
        self.at.button(key="diagnose").click()
        return self.run()

    def texts(self, kind: str) -> list[str]:
        return [element.value for element in getattr(self.at, kind)]

    def counts(self) -> list[str]:
        return [m for m in self.texts("markdown") if m.startswith("**") and m.endswith(("scan", "scans"))]

    def report(self) -> dict[str, bytes]:
        identifiers = bool(self.at.session_state["include_identifiers"])  # what a click would generate now
        return self.at.session_state["workspace"].report_files(include_identifiers=identifiers)


@pytest.fixture
def labelled(data_root: Path) -> Clinician:
    """Two classes with three real chest X-rays each, adapted."""
    user = Clinician()
    for name in CLASSES:
        user.add_class(name)
    for name in CLASSES:
        user.upload_support(scans(data_root, name, 3), name)
    return user.adapt()


def test_flow_upload_label_adapt_diagnose_report(labelled: Clinician, data_root: Path) -> None:
    user = labelled
    assert user.counts() == ["**Pneumocystis**: 3 scans", "**Streptococcus**: 3 scans"]
    assert any(s.startswith("Adapted to 2 classes from 6 scans") for s in user.texts("success"))
    assert any("Leave-one-out" in m and "of 6 support scans" in m for m in user.texts("markdown"))
    # 6 scans are too few for a 90% set to leave a class out, and the page says so
    assert "Prediction sets: with 6 support scans a 90% set must hold every class; 10 or more scans in all can " \
           "narrow it." in user.texts("info")
    query = scans(data_root, "Pneumocystis", 1, start=5)
    user.diagnose(query + [("query.dcm", synthetic_dicom(), "application/dicom")])
    titles = [s for s in user.texts("subheader") if ": " in s]
    assert [t.split(":")[0] for t in titles] == [query[0][0], "query.dcm"]
    assert all(t.split(": ")[1].split(" (")[0] in CLASSES for t in titles)
    bars = [b for b in user.at.get("progress") if ": " in b.proto.text and b.proto.text.endswith("%")]
    assert len(bars) == 2 * len(CLASSES)  # one bar per class per scan, on the same 0-100% scale
    first = [float(b.proto.text.rsplit(": ", 1)[1][:-1]) for b in bars[:len(CLASSES)]]
    assert first == sorted(first, reverse=True) and sum(first) == pytest.approx(100, abs=0.2)
    sets = [m for m in user.texts("markdown") if m.startswith("**Prediction set (90%)**: ")]
    assert len(sets) == 2 and all(set(m.split(": ", 1)[1].split(" or ")) == set(CLASSES) for m in sets)
    assert sum(c.startswith("The true class is in this set in at least 90% of cases if the support scans are "
                            "representative (exchangeable)") for c in user.texts("caption")) == 2
    assert sum(w.startswith("Uncertain: the 90% prediction set holds 2 classes") for w in user.texts("warning")) == 2
    assert sum(c.startswith(("Calibrated probabilities (temperature T = ", "Probabilities (this model is not"))
               for c in user.texts("caption")) == 2
    assert any("unreliable for localising" in c for c in user.texts("caption"))
    labels = [b.label for b in user.at.get("download_button")]
    assert labels == ["Download PDF report", "Download JSON report", "Download DICOM report (query.dcm)"]

    user.at.text_area(key=user.at.text_area[1].key).input("Reviewed; CT advised")
    user.run()
    files = user.report()
    text = pdf_text(files["pdf"])
    assert "RESEARCH USE ONLY" in text and "Reviewed; CT advised" in text and "Pneumocystis" in text
    report = json.loads(files["json"])
    assert [q["prediction"] for q in report["queries"]] == [t.split(": ")[1].split(" (")[0] for t in titles]
    assert all(sorted(q["prediction_set"]) == sorted(CLASSES) and q["uncertain_rule"] == "set" for q in report["queries"])
    assert "temperature" in report["model"] and report["settings"]["conformal_alpha"] == 0.1
    assert "Prediction set (90%): " in " ".join(text.split())
    assert report["support"]["counts"] == {"Pneumocystis": 3, "Streptococcus": 3}
    for forbidden in (FAKE_PATIENT_NAME, FAKE_PATIENT_ID, query[0][0], "query.dcm"):
        assert forbidden not in text and forbidden not in files["json"].decode()

    user.at.checkbox(key="include_identifiers").check()
    user.run()
    files = user.report()
    assert FAKE_PATIENT_NAME in pdf_text(files["pdf"]) and FAKE_PATIENT_ID in files["json"].decode()
    assert any("include patient identifiers" in w for w in user.texts("warning"))


def test_dicom_report_files_into_the_query_study(labelled: Clinician) -> None:
    labelled.diagnose([("query.dcm", synthetic_dicom(), "application/dicom")])
    workspace = labelled.at.session_state["workspace"]
    ds = dcmread(io.BytesIO(workspace.dicom_report(0, [""])))
    assert ds.Modality == "DOC" and ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1"
    assert str(ds.PatientName) == FAKE_PATIENT_NAME and ds.PatientID == FAKE_PATIENT_ID


def test_bad_uploads_are_named_and_the_rest_is_kept(data_root: Path) -> None:
    user = Clinician().add_class("Pneumocystis")
    good = scans(data_root, "Pneumocystis", 2)
    malformed = io.BytesIO()  # a DICOM whose rescale slope is text: must not sink the files after it
    dicom_dataset(np.zeros((16, 16), np.uint16), RescaleSlope="7.25", RescaleIntercept="0").save_as(
        malformed, enforce_file_format=True)
    malformed = io.BytesIO(malformed.getvalue().replace(b"7.25", b"abc "))
    bad = [("notes.png", b"not an image at all", "image/png"), ("empty.dcm", b"", "application/dicom"),
           ("slope.dcm", malformed.getvalue(), "application/dicom")]
    user.upload_support([good[0], *bad, good[1]], "Pneumocystis")
    errors = user.texts("error")
    assert len(errors) == 3
    assert errors[0].startswith("notes.png: ") and "not a recognised image format" in errors[0]
    assert errors[1].startswith("empty.dcm: ") and errors[2].startswith("slope.dcm: ")
    assert user.counts() == ["**Pneumocystis**: 2 scans"]  # both good scans, the one after the bad ones too


def test_adapt_explains_why_it_is_disabled(data_root: Path) -> None:
    user = Clinician()
    assert user.at.button(key="adapt").disabled
    assert any("define at least two classes (now 0)" in i for i in user.texts("info"))
    user.add_class("Pneumocystis").add_class("Streptococcus")
    user.upload_support(scans(data_root, "Pneumocystis", 1), "Pneumocystis")
    assert user.at.button(key="adapt").disabled
    assert any("add scans to 'Streptococcus'" in i for i in user.texts("info"))
    assert user.at.button(key="diagnose").disabled
    user.add_class("   ")
    assert any("non-empty string" in e for e in user.texts("error"))


def test_zip_of_class_folders_relabel_and_remove(data_root: Path) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for label in CLASSES:
            for name, data, _ in scans(data_root, label, 2):
                z.writestr(f"cases/{label}/{name}", data)
        z.writestr("readme.txt", b"top-level file")
        z.writestr("__MACOSX/cases/._x.jpg", b"metadata")
    user = Clinician().upload_support([("cases.zip", archive.getvalue(), "application/zip")])
    assert user.counts() == ["**Pneumocystis**: 2 scans", "**Streptococcus**: 2 scans"]
    assert [e for e in user.texts("error")] == ["cases.zip/readme.txt: is not inside a class folder (use <class>/<file>)"]
    workspace = user.at.session_state["workspace"]
    first, second = workspace.views[0].id, workspace.views[1].id
    user.at.selectbox(key=f"relabel_{first}").select("Streptococcus")
    user.run()
    assert user.counts() == ["**Pneumocystis**: 1 scan", "**Streptococcus**: 3 scans"]
    user.at.button(key=f"remove_{second}").click()
    user.run()
    assert user.counts() == ["**Pneumocystis**: 0 scans", "**Streptococcus**: 3 scans"]
    assert user.at.button(key="adapt").disabled


def test_support_change_invalidates_the_adapted_model(labelled: Clinician, data_root: Path) -> None:
    user = labelled
    user.diagnose(scans(data_root, "Streptococcus", 1, start=4))
    assert user.at.get("download_button")
    user.upload_support(scans(data_root, "Pneumocystis", 1, start=6), "Pneumocystis")
    assert any("changed since the last Adapt" in w for w in user.texts("warning"))
    assert user.at.button(key="diagnose").disabled and not user.at.get("download_button")


def test_unknown_checkpoint_is_an_error_not_a_crash(tmp_path: Path) -> None:
    user = Clinician()
    user.at.radio(key="model_choice").set_value("Checkpoint on this server")
    user.run()
    user.at.text_input(key="checkpoint_path").input(str(tmp_path / "missing"))
    user.run()
    assert any(e.startswith("Cannot load the model: ") and "missing" in e for e in user.texts("error"))
    pickled = tmp_path / "model.pt"
    pickled.write_bytes(b"\x80\x04pickle")
    user.at.text_input(key="checkpoint_path").input(str(pickled))
    user.run()
    assert any("Cannot load the model" in e and "model.pt" in e for e in user.texts("error"))


def test_sessions_share_nothing_but_the_model(labelled: Clinician) -> None:
    other = Clinician()
    assert other.counts() == [] and "workspace" in other.at.session_state
    mine, theirs = labelled.at.session_state["workspace"], other.at.session_state["workspace"]
    assert mine.session is not theirs.session and mine.session.method is not theirs.session.method
    assert theirs.views == [] and not theirs.is_adapted


def test_changing_a_flag_setting_keeps_the_support_set(labelled: Clinician) -> None:
    user = labelled
    before = user.at.session_state["workspace"].session
    user.at.slider(key="ood_factor").set_value(2.0)
    user.run()
    workspace = user.at.session_state["workspace"]
    assert workspace.session is not before and workspace.session.ood_factor == 2.0
    assert user.counts() == ["**Pneumocystis**: 3 scans", "**Streptococcus**: 3 scans"]
    assert not workspace.is_adapted and not user.at.button(key="adapt").disabled


def test_prediction_set_level_can_be_changed_or_turned_off(labelled: Clinician, data_root: Path) -> None:
    user = labelled
    query = scans(data_root, "Streptococcus", 1, start=4)
    user.at.radio(key="set_level").set_value("off")
    user.run()
    workspace = user.at.session_state["workspace"]
    assert workspace.session.alpha is None and user.counts() == ["**Pneumocystis**: 3 scans", "**Streptococcus**: 3 scans"]
    user.adapt().diagnose(query)
    assert "No prediction set: prediction sets are off in this session." in user.texts("caption")
    assert not [m for m in user.texts("markdown") if m.startswith("**Prediction set")]
    prediction = workspace.outcomes[0].prediction
    assert prediction.uncertain_rule == "entropy" and prediction.prediction_set is None
    assert any("Leave-one-out" in m for m in user.texts("markdown"))  # still computed, when asked for
    # 80% sets: 6 scans are enough to leave a class out (1/7 < 0.2)
    user.at.radio(key="set_level").set_value("80%")
    user.run()
    assert user.at.session_state["workspace"].session.alpha == pytest.approx(0.2)
    user.adapt().diagnose(query)
    assert not [i for i in user.texts("info") if i.startswith("Prediction sets:")]
    assert [m for m in user.texts("markdown") if m.startswith("**Prediction set (80%)**: ")]


APP_DIR = Path(__file__).resolve().parents[1] / "apps" / "clinician"


def test_no_bare_expression_in_the_app_script_would_be_written_onto_the_page() -> None:
    """Streamlit "magic" writes a bare string or expression statement of the script it runs onto the
    page (a constant's attribute docstring once showed above the title). Imported modules are not
    transformed, so their attribute docstrings are fine."""
    import ast

    tree = ast.parse((APP_DIR / "app.py").read_text(encoding="utf-8"))
    bare = [node.lineno for node in tree.body[1:]
            if isinstance(node, ast.Expr) and not isinstance(node.value, ast.Call)]
    assert bare == [], f"app.py: bare expressions at lines {bare}"


def test_streamlit_magic_is_off_for_the_app() -> None:
    import tomllib

    config = tomllib.loads((APP_DIR.parents[1] / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["runner"]["magicEnabled"] is False and config["client"]["toolbarMode"] == "viewer"
