"""Hostile DICOM files built in tmp_path: deflate bombs, lying codestreams, malformed LUTs, NaN rescales.

Each is refused with a typed error naming the file and the reason, before the expensive step
(inflating or decoding) would run; memory-boundedness is asserted by the refusal and its reason.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from synthetic import dicom_dataset, save_dicom

from medfew.data.readers import load_image, load_image_bytes
from medfew.data.readers.codestream import FrameHeader, read_frame_header
from medfew.diagnosis import expand_class_zip, load_input
from medfew.errors import ImageReadError, ImageTooLargeError, UnsupportedCompressionError

# --- builders ---------------------------------------------------------------------------------------


def deflated_dicom(ds: Dataset, tail: bytes = b"", zeros: int = 0) -> bytes:
    """``ds`` as a Deflated Explicit VR Little Endian file, its data set followed by ``tail`` and ``zeros`` zero bytes.

    The zeros are fed to zlib a MiB at a time, so a bomb of any inflated size is cheap to build.
    """
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = DicomBytesIO()
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [b"\0" * 128, b"DICM", meta.getvalue(), deflate.compress(body.getvalue() + tail)]
    block = bytes(1 << 20)
    parts += [deflate.compress(block) for _ in range(zeros >> 20)]
    parts.append(deflate.flush())
    return b"".join(parts)


def element_header(group: int, element: int, vr: bytes, length: int) -> bytes:
    """An explicit VR little endian header of a long-VR element (OB, OW, UN...)."""
    return struct.pack("<HH2sHI", group, element, vr, 0, length)


BOMB_BYTES = 16 << 20  # four times the 4 MiB header window: inflating it all would be the bomb


def encapsulated(frame: bytes, transfer_syntax: str, rows: int = 32, cols: int = 32, **attributes: object) -> Dataset:
    """An 8-bit monochrome data set of ``rows x cols`` whose one frame is ``frame``."""
    ds = dicom_dataset(np.zeros((rows, cols), dtype=np.uint8))
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    for key, value in attributes.items():
        setattr(ds, key, value)
    return ds


def j2k_codestream(rows: int = 32, cols: int = 32) -> bytes:
    """A real JPEG 2000 lossless codestream of a ``rows x cols`` uint8 ramp (pylibjpeg-openjpeg)."""
    pixels = (np.arange(rows * cols) % 251).astype(np.uint8).reshape(rows, cols)
    ds = dicom_dataset(pixels)
    ds.compress(JPEG2000Lossless, pixels, encoding_plugin="pylibjpeg")
    return get_frame(ds.PixelData, 0, number_of_frames=1)


def with_siz(codestream: bytes, rows: int, cols: int) -> bytes:
    """The codestream with its SIZ marker saying ``rows x cols`` (offsets at 0)."""
    assert codestream[:4] == b"\xff\x4f\xff\x51"
    return codestream[:8] + struct.pack(">IIII", cols, rows, 0, 0) + codestream[24:]


def jpeg_codestream(rows: int = 32, cols: int = 32, progressive: bool = False) -> bytes:
    """A real baseline (or progressive) JPEG of a ``rows x cols`` grey ramp, from Pillow."""
    pixels = (np.arange(rows * cols) % 251).astype(np.uint8).reshape(rows, cols)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95, progressive=progressive)
    return buffer.getvalue()


def with_sof(codestream: bytes, rows: int, cols: int) -> bytes:
    """The JPEG with the height and width of its first SOFn frame header replaced."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = codestream.find(marker)
        if at > 0:
            return codestream[: at + 5] + struct.pack(">HH", rows, cols) + codestream[at + 9 :]
    raise AssertionError("no SOF0 / SOF2 in the test JPEG")


def hand_made_sof(marker: int, rows: int, cols: int, components: int = 1) -> bytes:
    """SOI, an APP0-like segment, a SOFn header and EOI: enough for the header check (no scan)."""
    app = b"\xff\xe0" + struct.pack(">H", 6) + b"test"
    specs = b"".join(bytes([i + 1, 0x11, 0]) for i in range(components))
    sof = struct.pack(">BBHBHHB", 0xFF, marker, 8 + 3 * components, 8, rows, cols, components) + specs
    return b"\xff\xd8" + app + sof + b"\xff\xd9"


def jp2_file(codestream: bytes) -> bytes:
    """A JP2 file: signature, file type, an (empty) header box and the contiguous codestream box."""
    ftyp = struct.pack(">I4s4sI4s", 20, b"ftyp", b"jp2 ", 0, b"jp2 ")
    jp2h = struct.pack(">I4s", 8, b"jp2h")
    jp2c = struct.pack(">I4s", 8 + len(codestream), b"jp2c") + codestream
    return b"\x00\x00\x00\x0cjP  \r\n\x87\n" + ftyp + jp2h + jp2c


# --- 1. deflate bombs -----------------------------------------------------------------------------------


def test_deflated_dicom_within_its_header_reads_as_before(tmp_path: Path) -> None:
    stored = (np.arange(16 * 16, dtype=np.uint16) % 4096).reshape(16, 16)
    reference = load_image(save_dicom(dicom_dataset(stored), tmp_path / "plain.dcm"))
    path = tmp_path / "deflated.dcm"
    path.write_bytes(deflated_dicom(dicom_dataset(stored)))
    np.testing.assert_array_equal(load_image(path), reference)


def test_deflated_dicom_larger_than_the_header_window_still_reads(tmp_path: Path) -> None:
    frames = (np.arange(3 * 1024 * 1024, dtype=np.uint32) % 4096).astype(np.uint16).reshape(3, 1024, 1024)
    path = tmp_path / "big_deflated.dcm"
    path.write_bytes(deflated_dicom(dicom_dataset(frames, bits_stored=12)))  # 6 MiB of pixels, over the 4 MiB head
    out = load_image(path, frame=-1)
    assert out.shape == (1, 1024, 1024) and out.max() == 1.0


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("trailing padding after the pixels", r"inflates beyond [\d,]+ bytes, more than its header announces"),
        ("pixel data longer than Rows x Columns", r"inflates beyond [\d,]+ bytes, more than its header announces"),
        ("a huge element before the pixels", r"longer than 4,194,304 bytes without pixel data in them"),
    ],
)
def test_deflate_bomb_is_refused_before_inflating(tmp_path: Path, where: str, reason: str) -> None:
    ds = dicom_dataset()  # 16 x 16: 512 bytes of pixels
    if where.startswith("trailing"):
        tail = element_header(0xFFFC, 0xFFFC, b"OB", BOMB_BYTES)
    elif where.startswith("pixel"):
        del ds.PixelData
        tail = element_header(0x7FE0, 0x0010, b"OW", BOMB_BYTES)
    else:
        del ds.PixelData
        tail = element_header(0x7FDF, 0x1010, b"OB", BOMB_BYTES)  # (the pixels would follow it)
    data = deflated_dicom(ds, tail, BOMB_BYTES)
    assert len(data) < BOMB_BYTES // 200  # a few tens of KB that would inflate to 16 MiB
    path = tmp_path / "bomb.dcm"
    path.write_bytes(data)
    with pytest.raises(ImageTooLargeError, match=rf"bomb\.dcm: deflated DICOM data set {reason}"):
        load_image(path)
    with pytest.raises(ImageTooLargeError, match=r"upload\.dcm: deflated DICOM"):
        load_image_bytes(data, "upload.dcm")


def test_deflated_header_above_the_pixel_budget_is_refused(tmp_path: Path) -> None:
    ds = dicom_dataset(Rows=4000, Columns=4000)  # the header lies too: 16 x 16 pixels present
    path = tmp_path / "big.dcm"
    path.write_bytes(deflated_dicom(ds, element_header(0xFFFC, 0xFFFC, b"OB", BOMB_BYTES), BOMB_BYTES))
    with pytest.raises(ImageTooLargeError, match=r"big\.dcm: image too large: 4000 x 4000 .*max_pixels=1,000,000"):
        load_image(path, max_pixels=1_000_000)


def test_zip_upload_holding_a_deflate_bomb_names_the_file() -> None:
    bomb = deflated_dicom(dicom_dataset(), element_header(0xFFFC, 0xFFFC, b"OB", BOMB_BYTES), BOMB_BYTES)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("Rare/bomb.dcm", bomb)
        archive.writestr("Normal/ok.dcm", deflated_dicom(dicom_dataset()))
    members, problems = expand_class_zip(buffer.getvalue(), "cases.zip")
    assert problems == [] and [m.name for m in members] == ["cases.zip/Rare/bomb.dcm", "cases.zip/Normal/ok.dcm"]
    with pytest.raises(ImageTooLargeError, match=r"^cases\.zip/Rare/bomb\.dcm: deflated DICOM data set inflates"):
        load_input(members[0].data, members[0].name)
    assert load_input(members[1].data, members[1].name).pixels.shape == (1, 16, 16)


# --- 1. codestreams that say more than the header -------------------------------------------------------------


def test_codestream_headers_are_parsed() -> None:
    assert read_frame_header(j2k_codestream(32, 48)) == FrameHeader("JPEG 2000", 32, 48, 1)
    assert read_frame_header(jp2_file(j2k_codestream(32, 48))) == FrameHeader("JPEG 2000", 32, 48, 1)
    assert read_frame_header(jpeg_codestream(16, 24)) == FrameHeader("baseline JPEG", 16, 24, 1)
    assert read_frame_header(jpeg_codestream(16, 24, progressive=True)).kind == "progressive JPEG"
    assert read_frame_header(hand_made_sof(0xC3, 40, 50, 3)) == FrameHeader("lossless JPEG", 40, 50, 3)
    assert read_frame_header(hand_made_sof(0xF7, 40, 50)) == FrameHeader("JPEG-LS", 40, 50, 1)
    assert read_frame_header(b"\x00\x00\x01\xb3video") is None


def test_real_codestreams_still_decode(tmp_path: Path) -> None:
    jpeg = save_dicom(encapsulated(jpeg_codestream(), JPEGBaseline8Bit), tmp_path / "jpeg.dcm")
    j2k = save_dicom(encapsulated(j2k_codestream(), JPEG2000Lossless), tmp_path / "j2k.dcm")
    assert load_image(jpeg).shape == (1, 32, 32)
    ramp = (np.arange(32 * 32) % 251).reshape(32, 32)
    np.testing.assert_allclose(load_image(j2k)[0], (ramp - ramp.min()) / (ramp.max() - ramp.min()), atol=1e-6)


def test_jpeg2000_bomb_declaring_20000_squared_is_refused_before_decoding(tmp_path: Path) -> None:
    frame = with_siz(j2k_codestream(), 20000, 20000)
    path = save_dicom(encapsulated(frame, JPEG2000Lossless, rows=64, cols=64), tmp_path / "j2k_bomb.dcm")
    assert path.stat().st_size < 10_000
    with pytest.raises(
        ImageTooLargeError,
        match=r"j2k_bomb\.dcm: the JPEG 2000 codestream of frame 0 declares 20000 x 20000 x 1 component\(s\): "
        r"image too large.*refused before decoding",
    ):
        load_image(path)


@pytest.mark.parametrize(
    ("label", "frame", "syntax", "kind"),
    [
        pytest.param("j2k", with_siz(j2k_codestream(), 64, 64), JPEG2000Lossless, "JPEG 2000", id="j2k"),
        pytest.param("jp2", jp2_file(with_siz(j2k_codestream(), 64, 64)), JPEG2000Lossless, "JPEG 2000", id="jp2"),
        pytest.param("jpeg", with_sof(jpeg_codestream(), 64, 64), JPEGBaseline8Bit, "baseline JPEG", id="jpeg"),
        pytest.param(
            "progressive",
            with_sof(jpeg_codestream(progressive=True), 64, 64),
            JPEGBaseline8Bit,
            "progressive JPEG",
            id="progressive",
        ),
        pytest.param("lossless", hand_made_sof(0xC3, 64, 64), JPEGLosslessSV1, "lossless JPEG", id="lossless"),
        pytest.param("jpegls", hand_made_sof(0xF7, 64, 64), JPEGLSLossless, "JPEG-LS", id="jpegls"),
    ],
)
def test_codestream_larger_than_rows_columns_is_refused(
    tmp_path: Path, label: str, frame: bytes, syntax: str, kind: str
) -> None:
    path = save_dicom(encapsulated(frame, syntax), tmp_path / f"{label}.dcm")
    pattern = rf"{label}\.dcm: the {kind} codestream of frame 0 declares 64 x 64 x 1 component\(s\), but the DICOM "
    with pytest.raises(ImageReadError, match=pattern + r"header says 32 x 32 x 1 sample\(s\): refused before decoding"):
        load_image(path)
    with pytest.raises(ImageTooLargeError, match=rf"{label}\.dcm: the {kind} codestream .* above the limit"):
        load_image(path, max_pixels=2000)  # 32 x 32 passes, the codestream's 64 x 64 does not


def test_every_frame_is_checked_before_it_is_decoded(tmp_path: Path) -> None:
    good, liar = j2k_codestream(), with_siz(j2k_codestream(), 64, 64)
    ds = encapsulated(good, JPEG2000Lossless, NumberOfFrames=2)
    ds.PixelData = encapsulate([good, liar])
    path = save_dicom(ds, tmp_path / "frames.dcm")
    assert load_image(path, frame=0).shape == (1, 32, 32)
    with pytest.raises(ImageReadError, match=r"codestream of frame 1 declares 64 x 64"):
        load_image(path, frame="max")


def test_codestream_with_another_component_count_is_refused(tmp_path: Path) -> None:
    path = save_dicom(encapsulated(hand_made_sof(0xC3, 32, 32, 3), JPEGLosslessSV1), tmp_path / "rgb.dcm")
    with pytest.raises(
        ImageReadError, match=r"declares 32 x 32 x 3 component\(s\), but the DICOM header says 32 x 32 x 1"
    ):
        load_image(path)


def test_jpeg_without_frame_header_is_corrupt(tmp_path: Path) -> None:
    frame = b"\xff\xd8\xff\xe0\x00\x06test\xff\xda\x00\x08" + b"\x00" * 20
    path = save_dicom(encapsulated(frame, JPEGBaseline8Bit), tmp_path / "nosof.dcm")
    with pytest.raises(UnsupportedCompressionError, match=r"nosof\.dcm: .*JPEG scan before any frame header"):
        load_image(path)


def test_rle_segment_table_is_checked(tmp_path: Path) -> None:
    stored = (np.arange(256, dtype=np.uint16) % 4096).reshape(16, 16)
    ds = dicom_dataset(stored)
    ds.compress(RLELossless, stored)
    frame = bytearray(get_frame(ds.PixelData, 0, number_of_frames=1))
    frame[0:4] = struct.pack("<I", 15)  # 15 segments for a 1-sample 16-bit image (2 expected)
    ds.PixelData = encapsulate([bytes(frame)])
    path = save_dicom(ds, tmp_path / "rle.dcm")
    with pytest.raises(
        ImageReadError, match=r"rle\.dcm: .*RLE header lists 15 segment\(s\), the DICOM header implies 2"
    ):
        load_image(path)


# --- 4. malformed attributes become ImageReadError ------------------------------------------------------------


def _lut_item(descriptor: list[int] | None, data: list[int] | None, **attributes: object) -> Dataset:
    item = Dataset()
    if descriptor is not None:
        item.LUTDescriptor = descriptor
    if data is not None:
        item.add_new(0x00283006, "US", data)
    for key, value in attributes.items():
        setattr(item, key, value)
    return item


def _palette(ds: Dataset, entries: int | None) -> None:
    ds.PhotometricInterpretation = "PALETTE COLOR"
    if entries is None:
        return
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 8])
        setattr(ds, f"{colour}PaletteColorLookupTableData", bytes(range(entries)))


MALFORMED = {
    "palette_without_lut": (lambda ds: _palette(ds, None), r"cannot apply the palette colour lookup table"),
    "palette_short_lut": (lambda ds: _palette(ds, 10), r"cannot apply the palette colour lookup table"),
    "modality_lut_without_data": (
        lambda ds: setattr(ds, "ModalityLUTSequence", Sequence([_lut_item([256, 0, 16], None, ModalityLUTType="HU")])),
        r"cannot apply the Modality LUT \(KeyError",
    ),
    "modality_lut_short_descriptor": (
        lambda ds: setattr(ds, "ModalityLUTSequence", Sequence([_lut_item([256, 0], [1, 2, 3])])),
        r"cannot apply the Modality LUT \(IndexError",
    ),
    "modality_lut_empty_item": (
        lambda ds: setattr(ds, "ModalityLUTSequence", Sequence([Dataset()])),
        r"cannot apply the Modality LUT \(AttributeError",
    ),
    "voi_lut_without_data": (
        lambda ds: setattr(ds, "VOILUTSequence", Sequence([_lut_item([256, 0, 16], None)])),
        r"cannot apply the VOI LUT / window \(KeyError",
    ),
    "voi_lut_short_descriptor": (
        lambda ds: setattr(ds, "VOILUTSequence", Sequence([_lut_item([256], [1, 2])])),
        r"cannot apply the VOI LUT / window \(TypeError",
    ),
    "voi_lut_short_data": (
        lambda ds: setattr(ds, "VOILUTSequence", Sequence([_lut_item([4, 0, 16], [1, 2])])),
        r"cannot apply the VOI LUT / window \(IndexError",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_lookup_tables_are_typed_errors(tmp_path: Path, case: str) -> None:
    mutate, reason = MALFORMED[case]
    ds = dicom_dataset(np.arange(256, dtype=np.uint8).reshape(16, 16))
    mutate(ds)
    path = save_dicom(ds, tmp_path / f"{case}.dcm")
    with pytest.raises(ImageReadError, match=rf"^{tmp_path}/{case}\.dcm: {reason}"):
        load_image(path)


@pytest.mark.parametrize(
    ("keyword", "text"),
    [("RescaleSlope", b"abc "), ("RescaleSlope", b"nan "), ("RescaleSlope", b"inf "), ("RescaleIntercept", b"NaN ")],
)
def test_non_numeric_or_non_finite_rescale_is_refused(tmp_path: Path, keyword: str, text: bytes) -> None:
    # pydicom will not write an invalid DS: write a placeholder and patch the bytes in place.
    ds = dicom_dataset(RescaleSlope=1, RescaleIntercept=0)
    setattr(ds, keyword, "7.25")
    path = save_dicom(ds, tmp_path / "rescale.dcm")
    data = path.read_bytes()
    assert data.count(b"7.25") == 1
    path.write_bytes(data.replace(b"7.25", text))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid DS value itself
        with pytest.raises(
            ImageReadError, match=rf"rescale\.dcm: {keyword} '{text.decode().strip()}' is not a finite number"
        ):
            load_image(path)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_float_pixels_without_a_finite_value_are_refused(tmp_path: Path, value: float) -> None:
    ds = dicom_dataset()
    del ds.PixelData, ds.PixelRepresentation
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    ds.FloatPixelData = np.full((16, 16), value, dtype=np.float32).tobytes()
    path = save_dicom(ds, tmp_path / "float.dcm")
    with pytest.raises(ImageReadError, match=r"float\.dcm: no finite pixel value \(all NaN or infinite\)"):
        load_image(path)


def test_all_nan_npz_volume_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "volume.npz"
    np.savez(path, image=np.full((16, 16, 4), np.nan, dtype=np.float32))
    with pytest.raises(ImageReadError, match=r"volume\.npz: no finite pixel value"):
        load_image(path)


# --- 4. pydicom's plugin tracebacks stay off the console unless --verbose ------------------------------------------


def test_decoder_tracebacks_only_under_verbose(tmp_path: Path) -> None:
    jpeg = jpeg_codestream()
    sos = jpeg.index(b"\xff\xda")
    broken = jpeg[: sos + 7] + b"\x05" + jpeg[sos + 8 :]  # a sequential scan starting at 5: libjpeg refuses it
    # 12-bit JPEG Extended: only pylibjpeg-libjpeg takes it (Pillow, which tolerates the broken scan, does not)
    ds = encapsulated(broken, JPEGExtended12Bit, BitsAllocated=16, BitsStored=12, HighBit=11)
    save_dicom(ds, tmp_path / "scans" / "broken.dcm")
    command = [sys.executable, "-m", "medfew", "data", "inspect", str(tmp_path / "scans")]
    quiet = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert "broken.dcm: could not decode JPEG Extended" in quiet.stdout
    assert "Traceback" not in quiet.stderr, quiet.stderr
    verbose = subprocess.run(
        command[:3] + ["-v"] + command[3:], capture_output=True, text=True, timeout=120, check=False
    )
    assert "Traceback" in verbose.stderr


def test_app_zip_upload_refuses_the_bomb_by_name_and_keeps_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The clinician app's own upload path (Workspace.add_uploads, as the Streamlit page calls it)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "apps" / "clinician"))
    from workspace import Workspace

    from medfew.diagnosis import DiagnosisSession

    workspace = Workspace(DiagnosisSession("default"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "Rare/bomb.dcm",
            deflated_dicom(dicom_dataset(), element_header(0xFFFC, 0xFFFC, b"OB", BOMB_BYTES), BOMB_BYTES),
        )
        archive.writestr("Normal/ok.dcm", deflated_dicom(dicom_dataset()))
    problems = workspace.add_uploads([("cases.zip", buffer.getvalue())], None)
    assert len(problems) == 1 and problems[0].startswith("cases.zip/Rare/bomb.dcm: deflated DICOM data set inflates")
    assert [view.name for view in workspace.views] == ["cases.zip/Normal/ok.dcm"]
