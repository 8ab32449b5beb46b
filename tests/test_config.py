"""Config validation: unknown keys and bad values are refused with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO_ROOT

from medfew.cli import read_config_file
from medfew.config import apply_overrides, load_config
from medfew.errors import ConfigError

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


def test_there_is_one_config_per_method() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"protonet", "matchingnet", "maml", "fomaml", "metasgd", "reptile", "baseline"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_validate_and_round_trip(path: Path) -> None:
    config = read_config_file(path)
    assert path.stem == config.method.name or path.stem.startswith(f"{config.method.name}_")  # e.g. protonet_lite0
    assert load_config(config.to_dict()) == config
    assert set(config.data.test).isdisjoint(set(config.data.train) | set(config.data.val))


def test_defaults_fill_missing_sections() -> None:
    config = load_config({"method": "protonet"})
    assert config.episode.ways == 5 and config.backbone.name == "conv4" and config.train.steps == 2000


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"method": "protonet", "trian": {}}, r"unknown config section 'trian' \(did you mean 'train'\?\)"),
        ({"method": "protonet", "train": {"stepz": 3}}, r"unknown key 'train.stepz' \(did you mean 'steps'\?\)"),
        ({"method": "protonet", "train": {"steps": "many"}}, r"'train.steps' must be an integer, got 'many'"),
        ({"method": "protonet", "train": {"steps": 0}}, r"'train.steps' must be at least 1, got 0"),
        ({"method": "protonet", "train": {"lr": -1}}, r"'train.lr' must be in \(0, 10\]"),
        ({"method": "protonet", "train": {"lr": True}}, r"'train.lr' must be a number"),
        ({"method": "protonet", "train": {"optimizer": "lbfgs"}}, r"'train.optimizer' must be one of"),
        ({"method": "protonet", "train": {"steps": 5, "warmup_steps": 5}}, r"'train.warmup_steps' must be in \[0, steps\)"),
        ({"method": "protonet", "data": {"channels": 2}}, r"'data.channels' must be one of \[1, 3\], got 2"),
        ({"method": "protonet", "data": {"channels": True}}, r"'data.channels' must be one of"),
        ({"method": "protonet", "data": {"train": [1, 2]}}, r"'data.train' must be a list of names"),
        ({"method": "protonet", "data": {"mix_domains": "yes"}}, r"'data.mix_domains' must be true or false"),
        ({"method": "protonet", "data": {"image_size": 8}}, r"'data.image_size' must be between 16 and 1024"),
        ({"method": "protonet", "episode": {"ways": 1}}, r"'episode.ways' must be at least 2"),
        ({"method": "protonet", "episode": [5]}, r"section 'episode' must be a mapping"),
        ({"train": {}}, r"config section 'method' is required"),
        ({"method": {"inner_lr": 0.1}}, r"'method.name' must be a string"),
        ([1, 2], r"must be a mapping of sections"),
    ],
)
def test_bad_configs_name_the_key(raw: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(raw)  # type: ignore[arg-type]


def test_overrides_apply_to_a_copy() -> None:
    raw = {"method": {"name": "maml"}, "train": {"steps": 10}}
    new = apply_overrides(raw, {"train.steps": 3, "method.inner_steps": 2})
    assert raw["train"]["steps"] == 10
    assert load_config(new).train.steps == 3 and load_config(new).method.options == {"inner_steps": 2}
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        apply_overrides(raw, {"steps": 3})


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        read_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        read_config_file(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("method: protonet\ntrain:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown key 'train.stepz'"):
        read_config_file(typo)
    ok = tmp_path / "ok.yaml"
    ok.write_text("method: protonet\n")
    with pytest.raises(ConfigError, match=r"--set 'train.steps' must look like"):
        read_config_file(ok, ["train.steps"])
    assert read_config_file(ok, ["train.steps=7", "data.train=[bloodmnist]"]).data.train == ("bloodmnist",)
