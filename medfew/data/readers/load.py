"""``load_image`` / ``load_image_bytes``: any supported file -> float32 ``(C, H, W)`` in ``[0, 1]``.

The format is recognised from the content (:func:`sniff_format`), never from the extension, and the
file is handed to the reader for that format.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from medfew.data.readers.dicom import read_dicom
from medfew.data.readers.failures import reading
from medfew.data.readers.frames import FramePolicy
from medfew.data.readers.limits import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIZE, check_dimensions
from medfew.data.readers.npz import read_npz
from medfew.data.readers.options import ReadOptions
from medfew.data.readers.raster import read_raster
from medfew.data.readers.sniff import sniff_source
from medfew.data.readers.source import Source
from medfew.data.readers.window import Window
from medfew.errors import ImageReadError

Reader = Callable[[Source, ReadOptions], np.ndarray]


def _read_nifti(source: Source, options: ReadOptions) -> np.ndarray:
    from medfew.data.readers.nifti import read_nifti  # imports MONAI (slow): only when a NIfTI file comes

    return read_nifti(source, options)


READERS: dict[str, Reader] = {
    "dicom": read_dicom,
    "png": read_raster,
    "jpeg": read_raster,
    "tiff": read_raster,
    "bmp": read_raster,
    "nifti": _read_nifti,
    "npz": read_npz,
}


def load_image(
    path: str | Path,
    *,
    window: Window | str | None = None,
    frame: FramePolicy = "middle",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: int = DEFAULT_MIN_SIZE,
) -> np.ndarray:
    """Read a medical or ordinary image file as float32 ``(C, H, W)`` in ``[0, 1]``.

    Args:
        path: DICOM (any name, with or without preamble), PNG, JPEG, TIFF, BMP, NIfTI (``.nii`` /
            ``.nii.gz``) or a single-array ``.npz``; recognised by content.
        window: VOI override for monochrome modality values (DICOM, NIfTI, ``.npz``): a
            :class:`Window`, or a preset name from :data:`WINDOW_PRESETS` (``"lung"``, ``"soft_tissue"``,
            ``"bone"``, ``"brain"``, ...). ``None`` uses the DICOM header's VOI LUT or window, else the
            image's min / max. Ignored, with a warning, for colour and raster images.
        frame: For multi-frame DICOM, 3D NIfTI / ``.npz`` volumes (last axis) and multi-page TIFF:
            ``"middle"``, ``"first"``, ``"mean"``, ``"max"`` or an int index (negative from the end).
        max_pixels: Refuse images whose header announces more than this many samples
            (``rows * cols * frames * samples``), before decoding. Default :data:`DEFAULT_MAX_PIXELS` (``2**28``).
            For DICOM the same budget bounds what is inflated (deflated data sets) and what each compressed
            frame's own JPEG / JPEG-LS / JPEG 2000 header declares, which must also match Rows / Columns.
        min_size: Refuse images with a side shorter than this. Default 8.

    Returns:
        float32 ``(C, H, W)``, finite, in ``[0, 1]``; ``C`` is 1 (greyscale) or 3 (RGB).

    Raises:
        ImageReadError: Missing, empty, unrecognised, truncated or corrupt file, DICOM without pixel data,
            frame out of range. Subclasses: :class:`UnsupportedCompressionError`,
            :class:`ImageTooLargeError`, :class:`ImageTooSmallError`.
        ConfigError: Unknown window preset or frame policy, non-positive limits.
    """
    options = ReadOptions.build(window=window, frame=frame, max_pixels=max_pixels, min_size=min_size)
    return _load(Source.from_path(path), options)


def load_image_bytes(
    data: bytes,
    name: str,
    *,
    window: Window | str | None = None,
    frame: FramePolicy = "middle",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: int = DEFAULT_MIN_SIZE,
) -> np.ndarray:
    """:func:`load_image` for in-memory content, such as a browser upload.

    Args:
        data: The file content.
        name: The upload's file name, used only in error messages (not to guess the format).
        window: See :func:`load_image`.
        frame: See :func:`load_image`.
        max_pixels: See :func:`load_image`.
        min_size: See :func:`load_image`.

    Returns:
        float32 ``(C, H, W)`` in ``[0, 1]``.
    """
    options = ReadOptions.build(window=window, frame=frame, max_pixels=max_pixels, min_size=min_size)
    return _load(Source.from_bytes(data, name), options)


def _load(source: Source, options: ReadOptions) -> np.ndarray:
    fmt = sniff_source(source)
    with reading(source.name, f"cannot read the {fmt} file"):  # the readers' own errors pass unchanged
        image = READERS[fmt](source, options)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ImageReadError(source.name, f"decoded to an unexpected shape {image.shape}; expected (1 or 3, H, W)")
    # Readers that cannot see the final size in the header (EXIF rotation, volumes) are checked again here.
    check_dimensions(
        source.name,
        rows=image.shape[1],
        cols=image.shape[2],
        samples=image.shape[0],
        max_pixels=options.max_pixels,
        min_size=options.min_size,
    )
    return np.ascontiguousarray(image, dtype=np.float32)
