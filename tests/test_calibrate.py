"""``medfew calibrate``: test-time settings and temperature chosen on the meta-train domains' val episodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from medfew.calibrate import calibrate_checkpoint, candidate_options
from medfew.cli import main
from medfew.errors import CheckpointError, ConfigError
from medfew.training.checkpoint import load_checkpoint, resolve_checkpoint, update_sidecar

TINY = ["--set", "train.steps=2", "--set", "train.meta_batch=1", "--set", "train.eval_every=2",
        "--set", "train.eval_episodes=2", "--set", "episode.queries=3", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("calibrate") / "run"
    code = main(["train", "--config", str(REPO_ROOT / "configs" / "protonet.yaml"), "--out", str(out),
                 "--data-root", str(data_root), *TINY])
    assert code == 0
    return out


def test_candidates_offer_finetuning_only_to_methods_with_a_head() -> None:
    protonet = candidate_options("protonet", depths=(0, 1))
    assert protonet[0] == {} and len(protonet) == 1 + 2 * 4
    assert {c["finetune_depth"] for c in protonet[1:]} == {0, 1}
    assert candidate_options("maml") == [{}]


@pytest.mark.slow
def test_calibrate_stores_the_best_val_candidate_and_its_temperature(
    run: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights_before = resolve_checkpoint(run).read_bytes()
    code = main(["calibrate", "--checkpoint", str(run), "--episodes", "12", "--data-root", str(data_root), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    block = json.loads(out)
    accuracies = [c["val_accuracy"] for c in block["candidates"]]
    chosen = accuracies.index(max(accuracies))
    assert block["chosen_options"] == block["candidates"][chosen]["options"]
    assert block["fitted_on"]["datasets"] == ["organamnist", "bloodmnist", "pneumoniamnist"]
    assert block["fitted_on"]["split"] == "val" and block["fitted_on"]["episodes"] == 12
    assert block["temperature"] > 0 and 0 <= block["ece_after"] <= 1
    # temperature scaling minimises the NLL, which on these episodes also should not make ECE much worse
    assert block["ece_after"] <= block["ece_before"] + 0.05
    assert resolve_checkpoint(run).read_bytes() == weights_before  # weights untouched, checksum still valid
    method, info = load_checkpoint(run)
    assert method.temperature == pytest.approx(block["temperature"]) and info.temperature == method.temperature
    for key, value in block["chosen_options"].items():
        assert getattr(method, key, None) == value or info.method_hparams[key] == value


def test_calibrate_refuses_bad_requests(run: Path, data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"calibration episodes must be an integer >= 10, got 3"):
        calibrate_checkpoint(run, data_root=data_root, episodes=3, progress=False)
    assert main(["calibrate", "--checkpoint", "default"]) != 0
    assert "already calibrated" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match=r"calibration temperature must be a finite number > 0, got -1"):
        update_sidecar(run, calibration={"temperature": -1})
