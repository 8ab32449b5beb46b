"""Device and precision policy, decided in one place."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

import torch

from medfew.data.episodes.episode import Episode
from medfew.data.episodes.pool import ImagePool
from medfew.errors import ConfigError


def resolve_device(spec: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cuda"`` without a GPU is an error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} was asked but no CUDA device is available (use 'auto' or 'cpu')")
    if spec not in ("cpu",) and not spec.startswith("cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {spec!r}")
    return torch.device(spec)


def resolve_amp(spec: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of a training step.

    ``"auto"``: bf16 on CUDA, none on the CPU. ``"bf16"``: bf16 on either (CPUs with AMX or AVX512-BF16
    run bf16 convolutions faster: ``benchmarks/train_speed.py --bf16`` measured a ProtoNet step 1.38x
    faster on this project's CPU, the MAML family not faster). ``"off"``: none.
    """
    if spec not in ("auto", "off", "bf16"):
        raise ConfigError(f"amp must be 'auto', 'off' or 'bf16', got {spec!r}")
    if spec == "off" or (spec == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` when ``dtype`` is set, else a no-op."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def move_episode(episode: Episode, device: torch.device, *, channels_last: bool = False) -> Episode:
    """``episode`` with every tensor on ``device``, copied without blocking the host.

    The copies are asynchronous when the source is page-locked (``EpisodeSampler(pin_memory=True)``)
    and the target is CUDA. The episode was validated when it was built (on the CPU); moving it
    changes no value, so the copy is not validated again (validation reads label values, which on
    a GPU would block the host until the copy has landed: a sync per episode).

    Args:
        episode: A validated episode, on any device.
        device: The training device.
        channels_last: Store the images ``(B, C, H, W)`` in channels-last order (cuDNN's fast layout
            for convolutions under bf16 autocast).
    """
    layout = torch.channels_last if channels_last else torch.contiguous_format

    def move(t: torch.Tensor | None, images: bool = False) -> torch.Tensor | None:
        if t is None:
            return None
        if images:
            return t.to(device, non_blocking=True, memory_format=layout)
        return t.to(device, non_blocking=True)

    moved = object.__new__(Episode)
    for f in dataclasses.fields(Episode):
        value = getattr(episode, f.name)
        if isinstance(value, torch.Tensor):
            value = move(value, images=f.name.endswith("_images"))
        object.__setattr__(moved, f.name, value)
    return moved


def pool_bytes(pools: Sequence[ImagePool]) -> int:
    """Bytes the pools' images take (what placing them on the device costs)."""
    return sum(p.images.numel() * p.images.element_size() for p in pools)


def episodes_on_device(spec: str, pools: Sequence[ImagePool], device: torch.device, fraction: float = 0.25) -> bool:
    """Whether to build episodes on ``device``: ``"on"``, ``"off"``, or ``"auto"`` (CUDA, and the pools
    take at most ``fraction`` of the free device memory).

    Raises:
        ConfigError: Another ``spec``, or ``"on"`` without CUDA.
    """
    if spec not in ("auto", "on", "off"):
        raise ConfigError(f"episodes_on_device must be 'auto', 'on' or 'off', got {spec!r}")
    if spec == "off" or (spec == "auto" and device.type != "cuda"):
        return False
    if device.type != "cuda":
        raise ConfigError(f"episodes_on_device='on' needs a CUDA training device, got {device}")
    if spec == "on":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return pool_bytes(pools) <= fraction * free
