"""Hostile configs and a broken model: every case is a one-line typed error naming the key, file or cause."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_diagnosis import COARSE, FINE, SIZE, stripes, train_stripe_protonet

from medfew.cli import main, read_config_file
from medfew.data.preprocessing import Preprocessing
from medfew.diagnosis import DiagnosisSession
from medfew.errors import CheckpointError, ConfigError, ModelOutputError
from medfew.messages import short_repr
from medfew.methods import build_method
from medfew.models import build_backbone
from medfew.safe_yaml import MAX_DEPTH, load_user_yaml
from medfew.training.checkpoint import (
    load_checkpoint,
    read_checkpoint_info,
)

BILLION_LAUGHS = "\n".join(
    ["method:", "  name: protonet", "  a: &a [x, x, x, x, x, x, x, x, x, x]"]
    + [f"  {chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
       f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]"
       for i in range(8)]
)


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("- 1\n- 2\n", "must be a mapping of sections, got list"),
        ("[" * 2000 + "]" * 2000, f"nested deeper than {MAX_DEPTH} levels"),
        ("method: protonet\ntrain:\n  steps: " + "9" * 5000, "a number too long to read"),
        ("method: protonet\ntrain:\n  steps: " + "9" * 4000, "'train.steps' must be at most 1e\\+09 in size"),
        (BILLION_LAUGHS, "YAML aliases"),
        ("method: protonet\ntrain:\n  lr: .inf\n", "'train.lr' must be a finite number"),
        ("method: protonet\ntrain:\n  lr: .nan\n", "'train.lr' must be a finite number"),
        ("method: protonet\ntrain:\n  lr: 50\n", r"'train.lr' must be in \(0, 10\]"),
        ("method: protonet\ntrain:\n  eval_episodes: 1\n", "'train.eval_episodes' must be at least 2"),
        ("method: protonet\ndata:\n  image_size: 1000000\n", "'data.image_size' must be between 16 and 1024"),
        ("method: protonet\ntrain:\n  grad_clip: .inf\n", "'train.grad_clip' must be a finite number"),
    ],
)
def test_hostile_config_files_are_one_line_errors(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as info:
        read_config_file(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message and len(message) < 600


def test_scientific_notation_is_a_number(tmp_path: Path) -> None:
    path = write(tmp_path, "method: protonet\ntrain:\n  lr: 1e-4\n  weight_decay: 5E-5\n")
    config = read_config_file(path, ["train.grad_clip=2e1"])
    assert config.train.lr == 1e-4 and config.train.weight_decay == 5e-5 and config.train.grad_clip == 20.0
    assert load_user_yaml("x: 1e3") == {"x": 1000.0} and load_user_yaml("x: 1_000") == {"x": 1000}
    assert load_user_yaml("x: e5") == {"x": "e5"}  # not a number: stays text


def test_a_bomb_inside_a_method_option_is_bounded_in_the_message() -> None:
    laughs: list = ["x"] * 10
    for _ in range(9):  # 10**9 leaves when walked: never expanded
        laughs = [laughs] * 10
    backbone = build_backbone("conv4", in_channels=3, image_size=SIZE, hidden=8)
    for options in ({"distance": laughs}, {"not_an_option" * 1000: laughs}):
        with pytest.raises(ConfigError) as info:
            build_method("protonet", backbone, **options)
        assert len(str(info.value)) < 1000
    assert len(short_repr(10**4000)) < 60 and len(short_repr("x" * 10**6)) <= 200


def test_cli_edges_name_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, "method: protonet\ntrain:\n  steps: 2\n")
    a_file = write(tmp_path, "not a folder", name="run.txt")
    assert main(["train", "--config", str(config), "--out", str(a_file), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--out {a_file}: is a file" in err and "Traceback" not in err
    assert main(["train", "--config", str(tmp_path), "--quiet"]) == 2
    assert "is a directory, not a YAML config file" in capsys.readouterr().err
    assert main(["train", "--config", str(config), "--set", "train.lr=[[[", "--quiet"]) == 2
    assert "--set 'train.lr': not valid YAML" in capsys.readouterr().err


def _nan_session() -> DiagnosisSession:
    model = train_stripe_protonet(steps=2)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(math.nan)
    return DiagnosisSession.from_method(model, Preprocessing(SIZE, 3, "zscore"))


def test_a_broken_model_never_diagnoses() -> None:
    rng = np.random.default_rng(0)
    session = _nan_session()
    for _ in range(3):
        session.add_support(stripes(FINE, rng), "fine")
        session.add_support(stripes(COARSE, rng), "coarse")
    with pytest.raises(ModelOutputError, match="non-finite .* the checkpoint is broken"):
        session.adapt()
    assert not session.is_adapted




# --- hostile checkpoint sidecars: refused by name before anything big is parsed or allocated -------------

def _saved_checkpoint(tmp_path: Path) -> Path:
    from test_checkpoint import saved

    return saved(tmp_path)


def _edit_sidecar(weights: Path, edit) -> Path:
    sidecar = weights.with_suffix(".json")
    raw = json.loads(sidecar.read_text())
    edit(raw)
    sidecar.write_text(json.dumps(raw))
    return sidecar


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda r: r["preprocessing"].update(image_size=1_000_000), r"preprocessing.image_size must be an integer in 1..1024"),
        (lambda r: r["preprocessing"].update(channels=7), "preprocessing.channels must be 1 or 3"),
        (lambda r: r["preprocessing"].update(normalize="x" * 10_000), "preprocessing.normalize must be one of"),
        # a backbone 10^6 channels wide (terabytes): refused on the meta device against the stored shapes
        (lambda r: r["backbone"]["config"].update(hidden=1_000_000), "weights do not match protonet/conv4"),
        (lambda r: r["method"]["hyperparameters"].update(distance="x" * 10_000), "cannot rebuild protonet/conv4"),
    ],
    ids=["image_size", "channels", "normalize", "huge_backbone", "long_option"],
)
def test_hostile_sidecars_are_one_line_errors(tmp_path: Path, edit, match: str) -> None:
    weights = _saved_checkpoint(tmp_path)
    sidecar = _edit_sidecar(weights, edit)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(weights)
    message = str(info.value)
    assert str(sidecar.with_suffix("")) in message and "\n" not in message and len(message) < 1200


def test_a_deeply_nested_sidecar_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = _saved_checkpoint(tmp_path)
    sidecar = weights.with_suffix(".json")
    sidecar.write_text(sidecar.read_text()[:-1] + ', "extra": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(CheckpointError, match="nested too deeply"):
        read_checkpoint_info(weights)
    scan = tmp_path / "scan.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(scan)
    code = main(["diagnose", "--checkpoint", str(weights), "--support", str(tmp_path), "--query", str(scan)])
    err = capsys.readouterr().err
    assert code == 2 and "nested too deeply" in err and "Traceback" not in err
