"""Intensity windows (VOI): ``Window``, named presets, and mapping values to ``[0, 1]``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from medfew.errors import ConfigError, ImageReadError


@dataclass(frozen=True)
class Window:
    """A linear VOI window, in the units of the modality values (Hounsfield units for CT).

    Attributes:
        center: Window centre (DICOM Window Center).
        width: Window width (DICOM Window Width), at least 1.
    """

    center: float
    width: float

    def __post_init__(self) -> None:
        for key in ("center", "width"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"Window {key} must be a finite number, got {value!r}")
        if self.width < 1:
            raise ConfigError(f"Window width must be at least 1, got {self.width!r}")

    @property
    def low(self) -> float:
        """Values at or below this map to 0."""
        return self.center - 0.5 - (self.width - 1) / 2

    @property
    def high(self) -> float:
        """Values above this map to 1."""
        return self.center - 0.5 + (self.width - 1) / 2


WINDOW_PRESETS: Mapping[str, Window] = MappingProxyType(
    {
        "lung": Window(-600, 1500),
        "mediastinum": Window(50, 350),
        "soft_tissue": Window(40, 400),
        "liver": Window(60, 160),
        "bone": Window(400, 1800),
        "brain": Window(40, 80),
    }
)
"""Standard CT windows (centre / width in HU), by name."""


def resolve_window(window: Window | str | None) -> Window | None:
    """Turn a ``window`` argument into a :class:`Window` (or ``None``).

    Args:
        window: A :class:`Window`, a preset name from :data:`WINDOW_PRESETS` (case-insensitive,
            ``-`` or space for ``_``), or ``None``.

    Raises:
        ConfigError: For an unknown preset name or a value of another type.
    """
    if window is None or isinstance(window, Window):
        return window
    if isinstance(window, str):
        key = window.strip().lower().replace("-", "_").replace(" ", "_")
        if key in WINDOW_PRESETS:
            return WINDOW_PRESETS[key]
        raise ConfigError(f"unknown window preset {window!r}; known presets: {sorted(WINDOW_PRESETS)}")
    raise ConfigError(
        f"window must be a Window(center, width), a preset name or None, got {type(window).__name__}"
    )


def apply_window(values: np.ndarray, window: Window, function: str = "LINEAR") -> np.ndarray:
    """Map modality values through a VOI window to ``[0, 1]`` (DICOM PS3.3 C.11.2.1.2).

    Args:
        values: Array of any shape, in modality units.
        window: The window.
        function: DICOM VOI LUT Function: ``"LINEAR"`` (default), ``"LINEAR_EXACT"`` or ``"SIGMOID"``.

    Returns:
        float32 array of the same shape in ``[0, 1]``; NaN maps to 0.

    Raises:
        ConfigError: For another ``function``.
    """
    x = np.asarray(values, dtype=np.float64)
    function = function.strip().upper() or "LINEAR"
    if function == "LINEAR":
        c, w = window.center - 0.5, window.width - 1
        out = (x > c).astype(np.float64) if w == 0 else (x - c) / w + 0.5
    elif function == "LINEAR_EXACT":
        out = (x - window.center) / window.width + 0.5
    elif function == "SIGMOID":
        out = 1.0 / (1.0 + np.exp(-4.0 * (x - window.center) / window.width))
    else:
        raise ConfigError(f"unsupported VOI LUT Function {function!r}; expected LINEAR, LINEAR_EXACT or SIGMOID")
    return _clean(out)


def scale_min_max(values: np.ndarray) -> np.ndarray:
    """Scale an array linearly so that its finite minimum is 0 and maximum is 1.

    Args:
        values: Array of any shape.

    Returns:
        float32 array of the same shape in ``[0, 1]``; a constant image maps to 0, NaN and -inf to 0,
        +inf to 1.
    """
    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return np.where(np.isposinf(x), 1.0, 0.0).astype(np.float32)
    lo = float(x[finite].min()) if not finite.all() else float(x.min())
    hi = float(x[finite].max()) if not finite.all() else float(x.max())
    out = np.zeros_like(x) if hi <= lo else (x - lo) / (hi - lo)
    out[np.isposinf(x)] = 1.0
    return _clean(out)


def require_finite(values: np.ndarray, name: str) -> None:
    """Refuse an image without a single finite value (all NaN / inf would map to a blank image).

    Args:
        values: Modality values or samples, any shape.
        name: The file name, used in the error.

    Raises:
        ImageReadError: When no value is finite.
    """
    if not np.isfinite(values).any():
        raise ImageReadError(name, "no finite pixel value (all NaN or infinite): refused rather than shown blank")


def scale_by_range(values: np.ndarray, high: float) -> np.ndarray:
    """Divide by the nominal maximum of the storage range (``255``, ``2**bits - 1``), clipped to ``[0, 1]``."""
    return _clean(np.asarray(values, dtype=np.float64) / float(high))


def _clean(out: np.ndarray) -> np.ndarray:
    out = np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
