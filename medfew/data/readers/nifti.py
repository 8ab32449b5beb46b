"""NIfTI (``.nii`` / ``.nii.gz``, NIfTI-1 or -2) through MONAI's nibabel reader -> float32 ``(1, H, W)``.

Axes follow MONAI and nibabel: the array's first two axes are ``(H, W)``, a 3D volume's slices run
along the last axis and are reduced to one 2D image by the frame policy. Intensities are nibabel's
scaled values (``scl_slope`` / ``scl_inter``), then the ``window`` override (CT in HU) or min / max.

MONAI's :class:`monai.data.NibabelReader` is used directly rather than through ``LoadImage``:
``LoadImage`` instantiates every default reader on construction, including one that warns about
nvImageCodec and, on a GPU host with it installed, registers a decoder plugin into pydicom for the
whole process, which would change how the DICOM reader decodes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from medfew.data.readers.frames import take_frame
from medfew.data.readers.limits import check_dimensions
from medfew.data.readers.options import ReadOptions
from medfew.data.readers.sniff import is_gzip
from medfew.data.readers.source import Source
from medfew.data.readers.window import apply_window, require_finite, scale_min_max
from medfew.errors import ImageReadError

_ERRORS = (OSError, EOFError, ValueError, TypeError, MemoryError)


def read_nifti(source: Source, options: ReadOptions) -> np.ndarray:
    """Read a 2D image or a 3D volume (one slice of it) from a NIfTI file.

    Args:
        source: The file (any name: content was already recognised as NIfTI).
        options: Window, frame policy (along the last axis) and size limits.

    Returns:
        float32 ``(1, H, W)`` in ``[0, 1]``.

    Raises:
        ImageReadError: Corrupt or truncated data, more than 3 non-singleton dimensions, frame out of range.
        ImageTooLargeError: Above ``options.max_pixels`` by the header.
        ImageTooSmallError: A side below ``options.min_size``.
    """
    suffix = ".nii.gz" if is_gzip(source) else ".nii"
    if source.path is not None and source.suffix == suffix:
        return _read_file(source.path, source.name, options)
    # nibabel (and so MONAI) picks the format by file name: give uploads and odd names a proper one.
    with tempfile.TemporaryDirectory(prefix="medfew-nifti-") as tmp:
        path = Path(tmp) / f"image{suffix}"
        path.write_bytes(source.read_bytes())
        return _read_file(path, source.name, options)


def _read_file(path: Path, name: str, options: ReadOptions) -> np.ndarray:
    import nibabel as nib
    from monai.data import NibabelReader
    from nibabel.spatialimages import SpatialImage

    try:
        header_only = nib.load(str(path))  # lazy: the data stays on disk
    except (*_ERRORS, nib.filebasedimages.ImageFileError) as exc:
        raise ImageReadError(name, f"corrupt NIfTI header ({type(exc).__name__}: {exc})") from exc
    if not isinstance(header_only, SpatialImage):
        raise ImageReadError(name, f"not a NIfTI image (nibabel read it as {type(header_only).__name__})")
    shape = tuple(int(s) for s in header_only.shape)
    spatial = _squeeze_shape(shape, name)
    check_dimensions(
        name,
        rows=spatial[0],
        cols=spatial[1],
        frames=int(np.prod(spatial[2:], dtype=np.int64)),
        max_pixels=options.max_pixels,
        min_size=options.min_size,
    )
    reader = NibabelReader()
    try:
        data, _meta = reader.get_data(reader.read(str(path)))
    except (*_ERRORS, nib.filebasedimages.ImageFileError) as exc:
        raise ImageReadError(name, f"truncated or corrupt NIfTI data ({type(exc).__name__}: {exc})") from exc
    values = np.asarray(data).reshape(spatial)
    if values.ndim == 3:
        values = take_frame(values, options.frame, axis=-1, name=name)
    require_finite(values, name)
    out = apply_window(values, options.window) if options.window is not None else scale_min_max(values)
    return out[None]


def _squeeze_shape(shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    """Drop trailing singleton dimensions; what is left must be 2D or 3D."""
    dims = list(shape)
    while len(dims) > 2 and dims[-1] == 1:
        dims.pop()
    if len(dims) == 1:
        dims.append(1)
    if len(dims) > 3:
        raise ImageReadError(
            name, f"NIfTI data of shape {shape} has {len(dims)} dimensions; expected a 2D image or 3D volume"
        )
    return tuple(dims)
