"""Which installed decoder handles a DICOM transfer syntax, and which pip package to suggest when none does."""

from __future__ import annotations

import pydicom.uid as uids
from pydicom.pixels.decoders.base import Decoder, get_decoder
from pydicom.uid import UID

from medfew.errors import UnsupportedCompressionError

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
        raise UnsupportedCompressionError(
            name, f"cannot decode transfer syntax {label}: {package_hint(uid)}"
        ) from exc
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
