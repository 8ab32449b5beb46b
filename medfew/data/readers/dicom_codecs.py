"""Which installed decoder handles a DICOM transfer syntax (and which pip package to suggest when none does),
and the check of a compressed frame's own header against the DICOM header before it is decoded.

pydicom logs the traceback of every plugin that fails to decode a frame (at ERROR) and then raises;
medfew turns that into one ``UnsupportedCompressionError`` carrying the plugins' messages. Importing
this module adds a filter to pydicom's loggers that keeps those tracebacks off the console unless
the ``medfew`` logger is at DEBUG (``medfew -v``).
"""

from __future__ import annotations

import logging

import pydicom.uid as uids
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels.decoders.base import Decoder, get_decoder
from pydicom.uid import UID

from medfew.data.readers.codestream import CodestreamError, check_rle_header, read_frame_header
from medfew.data.readers.limits import check_dimensions
from medfew.errors import ImageReadError, ImageTooLargeError, UnsupportedCompressionError


class _TracebacksOnlyWhenVerbose(logging.Filter):
    """Drop pydicom's records that carry a traceback unless the ``medfew`` logger is at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.exc_info or logging.getLogger("medfew").isEnabledFor(logging.DEBUG)


_QUIET = _TracebacksOnlyWhenVerbose()
for _logger_name in ("pydicom", "pydicom.pixels.decoders.base"):
    logging.getLogger(_logger_name).addFilter(_QUIET)

_LIBJPEG = "pylibjpeg-libjpeg"
_OPENJPEG = "pylibjpeg-openjpeg"

# Transfer syntax -> the pip package(s) that decode it through pydicom's decoder plugins.
_PACKAGES: dict[str, str] = {
    uids.JPEGBaseline8Bit: f"{_LIBJPEG} (or pillow)",
    uids.JPEGExtended12Bit: f"{_LIBJPEG} (or python-gdcm)",
    uids.JPEGLossless: f"{_LIBJPEG} (or python-gdcm)",
    uids.JPEGLosslessSV1: f"{_LIBJPEG} (or python-gdcm)",
    uids.JPEGLSLossless: f"{_LIBJPEG} (or pyjpegls)",
    uids.JPEGLSNearLossless: f"{_LIBJPEG} (or pyjpegls)",
    uids.JPEG2000Lossless: _OPENJPEG,
    uids.JPEG2000: _OPENJPEG,
    uids.HTJ2KLossless: _OPENJPEG,
    uids.HTJ2KLosslessRPCL: _OPENJPEG,
    uids.HTJ2K: _OPENJPEG,
    uids.RLELossless: "pylibjpeg-rle (pydicom's own RLE decoder needs only numpy)",
}

# Transfer syntaxes pydicom 3.0 has no decoder for, by name, so the error can say what the file is.
_UNDECODABLE: dict[str, str] = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.4.100": "MPEG2 Main Profile / Main Level",
    "1.2.840.10008.1.2.4.101": "MPEG2 Main Profile / High Level",
    "1.2.840.10008.1.2.4.102": "MPEG-4 AVC/H.264 High Profile",
    "1.2.840.10008.1.2.4.103": "MPEG-4 AVC/H.264 BD-compatible High Profile",
    "1.2.840.10008.1.2.4.104": "MPEG-4 AVC/H.264 High Profile For 2D Video",
    "1.2.840.10008.1.2.4.105": "MPEG-4 AVC/H.264 High Profile For 3D Video",
    "1.2.840.10008.1.2.4.106": "MPEG-4 AVC/H.264 Stereo High Profile",
    "1.2.840.10008.1.2.4.107": "HEVC/H.265 Main Profile",
    "1.2.840.10008.1.2.4.108": "HEVC/H.265 Main 10 Profile",
    "1.2.840.10008.1.2.4.94": "JPIP Referenced",
    "1.2.840.10008.1.2.4.95": "JPIP Referenced Deflate",
}

_CONVERT = (
    "no pip package decodes it through pydicom; convert the file to an uncompressed transfer syntax "
    "first (e.g. dcmtk `dcmdjpeg` / `dcmdrle`, or `gdcmconv --raw`), or export frames with ffmpeg for video"
)


def transfer_syntax_label(uid: str) -> str:
    """``"<name> (<uid>)"`` for a transfer syntax UID, known to pydicom or not."""
    u = UID(uid)
    name = _UNDECODABLE.get(str(u)) or (u.name if u.name != str(u) else "unknown transfer syntax")
    return f"{name} ({u})"


def package_hint(uid: str) -> str:
    """The pip package(s) that would decode ``uid``, or how to convert the file when none does."""
    return f"pip install {_PACKAGES[uid]}" if uid in _PACKAGES else _CONVERT


def decoder_for(uid: str, name: str) -> Decoder:
    """The pydicom pixel data decoder for a transfer syntax, checked to have a working plugin.

    Args:
        uid: The Transfer Syntax UID.
        name: The file name, used in the error.

    Raises:
        UnsupportedCompressionError: When pydicom has no decoder for ``uid`` or none of its plugins
            is installed; the message names the transfer syntax and the package to install.
    """
    label = transfer_syntax_label(uid)
    try:
        decoder = get_decoder(UID(uid))
    except (NotImplementedError, ValueError) as exc:
        raise UnsupportedCompressionError(name, f"cannot decode transfer syntax {label}: {package_hint(uid)}") from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin"
        raise UnsupportedCompressionError(
            name,
            f"no installed decoder for transfer syntax {label} (missing: {missing}): {package_hint(uid)}",
        )
    return decoder


def decode_failure(uid: str, name: str, exc: BaseException) -> UnsupportedCompressionError:
    """The error for compressed pixel data that every installed plugin failed to decode."""
    detail = " ".join(str(exc).split())[:300]
    return UnsupportedCompressionError(
        name,
        f"could not decode {transfer_syntax_label(uid)} pixel data with the installed plugins ({detail}); "
        f"the data may be corrupt, or need another decoder: {package_hint(uid)}",
    )


def check_compressed_frame(ds: Dataset, index: int, *, n_frames: int, max_pixels: int, name: str) -> None:
    """Refuse compressed frame ``index`` unless its own header agrees with the DICOM header and the budget.

    The decoder allocates what the codestream declares, so a frame whose JPEG / JPEG-LS / JPEG 2000
    header announces more pixels than Rows x Columns (a decompression bomb) is refused here, before
    any decoding. RLE frames get their segment table checked.

    Args:
        ds: The data set (encapsulated *Pixel Data*, ``file_meta.TransferSyntaxUID`` set).
        index: The 0-based frame about to be decoded.
        n_frames: Frames in the data set.
        max_pixels: Largest accepted ``rows * cols * frames * samples``.
        name: The file name, used in errors.

    Raises:
        ImageTooLargeError: The codestream declares more than ``max_pixels`` samples.
        ImageReadError: Its size or component count differs from Rows / Columns / Samples per Pixel,
            or the encapsulation cannot be split into frames.
        UnsupportedCompressionError: Its header is missing or malformed (the data is corrupt).
    """
    uid = str(ds.file_meta.TransferSyntaxUID)
    rows, cols = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel") or 1)
    frame = _frame_bytes(ds, index, n_frames, name)
    try:
        if uid == uids.RLELossless:
            check_rle_header(frame, samples * -(-int(ds.get("BitsAllocated") or 8) // 8))
            return
        header = read_frame_header(frame)
        if header is None:
            raise CodestreamError(
                f"frame {index} starts with {frame[:4].hex(' ') or 'nothing'}, not a known codestream"
            )
    except CodestreamError as exc:
        raise decode_failure(uid, name, exc) from exc
    declared = f"{header.rows} x {header.cols} x {header.components} component(s)"
    try:
        check_dimensions(
            name,
            rows=header.rows,
            cols=header.cols,
            frames=n_frames,
            samples=header.components,
            max_pixels=max_pixels,
            min_size=1,
        )
    except ImageTooLargeError as exc:
        raise ImageTooLargeError(
            name,
            f"the {header.kind} codestream of frame {index} declares {declared}: {exc.reason}; refused before decoding",
        ) from exc
    if (header.rows, header.cols, header.components) != (rows, cols, samples):
        raise ImageReadError(
            name,
            f"the {header.kind} codestream of frame {index} declares {declared}, but the DICOM header says "
            f"{rows} x {cols} x {samples} sample(s): refused before decoding",
        )


def _frame_bytes(ds: Dataset, index: int, n_frames: int, name: str) -> bytes:
    """The encapsulated bytes of frame ``index``, split as pydicom's decoders split them."""
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        return get_frame(ds.PixelData, index, extended_offsets=extended, number_of_frames=n_frames)
    except (ValueError, TypeError, KeyError, IndexError, EOFError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ImageReadError(
            name,
            f"malformed encapsulated pixel data: cannot find frame {index} ({detail})",
        ) from exc
