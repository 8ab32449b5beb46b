"""A stand-in backbone that reads features computed once per image (fast evaluation of fixed encoders).

At test time an embedding method (ProtoNet, MatchingNet, Baseline++) sees each image only through
``backbone(x)`` and, for flip augmentation, ``backbone(x.flip(-1))``; its encoder never changes.
Evaluating hundreds of episodes then needs each pool image encoded once, not once per episode.
:func:`encode_with_flip` turns a backbone into an encoder of images to ``(B, D, 1, 2)`` "maps" that
hold ``f(x)`` and ``f(flip(x))`` side by side along the width, and :class:`PrecomputedFeatures` reads
them back: its input's width-0 column is ``f(x)``, and flipping the input along the width (what the
method does to augment) swaps the columns, so ``PrecomputedFeatures(maps.flip(-1))`` is exactly
``f(flip(x))``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from medfew.errors import ConfigError


class PrecomputedFeatures(nn.Module):
    """``(B, D, 1, 2)`` pairs ``[f(x), f(flip(x))]`` -> ``(B, D)`` features ``f(x)``.

    Args:
        feature_dim: ``D``.
    """

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """``(B, D, 1, 2) -> (B, D)`` (the width-0 column)."""
        if maps.ndim != 4 or tuple(maps.shape[1:]) != (self.feature_dim, 1, 2):
            raise ConfigError(
                f"precomputed features must be (B, {self.feature_dim}, 1, 2), got {tuple(maps.shape)}"
            )
        return maps[:, :, 0, 0]


def encode_with_flip(backbone: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """An encoder ``(B, C, H, W) images -> (B, D, 1, 2)`` pairs ``[f(x), f(flip(x))]`` for :class:`PrecomputedFeatures`."""

    def encode(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([backbone(images), backbone(images.flip(-1))], dim=-1).unsqueeze(2)

    return encode
