"""Size limits checked from a file's header before any pixel is decoded (decompression-bomb guard)."""

from __future__ import annotations

from medfew.errors import ConfigError, ImageTooLargeError, ImageTooSmallError

DEFAULT_MAX_PIXELS: int = 2**28
"""Largest decoded size accepted by default, counted in samples: ``rows * cols * frames * samples``.

``2**28`` (268,435,456) samples is, for example, a 16384 x 16384 greyscale image, a 9459 x 9459 RGB
photograph or 1024 frames of 512 x 512. Decoded to float64 during intensity handling that is 2 GiB,
the most a clinician's upload should ever cost. Raise it per call for large whole-slide or cine files.
"""

DEFAULT_MIN_SIZE: int = 8
"""Smallest accepted side in pixels; anything smaller carries no usable image content."""


def validate_limits(max_pixels: int, min_size: int) -> None:
    """Check the ``max_pixels`` and ``min_size`` arguments themselves.

    Raises:
        ConfigError: When either is not a positive integer.
    """
    for key, value in (("max_pixels", max_pixels), ("min_size", min_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key} must be a positive integer, got {value!r}")


def check_dimensions(
    name: str,
    *,
    rows: int,
    cols: int,
    frames: int = 1,
    samples: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: int = DEFAULT_MIN_SIZE,
) -> None:
    """Refuse an image whose header announces a size outside the limits.

    Args:
        name: The file name, used in the error.
        rows: Image height in pixels.
        cols: Image width in pixels.
        frames: Number of frames (slices, pages) in the file.
        samples: Samples (channels) per pixel.
        max_pixels: Largest accepted ``rows * cols * frames * samples``.
        min_size: Smallest accepted ``rows`` and ``cols``.

    Raises:
        ImageTooLargeError: When ``rows * cols * frames * samples > max_pixels``.
        ImageTooSmallError: When ``rows`` or ``cols`` is below ``min_size``.
    """
    total = int(rows) * int(cols) * max(int(frames), 1) * max(int(samples), 1)
    if total > max_pixels:
        raise ImageTooLargeError(
            name,
            f"image too large: {rows} x {cols} pixels x {frames} frame(s) x {samples} sample(s) = "
            f"{total:,} samples, above the limit max_pixels={max_pixels:,}",
        )
    if rows < min_size or cols < min_size:
        raise ImageTooSmallError(
            name, f"image too small: {rows} x {cols} pixels, each side must be at least min_size={min_size}"
        )
