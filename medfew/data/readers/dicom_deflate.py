"""Bound the inflated size of a Deflated Explicit VR Little Endian DICOM before pydicom inflates it.

pydicom inflates a deflated data set (transfer syntax ``1.2.840.10008.1.2.1.99``) in one
``zlib.decompress`` call, whatever it grows to: 1 MB of deflated zeros becomes 1 GB. Before the file
is handed to pydicom, :func:`check_deflated_size` inflates it here in 1 MiB chunks, keeping only the
first :data:`HEADER_BYTES`: it parses the header found there (Rows, Columns, frames, samples, bits),
checks it against the pixel budget, and stops inflating, with an :class:`ImageTooLargeError`, as soon
as the data set outgrows what that header allows (header + pixel data + :data:`SLACK_BYTES`). Memory
stays at a few MiB however large the bomb.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from itertools import chain
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medfew.data.readers.limits import check_dimensions
from medfew.data.readers.source import Source
from medfew.errors import ImageReadError, ImageTooLargeError

HEADER_BYTES: int = 4 << 20
"""Inflated bytes kept to parse the header: the pixel data element must start within them."""

SLACK_BYTES: int = 1 << 20
"""Allowed beyond header + pixel data (elements after the pixels, padding)."""

_CHUNK = 1 << 20
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


def check_deflated_size(source: Source, *, max_pixels: int) -> None:
    """Refuse a deflated DICOM whose data set inflates beyond what its own header and the budget allow.

    Files in any other transfer syntax (or not DICOM at all) pass untouched: pydicom reports those.

    Args:
        source: The file.
        max_pixels: Largest accepted ``rows * cols * frames * samples``.

    Raises:
        ImageTooLargeError: The header announces more than ``max_pixels`` samples, the pixel data does
            not start within the first :data:`HEADER_BYTES`, or the data set inflates beyond
            header + pixel data + :data:`SLACK_BYTES`.
        ImageReadError: The deflate stream is corrupt.
    """
    with source.open() as fp:
        if not _is_deflated(fp):
            return
        chunks = _inflate(fp, source.name)
        head = bytearray()
        for chunk in chunks:
            head += chunk
            if len(head) >= HEADER_BYTES:
                break
        else:
            return  # the whole data set fits in the head: small enough
        allowed = _allowed_size(bytes(head), source.name, max_pixels)
        total = len(head)
        for chunk in chain([b""], chunks):
            total += len(chunk)
            if total > allowed:
                raise ImageTooLargeError(
                    source.name,
                    f"deflated DICOM data set inflates beyond {allowed:,} bytes, more than its header "
                    "announces: refused before decoding (a decompression bomb?)",
                )


def _is_deflated(fp: BinaryIO) -> bool:
    """Whether the file meta says Deflated Explicit VR Little Endian; ``fp`` is left at the data set."""
    try:
        read_preamble(fp, True)
        meta = _read_file_meta_info(fp)
    except Exception:  # noqa: BLE001 - not DICOM or a broken meta header: dcmread reports it
        return False
    return meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian


def _inflate(fp: BinaryIO, name: str) -> Iterator[bytes]:
    """The inflated data set in chunks of at most 1 MiB (raw deflate, as PS3.5 A.5 writes it)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    while not inflater.eof:
        data = inflater.unconsumed_tail or fp.read(_CHUNK)
        try:
            out = inflater.decompress(data, _CHUNK)
        except zlib.error as exc:
            raise ImageReadError(name, f"corrupt deflated DICOM data set ({exc})") from exc
        if not out and not data:
            return  # truncated stream: pydicom reports it
        if out:
            yield out


def _allowed_size(head: bytes, name: str, max_pixels: int) -> int:
    """Header + pixel data + slack, from the header elements found in the first inflated bytes."""
    buffer = io.BytesIO(head)
    pixel_start: list[int] = []

    def at_pixels(tag: int, _vr: str | None, _length: int) -> bool:
        if tag in _PIXEL_TAGS:
            pixel_start.append(buffer.tell())
            return True
        return False

    try:
        ds = read_dataset(buffer, False, True, stop_when=at_pixels)
    except Exception:  # noqa: BLE001 - a header cut by the head, or corrupt: no pixel start found
        ds = Dataset()
    if not pixel_start:
        raise ImageTooLargeError(
            name,
            f"deflated DICOM data set longer than {HEADER_BYTES:,} bytes without pixel data in them: refused",
        )
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = max(int(ds.get("NumberOfFrames") or 1), 1)
        samples = max(int(ds.get("SamplesPerPixel") or 1), 1)
        bytes_per_sample = min(-(-max(int(ds.get("BitsAllocated") or 16), 1) // 8), 8)
    except (AttributeError, TypeError, ValueError, OverflowError):
        raise ImageReadError(name, "deflated DICOM image without valid Rows / Columns before its pixel data") from None
    check_dimensions(name, rows=rows, cols=cols, frames=frames, samples=samples, max_pixels=max_pixels, min_size=1)
    return pixel_start[0] + rows * cols * frames * samples * bytes_per_sample + SLACK_BYTES
