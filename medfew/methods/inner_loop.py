"""The functional inner loop shared by MAML, FOMAML, Meta-SGD and Reptile.

:func:`adapt_task` is a pure function of ``(params, buffers, support, labels)``: it reads the
backbone module only as a function (``torch.func.functional_call``), mutates nothing, and returns
the adapted tensors, so it can be ``torch.func.vmap``-ed over a stack of tasks.

Inner gradients come from ``torch.func.grad`` rather than ``torch.autograd.grad(create_graph=...)``.
The Proto-MAML head is itself a function of the backbone parameters (``W = 2 P(theta)``), and
``autograd.grad`` with respect to both ``theta`` and ``W`` returns *total* derivatives (the
``theta`` gradient also flows back through ``W``'s construction, which is not gradient descent on
``(theta, W)``) and, in first-order mode, frees the head-initialisation graph that the outer
backward still needs. ``torch.func.grad`` differentiates with respect to its inputs as independent
variables, its result stays differentiable by ordinary autograd (second-order MAML: the outer
``backward`` sees through the inner steps and the head initialisation), and it composes with
``vmap``. ``first_order=True`` detaches the inner gradients (FOMAML, Reptile).

``checkpoint=True`` recomputes each inner step during the outer backward instead of keeping its graph
(``torch.utils.checkpoint``, reentrant form: the non-reentrant form relies on saved-tensor hooks, which
``torch.func.grad`` refuses). Memory then grows with one inner step, not with ``steps``, for about one
more forward and inner backward per step. The reentrant form is an ``autograd.Function`` without a
``vmap`` rule, so checkpointed inner loops run task by task, and it hands gradients only to its tensor
inputs and to leaf tensors (parameters): every non-leaf tensor a step reads is passed in explicitly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint as checkpoint_fn

from medfew.methods.functional import linear_logits, proto_head, zero_head

HEAD_WEIGHT = "head.weight"
HEAD_BIAS = "head.bias"
HEAD_INITS: dict[str, Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]] = {
    "proto": proto_head,
    "zero": zero_head,
}

Params = dict[str, torch.Tensor]
LossFn = Callable[[Params], tuple[torch.Tensor, torch.Tensor]]  # params -> (loss, logits)
GradFn = Callable[[LossFn, Params, bool], tuple[Params, torch.Tensor]]


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


def func_grads(loss_fn: LossFn, params: Params, first_order: bool) -> tuple[Params, torch.Tensor]:
    """Partial derivatives of ``loss_fn(params)[0]`` by ``torch.func.grad`` (composable with ``vmap``).

    Differentiable by the caller's autograd (second order) unless ``first_order`` (then detached).

    Returns:
        The gradients by name and the logits ``loss_fn`` returned beside the loss.
    """
    grads, logits = torch.func.grad(loss_fn, has_aux=True)(params)
    return ({k: g.detach() for k, g in grads.items()} if first_order else grads), logits


def adapt_task(
    backbone: nn.Module,
    params: Params,
    buffers: Params,
    images: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    *,
    steps: int,
    lrs: Mapping[str, float | torch.Tensor],
    first_order: bool,
    head_init: str = "proto",
    adapt_backbone: bool = True,
    grad_fn: GradFn = func_grads,
    checkpoint: bool = False,
) -> TaskParams:
    """Fit a linear head (and optionally the backbone) to one task by ``steps`` of gradient descent.

    The head starts from ``HEAD_INITS[head_init]`` of the initial features; each step is
    ``theta <- theta - lr_theta * grad CE(head(f_theta(images)), labels)``.

    Args:
        backbone: Module used as a function through ``functional_call``; its own tensors are ignored.
        params: Backbone parameters by name (meta-parameters, or detached copies at test time).
        buffers: Backbone buffers by name (empty for the default per-image norms).
        images: ``(S, C, H, W)`` inner-loop data (the support; support + query for Reptile).
        labels: ``(S,)`` int64 in ``[0, N)``.
        n_classes: ``N`` (static, so the function can be vmapped).
        steps: Number of inner steps (``0`` returns the initial head).
        lrs: Learning rate per adapted tensor name: backbone parameter names, :data:`HEAD_WEIGHT`,
            :data:`HEAD_BIAS`; floats or tensors broadcastable to the parameter (Meta-SGD).
        first_order: Detach the inner gradients (FOMAML, Reptile).
        head_init: ``"proto"`` or ``"zero"``.
        adapt_backbone: Adapt the backbone parameters too (``inner_params="all"``) or only the head
            (the support features are then computed once, from ``params``).
        grad_fn: Computes the inner gradients; :func:`func_grads` (the only one provided).
        checkpoint: Recompute every inner step in the outer backward instead of storing its graph
            (only where autograd records the loop; not under ``vmap``, see the module notes).

    Returns:
        The adapted :class:`TaskParams`.
    """

    def embed(backbone_params: Params) -> torch.Tensor:
        return functional_call(backbone, {**backbone_params, **buffers}, (images,))

    features = embed(params)
    weight, bias = HEAD_INITS[head_init](features, labels, n_classes)
    fast: Params = {HEAD_WEIGHT: weight, HEAD_BIAS: bias}
    if adapt_backbone:
        fast.update(params)
    logits = linear_logits(features, weight, bias)
    loss = F.cross_entropy(logits, labels)

    def loss_fn(p: Params, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if adapt_backbone:
            feats = embed({k: p[k] for k in params})
        step_logits = linear_logits(feats, p[HEAD_WEIGHT], p[HEAD_BIAS])
        return F.cross_entropy(step_logits, labels), step_logits

    keys = list(fast)

    def step(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(*fast tensors in `keys` order, features) -> (*updated fast tensors, logits)``."""
        current, feats = dict(zip(keys, tensors[:-1])), tensors[-1]
        grads, step_logits = grad_fn(lambda p: loss_fn(p, feats), current, first_order)
        return (*(current[k] - lrs[k] * grads[k] for k in keys), step_logits)

    recompute = checkpoint and torch.is_grad_enabled() and any(v.requires_grad for v in fast.values())
    for _ in range(steps):
        inputs = (*(fast[k] for k in keys), features)
        out = checkpoint_fn(step, *inputs, use_reentrant=True) if recompute else step(*inputs)
        fast, logits = dict(zip(keys, out[:-1])), out[-1]
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
