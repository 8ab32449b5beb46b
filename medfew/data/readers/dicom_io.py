"""Parse a DICOM file into a pydicom ``Dataset``, with a transfer syntax even when the file has no meta header."""

from __future__ import annotations

import struct
import zlib

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medfew.data.readers.dicom_deflate import check_deflated_size
from medfew.data.readers.limits import DEFAULT_MAX_PIXELS
from medfew.data.readers.source import Source
from medfew.errors import ImageReadError

PIXEL_KEYWORDS: tuple[str, ...] = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
"""The three elements that can hold a DICOM image's pixels."""


def read_dataset(
    source: Source, *, stop_before_pixels: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Dataset:
    """Parse a DICOM file (with or without the 128-byte preamble and file meta header).

    A deflated data set is first inflated in bounded chunks and refused when it outgrows its own
    header (:func:`~medfew.data.readers.dicom_deflate.check_deflated_size`), before pydicom inflates it.

    Args:
        source: The file.
        stop_before_pixels: Skip the pixel data (for metadata only).
        max_pixels: The pixel budget a deflated data set's header must respect.

    Returns:
        The data set, its ``file_meta.TransferSyntaxUID`` always set (inferred from the encoding
        pydicom detected when the file has no meta header).

    Raises:
        ImageReadError: When the content cannot be parsed as DICOM.
        ImageTooLargeError: A deflated data set that inflates beyond its header or the budget.
    """
    check_deflated_size(source, max_pixels=max_pixels)
    try:
        with source.open() as fp:
            ds = pydicom.dcmread(fp, force=True, stop_before_pixels=stop_before_pixels)
    except (
        InvalidDicomError,
        EOFError,
        struct.error,
        OSError,
        ValueError,
        KeyError,
        TypeError,
        OverflowError,
        zlib.error,
    ) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ImageReadError(
            source.name, f"not a valid DICOM file, or truncated ({type(exc).__name__}: {detail})"
        ) from exc
    if len(ds) == 0:
        raise ImageReadError(source.name, "DICOM file holds no data set (only a file meta header, or truncated)")
    _ensure_transfer_syntax(ds)
    return ds


def _ensure_transfer_syntax(ds: Dataset) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
        ds.file_meta = meta
    if meta.get("TransferSyntaxUID"):
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    elif little is False:
        meta.TransferSyntaxUID = ExplicitVRBigEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian


def pixel_keyword(ds: Dataset) -> str | None:
    """Which of *Pixel Data*, *Float Pixel Data*, *Double Float Pixel Data* the data set has, if any."""
    for keyword in PIXEL_KEYWORDS:
        if keyword in ds:
            return keyword
    return None
