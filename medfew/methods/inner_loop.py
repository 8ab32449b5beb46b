"""The functional inner loop shared by MAML, FOMAML, Meta-SGD, the learned optimiser (l2o) and Reptile.

:func:`adapt_task` is a pure function of ``(params, buffers, support, labels)``: it reads the
backbone module only as a function (``torch.func.functional_call``), mutates nothing, and returns
the adapted tensors, so it can be ``torch.func.vmap``-ed over a stack of tasks.

Each inner step is one forward of the support through the backbone and one pull-back of the feature
gradient (``torch.func.vjp``): the loss is ``CE(f_theta(x) W^T + b, y)``, whose gradients with
respect to the linear head and to the features have the closed form of
:func:`linear_cross_entropy_grads`, and the backbone gradient is the vector-Jacobian product of the
features with that feature gradient. The first step reuses the forward that initialised the
Proto-MAML head (``W = 2 P(f_theta(x))``), so ``steps`` inner steps cost ``steps`` support forwards,
not ``steps + 1``: a second-order meta-iteration runs the same kernels as learn2learn's MAML (the same
count of every convolution, pooling and norm kernel; ``docs/benchmarks.md`` has the figures before and
after).

The gradients are *partial* derivatives, as gradient descent on ``(theta, W, b)`` needs, even
though the Proto-MAML head is itself a function of ``theta``: the pull-back runs through the
features only, never through the head's construction. They stay differentiable by ordinary
autograd, so second-order MAML's outer ``backward`` sees through the inner steps and the head
initialisation. With ``first_order=True`` (FOMAML, Reptile) autograd does not record the inner steps at
all (``torch.no_grad``; ``torch.func.vjp`` differentiates at its own level regardless), so the outer
graph holds only the updates, the head initialisation and the query forward. ``torch.func.vjp`` composes with
``vmap``, so the same code serves the per-task loop and the vectorised meta-batch.

``checkpoint=True`` recomputes each inner step during the outer backward instead of keeping its graph
(``torch.utils.checkpoint``, reentrant form: the non-reentrant form relies on saved-tensor hooks, which
``torch.func`` transforms refuse). Memory then grows with one inner step, not with ``steps``, for about
one more forward and inner backward per step (and the first step does not reuse the head's forward).
The reentrant form is an ``autograd.Function`` without a ``vmap`` rule, so checkpointed inner loops run
task by task, and it hands gradients only to its tensor inputs and to leaf tensors (parameters): every
non-leaf tensor a step reads is passed in explicitly.

The update itself is an :class:`~medfew.methods.inner_optimizers.InnerOptimizer` (plain SGD unless a
rule is given): each step hands it the fast weights, their gradients and its state (a pytree of tensors,
flattened into the step's inputs so that checkpointing sees it), and takes back the new weights and
state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vjp
from torch.utils._pytree import tree_flatten, tree_unflatten
from torch.utils.checkpoint import checkpoint as checkpoint_fn

from medfew.errors import ConfigError
from medfew.methods.functional import (
    class_one_hot,
    linear_logits,
    proto_head,
    zero_head,
)
from medfew.methods.inner_optimizers import (
    HEAD_BIAS,
    HEAD_WEIGHT,
    SGD,
    InnerOptimizer,
    Params,
)

__all__ = ["HEAD_BIAS", "HEAD_INITS", "HEAD_WEIGHT", "Params", "TaskParams", "adapt_task", "gradients_enabled",
           "linear_cross_entropy_grads"]
HEAD_INITS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]] = {
    "proto": proto_head,
    "zero": zero_head,
}

Pullback = Callable[[torch.Tensor], tuple[Params]]


class TaskParams(NamedTuple):
    """The result of an inner loop (a pytree, so ``vmap`` can return it).

    Attributes:
        backbone: Adapted backbone parameters by name (the initial ones when only the head adapts).
        head_weight: ``(N, D)`` adapted linear head.
        head_bias: ``(N,)``.
        loss: ``()`` the inner loss at the last step (before its update), or at the start with 0 steps.
        logits: ``(S, N)`` the inner-data logits that gave ``loss``.
    """

    backbone: Params
    head_weight: torch.Tensor
    head_bias: torch.Tensor
    loss: torch.Tensor
    logits: torch.Tensor


def linear_cross_entropy_grads(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed-form gradients of the mean cross-entropy of a linear head, ``CE(f W^T + b, y)``.

    With ``G = (softmax(f W^T + b) - onehot(y)) / S`` the gradients are ``dW = G^T f``, ``db = sum_i G_i``
    and ``df = G W``. Every result is differentiable with respect to all three inputs (second order).

    Args:
        features: ``(S, D)``.
        weight: ``(N, D)``.
        bias: ``(N,)``.
        labels: ``(S,)`` int64 in ``[0, N)``.

    Returns:
        ``(S, N)`` logits, ``(N, D)`` weight gradient, ``(N,)`` bias gradient, ``(S, D)`` feature gradient.
    """
    logits = linear_logits(features, weight, bias)
    residual = (logits.softmax(-1) - class_one_hot(labels, weight.shape[0], logits)) / labels.shape[0]
    return logits, residual.T @ features, residual.sum(0), residual @ weight


def adapt_task(
    backbone: nn.Module,
    params: Params,
    buffers: Params,
    images: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    *,
    steps: int,
    lrs: Mapping[str, float | torch.Tensor] | None = None,
    first_order: bool,
    optimizer: InnerOptimizer | None = None,
    head_init: str = "proto",
    adapt_backbone: bool = True,
    checkpoint: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> TaskParams:
    """Fit a linear head (and optionally the backbone) to one task by ``steps`` inner steps.

    The head starts from ``HEAD_INITS[head_init]`` of the initial features; each step computes
    ``g = grad CE(head(f_theta(images)), labels)`` for the backbone and the head and applies the update
    rule: ``theta <- theta - lr_theta * g`` (``lrs``) or ``optimizer.step(theta, g, state)``.

    Args:
        backbone: Module used as a function through ``functional_call``; its own tensors are ignored.
        params: Backbone parameters by name (meta-parameters, or detached copies at test time).
        buffers: Backbone buffers by name (empty for the default per-image norms).
        images: ``(S, C, H, W)`` inner-loop data (the support; support + query for Reptile).
        labels: ``(S,)`` int64 in ``[0, N)``.
        n_classes: ``N`` (static, so the function can be vmapped).
        steps: Number of inner steps (``0`` returns the initial head).
        lrs: Learning rate per adapted tensor name: backbone parameter names, :data:`HEAD_WEIGHT`,
            :data:`HEAD_BIAS`; floats or tensors broadcastable to the parameter (plain SGD with these
            rates). Exactly one of ``lrs`` and ``optimizer``.
        first_order: Ignore second-order terms (FOMAML, Reptile): autograd records no inner step, only
            the updates, so the inner gradients are constants to the outer backward (and the returned
            ``loss`` / ``logits`` are detached once ``steps > 0``).
        head_init: ``"proto"`` or ``"zero"``.
        adapt_backbone: Adapt the backbone parameters too (``inner_params="all"``) or only the head
            (the support features are then computed once, from ``params``).
        checkpoint: Recompute every inner step in the outer backward instead of storing its graph
            (second order only: first-order steps keep no graph; not under ``vmap``, see the module
            notes).
        optimizer: The update rule (its parameters, if any, are meta-learned through the updates).
        on_step: ``on_step(done, steps)`` after each inner step (progress reports; not under ``vmap``).

    Returns:
        The adapted :class:`TaskParams`.

    Raises:
        ConfigError: Both or neither of ``lrs`` and ``optimizer``.
    """
    if (lrs is None) == (optimizer is None):
        raise ConfigError("adapt_task: give exactly one of lrs (plain SGD rates) and optimizer (an update rule)")
    rule = optimizer if optimizer is not None else SGD(lrs)

    def embed(backbone_params: Params) -> torch.Tensor:
        return functional_call(backbone, {**backbone_params, **buffers}, (images,))

    pullback: Pullback | None = None
    if adapt_backbone:
        features, pullback = vjp(embed, params)
    else:
        features = embed(params)
    weight, bias = HEAD_INITS[head_init](features, labels, n_classes)
    fast: Params = {HEAD_WEIGHT: weight, HEAD_BIAS: bias}
    if adapt_backbone:
        fast.update(params)
    keys = list(fast)
    state_leaves, state_spec = tree_flatten(rule.init_state(fast))
    n_fast, n_state = len(keys), len(state_leaves)

    def step(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(*fast tensors in `keys` order, *rule state leaves, features) -> (*updated fast tensors,
        *new state leaves, logits)``.

        Computes the backbone's forward (and pull-back) itself unless ``pullback`` holds the one of
        these very parameters (the first step, outside checkpointing).
        """
        current, feats = dict(zip(keys, tensors[:n_fast])), tensors[-1]
        state = tree_unflatten(list(tensors[n_fast : n_fast + n_state]), state_spec)
        back = pullback
        # First order: the outer backward needs none of this step's graph (only the update below),
        # so autograd records nothing here; torch.func.vjp still differentiates at its own level.
        with contextlib.nullcontext() if not first_order else torch.no_grad():
            if adapt_backbone and back is None:
                feats, back = vjp(embed, {k: current[k] for k in params})
            step_logits, grad_weight, grad_bias, grad_features = linear_cross_entropy_grads(
                feats, current[HEAD_WEIGHT], current[HEAD_BIAS], labels
            )
            grads = {HEAD_WEIGHT: grad_weight, HEAD_BIAS: grad_bias}
            if back is not None:
                grads.update(back(grad_features)[0])
        updated, state = rule.step(current, grads, state)
        return (*(updated[k] for k in keys), *tree_flatten(state)[0], step_logits)

    logits = linear_logits(features, weight, bias)
    recompute = (
        checkpoint and not first_order and torch.is_grad_enabled() and any(v.requires_grad for v in fast.values())
    )
    if recompute:
        pullback = None
    for done in range(1, steps + 1):
        inputs = (*(fast[k] for k in keys), *state_leaves, features)
        out = checkpoint_fn(step, *inputs, use_reentrant=True) if recompute else step(*inputs)
        fast, state_leaves, logits = dict(zip(keys, out[:n_fast])), list(out[n_fast:-1]), out[-1]
        pullback = None  # later steps run the forward of their own parameters
        if on_step is not None:
            on_step(done, steps)
    loss = F.cross_entropy(logits, labels)
    adapted = {k: fast[k] for k in params} if adapt_backbone else dict(params)
    return TaskParams(adapted, fast[HEAD_WEIGHT], fast[HEAD_BIAS], loss, logits)


@contextlib.contextmanager
def gradients_enabled() -> Iterator[None]:
    """Enable autograd inside ``torch.no_grad()`` or ``torch.inference_mode()`` blocks.

    Test-time adaptation needs gradients even when evaluation code disables them. Inputs created in
    inference mode must still be cloned by the caller before autograd records them.
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield
