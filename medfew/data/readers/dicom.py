"""DICOM pixels -> float32 ``(C, H, W)`` in ``[0, 1]``: decode, Modality LUT, VOI, MONOCHROME1, colour, frames.

The display pipeline of DICOM PS3.4 N.2, as a radiologist's viewer shows the image:

1. decode the chosen frame(s) with pydicom's decoder plugins (numpy, pylibjpeg, Pillow);
2. *Modality LUT*: Rescale Slope / Intercept (or Modality LUT Sequence), giving e.g. Hounsfield units;
3. *VOI*: an explicit ``window`` argument, else the VOI LUT Sequence, else the header's first Window
   Center / Width (with its VOI LUT Function), else the image's own min / max;
4. MONOCHROME1 is inverted so that high values are bright.

Colour images (RGB, YBR_* converted to RGB by pydicom, PALETTE COLOR through its LUT) skip steps 2-4 and
are scaled by their bit depth.

Nothing costly runs on what a header merely claims: a deflated data set is inflated under a bound
(:mod:`~medfew.data.readers.dicom_deflate`), each compressed frame's own header is checked against
Rows / Columns and the pixel budget before decoding (:func:`~medfew.data.readers.dicom_codecs.check_compressed_frame`),
and every failure of a step on a malformed file is an ``ImageReadError`` naming the file and the step.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi
from pydicom.pixels.decoders.base import Decoder
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID

from medfew.data.readers.dicom_codecs import check_compressed_frame, decode_failure, decoder_for
from medfew.data.readers.dicom_groups import frame_view
from medfew.data.readers.dicom_io import pixel_keyword, read_dataset
from medfew.data.readers.failures import describe, reading
from medfew.data.readers.frames import FrameAccumulator, frame_index
from medfew.data.readers.limits import check_dimensions
from medfew.data.readers.options import ReadOptions
from medfew.data.readers.source import Source
from medfew.data.readers.window import Window, apply_window, require_finite, scale_by_range, scale_min_max
from medfew.errors import ImageReadError, MedfewError

logger = logging.getLogger(__name__)

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


def read_dicom(source: Source, options: ReadOptions) -> np.ndarray:
    """Read a DICOM image.

    Args:
        source: The file.
        options: Window, frame policy and size limits.

    Returns:
        float32 ``(C, H, W)`` in ``[0, 1]``; ``C`` is 1 for monochrome, 3 for colour.

    Raises:
        ImageReadError: Not DICOM, no pixel data, missing Rows / Columns, truncated pixel data, frame out
            of range, undecodable data.
        UnsupportedCompressionError: No installed decoder for the transfer syntax, or decoding failed.
        ImageTooLargeError: ``rows * cols * frames * samples`` above ``options.max_pixels``.
        ImageTooSmallError: A side below ``options.min_size``.

    Any other failure on a malformed file (a palette without its lookup table, a broken Modality or
    VOI LUT, a non-numeric or non-finite Rescale Slope, no finite pixel value) is an ``ImageReadError``
    naming the step that failed.
    """
    with reading(source.name, "malformed DICOM image"):
        return _read_dicom(read_dataset(source, max_pixels=options.max_pixels), source.name, options)


def read_dicom_dataset(source: Source, options: ReadOptions) -> tuple[np.ndarray, Dataset]:
    """:func:`read_dicom`, also returning the data set it parsed (once) for its header.

    Same checks, limits and errors as :func:`read_dicom`.

    Returns:
        ``(image, ds)``: the float32 ``(C, H, W)`` image in ``[0, 1]`` and the parsed pydicom data set.
    """
    with reading(source.name, "malformed DICOM image"):
        ds = read_dataset(source, max_pixels=options.max_pixels)
        return _read_dicom(ds, source.name, options), ds


def _read_dicom(ds: Dataset, name: str, options: ReadOptions) -> np.ndarray:
    keyword = pixel_keyword(ds)
    if keyword is None:
        sop = ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID")
        kind = f" ({UID(str(sop)).name})" if sop else ""
        raise ImageReadError(name, f"DICOM file has no pixel data{kind}: not an image, or truncated before it")
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not rows or not cols:
        raise ImageReadError(name, f"DICOM image is missing Rows / Columns (got {rows!r} / {cols!r})")
    n_frames = _number_of_frames(ds)
    samples = int(ds.get("SamplesPerPixel") or 1)
    check_dimensions(
        name,
        rows=int(rows),
        cols=int(cols),
        frames=n_frames,
        samples=samples,
        max_pixels=options.max_pixels,
        min_size=options.min_size,
    )
    uid = str(ds.file_meta.TransferSyntaxUID)
    decoder = decoder_for(uid, name)
    if not decoder.is_encapsulated:
        _check_native_length(ds, keyword, name)

    index = frame_index(options.frame, n_frames, name)
    budget = {"n_frames": n_frames, "max_pixels": options.max_pixels}
    if index is not None:
        values, colour = _frame_values(ds, decoder, index, name, **budget)
        view = frame_view(ds, index)
    else:
        acc = FrameAccumulator(str(options.frame))
        colour = False
        for i in range(n_frames):
            frame, colour = _frame_values(ds, decoder, i, name, **budget)
            acc.add(frame, name)
        values, view = acc.result(), frame_view(ds, 0)

    require_finite(values, name)
    if colour:
        if options.window is not None:
            warnings.warn(f"{name}: window ignored for a colour DICOM image", stacklevel=5)
        with reading(name, "cannot scale the colour samples"):
            return _colour_to_unit(values, ds).transpose(2, 0, 1)
    with reading(name, "cannot apply the VOI LUT / window"):
        out = _monochrome_to_unit(values, view, options.window, name)
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        out = 1.0 - out
    return out[None]


def _number_of_frames(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def _check_native_length(ds: Dataset, keyword: str, name: str) -> None:
    """Uncompressed pixel data shorter than the header promises means a truncated file."""
    try:
        expected = get_expected_length(ds, unit="bytes")
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ImageReadError(name, f"DICOM image header is incomplete ({exc})") from exc
    actual = len(ds[keyword].value or b"")
    if actual < expected:
        raise ImageReadError(
            name, f"truncated DICOM pixel data: {actual:,} bytes present, the header implies {expected:,}"
        )


def _frame_values(
    ds: Dataset, decoder: Decoder, index: int, name: str, *, n_frames: int, max_pixels: int
) -> tuple[np.ndarray, bool]:
    """Decode frame ``index``; monochrome frames come back as Modality LUT output.

    A compressed frame's own header is checked against the DICOM header and the budget first.

    Returns:
        ``(values, colour)``: float64 ``(H, W)`` modality values, or ``(H, W, 3)`` RGB samples when
        ``colour`` is true.
    """
    if decoder.is_encapsulated:
        check_compressed_frame(ds, index, n_frames=n_frames, max_pixels=max_pixels, name=name)
    try:
        arr, meta = decoder.as_array(ds, index=index)  # YBR_* -> RGB by default
    except MedfewError:
        raise
    except Exception as exc:  # plugins raise anything, RuntimeError to struct.error
        if decoder.is_encapsulated:
            raise decode_failure(str(ds.file_meta.TransferSyntaxUID), name, exc) from exc
        raise ImageReadError(name, f"cannot decode DICOM pixel data ({describe(exc)})") from exc
    photometric = (
        str(meta.get("photometric_interpretation", ds.get("PhotometricInterpretation", ""))).strip().upper()
    )
    if photometric == "PALETTE COLOR":
        with reading(name, "cannot apply the palette colour lookup table"):
            return apply_color_lut(arr, ds).astype(np.float64), True
    if arr.ndim == 3 or photometric not in _MONOCHROME:
        if arr.ndim != 3:
            raise ImageReadError(
                name, f"unsupported photometric interpretation {_short(photometric)} for a single-sample image"
            )
        return arr.astype(np.float64), True
    view = frame_view(ds, index)
    _check_rescale(view, name)
    with reading(name, "cannot apply the Modality LUT"):
        return np.asarray(apply_modality_lut(arr, view), dtype=np.float64), False


def _check_rescale(view: Dataset, name: str) -> None:
    """Rescale Slope / Intercept must be finite numbers (NaN or inf would give a blank image)."""
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword not in view:
            continue
        value = view[keyword].value
        try:
            number = float(_first(value))
        except (TypeError, ValueError, OverflowError):
            number = math.nan
        if not math.isfinite(number):
            raise ImageReadError(name, f"{keyword} {_short(value)} is not a finite number")


def _short(value: Any) -> str:
    """A length-bounded repr of an untrusted header value."""
    text = str(value)
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _colour_to_unit(rgb: np.ndarray, ds: Dataset) -> np.ndarray:
    """``(H, W, 3)`` samples -> ``[0, 1]`` by bit depth (the palette LUT's depth for PALETTE COLOR)."""
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "PALETTE COLOR":
        descriptor = ds.get("RedPaletteColorLookupTableDescriptor") or [0, 0, 16]
        bits = int(descriptor[2])
    else:
        bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    return scale_by_range(rgb, 2**bits - 1)


def _monochrome_to_unit(values: np.ndarray, view: Dataset, window: Window | None, name: str) -> np.ndarray:
    """Modality values ``(H, W)`` -> ``[0, 1]``: override window, else VOI LUT, header window or min/max."""
    if window is not None:
        return apply_window(values, window)
    if view.get("VOILUTSequence"):
        return _apply_voi_lut(values, view)
    header = _header_window(view, name)
    if header is not None:
        window_, function = header
        return apply_window(values, window_, function)
    return scale_min_max(values)


def _header_window(view: Dataset, name: str) -> tuple[Window, str] | None:
    """The first Window Center / Width of the header and its VOI LUT Function, when valid."""
    center, width = view.get("WindowCenter"), view.get("WindowWidth")
    if center in (None, "") or width in (None, ""):
        return None
    center, width = _first(center), _first(width)
    function = str(view.get("VOILUTFunction") or "LINEAR").strip().upper()
    try:
        window = Window(float(center), float(width))
    except (MedfewError, TypeError, ValueError):
        logger.warning("%s: invalid header window %r / %r ignored, scaling by min/max", name, center, width)
        return None
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        logger.warning("%s: unknown VOI LUT Function %r, using LINEAR", name, function)
        function = "LINEAR"
    return window, function


def _first(value: Any) -> Any:
    """The first item of a multi-valued element (Window Center may list several windows)."""
    if isinstance(value, (MultiValue, list, tuple)):
        return value[0] if len(value) else None
    return value


def _apply_voi_lut(values: np.ndarray, view: Dataset) -> np.ndarray:
    """Apply the first VOI LUT, scaled by the LUT's own output range (robust to descriptor bit-depth mismatch)."""
    item = view.VOILUTSequence[0]
    n_entries, first_map = int(item.LUTDescriptor[0]) or 2**16, int(item.LUTDescriptor[1])
    lut = apply_voi(np.arange(first_map, first_map + n_entries, dtype=np.int64), view).astype(np.float64)
    mapped = apply_voi(np.rint(values).astype(np.int64), view).astype(np.float64)
    lo, hi = float(lut.min()), float(lut.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float32)
    return scale_by_range(mapped - lo, hi - lo)
