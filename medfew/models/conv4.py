"""``conv4``: the four-block convolutional encoder of the few-shot literature (Vinyals et al. 2016)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medfew.errors import ConfigError
from medfew.models.base import Backbone
from medfew.models.checks import check_int
from medfew.models.norm import check_norm, make_norm
from medfew.models.registry import register_backbone

N_BLOCKS = 4


@register_backbone("conv4")
class Conv4(Backbone):
    """Four ``[conv3x3(hidden) -> norm -> ReLU -> maxpool2]`` blocks, flattened.

    Each max-pool halves the side (floor), so the features are ``hidden * (S // 16) ** 2`` long and
    the network accepts only ``(B, in_channels, S, S)`` images with the ``S = image_size`` it was
    built for.

    Args:
        in_channels: Channels ``C`` of the input images.
        image_size: Side ``S`` of the square input images, at least 16.
        hidden: Channels of every block.
        norm: ``"batch" | "group" | "instance" | "none"`` (see :mod:`medfew.models.norm`).
    """

    def __init__(self, *, in_channels: int = 3, image_size: int = 28, hidden: int = 64, norm: str = "group") -> None:
        super().__init__(in_channels=in_channels, image_size=image_size)
        self.hidden = check_int(self._owner, "hidden", hidden, 1)
        self.norm = check_norm(self._owner, norm)
        side = image_size // 2**N_BLOCKS
        if side < 1:
            raise ConfigError(f"{self._owner}: image_size must be >= {2**N_BLOCKS} (4 max-pools), got {image_size}")
        blocks = []
        channels = in_channels
        for _ in range(N_BLOCKS):
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, hidden, kernel_size=3, padding=1),
                    make_norm(norm, hidden),
                    nn.ReLU(),
                    nn.MaxPool2d(2),
                )
            )
            channels = hidden
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = hidden * side * side

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S) -> (B, feature_dim)``."""
        self.check_input(images, exact_size=True)
        return self.blocks(images).flatten(1)

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments."""
        return {
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "hidden": self.hidden,
            "norm": self.norm,
        }
