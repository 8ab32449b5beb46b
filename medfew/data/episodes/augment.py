"""Batched training-time augmentation: one ``affine_grid`` / ``grid_sample`` call per episode.

The same family and ranges as the per-image MONAI pipeline in :mod:`medfew.data.episodes.transforms` (random
affine, optional flip, Gaussian noise, gamma contrast, intensity scaling, coarse dropout), but each
image's parameters are drawn as tensors and applied to the whole ``(B, C, H, W)`` batch at once, so it
costs a few milliseconds per episode on CPU and runs on the GPU with the batch. Reseeding with
:meth:`BatchAugmentation.set_random_state` makes an episode's augmentation a pure function of the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medfew.errors import ConfigError


@dataclass(frozen=True)
class AugmentationRanges:
    """Probabilities and ranges of one augmentation strength."""

    p_affine: float
    rotate_deg: float
    scale: float
    translate: float  # fraction of the side
    shear: float
    p_intensity: float  # probability of each of noise, gamma and scaling
    noise_std: float
    gamma: tuple[float, float]
    intensity: float
    p_dropout: float


RANGES = {
    "standard": AugmentationRanges(0.8, 10.0, 0.1, 0.06, 0.0, 0.3, 0.02, (0.8, 1.25), 0.1, 0.0),
    "strong": AugmentationRanges(0.9, 20.0, 0.2, 0.10, 0.1, 0.5, 0.05, (0.6, 1.6), 0.2, 0.3),
}


class BatchAugmentation:
    """Random augmentation of a ``(B, C, H, W)`` float batch in ``[0, 1]``, independent per image.

    Args:
        strength: ``"standard"`` or ``"strong"`` (see :data:`RANGES`).
        seed: Initial seed; :meth:`set_random_state` reseeds.
        flip: Also flip left-right with probability 0.5 (off by default: laterality can be a label).
    """

    def __init__(self, strength: str = "standard", seed: int | None = None, *, flip: bool = False) -> None:
        if strength not in RANGES:
            raise ConfigError(f"unknown augmentation strength {strength!r}; expected one of {sorted(RANGES)}")
        self.ranges = RANGES[strength]
        self.flip = flip
        self._generator = torch.Generator()
        self.set_random_state(seed if seed is not None else int(torch.seed() % (2**31)))

    def set_random_state(self, seed: int) -> BatchAugmentation:
        """Reseed, so that the next call's augmentation depends only on ``seed``."""
        self._generator.manual_seed(int(seed))
        return self

    def _uniform(self, *shape: int, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=self._generator)

    def _coin(self, n: int, p: float) -> torch.Tensor:
        return (torch.rand(n, generator=self._generator) < p).float()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Augment ``batch`` ``(B, C, H, W)``; returns the same shape, dtype and device, clipped to ``[0, 1]``."""
        if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or not batch.is_floating_point():
            raise ConfigError(
                f"augmentation needs a float (B, C, H, W) tensor, got shape {tuple(getattr(batch, 'shape', ()))}"
            )
        b = batch.shape[0]
        if b == 0:
            return batch
        r = self.ranges
        with torch.no_grad():
            theta = self._affine(b).to(batch.device, batch.dtype)
            grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
            x = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            per_image = (b, 1, 1, 1)
            gamma_on = self._coin(b, r.p_intensity)
            gamma = torch.exp(self._uniform(b, low=math.log(r.gamma[0]), high=math.log(r.gamma[1])) * gamma_on)
            x = x.clamp(min=0.0).pow(gamma.view(per_image).to(x))
            scale = 1.0 + r.intensity * self._uniform(b) * self._coin(b, r.p_intensity)
            x = x * scale.view(per_image).to(x)
            noise_on = self._coin(b, r.p_intensity).view(per_image)
            noise = torch.randn(batch.shape, generator=self._generator) * r.noise_std * noise_on
            x = x + noise.to(x)
            if r.p_dropout > 0:
                x = x * self._dropout_mask(batch.shape).to(x)
        return x.clamp_(0.0, 1.0)

    def _affine(self, b: int) -> torch.Tensor:
        """``(B, 2, 3)`` inverse-sampling matrices in ``affine_grid``'s normalised coordinates."""
        r = self.ranges
        on = self._coin(b, r.p_affine)
        angle = torch.deg2rad(self._uniform(b) * r.rotate_deg) * on
        scale = 1.0 + self._uniform(b) * r.scale * on
        shear = self._uniform(b) * r.shear * on
        shift = self._uniform(b, 2) * 2.0 * r.translate * on[:, None]  # the side spans 2 units
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin + shear
        theta[:, 1, 0], theta[:, 1, 1] = sin, cos
        theta[:, :, 2] = shift
        if self.flip:
            flip = 1.0 - 2.0 * self._coin(b, 0.5)
            theta[:, :, 0] *= flip[:, None]
        return theta

    def _dropout_mask(self, shape: torch.Size) -> torch.Tensor:
        """Cutout: with probability ``p_dropout`` one hole of 1/9 to 1/4 of the side, per image."""
        b, _, h, w = shape
        side = min(h, w)
        size = (self._uniform(b, low=side / 9, high=side / 4)).round().clamp(min=1)
        cy, cx = self._uniform(b, low=0, high=h), self._uniform(b, low=0, high=w)
        ys = torch.arange(h).view(1, h, 1).float()
        xs = torch.arange(w).view(1, 1, w).float()
        hole = ((ys - cy.view(b, 1, 1)).abs() <= size.view(b, 1, 1) / 2) & (
            (xs - cx.view(b, 1, 1)).abs() <= size.view(b, 1, 1) / 2
        )
        hole = hole & (self._coin(b, self.ranges.p_dropout) > 0).view(b, 1, 1)
        return (~hole).float().unsqueeze(1)
