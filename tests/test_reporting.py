"""Diagnostic reports: content, no identifiers by default, JSON / PDF (extractable text) / DICOM writers."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.uid import EncapsulatedPDFStorage
from pypdf import PdfReader
from synthetic import FAKE_PATIENT_ID, FAKE_PATIENT_NAME, dicom_dataset, save_dicom
from test_diagnosis import COARSE, FINE, SIZE, stripe_checkpoint, stripes_uint8

from medfew.diagnosis import DiagnosisSession
from medfew.errors import ConfigError, ImageInputError, ImageReadError
from medfew.reporting import (
    DISCLAIMER,
    QueryImages,
    build_report,
    query_images,
    render_pdf,
    report_inputs,
    write_dicom,
    write_json,
    write_pdf,
)
from medfew.reporting.images import saliency_overlay_png

SUPPORT_NAME = "Smith_John_1970"  # a file name that must never reach a report


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stripe_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture()
def diagnosed(checkpoint: Path, tmp_path: Path):
    """A session adapted on PNG support files, and the prediction of one synthetic DICOM query."""
    rng = np.random.default_rng(0)
    session = DiagnosisSession(checkpoint)
    for i in range(3):
        for period, label in ((FINE, "fine"), (COARSE, "coarse")):
            path = tmp_path / label / f"{SUPPORT_NAME}_{i}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(stripes_uint8(period, rng)).save(path)
            session.add_support(path, label)
    source = dicom_dataset(stripes_uint8(FINE, rng), modality="CR", StudyInstanceUID="1.2.3.4.5",
                           AccessionNumber="ACC-42")
    query = save_dicom(source, tmp_path / "query.dcm")
    session.adapt()
    return session, session.diagnose(query), query


def pdf_text(path_or_bytes: Path | bytes) -> str:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def test_report_content(diagnosed) -> None:
    session, prediction, _ = diagnosed
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    report = build_report(report_inputs(session), [prediction], notes="follow up in 3 months",
                          leave_one_out=session.leave_one_out(), created=when)
    assert report.created == "2026-01-02T03:04:05+00:00" and report.disclaimer == DISCLAIMER
    assert "RESEARCH USE ONLY" in report.disclaimer
    assert report.model.method == "protonet" and report.model.backbone == "conv4"
    assert len(report.model.weights_sha256) == 64 and report.model.training_data == ("stripes-synthetic",)
    assert report.support.classes == ("fine", "coarse") and report.support.counts == {"fine": 3, "coarse": 3}
    assert [len(v) for v in report.support.image_sha256.values()] == [3, 3]
    assert report.support.image_sha256["fine"][0] == session.support[0].sha256
    assert report.support.leave_one_out_accuracy == 1.0
    (query,) = report.queries
    assert query.prediction == prediction.predicted == "fine" and query.note == "follow up in 3 months"
    assert query.probabilities == prediction.probabilities and query.identifiers == {}
    # 6 support scans: the 90% prediction set holds both classes, which flags the scan uncertain
    assert query.prediction_set == prediction.prediction_set == ("fine", "coarse") and query.uncertain
    assert query.set_confidence == pytest.approx(0.9) and query.uncertain_rule == "set"
    assert query.set_statement == prediction.set_statement and "6 support scans" in query.set_note
    assert report.model.temperature == 1.0 and "not calibrated" in report.model.calibration_statement
    assert report.settings["conformal_alpha"] == 0.1
    assert query.clinical["Modality"] == "CR" and "PatientID" not in query.clinical
    thumb = Image.open(io.BytesIO(query.thumbnail_png))
    overlay = Image.open(io.BytesIO(query.saliency_overlay_png))
    assert thumb.format == overlay.format == "PNG" and max(thumb.size) == 256 and overlay.size == (256, 256)
    with pytest.raises(ConfigError, match="got 2 notes for 1 predictions"):
        build_report(report_inputs(session), [prediction], notes=["a", "b"])


def test_json_has_no_identifiers_or_file_names_unless_asked(diagnosed, tmp_path: Path) -> None:
    session, prediction, _ = diagnosed
    plain = write_json(build_report(report_inputs(session), [prediction]), tmp_path / "r.json").read_text()
    for secret in (FAKE_PATIENT_NAME, FAKE_PATIENT_ID, "ACC-42", "1.2.3.4.5", SUPPORT_NAME, "query.dcm"):
        assert secret not in plain
    data = json.loads(plain)
    assert data["queries"][0]["prediction"] == "fine" and "identifiers" not in data["queries"][0]
    assert data["queries"][0]["prediction_set"] == ["fine", "coarse"] and data["queries"][0]["set_confidence"] == 0.9
    assert data["queries"][0]["set_statement"].startswith("fine or coarse — the true class is in this set")
    assert data["model"]["temperature"] == 1.0 and data["settings"]["conformal_alpha"] == 0.1
    assert data["queries"][0]["thumbnail_png_base64"] and data["disclaimer"] == DISCLAIMER
    full = write_json(build_report(report_inputs(session), [prediction], include_identifiers=True), tmp_path / "f.json").read_text()
    ids = json.loads(full)["queries"][0]["identifiers"]
    assert ids["PatientName"] == FAKE_PATIENT_NAME and ids["PatientID"] == FAKE_PATIENT_ID
    assert SUPPORT_NAME not in full


def test_pdf_text_is_extractable_and_identifiers_only_on_request(diagnosed, tmp_path: Path) -> None:
    session, prediction, _ = diagnosed
    report = build_report(report_inputs(session), [prediction], notes="clinician says hello")
    text = pdf_text(write_pdf(report, tmp_path / "r.pdf"))
    assert "RESEARCH USE ONLY" in text and "predicted fine" in text and "clinician says hello" in text
    assert "unreliable" in text and report.model.name in text
    flat = " ".join(text.split())
    assert "Prediction set (90%): fine or coarse — the true class is in this set in at least 90% of cases" in flat
    assert "Calibration: Probabilities are not calibrated" in flat and "Uncertain: YES (the prediction set holds 2" in flat
    for secret in (FAKE_PATIENT_NAME, FAKE_PATIENT_ID, "ACC-42", SUPPORT_NAME):
        assert secret not in text
    text = pdf_text(render_pdf(build_report(report_inputs(session), [prediction], include_identifiers=True)))
    assert FAKE_PATIENT_NAME in text and FAKE_PATIENT_ID in text and "ACC-42" in text


def test_dicom_report_is_an_encapsulated_pdf_filed_in_the_source_study(diagnosed, tmp_path: Path) -> None:
    session, prediction, query = diagnosed
    report = build_report(report_inputs(session), [prediction])  # no identifiers in the PDF ...
    out = write_dicom(report, tmp_path / "report.dcm", query)
    ds = dcmread(out)
    assert ds.SOPClassUID == EncapsulatedPDFStorage == ds.file_meta.MediaStorageSOPClassUID
    assert ds.Modality == "DOC" and ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    # ... but the DICOM header carries them, so a PACS can file it
    assert str(ds.PatientName) == FAKE_PATIENT_NAME and ds.PatientID == FAKE_PATIENT_ID
    assert ds.StudyInstanceUID == "1.2.3.4.5" and ds.AccessionNumber == "ACC-42"
    source = dcmread(query)
    assert ds.SeriesInstanceUID and ds.SOPInstanceUID != source.SOPInstanceUID
    document = bytes(ds.EncapsulatedDocument)[: ds.EncapsulatedDocumentLength]
    assert document.startswith(b"%PDF") and "RESEARCH USE ONLY" in pdf_text(document)
    assert "Prediction set (90%): fine or coarse" in " ".join(pdf_text(document).split())
    assert FAKE_PATIENT_NAME not in pdf_text(document)
    # a pydicom Dataset works as the source as well
    assert dcmread(write_dicom(report, tmp_path / "r2.dcm", source)).PatientID == FAKE_PATIENT_ID


def test_writer_errors(diagnosed, tmp_path: Path) -> None:
    session, prediction, _ = diagnosed
    report = build_report(report_inputs(session), [prediction])
    not_dicom = tmp_path / "x.txt"
    not_dicom.write_text("hello")
    with pytest.raises(ImageReadError, match="x.txt: cannot read the source DICOM study"):
        write_dicom(report, tmp_path / "r.dcm", not_dicom)
    with pytest.raises(ImageInputError, match=r"saliency \(5, 5\) does not match image \(28, 28\)"):
        saliency_overlay_png(prediction.model_input, np.zeros((5, 5), np.float32))


def test_a_calibrated_model_is_named_in_every_writer(checkpoint: Path, tmp_path: Path) -> None:
    # (seed 5 draws five very alike coarse scans: fresh coarse queries then score below all of them and
    # get empty sets, the variance of a 10-scan calibration; seed 6 does not)
    rng = np.random.default_rng(6)
    session = DiagnosisSession(checkpoint)
    session.method.temperature = 2.5  # as a calibrated checkpoint's sidecar sets it
    for _ in range(5):
        session.add_support(stripes_uint8(FINE, rng), "fine")
        session.add_support(stripes_uint8(COARSE, rng), "coarse")
    session.adapt()
    prediction = session.diagnose(stripes_uint8(COARSE, rng))
    report = build_report(report_inputs(session), [prediction])
    assert report.model.temperature == 2.5 and report.queries[0].prediction_set == ("coarse",)
    assert report.queries[0].probabilities == prediction.probabilities and not report.queries[0].uncertain
    data = json.loads(write_json(report, tmp_path / "r.json").read_text())
    assert data["model"]["temperature"] == 2.5 and "T = 2.5" in data["model"]["calibration"]
    assert data["queries"][0]["prediction_set"] == ["coarse"]
    flat = " ".join(pdf_text(render_pdf(report)).split())
    assert "softmax(logits / T) with T = 2.5" in flat and "calibrated probability" in flat
    assert "Prediction set (90%): coarse — the true class is in this set in at least 90% of cases" in flat
    assert "Uncertain: no (the prediction set holds one class)" in flat


def test_free_text_dicom_attributes_stay_out_of_reports_by_default(checkpoint: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    session = DiagnosisSession(checkpoint)
    for _ in range(3):
        session.add_support(stripes_uint8(FINE, rng), "fine")
        session.add_support(stripes_uint8(COARSE, rng), "coarse")
    session.adapt()
    free_text = {"Manufacturer": "Clinic of Dr Jane Roe", "ManufacturerModelName": "Roe-Scanner 3000",
                 "ViewPosition": "PA SMITH", "PatientPosition": "HFS", "Laterality": "L",
                 "ImageType": ["ORIGINAL", "PRIMARY", "JOHNSMITH"]}
    query = save_dicom(dicom_dataset(stripes_uint8(FINE, rng), modality="CR", BodyPartExamined="CHEST",
                                     **free_text), tmp_path / "q.dcm")
    odd_body = save_dicom(dicom_dataset(stripes_uint8(FINE, rng), modality="CR", BodyPartExamined="MR SMITH CHEST"),
                          tmp_path / "q2.dcm")
    predictions = [session.diagnose(query, saliency=False), session.diagnose(odd_body, saliency=False)]
    plain = build_report(report_inputs(session), predictions)
    text = write_json(plain, tmp_path / "r.json").read_text() + pdf_text(write_pdf(plain, tmp_path / "r.pdf"))
    for secret in ("Jane Roe", "Roe-Scanner", "SMITH", "HFS"):
        assert secret not in text
    first, second = plain.queries
    assert first.clinical["Modality"] == "CR" and first.clinical["BodyPartExamined"] == "CHEST"
    assert first.clinical["Rows"] == SIZE and "Manufacturer" not in first.clinical
    assert "BodyPartExamined" not in second.clinical  # not a defined term: free text
    opted_in = build_report(report_inputs(session), predictions, include_identifiers=True)
    assert opted_in.queries[0].clinical["Manufacturer"] == "Clinic of Dr Jane Roe"
    assert opted_in.queries[0].clinical["ImageType"] == ["ORIGINAL", "PRIMARY", "JOHNSMITH"]
    assert "PA SMITH" in pdf_text(write_pdf(opted_in, tmp_path / "full.pdf"))


def test_pdf_has_page_numbers_aliases_input_size_and_training_data_once(diagnosed, tmp_path: Path) -> None:
    from medfew.reporting import report_json
    from medfew.reporting.report import training_domains

    session, prediction, _ = diagnosed
    report = build_report(report_inputs(session), [prediction, prediction])
    text = " ".join(pdf_text(write_pdf(report, tmp_path / "r.pdf")).split())
    alias = f"Q1-{prediction.image_sha256[:6]}"
    assert report.queries[0].alias == alias and report.queries[1].alias.startswith("Q2-")
    assert f"Query 1 ({alias}): predicted" in text and "medfew diagnostic report - page 1" in text
    assert f"Input: {SIZE}x{SIZE} pixels, 3 channels" in text and "Trained on: stripes-synthetic" in text
    assert json.loads(report_json(report))["queries"][0]["alias"] == alias
    provenance = [{"name": n} for n in ("organamnist", "bloodmnist", "organamnist", "bloodmnist", "own-set")]
    names, modalities = training_domains(provenance)
    assert names == ("organamnist", "bloodmnist", "own-set") and len(modalities) == 2


def test_report_is_built_from_plain_data_and_takes_images_already_drawn(diagnosed) -> None:
    session, prediction, _ = diagnosed
    inputs = report_inputs(session)
    assert inputs.model.method == "protonet" and inputs.support.counts == {"fine": 3, "coarse": 3}
    assert inputs.support.leave_one_out_accuracy is None and inputs.settings.to_dict() == {
        "uncertain_threshold": session.uncertain_threshold, "ood_factor": session.ood_factor,
        "conformal_alpha": 0.1, "preprocessing": {"image_size": SIZE, "channels": 3,
                                                  "normalize": session.preprocessing.normalize}}
    when = datetime(2026, 1, 2, tzinfo=UTC)
    drawn = build_report(inputs, [prediction], created=when)
    assert drawn.queries[0].thumbnail_png == query_images(prediction.image, prediction.model_input,
                                                          prediction.saliency).thumbnail_png
    given = build_report(inputs, [prediction], created=when,
                         images=[QueryImages(drawn.queries[0].thumbnail_png, drawn.queries[0].saliency_overlay_png)])
    assert given == drawn  # the same report, nothing drawn twice
    marker = QueryImages(b"thumb", None)
    assert build_report(inputs, [prediction], images=[marker]).queries[0].thumbnail_png == b"thumb"
    with pytest.raises(ConfigError, match="got 2 image sets for 1 predictions"):
        build_report(inputs, [prediction], images=[marker, marker])


def test_reporting_imports_no_session_no_model_code_and_no_torch() -> None:
    code = ("import sys, medfew.reporting, medfew.reporting.report; "
            "print('medfew.diagnosis.session' in sys.modules, "
            "any(m.startswith(('medfew.diagnosis', 'medfew.models', 'medfew.methods')) for m in sys.modules), "
            "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]
