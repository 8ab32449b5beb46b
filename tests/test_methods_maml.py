"""The gradient-based family: MAML (second / first order), Meta-SGD, Reptile and their inner loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import vmap

from medfew.data.episodes.episode import Episode
from medfew.errors import ConfigError
from medfew.methods import build_method
from medfew.methods.functional import prototypes, squared_euclidean
from medfew.methods.inner_loop import adapt_task
from medfew.methods.maml import lr_key
from medfew.models import build_backbone

SIZE = 28


def backbone(hidden: int = 8, size: int = SIZE, **kwargs) -> nn.Module:
    return build_backbone("conv4", in_channels=1, image_size=size, hidden=hidden, **kwargs)


def episode(
    ways: int = 3, shots: int = 2, queries: int = 2, seed: int = 0, size: int = SIZE, dtype: torch.dtype = torch.float32
) -> Episode:
    g = torch.Generator().manual_seed(seed)
    return Episode(
        support_images=torch.randn(ways * shots, 1, size, size, generator=g).to(dtype),
        support_labels=torch.arange(ways).repeat_interleave(shots),
        query_images=torch.randn(ways * queries, 1, size, size, generator=g).to(dtype),
        query_labels=torch.arange(ways).repeat_interleave(queries),
        class_names=tuple(f"c{i}" for i in range(ways)),
    )


def meta_gradients(method: nn.Module, e: Episode) -> dict[str, torch.Tensor]:
    method.zero_grad()
    method.training_step([e])
    return {k: p.grad.clone() for k, p in method.named_parameters()}


def test_second_and_first_order_meta_gradients_differ() -> None:
    second = build_method("maml", backbone(), inner_steps=2, inner_lr=0.5)
    first = build_method("fomaml", backbone(), inner_steps=2, inner_lr=0.5)
    first.load_state_dict(second.state_dict())
    e = episode()
    g2, g1 = meta_gradients(second, e), meta_gradients(first, e)
    assert g2.keys() == g1.keys()
    worst = max(float((g2[k] - g1[k]).abs().max() / (g2[k].abs().max() + 1e-12)) for k in g2)
    assert worst > 1e-3, "first- and second-order meta-gradients coincide"
    # ...and with no inner step there is nothing to differentiate through: they agree.
    second0 = build_method("maml", backbone(), inner_steps=0)
    first0 = build_method("fomaml", backbone(), inner_steps=0)
    first0.load_state_dict(second0.state_dict())
    h2, h1 = meta_gradients(second0, e), meta_gradients(first0, e)
    for k in h2:
        torch.testing.assert_close(h2[k], h1[k])


def test_second_order_meta_gradient_matches_finite_differences() -> None:
    method = build_method("maml", backbone(hidden=4, size=16), inner_steps=2, inner_lr=0.3).double()
    e = episode(ways=2, size=16, dtype=torch.float64)
    loss, _ = method.episode_loss(e)
    loss.backward()
    param = method.backbone.blocks[1][0].weight
    analytic = param.grad[0, 0, 1, 1].item()
    eps = 1e-6
    with torch.no_grad():
        param[0, 0, 1, 1] += eps
        plus, _ = method.episode_loss(e)
        param[0, 0, 1, 1] -= 2 * eps
        minus, _ = method.episode_loss(e)
        param[0, 0, 1, 1] += eps
    assert analytic == pytest.approx(float(plus - minus) / (2 * eps), rel=1e-5, abs=1e-9)


def test_metasgd_learning_rates_are_meta_parameters_and_change_after_a_step() -> None:
    method = build_method("metasgd", backbone(), inner_steps=1, inner_lr=0.05)
    lrs = method.learnt_lrs
    names = [k for k, _ in method.backbone.named_parameters()] + ["head.weight", "head.bias"]
    assert sorted(lrs.keys()) == sorted(lr_key(k) for k in names)
    assert lrs[lr_key("head.weight")].shape == (1, method.backbone.feature_dim)
    assert all(torch.all(v == 0.05) for v in lrs.values())
    before = {k: v.detach().clone() for k, v in lrs.items()}
    optimiser = torch.optim.Adam(method.parameters(), lr=1e-3)
    method.training_step([episode(ways=2), episode(ways=4, seed=1)])  # any N shares the head's rates
    optimiser.step()
    changed = [k for k, v in lrs.items() if not torch.equal(v.detach(), before[k])]
    assert lr_key("head.weight") in changed and len(changed) > len(lrs) // 2


def test_metasgd_head_only_learns_only_head_rates() -> None:
    method = build_method("metasgd", backbone(), inner_params="head")
    assert sorted(method.learnt_lrs.keys()) == ["head__bias", "head__weight"]


def _adapted_backbone(method: nn.Module, e: Episode) -> dict[str, torch.Tensor]:
    images = torch.cat([e.support_images, e.query_images])
    labels = torch.cat([e.support_labels, e.query_labels])
    task = method.run_inner_loop(images, labels, e.ways, steps=method.inner_steps, first_order=True, detach=True)
    return task.backbone


def test_reptile_with_unit_outer_step_lands_on_the_adapted_weights() -> None:
    method = build_method("reptile", backbone(), inner_steps=3, inner_lr=0.1).train()
    e = episode()
    target = _adapted_backbone(method, e)
    optimiser = torch.optim.SGD(method.parameters(), lr=1.0)
    optimiser.zero_grad()
    out = method.training_step([e])
    optimiser.step()
    for k, p in method.backbone.named_parameters():
        torch.testing.assert_close(p.detach(), target[k], atol=1e-6, rtol=1e-5)
    assert torch.isfinite(out.loss) and 0 <= float(out.accuracy) <= 1


def test_reptile_step_moves_the_weights_toward_the_adapted_weights() -> None:
    method = build_method("reptile", backbone(), inner_steps=3, inner_lr=0.1).train()
    episodes = [episode(seed=0), episode(ways=2, seed=1)]
    targets = [_adapted_backbone(method, e) for e in episodes]
    mean_target = {k: torch.stack([t[k] for t in targets]).mean(0) for k in targets[0]}

    def distance() -> float:
        return sum(float((p.detach() - mean_target[k]).pow(2).sum()) for k, p in method.backbone.named_parameters())

    start = distance()
    assert start > 0
    optimiser = torch.optim.SGD(method.parameters(), lr=0.5)
    optimiser.zero_grad()
    method.training_step(episodes)
    optimiser.step()
    assert distance() == pytest.approx(0.25 * start, rel=1e-3)  # half-way: squared distance / 4


def test_reptile_adds_to_existing_gradients() -> None:
    method = build_method("reptile", backbone(), inner_steps=1)
    for p in method.parameters():
        p.grad = torch.ones_like(p)
    method.training_step([episode()])
    e = episode()
    target = _adapted_backbone(method, e)
    for k, p in method.backbone.named_parameters():
        torch.testing.assert_close(p.grad, 1 + (p.detach() - target[k]), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["maml", "fomaml", "metasgd", "reptile"])
def test_zero_inner_steps_is_the_unadapted_proto_head(name: str) -> None:
    net = backbone()
    method = build_method(name, net, inner_steps=0, test_inner_steps=0).eval()
    e = episode()
    with torch.no_grad():
        logits = method.adapt(e.support_images, e.support_labels).predict(e.query_images)
        support, query = net(e.support_images), net(e.query_images)
        protos = prototypes(support, e.support_labels, e.ways)
        protonet = build_method("protonet", net).adapt(e.support_images, e.support_labels).predict(e.query_images)
    torch.testing.assert_close(logits, query @ (2 * protos).T - protos.pow(2).sum(-1))
    # The Proto-MAML head is ProtoNet's classifier up to a per-query constant (||f(q)||^2).
    torch.testing.assert_close(logits - protonet, query.pow(2).sum(-1, keepdim=True).expand(-1, e.ways))
    torch.testing.assert_close(logits, -squared_euclidean(query, protos) + query.pow(2).sum(-1, keepdim=True))


def test_zero_head_with_zero_steps_predicts_uniformly_and_steps_change_it() -> None:
    method = build_method("maml", backbone(), head="zero", inner_steps=0, test_inner_steps=0).eval()
    e = episode()
    with torch.no_grad():
        assert torch.equal(method.adapt(e.support_images, e.support_labels).predict(e.query_images), torch.zeros(6, 3))
    method.test_inner_steps = 3
    with torch.no_grad():
        assert method.adapt(e.support_images, e.support_labels).predict(e.query_images).abs().sum() > 0


def test_head_only_inner_loop_keeps_the_backbone() -> None:
    method = build_method("maml", backbone(), inner_params="head", inner_steps=3).eval()
    e = episode()
    with torch.no_grad():
        adapted = method.adapt(e.support_images, e.support_labels)
    for k, p in method.backbone.named_parameters():
        assert torch.equal(adapted.task.backbone[k], p.detach())
    unadapted = build_method("maml", method.backbone, inner_params="head", test_inner_steps=0).eval()
    with torch.no_grad():
        moved = adapted.predict(e.query_images) - unadapted.adapt(e.support_images, e.support_labels).predict(
            e.query_images
        )
    assert moved.abs().max() > 0


def test_steps_follow_the_mode_and_test_steps_default_to_twice_the_train_steps() -> None:
    method = build_method("maml", backbone(), inner_steps=3)
    assert method.test_inner_steps == 6 and method.hyperparameters()["test_inner_steps"] == 6
    assert method.train().steps == 3 and method.eval().steps == 6


def test_adaptation_is_pure_and_leaves_no_gradients() -> None:
    method = build_method("maml", backbone(), inner_steps=2).eval()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    e = episode()
    with torch.no_grad():
        adapted = method.adapt(e.support_images, e.support_labels)
    assert all(torch.equal(v, before[k]) for k, v in method.state_dict().items())
    assert all(p.grad is None for p in method.parameters())
    assert all(not v.requires_grad for v in adapted.task.backbone.values())
    assert any(not torch.equal(adapted.task.backbone[k], before[f"backbone.{k}"]) for k in adapted.task.backbone)


@pytest.mark.parametrize("adapt_backbone", [True, False])
def test_inner_loop_vmaps_over_tasks(adapt_backbone: bool) -> None:
    net = backbone(hidden=4)
    params = {k: v.detach() for k, v in net.named_parameters()}
    tasks = [episode(ways=2, seed=s) for s in range(3)]
    images = torch.stack([t.support_images for t in tasks])
    labels = torch.stack([t.support_labels for t in tasks])
    lrs = dict.fromkeys([*params, "head.weight", "head.bias"], 0.1)

    def run(x: torch.Tensor, y: torch.Tensor):
        return adapt_task(net, params, {}, x, y, 2, steps=2, lrs=lrs, first_order=False, adapt_backbone=adapt_backbone)

    batched = vmap(run)(images, labels)
    for t in range(3):
        single = run(images[t], labels[t])
        torch.testing.assert_close(batched.head_weight[t], single.head_weight, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(batched.loss[t], single.loss, atol=1e-5, rtol=1e-4)
        for k in params:
            torch.testing.assert_close(batched.backbone[k][t], single.backbone[k], atol=1e-5, rtol=1e-4)


def test_inner_loop_lowers_the_support_loss() -> None:
    net = backbone()
    e = episode()
    params = dict(net.named_parameters())
    lrs = dict.fromkeys([*params, "head.weight", "head.bias"], 0.05)
    start = adapt_task(net, params, {}, e.support_images, e.support_labels, 3, steps=0, lrs=lrs, first_order=True)
    end = adapt_task(net, params, {}, e.support_images, e.support_labels, 3, steps=10, lrs=lrs, first_order=True)
    assert float(end.loss.detach()) < float(start.loss.detach())


def test_running_statistics_batch_norm_is_refused_but_stat_free_batch_norm_is_accepted() -> None:
    for name in ("maml", "reptile"):
        with pytest.raises(
            ConfigError,
            match=rf"{name}: the backbone has BatchNorm with running statistics "
            r"\('blocks.0.1' and 3 more\).*norm='group'",
        ):
            build_method(name, backbone(norm="batch"))
    net = backbone()
    for block in net.blocks:
        block[1] = nn.BatchNorm2d(8, track_running_stats=False)
    method = build_method("maml", net, inner_steps=1)
    assert torch.isfinite(method.episode_loss(episode())[0])
