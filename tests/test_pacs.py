"""medfew.pacs and ``medfew pacs`` against a real Orthanc with DICOMweb: search, pull, diagnose, store back.

One Orthanc per module (see ``orthanc_server.py``), loaded with the real DICOM samples and a synthetic
study of stripe scans; the diagnosis uses the tiny stripe checkpoint of ``test_diagnosis``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from orthanc_server import (
    ACCESSION,
    PATIENT_ID,
    SERIES_SIZES,
    LoadedPacs,
    load,
    serve_orthanc,
)
from pydicom import dcmread
from pydicom.uid import ComprehensiveSRStorage, EncapsulatedPDFStorage
from test_diagnosis import stripe_checkpoint
from test_reporting import pdf_text

from medfew.cli import main
from medfew.diagnosis import load_input
from medfew.errors import (
    NoPixelDataError,
    PacsAuthError,
    PacsConnectionError,
    PacsNotFoundError,
    PacsSettingsError,
)
from medfew.pacs import PacsClient, PacsSettings, study_date_filter, write_settings_file
from medfew.pacs.local_orthanc import LocalOrthanc, free_port
from medfew.reporting import DISCLAIMER
from medfew.training.checkpoint import load_checkpoint

WRONG_PASSWORD = "not-the-password-42"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalOrthanc]:
    yield from serve_orthanc(tmp_path_factory.mktemp("orthanc"))


@pytest.fixture(scope="module")
def loaded(server: LocalOrthanc, data_root: Path) -> LoadedPacs:
    return load(server, data_root)


@pytest.fixture()
def client(server: LocalOrthanc) -> PacsClient:
    return PacsClient(server.settings)


@pytest.fixture()
def pacs_env(server: LocalOrthanc, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's PACS settings in the environment (the login of the test server)."""
    settings = server.settings
    monkeypatch.delenv("MEDFEW_PACS_SETTINGS", raising=False)
    monkeypatch.delenv("MEDFEW_PACS_TOKEN", raising=False)
    monkeypatch.setenv("MEDFEW_PACS_URL", settings.url)
    monkeypatch.setenv("MEDFEW_PACS_USER", settings.user or "")
    monkeypatch.setenv("MEDFEW_PACS_PASSWORD", settings.password or "")


# ---------------------------------------------------------------------------------- settings (no server)
def test_settings_from_environment_and_file(tmp_path: Path) -> None:
    env = {"MEDFEW_PACS_URL": "https://pacs.example.org/dicom-web", "MEDFEW_PACS_USER": "alice",
           "MEDFEW_PACS_PASSWORD": "s3cret-pw", "MEDFEW_PACS_SETTINGS": str(tmp_path / "unused.toml")}
    file = write_settings_file(tmp_path / "pacs.toml", PacsSettings(url="http://127.0.0.1:8042/dicom-web",
                                                                    token="tok-123", timeout=7))
    assert file.stat().st_mode & 0o777 == 0o600
    from_file = PacsSettings.load({"MEDFEW_PACS_SETTINGS": str(file)})
    assert from_file.url == "http://127.0.0.1:8042/dicom-web" and from_file.token == "tok-123"
    assert from_file.timeout == 7 and from_file.user is None
    over = PacsSettings.load({**env, "MEDFEW_PACS_SETTINGS": str(tmp_path / "other.toml")},
                             settings_file=write_settings_file(tmp_path / "other.toml",
                                                               PacsSettings(url="http://10.0.0.1/dicom-web")))
    assert over.url == env["MEDFEW_PACS_URL"] and over.user == "alice" and over.password == "s3cret-pw"
    assert "s3cret-pw" not in repr(over) and "tok-123" not in repr(from_file)


def test_settings_errors_never_show_the_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PacsSettingsError, match="not in the URL http://pacs:8042/dicom-web$") as error:
        PacsSettings(url="http://bob:hunter2@pacs:8042/dicom-web")
    assert "hunter2" not in str(error.value)
    with pytest.raises(PacsSettingsError, match="must start with http"):
        PacsSettings(url="pacs:8042")
    with pytest.raises(PacsSettingsError, match="without a user"):
        PacsSettings(url="http://pacs", password="x")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/medfew/pacs.toml
    with pytest.raises(PacsSettingsError, match="no PACS configured: set MEDFEW_PACS_URL"):
        PacsSettings.load({})
    bad = tmp_path / "bad.toml"
    bad.write_text('url = "http://pacs"\npassword = "hunter2\n')
    with pytest.raises(PacsSettingsError, match="not a valid TOML settings file$") as error:
        PacsSettings.load({"MEDFEW_PACS_SETTINGS": str(bad)})
    assert "hunter2" not in str(error.value)
    bad.write_text('url = "http://pacs"\npasword = "x"\n')
    with pytest.raises(PacsSettingsError, match=r"unknown key\(s\) \['pasword'\]"):
        PacsSettings.load({"MEDFEW_PACS_SETTINGS": str(bad)})


# ---------------------------------------------------------------------------------- search (QIDO-RS)
def test_search_by_patient_accession_date_and_modality(client: PacsClient, loaded: LoadedPacs) -> None:
    by_patient = client.search(patient_id=PATIENT_ID)
    assert {m.series_uid for m in by_patient} == set(loaded.series.values())
    assert {m.study_uid for m in by_patient} == {loaded.study_uid}
    assert all(m.patient_id == PATIENT_ID and m.accession_number == ACCESSION for m in by_patient)
    fine = next(m for m in by_patient if m.series_uid == loaded.series["fine"])
    assert fine.modality == "CR" and fine.instances == SERIES_SIZES["fine"] and fine.series_description == "fine stripes"
    assert {m.series_uid for m in client.search(accession_number=ACCESSION)} == set(loaded.series.values())
    in_2024 = client.search(study_date="2024-01-01..2024-12-31")
    assert {m.study_uid for m in in_2024} == {loaded.study_uid}
    samples_day = client.search(study_date="20040826")
    assert loaded.samples["MR_small.dcm"] in {m.series_uid for m in samples_day}
    assert loaded.study_uid not in {m.study_uid for m in samples_day}
    mr = client.search(modality="mr")
    assert mr and {m.modality for m in mr} == {"MR"}
    assert loaded.samples["MR_small.dcm"] in {m.series_uid for m in mr}
    assert {m.series_uid for m in client.search(patient_id=PATIENT_ID, modality="DOC")} == {loaded.series["pdf"]}


def test_study_date_filter_forms() -> None:
    assert study_date_filter("2024-03-01") == "20240301"
    assert study_date_filter("20240101..20241231") == "20240101-20241231"
    assert study_date_filter("2024-01-01..") == "20240101-" and study_date_filter("..20241231") == "-20241231"
    for bad in ("March 2024", "2024-13", "1..2..3", ".."):
        with pytest.raises(PacsSettingsError, match="study date"):
            study_date_filter(bad)


def test_empty_search_is_a_clear_error(client: PacsClient, loaded: LoadedPacs) -> None:
    with pytest.raises(PacsNotFoundError, match=r"no series on http://127\.0\.0\.1:\d+/dicom-web matches .*patient id"):
        client.search(patient_id="NOBODY-HERE")
    with pytest.raises(PacsNotFoundError, match="modality XA"):
        client.search(patient_id=PATIENT_ID, modality="XA")


# ---------------------------------------------------------------------------------- errors
def test_wrong_url_and_refused_login(server: LocalOrthanc, loaded: LoadedPacs) -> None:
    closed = PacsSettings(url=f"http://127.0.0.1:{free_port()}/dicom-web", timeout=5)
    with pytest.raises(PacsConnectionError, match="cannot reach the PACS at .*refused or unreachable"):
        PacsClient(closed).search()
    not_dicomweb = PacsSettings(url=server.url.replace("/dicom-web", "/no-such-root"), user=server.user,
                                password=server.settings.password)
    with pytest.raises(PacsConnectionError, match="404 Not Found .*DICOMweb root"):
        PacsClient(not_dicomweb).search()
    with pytest.raises(PacsAuthError, match=r"refused the login \(HTTP 401\)") as refused:
        PacsClient(server.settings_as(server.user, WRONG_PASSWORD)).search()
    assert WRONG_PASSWORD not in str(refused.value)
    with pytest.raises(PacsAuthError):
        PacsClient(PacsSettings(url=server.url)).pull_series(loaded.series["query"])


# ---------------------------------------------------------------------------------- pull (WADO-RS)
@pytest.mark.parametrize("sample", ["CT_small.dcm", "MR_small_RLE.dcm", "US1_UNCR.dcm", "emri_small.dcm"])
def test_pulled_real_samples_decode_like_the_original_files(client: PacsClient, loaded: LoadedPacs,
                                                            data_root: Path, sample: str) -> None:
    original = data_root / "dicom_samples" / sample
    series_uid = str(dcmread(original, stop_before_pixels=True).SeriesInstanceUID)
    pulled = [p for p in client.pull_series(series_uid)
              if p.sop_instance_uid == str(dcmread(original, stop_before_pixels=True).SOPInstanceUID)]
    assert len(pulled) == 1 and pulled[0].series_uid == series_uid and pulled[0].name.endswith(".dcm")
    assert load_input(pulled[0].data, pulled[0].name).sha256 == load_input(original).sha256


def test_pull_a_series_in_instance_order(client: PacsClient, loaded: LoadedPacs) -> None:
    pulled = client.pull_series(loaded.series["coarse"])
    assert len(pulled) == SERIES_SIZES["coarse"] and {p.study_uid for p in pulled} == {loaded.study_uid}
    numbers = [dcmread(io.BytesIO(p.data)).InstanceNumber for p in pulled]
    assert numbers == sorted(numbers)


def test_series_without_pixel_data_and_unknown_series(client: PacsClient, loaded: LoadedPacs) -> None:
    with pytest.raises(NoPixelDataError, match=r"\(DOC, 1 instance\(s\)\) holds no image"):
        client.pull_series(loaded.series["pdf"])
    with pytest.raises(PacsNotFoundError, match="series 1.2.3.999 is not on"):
        client.pull_series("1.2.3.999")


# ---------------------------------------------------------------------------------- the CLI, end to end
@pytest.mark.slow  # meta-trains the tiny stripe model (about 45 s on 2 busy CPUs)
def test_cli_pull_support_diagnose_and_store_the_reports_back(
    pacs_env: None, loaded: LoadedPacs, client: PacsClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    support = tmp_path / "support"
    for label in ("fine", "coarse"):
        assert main(["pacs", "pull", "--series", loaded.series[label], "--out", str(support), "--label", label]) == 0
        assert len(list((support / label).glob("*.dcm"))) == SERIES_SIZES[label]
    checkpoint = stripe_checkpoint(tmp_path / "ckpt")
    capsys.readouterr()
    status = main(["pacs", "diagnose", "--support", str(support), "--series", loaded.series["query"],
                   "--checkpoint", str(checkpoint), "--store-report", "--note", "check in 3 months", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert status == 0 and result["skipped"] == []
    assert [p["prediction"] for p in result["predictions"]] == ["fine"] * SERIES_SIZES["query"]
    stored = result["stored"]
    assert stored["study_uid"] == loaded.study_uid

    reports = {m.modality: m for m in client.search(patient_id=PATIENT_ID) if m.modality in ("SR", "DOC")
               and m.series_uid != loaded.series["pdf"]}
    assert set(reports) == {"SR", "DOC"}
    (sr,) = client.fetch_series(reports["SR"].series_uid)
    assert sr.SOPClassUID == ComprehensiveSRStorage and sr.SOPInstanceUID == stored["sr_uid"]
    assert sr.StudyInstanceUID == loaded.study_uid and sr.PatientID == PATIENT_ID and sr.AccessionNumber == ACCESSION
    texts = _sr_texts(sr)
    assert texts["Research-use disclaimer"] == [DISCLAIMER] and texts["Predicted class"] == ["fine"] * 2
    assert texts["Comment"] == ["check in 3 months"] * 2
    assert texts["Model weights SHA-256"] == [load_checkpoint(checkpoint)[1].weights_sha256]
    query_uids = {p["instance"] for p in result["predictions"]}
    assert {str(ref.ReferencedSOPInstanceUID) for ref in _references(sr)} == query_uids
    (pdf,) = client.fetch_series(reports["DOC"].series_uid)
    assert pdf.SOPClassUID == EncapsulatedPDFStorage and pdf.SOPInstanceUID == stored["pdf_uid"]
    text = pdf_text(bytes(pdf.EncapsulatedDocument)[: pdf.EncapsulatedDocumentLength])
    assert "RESEARCH USE ONLY" in text and "check in 3 months" in text and PATIENT_ID not in text


def _sr_texts(sr) -> dict[str, list[str]]:
    """Code meaning -> text values of every TEXT item of an SR content tree."""
    found: dict[str, list[str]] = {}

    def walk(items) -> None:
        for item in items:
            if item.ValueType == "TEXT":
                found.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(item.TextValue)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return found


def _references(sr) -> list:
    def walk(items):
        for item in items:
            if item.ValueType == "IMAGE":
                yield item.ReferencedSOPSequence[0]
            yield from walk(item.get("ContentSequence", []))

    return list(walk(sr.ContentSequence))


def test_cli_search_and_store(pacs_env: None, loaded: LoadedPacs, tmp_path: Path, data_root: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pacs", "search", "--patient-id", PATIENT_ID, "--modality", "CR", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["series_uid"] for r in rows} == {loaded.series[k] for k in ("fine", "coarse", "query")}
    assert main(["pacs", "search", "--accession", ACCESSION]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert all(loaded.series[k] in out for k in ("fine", "coarse", "query", "pdf"))
    assert lines[-1] == f"{len(lines) - 2} series" and all(ACCESSION in line for line in lines[1:-1])
    assert main(["pacs", "store", str(data_root / "dicom_samples" / "CT_small.dcm")]) == 0
    assert "stored 1 object(s)" in capsys.readouterr().out


def test_cli_errors_are_one_line_without_credentials(server: LocalOrthanc, loaded: LoadedPacs,
                                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("MEDFEW_PACS_URL", "MEDFEW_PACS_USER", "MEDFEW_PACS_PASSWORD", "MEDFEW_PACS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDFEW_PACS_SETTINGS", str(tmp_path / "absent.toml"))
    assert main(["pacs", "search"]) == 2
    assert "cannot read the PACS settings file" in capsys.readouterr().err
    monkeypatch.delenv("MEDFEW_PACS_SETTINGS")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["pacs", "search"]) == 2
    assert "no PACS configured: set MEDFEW_PACS_URL" in capsys.readouterr().err
    monkeypatch.setenv("MEDFEW_PACS_URL", server.url)
    monkeypatch.setenv("MEDFEW_PACS_USER", server.user)
    monkeypatch.setenv("MEDFEW_PACS_PASSWORD", WRONG_PASSWORD)
    assert main(["pacs", "pull", "--series", loaded.series["query"], "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medfew: error: ") and "refused the login" in err and WRONG_PASSWORD not in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()
    monkeypatch.setenv("MEDFEW_PACS_PASSWORD", server.settings.password or "")
    assert main(["pacs", "pull", "--series", loaded.series["pdf"], "--out", str(tmp_path / "out")]) == 2
    assert "holds no image to diagnose" in capsys.readouterr().err
    assert main(["pacs", "search", "--patient-id", "NOBODY"]) == 2
    assert "matches the search" in capsys.readouterr().err
