"""The DICOM Comprehensive SR of a diagnosis (highdicom), read back with pydicom: content, references, identifiers."""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from pydicom.uid import ComprehensiveSRStorage, generate_uid
from synthetic import FAKE_PATIENT_ID, FAKE_PATIENT_NAME, dicom_dataset

from medfew.errors import ConfigError, ImageReadError
from medfew.reporting import (
    DISCLAIMER,
    DiagnosticReport,
    ModelSummary,
    QueryResult,
    SupportSummary,
    write_sr,
)
from medfew.reporting.sr_writer import render_sr

SHA = "ab" * 32
NOTE = "Kontrolle in 3 Monaten — ✓"


def query(prediction: str, probabilities: dict[str, float], prediction_set: tuple[str, ...] | None,
          note: str = "") -> QueryResult:
    return QueryResult(
        prediction=prediction, probabilities=probabilities, normalized_entropy=0.3,
        uncertain=prediction_set is None or len(prediction_set) != 1, out_of_distribution=None,
        thumbnail_png=b"", saliency_overlay_png=None, saliency_caveat="", image_sha256="0" * 64, note=note,
        prediction_set=prediction_set, set_confidence=None if prediction_set is None else 0.9,
        set_note="too few scans" if prediction_set is None else None,
        set_statement="No prediction set: too few scans" if prediction_set is None else "the statement",
        uncertain_rule="entropy" if prediction_set is None else "set",
    )


def report(*queries: QueryResult) -> DiagnosticReport:
    return DiagnosticReport(
        created="2026-01-02T03:04:05+00:00", disclaimer=DISCLAIMER,
        model=ModelSummary(name="protonet/conv4@abababababab", method="protonet", backbone="conv4",
                           weights_sha256=SHA, temperature=1.5),
        support=SupportSummary(classes=("glioma", "meningioma"), counts={"glioma": 3, "meningioma": 3},
                               image_sha256={}),
        queries=tuple(queries),
    )


def sources(count: int, study_uid: str | None = None) -> list:
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    return [dicom_dataset(modality="MR", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid,
                          AccessionNumber="ACC-9", StudyDate="20240301", InstanceNumber=i + 1)
            for i in range(count)]


def items(sr, value_type: str) -> list:
    found = []

    def walk(content) -> None:
        for item in content:
            if item.ValueType == value_type:
                found.append(item)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return found


def texts(sr) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items(sr, "TEXT"):
        out.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(item.TextValue)
    return out


def test_sr_holds_the_result_and_references_each_source(tmp_path: Path) -> None:
    first = query("glioma", {"glioma": 0.8, "meningioma": 0.2}, ("glioma",), note=NOTE)
    second = query("meningioma", {"glioma": 0.45, "meningioma": 0.55}, None)
    scans = sources(2)
    path = write_sr(report(first, second), tmp_path / "sr.dcm", scans)
    sr = dcmread(path)
    assert sr.SOPClassUID == ComprehensiveSRStorage and sr.Modality == "SR" and sr.Manufacturer == "medfew"
    assert sr.StudyInstanceUID == scans[0].StudyInstanceUID and sr.SeriesInstanceUID != scans[0].SeriesInstanceUID
    assert sr.PatientID == FAKE_PATIENT_ID and str(sr.PatientName) == FAKE_PATIENT_NAME and sr.AccessionNumber == "ACC-9"
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    assert sr.ConceptNameCodeSequence[0].CodeValue == "18748-4"
    found = texts(sr)
    assert found["Research-use disclaimer"] == [DISCLAIMER]
    assert found["Algorithm Name"] == ["protonet/conv4@abababababab"] and found["Model weights SHA-256"] == [SHA]
    assert found["Algorithm Version"][0].startswith("medfew ") and "T = 1.5" in found["Probability calibration"][0]
    assert found["Predicted class"] == ["glioma", "meningioma"] and found["Class"] == ["glioma", "meningioma"] * 2
    assert found["Prediction set"] == ["glioma (the statement)", "No prediction set: too few scans"]
    assert found["Comment"] == [NOTE]  # UTF-8 survives
    assert found["Uncertain"] == ["no (rule: set)", "yes (rule: entropy)"]
    numbers = [(i.ConceptNameCodeSequence[0].CodeMeaning, float(i.MeasuredValueSequence[0].NumericValue))
               for i in items(sr, "NUM")]
    assert numbers == [("Calibrated probability", 0.8), ("Calibrated probability", 0.8), ("Calibrated probability", 0.2),
                       ("Prediction set confidence", 0.9), ("Calibrated probability", 0.55),
                       ("Calibrated probability", 0.45), ("Calibrated probability", 0.55)]
    references = [i.ReferencedSOPSequence[0] for i in items(sr, "IMAGE")]
    assert [r.ReferencedSOPInstanceUID for r in references] == [s.SOPInstanceUID for s in scans]
    assert {r.ReferencedSOPClassUID for r in references} == {scans[0].SOPClassUID}
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == scans[0].StudyInstanceUID
    hd.sr.ComprehensiveSR.from_dataset(sr)  # highdicom parses its own output back


def test_content_tree_carries_no_identifiers(tmp_path: Path) -> None:
    scan = sources(1)[0]
    data = render_sr(report(query("glioma", {"glioma": 0.7, "meningioma": 0.3}, ("glioma", "meningioma"))), scan)
    sr = dcmread(io.BytesIO(data))
    values = " ".join(v for vs in texts(sr).values() for v in vs)
    assert FAKE_PATIENT_ID not in values and "Doe" not in values and "ACC-9" not in values
    assert texts(sr)["Prediction set"] == ["glioma, meningioma (the statement)"]


def test_sr_errors(tmp_path: Path) -> None:
    one = report(query("glioma", {"glioma": 0.7, "meningioma": 0.3}, None))
    with pytest.raises(ConfigError, match="one source DICOM per query: got 2 for 1"):
        render_sr(one, sources(2))
    two = report(*[query("glioma", {"glioma": 0.7, "meningioma": 0.3}, None)] * 2)
    with pytest.raises(ConfigError, match="from one study; got 2 studies"):
        render_sr(two, sources(1) + sources(1))
    no_series = dicom_dataset(StudyInstanceUID=generate_uid())
    with pytest.raises(ConfigError, match=r"source DICOM 1 lacks \['SeriesInstanceUID'\]"):
        render_sr(one, no_series)
    with pytest.raises(ImageReadError, match="cannot read the source DICOM"):
        render_sr(one, b"not a dicom file")
    with pytest.raises(ImageReadError):
        write_sr(one, tmp_path / "x.dcm", tmp_path / "missing.dcm")
    assert not (tmp_path / "x.dcm").exists()
