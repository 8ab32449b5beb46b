"""``medfew diagnose``: class-per-folder support set, query files, prediction sets, JSON output, PDF report, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic import FAKE_PATIENT_ID, FAKE_PATIENT_NAME, write_dicom
from test_diagnosis import COARSE, FINE, stripe_checkpoint, stripes_uint8
from test_reporting import pdf_text

from medfew.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stripe_checkpoint(tmp_path_factory.mktemp("ckpt"))


def support_folder(root: Path, rng: np.random.Generator, classes: dict[str, int], k: int = 3) -> Path:
    for label, period in classes.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(k):
            Image.fromarray(stripes_uint8(period, rng)).save(root / label / f"scan_{i}.png")
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_diagnose_json(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    support = support_folder(tmp_path / "support", rng, {"coarse": COARSE, "fine": FINE}, k=5)  # 10: 90% sets
    queries = []
    for name, period in (("q_fine.png", FINE), ("q_coarse.png", COARSE)):
        Image.fromarray(stripes_uint8(period, rng)).save(tmp_path / name)
        queries.append(str(tmp_path / name))
    code, out, err = run(capsys, "diagnose", "--checkpoint", str(checkpoint), "--support", str(support),
                         "--query", *queries, "--json")
    assert code == 0, err
    data = json.loads(out)
    rows = data["predictions"]
    assert [r["file"] for r in rows] == queries and [r["prediction"] for r in rows] == ["fine", "coarse"]
    for row, expected in zip(rows, ("fine", "coarse")):
        assert set(row) == {"file", "prediction", "probabilities", "prediction_set", "set_confidence", "set_note",
                            "set_statement", "uncertain", "out_of_distribution"}
        assert sum(row["probabilities"].values()) == pytest.approx(1.0)
        assert isinstance(row["uncertain"], bool) and isinstance(row["out_of_distribution"], bool)
        assert row["prediction_set"] == [expected] and row["set_confidence"] == pytest.approx(0.9)
        assert row["set_note"] is None and not row["uncertain"]
        assert row["set_statement"].startswith(f"{expected} — the true class is in this set in at least 90% of cases")
    assert data["support"] == {"coarse": 5, "fine": 5} and data["leave_one_out_accuracy"] == 1.0
    assert data["temperature"] == 1.0 and data["alpha"] == 0.1
    code, out, _ = run(capsys, "diagnose", "--checkpoint", str(checkpoint), "--support", str(support),
                       "--query", queries[0])
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith(f"{queries[0]}: fine (") and "uncertain" not in lines[0]
    assert lines[1].startswith("  probabilities: fine 0.") and ", coarse 0." in lines[1]  # sorted, every class
    assert lines[2] == ("  prediction set: fine — the true class is in this set in at least 90% of cases if the "
                        "support scans are representative (exchangeable), estimated by leave-one-out")
    assert "not calibrated" in out
    code, out, _ = run(capsys, "diagnose", "--checkpoint", str(checkpoint), "--support", str(support),
                       "--query", queries[0], "--alpha", "none", "--json")
    row = json.loads(out)["predictions"][0]
    assert code == 0 and row["prediction_set"] is None and row["set_note"] == "prediction sets are off in this session"


def test_too_few_support_scans_give_a_set_of_every_class(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(3)
    support = support_folder(tmp_path / "support", rng, {"coarse": COARSE, "fine": FINE}, k=3)
    query = tmp_path / "q.png"
    Image.fromarray(stripes_uint8(COARSE, rng)).save(query)
    code, out, err = run(capsys, "diagnose", "--checkpoint", str(checkpoint), "--support", str(support),
                         "--query", str(query))
    assert code == 0, err
    first, _, second = out.splitlines()[:3]
    assert first.startswith(f"{query}: coarse (") and "[uncertain" in first
    assert second.startswith("  prediction set: coarse or fine — the true class is in this set in at least 90%")
    assert "(with 6 support scans a 90% set must hold every class; 10 or more scans in all can narrow it)" in second
    with pytest.raises(SystemExit) as exit_info:
        main(["diagnose", "--support", str(support), "--query", str(query), "--alpha", "1.5"])
    assert exit_info.value.code == 2
    assert "argument --alpha: expected a number in (0, 1) (e.g. 0.1 for 90% sets), 0 or 'none', got 1.5" in capsys.readouterr().err


def test_diagnose_pdf_report_with_and_without_identifiers(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(1)
    support = support_folder(tmp_path / "support", rng, {"coarse": COARSE, "fine": FINE})
    query = write_dicom(tmp_path / "query.dcm", stripes_uint8(FINE, rng), modality="CR")
    base = ["diagnose", "--checkpoint", str(checkpoint), "--support", str(support), "--query", str(query),
            "--note", "seen by Dr Who"]
    code, out, err = run(capsys, *base, "--report", str(tmp_path / "plain.pdf"))
    assert code == 0, err
    assert "report written to" in out
    text = pdf_text(tmp_path / "plain.pdf")
    assert "RESEARCH USE ONLY" in text and "seen by Dr Who" in text and "predicted fine" in text
    assert "Prediction set (90%): fine or coarse" in " ".join(text.split())  # 6 scans: every class
    assert FAKE_PATIENT_NAME not in text and FAKE_PATIENT_ID not in text
    code, _, err = run(capsys, *base, "--report", str(tmp_path / "full.pdf"), "--include-identifiers")
    assert code == 0, err
    text = pdf_text(tmp_path / "full.pdf")
    assert FAKE_PATIENT_NAME in text and FAKE_PATIENT_ID in text
    code, _, err = run(capsys, *base, "--report", str(tmp_path / "r.json"))
    assert code == 0, err
    query_data = json.loads((tmp_path / "r.json").read_text())["queries"][0]
    assert query_data["note"] == "seen by Dr Who" and query_data["prediction_set"] == ["fine", "coarse"]


def test_diagnose_errors(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2)
    query = tmp_path / "q.png"
    Image.fromarray(stripes_uint8(FINE, rng)).save(query)
    one = support_folder(tmp_path / "one", rng, {"fine": FINE})
    code, _, err = run(capsys, "diagnose", "--checkpoint", str(checkpoint), "--support", str(one), "--query", str(query))
    assert code == 2 and "at least 2 classes, got 1" in err and "Traceback" not in err
    empty = support_folder(tmp_path / "empty", rng, {"fine": FINE})
    (empty / "rare").mkdir()
    code, _, err = run(capsys, "diagnose", "--checkpoint", str(checkpoint), "--support", str(empty), "--query", str(query))
    assert code == 2 and "['rare'] have no scans" in err
    two = support_folder(tmp_path / "two", rng, {"coarse": COARSE, "fine": FINE})
    code, _, err = run(capsys, "diagnose", "--checkpoint", str(checkpoint), "--support", str(two), "--query", str(query),
                       "--report", str(tmp_path / "r.docx"))
    assert code == 2 and "r.docx: the file must end in .pdf, .json, .dcm" in err
    code, _, err = run(capsys, "diagnose", "--checkpoint", str(tmp_path / "missing.safetensors"),
                       "--support", str(two), "--query", str(query))
    assert code == 2 and "no such checkpoint file" in err


def test_one_bad_file_never_sinks_the_batch(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(4)
    support = support_folder(tmp_path / "support", rng, {"coarse": COARSE, "fine": FINE}, k=4)
    (support / "fine" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # a PNG cut short
    good = tmp_path / "good.png"
    Image.fromarray(stripes_uint8(FINE, rng)).save(good)
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI")  # a DICOM header cut short
    base = ["diagnose", "--checkpoint", str(checkpoint), "--support", str(support)]
    code, out, err = run(capsys, *base, "--query", str(bad), str(good))
    assert code == 1, err  # finished, with files skipped
    assert f"skipped support scan {support / 'fine' / 'truncated.png'}:" in err
    assert f"skipped query {bad}:" in err and "Traceback" not in err
    assert out.startswith(f"{good}: fine (") and str(bad) + ":" not in out
    assert "support: 8 scans in 2 classes (coarse 4, fine 4)" in out
    assert "skipped 2 unreadable or unusable file(s) of 11" in out
    code, out, err = run(capsys, *base, "--query", str(bad), str(good), "--json")
    data = json.loads(out)
    assert code == 1 and [r["file"] for r in data["predictions"]] == [str(good)]
    assert {s["file"] for s in data["skipped"]} == {str(bad), str(support / "fine" / "truncated.png")}
    code, out, err = run(capsys, *base, "--query", str(bad), str(good), "--strict")
    assert code == 2 and "truncated.png" in err and out == ""
    code, out, err = run(capsys, *base, "--query", str(bad))
    assert code == 2 and "no query scan could be read" in err


def test_report_paths_are_checked_and_dicom_reports_written(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pydicom

    rng = np.random.default_rng(5)
    support = support_folder(tmp_path / "support", rng, {"coarse": COARSE, "fine": FINE})
    queries = [str(write_dicom(tmp_path / f"q{i}.dcm", stripes_uint8(FINE, rng), modality="CR")) for i in range(2)]
    base = ["diagnose", "--checkpoint", str(checkpoint), "--support", str(support), "--query"]
    (tmp_path / "folder.pdf").mkdir()
    code, _, err = run(capsys, *base, queries[0], "--report", str(tmp_path / "folder.pdf"))
    assert code == 2 and "folder.pdf: is a directory" in err
    code, _, err = run(capsys, *base, queries[0], "--report", str(tmp_path / "nowhere" / "r.pdf"))
    assert code == 2 and "does not exist" in err
    code, out, err = run(capsys, *base, *queries, "--report", str(tmp_path / "r.dcm"))
    assert code == 0, err
    for i, query in enumerate(queries, start=1):
        written = pydicom.dcmread(tmp_path / f"r-{i}.dcm")
        source = pydicom.dcmread(query)
        assert written.SOPClassUID == pydicom.uid.EncapsulatedPDFStorage
        assert written.PatientID == source.PatientID == FAKE_PATIENT_ID  # filed with the query's patient
        assert f"report written to {tmp_path / f'r-{i}.dcm'}" in out
    png = tmp_path / "q.png"
    Image.fromarray(stripes_uint8(FINE, rng)).save(png)
    code, _, err = run(capsys, *base, str(png), "--report", str(tmp_path / "p.dcm"))
    assert code == 2 and "is not a DICOM file" in err and not (tmp_path / "p.dcm").exists()


def test_a_weak_support_set_is_a_warning(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(6)
    support = tmp_path / "support"
    for label in ("left", "right"):  # two classes of the same stripes: the model cannot tell them apart
        (support / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(stripes_uint8(FINE if i % 2 else COARSE, rng)).save(support / label / f"s{i}.png")
    query = tmp_path / "q.png"
    Image.fromarray(stripes_uint8(FINE, rng)).save(query)
    code, out, err = run(capsys, "diagnose", "--checkpoint", str(checkpoint), "--support", str(support),
                         "--query", str(query))
    assert code == 0, err
    loo_line = next(line for line in out.splitlines() if line.startswith("leave-one-out accuracy"))
    accuracy = float(loo_line.split(": ")[1].split("%")[0]) / 100
    assert accuracy < 0.7
    assert "WARNING: Weak support set" in out and "Add more scans to each class" in out


def test_a_new_report_format_is_one_writer_and_one_registration_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from medfew.reporting import REPORT_WRITERS, DiagnosticReport

    def write_text(report: DiagnosticReport, path: Path) -> Path:  # the whole of a new writer
        lines = [f"{q.alias}: {q.prediction} ({100 * q.probabilities[q.prediction]:.0f}%)" for q in report.queries]
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
        return Path(path)

    rng = np.random.default_rng(5)
    support = support_folder(tmp_path / "support", rng, {"coarse": COARSE, "fine": FINE})
    query = tmp_path / "query.png"
    Image.fromarray(stripes_uint8(FINE, rng)).save(query)
    base = ["diagnose", "--checkpoint", str(checkpoint), "--support", str(support), "--query", str(query)]
    code, _, err = run(capsys, *base, "--report", str(tmp_path / "r.txt"))
    assert code == 2 and "must end in .pdf, .json, .dcm" in err
    monkeypatch.setitem(REPORT_WRITERS, ".txt", write_text)  # the one registration line
    code, out, err = run(capsys, *base, "--report", str(tmp_path / "r.txt"))
    assert code == 0, err
    assert (tmp_path / "r.txt").read_text().startswith("Q1") and "fine (" in (tmp_path / "r.txt").read_text()
