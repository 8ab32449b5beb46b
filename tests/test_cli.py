"""The ``medfew`` command line as a user runs it: JSON output, clear one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfew.cli import main

MEDMNIST_TRAIN = {"bloodmnist": (8, 11959), "organamnist": (11, 34561), "pneumoniamnist": (2, 4708),
                  "retinamnist": (5, 1080), "breastmnist": (2, 546)}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", sorted(MEDMNIST_TRAIN))
def test_inspect_each_medmnist_dataset(name: str, data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "data", "inspect", name, "--json", "--data-root", str(data_root))
    assert code == 0
    report = json.loads(out)
    n_classes, n_train = MEDMNIST_TRAIN[name]
    assert len(report["classes"]) == n_classes
    assert report["problems"] == []
    assert report["splits"]["train"] == n_train
    assert sum(c["n_images"] for c in report["classes"]) == sum(report["splits"].values()) == report["n_images"]


def test_inspect_rare_chest_xray_folder(data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = data_root / "covid_chestxray_ieee8023_rare"
    code, out, _ = run_cli(capsys, "data", "inspect", str(folder), "--json")
    assert code == 0
    report = json.loads(out)
    counts = {c["name"]: c["n_images"] for c in report["classes"]}
    assert counts["COVID_19"] == 16 and counts["Lipoid"] == 3 and counts["Pneumocystis"] == 11
    assert sum(counts.values()) == 91 and len(counts) == 11


def test_inspect_mixed_folder_names_every_broken_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "scans"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "c").mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 20), 40 * i, np.uint8)).save(root / "a" / f"{i}.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(root / "b" / "ok.jpg")
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    (root / "b" / "empty.dcm").write_bytes(b"")
    (root / "c" / "notes.txt").write_text("hello")
    (root / "a" / ".DS_Store").write_bytes(b"\x00\x01")
    code, out, _ = run_cli(capsys, "data", "inspect", str(root), "--json")
    assert code == 0
    report = json.loads(out)
    assert {c["name"]: c["n_images"] for c in report["classes"]} == {"a": 3, "b": 1, "c": 0}
    problems = {Path(p["path"]).name: p["reason"] for p in report["problems"]}
    assert {"broken.png", "empty.dcm"} <= set(problems)
    assert ".DS_Store" not in problems
    assert "empty" in problems["empty.dcm"].lower()
    # the text form lists the same problems
    code, text, _ = run_cli(capsys, "data", "inspect", str(root))
    assert code == 0 and "broken.png" in text and "empty.dcm" in text


def test_errors_are_one_line_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "data", "inspect", str(tmp_path / "nope"))
    assert code == 2 and err.startswith("medfew: error:") and "Traceback" not in err and "nope" in err
    config = tmp_path / "bad.yaml"
    config.write_text("method: protonet\ntrain:\n  stepz: 1\n")
    code, _, err = run_cli(capsys, "train", "--config", str(config), "--out", str(tmp_path / "run"))
    assert code == 2 and "unknown key 'train.stepz'" in err and "did you mean 'steps'" in err


def test_console_script_runs_as_a_module() -> None:
    result = subprocess.run([sys.executable, "-m", "medfew", "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("medfew ")
    result = subprocess.run([sys.executable, "-m", "medfew", "data", "list"], capture_output=True, text=True,
                            check=False, env={**os.environ})
    assert result.returncode == 0
    assert {"organamnist", "covid_chestxray_rare", "retinamnist"} <= {line.split()[0] for line in result.stdout.splitlines()}


def class_folder(root: Path, counts: dict[str, int]) -> Path:
    """Each class is a stripe pattern of its own period (survives per-image z-scoring), plus noise."""
    rng = np.random.default_rng(0)
    for k, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        stripes = ((np.arange(24) // (k + 2)) % 2 * 160 + 40)[None, :].repeat(24, axis=0)
        for i in range(n):
            pixels = np.clip(stripes + rng.normal(0, 20, (24, 24)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_evaluate_a_baseline_on_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = class_folder(tmp_path / "scans", {"a": 6, "b": 6, "c": 6})
    code, out, err = run_cli(capsys, "evaluate", "--baseline", "nearest_centroid", "--folder", str(root),
                             "--ways", "3", "--shots", "2", "--queries", "2", "--episodes", "8", "--json", "--quiet")
    assert code == 0, err
    result = json.loads(out)
    for key in ("accuracy_mean", "accuracy_ci95", "balanced_accuracy_mean", "auroc_mean"):
        assert isinstance(result[key], float)
    assert (result["n_episodes"], result["ways"], result["shots"], result["queries"]) == (8, 3, 2, 2)
    assert result["method"] == "nearest_centroid" and result["accuracy_mean"] > 0.8  # classes differ in stripe period


def test_evaluate_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = class_folder(tmp_path / "scans", {"a": 6, "b": 2})
    common = ["--folder", str(root), "--ways", "2", "--shots", "2", "--queries", "2", "--episodes", "2", "--quiet"]
    code, _, err = run_cli(capsys, "evaluate", "--baseline", "nearest_centroid", *common)
    assert code == 2 and "class 'b'" in err and "has 2 images" in err and "--allow-fewer-queries" in err
    code, _, err = run_cli(capsys, "evaluate", "--baseline", "nearest_centroid", *common, "--allow-fewer-queries")
    assert code == 2 and "class 'b'" in err  # 2 images cannot give 2 shots + 1 query either
    code, _, err = run_cli(capsys, "evaluate", "--baseline", "knn", *common)
    assert code == 2 and "knn" in err and "nearest_centroid" in err
    (tmp_path / "model.pt").write_bytes(b"\x80\x04N.")
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", str(tmp_path / "model.pt"), *common)
    assert code == 2 and "refusing to open a .pt file" in err
    code, _, err = run_cli(capsys, "evaluate", "--baseline", "nearest_centroid", "--method-option", "x=1", *common)
    assert code == 2 and "method options apply to checkpoints" in err
    code, _, err = run_cli(capsys, "evaluate", *common)
    assert code == 2 and "give --checkpoint" in err
