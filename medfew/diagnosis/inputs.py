"""Turn what a clinician gives a session (an array, a file path, or uploaded bytes) into a reader image.

Every input becomes float32 ``(C, H, W)`` in ``[0, 1]`` (``C`` 1 or 3), the same as
:func:`medfew.data.readers.load_image` returns, plus the DICOM header when the input is a DICOM file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medfew.data.readers import DicomMetadata, Window, load_image_with_meta
from medfew.errors import ImageInputError


@dataclass(frozen=True)
class LoadedImage:
    """A decoded input image.

    Attributes:
        pixels: float32 ``(C, H, W)`` in ``[0, 1]``.
        sha256: Hex sha256 of ``pixels`` (shape and float32 bytes): identifies the image, not its file.
        dicom: The DICOM header when the input was a DICOM file, else ``None``.
    """

    pixels: np.ndarray
    sha256: str
    dicom: DicomMetadata | None = None


ImageInput = np.ndarray | torch.Tensor | str | Path | bytes | bytearray | LoadedImage
"""An array ``(H, W)`` / ``(C, H, W)``, a file path, a file's content, or an already decoded image."""


def pixel_sha256(pixels: np.ndarray) -> str:
    """Hex sha256 of a float32 ``(C, H, W)`` array's shape and bytes."""
    data = np.ascontiguousarray(pixels, dtype=np.float32)
    digest = hashlib.sha256(repr(data.shape).encode())
    digest.update(data.tobytes())
    return digest.hexdigest()


def load_input(image: ImageInput, name: str | None = None, *, window: Window | str | None = None) -> LoadedImage:
    """Decode one session input.

    Args:
        image: A float array in ``[0, 1]`` or a uint8 array (divided by 255), shaped ``(H, W)``,
            ``(1, H, W)`` or ``(3, H, W)``; a path to a DICOM / PNG / JPEG / ... file; the bytes of one;
            or a :class:`LoadedImage` (returned as it is).
        name: For bytes, the upload's file name (used in error messages only).
        window: For a monochrome DICOM, a :class:`~medfew.data.readers.Window` or a preset name from
            :data:`~medfew.data.readers.WINDOW_PRESETS` (``None``: the header's VOI LUT or window).
            Ignored by other formats and arrays.

    Returns:
        The :class:`LoadedImage`.

    Raises:
        ImageInputError: Unsupported type, shape, dtype, or values outside ``[0, 1]``.
        ImageReadError: An unreadable file or content.
    """
    if isinstance(image, LoadedImage):
        return image
    if isinstance(image, (str, Path, bytes, bytearray)):  # one sniff, one parse: pixels and DICOM header together
        pixels, meta = load_image_with_meta(image, name=name or "<upload>", window=window)
        dicom = meta.dicom
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        pixels, dicom = _from_array(image), None
    else:
        raise ImageInputError(
            f"an image must be a numpy array, a torch tensor, a file path or file bytes, got {type(image).__name__}"
        )
    return LoadedImage(pixels=pixels, sha256=pixel_sha256(pixels), dicom=dicom)


def _from_array(image: np.ndarray | torch.Tensor) -> np.ndarray:
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ImageInputError(f"an image array must be (H, W) or (C, H, W) with C 1 or 3, got shape {array.shape}")
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    elif not np.issubdtype(array.dtype, np.floating):
        raise ImageInputError(f"an image array must be float in [0, 1] or uint8, got dtype {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise ImageInputError(
            f"a float image array must hold finite values in [0, 1], got range [{np.nanmin(array):.3g}, {np.nanmax(array):.3g}]"
        )
    return np.ascontiguousarray(array)
