"""MONAI networks (2-D DenseNet-121, ResNet-10/18) wrapped as feature extractors.

The classification head is removed (``feed_forward=False`` for ResNet, an identity in place of
DenseNet's last linear layer), so each maps ``(B, C, H, W)`` to its pooled features. ``norm`` is
applied to every normalisation layer after construction (MONAI's ResNet passes its ``norm`` argument
to the stem only). ``stem="small"`` replaces the ImageNet stem (7x7 stride-2 conv + max-pool, a 4x
reduction) by a 3x3 stride-1 conv without pooling, which MedMNIST-sized images (28x28) need:
DenseNet-121's three transitions would otherwise pool a 28x28 image below one pixel. The default
``stem=None`` picks ``"small"`` below 64 pixels and ``"imagenet"`` otherwise; ``config()`` stores
the resolved choice. MONAI is imported when a network is built, not with this module (importing
its networks takes seconds). MONAI's in-place ReLUs are made out-of-place: after an identity norm
(``norm="none"``) an in-place ReLU would overwrite a tensor that autograd still needs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medfew.errors import ConfigError
from medfew.models.base import Backbone
from medfew.models.checks import check_choice
from medfew.models.norm import check_norm, replace_batch_norms
from medfew.models.registry import register_backbone

STEMS = ("small", "imagenet")
SMALL_IMAGE = 64


def _no_inplace(module: nn.Module) -> nn.Module:
    """Turn off ``inplace`` on every activation inside ``module``; returns ``module``."""
    for child in module.modules():
        if hasattr(child, "inplace"):
            child.inplace = False
    return module


def _resolve_stem(owner: str, stem: str | None, image_size: int, minimum: int) -> str:
    stem = ("small" if image_size < SMALL_IMAGE else "imagenet") if stem is None else stem
    check_choice(owner, "stem", stem, STEMS)
    if stem == "imagenet" and image_size < minimum:
        raise ConfigError(f"{owner}: stem='imagenet' needs image_size >= {minimum}, got {image_size}; use stem='small'")
    return stem


class _MonaiBackbone(Backbone):
    """Shared constructor bookkeeping and ``forward`` of the MONAI wrappers."""

    net: nn.Module

    def __init__(self, *, in_channels: int, image_size: int, norm: str, stem: str | None, minimum: int) -> None:
        super().__init__(in_channels=in_channels, image_size=image_size)
        self.norm = check_norm(self._owner, norm)
        self.stem = _resolve_stem(self._owner, stem, image_size, minimum)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, feature_dim)``."""
        self.check_input(images)
        return self.net(images)

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments."""
        return {"in_channels": self.in_channels, "image_size": self.image_size, "norm": self.norm, "stem": self.stem}


@register_backbone("monai_densenet121")
class MonaiDenseNet121(_MonaiBackbone):
    """``monai.networks.nets.DenseNet121`` (``spatial_dims=2``) without its linear head: 1024 features.

    Args:
        in_channels: Channels ``C`` of the input images.
        image_size: Side ``S`` of the images the network is meant for (chooses the default stem).
        norm: ``"batch" | "group" | "instance" | "none"`` (see :mod:`medfew.models.norm`).
        stem: ``"small"``, ``"imagenet"`` or ``None`` (automatic, see the module docstring).
    """

    def __init__(
        self, *, in_channels: int = 3, image_size: int = 28, norm: str = "group", stem: str | None = None
    ) -> None:
        super().__init__(in_channels=in_channels, image_size=image_size, norm=norm, stem=stem, minimum=32)
        from monai.networks.nets import DenseNet121  # lazy: see the module docstring

        net = DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=1)
        if self.stem == "small":
            init_features = net.features.conv0.out_channels
            net.features.conv0 = nn.Conv2d(in_channels, init_features, kernel_size=3, padding=1, bias=False)
            nn.init.kaiming_normal_(net.features.conv0.weight)
            net.features.pool0 = nn.Identity()
        self.feature_dim = net.class_layers.out.in_features
        net.class_layers.out = nn.Identity()
        self.net = _no_inplace(replace_batch_norms(net, self.norm))


class _MonaiResNet(_MonaiBackbone):
    """``monai.networks.nets.ResNet`` (basic blocks, ``spatial_dims=2``, no head): 512 features."""

    layers: tuple[int, int, int, int]

    def __init__(
        self, *, in_channels: int = 3, image_size: int = 28, norm: str = "group", stem: str | None = None
    ) -> None:
        super().__init__(in_channels=in_channels, image_size=image_size, norm=norm, stem=stem, minimum=16)
        from monai.networks.nets import ResNet  # lazy: see the module docstring

        small = self.stem == "small"
        net = ResNet(
            block="basic",
            layers=list(self.layers),
            block_inplanes=[64, 128, 256, 512],
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=3 if small else 7,
            conv1_t_stride=1 if small else 2,
            no_max_pool=small,
            feed_forward=False,
        )
        self.feature_dim = 512
        self.net = _no_inplace(replace_batch_norms(net, self.norm))


@register_backbone("monai_resnet18")
class MonaiResNet18(_MonaiResNet):
    """MONAI ResNet-18 (2-2-2-2 basic blocks). Args as :class:`MonaiDenseNet121`."""

    layers = (2, 2, 2, 2)


@register_backbone("monai_resnet10")
class MonaiResNet10(_MonaiResNet):
    """MONAI ResNet-10 (1-1-1-1 basic blocks). Args as :class:`MonaiDenseNet121`."""

    layers = (1, 1, 1, 1)
