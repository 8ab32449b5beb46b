"""MONAI preprocessing (resize keeping aspect ratio, pad, channel policy), normalisation and augmentation."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import NormalizeIntensity

from medfew.data import preprocessing
from medfew.data.episodes.transforms import build_augmentation
from medfew.data.preprocessing import normalize_batch, preprocess_batch, preprocess_image
from medfew.data.readers import read_medmnist
from medfew.errors import ConfigError

# --- preprocess_image -----------------------------------------------------------------------------


def test_output_shape_dtype_and_range() -> None:
    image = np.random.default_rng(0).random((1, 40, 30)).astype(np.float32)
    for channels in (1, 3):
        out = preprocess_image(image, image_size=28, channels=channels)
        assert isinstance(out, torch.Tensor) and type(out) is torch.Tensor  # not a MONAI MetaTensor
        assert out.shape == (channels, 28, 28) and out.dtype == torch.float32
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_grey_to_three_channels_replicates() -> None:
    image = np.random.default_rng(1).random((1, 28, 28)).astype(np.float32)
    out = preprocess_image(image, image_size=28, channels=3)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    np.testing.assert_allclose(out[0].numpy(), image[0], atol=1e-6)  # same size: untouched


def test_colour_to_one_channel_is_luminance() -> None:
    image = np.zeros((3, 28, 28), dtype=np.float32)
    image[0, :, :10] = 1.0  # red
    image[1, :, 10:20] = 1.0  # green
    image[2, :, 20:] = 1.0  # blue
    out = preprocess_image(image, image_size=28, channels=1)
    assert out.shape == (1, 28, 28)
    assert out[0, 0, 0] == pytest.approx(0.299, abs=1e-6)
    assert out[0, 0, 15] == pytest.approx(0.587, abs=1e-6)
    assert out[0, 0, 25] == pytest.approx(0.114, abs=1e-6)


def test_colour_stays_colour() -> None:
    image = np.random.default_rng(2).random((3, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(preprocess_image(image, image_size=28, channels=3).numpy(), image, atol=1e-6)


def test_aspect_ratio_is_kept_with_padding() -> None:
    wide = np.ones((1, 20, 40), dtype=np.float32)  # 1:2
    out = preprocess_image(wide, image_size=28, channels=1)[0]
    assert out.shape == (28, 28)
    rows_with_content = (out.max(dim=1).values > 0.5).nonzero().flatten().tolist()
    assert rows_with_content == list(range(7, 21))  # 14 rows of image, 7 padded rows above and below
    assert out[:7].max() == 0.0 and out[21:].max() == 0.0
    tall = np.ones((1, 40, 20), dtype=np.float32)
    out = preprocess_image(tall, image_size=28, channels=1)[0]
    assert out[:, :7].max() == 0.0 and out[:, 21:].max() == 0.0 and out[:, 7:21].min() == 1.0


def test_enlarging_keeps_aspect_and_interpolates() -> None:
    image = np.zeros((1, 8, 16), dtype=np.float32)
    image[0, :, 8:] = 1.0
    out = preprocess_image(image, image_size=32, channels=1)[0]
    assert out.shape == (32, 32)
    assert out[:8].max() == 0.0 and out[24:].max() == 0.0  # 16 image rows in the middle
    assert out[16, 0] == 0.0 and out[16, -1] == 1.0
    assert 0.0 < float(out[16, 15]) < 1.0 or 0.0 < float(out[16, 16]) < 1.0  # bilinear edge


def test_shrinking_is_anti_aliased() -> None:
    checker = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)[None]  # 1-pixel checkerboard
    out = preprocess_image(checker, image_size=16, channels=1)
    np.testing.assert_allclose(out.numpy(), 0.5, atol=1e-6)  # nearest or plain bilinear would alias to 0 / 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 0, "channels": 1}, "image_size must be a positive int, got 0"),
        ({"image_size": 28.0, "channels": 1}, "image_size must be a positive int"),
        ({"image_size": 28, "channels": 2}, "channels must be 1 or 3, got 2"),
    ],
)
def test_preprocess_image_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        preprocess_image(np.zeros((1, 28, 28), np.float32), **kwargs)


def test_preprocess_image_bad_images() -> None:
    with pytest.raises(
        ConfigError, match=r"image must be a \(C, H, W\) array with C 1 or 3, got shape \(28, 28\)"
    ):
        preprocess_image(np.zeros((28, 28), np.float32), image_size=28, channels=1)
    with pytest.raises(ConfigError, match=r"got shape \(4, 28, 28\)"):
        preprocess_image(np.zeros((4, 28, 28), np.float32), image_size=28, channels=1)
    with pytest.raises(ConfigError, match=r"image must be float in \[0, 1\], got dtype torch\.uint8"):
        preprocess_image(np.zeros((1, 28, 28), np.uint8), image_size=28, channels=1)


# --- preprocess_batch -----------------------------------------------------------------------------


def test_batch_shapes_and_dtype() -> None:
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    rgb = rng.integers(0, 256, (5, 28, 28, 3), dtype=np.uint8)
    for images in (grey, rgb):
        for channels in (1, 3):
            for size in (28, 64, 14):
                out = preprocess_batch(images, image_size=size, channels=channels)
                assert out.shape == (5, channels, size, size) and out.dtype == torch.uint8


def test_batch_identity_when_nothing_to_do() -> None:
    grey = np.random.default_rng(4).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    out = preprocess_batch(grey, image_size=28, channels=1)
    assert torch.equal(out[:, 0], torch.from_numpy(grey))
    rgb = np.random.default_rng(4).integers(0, 256, (6, 28, 28, 3), dtype=np.uint8)
    assert torch.equal(preprocess_batch(rgb, image_size=28, channels=3), torch.from_numpy(rgb).permute(0, 3, 1, 2))


def test_batch_matches_single_image_path() -> None:
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (4, 20, 30, 3), dtype=np.uint8)
    for channels in (1, 3):
        batch = preprocess_batch(rgb, image_size=24, channels=channels).float() / 255.0
        for i in range(4):
            single = preprocess_image(
                rgb[i].transpose(2, 0, 1).astype(np.float32) / 255.0, image_size=24, channels=channels
            )
            assert (batch[i] - single).abs().max() <= 1.0 / 255.0 + 1e-6


def test_batch_is_chunked_consistently(monkeypatch: pytest.MonkeyPatch) -> None:
    images = np.random.default_rng(6).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    whole = preprocess_batch(images, image_size=40, channels=3)
    monkeypatch.setattr(preprocessing, "_CHUNK", 3)  # 4 chunks of 3, 3, 3, 1
    chunked = preprocess_batch(images, image_size=40, channels=3)
    # interpolation kernels vectorise differently by batch size: at most one grey level apart
    assert (chunked.int() - whole.int()).abs().max() <= 1


def test_batch_grey_to_three_replicates_and_empty_batch() -> None:
    images = np.random.default_rng(7).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    out = preprocess_batch(images, image_size=32, channels=3)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    assert preprocess_batch(np.zeros((0, 28, 28), np.uint8), image_size=16, channels=3).shape == (0, 3, 16, 16)


def test_batch_bad_input() -> None:
    with pytest.raises(ConfigError, match="images must be a uint8 numpy array, got float32"):
        preprocess_batch(np.zeros((2, 28, 28), np.float32), image_size=28, channels=1)
    with pytest.raises(
        ConfigError, match=r"images must be \(N, H, W\) or \(N, H, W, 3\), got shape \(2, 28, 28, 4\)"
    ):
        preprocess_batch(np.zeros((2, 28, 28, 4), np.uint8), image_size=28, channels=1)
    with pytest.raises(ConfigError, match="channels must be 1 or 3"):
        preprocess_batch(np.zeros((2, 28, 28), np.uint8), image_size=28, channels=0)


def test_real_medmnist_through_preprocess_batch(data_root: Path) -> None:
    images, _ = read_medmnist(data_root / "medmnist" / "retinamnist.npz", "val")
    out = preprocess_batch(images, image_size=32, channels=1)
    assert out.shape == (120, 1, 32, 32) and out.dtype == torch.uint8
    assert out.float().std() > 10  # real content survived


# --- normalize_batch ------------------------------------------------------------------------------


def test_zscore_per_image_and_channel() -> None:
    x = torch.rand(4, 3, 16, 16) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1) + 0.1
    out = normalize_batch(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out.mean(dim=(2, 3)), torch.zeros(4, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(2, 3), unbiased=False), torch.ones(4, 3), atol=1e-4, rtol=0)


def test_zscore_matches_monai_normalize_intensity() -> None:
    x = torch.rand(5, 3, 12, 12)
    monai = NormalizeIntensity(channel_wise=True)
    expected = torch.stack([torch.as_tensor(monai(img.clone())) for img in x])
    torch.testing.assert_close(normalize_batch(x), expected, atol=1e-5, rtol=1e-5)


def test_zscore_constant_image_and_gradient() -> None:
    x = torch.full((2, 1, 8, 8), 0.7)
    assert normalize_batch(x).abs().max() < 1e-6  # divided by 1, not by a ~0 std
    y = torch.rand(2, 1, 8, 8, requires_grad=True)
    normalize_batch(y).pow(2).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


def test_unit_mode_is_unchanged_and_bad_modes() -> None:
    x = torch.rand(2, 1, 8, 8)
    assert normalize_batch(x, "unit") is x
    with pytest.raises(
        ConfigError, match=r"unknown normalisation mode 'minmax'; expected one of \['zscore', 'unit'\]"
    ):
        normalize_batch(x, "minmax")
    with pytest.raises(ConfigError, match=r"normalize_batch needs a float \(B, C, H, W\) tensor"):
        normalize_batch(torch.rand(1, 8, 8))
    with pytest.raises(ConfigError, match="normalize_batch needs a float"):
        normalize_batch(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))


# --- build_augmentation ---------------------------------------------------------------------------


@pytest.fixture(params=["batched", "monai"])
def augmentation(request: pytest.FixtureRequest):
    """``build_augmentation`` with each backend."""
    return functools.partial(build_augmentation, backend=request.param)


def episode_batch(n: int = 16) -> torch.Tensor:
    """``n`` images at 28 x 28 (80 is a 5-way 5-shot 15-query episode), grey replicated to 3 channels."""
    torch.manual_seed(0)
    grey = torch.rand(n, 1, 28, 28) * 0.8 + 0.1
    return grey.expand(-1, 3, -1, -1).contiguous()


def test_none_is_identity(augmentation) -> None:
    x = episode_batch()
    assert augmentation("none")(x) is x


@pytest.mark.parametrize("strength", ["standard", "strong"])
def test_augmentation_changes_images_keeps_shape_dtype_range(strength: str, augmentation) -> None:
    x = episode_batch(80)
    out = augmentation(strength, seed=0)(x)
    assert out.shape == x.shape and out.dtype == x.dtype and type(out) is torch.Tensor
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    changed = (out - x).abs().flatten(1).max(dim=1).values > 1e-3
    assert changed.float().mean() > 0.5  # most images were transformed
    per_image = [(out[i] - out[j]).abs().mean() for i, j in ((0, 1), (2, 3))]
    assert all(d > 0 for d in per_image)  # random per image


def test_augmentation_is_reproducible_with_seed(augmentation) -> None:
    x = episode_batch()
    a, b = augmentation("standard", seed=123), augmentation("standard", seed=123)
    first_a, first_b = a(x), b(x)
    assert torch.equal(first_a, first_b)
    assert torch.equal(a(x), b(x))  # the sequence of calls is reproducible too
    assert not torch.equal(a(x), first_a)  # but successive calls draw new parameters
    other = augmentation("standard", seed=124)(x)
    assert not torch.equal(other, first_a)


def test_strong_is_stronger_than_standard(augmentation) -> None:
    x = episode_batch()
    standard = (augmentation("standard", seed=1)(x) - x).abs().mean()
    strong = (augmentation("strong", seed=1)(x) - x).abs().mean()
    assert strong > standard


def test_flip_is_opt_in(augmentation) -> None:
    x = torch.zeros(32, 1, 28, 28)
    x[:, :, 10:18, :6] = 1.0  # a blob on the left; no other transform can move it to the far right

    def right_side(out: torch.Tensor) -> torch.Tensor:
        return (out[:, 0, 10:18, 20:].amax(dim=(1, 2)) > 0.5).sum()

    assert right_side(augmentation("standard", seed=0)(x)) == 0
    assert right_side(augmentation("standard", seed=0, flip=True)(x)) > 5


def test_augmentation_bad_arguments(augmentation) -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown augmentation strength 'extreme'; expected one of \['none', 'standard', 'strong'\]",
    ):
        augmentation("extreme")
    with pytest.raises(ConfigError, match=r"augmentation seed must be an int or None, got 1\.5"):
        augmentation("standard", seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=r"augmentation needs a float \(B, C, H, W\) tensor, got shape \(28, 28\)"
    ):
        augmentation("standard", seed=0)(torch.rand(28, 28))


def test_augmentation_handles_several_sizes_and_empty(augmentation) -> None:
    aug = augmentation("standard", seed=0)
    assert aug(torch.rand(2, 1, 28, 28)).shape == (2, 1, 28, 28)
    assert aug(torch.rand(2, 3, 32, 40)).shape == (2, 3, 32, 40)
    empty = torch.zeros(0, 1, 28, 28)
    assert aug(empty).shape == (0, 1, 28, 28)


def test_set_random_state_makes_a_call_a_function_of_the_seed(augmentation) -> None:
    x = episode_batch()
    aug = augmentation("standard", seed=0)
    first = aug.set_random_state(42)(x)
    aug(x)
    again = aug.set_random_state(42)(x)
    assert torch.equal(first, again)


def test_unknown_backend() -> None:
    with pytest.raises(ConfigError, match="unknown augmentation backend 'gpu'"):
        build_augmentation("standard", backend="gpu")
