"""Grad-CAM saliency for an adapted few-shot model, through :class:`monai.visualize.GradCAM`.

MONAI's Grad-CAM hooks a named layer of an ``nn.Module`` and backpropagates the chosen class's logit.
An :class:`~medfew.methods.base.AdaptedModel` is not a module, so :class:`AdaptedLogits` wraps its
``predict`` in one whose submodule ``backbone`` is the method's backbone: the target layer is the
backbone's last ``nn.Conv2d`` (e.g. ``backbone.blocks.3.0`` for ``conv4``). Methods that run the
backbone with adapted weights (MAML family, via ``torch.func.functional_call``) still go through the
same modules, so the hooks fire for them too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from monai.visualize import GradCAM
from torch import nn

from medfew.errors import ConfigError
from medfew.methods.base import AdaptedModel

SALIENCY_CAVEAT = (
    "Saliency maps (Grad-CAM) show which regions influenced the score; they are unreliable for "
    "localising findings and must not be read as a segmentation or as evidence of a lesion."
)


class AdaptedLogits(nn.Module):
    """``(B, C, H, W) -> (B, N)`` logits of the current adapted model, as a hookable module.

    Args:
        backbone: The method's backbone (registered as the submodule ``backbone``).
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.adapted: AdaptedModel | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of ``self.adapted`` for ``images``."""
        if self.adapted is None:
            raise ConfigError("AdaptedLogits has no adapted model: set .adapted first")
        return self.adapted.predict(images)


def last_conv_layer(module: nn.Module, prefix: str = "") -> str:
    """Name of the last ``nn.Conv2d`` in ``module.named_modules()`` order, with ``prefix`` prepended.

    Raises:
        ConfigError: The module has no 2D convolution (Grad-CAM needs a spatial feature map).
    """
    names = [name for name, sub in module.named_modules() if isinstance(sub, nn.Conv2d)]
    if not names:
        raise ConfigError(f"{type(module).__name__} has no Conv2d layer: Grad-CAM needs a spatial feature map")
    return f"{prefix}{names[-1]}"


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max scaling of ``(B, 1, H, W)`` maps to ``[0, 1]`` (largest -> 1); flat maps -> 0."""
    flat = maps.detach().flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1, 1)
    span = (flat.max(dim=1).values.view(-1, 1, 1, 1) - low)
    return torch.where(span > 0, (maps.detach() - low) / span.clamp_min(1e-12), torch.zeros_like(maps))


@contextlib.contextmanager
def _hooks_removed_after(module: nn.Module) -> Iterator[None]:
    """Remove every forward/backward hook added to ``module``'s submodules inside the block.

    MONAI's ``GradCAM`` hooks the target layer for good (it keeps no handles). A full backward hook left
    on the backbone breaks ``torch.func.vjp`` (the MAML family's inner loop) and fires on every later
    forward, so the hooks must only live for one saliency call.
    """
    before = {name: (set(sub._forward_hooks), set(sub._backward_hooks)) for name, sub in module.named_modules()}
    try:
        yield
    finally:
        for name, sub in module.named_modules():
            forward, backward = before.get(name, (set(), set()))
            for key in set(sub._forward_hooks) - forward:
                del sub._forward_hooks[key]
            for key in set(sub._backward_hooks) - backward:
                del sub._backward_hooks[key]
            if not sub._backward_hooks:
                sub._is_full_backward_hook = None


class SaliencyMapper:
    """Grad-CAM maps of an adapted model through MONAI's ``GradCAM``, hooks attached for one call at a time.

    Args:
        backbone: The method's backbone; its last ``Conv2d`` is the target layer.
    """

    def __init__(self, backbone: nn.Module) -> None:
        self.module = AdaptedLogits(backbone)
        self.target_layer = last_conv_layer(backbone, prefix="backbone.")

    def __call__(self, adapted: AdaptedModel, image: torch.Tensor, class_index: int) -> np.ndarray:
        """Grad-CAM of one normalised model input for one class.

        Args:
            adapted: The adapted model whose ``predict`` is explained.
            image: ``(C, H, W)`` or ``(1, C, H, W)`` normalised model input.
            class_index: Class whose logit is explained (the predicted one).

        Returns:
            float32 ``(H, W)`` in ``[0, 1]``.
        """
        x = (image if image.ndim == 4 else image.unsqueeze(0)).detach().clone().requires_grad_(True)
        self.module.adapted = adapted
        try:
            with _hooks_removed_after(self.module), torch.enable_grad():
                # MONAI's default normaliser maps max -> 0; ours maps the most influential region to 1.
                cam = GradCAM(nn_module=self.module, target_layers=self.target_layer, postprocessing=_min_max)
                maps = cam(x, class_idx=int(class_index))
        finally:
            self.module.adapted = None
            self.module.zero_grad(set_to_none=True)
        return maps[0, 0].detach().cpu().numpy().astype(np.float32).clip(0.0, 1.0)
