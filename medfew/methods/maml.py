"""MAML (Finn et al. 2017), first-order MAML and Meta-SGD (Li et al. 2017), with a Proto-MAML head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medfew.errors import ConfigError
from medfew.methods.gradient_based import GradientBasedMethod
from medfew.methods.inner_loop import HEAD_BIAS, HEAD_WEIGHT
from medfew.methods.registry import register_method
from medfew.models.checks import check_bool


def lr_key(name: str) -> str:
    """``nn.ParameterDict`` key of the learnt learning rate of tensor ``name`` (dots are not allowed)."""
    return name.replace(".", "__")


@register_method("maml")
class MAML(GradientBasedMethod):
    """Model-agnostic meta-learning with a linear head initialised for any number of classes.

    The meta-gradient flows through the inner steps (second order) unless ``first_order``. With
    ``head="proto"`` (default) the head starts as the prototype classifier (``W = 2 P``,
    ``b = -||P||^2``) and the meta-gradient also flows through that initialisation.

    Args:
        backbone: ``(B, C, H, W) -> (B, D)`` encoder without running-statistics BatchNorm.
        inner_steps: Inner steps during meta-training.
        test_inner_steps: Inner steps in eval mode; ``None`` means ``2 * inner_steps``.
        inner_lr: Inner-loop learning rate (the initial value of every learnt rate for Meta-SGD).
        first_order: FOMAML: ignore second-order terms.
        head: ``"proto"`` or ``"zero"``.
        inner_params: ``"all"`` or ``"head"`` (ANIL-style: only the head adapts).
        learn_inner_lr: Meta-SGD: meta-learn one learning rate per adapted scalar (the head's rates
            are shared across classes, ``(1, D)`` and ``(1,)``, so they work for any ``N``).
        vectorize: ``True``: ``vmap`` the inner loops of a meta-batch of one shape; ``False``: the
            per-task loop; ``"auto"`` (default): ``vmap`` on CUDA, the loop on the CPU (see
            :class:`~medfew.methods.gradient_based.GradientBasedMethod`).
        checkpoint_inner: Recompute the inner steps in the outer backward (less memory, per-task loop;
            second order only).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        inner_steps: int = 5,
        test_inner_steps: int | None = None,
        inner_lr: float = 0.01,
        first_order: bool = False,
        head: str = "proto",
        inner_params: str = "all",
        learn_inner_lr: bool = False,
        vectorize: bool | str = "auto",
        checkpoint_inner: bool = False,
    ) -> None:
        super().__init__(
            backbone,
            inner_steps=inner_steps,
            test_inner_steps=test_inner_steps,
            inner_lr=inner_lr,
            head=head,
            inner_params=inner_params,
            vectorize=vectorize,
            checkpoint_inner=checkpoint_inner,
        )
        self.first_order = check_bool(self.name, "first_order", first_order)
        self.learn_inner_lr = check_bool(self.name, "learn_inner_lr", learn_inner_lr)
        self.learnt_lrs: nn.ParameterDict | None = None
        if learn_inner_lr:
            shapes = {k: v.shape for k, v in backbone.named_parameters()}
            dim = getattr(backbone, "feature_dim", None)
            if not isinstance(dim, int):
                raise ConfigError(
                    f"{self.name}: learn_inner_lr needs a backbone with an integer feature_dim, got {dim!r}"
                )
            shapes.update({HEAD_WEIGHT: torch.Size([1, dim]), HEAD_BIAS: torch.Size([1])})
            self.learnt_lrs = nn.ParameterDict(
                {lr_key(k): nn.Parameter(torch.full(shapes[k], self.inner_lr)) for k in self.adapted_names()}
            )

    def inner_lrs(self) -> dict[str, float | torch.Tensor]:
        """Fixed ``inner_lr`` for every adapted tensor, or the learnt Meta-SGD rates."""
        if self.learnt_lrs is None:
            return super().inner_lrs()
        return {k: self.learnt_lrs[lr_key(k)] for k in self.adapted_names()}

    def hyperparameters(self) -> dict[str, Any]:
        """Constructor keyword arguments."""
        return {**super().hyperparameters(), "first_order": self.first_order, "learn_inner_lr": self.learn_inner_lr}


def _preset(owner: str, hp: dict[str, Any], key: str, value: bool) -> dict[str, Any]:
    if hp.get(key, value) is not value:
        raise ConfigError(f"{owner}: {key} is fixed to {value} for this method, got {hp[key]!r}")
    return {**hp, key: value}


@register_method("fomaml")
class FOMAML(MAML):
    """First-order MAML: :class:`MAML` with ``first_order=True`` (any other value is refused)."""

    def __init__(self, backbone: nn.Module, **hyperparameters: Any) -> None:
        super().__init__(backbone, **_preset("fomaml", hyperparameters, "first_order", True))


@register_method("metasgd")
class MetaSGD(MAML):
    """Meta-SGD: :class:`MAML` with ``learn_inner_lr=True`` (any other value is refused)."""

    def __init__(self, backbone: nn.Module, **hyperparameters: Any) -> None:
        super().__init__(backbone, **_preset("metasgd", hyperparameters, "learn_inner_lr", True))
