"""MAML (Finn et al. 2017), first-order MAML and Meta-SGD (Li et al. 2017), with a Proto-MAML head.

All three are the family constructor of :class:`~medfew.methods.gradient_based.GradientBasedMethod`;
FOMAML and Meta-SGD fix one option each.
"""

from __future__ import annotations

from typing import Any, ClassVar

from medfew.methods.gradient_based import GradientBasedMethod
from medfew.methods.inner_optimizers import lr_key
from medfew.methods.registry import register_method

__all__ = ["FOMAML", "MAML", "MetaSGD", "lr_key"]


@register_method("maml")
class MAML(GradientBasedMethod):
    """Model-agnostic meta-learning with a linear head initialised for any number of classes.

    The meta-gradient flows through the inner steps (second order) unless ``first_order``. With
    ``head="proto"`` (default) the head starts as the prototype classifier (``W = 2 P``,
    ``b = -||P||^2``) and the meta-gradient also flows through that initialisation. The update rule
    is plain SGD unless ``inner_optimizer`` (or ``learn_inner_lr``) says otherwise; every option is
    described in :class:`~medfew.methods.gradient_based.GradientBasedMethod`.
    """


@register_method("fomaml")
class FOMAML(MAML):
    """First-order MAML: :class:`MAML` with ``first_order=True`` (any other value is refused)."""

    PRESET: ClassVar[dict[str, Any]] = {"first_order": True}


@register_method("metasgd")
class MetaSGD(MAML):
    """Meta-SGD: :class:`MAML` with ``learn_inner_lr=True`` (any other value is refused).

    The learnt rates are ``method.learnt_lrs``, a ``ParameterDict`` under :func:`lr_key` names.
    """

    PRESET: ClassVar[dict[str, Any]] = {"learn_inner_lr": True}
