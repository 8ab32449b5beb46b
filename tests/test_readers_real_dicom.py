"""Every real DICOM sample in ``data_root/dicom_samples`` decodes through the full reader pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medfew.data.readers import load_image, load_image_bytes, sniff_format
from medfew.errors import ImageReadError

# file -> (channels, rows, cols), from the data README (transfer syntaxes noted for what each proves)
EXPECTED: dict[str, tuple[int, int, int]] = {
    "CT_small.dcm": (1, 128, 128),  # explicit VR LE, signed 16-bit, rescale to HU
    "693_UNCR.dcm": (1, 512, 512),  # 14-bit CT with header window
    "ctbrain1.dcm": (3, 456, 510),  # JPEG baseline YBR_FULL_422 -> RGB (Pillow or libjpeg)
    "MR_small.dcm": (1, 64, 64),
    "MR_small_RLE.dcm": (1, 64, 64),  # RLE lossless
    "MR2_UNCR.dcm": (1, 1024, 1024),
    "MR2_J2KR.dcm": (1, 1024, 1024),  # JPEG 2000 lossless (openjpeg)
    "emri_small.dcm": (1, 64, 64),  # enhanced MR, 10 frames
    "RG1_UNCR.dcm": (1, 1955, 1841),  # CR, MONOCHROME1
    "RG3_J2KI.dcm": (1, 1760, 1760),  # JPEG 2000 lossy, MONOCHROME1
    "CR_small_16x16_cspine.dcm": (1, 16, 16),  # MONOCHROME1, rescale slope 0.684
    "US1_UNCR.dcm": (3, 480, 640),  # RGB ultrasound
    "JPEG2000.dcm": (1, 1024, 256),  # JPEG 2000, signed 16-bit
    "JPEG-LL.dcm": (1, 1024, 256),  # JPEG lossless SV1 (libjpeg only: Pillow cannot)
}


@pytest.fixture(scope="module")
def samples(data_root: Path) -> Path:
    return data_root / "dicom_samples"


def test_every_sample_is_covered(samples: Path) -> None:
    assert sorted(p.name for p in samples.glob("*.dcm")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_decodes_to_unit_float_image(samples: Path, name: str) -> None:
    path = samples / name
    assert sniff_format(path) == "dicom"
    image = load_image(path)
    assert image.dtype == np.float32
    assert image.shape == EXPECTED[name]
    assert np.isfinite(image).all()
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert image.max() - image.min() > 0.1, "image decoded to (almost) a constant"


def test_lossless_jpeg2000_equals_uncompressed(samples: Path) -> None:
    np.testing.assert_array_equal(load_image(samples / "MR2_J2KR.dcm"), load_image(samples / "MR2_UNCR.dcm"))


def test_rle_equals_uncompressed(samples: Path) -> None:
    np.testing.assert_array_equal(load_image(samples / "MR_small_RLE.dcm"), load_image(samples / "MR_small.dcm"))


@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "CR_small_16x16_cspine.dcm"])
def test_monochrome1_is_inverted(samples: Path, name: str) -> None:
    path = samples / name
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    image = load_image(path)[0].astype(np.float64)
    # high stored value = more X-ray exposure = dark on MONOCHROME1 film: the output must run the other way
    assert np.corrcoef(raw.ravel(), image.ravel())[0, 1] < -0.9


def test_ct_header_window_and_override(samples: Path) -> None:
    path = samples / "693_UNCR.dcm"  # header window 40 / 100 over HU = stored - 1024
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    header = load_image(path)[0]
    expected = np.clip((hu - 39.5) / 99 + 0.5, 0, 1)
    np.testing.assert_allclose(header, expected, atol=1e-5)
    lung = load_image(path, window="lung")[0]
    np.testing.assert_allclose(lung, np.clip((hu + 600.5) / 1499 + 0.5, 0, 1), atol=1e-5)


def test_multiframe_policies_on_enhanced_mr(samples: Path) -> None:
    path = samples / "emri_small.dcm"
    frames = pydicom.dcmread(path).pixel_array.astype(np.float64)  # (10, 64, 64)
    assert frames.shape == (10, 64, 64)
    for frame, expected in (("first", frames[0]), ("middle", frames[5]), (7, frames[7]), ("max", frames.max(0))):
        out = load_image(path, frame=frame)[0]
        scaled = (expected - expected.min()) / (expected.max() - expected.min())
        np.testing.assert_allclose(out, scaled, atol=1e-5)
    mean = load_image(path, frame="mean")[0]
    assert not np.allclose(mean, load_image(path, frame="first")[0])
    with pytest.raises(ImageReadError, match=r"emri_small\.dcm: frame 10 out of range: the image has 10 frame"):
        load_image(path, frame=10)


def test_ybr_jpeg_ct_decodes_to_rgb(samples: Path) -> None:
    image = load_image(samples / "ctbrain1.dcm")
    assert image.shape[0] == 3
    # a grey drawing stored as colour: after YBR -> RGB the three channels agree
    assert np.abs(image[0] - image[1]).mean() < 0.02


def test_bytes_upload_matches_file(samples: Path) -> None:
    path = samples / "JPEG-LL.dcm"
    np.testing.assert_array_equal(load_image_bytes(path.read_bytes(), "upload"), load_image(path))
