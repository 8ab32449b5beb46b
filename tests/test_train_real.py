"""Real meta-training on ../shared/data from the command line, as a researcher runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

from medfew.cli import main
from medfew.training.checkpoint import resolve_checkpoint

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))
FEW_STEPS = ["--set", "train.steps=2", "--set", "train.meta_batch=1", "--set", "train.eval_every=2",
             "--set", "train.eval_episodes=2", "--set", "episode.queries=3", "--set", "data.max_per_class=20",
             "--set", "train.warmup_steps=0", "--quiet"]


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_config_trains_a_few_steps_from_the_command_line(
    config: Path, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--data-root", str(data_root),
                 "--device", "cpu", *FEW_STEPS])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["steps"] == 2 and summary["best_val_accuracy"] is not None
    sidecar = json.loads(resolve_checkpoint(tmp_path / "run" / "best.json").with_suffix(".json").read_text())
    assert sidecar["method"]["name"] == yaml.safe_load(config.read_text())["method"]["name"]
    assert sidecar["config"]["data"]["train"] == ["organamnist", "bloodmnist", "pneumoniamnist"]
    assert {p["name"] for p in sidecar["data_provenance"]} == {"organamnist", "bloodmnist", "pneumoniamnist"}
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "learning_curve.png").is_file()


@pytest.mark.slow
def test_short_meta_training_beats_chance_on_a_held_out_domain(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "protonet"
    code = main(["train", "--config", str(REPO_ROOT / "configs" / "protonet.yaml"), "--out", str(run),
                 "--data-root", str(data_root), "--device", "cpu", "--quiet",
                 "--set", "train.steps=40", "--set", "train.eval_every=20", "--set", "train.eval_episodes=20"])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    code = main(["evaluate", "--checkpoint", str(run), "--dataset", "breastmnist", "--split", "test",
                 "--ways", "2", "--shots", "5", "--queries", "15", "--episodes", "100", "--seed", "0",
                 "--data-root", str(data_root), "--json", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["n_episodes"] == 100 and result["ways"] == 2 and result["method"] == "protonet"
    # BreastMNIST was never seen in training; chance is 0.5 for 2-way.
    assert result["accuracy_mean"] - result["accuracy_ci95"] > 0.5, result
