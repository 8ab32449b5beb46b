"""``load_image`` / ``load_image_bytes``: any supported file -> float32 ``(C, H, W)`` in ``[0, 1]``;
``load_image_with_meta``: the same image with its :class:`ImageMeta` (MONAI's ``(image, meta)``).

The format is recognised from the content (:func:`sniff_format`), never from the extension, once per
file, and the file is handed to the reader for that format, which parses it once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medfew.data.readers.dicom import read_dicom, read_dicom_dataset
from medfew.data.readers.failures import reading
from medfew.data.readers.frames import FramePolicy
from medfew.data.readers.limits import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIZE, check_dimensions
from medfew.data.readers.metadata import ImageMeta, dataset_metadata
from medfew.data.readers.npz import read_npz
from medfew.data.readers.options import ReadOptions
from medfew.data.readers.raster import read_raster
from medfew.data.readers.sniff import sniff_source
from medfew.data.readers.source import Source
from medfew.data.readers.window import Window
from medfew.errors import ImageReadError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

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
    return _load(Source.from_path(path), options)[0]


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
    return _load(Source.from_bytes(data, name), options)[0]


def load_image_with_meta(
    path_or_bytes: str | Path | bytes | bytearray | memoryview,
    *,
    name: str | None = None,
    window: Window | str | None = None,
    frame: FramePolicy = "middle",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: int = DEFAULT_MIN_SIZE,
) -> tuple[np.ndarray, ImageMeta]:
    """:func:`load_image` (or :func:`load_image_bytes`) with the image's metadata, from one sniff and one parse.

    The content is sniffed once and parsed once (a DICOM file: one ``pydicom.dcmread``, its header read
    from the same data set as its pixels), under the same limits and checks as :func:`load_image`.

    Args:
        path_or_bytes: A file path, or a file's content (a browser upload).
        name: For content, the upload's file name, used only in error messages (default ``"<bytes>"``);
            ignored for a path, which names itself.
        window: See :func:`load_image`.
        frame: See :func:`load_image`.
        max_pixels: See :func:`load_image`.
        min_size: See :func:`load_image`.

    Returns:
        ``(image, meta)``: float32 ``(C, H, W)`` in ``[0, 1]``, and its :class:`ImageMeta` (format, shape,
        and the :class:`DicomMetadata` of a DICOM file).

    Raises:
        ImageReadError: As :func:`load_image`; also a DICOM header value that cannot be made plain (as
            :func:`read_dicom_metadata`).
        ConfigError: As :func:`load_image`.
    """
    options = ReadOptions.build(window=window, frame=frame, max_pixels=max_pixels, min_size=min_size)
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        source = Source.from_bytes(path_or_bytes, "<bytes>" if name is None else name)
    else:
        source = Source.from_path(path_or_bytes)
    image, fmt, dataset = _load(source, options, keep_dataset=True)
    dicom = dataset_metadata(dataset, source.name) if dataset is not None else None
    return image, ImageMeta(format=fmt, shape=(image.shape[0], image.shape[1], image.shape[2]), dicom=dicom)


def _load(
    source: Source, options: ReadOptions, *, keep_dataset: bool = False
) -> tuple[np.ndarray, str, Dataset | None]:
    """Sniff once, read once: ``(image, format, the parsed DICOM data set if keep_dataset, else None)``."""
    fmt = sniff_source(source)
    dataset: Dataset | None = None
    with reading(source.name, f"cannot read the {fmt} file"):  # the readers' own errors pass unchanged
        if fmt == "dicom" and keep_dataset:
            image, dataset = read_dicom_dataset(source, options)
        else:
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
    return np.ascontiguousarray(image, dtype=np.float32), fmt, dataset
