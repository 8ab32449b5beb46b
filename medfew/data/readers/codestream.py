"""The dimensions a compressed frame's own header declares (JPEG, JPEG-LS, JPEG 2000, RLE), read before decoding.

A decoder allocates what the *codestream* says, not what the DICOM header says: a 4 KB JPEG 2000
frame in a file whose Rows / Columns say 64 x 64 can announce 20000 x 20000 and cost gigabytes to
decode. :func:`read_frame_header` parses the few header bytes that fix the decoded size:

* JPEG (ISO 10918-1) and JPEG-LS (ISO 14495-1): the SOFn frame header (baseline, extended,
  progressive, lossless; SOF55 ``FFF7`` for JPEG-LS), found by walking the marker segments after SOI;
* JPEG 2000 and HTJ2K (ISO 15444-1 / -15): the SIZ marker right after SOC, also inside the
  contiguous codestream box (``jp2c``) of a JP2 file;

and :func:`check_rle_header` checks the 64-byte header of a DICOM RLE frame (PS3.5 G.5).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import pairwise

JPEG_SOI = b"\xff\xd8"
J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"

# SOFn marker -> kind of JPEG process; C4 (DHT), C8 (JPG) and CC (DAC) are not frame headers.
_SOF_KINDS: dict[int, str] = {
    0xC0: "baseline JPEG",
    0xC1: "extended JPEG",
    0xC2: "progressive JPEG",
    0xC3: "lossless JPEG",
    0xC5: "differential JPEG",
    0xC6: "differential progressive JPEG",
    0xC7: "differential lossless JPEG",
    0xC9: "extended arithmetic JPEG",
    0xCA: "progressive arithmetic JPEG",
    0xCB: "lossless arithmetic JPEG",
    0xCD: "differential arithmetic JPEG",
    0xCE: "differential progressive arithmetic JPEG",
    0xCF: "differential lossless arithmetic JPEG",
    0xF7: "JPEG-LS",
}
# Markers without a length field: TEM, RST0-7, SOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8})
_MAX_JP2_BOXES = 64


class CodestreamError(ValueError):
    """A compressed frame whose header is missing or malformed (the message says what is wrong)."""


@dataclass(frozen=True)
class FrameHeader:
    """What a compressed frame's header says it decodes to.

    Attributes:
        kind: The coding, e.g. ``"baseline JPEG"``, ``"JPEG-LS"``, ``"JPEG 2000"``.
        rows: Image height in pixels.
        cols: Image width in pixels.
        components: Number of components (samples per pixel).
    """

    kind: str
    rows: int
    cols: int
    components: int


def read_frame_header(frame: bytes) -> FrameHeader | None:
    """The size a JPEG, JPEG-LS or JPEG 2000 frame declares, from its header bytes only.

    Args:
        frame: One frame of encapsulated pixel data (its fragments joined).

    Returns:
        The declared size, or ``None`` when the bytes start like none of these codestreams.

    Raises:
        CodestreamError: The frame starts like one of them but its header is truncated or malformed.
    """
    if frame.startswith(JPEG_SOI):
        return _jpeg_header(frame)
    if frame.startswith(J2K_SOC_SIZ):
        return _j2k_header(frame, 0)
    if frame.startswith(JP2_SIGNATURE):
        return _j2k_header(frame, _jp2_codestream_offset(frame))
    return None


def check_rle_header(frame: bytes, segments: int) -> None:
    """Check a DICOM RLE frame header: ``segments`` segments, offsets increasing inside the frame.

    Args:
        frame: One RLE frame.
        segments: Segments the DICOM header implies (samples per pixel x bytes per sample).

    Raises:
        CodestreamError: A short header, another segment count, or an offset out of order or bounds.
    """
    if len(frame) < 64:
        raise CodestreamError(f"RLE frame of {len(frame)} bytes is shorter than its 64-byte header")
    count, *offsets = struct.unpack_from("<16I", frame, 0)
    if count != segments:
        raise CodestreamError(f"RLE header lists {count} segment(s), the DICOM header implies {segments}")
    used = offsets[:count]
    if used and used[0] != 64:
        raise CodestreamError(f"RLE segment 0 starts at byte {used[0]}, expected 64")
    if any(b <= a for a, b in pairwise(used)) or (used and used[-1] >= len(frame)):
        raise CodestreamError(f"RLE segment offsets {used} are out of order or beyond the frame ({len(frame)} bytes)")


def _jpeg_header(data: bytes) -> FrameHeader:
    """Walk the marker segments after SOI to the first SOFn (or SOF55) frame header."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise CodestreamError(f"JPEG marker expected at byte {i}, found 0x{data[i]:02X}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or SOS before any frame header
            raise CodestreamError(f"JPEG {'scan' if marker == 0xDA else 'end'} before any frame header (SOF)")
        (length,) = struct.unpack_from(">H", data, i + 2)
        if length < 2:
            raise CodestreamError(f"JPEG marker 0xFF{marker:02X} at byte {i} has an invalid length {length}")
        if marker in _SOF_KINDS:
            if length < 8 or i + 10 > len(data):
                raise CodestreamError(f"truncated {_SOF_KINDS[marker]} frame header")
            _precision, rows, cols, components = struct.unpack_from(">BHHB", data, i + 4)
            return FrameHeader(_SOF_KINDS[marker], rows, cols, components)
        i += 2 + length
    raise CodestreamError("no JPEG frame header (SOF) found")


def _j2k_header(data: bytes, start: int) -> FrameHeader:
    """The image size of the SIZ marker segment of a J2K codestream starting at ``start``."""
    if data[start : start + 4] != J2K_SOC_SIZ:
        raise CodestreamError("JPEG 2000 codestream does not start with SOC + SIZ markers")
    if start + 42 > len(data):
        raise CodestreamError("truncated JPEG 2000 SIZ marker segment")
    (lsiz, _rsiz, xsiz, ysiz, xosiz, yosiz) = struct.unpack_from(">HHIIII", data, start + 4)
    (csiz,) = struct.unpack_from(">H", data, start + 40)
    if lsiz != 38 + 3 * csiz or csiz == 0:
        raise CodestreamError(f"JPEG 2000 SIZ segment length {lsiz} does not fit its {csiz} component(s)")
    if xosiz >= xsiz or yosiz >= ysiz:
        raise CodestreamError(f"JPEG 2000 image offset ({xosiz}, {yosiz}) outside its grid ({xsiz}, {ysiz})")
    return FrameHeader("JPEG 2000", ysiz - yosiz, xsiz - xosiz, csiz)


def _jp2_codestream_offset(data: bytes) -> int:
    """Where the contiguous codestream box (``jp2c``) of a JP2 file starts its content."""
    i = 0
    for _ in range(_MAX_JP2_BOXES):
        if i + 8 > len(data):
            break
        length, box = struct.unpack_from(">I4s", data, i)
        header = 8
        if length == 1:  # 64-bit XLBox follows
            if i + 16 > len(data):
                break
            (length,) = struct.unpack_from(">Q", data, i + 8)
            header = 16
        if box == b"jp2c":
            return i + header
        if length == 0 or length < header:  # "to the end of the file" or invalid, and not jp2c
            break
        i += length
    raise CodestreamError("JP2 file without a contiguous codestream box (jp2c)")
