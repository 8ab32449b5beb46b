"""Recognise an image file's format from its content (magic bytes), never from its extension."""

from __future__ import annotations

import gzip
import struct
import zipfile
from pathlib import Path

from medfew.data.readers.source import Source
from medfew.errors import ImageReadError

FORMATS: tuple[str, ...] = ("dicom", "png", "jpeg", "tiff", "bmp", "nifti", "npz")
"""Every value :func:`sniff_format` can return."""

_HEAD_BYTES = 1024

# Explicit-VR codes, to recognise a DICOM data set written without the 128-byte preamble and "DICM".
_VRS = frozenset(b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH".split()) | frozenset(
    b"SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)

# Formats Pillow or others know that medfew does not accept: named in the error so the user can convert.
_UNSUPPORTED: tuple[tuple[int, bytes, str], ...] = (
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000 (JP2)"),
    (0, b"\xff\x4f\xff\x51", "raw JPEG 2000 codestream"),
    (0, b"%PDF", "PDF"),
    (0, b"NRRD", "NRRD"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypavif", "AVIF"),
)


def sniff_format(path_or_bytes: str | Path | bytes | bytearray | memoryview) -> str:
    """Tell an image file's format from its first bytes.

    Args:
        path_or_bytes: A file path, or the file's content.

    Returns:
        One of ``"dicom"``, ``"png"``, ``"jpeg"``, ``"tiff"``, ``"bmp"``, ``"nifti"`` (``.nii`` or
        ``.nii.gz``, NIfTI-1 or NIfTI-2) or ``"npz"`` (a NumPy ``.npz`` archive).

    Raises:
        ImageReadError: When the file is missing or empty, or its content is none of these formats
            (the message names the format when it is a known one medfew does not read, such as GIF).
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        source = Source.from_bytes(path_or_bytes, "<bytes>")
    else:
        source = Source.from_path(path_or_bytes)
    return sniff_source(source)


def sniff_source(source: Source) -> str:
    """:func:`sniff_format` for a :class:`Source`."""
    head = source.head(_HEAD_BYTES)
    fmt = _sniff_head(head)
    if fmt == "zip":
        if _is_npz(source):
            return "npz"
        raise ImageReadError(source.name, "a ZIP archive that is not a NumPy .npz (no .npy member): not an image")
    if fmt == "gzip":
        if _is_gzipped_nifti(source):
            return "nifti"
        raise ImageReadError(source.name, "gzip-compressed data that is not NIfTI: not an image")
    if fmt is not None:
        return fmt
    for offset, magic, label in _UNSUPPORTED:
        if head[offset : offset + len(magic)] == magic:
            raise ImageReadError(source.name, f"{label} files are not supported: convert to PNG, TIFF or DICOM")
    raise ImageReadError(
        source.name,
        f"not a recognised image format (first bytes {head[:8].hex(' ')}); expected one of {', '.join(FORMATS)}",
    )


def _sniff_head(head: bytes) -> str | None:
    """Format from the first bytes, ``"zip"``/``"gzip"`` for containers that need a closer look."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if _is_bmp(head):
        return "bmp"
    if _is_nifti_header(head):
        return "nifti"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if _is_raw_dicom(head):
        return "dicom"
    return None


def _is_bmp(head: bytes) -> bool:
    # "BM", then the DIB header size at offset 14 is one of the few defined values.
    if len(head) < 18 or not head.startswith(b"BM"):
        return False
    (dib_size,) = struct.unpack_from("<I", head, 14)
    return dib_size in (12, 16, 40, 52, 56, 64, 108, 124)


def _is_nifti_header(head: bytes) -> bool:
    if len(head) >= 348:
        for order in "<>":
            (size,) = struct.unpack_from(f"{order}i", head, 0)
            if size == 348 and head[344:348] == b"n+1\x00":
                return True
    if len(head) >= 12:
        for order in "<>":
            (size,) = struct.unpack_from(f"{order}i", head, 0)
            if size == 540 and head[4:8] == b"n+2\x00":
                return True
    return False


def _is_raw_dicom(head: bytes) -> bool:
    """A DICOM data set without preamble: starts with a group 0002 or 0008 element, little endian."""
    if len(head) < 8:
        return False
    group, element = struct.unpack_from("<HH", head, 0)
    if group not in (0x0002, 0x0008) or element > 0x0100:
        return False
    if head[4:6] in _VRS:  # explicit VR
        return True
    (length,) = struct.unpack_from("<I", head, 4)  # implicit VR: a plausible element length
    return length < 0x10000 and length % 2 == 0


def _is_npz(source: Source) -> bool:
    try:
        with source.open() as fp, zipfile.ZipFile(fp) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError):
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)


def _is_gzipped_nifti(source: Source) -> bool:
    try:
        with source.open() as fp, gzip.GzipFile(fileobj=fp) as gz:
            head = gz.read(_HEAD_BYTES)
    except (OSError, EOFError, gzip.BadGzipFile):
        return False
    return _is_nifti_header(head)


def is_gzip(source: Source) -> bool:
    """Whether the content is gzip-compressed (a ``.nii.gz``)."""
    return source.head(2) == b"\x1f\x8b"


__all__ = ["FORMATS", "is_gzip", "sniff_format", "sniff_source"]
