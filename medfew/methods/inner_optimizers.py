"""Inner update rules of the gradient-based methods: one interface, several rules.

An :class:`InnerOptimizer` turns the inner-loop gradients into new fast weights. It is an
``nn.Module`` whose parameters (if any) are meta-learned with the backbone by the outer optimiser, and
its ``step`` is a pure function of ``(params, grads, state)`` built from plain tensor ops, so the inner
loop of :mod:`medfew.methods.inner_loop` can differentiate through it (second order), ``vmap`` it over
tasks and recompute it under checkpointing. Rules that cannot take part in one of those say so with
the ``supports_*`` flags; the methods then refuse the option with a :class:`~medfew.errors.ConfigError`.

Rules (``INNER_OPTIMIZERS``, the methods' ``inner_optimizer`` option):

* ``"sgd"``: ``theta <- theta - lr * g`` (MAML, FOMAML, Reptile);
* ``"metasgd"``: one meta-learned rate per adapted scalar (Meta-SGD, Li et al. 2017);
* ``"lstm"``: a coordinatewise LSTM proposes the update (learning to optimise; see
  :mod:`medfew.methods.lstm_optimizer`).

Names: ``Params`` maps the names of the adapted tensors (backbone parameter names, ``head.weight``,
``head.bias``) to tensors of any shape; ``state`` is any pytree of tensors (``{}`` for stateless rules).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from medfew.errors import ConfigError

Params = dict[str, torch.Tensor]
OptState = Any  # a pytree of tensors (dicts, tuples, lists)

HEAD_WEIGHT = "head.weight"
HEAD_BIAS = "head.bias"


def lr_key(name: str) -> str:
    """``nn.ParameterDict`` key of the learnt learning rate of tensor ``name`` (dots are not allowed)."""
    return name.replace(".", "__")


class InnerOptimizer(nn.Module, ABC):
    """The update rule of an inner loop.

    Attributes:
        kind: The rule's name in :data:`INNER_OPTIMIZERS`.
        state_key: Attribute under which a method registers the rule, hence the prefix of its
            parameters in the method's ``state_dict``.
        supports_vmap: ``step`` works under ``torch.func.vmap`` (the vectorised meta-batch).
        supports_checkpoint: ``step`` can be recomputed by ``torch.utils.checkpoint`` (reentrant form:
            the rule may read only its inputs and leaf parameters).
    """

    kind: ClassVar[str] = ""
    state_key: ClassVar[str] = "inner_optimizer"
    supports_vmap: ClassVar[bool] = True
    supports_checkpoint: ClassVar[bool] = True

    def init_state(self, params: Params) -> OptState:
        """The rule's state before the first step (``{}`` for stateless rules)."""
        return {}

    @abstractmethod
    def step(self, params: Params, grads: Params, state: OptState) -> tuple[Params, OptState]:
        """One update.

        Args:
            params: Current fast weights by name (any shapes).
            grads: Gradients of the inner loss, same names and shapes.
            state: The state returned by the previous step (or :meth:`init_state`).

        Returns:
            The updated fast weights (same names and shapes) and the new state.
        """


class SGD(InnerOptimizer):
    """Plain gradient descent, ``theta <- theta - lr * g``.

    Args:
        lrs: One learning rate for every tensor, or a rate per tensor name (floats or tensors that
            broadcast to the tensor; they are read, not registered as parameters).
    """

    kind = "sgd"

    def __init__(self, lrs: float | Mapping[str, float | torch.Tensor]) -> None:
        super().__init__()
        self.lrs = lrs

    def step(self, params: Params, grads: Params, state: OptState) -> tuple[Params, OptState]:
        """``{k: p - lr_k * g_k}``; the state is passed through."""
        if isinstance(self.lrs, Mapping):
            return {k: p - self.lrs[k] * grads[k] for k, p in params.items()}, state
        return {k: p - self.lrs * grads[k] for k, p in params.items()}, state


class PerParameterSGD(nn.ParameterDict, InnerOptimizer):
    """Meta-SGD: gradient descent with one meta-learned rate per adapted scalar.

    The rates are the entries of this ``ParameterDict`` under :func:`lr_key` names; a method registers
    the rule as ``learnt_lrs`` (the name Meta-SGD checkpoints have always used).

    Args:
        shapes: Shape of the rate tensor of every adapted tensor name (e.g. ``(1, D)`` for the head's
            weight, shared across classes so that it works for any ``N``).
        lr: Initial value of every rate.
    """

    kind = "metasgd"
    state_key = "learnt_lrs"

    def __init__(self, shapes: Mapping[str, torch.Size], lr: float) -> None:
        super().__init__({lr_key(k): nn.Parameter(torch.full(tuple(s), float(lr))) for k, s in shapes.items()})

    def step(self, params: Params, grads: Params, state: OptState) -> tuple[Params, OptState]:
        """``{k: p - rate_k * g_k}``; the state is passed through."""
        return {k: p - self[lr_key(k)] * grads[k] for k, p in params.items()}, state


# (owner, backbone, adapted tensor names, inner_lr, rule options) -> rule
RuleFactory = Callable[[str, nn.Module, list[str], float, dict[str, Any]], InnerOptimizer]


def _sgd(owner: str, backbone: nn.Module, names: list[str], lr: float, options: dict[str, Any]) -> InnerOptimizer:
    return SGD(lr)


def _metasgd(owner: str, backbone: nn.Module, names: list[str], lr: float, options: dict[str, Any]) -> InnerOptimizer:
    dim = getattr(backbone, "feature_dim", None)
    if not isinstance(dim, int):
        raise ConfigError(f"{owner}: learn_inner_lr needs a backbone with an integer feature_dim, got {dim!r}")
    shapes = {k: v.shape for k, v in backbone.named_parameters()}
    shapes.update({HEAD_WEIGHT: torch.Size([1, dim]), HEAD_BIAS: torch.Size([1])})
    return PerParameterSGD({k: shapes[k] for k in names}, lr)


def _lstm(owner: str, backbone: nn.Module, names: list[str], lr: float, options: dict[str, Any]) -> InnerOptimizer:
    from medfew.methods.lstm_optimizer import LSTMOptimizer

    return LSTMOptimizer(lr, **options, owner=owner)


INNER_OPTIMIZERS: dict[str, RuleFactory] = {"sgd": _sgd, "metasgd": _metasgd, "lstm": _lstm}


def build_inner_optimizer(
    owner: str, kind: str, backbone: nn.Module, names: list[str], lr: float, options: dict[str, Any]
) -> InnerOptimizer:
    """Build the rule ``kind`` of :data:`INNER_OPTIMIZERS` for a method.

    Args:
        owner: The method's name, for error messages.
        kind: A key of :data:`INNER_OPTIMIZERS`.
        backbone: The method's backbone (rules sized per parameter read its shapes).
        names: Names of the adapted tensors, backbone parameters then ``head.weight``, ``head.bias``.
        lr: The method's ``inner_lr`` (the initial or base rate of every rule).
        options: Rule-specific keyword arguments (only ``"lstm"`` takes any).

    Raises:
        ConfigError: A rule that cannot be built for this backbone.
    """
    return INNER_OPTIMIZERS[kind](owner, backbone, names, lr, options)
