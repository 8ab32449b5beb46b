"""Image readers: DICOM, PNG / JPEG / TIFF / BMP, NIfTI and ``.npz`` -> float32 ``(C, H, W)`` in ``[0, 1]``.

Public API::

    load_image(path, *, window=None, frame="middle", max_pixels=DEFAULT_MAX_PIXELS, min_size=8)
    load_image_bytes(data, name, **same_kwargs)
    load_image_with_meta(path_or_bytes, *, name=None, **same_kwargs) -> (image, ImageMeta)
    sniff_format(path_or_bytes) -> "dicom" | "png" | "jpeg" | "tiff" | "bmp" | "nifti" | "npz"
    read_dicom_metadata(path) -> DicomMetadata
    read_medmnist(path, split) -> (images uint8 (N, H, W[, 3]), labels int64 (N,))

Every failure is a :class:`medfew.errors.ImageReadError` (or subclass) naming the file and the reason.
"""

from __future__ import annotations

from medfew.data.readers.frames import FRAME_POLICIES
from medfew.data.readers.limits import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIZE
from medfew.data.readers.load import load_image, load_image_bytes, load_image_with_meta
from medfew.data.readers.medmnist import MEDMNIST_SPLITS, read_medmnist
from medfew.data.readers.metadata import DicomMetadata, ImageMeta, read_dicom_metadata
from medfew.data.readers.sniff import FORMATS, sniff_format
from medfew.data.readers.window import WINDOW_PRESETS, Window

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_SIZE",
    "FORMATS",
    "FRAME_POLICIES",
    "MEDMNIST_SPLITS",
    "WINDOW_PRESETS",
    "DicomMetadata",
    "ImageMeta",
    "Window",
    "load_image",
    "load_image_bytes",
    "load_image_with_meta",
    "read_dicom_metadata",
    "read_medmnist",
    "sniff_format",
]
