"""A NumPy ``.npz`` holding exactly one 2D or 3D array -> float32 ``(C, H, W)`` in ``[0, 1]``.

Layout of a 3D array ``(a, b, c)``: channel-last ``(H, W, C)`` when ``c`` is 1 or 3 (and ``a`` is not);
channel-first ``(C, H, W)`` when ``a`` is 1 or 3; otherwise a volume ``(H, W, D)`` reduced along its
last axis by the frame policy (as for NIfTI).

Intensity: ``bool`` 0 / 1; ``uint8`` / 255; ``uint16`` / 65535; monochrome signed-integer or float
arrays through the ``window`` override when given, floats already in ``[0, 1]`` unchanged, anything
else min / max. Pickled (object) arrays are refused.
"""

from __future__ import annotations

import zipfile

import numpy as np

from medfew.data.readers.frames import take_frame
from medfew.data.readers.limits import check_dimensions
from medfew.data.readers.options import ReadOptions
from medfew.data.readers.source import Source
from medfew.data.readers.window import apply_window, require_finite, scale_by_range, scale_min_max
from medfew.errors import ImageReadError

_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, KeyError)


def read_npz(source: Source, options: ReadOptions) -> np.ndarray:
    """Read the single array of an ``.npz`` file as an image.

    Args:
        source: The file.
        options: Window, frame policy (volumes) and size limits.

    Returns:
        float32 ``(C, H, W)`` in ``[0, 1]``, ``C`` 1 or 3.

    Raises:
        ImageReadError: Not exactly one array, not 2D / 3D, object dtype, corrupt data, frame out of range.
        ImageTooLargeError: Above ``options.max_pixels`` by the array header.
        ImageTooSmallError: A side below ``options.min_size``.
    """
    name = source.name
    shape, dtype, member = _peek(source)
    layout = _layout(shape, name)
    rows, cols = (shape[1], shape[2]) if layout == "chw" else (shape[0], shape[1])
    frames = shape[2] if layout == "volume" else 1
    samples = {"chw": shape[0], "hwc": shape[-1]}.get(layout, 1)
    check_dimensions(
        name,
        rows=rows,
        cols=cols,
        frames=frames,
        samples=samples,
        max_pixels=options.max_pixels,
        min_size=options.min_size,
    )
    try:
        with source.open() as fp, np.load(fp, allow_pickle=False) as archive:
            arr = np.asarray(archive[member[:-4]])
    except _ERRORS as exc:
        raise ImageReadError(name, f"corrupt .npz array {member!r} ({type(exc).__name__}: {exc})") from exc
    if layout == "hwc":
        arr = np.moveaxis(arr, -1, 0)
    elif layout == "volume":
        arr = take_frame(arr, options.frame, axis=-1, name=name)[None]
    elif layout == "hw":
        arr = arr[None]
    if dtype.kind == "f":
        require_finite(arr, name)
    return _to_unit(arr, dtype, options)


def _peek(source: Source) -> tuple[tuple[int, ...], np.dtype, str]:
    """Shape and dtype of the archive's only array, from its ``.npy`` header (no data read)."""
    name = source.name
    try:
        with source.open() as fp, zipfile.ZipFile(fp) as archive:
            members = [m for m in archive.namelist() if m.endswith(".npy")]
            if len(members) != 1:
                shown = [m[:-4] for m in members[:5]]
                raise ImageReadError(
                    name,
                    f"an .npz image must hold exactly one array, found {len(members)} {shown}"
                    " (MedMNIST files are read with read_medmnist)",
                )
            with archive.open(members[0]) as npy:
                version = np.lib.format.read_magic(npy)
                reader = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _fortran, dtype = reader(npy)
    except ImageReadError:
        raise
    except _ERRORS as exc:
        raise ImageReadError(name, f"corrupt .npz archive ({type(exc).__name__}: {exc})") from exc
    if dtype.hasobject:
        raise ImageReadError(name, f"array {members[0][:-4]!r} holds Python objects (pickled): refused")
    if dtype.kind not in "buif":
        raise ImageReadError(name, f"array {members[0][:-4]!r} has dtype {dtype}; expected bool, integer or float")
    return tuple(int(s) for s in shape), dtype, members[0]


def _layout(shape: tuple[int, ...], name: str) -> str:
    if len(shape) == 2:
        return "hw"
    if len(shape) == 3:
        if shape[-1] in (1, 3) and shape[0] not in (1, 3):
            return "hwc"
        if shape[0] in (1, 3):
            return "chw"
        return "volume"
    raise ImageReadError(name, f"an .npz image must be a 2D or 3D array, got shape {shape}")


def _to_unit(arr: np.ndarray, dtype: np.dtype, options: ReadOptions) -> np.ndarray:
    if dtype.kind == "b":
        return arr.astype(np.float32)
    if dtype == np.uint8:
        return scale_by_range(arr, 255)
    if dtype == np.uint16:
        return scale_by_range(arr, 65535)
    if options.window is not None and arr.shape[0] == 1:
        return apply_window(arr, options.window)
    if dtype.kind == "f":
        finite = arr[np.isfinite(arr)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            return scale_by_range(arr, 1.0)
    return scale_min_max(arr)
