"""Device and precision policy, decided in one place."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

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
    """Autocast dtype: bf16 on CUDA for ``"auto"``/``"bf16"``, none on CPU or for ``"off"``."""
    if spec == "off" or device.type != "cuda":
        return None
    if spec in ("auto", "bf16"):
        return torch.bfloat16
    raise ConfigError(f"amp must be 'auto', 'off' or 'bf16', got {spec!r}")


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """``torch.autocast`` when ``dtype`` is set, else a no-op."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
