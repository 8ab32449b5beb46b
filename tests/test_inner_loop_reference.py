"""The inner loop against a textbook reference: gradient descent on ``CE(head(f_theta(x)), y)`` with the
gradients of the whole loss from ``torch.func.grad``, one extra forward for the head initialisation.

:func:`~medfew.methods.inner_loop.adapt_task` computes the same steps from closed-form head gradients,
a feature pull-back and a first step that reuses the head's forward; both must give the same adapted
tensors and the same meta-gradients (second and first order), in float64 where rounding cannot hide a
missing term.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from medfew.methods.functional import linear_logits, proto_head, zero_head
from medfew.methods.inner_loop import HEAD_BIAS, HEAD_WEIGHT, adapt_task, linear_cross_entropy_grads
from medfew.models import build_backbone

WAYS, SHOTS, QUERIES, SIZE = 3, 2, 2, 16


def reference_inner_loop(net, params, images, labels, *, steps, lrs, first_order, head_init, adapt_backbone):
    """Plain gradient descent on ``(theta, W, b)`` with ``torch.func.grad`` of the whole inner loss
    (``lrs``: a learning rate, float or tensor, per adapted name)."""

    def embed(p):
        return functional_call(net, p, (images,))

    weight, bias = {"proto": proto_head, "zero": zero_head}[head_init](embed(params), labels, WAYS)
    fast = {HEAD_WEIGHT: weight, HEAD_BIAS: bias, **(params if adapt_backbone else {})}
    frozen = embed(params)

    def loss_fn(p):
        feats = embed({k: p[k] for k in params}) if adapt_backbone else frozen
        return F.cross_entropy(linear_logits(feats, p[HEAD_WEIGHT], p[HEAD_BIAS]), labels)

    for _ in range(steps):
        grads = torch.func.grad(loss_fn)(fast)
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        fast = {k: fast[k] - lrs[k] * grads[k] for k in fast}
    return {k: fast.get(k, params[k]) for k in params}, fast[HEAD_WEIGHT], fast[HEAD_BIAS], loss_fn(fast)


def task():
    g = torch.Generator().manual_seed(3)
    support = torch.randn(WAYS * SHOTS, 1, SIZE, SIZE, generator=g, dtype=torch.float64)
    query = torch.randn(WAYS * QUERIES, 1, SIZE, SIZE, generator=g, dtype=torch.float64)
    return support, torch.arange(WAYS).repeat_interleave(SHOTS), query, torch.arange(WAYS).repeat_interleave(QUERIES)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("head_init", ["proto", "zero"])
@pytest.mark.parametrize("adapt_backbone", [True, False])
@pytest.mark.parametrize("checkpoint", [False, True])
@pytest.mark.parametrize("steps", [0, 3])
def test_inner_loop_matches_the_reference(first_order, head_init, adapt_backbone, checkpoint, steps) -> None:
    torch.manual_seed(0)
    net = build_backbone("conv4", in_channels=1, image_size=SIZE, hidden=4).double()
    params = dict(net.named_parameters())
    support, labels, query, query_labels = task()
    lrs = dict.fromkeys([*params, HEAD_WEIGHT, HEAD_BIAS], 0.3)

    def meta_gradients(adapted_backbone, weight, bias):
        logits = linear_logits(functional_call(net, adapted_backbone, (query,)), weight, bias)
        for p in params.values():
            p.grad = None
        F.cross_entropy(logits, query_labels).backward()  # (reentrant checkpointing refuses autograd.grad)
        return [p.grad.clone() for p in params.values()]

    ref_backbone, ref_weight, ref_bias, _ = reference_inner_loop(
        net, params, support, labels, steps=steps, lrs=lrs, first_order=first_order,
        head_init=head_init, adapt_backbone=adapt_backbone,
    )
    out = adapt_task(
        net, params, {}, support, labels, WAYS, steps=steps, lrs=lrs,
        first_order=first_order, head_init=head_init, adapt_backbone=adapt_backbone, checkpoint=checkpoint,
    )
    torch.testing.assert_close(out.head_weight, ref_weight, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(out.head_bias, ref_bias, rtol=1e-9, atol=1e-11)
    for k in params:
        torch.testing.assert_close(out.backbone[k], ref_backbone[k], rtol=1e-9, atol=1e-11)
    expected = meta_gradients(ref_backbone, ref_weight, ref_bias)
    got = meta_gradients(out.backbone, out.head_weight, out.head_bias)
    if steps or head_init == "proto":  # (a zero head before any step scores every query alike: no gradient)
        assert any(float(g.abs().max()) > 1e-6 for g in expected)
    for k, e, g in zip(params, expected, got):
        torch.testing.assert_close(g, e, rtol=1e-7, atol=1e-10, msg=lambda m, k=k: f"{k}: {m}")


def test_linear_cross_entropy_grads_match_autograd() -> None:
    g = torch.Generator().manual_seed(1)
    features = torch.randn(6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    logits, dw, db, df = linear_cross_entropy_grads(features, weight, bias, labels)
    expected = torch.autograd.grad(F.cross_entropy(linear_logits(features, weight, bias), labels), (weight, bias, features))
    torch.testing.assert_close(logits, linear_logits(features, weight, bias))
    for got, want in zip((dw, db, df), expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("first_order", [False, True])
def test_learnt_learning_rates_get_the_reference_meta_gradient(first_order: bool) -> None:
    """Meta-SGD: tensor learning rates (per scalar of every adapted tensor) are meta-parameters too."""
    torch.manual_seed(0)
    net = build_backbone("conv4", in_channels=1, image_size=SIZE, hidden=4).double()
    params = dict(net.named_parameters())
    support, labels, query, query_labels = task()
    shapes = {**{k: v.shape for k, v in params.items()}, HEAD_WEIGHT: (1, net.feature_dim), HEAD_BIAS: (1,)}
    g = torch.Generator().manual_seed(5)
    lrs = {k: (0.1 + 0.2 * torch.rand(shape, generator=g, dtype=torch.float64)).requires_grad_() for k, shape in shapes.items()}

    def meta_gradients(backbone, weight, bias):
        loss = F.cross_entropy(linear_logits(functional_call(net, backbone, (query,)), weight, bias), query_labels)
        return torch.autograd.grad(loss, [*params.values(), *lrs.values()])

    ref = reference_inner_loop(net, params, support, labels, steps=2, lrs=lrs, first_order=first_order,
                               head_init="proto", adapt_backbone=True)
    out = adapt_task(net, params, {}, support, labels, WAYS, steps=2, lrs=lrs, first_order=first_order)
    expected, got = meta_gradients(*ref[:3]), meta_gradients(out.backbone, out.head_weight, out.head_bias)
    names = [*params, *(f"lr of {k}" for k in lrs)]
    # every rate moves the query loss, except those of the conv biases: GroupNorm with one channel per
    # group (hidden=4) subtracts them again, so their gradients are ~1e-33
    moved = {k: float(e.abs().max()) > 1e-9 for k, e in zip(lrs, expected[len(params):])}
    assert moved == {k: not k.endswith(".0.bias") for k in lrs}
    for k, e, o in zip(names, expected, got):
        torch.testing.assert_close(o, e, rtol=1e-7, atol=1e-10, msg=lambda m, k=k: f"{k}: {m}")
