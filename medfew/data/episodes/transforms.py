"""Seeded MONAI augmentation of image batches, for meta-training only (:func:`build_augmentation`).

Preprocessing (resize, pad, channels, normalisation) lives in :mod:`medfew.data.preprocessing`.
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
)

from medfew.data.episodes.augment import RANGES, BatchAugmentation
from medfew.data.preprocessing import plain_tensor
from medfew.errors import ConfigError

AUGMENTATION_STRENGTHS: tuple[str, ...] = ("none", *RANGES)


def build_augmentation(
    strength: str = "standard", seed: int | None = None, *, flip: bool = False, backend: str = "batched"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Random augmentation applied independently to every image of a batch (training only).

    ``backend="batched"`` (default) draws the same family of transforms as tensors and applies them to
    the whole batch in one ``grid_sample`` call (:class:`medfew.data.episodes.augment.BatchAugmentation`, a few ms
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
            out = torch.stack([plain_tensor(pipeline(img)) for img in batch.detach()])
        return out.to(dtype=batch.dtype, device=batch.device).clamp_(0.0, 1.0)

    def _pipeline(self, h: int, w: int, device: torch.device) -> Compose:
        key = (h, w, str(device))
        if key not in self._pipelines:
            pipeline = Compose(_transforms(self.strength, h, w, self.flip, device))
            pipeline.set_random_state(state=np.random.RandomState(self._rng.randint(0, 2**31 - 1)))
            self._pipelines[key] = pipeline
        return self._pipelines[key]


def _transforms(strength: str, h: int, w: int, flip: bool, device: torch.device) -> list:
    """The MONAI pipeline of one strength, with the ranges of :data:`medfew.data.episodes.augment.RANGES`
    (the one table both backends read)."""
    r = RANGES[strength]
    out: list = [
        RandAffine(
            prob=r.p_affine,
            rotate_range=np.deg2rad(r.rotate_deg),
            scale_range=(r.scale, r.scale),
            translate_range=(r.translate * h, r.translate * w),
            shear_range=(r.shear, r.shear) if r.shear else None,
            padding_mode="zeros",
            device=device,
        ),
    ]
    if flip:
        out.append(RandFlip(prob=0.5, spatial_axis=1))
    out += [
        RandGaussianNoise(prob=r.p_intensity, std=r.noise_std),
        RandAdjustContrast(prob=r.p_intensity, gamma=r.gamma),
        RandScaleIntensity(prob=r.p_intensity, factors=r.intensity),
    ]
    if r.p_dropout:
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
                prob=r.p_dropout,
            )
        )
    return out


def _identity(batch: torch.Tensor) -> torch.Tensor:
    return batch
