"""The default model ships inside the package, loads with `--checkpoint default`, and has a model card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medfew.cli import main
from medfew.training.checkpoint import default_checkpoint_path, load_checkpoint


def test_default_model_is_small_safetensors_with_a_card() -> None:
    path = default_checkpoint_path()
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert path.stat().st_size < 5 * 2**20
    card = (path.parent / "MODEL_CARD.md").read_text()
    assert "research use only, not for diagnosis" in card.lower()
    assert "Held-out results" in card and "CC BY 4.0" in card and "medfew train --config" in card


def test_default_model_loads_and_adapts() -> None:
    method, info = load_checkpoint("default")
    size = info.preprocessing.image_size
    assert size >= 28 and info.preprocessing.channels == 3
    assert set(info.config["data"]["train"]) == {"organamnist", "bloodmnist", "pneumoniamnist"}
    assert not set(info.config["data"]["test"]) & set(info.config["data"]["train"])
    assert info.calibration and method.temperature == pytest.approx(info.calibration["temperature"])
    support = torch.rand(6, 3, size, size)
    adapted = method.adapt(support, torch.tensor([0, 0, 1, 1, 2, 2]))
    logits = adapted.predict(torch.rand(4, 3, size, size))
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()


@pytest.mark.slow
def test_default_model_beats_chance_on_a_held_out_domain(data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evaluate", "--checkpoint", "default", "--dataset", "breastmnist", "--split", "test", "--ways", "2",
                 "--shots", "5", "--queries", "15", "--episodes", "60", "--seed", "1", "--data-root", str(data_root),
                 "--json", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["accuracy_mean"] - result["accuracy_ci95"] > 0.5, result


@pytest.mark.slow
def test_default_model_evaluates_a_full_resolution_folder_with_confidence_figures(
    data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from medfew.data.sources.pools import load_pool

    folder = data_root / "covid_chestxray_ieee8023_rare"  # class-per-folder PNG/JPEGs at full resolution
    code = main(["evaluate", "--checkpoint", "default", "--folder", str(folder), "--ways", "3", "--shots", "5",
                 "--queries", "5", "--episodes", "8", "--allow-fewer-queries", "--data-root", str(data_root),
                 "--json", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    for key in ("accuracy_mean", "ece_pooled", "ece_uncalibrated_pooled", "coverage_mean", "set_size_mean",
                "selective_accuracy_mean", "temperature"):
        assert key in result, key
    assert 0.0 <= result["coverage_mean"] <= 1.0 and 0.0 <= result["set_size_mean"] <= 3.0
    _, info = load_checkpoint("default")
    assert result["temperature"] == pytest.approx(info.temperature)
    # the originals are read at the checkpoint's input size (the PNG/JPEGs are much larger)
    size = info.preprocessing.image_size
    assert load_pool(str(folder), image_size=size).image_shape[1:] == (size, size)
