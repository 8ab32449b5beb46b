"""Typed, frozen experiment configuration, validated from plain dicts with errors that name the key.

The CLI and the app read YAML into a dict and call :func:`load_config`; library functions never see
config dicts, only the keyword arguments these objects hold.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from medfew.errors import ConfigError
from medfew.messages import close_match_hint, short_repr

MAX_INT = 10**9
"""Largest integer any config count may hold (steps, sizes, episodes): larger is a typo or an attack."""
MAX_IMAGE_SIZE = 1024
"""Largest ``data.image_size``: episodes hold ways x (shots + queries) images of this side."""


@dataclass(frozen=True)
class DataConfig:
    """Which datasets train, validate and test, and how images are prepared.

    ``frozen_cache``: when the backbone has frozen lower blocks (``backbone.freeze``), compute their
    outputs once per image and train on the cached maps (no image augmentation then).
    ``max_per_class``: keep at most this many images of each train/val class (a seeded subset; 0: all).
    """

    train: tuple[str, ...] = ("organamnist", "bloodmnist", "pneumoniamnist")
    train_split: str = "train"
    val: tuple[str, ...] = ("organamnist", "bloodmnist", "pneumoniamnist")
    val_split: str = "val"
    test: tuple[str, ...] = ("retinamnist", "breastmnist", "covid_chestxray_rare")
    test_split: str = "test"
    image_size: int = 28
    channels: Literal[1, 3] = 3
    normalize: Literal["zscore", "unit"] = "zscore"
    augment: Literal["none", "standard", "strong"] = "standard"
    mix_domains: bool = False
    allow_fewer_ways: bool = True
    frozen_cache: bool = True
    max_per_class: int = 0

    def validate(self) -> None:
        _require(16 <= self.image_size <= MAX_IMAGE_SIZE, "data.image_size", self.image_size,
                 f"between 16 and {MAX_IMAGE_SIZE}")
        _require(len(self.train) > 0, "data.train", list(self.train), "at least one dataset")
        _require(self.max_per_class >= 0, "data.max_per_class", self.max_per_class, "at least 0 (0: every image)")


@dataclass(frozen=True)
class EpisodeConfig:
    """Shape of the meta-training and validation episodes."""

    ways: int = 5
    shots: int = 5
    queries: int = 15

    def validate(self) -> None:
        _require(self.ways >= 2, "episode.ways", self.ways, "at least 2")
        _require(self.shots >= 1, "episode.shots", self.shots, "at least 1")
        _require(self.queries >= 1, "episode.queries", self.queries, "at least 1")


@dataclass(frozen=True)
class TrainConfig:
    """The outer loop: steps, optimiser, schedule, validation and checkpoints."""

    steps: int = 2000
    meta_batch: int = 4
    lr: float = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = 0
    grad_clip: float = 10.0
    eval_every: int = 200
    eval_episodes: int = 100
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off", "bf16"] = "auto"

    def validate(self) -> None:
        for key in ("steps", "meta_batch", "eval_every", "checkpoint_every", "log_every"):
            _require(getattr(self, key) >= 1, f"train.{key}", getattr(self, key), "at least 1")
        _require(self.eval_episodes >= 2, "train.eval_episodes", self.eval_episodes,
                 "at least 2 (a confidence interval needs two episodes)")
        _require(0 < self.lr <= 10, "train.lr", self.lr, "in (0, 10]")
        _require(self.grad_clip > 0, "train.grad_clip", self.grad_clip, "positive")
        _require(0 <= self.warmup_steps < self.steps, "train.warmup_steps", self.warmup_steps, "in [0, steps)")
        _require(0 <= self.weight_decay <= 1, "train.weight_decay", self.weight_decay, "in [0, 1]")


@dataclass(frozen=True)
class NamedConfig:
    """A registry name plus its keyword arguments (checked by the registry when built)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole resolved configuration of a training run."""

    data: DataConfig
    episode: EpisodeConfig
    backbone: NamedConfig
    method: NamedConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-ready dict that :func:`load_config` reads back to an equal config."""
        out: dict[str, Any] = {}
        for section in ("data", "episode", "train"):
            out[section] = {
                k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(getattr(self, section)).items()
            }
        for section in ("backbone", "method"):
            named: NamedConfig = getattr(self, section)
            out[section] = {"name": named.name, **named.options}
        return out


_SECTIONS: dict[str, type] = {"data": DataConfig, "episode": EpisodeConfig, "train": TrainConfig}


def load_config(raw: dict[str, Any]) -> ExperimentConfig:
    """Validate a plain dict (e.g. parsed YAML) into an :class:`ExperimentConfig`.

    Raises:
        ConfigError: Unknown section or key (with a suggestion), wrong type, or bad value; the message
            names the dotted key.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    known = [*_SECTIONS, "backbone", "method"]
    for section in raw:
        if section not in known:
            raise ConfigError(
                f"unknown config section {short_repr(section)}{close_match_hint(section, known)}; known: {known}"
            )
    parts: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        parts[section] = _build_section(section, cls, raw.get(section) or {})
    for section, default in (("backbone", "conv4"), ("method", None)):
        parts[section] = _named(section, raw.get(section), default)
    return ExperimentConfig(**parts)


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted ``section.key`` overrides applied (``--set``)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(raw).__name__}")
    result = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if not section or not key or "." in key:
            raise ConfigError(f"override {short_repr(dotted)} must look like section.key=value")
        result.setdefault(section, {})
        if not isinstance(result[section], dict):
            raise ConfigError(f"config section {short_repr(section)} must be a mapping")
        result[section][key] = value
    return result


# ---------------------------------------------------------------------- helpers
def _build_section(section: str, cls: type, values: Any) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section {section!r} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(
                f"unknown key '{section}.{str(key)[:80]}'{close_match_hint(key, fields)}; known keys: {sorted(fields)}"
            )
        kwargs[key] = _coerce(f"{section}.{key}", value, hints[key])
    obj = cls(**kwargs)
    obj.validate()
    return obj


def _named(section: str, value: Any, default: str | None) -> NamedConfig:
    if value is None:
        if default is None:
            raise ConfigError(f"config section {section!r} is required (with at least '{section}.name')")
        return NamedConfig(default)
    if isinstance(value, str):
        return NamedConfig(value)
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ConfigError(f"'{section}.name' must be a string naming a registered {section}")
    options = {k: v for k, v in value.items() if k != "name"}
    return NamedConfig(value["name"], options)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        if isinstance(value, bool) != isinstance(choices[0], bool) or not _is_plain(value) or value not in choices:
            raise ConfigError(f"'{key}' must be one of {list(choices)}, got {short_repr(value)}")
        return value
    if origin is tuple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"'{key}' must be a list of names, got {short_repr(value)}")
        return tuple(items)
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"'{key}': unsupported config type {hint}")  # pragma: no cover - no such field
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, got {short_repr(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}' must be an integer, got {short_repr(value)}")
        if abs(value) > MAX_INT:
            raise ConfigError(f"'{key}' must be at most {MAX_INT:.0e} in size, got {short_repr(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{key}' must be a number, got {short_repr(value)}")
        if isinstance(value, int) and abs(value) > MAX_INT or not math.isfinite(value):
            raise ConfigError(f"'{key}' must be a finite number, got {short_repr(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string, got {short_repr(value)}")
        return value
    raise ConfigError(f"'{key}': unsupported config type {hint}")  # pragma: no cover


def _require(ok: bool, key: str, value: Any, what: str) -> None:
    if not ok:
        raise ConfigError(f"'{key}' must be {what}, got {short_repr(value)}")


def _is_plain(value: Any) -> bool:
    """A scalar that can be compared with ``in`` safely (no lists or mappings)."""
    return value is None or isinstance(value, (str, int, float))
