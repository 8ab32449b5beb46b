"""DICOM pixel reading on synthetic files written with pydicom into tmp_path."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import (
    EnhancedMRImageStorage,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
)
from synthetic import dicom_dataset, save_dicom

from medfew.data.readers import WINDOW_PRESETS, Window, load_image, load_image_bytes, sniff_format
from medfew.errors import (
    ConfigError,
    ImageReadError,
    ImageTooLargeError,
    ImageTooSmallError,
    UnsupportedCompressionError,
)


def hu_ramp(rows: int = 16, cols: int = 16) -> np.ndarray:
    """int16 stored values 0, 10, 20, ... (row-major)."""
    return (np.arange(rows * cols, dtype=np.int16) * 10).reshape(rows, cols)


def linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR, scaled to [0, 1] (independent of the reader's code)."""
    y = (np.asarray(x, dtype=np.float64) - (center - 0.5)) / (width - 1) + 0.5
    return np.clip(y, 0.0, 1.0)


# --- Modality LUT and VOI -----------------------------------------------------------------------


def test_ct_rescale_then_explicit_window_gives_hounsfield_mapping(tmp_path: Path) -> None:
    stored = hu_ramp()
    ds = dicom_dataset(stored, RescaleSlope=2, RescaleIntercept=-1024)
    path = save_dicom(ds, tmp_path / "ct.dcm")
    out = load_image(path, window=Window(40, 400))
    hu = stored.astype(np.float64) * 2 - 1024
    assert out.shape == (1, 16, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], linear_window(hu, 40, 400), atol=1e-6)
    # air (-1024 HU) is black, bone (>240 HU) white, 40 HU is mid-grey
    assert out[0, 0, 0] == 0.0
    assert out[0, -1, -1] == 1.0
    mid = np.unravel_index(np.argmin(np.abs(hu - 40)), hu.shape)
    assert out[0][mid] == pytest.approx(0.5, abs=0.02)


def test_preset_names_equal_their_windows(tmp_path: Path) -> None:
    path = save_dicom(dicom_dataset(hu_ramp(), RescaleSlope=1, RescaleIntercept=-1024), tmp_path / "ct.dcm")
    assert WINDOW_PRESETS["lung"] == Window(-600, 1500)
    assert WINDOW_PRESETS["soft_tissue"] == Window(40, 400)
    assert WINDOW_PRESETS["bone"] == Window(400, 1800)
    assert WINDOW_PRESETS["brain"] == Window(40, 80)
    for name, window in WINDOW_PRESETS.items():
        np.testing.assert_array_equal(load_image(path, window=name), load_image(path, window=window))
    np.testing.assert_array_equal(load_image(path, window="Soft-Tissue"), load_image(path, window="soft_tissue"))


def test_header_window_is_used_and_override_wins(tmp_path: Path) -> None:
    stored = hu_ramp()
    ds = dicom_dataset(
        stored, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=[40, 400], WindowWidth=[80, 1800]
    )
    path = save_dicom(ds, tmp_path / "ct.dcm")
    hu = stored.astype(np.float64) - 1024
    header = load_image(path)
    np.testing.assert_allclose(header[0], linear_window(hu, 40, 80), atol=1e-6)  # first of several windows
    override = load_image(path, window="lung")
    np.testing.assert_allclose(override[0], linear_window(hu, -600, 1500), atol=1e-6)
    assert not np.allclose(header, override)


def test_sigmoid_voi_function_from_header(tmp_path: Path) -> None:
    stored = hu_ramp()
    ds = dicom_dataset(stored, WindowCenter=1000, WindowWidth=500, VOILUTFunction="SIGMOID")
    out = load_image(save_dicom(ds, tmp_path / "s.dcm"))
    expected = 1.0 / (1.0 + np.exp(-4.0 * (stored.astype(np.float64) - 1000) / 500))
    np.testing.assert_allclose(out[0], expected, atol=1e-6)


def test_no_window_scales_by_min_max(tmp_path: Path) -> None:
    stored = hu_ramp() + 100
    out = load_image(save_dicom(dicom_dataset(stored), tmp_path / "m.dcm"))
    s = stored.astype(np.float64)
    np.testing.assert_allclose(out[0], (s - s.min()) / (s.max() - s.min()), atol=1e-6)


def test_invalid_header_window_falls_back_to_min_max_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stored = hu_ramp()
    ds = dicom_dataset(stored, WindowCenter=100, WindowWidth=0)
    with caplog.at_level(logging.WARNING):
        out = load_image(save_dicom(ds, tmp_path / "bad_window.dcm"))
    assert out.min() == 0.0 and out.max() == 1.0
    assert "invalid header window" in caplog.text
    assert "Doe^Jane" not in caplog.text and "PID-0001" not in caplog.text


def test_voi_lut_sequence_is_applied_before_header_window(tmp_path: Path) -> None:
    stored = (np.arange(256, dtype=np.uint16) % 256).reshape(16, 16)
    ds = dicom_dataset(stored, bits_stored=8, WindowCenter=128, WindowWidth=10)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 8]
    item.add_new(0x00283006, "US", [255 - v for v in range(256)])  # LUT Data: an inverting ramp
    ds.VOILUTSequence = Sequence([item])
    out = load_image(save_dicom(ds, tmp_path / "voi.dcm"))
    np.testing.assert_allclose(out[0], (255 - stored) / 255.0, atol=1e-6)


def test_voi_lut_with_first_mapped_value_and_clipping(tmp_path: Path) -> None:
    stored = np.full((8, 8), 5, dtype=np.uint16)
    stored[0] = 100  # beyond the LUT: last entry
    stored[1] = 0  # below first mapped value: first entry
    ds = dicom_dataset(stored)
    item = Dataset()
    item.LUTDescriptor = [11, 2, 16]
    item.add_new(0x00283006, "US", [0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000])
    ds.VOILUTSequence = Sequence([item])
    out = load_image(save_dicom(ds, tmp_path / "voi2.dcm"))
    assert out[0, 2, 0] == pytest.approx(0.3)  # value 5 -> entry 3 -> 300 of 0..1000
    assert out[0, 0, 0] == pytest.approx(1.0)
    assert out[0, 1, 0] == pytest.approx(0.0)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = hu_ramp().astype(np.uint16)
    mono2 = load_image(save_dicom(dicom_dataset(stored), tmp_path / "m2.dcm"))
    mono1 = load_image(save_dicom(dicom_dataset(stored, photometric="MONOCHROME1"), tmp_path / "m1.dcm"))
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    assert mono1[0, 0, 0] == 1.0  # lowest stored value (most attenuation in CR) is bright

    windowed2 = load_image(tmp_path / "m2.dcm", window=Window(1000, 1000))
    windowed1 = load_image(tmp_path / "m1.dcm", window=Window(1000, 1000))
    np.testing.assert_allclose(windowed1, 1.0 - windowed2, atol=1e-6)


# --- colour ---------------------------------------------------------------------------------------


def colour_pattern(rows: int = 16, cols: int = 24) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(rows, cols, 3), dtype=np.uint8)


def test_rgb_dicom_gives_three_channels(tmp_path: Path) -> None:
    rgb = colour_pattern()
    ds = dicom_dataset(rgb, photometric="RGB", sop_class=SecondaryCaptureImageStorage)
    out = load_image(save_dicom(ds, tmp_path / "rgb.dcm"))
    assert out.shape == (3, 16, 24)
    np.testing.assert_allclose(out, rgb.transpose(2, 0, 1) / 255.0, atol=1e-6)


def test_ybr_full_is_converted_to_rgb(tmp_path: Path) -> None:
    rgb = colour_pattern()
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    ds = dicom_dataset(ybr, photometric="YBR_FULL", sop_class=SecondaryCaptureImageStorage)
    out = load_image(save_dicom(ds, tmp_path / "ybr.dcm"))
    assert out.shape == (3, 16, 24)
    np.testing.assert_allclose(out, rgb.transpose(2, 0, 1) / 255.0, atol=3 / 255)


def test_window_on_colour_dicom_warns_and_is_ignored(tmp_path: Path) -> None:
    rgb = colour_pattern()
    ds = dicom_dataset(rgb, photometric="RGB", sop_class=SecondaryCaptureImageStorage)
    path = save_dicom(ds, tmp_path / "rgb.dcm")
    with pytest.warns(UserWarning, match="window ignored for a colour DICOM"):
        out = load_image(path, window="lung")
    np.testing.assert_array_equal(out, load_image(path))


def test_palette_colour_goes_through_its_lut(tmp_path: Path) -> None:
    index = (np.arange(16 * 16) % 4).astype(np.uint8).reshape(16, 16)
    ds = dicom_dataset(index, photometric="MONOCHROME2", sop_class=SecondaryCaptureImageStorage)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    for colour, entries in (
        ("Red", [65535, 0, 0, 65535]),
        ("Green", [0, 65535, 0, 65535]),
        ("Blue", [0, 0, 65535, 0]),
    ):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [4, 0, 16])
        ds.add_new(
            {"Red": 0x00281201, "Green": 0x00281202, "Blue": 0x00281203}[colour],
            "OW",
            np.asarray(entries, dtype="<u2").tobytes(),
        )
    out = load_image(save_dicom(ds, tmp_path / "palette.dcm"))
    assert out.shape == (3, 16, 16)
    np.testing.assert_allclose(out[:, 0, 0], [1, 0, 0])  # index 0: red
    np.testing.assert_allclose(out[:, 0, 2], [0, 0, 1])  # index 2: blue
    np.testing.assert_allclose(out[:, 0, 3], [1, 1, 0])  # index 3: yellow


# --- multi-frame ----------------------------------------------------------------------------------


def five_frames() -> np.ndarray:
    """uint16 (5, 8, 8): frame k is k * 100 + a 0..63 ramp."""
    ramp = np.arange(64, dtype=np.uint16).reshape(8, 8)
    return np.stack([ramp + k * 100 for k in range(5)])


@pytest.mark.parametrize(
    ("frame", "expected_index"), [("first", 0), ("middle", 2), (0, 0), (3, 3), (-1, 4), (-5, 0)]
)
def test_multiframe_policy_picks_the_right_frame(tmp_path: Path, frame: str | int, expected_index: int) -> None:
    frames = five_frames()
    path = save_dicom(dicom_dataset(frames), tmp_path / "mf.dcm")
    window = Window(300, 800)  # fixed mapping so frames stay comparable
    out = load_image(path, frame=frame, window=window)
    np.testing.assert_allclose(out[0], linear_window(frames[expected_index], 300, 800), atol=1e-6)


@pytest.mark.parametrize("policy", ["mean", "max"])
def test_multiframe_mean_and_max(tmp_path: Path, policy: str) -> None:
    frames = five_frames().astype(np.float64)
    path = save_dicom(dicom_dataset(five_frames()), tmp_path / "mf.dcm")
    out = load_image(path, frame=policy, window=Window(300, 800))
    reduced = frames.mean(axis=0) if policy == "mean" else frames.max(axis=0)
    np.testing.assert_allclose(out[0], linear_window(reduced, 300, 800), atol=1e-6)


def test_multiframe_index_out_of_range(tmp_path: Path) -> None:
    path = save_dicom(dicom_dataset(five_frames()), tmp_path / "mf.dcm")
    with pytest.raises(ImageReadError, match=r"mf\.dcm: frame 5 out of range: the image has 5 frame"):
        load_image(path, frame=5)
    with pytest.raises(ImageReadError, match="frame -6 out of range"):
        load_image(path, frame=-6)


@pytest.mark.parametrize("frame", ["last", 1.5, True, None])
def test_bad_frame_policy(tmp_path: Path, frame: object) -> None:
    path = save_dicom(dicom_dataset(hu_ramp()), tmp_path / "ct.dcm")
    with pytest.raises(ConfigError, match="frame"):
        load_image(path, frame=frame)  # type: ignore[arg-type]


def test_single_frame_accepts_every_policy(tmp_path: Path) -> None:
    path = save_dicom(dicom_dataset(hu_ramp()), tmp_path / "ct.dcm")
    ref = load_image(path)
    for frame in ("first", "middle", "mean", "max", 0, -1):
        np.testing.assert_allclose(load_image(path, frame=frame), ref, atol=1e-6)


def test_enhanced_multiframe_per_frame_rescale_and_shared_window(tmp_path: Path) -> None:
    frames = np.stack([np.arange(64, dtype=np.uint16).reshape(8, 8)] * 3)
    ds = dicom_dataset(frames, sop_class=EnhancedMRImageStorage)

    def transformation(intercept: float) -> Dataset:
        item = Dataset()
        item.RescaleSlope = 1
        item.RescaleIntercept = intercept
        item.RescaleType = "US"
        return item

    per_frame = []
    for k in range(3):
        group = Dataset()
        group.PixelValueTransformationSequence = Sequence([transformation(k * 1000)])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    voi = Dataset()
    voi.WindowCenter = 1032
    voi.WindowWidth = 64
    shared = Dataset()
    shared.FrameVOILUTSequence = Sequence([voi])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    path = save_dicom(ds, tmp_path / "enhanced.dcm")

    out = load_image(path, frame=1)  # values 1000..1063 through the shared 1032/64 window
    np.testing.assert_allclose(out[0], linear_window(frames[1].astype(np.float64) + 1000, 1032, 64), atol=1e-6)
    first = load_image(path, frame=0)  # values 0..63: all below the window
    assert first.max() == 0.0


# --- files without extension or preamble -------------------------------------------------------------


def test_dicom_without_extension_and_without_preamble(tmp_path: Path) -> None:
    ds = dicom_dataset(hu_ramp())
    ds.preamble = None
    path = tmp_path / "scan"
    ds.save_as(path, enforce_file_format=False)
    assert path.read_bytes()[:2] == b"\x02\x00"  # starts straight with the file meta group
    assert sniff_format(path) == "dicom"
    np.testing.assert_array_equal(
        load_image(path), load_image(save_dicom(dicom_dataset(hu_ramp()), tmp_path / "ref.dcm"))
    )


def test_raw_dataset_without_file_meta_implicit_vr(tmp_path: Path) -> None:
    ds = dicom_dataset(hu_ramp())
    del ds.file_meta
    path = tmp_path / "IM0001"
    ds.save_as(path, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[:2] == b"\x08\x00"
    assert sniff_format(path) == "dicom"
    out = load_image(path)
    assert out.shape == (1, 16, 16)
    assert out.min() == 0.0 and out.max() == 1.0


def test_load_image_bytes_matches_load_image(tmp_path: Path) -> None:
    path = save_dicom(dicom_dataset(hu_ramp(), RescaleSlope=1, RescaleIntercept=-1024), tmp_path / "ct.dcm")
    np.testing.assert_array_equal(
        load_image_bytes(path.read_bytes(), "upload.bin", window="brain"), load_image(path, window="brain")
    )


# --- compressed transfer syntaxes -------------------------------------------------------------------


def test_rle_lossless_round_trip(tmp_path: Path) -> None:
    stored = hu_ramp(32, 24)
    reference = load_image(save_dicom(dicom_dataset(stored), tmp_path / "native.dcm"))
    ds = dicom_dataset(stored)
    ds.compress(RLELossless, stored)
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(load_image(save_dicom(ds, tmp_path / "rle.dcm")), reference)


def test_jpeg2000_lossless_round_trip(tmp_path: Path) -> None:
    stored = (np.arange(32 * 32, dtype=np.uint16) * 3 % 4096).reshape(32, 32)
    reference = load_image(save_dicom(dicom_dataset(stored, bits_stored=12), tmp_path / "native.dcm"))
    ds = dicom_dataset(stored, bits_stored=12)
    ds.compress(JPEG2000Lossless, stored, encoding_plugin="pylibjpeg")
    assert ds.file_meta.TransferSyntaxUID == JPEG2000Lossless
    path = save_dicom(ds, tmp_path / "j2k.dcm")
    assert path.stat().st_size < 32 * 32 * 2  # really compressed
    np.testing.assert_array_equal(load_image(path), reference)


def test_transfer_syntax_without_decoder_names_it(tmp_path: Path) -> None:
    ds = dicom_dataset(hu_ramp())
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    path = save_dicom(ds, tmp_path / "video.dcm")
    with pytest.raises(
        UnsupportedCompressionError, match=r"video\.dcm: cannot decode transfer syntax MPEG2.*convert"
    ):
        load_image(path)


def test_unknown_transfer_syntax_uid(tmp_path: Path) -> None:
    ds = dicom_dataset(hu_ramp())
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.PixelData = encapsulate([b"\xff\x0a" + b"\x00" * 30])
    ds["PixelData"].VR = "OB"
    path = save_dicom(ds, tmp_path / "jxl.dcm")
    # pydicom 3.0 refuses to write JPEG XL (unknown to it): patch the UID in place (same length).
    data = path.read_bytes()
    assert data.count(b"1.2.840.10008.1.2.4.100") == 1
    path.write_bytes(data.replace(b"1.2.840.10008.1.2.4.100", b"1.2.840.10008.1.2.4.110"))
    with pytest.raises(UnsupportedCompressionError, match=r"JPEG XL Lossless \(1\.2\.840\.10008\.1\.2\.4\.110\)"):
        load_image(path)


def test_undecodable_compressed_data_names_syntax_and_package(tmp_path: Path) -> None:
    ds = dicom_dataset(hu_ramp())
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\x00" * 40])  # a JPEG-LS start, then garbage
    ds["PixelData"].VR = "OB"
    path = save_dicom(ds, tmp_path / "jls.dcm")
    with pytest.raises(UnsupportedCompressionError, match=r"JPEG-LS Lossless.*pip install pylibjpeg-libjpeg"):
        load_image(path)


# --- bad files ----------------------------------------------------------------------------------------


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    ds = dicom_dataset(hu_ramp())
    del ds.PixelData
    path = save_dicom(ds, tmp_path / "report.dcm")
    with pytest.raises(ImageReadError, match=r"report\.dcm: DICOM file has no pixel data \(CT Image Storage\)"):
        load_image(path)


def test_truncated_pixel_data(tmp_path: Path) -> None:
    path = save_dicom(dicom_dataset(hu_ramp(32, 32)), tmp_path / "full.dcm")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(path.read_bytes()[:-700])
    with pytest.raises(
        ImageReadError,
        match=r"cut\.dcm: truncated DICOM pixel data: 1,348 bytes present, the header implies 2,048",
    ):
        load_image(cut)


def test_file_cut_inside_the_header(tmp_path: Path) -> None:
    path = save_dicom(dicom_dataset(hu_ramp()), tmp_path / "full.dcm")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageReadError, match=r"cut\.dcm: .*(no pixel data|not a valid DICOM|no data set)"):
        load_image(cut)


def test_too_large_by_header_before_decoding(tmp_path: Path) -> None:
    ds = dicom_dataset(hu_ramp())
    ds.Rows, ds.Columns = 40000, 40000  # 1.6e9 pixels announced; the data is only 512 bytes
    path = save_dicom(ds, tmp_path / "bomb.dcm")
    with pytest.raises(
        ImageTooLargeError, match=r"bomb\.dcm: image too large: 40000 x 40000 pixels.*max_pixels=268,435,456"
    ):
        load_image(path)


def test_max_pixels_counts_frames_and_samples(tmp_path: Path) -> None:
    path = save_dicom(dicom_dataset(five_frames()), tmp_path / "mf.dcm")
    with pytest.raises(ImageTooLargeError, match=r"8 x 8 pixels x 5 frame\(s\) x 1 sample\(s\) = 320 samples"):
        load_image(path, max_pixels=319)
    assert load_image(path, max_pixels=320).shape == (1, 8, 8)
    rgb = save_dicom(
        dicom_dataset(colour_pattern(), photometric="RGB", sop_class=SecondaryCaptureImageStorage),
        tmp_path / "c.dcm",
    )
    with pytest.raises(ImageTooLargeError, match="x 3 sample"):
        load_image(rgb, max_pixels=16 * 24 * 3 - 1)


def test_too_small(tmp_path: Path) -> None:
    path = save_dicom(dicom_dataset(hu_ramp(4, 12)), tmp_path / "tiny.dcm")
    with pytest.raises(ImageTooSmallError, match=r"tiny\.dcm: image too small: 4 x 12 pixels.*min_size=8"):
        load_image(path)
    assert load_image(path, min_size=4).shape == (1, 4, 12)


@pytest.mark.parametrize(
    ("key", "value"), [("max_pixels", 0), ("max_pixels", 1.5), ("min_size", -1), ("min_size", True)]
)
def test_bad_limits(tmp_path: Path, key: str, value: object) -> None:
    path = save_dicom(dicom_dataset(hu_ramp()), tmp_path / "ct.dcm")
    with pytest.raises(ConfigError, match=f"{key} must be a positive integer"):
        load_image(path, **{key: value})  # type: ignore[arg-type]


def test_window_argument_errors(tmp_path: Path) -> None:
    path = save_dicom(dicom_dataset(hu_ramp()), tmp_path / "ct.dcm")
    with pytest.raises(ConfigError, match=r"unknown window preset 'abdomen_xyz'; known presets: \["):
        load_image(path, window="abdomen_xyz")
    with pytest.raises(ConfigError, match="window must be a Window"):
        load_image(path, window=400)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="Window width must be at least 1, got 0"):
        Window(40, 0)
    with pytest.raises(ConfigError, match="Window center must be a finite number"):
        Window(float("nan"), 10)
