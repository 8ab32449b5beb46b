"""A plain-PyTorch Conv4-64 for the peer side, layer for layer the network medfew builds as ``conv4``.

Four ``[conv3x3(64, padding 1) -> GroupNorm(32, 64) -> ReLU -> maxpool2]`` blocks, flattened: at 28x28x3
the features are ``64 * 1 * 1 = 64`` long. The module tree (``blocks.{i}.{0,1}``) matches medfew's
``Conv4``, so a medfew state dict loads into it and both compute the same function (checked by
``tests/test_bench_peers.py``). It imports only torch, so a peer's process never imports medfew.

GroupNorm, not BatchNorm, on both sides: learn2learn's own ``CNN4`` uses BatchNorm with running
statistics, which medfew's functional inner loop refuses (``vmap`` cannot update buffers in place, and
running statistics leak one task into the next); every peer accepts any ``nn.Module``, so the fairest
equal setup is the same per-image norm everywhere.
"""

from __future__ import annotations

import torch
from torch import nn

HIDDEN = 64
GROUPS = 32  # medfew.models.norm.group_count(64)
N_BLOCKS = 4


class PlainConv4(nn.Module):
    """``(B, C, S, S) -> (B, hidden * (S // 16) ** 2)`` features, optionally followed by a linear head.

    Args:
        in_channels: Channels ``C`` of the input images.
        image_size: Side ``S`` of the square input images.
        hidden: Channels of every block.
        n_classes: Output size of a linear head on the features (MAML-style peers), or ``None`` for
            the bare encoder (metric methods).
    """

    def __init__(
        self, in_channels: int = 3, image_size: int = 28, hidden: int = HIDDEN, n_classes: int | None = None
    ) -> None:
        super().__init__()
        blocks = []
        channels = in_channels
        for _ in range(N_BLOCKS):
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, hidden, kernel_size=3, padding=1),
                    nn.GroupNorm(GROUPS if hidden % GROUPS == 0 else 1, hidden),
                    nn.ReLU(),
                    nn.MaxPool2d(2),
                )
            )
            channels = hidden
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = hidden * (image_size // 2**N_BLOCKS) ** 2
        self.head = nn.Linear(self.feature_dim, n_classes) if n_classes else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S) -> (B, feature_dim)``, or ``(B, n_classes)`` logits with a head."""
        features = self.blocks(images).flatten(1)
        return features if self.head is None else self.head(features)
