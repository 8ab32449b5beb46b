"""``resnet12``: the ResNet-12 of the few-shot literature (Oreshkin et al. 2018; Lee et al. 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medfew.errors import ConfigError
from medfew.models.base import Backbone
from medfew.models.norm import check_norm, make_norm
from medfew.models.registry import register_backbone

DEFAULT_WIDTHS = (64, 160, 320, 640)
LEAK = 0.1


class ResidualStage(nn.Module):
    """Three ``conv3x3 -> norm`` layers (LeakyReLU between), a ``conv1x1 -> norm`` shortcut, max-pool 2.

    Maps ``(B, in_channels, H, W) -> (B, out_channels, H // 2, W // 2)``.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(3):
            layers += [nn.Conv2d(channels, out_channels, 3, padding=1, bias=False), make_norm(norm, out_channels)]
            if i < 2:
                layers.append(nn.LeakyReLU(LEAK))
            channels = out_channels
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), make_norm(norm, out_channels)
        )
        self.out = nn.Sequential(nn.LeakyReLU(LEAK), nn.MaxPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H // 2, W // 2)``."""
        return self.out(self.body(x) + self.shortcut(x))


@register_backbone("resnet12")
class ResNet12(Backbone):
    """Residual stages of the given widths (default 64-160-320-640), then global average pooling.

    Any image size works once it survives the pooling: ``image_size >= 2 ** len(widths)``.

    Args:
        in_channels: Channels ``C`` of the input images.
        image_size: Side ``S`` of the square images the network is meant for (checked against the
            number of stages; other sizes are accepted at run time).
        widths: Output channels of each stage; ``feature_dim`` is the last one.
        norm: ``"batch" | "group" | "instance" | "none"`` (see :mod:`medfew.models.norm`).
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        image_size: int = 28,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        norm: str = "group",
    ) -> None:
        super().__init__(in_channels=in_channels, image_size=image_size)
        self.norm = check_norm(self._owner, norm)
        if (
            isinstance(widths, (str, bytes))
            or not isinstance(widths, Sequence)
            or not widths
            or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths)
        ):
            raise ConfigError(f"{self._owner}: widths must be a non-empty list of integers >= 1, got {widths!r}")
        self.widths = tuple(widths)
        if image_size < 2 ** len(self.widths):
            raise ConfigError(
                f"{self._owner}: image_size must be >= {2 ** len(self.widths)} for {len(self.widths)} stages, "
                f"got {image_size}"
            )
        stages = []
        channels = in_channels
        for width in self.widths:
            stages.append(ResidualStage(channels, width, norm))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = self.widths[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, feature_dim)``."""
        self.check_input(images)
        return self.pool(self.stages(images)).flatten(1)

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments."""
        return {
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "widths": list(self.widths),
            "norm": self.norm,
        }
