"""The :class:`Backbone` contract: an image encoder ``(B, C, H, W) -> (B, feature_dim)``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from medfew.errors import ConfigError
from medfew.models.checks import check_int


class Backbone(nn.Module, ABC):
    """Base class of every registered encoder.

    Subclasses set ``feature_dim`` in ``__init__``, implement ``forward`` and ``config``. ``name`` is
    set by :func:`~medfew.models.registry.register_backbone`.

    Attributes:
        name: Registry name.
        feature_dim: Size ``D`` of the output features.
        in_channels: Channels ``C`` of the input images.
        image_size: Side ``S`` of the square images the network was built for.
    """

    name: str = ""
    feature_dim: int

    def __init__(self, *, in_channels: int, image_size: int) -> None:
        super().__init__()
        self.in_channels = check_int(self._owner, "in_channels", in_channels, 1)
        self.image_size = check_int(self._owner, "image_size", image_size, 1)

    @property
    def _owner(self) -> str:
        return f"backbone {type(self).name or type(self).__name__!r}"

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor keyword arguments: ``build_backbone(name, **config())`` rebuilds it."""

    def block_sequence(self) -> list[nn.Module]:
        """The backbone's blocks from input to output, for test-time fine-tuning of the top ones.

        The default reads an ``nn.Sequential``/``nn.ModuleList`` attribute ``blocks``; a backbone
        without one cannot fine-tune its top blocks.
        """
        blocks = getattr(self, "blocks", None)
        if not isinstance(blocks, (nn.Sequential, nn.ModuleList)):
            raise ConfigError(f"{self._owner} has no block sequence to fine-tune (use finetune_depth=0)")
        return list(blocks)

    def finetune_modules(self, depth: int) -> list[nn.Module]:
        """The top ``depth`` blocks (fine-tuned with the head at test time).

        Raises:
            ConfigError: ``depth`` is not in ``[1, number of blocks]``.
        """
        blocks = self.block_sequence()
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= len(blocks):
            raise ConfigError(f"{self._owner}: finetune depth must be in [1, {len(blocks)}], got {depth!r}")
        return blocks[-depth:]

    def check_input(self, images: torch.Tensor, *, exact_size: bool = False) -> None:
        """Refuse images of the wrong rank or channel count (and size, for ``exact_size``).

        Args:
            images: ``(B, C, H, W)``.
            exact_size: Also require ``H == W == image_size`` (networks that flatten feature maps).

        Raises:
            ConfigError: Naming the expected ``in_channels`` / ``image_size`` and the shape received.
        """
        shape = tuple(images.shape)
        bad = images.ndim != 4 or shape[1] != self.in_channels
        if exact_size and not bad:
            bad = shape[2] != self.image_size or shape[3] != self.image_size
        if bad:
            expected = (
                f"(B, {self.in_channels}, {self.image_size}, {self.image_size})"
                if exact_size
                else f"(B, {self.in_channels}, H, W)"
            )
            raise ConfigError(
                f"{self._owner} was built with in_channels={self.in_channels}, image_size={self.image_size}: "
                f"it expects {expected} images, got {shape}"
            )
