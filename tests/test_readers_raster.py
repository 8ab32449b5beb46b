"""Raster (Pillow), NIfTI, single-array .npz and MedMNIST readers, and content sniffing.

Files are written into tmp_path with Pillow, nibabel and numpy; MedMNIST uses the real data root.
"""

from __future__ import annotations

import gzip
import struct
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medfew.data.readers import (
    ImageMeta,
    Window,
    load_image,
    load_image_bytes,
    load_image_with_meta,
    read_medmnist,
    sniff_format,
)
from medfew.errors import ConfigError, DatasetNotFoundError, ImageReadError, ImageTooLargeError, ImageTooSmallError


def grey_ramp(rows: int = 16, cols: int = 24) -> np.ndarray:
    return (np.arange(rows * cols) % 256).astype(np.uint8).reshape(rows, cols)


def rgb_pattern(rows: int = 16, cols: int = 24) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(rows, cols, 3), dtype=np.uint8)


def save(im: Image.Image, path: Path, **kwargs: object) -> Path:
    im.save(path, **kwargs)
    return path


# --- greyscale and bit depth ----------------------------------------------------------------------


def test_8bit_grey_png(tmp_path: Path) -> None:
    arr = grey_ramp()
    out = load_image(save(Image.fromarray(arr), tmp_path / "g8.png"))
    assert out.shape == (1, 16, 24) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], arr / 255.0, atol=1e-7)


def test_16bit_grey_png_scales_by_16_bits_not_255(tmp_path: Path) -> None:
    arr = (np.arange(16 * 24, dtype=np.uint16) * 170).reshape(16, 24)
    arr[0, 0], arr[0, 1] = 65535, 4096
    path = save(Image.fromarray(arr), tmp_path / "g16.png")
    with Image.open(path) as im:
        assert im.mode == "I;16"
    out = load_image(path)
    np.testing.assert_allclose(out[0], arr / 65535.0, atol=1e-6)
    assert out[0, 0, 0] == 1.0 and out[0, 0, 1] == pytest.approx(4096 / 65535)


def test_1bit_image(tmp_path: Path) -> None:
    arr = grey_ramp() > 127
    out = load_image(save(Image.fromarray(arr), tmp_path / "b.png"))
    np.testing.assert_array_equal(out[0], arr.astype(np.float32))


def test_16bit_tiff_and_8bit_tiff(tmp_path: Path) -> None:
    arr16 = (np.arange(16 * 24, dtype=np.uint16) * 150).reshape(16, 24)
    np.testing.assert_allclose(
        load_image(save(Image.fromarray(arr16), tmp_path / "a.tif"))[0], arr16 / 65535.0, atol=1e-6
    )
    arr8 = grey_ramp()
    np.testing.assert_allclose(
        load_image(save(Image.fromarray(arr8), tmp_path / "b.tiff"))[0], arr8 / 255.0, atol=1e-7
    )


def test_float_tiff_kept_in_unit_range_else_min_max(tmp_path: Path) -> None:
    unit = np.linspace(0.1, 0.9, 16 * 24, dtype=np.float32).reshape(16, 24)
    np.testing.assert_allclose(load_image(save(Image.fromarray(unit), tmp_path / "u.tif"))[0], unit, atol=1e-6)
    hu = np.linspace(-1000, 1000, 16 * 24, dtype=np.float32).reshape(16, 24)
    out = load_image(save(Image.fromarray(hu), tmp_path / "hu.tif"))[0]
    np.testing.assert_allclose(out, (hu + 1000) / 2000, atol=1e-6)


def test_32bit_integer_tiff_uses_min_max(tmp_path: Path) -> None:
    arr = (np.arange(16 * 24, dtype=np.int32) * 1000 - 50000).reshape(16, 24)
    out = load_image(save(Image.fromarray(arr), tmp_path / "i32.tif"))[0]
    np.testing.assert_allclose(out, (arr - arr.min()) / (arr.max() - arr.min()), atol=1e-6)


# --- palette, alpha, colour spaces ----------------------------------------------------------------


def test_grey_palette_gives_one_channel(tmp_path: Path) -> None:
    pal = Image.new("P", (24, 16))
    pal.putpalette([0, 0, 0, 80, 80, 80, 160, 160, 160, 255, 255, 255] + [0] * (256 * 3 - 12))
    pal.putdata(list((grey_ramp() % 4).ravel()))
    out = load_image(save(pal, tmp_path / "p.png"))
    assert out.shape == (1, 16, 24)
    np.testing.assert_allclose(out[0], np.array([0, 80, 160, 255])[grey_ramp() % 4] / 255.0, atol=1e-7)


def test_colour_palette_and_transparency(tmp_path: Path) -> None:
    index = grey_ramp() % 3
    pal = Image.new("P", (24, 16))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    pal.putdata(list(index.ravel()))
    out = load_image(save(pal, tmp_path / "p.png"))
    assert out.shape == (3, 16, 24)
    np.testing.assert_allclose(out[:, index == 1].T, np.tile([0, 1, 0], ((index == 1).sum(), 1)))
    transparent = load_image(save(pal, tmp_path / "pt.png", transparency=1))
    assert transparent[:, index == 1].max() == 0.0  # transparent index composited on black
    np.testing.assert_allclose(transparent[:, index == 2].T, np.tile([0, 0, 1], ((index == 2).sum(), 1)))


def test_rgba_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.zeros((16, 24, 4), dtype=np.uint8)
    rgba[..., :3] = [200, 100, 50]
    rgba[:, :8, 3], rgba[:, 8:16, 3], rgba[:, 16:, 3] = 0, 255, 51
    out = load_image(save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))
    assert out.shape == (3, 16, 24)
    assert out[:, :, :8].max() == 0.0
    np.testing.assert_allclose(out[:, 0, 10], [200 / 255, 100 / 255, 50 / 255], atol=1e-6)
    np.testing.assert_allclose(out[:, 0, 20], [200 / 255 * 0.2, 100 / 255 * 0.2, 50 / 255 * 0.2], atol=1e-6)


def test_la_is_composited_on_black(tmp_path: Path) -> None:
    la = np.zeros((16, 24, 2), dtype=np.uint8)
    la[..., 0] = 200
    la[:, 12:, 1] = 255
    out = load_image(save(Image.fromarray(la, "LA"), tmp_path / "la.png"))
    assert out.shape == (1, 16, 24)
    assert out[0, :, :12].max() == 0.0
    np.testing.assert_allclose(out[0, :, 12:], 200 / 255, atol=1e-6)


def test_rgb_png_and_bmp(tmp_path: Path) -> None:
    rgb = rgb_pattern()
    for name in ("c.png", "c.bmp"):
        out = load_image(save(Image.fromarray(rgb), tmp_path / name))
        assert out.shape == (3, 16, 24)
        np.testing.assert_allclose(out, rgb.transpose(2, 0, 1) / 255.0, atol=1e-7)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = save(Image.new("CMYK", (24, 16), (0, 255, 255, 0)), tmp_path / "c.jpg", quality=95)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    out = load_image(path)
    assert out.shape == (3, 16, 24)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), [1.0, 0.0, 0.0], atol=0.03)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((16, 40), dtype=np.uint8)
    arr[:, 0] = 255  # left column white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = load_image(save(Image.fromarray(arr), tmp_path / "o.png", exif=exif))
    assert out.shape == (1, 40, 16)
    np.testing.assert_array_equal(out[0, 0], np.ones(16, dtype=np.float32))  # left column is now the top row
    assert out[0, 1:].max() == 0.0


# --- multi-page TIFF ------------------------------------------------------------------------------


def pages() -> list[np.ndarray]:
    return [np.full((16, 16), 40 * k, dtype=np.uint8) + np.arange(16, dtype=np.uint8) for k in range(5)]


@pytest.mark.parametrize(("frame", "k"), [("first", 0), ("middle", 2), (4, 4), (-2, 3)])
def test_multipage_tiff_frame_policy(tmp_path: Path, frame: str | int, k: int) -> None:
    ims = [Image.fromarray(p) for p in pages()]
    path = save(ims[0], tmp_path / "stack.tif", save_all=True, append_images=ims[1:])
    np.testing.assert_allclose(load_image(path, frame=frame)[0], pages()[k] / 255.0, atol=1e-7)


def test_multipage_tiff_mean_max_and_range(tmp_path: Path) -> None:
    ims = [Image.fromarray(p) for p in pages()]
    path = save(ims[0], tmp_path / "stack.tif", save_all=True, append_images=ims[1:])
    stack = np.stack(pages()).astype(np.float64) / 255.0
    np.testing.assert_allclose(load_image(path, frame="mean")[0], stack.mean(0), atol=1e-6)
    np.testing.assert_allclose(load_image(path, frame="max")[0], stack.max(0), atol=1e-6)
    with pytest.raises(ImageReadError, match=r"stack\.tif: frame 5 out of range: the image has 5 frame"):
        load_image(path, frame=5)


# --- content, not extension; bytes ----------------------------------------------------------------


def test_format_comes_from_content_not_extension(tmp_path: Path) -> None:
    arr = grey_ramp()
    path = save(Image.fromarray(arr), tmp_path / "scan.dcm", format="PNG")
    assert sniff_format(path) == "png"
    np.testing.assert_allclose(load_image(path)[0], arr / 255.0, atol=1e-7)


def test_sniff_every_format(tmp_path: Path) -> None:
    im = Image.fromarray(rgb_pattern())
    for fmt, expected in (("PNG", "png"), ("JPEG", "jpeg"), ("TIFF", "tiff"), ("BMP", "bmp")):
        path = save(im, tmp_path / f"x_{expected}", format=fmt)
        assert sniff_format(path) == expected
        assert sniff_format(path.read_bytes()) == expected
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.int16), np.eye(4)), tmp_path / "v.nii")
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.int16), np.eye(4)), tmp_path / "v.nii.gz")
    nib.save(nib.Nifti2Image(np.zeros((8, 8), np.int16), np.eye(4)), tmp_path / "v2.nii")
    np.savez(tmp_path / "a.npz", image=np.zeros((8, 8)))
    for name, expected in (("v.nii", "nifti"), ("v.nii.gz", "nifti"), ("v2.nii", "nifti"), ("a.npz", "npz")):
        assert sniff_format(tmp_path / name) == expected, name


def test_load_image_bytes_matches_file(tmp_path: Path) -> None:
    path = save(Image.fromarray(rgb_pattern()), tmp_path / "c.jpg", quality=90)
    np.testing.assert_array_equal(load_image_bytes(path.read_bytes(), "upload.png"), load_image(path))


def test_load_image_with_meta_for_other_formats(tmp_path: Path) -> None:
    png = save(Image.fromarray(rgb_pattern()), tmp_path / "c.png")
    np.savez(tmp_path / "g.npz", image=grey_ramp())
    for path, expected in ((png, ImageMeta("png", (3, 16, 24))), (tmp_path / "g.npz", ImageMeta("npz", (1, 16, 24)))):
        image, meta = load_image_with_meta(path)
        np.testing.assert_array_equal(image, load_image(path))
        assert meta == expected and meta.dicom is None
        from_bytes, meta_from_bytes = load_image_with_meta(path.read_bytes(), name="upload.bin")
        np.testing.assert_array_equal(from_bytes, image)
        assert meta_from_bytes == expected
    with pytest.raises(ImageReadError, match=r"^up\.png: empty file"):
        load_image_with_meta(b"", name="up.png")
    with pytest.raises(ImageReadError, match=r"^<bytes>: not a recognised image format"):
        load_image_with_meta(b"\x00\x01\x02\x03" * 64)
    with pytest.raises(ImageTooLargeError):
        load_image_with_meta(png, max_pixels=100)


def test_window_on_raster_warns(tmp_path: Path) -> None:
    path = save(Image.fromarray(grey_ramp()), tmp_path / "g.png")
    with pytest.warns(UserWarning, match=r"g\.png: window ignored for a raster image"):
        out = load_image(path, window="lung")
    np.testing.assert_array_equal(out, load_image(path))


# --- bad files ------------------------------------------------------------------------------------


def test_missing_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match=r"nope\.png: file not found"):
        load_image(tmp_path / "nope.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty\.png: empty file \(0 bytes\)"):
        load_image(empty)
    with pytest.raises(ImageReadError, match="not a regular file"):
        load_image(tmp_path)
    with pytest.raises(ImageReadError, match=r"up\.png: empty file"):
        load_image_bytes(b"", "up.png")


def test_garbage_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_bytes(b"hello, this is a text file, not a picture\n" * 10)
    with pytest.raises(ImageReadError, match=r"notes\.png: not a recognised image format \(first bytes 68 65 6c"):
        load_image(path)
    with pytest.raises(ImageReadError, match="not a recognised image format"):
        sniff_format(b"\x00\x01\x02\x03" * 64)


def test_known_unsupported_formats_are_named(tmp_path: Path) -> None:
    path = save(Image.fromarray(grey_ramp()), tmp_path / "anim.png", format="GIF")
    with pytest.raises(ImageReadError, match=r"anim\.png: GIF files are not supported: convert to PNG"):
        load_image(path)


def test_zip_and_gzip_that_are_not_images(tmp_path: Path) -> None:
    archive = tmp_path / "x.npz"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(ImageReadError, match=r"x\.npz: a ZIP archive that is not a NumPy \.npz"):
        load_image(archive)
    gz = tmp_path / "x.nii.gz"
    gz.write_bytes(gzip.compress(b"not nifti" * 100))
    with pytest.raises(ImageReadError, match=r"x\.nii\.gz: gzip-compressed data that is not NIfTI"):
        load_image(gz)


def test_truncated_png(tmp_path: Path) -> None:
    full = save(Image.fromarray(rgb_pattern(64, 64)), tmp_path / "full.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageReadError, match=r"cut\.png: truncated or corrupt image data"):
        load_image(cut)


def png_with_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite a PNG's IHDR to announce another size (CRC fixed), keeping the small real data."""
    ihdr = bytearray(data[16:29])
    struct.pack_into(">II", ihdr, 0, width, height)
    return data[:16] + bytes(ihdr) + struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr))) + data[33:]


def test_decompression_bomb_refused_from_header_before_decoding(tmp_path: Path) -> None:
    small = save(Image.fromarray(grey_ramp(64, 64)), tmp_path / "small.png").read_bytes()
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_with_size(small, 3000, 3000))  # 9e6 pixels announced, 64x64 of data
    # the data could not fill 3000 x 3000: only a header check can answer "too large"
    with pytest.raises(
        ImageTooLargeError, match=r"bomb\.png: image too large: 3000 x 3000 pixels.*max_pixels=1,000,000"
    ):
        load_image(bomb, max_pixels=1_000_000)
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        load_image(bomb)  # within the limit, decoding is tried and fails


def test_pillow_bomb_guard_is_reported_as_too_large(tmp_path: Path) -> None:
    small = save(Image.fromarray(grey_ramp(64, 64)), tmp_path / "small.png").read_bytes()
    bomb = tmp_path / "huge.png"
    bomb.write_bytes(png_with_size(small, 20000, 20000))  # above 2 * Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageTooLargeError, match=r"huge\.png: image too large"):
        load_image(bomb)


def test_too_small_raster(tmp_path: Path) -> None:
    path = save(Image.fromarray(grey_ramp(5, 40)), tmp_path / "strip.png")
    with pytest.raises(ImageTooSmallError, match=r"strip\.png: image too small: 5 x 40 pixels"):
        load_image(path)
    assert load_image(path, min_size=5).shape == (1, 5, 40)


# --- NIfTI ----------------------------------------------------------------------------------------


def test_nifti_2d(tmp_path: Path) -> None:
    arr = (np.arange(20 * 30, dtype=np.int16) - 300).reshape(20, 30)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "slice.nii")
    out = load_image(tmp_path / "slice.nii")
    assert out.shape == (1, 20, 30)
    np.testing.assert_allclose(out[0], (arr - arr.min()) / (arr.max() - arr.min()), atol=1e-6)


def volume() -> np.ndarray:
    ramp = np.arange(16 * 16, dtype=np.int16).reshape(16, 16)
    return np.stack([ramp + 300 * k for k in range(5)], axis=-1)  # (16, 16, 5)


@pytest.mark.parametrize(("frame", "k"), [("middle", 2), ("first", 0), (4, 4), (-1, 4)])
def test_nifti_volume_frame_policy_along_last_axis(tmp_path: Path, frame: str | int, k: int) -> None:
    vol = volume()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "vol.nii.gz")
    out = load_image(tmp_path / "vol.nii.gz", frame=frame, window=Window(800, 2000))
    expected = np.clip((vol[..., k] - 799.5) / 1999 + 0.5, 0, 1)
    np.testing.assert_allclose(out[0], expected, atol=1e-6)


def test_nifti_mean_max_scaling_and_range(tmp_path: Path) -> None:
    vol = volume()
    img = nib.Nifti1Image(vol, np.eye(4))
    img.header.set_slope_inter(2.0, -1000.0)
    nib.save(img, tmp_path / "ct.nii.gz")
    hu = vol.astype(np.float64) * 2 - 1000
    for policy, reduced in (("mean", hu.mean(-1)), ("max", hu.max(-1))):
        out = load_image(tmp_path / "ct.nii.gz", frame=policy, window="soft_tissue")
        np.testing.assert_allclose(out[0], np.clip((reduced - 39.5) / 399 + 0.5, 0, 1), atol=1e-5)
    with pytest.raises(ImageReadError, match=r"ct\.nii\.gz: frame 5 out of range: the image has 5 frame"):
        load_image(tmp_path / "ct.nii.gz", frame=5)


def test_nifti_without_extension_and_from_bytes(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(volume(), np.eye(4)), tmp_path / "vol.nii.gz")
    reference = load_image(tmp_path / "vol.nii.gz")
    odd = tmp_path / "volume_upload"
    odd.write_bytes((tmp_path / "vol.nii.gz").read_bytes())
    np.testing.assert_array_equal(load_image(odd), reference)
    np.testing.assert_array_equal(load_image_bytes(odd.read_bytes(), "x.bin"), reference)


def test_nifti_trailing_singleton_and_4d(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.ones((12, 10, 1), np.float32), np.eye(4)), tmp_path / "flat.nii")
    assert load_image(tmp_path / "flat.nii").shape == (1, 12, 10)
    nib.save(nib.Nifti1Image(np.ones((12, 10, 3, 2), np.float32), np.eye(4)), tmp_path / "4d.nii")
    with pytest.raises(ImageReadError, match=r"4d\.nii: NIfTI data of shape \(12, 10, 3, 2\) has 4 dimensions"):
        load_image(tmp_path / "4d.nii")


def test_nifti_too_large_and_truncated(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(volume(), np.eye(4)), tmp_path / "vol.nii")
    with pytest.raises(ImageTooLargeError, match=r"16 x 16 pixels x 5 frame\(s\)"):
        load_image(tmp_path / "vol.nii", max_pixels=16 * 16 * 4)
    data = (tmp_path / "vol.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[: len(data) - 1000])
    with pytest.raises(ImageReadError, match=r"cut\.nii: truncated or corrupt NIfTI data"):
        load_image(tmp_path / "cut.nii")


def test_nifti_nan_background_becomes_black(tmp_path: Path) -> None:
    arr = np.linspace(-5, 5, 16 * 16, dtype=np.float32).reshape(16, 16)
    arr[:4] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "map.nii")
    out = load_image(tmp_path / "map.nii")
    assert np.isfinite(out).all()
    assert out[0, :4].max() == 0.0
    finite = arr[4:]
    np.testing.assert_allclose(out[0, 4:], (finite - finite.min()) / (finite.max() - finite.min()), atol=1e-6)


# --- single-array .npz ----------------------------------------------------------------------------


def test_npz_layouts(tmp_path: Path) -> None:
    grey = grey_ramp()
    np.savez(tmp_path / "g.npz", image=grey)
    np.testing.assert_allclose(load_image(tmp_path / "g.npz")[0], grey / 255.0, atol=1e-7)
    rgb = rgb_pattern()
    np.savez_compressed(tmp_path / "hwc.npz", rgb)
    np.testing.assert_allclose(load_image(tmp_path / "hwc.npz"), rgb.transpose(2, 0, 1) / 255.0, atol=1e-7)
    chw = np.random.default_rng(1).random((3, 16, 24)).astype(np.float32)
    np.savez(tmp_path / "chw.npz", x=chw)
    np.testing.assert_allclose(load_image(tmp_path / "chw.npz"), chw, atol=1e-6)
    vol = volume().astype(np.float32)
    np.savez(tmp_path / "vol.npz", v=vol)
    out = load_image(tmp_path / "vol.npz", frame="first", window=Window(100, 300))
    np.testing.assert_allclose(out[0], np.clip((vol[..., 0] - 99.5) / 299 + 0.5, 0, 1), atol=1e-6)


def test_npz_refusals(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=np.zeros((8, 8)), b=np.zeros((8, 8)))
    with pytest.raises(ImageReadError, match=r"two\.npz: an \.npz image must hold exactly one array, found 2"):
        load_image(tmp_path / "two.npz")
    np.savez(tmp_path / "obj.npz", a=np.array([{"x": 1}] * 64, dtype=object).reshape(8, 8))
    with pytest.raises(ImageReadError, match=r"obj\.npz: array 'a' holds Python objects"):
        load_image(tmp_path / "obj.npz")
    np.savez(tmp_path / "4d.npz", a=np.zeros((2, 8, 8, 2)))
    with pytest.raises(ImageReadError, match=r"must be a 2D or 3D array, got shape \(2, 8, 8, 2\)"):
        load_image(tmp_path / "4d.npz")
    np.savez(tmp_path / "big.npz", a=np.zeros((100, 100), np.uint8))
    with pytest.raises(ImageTooLargeError, match="100 x 100 pixels"):
        load_image(tmp_path / "big.npz", max_pixels=9999)


# --- MedMNIST -------------------------------------------------------------------------------------


def test_real_medmnist_grey_and_rgb(data_root: Path) -> None:
    images, labels = read_medmnist(data_root / "medmnist" / "breastmnist.npz", "train")
    assert images.shape == (546, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (546,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [147, 399]
    images, labels = read_medmnist(data_root / "medmnist" / "retinamnist.npz", "val")
    assert images.shape == (120, 28, 28, 3) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=5).tolist() == [54, 12, 28, 20, 6]


def test_medmnist_validation(tmp_path: Path) -> None:
    path = tmp_path / "fake.npz"
    np.savez(path, train_images=np.zeros((4, 28, 28), np.uint8), train_labels=np.zeros((4, 1), np.uint8))
    with pytest.raises(
        ImageReadError,
        match=r"fake\.npz: missing key 'val_images' in MedMNIST file \(keys present: \['train_images'",
    ):
        read_medmnist(path, "val")
    with pytest.raises(
        ConfigError, match=r"MedMNIST split must be one of \['train', 'val', 'test'\], got 'validation'"
    ):
        read_medmnist(path, "validation")
    with pytest.raises(DatasetNotFoundError, match=r"absent\.npz: MedMNIST file not found"):
        read_medmnist(tmp_path / "absent.npz", "train")
    np.savez(path, train_images=np.zeros((4, 28, 28), np.uint8), train_labels=np.zeros((4, 14), np.uint8))
    with pytest.raises(ImageReadError, match=r"'train_labels' has shape \(4, 14\): multi-label"):
        read_medmnist(path, "train")
    np.savez(path, train_images=np.zeros((4, 28, 28), np.uint8), train_labels=np.zeros((3, 1), np.uint8))
    with pytest.raises(ImageReadError, match="'train_labels' has 3 labels for 4 images"):
        read_medmnist(path, "train")
    np.savez(path, train_images=np.zeros((4, 28, 28), np.float32), train_labels=np.zeros((4, 1), np.uint8))
    with pytest.raises(ImageReadError, match="'train_images' must be uint8, got float32"):
        read_medmnist(path, "train")
    not_npz = tmp_path / "text.npz"
    not_npz.write_text("hello")
    with pytest.raises(ImageReadError, match=r"text\.npz: not a readable \.npz file"):
        read_medmnist(not_npz, "train")


# --- real chest X-rays ----------------------------------------------------------------------------


def test_real_chest_xrays_one_per_class(data_root: Path) -> None:
    folder = data_root / "covid_chestxray_ieee8023_rare"
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    assert len(classes) == 11
    seen = set()
    for class_dir in classes:
        path = sorted(p for p in class_dir.iterdir() if p.is_file())[0]
        seen.add(sniff_format(path))
        image = load_image(path)
        assert image.dtype == np.float32 and image.shape[0] in (1, 3), path.name
        assert image.shape[1] >= 200 and image.shape[2] >= 200
        assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0
        assert image.std() > 0.05, path.name
    assert seen <= {"png", "jpeg"}
