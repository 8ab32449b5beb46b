"""``medfew evaluate --folder``: one unreadable file is named and skipped, the figure is still computed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfew import __version__
from medfew.cli import main


def class_folder(root: Path, rng: np.random.Generator) -> Path:
    for label, level in (("dark", 40), ("bright", 200)):
        (root / label).mkdir(parents=True)
        for i in range(4):
            pixels = np.clip(rng.normal(level, 10, (20, 20)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    (root / "dark" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")  # truncated
    return root


def test_evaluate_skips_and_names_an_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = class_folder(tmp_path / "scans", np.random.default_rng(0))
    args = ["evaluate", "--baseline", "nearest_centroid", "--folder", str(folder), "--ways", "2", "--shots", "2",
            "--queries", "1", "--episodes", "5", "--seed", "3", "--quiet"]
    with pytest.warns(RuntimeWarning, match="cut.png"):
        assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    provenance = data["provenance"]
    assert [item["path"] for item in provenance["skipped"]] == ["dark/cut.png"]
    assert provenance["seed"] == 3 and provenance["medfew_version"] == __version__
    assert provenance["source"]["folder"] == str(folder) and provenance["baseline"] == "nearest_centroid"
    assert len(provenance["data"]["images_sha256"]) == 64 and data["accuracy_mean"] > 0.9
    assert main(args) == 0  # the second read may come from the pool cache: the skipped list survives it
    assert "1 unreadable file(s) skipped:\n  dark/cut.png:" in capsys.readouterr().out
    assert main([*args, "--strict"]) == 2
    err = capsys.readouterr().err
    assert "cut.png" in err and "Traceback" not in err
