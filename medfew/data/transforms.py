"""MONAI preprocessing and augmentation for reader output and image pools.

* :func:`preprocess_image` - one reader image ``(C, H, W)`` float ``[0, 1]`` -> ``(channels, S, S)`` float32.
* :func:`preprocess_batch` - a stack of same-size uint8 images (a MedMNIST split) -> ``(N, channels, S, S)``
  uint8, resized in chunks with one MONAI call per chunk.
* :func:`normalize_batch` - per-image, channel-wise z-score (MONAI ``NormalizeIntensity`` semantics) or none.
* :func:`build_augmentation` - seeded MONAI random transforms applied per image, for meta-training only.

Geometry: the longest side is resized to ``S`` (MONAI ``Resize(size_mode="longest")``; ``"area"`` when
shrinking, which is anti-aliased, ``"bilinear"`` when enlarging) and the short side is zero-padded
symmetrically to ``S`` (``SpatialPad``), so the aspect ratio is kept. Channels: 1 -> 3 replicates grey;
3 -> 1 is the ITU-R BT.601 luminance ``0.299 R + 0.587 G + 0.114 B`` (what Pillow's ``convert("L")`` does).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandAffine,
    RandCoarseDropout,
    RandFlip,
    RandGaussianNoise,
    RandScaleIntensity,
    Resize,
    SpatialPad,
)

from medfew.errors import ConfigError

LUMINANCE_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)
NORMALIZE_MODES: tuple[str, ...] = ("zscore", "unit")
AUGMENTATION_STRENGTHS: tuple[str, ...] = ("none", "standard", "strong")

_CHUNK = 4096  # images per MONAI call in preprocess_batch (bounds float32 memory to ~chunk * C * H * W * 4 bytes)
_STD_EPS = 1e-6


def preprocess_image(image: np.ndarray, *, image_size: int, channels: int) -> torch.Tensor:
    """Resize (keeping aspect ratio), pad and set the channel count of one reader image.

    Args:
        image: float ``(C, H, W)`` in ``[0, 1]``, ``C`` 1 or 3 (as :func:`medfew.data.readers.load_image` returns).
        image_size: Output side ``S``.
        channels: Output channels, 1 or 3.

    Returns:
        float32 ``(channels, S, S)`` in ``[0, 1]``.

    Raises:
        ConfigError: For a bad ``image_size`` / ``channels`` or an image of the wrong shape or dtype.
    """
    _check_sizes(image_size, channels)
    if not isinstance(image, (np.ndarray, torch.Tensor)) or image.ndim != 3 or image.shape[0] not in (1, 3):
        shape = getattr(image, "shape", None)
        raise ConfigError(
            f"image must be a (C, H, W) array with C 1 or 3, got shape {shape} ({type(image).__name__})"
        )
    x = torch.from_numpy(np.array(image)) if isinstance(image, np.ndarray) else image
    if not x.is_floating_point():
        raise ConfigError(f"image must be float in [0, 1], got dtype {x.dtype}; use preprocess_batch for uint8")
    x = x.to(torch.float32)
    if x.shape[0] == 3 and channels == 1:
        x = _luminance(x.unsqueeze(0)).squeeze(0)
    x = _resize_pad(x, image_size).clamp_(0.0, 1.0)
    if x.shape[0] == 1 and channels == 3:
        x = x.expand(3, -1, -1)
    return x.contiguous()


def preprocess_batch(images: np.ndarray, *, image_size: int, channels: int) -> torch.Tensor:
    """Resize, pad and set channels of a stack of same-size uint8 images, in batched MONAI calls.

    Args:
        images: uint8 ``(N, H, W)`` (greyscale) or ``(N, H, W, 3)`` (RGB), e.g. from ``read_medmnist``.
        image_size: Output side ``S``.
        channels: Output channels, 1 or 3.

    Returns:
        uint8 ``(N, channels, S, S)`` (rounded to the nearest level).

    Raises:
        ConfigError: For a bad ``image_size`` / ``channels`` or images of the wrong shape or dtype.
    """
    _check_sizes(image_size, channels)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise ConfigError(
            f"images must be a uint8 numpy array, got {getattr(images, 'dtype', type(images).__name__)}"
        )
    if images.ndim == 3:
        batch = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    elif images.ndim == 4 and images.shape[-1] == 3:
        batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    else:
        raise ConfigError(f"images must be (N, H, W) or (N, H, W, 3), got shape {images.shape}")
    n, c, h, w = batch.shape
    out_c = 1 if channels == 1 else c
    if n == 0:
        return torch.zeros((0, channels, image_size, image_size), dtype=torch.uint8)
    if h == w == image_size and c == out_c:
        result = batch.contiguous()
    else:
        chunks = []
        for start in range(0, n, _CHUNK):
            x = batch[start : start + _CHUNK].to(torch.float32)
            if c == 3 and channels == 1:
                x = _luminance(x)
            k = x.shape[0]
            # MONAI spatial transforms take (channels, H, W): stack images on the channel axis, one call per chunk.
            y = _resize_pad(x.reshape(k * out_c, h, w), image_size)
            chunks.append(y.reshape(k, out_c, image_size, image_size).round_().clamp_(0, 255).to(torch.uint8))
        result = torch.cat(chunks)
    if out_c == 1 and channels == 3:
        result = result.expand(-1, 3, -1, -1).contiguous()
    return result


def normalize_batch(x: torch.Tensor, mode: str = "zscore") -> torch.Tensor:
    """Normalise intensities of a batch, per image.

    Args:
        x: float ``(B, C, H, W)`` in ``[0, 1]`` (any device; differentiable).
        mode: ``"zscore"``: each image and channel minus its mean, divided by its (population) standard
            deviation, a constant channel divided by 1 - MONAI ``NormalizeIntensity(channel_wise=True)``
            applied to every image, computed in one batched operation. ``"unit"``: unchanged.

    Returns:
        float ``(B, C, H, W)``.

    Raises:
        ConfigError: For another ``mode`` or a tensor that is not 4D floating point.
    """
    if mode not in NORMALIZE_MODES:
        raise ConfigError(f"unknown normalisation mode {mode!r}; expected one of {list(NORMALIZE_MODES)}")
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ConfigError(
            f"normalize_batch needs a float (B, C, H, W) tensor, got {getattr(x, 'dtype', type(x).__name__)} "
            f"of shape {tuple(getattr(x, 'shape', ()))}"
        )
    if mode == "unit":
        return x
    std, mean = torch.std_mean(x, dim=(2, 3), keepdim=True, correction=0)  # one pass over the batch
    std = torch.where(std < _STD_EPS, torch.ones_like(std), std)
    return (x - mean) / std


def build_augmentation(
    strength: str = "standard", seed: int | None = None, *, flip: bool = False, backend: str = "batched"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Random augmentation applied independently to every image of a batch (training only).

    ``backend="batched"`` (default) draws the same family of transforms as tensors and applies them to
    the whole batch in one ``grid_sample`` call (:class:`medfew.data.augment.BatchAugmentation`, a few ms
    per episode, GPU-ready). ``backend="monai"`` runs the per-image MONAI pipeline described below.
    Both have ``set_random_state(seed)``, which the episode sampler calls per episode.

    ``"standard"``: RandAffine (p 0.8: rotation +-10 deg, scale +-10 %, translation +-6 % of the side,
    zero padding), RandGaussianNoise (p 0.3, std 0.02), RandAdjustContrast (p 0.3, gamma 0.8-1.25),
    RandScaleIntensity (p 0.3, +-10 %). ``"strong"``: RandAffine (p 0.9: +-20 deg, +-20 %, +-10 %,
    shear 0.1), noise (p 0.5, std 0.05), contrast (p 0.5, gamma 0.6-1.6), intensity (p 0.5, +-20 %)
    and RandCoarseDropout (p 0.3: 1-3 black holes of 1/9 to 1/4 of the side). ``"none"``: the
    identity. Outputs are clipped to ``[0, 1]``.

    Cost (CPU, per image, so it scales with the batch): about 100-300 ms per 80-image 28 x 28 batch
    on a shared 2-core machine, dominated by RandAffine.

    Args:
        strength: ``"none"``, ``"standard"`` or ``"strong"``.
        seed: Seed of the transforms' random state (MONAI ``set_random_state``); the same seed and the same
            sequence of inputs give the same outputs. ``None``: seeded from the OS.
        flip: Also flip left-right with probability 0.5. Off by default: laterality is a label in
            medical images (OrganAMNIST has kidney-left / kidney-right, chest X-rays have a heart side).

    Returns:
        A callable ``(B, C, H, W)`` float tensor -> same shape, dtype and device.

    Raises:
        ConfigError: For an unknown ``strength``.
    """
    if strength not in AUGMENTATION_STRENGTHS:
        raise ConfigError(
            f"unknown augmentation strength {strength!r}; expected one of {list(AUGMENTATION_STRENGTHS)}"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"augmentation seed must be an int or None, got {seed!r}")
    if strength == "none":
        return _identity
    if backend == "batched":
        from medfew.data.augment import BatchAugmentation

        return BatchAugmentation(strength, seed, flip=flip)
    if backend != "monai":
        raise ConfigError(f"unknown augmentation backend {backend!r}; expected 'batched' or 'monai'")
    return _Augmentation(strength, seed, flip)


class _Augmentation:
    """Per-image MONAI pipeline; one seeded ``Compose`` per image size and device, built on first use."""

    def __init__(self, strength: str, seed: int | None, flip: bool) -> None:
        self.strength = strength
        self.flip = flip
        self._rng = np.random.RandomState(seed)
        self._pipelines: dict[tuple[int, int, str], Compose] = {}

    def set_random_state(self, seed: int) -> _Augmentation:
        """Reseed, so that the next call's augmentation depends only on ``seed``."""
        self._rng = np.random.RandomState(seed)
        self._pipelines.clear()
        return self

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or not batch.is_floating_point():
            raise ConfigError(
                f"augmentation needs a float (B, C, H, W) tensor, got shape {tuple(getattr(batch, 'shape', ()))}"
            )
        if batch.shape[0] == 0:
            return batch
        pipeline = self._pipeline(int(batch.shape[2]), int(batch.shape[3]), batch.device)
        with torch.no_grad():
            out = torch.stack([_plain(pipeline(img)) for img in batch.detach()])
        return out.to(dtype=batch.dtype, device=batch.device).clamp_(0.0, 1.0)

    def _pipeline(self, h: int, w: int, device: torch.device) -> Compose:
        key = (h, w, str(device))
        if key not in self._pipelines:
            pipeline = Compose(_transforms(self.strength, h, w, self.flip, device))
            pipeline.set_random_state(state=np.random.RandomState(self._rng.randint(0, 2**31 - 1)))
            self._pipelines[key] = pipeline
        return self._pipelines[key]


def _transforms(strength: str, h: int, w: int, flip: bool, device: torch.device) -> list:
    strong = strength == "strong"
    rotate, scale, shift = (np.deg2rad(20), 0.2, 0.10) if strong else (np.deg2rad(10), 0.1, 0.06)
    p = 0.5 if strong else 0.3
    out: list = [
        RandAffine(
            prob=0.9 if strong else 0.8,
            rotate_range=rotate,
            scale_range=(scale, scale),
            translate_range=(shift * h, shift * w),
            shear_range=(0.1, 0.1) if strong else None,
            padding_mode="zeros",
            device=device,
        ),
    ]
    if flip:
        out.append(RandFlip(prob=0.5, spatial_axis=1))
    out += [
        RandGaussianNoise(prob=p, std=0.05 if strong else 0.02),
        RandAdjustContrast(prob=p, gamma=(0.6, 1.6) if strong else (0.8, 1.25)),
        RandScaleIntensity(prob=p, factors=0.2 if strong else 0.1),
    ]
    if strong:
        # Cutout-style occlusion: 1-3 holes of 1/9 to 1/4 of the side. (RandGaussianSmooth was tried and
        # cost ~20 ms per 28 x 28 image on CPU, 20x the rest of the pipeline.)
        side = min(h, w)
        out.append(
            RandCoarseDropout(
                holes=1,
                max_holes=3,
                spatial_size=max(1, side // 9),
                max_spatial_size=max(1, side // 4),
                fill_value=0.0,
                prob=0.3,
            )
        )
    return out


def _identity(batch: torch.Tensor) -> torch.Tensor:
    return batch


def _check_sizes(image_size: int, channels: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size must be a positive int, got {image_size!r}")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}")


def _luminance(x: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, 1, H, W)`` BT.601 luma."""
    weights = torch.tensor(LUMINANCE_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _resize_pad(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(C, H, W)`` -> ``(C, size, size)``: longest side to ``size`` (area when shrinking), zero-pad the rest."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    longest = max(h, w)
    if longest != size:
        mode = "area" if longest > size else "bilinear"
        resize = Resize(
            spatial_size=size, size_mode="longest", mode=mode, align_corners=None if mode == "area" else False
        )
        x = _plain(resize(x))
    if x.shape[-2] != size or x.shape[-1] != size:
        x = _plain(SpatialPad(spatial_size=(size, size), method="symmetric", mode="constant")(x))
    return x


def _plain(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """MONAI returns ``MetaTensor``; callers get plain tensors."""
    if hasattr(x, "as_tensor"):
        return x.as_tensor()
    return torch.as_tensor(x)
