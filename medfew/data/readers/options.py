"""``ReadOptions``: the validated keyword arguments every reader receives."""

from __future__ import annotations

from dataclasses import dataclass

from medfew.data.readers.frames import FramePolicy, validate_frame
from medfew.data.readers.limits import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIZE, validate_limits
from medfew.data.readers.window import Window, resolve_window


@dataclass(frozen=True)
class ReadOptions:
    """How to turn a file into a ``(C, H, W)`` image.

    Attributes:
        window: VOI window override for monochrome modality values (DICOM, NIfTI, ``.npz``), or ``None``
            to use the file's own VOI (DICOM) or its min/max.
        frame: Multi-frame policy: ``"middle"``, ``"first"``, ``"mean"``, ``"max"`` or an int index.
        max_pixels: Largest accepted ``rows * cols * frames * samples`` (checked before decoding).
        min_size: Smallest accepted side, in pixels.
    """

    window: Window | None = None
    frame: FramePolicy = "middle"
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_size: int = DEFAULT_MIN_SIZE

    @classmethod
    def build(
        cls,
        *,
        window: Window | str | None = None,
        frame: FramePolicy = "middle",
        max_pixels: int = DEFAULT_MAX_PIXELS,
        min_size: int = DEFAULT_MIN_SIZE,
    ) -> ReadOptions:
        """Validate the public keyword arguments.

        Raises:
            ConfigError: For an unknown window preset or frame policy, or a non-positive limit.
        """
        validate_frame(frame)
        validate_limits(max_pixels, min_size)
        return cls(window=resolve_window(window), frame=frame, max_pixels=max_pixels, min_size=min_size)
