"""The vectorised (``vmap``) meta-batch of the gradient-based methods equals the per-task loop.

Meta-gradients are compared in float64 to a tolerance near machine precision (the two paths sum the
same terms in a different order), and in float32 to a tolerance that allows for that reordering.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medfew.data.episodes.episode import Episode
from medfew.errors import ConfigError
from medfew.methods import build_method
from medfew.methods.tasks import TaskBatch
from medfew.models import build_backbone

SIZE = 16


def backbone(**kwargs) -> nn.Module:
    return build_backbone("conv4", in_channels=1, image_size=SIZE, hidden=4, **kwargs)


def episode(seed: int, ways: int = 3, shots: int = 2, queries: int = 2, dtype: torch.dtype = torch.float32) -> Episode:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(ways * queries, generator=g)  # shuffled query order: labels differ per task
    return Episode(
        support_images=torch.randn(ways * shots, 1, SIZE, SIZE, generator=g).to(dtype),
        support_labels=torch.arange(ways).repeat_interleave(shots),
        query_images=torch.randn(ways * queries, 1, SIZE, SIZE, generator=g).to(dtype),
        query_labels=torch.arange(ways).repeat_interleave(queries)[perm],
        class_names=tuple(f"c{i}" for i in range(ways)),
    )


def pair(name: str, dtype: torch.dtype = torch.float32, **hp) -> tuple[nn.Module, nn.Module]:
    """The same method twice, with the same weights: vectorised and forced per-task loop."""
    fast = build_method(name, backbone(**hp.pop("backbone", {})), vectorize=True, **hp).to(dtype)
    slow = build_method(name, backbone(), vectorize=False, **hp).to(dtype)
    slow.load_state_dict(fast.state_dict())
    return fast.train(), slow.train()


def step_gradients(method: nn.Module, episodes: list[Episode]) -> tuple[dict[str, torch.Tensor], float]:
    method.zero_grad(set_to_none=True)
    out = method.training_step(episodes)
    grads = {k: p.grad.clone() for k, p in method.named_parameters() if p.grad is not None}
    return grads, float(out.loss)


def assert_same_gradients(a: dict, b: dict, atol: float, rtol: float) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=rtol, msg=lambda m, k=k: f"{k}: {m}")


CASES = [
    ("maml", {}),  # second order
    ("fomaml", {}),
    ("metasgd", {}),  # second order, learnt per-parameter rates
    ("maml", {"inner_params": "head"}),  # ANIL-style
    ("maml", {"head": "zero"}),
]


@pytest.mark.parametrize(("name", "hp"), CASES, ids=[f"{n}-{'-'.join(map(str, h.values())) or 'default'}" for n, h in CASES])
def test_vectorised_meta_gradients_equal_the_per_task_loop_in_float64(name: str, hp: dict) -> None:
    fast, slow = pair(name, torch.float64, inner_steps=2, inner_lr=0.3, **hp)
    episodes = [episode(s, dtype=torch.float64) for s in range(3)]
    assert fast.vectorized_batch(episodes) is not None and slow.vectorized_batch(episodes) is None
    g_fast, loss_fast = step_gradients(fast, episodes)
    g_slow, loss_slow = step_gradients(slow, episodes)
    assert loss_fast == pytest.approx(loss_slow, rel=1e-12)
    assert_same_gradients(g_fast, g_slow, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("name", ["maml", "fomaml", "metasgd"])
def test_vectorised_meta_gradients_equal_the_per_task_loop_in_float32(name: str) -> None:
    fast, slow = pair(name, inner_steps=2, inner_lr=0.3)
    episodes = [episode(s) for s in range(3)]
    g_fast, _ = step_gradients(fast, episodes)
    g_slow, _ = step_gradients(slow, episodes)
    # float32 sums in another order, and second-order terms through GroupNorm amplify that: measured
    # differences reach 3e-5 of the largest gradient entry over seeds (float64 above agrees to 1e-12)
    scale = max(float(g.abs().max()) for g in g_slow.values())
    assert_same_gradients(g_fast, g_slow, atol=1e-4 * scale, rtol=1e-4)


def test_second_order_terms_survive_vectorisation() -> None:
    """The vectorised MAML gradient is not the first-order one (so the equality above is not trivial)."""
    second = build_method("maml", backbone(), inner_steps=2, inner_lr=0.3).double()
    first = build_method("fomaml", backbone(), inner_steps=2, inner_lr=0.3).double()
    first.load_state_dict(second.state_dict())
    episodes = [episode(s, dtype=torch.float64) for s in range(3)]
    g2, _ = step_gradients(second, episodes)
    g1, _ = step_gradients(first, episodes)
    worst = max(float((g2[k] - g1[k]).abs().max() / (g2[k].abs().max() + 1e-12)) for k in g2)
    assert worst > 1e-3


def test_episodes_of_different_shapes_fall_back_to_the_loop_with_the_same_result() -> None:
    fast, slow = pair("maml", torch.float64, inner_steps=1, inner_lr=0.3)
    episodes = [episode(0, dtype=torch.float64), episode(1, ways=2, dtype=torch.float64),
                episode(2, queries=3, dtype=torch.float64)]
    assert TaskBatch.stack(episodes) is None and fast.vectorized_batch(episodes) is None
    assert_same_gradients(step_gradients(fast, episodes)[0], step_gradients(slow, episodes)[0], atol=0, rtol=0)


def test_task_batch_stacks_one_shape_along_a_task_axis() -> None:
    episodes = [episode(s) for s in range(4)]
    batch = TaskBatch.stack(episodes)
    assert batch is not None and batch.ways == 3
    assert batch.support_images.shape == (4, 6, 1, SIZE, SIZE) and batch.query_labels.shape == (4, 6)
    assert torch.equal(batch.query_labels[2], episodes[2].query_labels)
    assert TaskBatch.stack([]) is None
    assert TaskBatch.stack([episode(0), episode(1, dtype=torch.float64)]) is None


def test_vectorised_reptile_direction_equals_the_per_task_loop() -> None:
    fast, slow = pair("reptile", torch.float64, inner_steps=3, inner_lr=0.1)
    episodes = [episode(s, dtype=torch.float64) for s in range(3)]
    g_fast, loss_fast = step_gradients(fast, episodes)
    g_slow, loss_slow = step_gradients(slow, episodes)
    assert loss_fast == pytest.approx(loss_slow, rel=1e-12)
    assert_same_gradients(g_fast, g_slow, atol=1e-12, rtol=1e-10)
    assert max(float(g.abs().max()) for g in g_fast.values()) > 1e-4  # the parameters do move


@pytest.mark.parametrize("name", ["maml", "metasgd", "fomaml"])
def test_checkpointed_inner_loop_gives_the_same_meta_gradients(name: str) -> None:
    plain = build_method(name, backbone(), inner_steps=3, inner_lr=0.3).double()
    ckpt = build_method(name, backbone(), inner_steps=3, inner_lr=0.3, checkpoint_inner=True).double()
    ckpt.load_state_dict(plain.state_dict())
    episodes = [episode(s, dtype=torch.float64) for s in range(2)]
    assert ckpt.vectorized_batch(episodes) is None  # checkpointing runs task by task
    assert_same_gradients(step_gradients(ckpt, episodes)[0], step_gradients(plain, episodes)[0], atol=1e-12, rtol=1e-10)


def test_checkpointed_head_only_inner_loop_keeps_the_feature_gradient() -> None:
    plain = build_method("maml", backbone(), inner_steps=2, inner_lr=0.3, inner_params="head").double()
    ckpt = build_method("maml", backbone(), inner_steps=2, inner_lr=0.3, inner_params="head",
                        checkpoint_inner=True).double()
    ckpt.load_state_dict(plain.state_dict())
    episodes = [episode(0, dtype=torch.float64)]
    g_ckpt, g_plain = step_gradients(ckpt, episodes)[0], step_gradients(plain, episodes)[0]
    assert_same_gradients(g_ckpt, g_plain, atol=1e-12, rtol=1e-10)


def test_adaptation_ignores_checkpointing() -> None:
    method = build_method("maml", backbone(), inner_steps=2, checkpoint_inner=True).eval()
    e = episode(0)
    with torch.no_grad():
        logits = method.adapt(e.support_images, e.support_labels).predict(e.query_images)
    assert logits.shape == (6, 3) and torch.isfinite(logits).all()


def stat_free_batch_norm_backbone() -> nn.Module:
    net = backbone()
    for block in net.blocks:
        block[1] = nn.BatchNorm2d(block[1].num_channels, track_running_stats=False)
    return net


@pytest.mark.parametrize(("name", "hp"), [("fomaml", {}), ("maml", {"inner_params": "head"}), ("reptile", {})])
def test_batch_norm_without_running_statistics_vectorises_first_order(name: str, hp: dict) -> None:
    """Stat-free BatchNorm normalises each task with its own batch statistics under ``vmap``."""
    fast = build_method(name, stat_free_batch_norm_backbone(), inner_steps=1, inner_lr=0.3, vectorize=True,
                        **hp).double()
    slow = build_method(name, stat_free_batch_norm_backbone(), inner_steps=1, inner_lr=0.3, vectorize=False,
                        **hp).double()
    slow.load_state_dict(fast.state_dict())
    episodes = [episode(s, dtype=torch.float64) for s in range(3)]
    assert fast.vectorized_batch(episodes) is not None
    assert_same_gradients(step_gradients(fast, episodes)[0], step_gradients(slow, episodes)[0], atol=1e-10, rtol=1e-9)


def test_second_order_through_batch_norm_runs_the_per_task_loop() -> None:
    """vmap's batch-norm double backward disagrees with the per-task one, so that case is not vectorised."""
    method = build_method("maml", stat_free_batch_norm_backbone(), inner_steps=1, inner_lr=0.3,
                          vectorize=True).double()
    episodes = [episode(s, dtype=torch.float64) for s in range(3)]
    assert method.vectorized_batch(episodes) is None
    reference = build_method("maml", stat_free_batch_norm_backbone(), inner_steps=1, inner_lr=0.3,
                             vectorize=False).double()
    reference.load_state_dict(method.state_dict())
    assert_same_gradients(step_gradients(method, episodes)[0], step_gradients(reference, episodes)[0], atol=0, rtol=0)


def test_running_statistics_batch_norm_is_refused_with_the_layer_named() -> None:
    with pytest.raises(ConfigError, match=r"maml: the backbone has BatchNorm with running statistics \('blocks.*norm='group'"):
        build_method("maml", backbone(norm="batch"))


@pytest.mark.parametrize("name", ["maml", "reptile"])
def test_vectorize_must_be_a_boolean_and_round_trips(name: str) -> None:
    with pytest.raises(ConfigError, match="vectorize"):
        build_method(name, backbone(), vectorize="yes")
    auto = build_method(name, backbone())
    assert auto.vectorize == "auto" and auto.vectorized_batch([episode(s) for s in range(3)]) is None  # CPU: loop
    method = build_method(name, backbone(), vectorize=False)
    assert method.hyperparameters()["vectorize"] is False
    rebuilt = build_method(name, backbone(), **method.hyperparameters())
    assert rebuilt.hyperparameters() == method.hyperparameters()


def test_checkpoint_inner_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match="checkpoint_inner"):
        build_method("metasgd", backbone(), checkpoint_inner=1)


@pytest.mark.parametrize("channels", [1, 3])
def test_channels_last_runs_the_per_task_loop(channels: int) -> None:
    """``--channels-last`` (a GPU option) with ``vectorize=True``: vmap's group_norm refuses the layout,
    so the meta-batch runs task by task and gives the contiguous loop's meta-gradients."""
    from medfew.training.device import move_episode

    def net() -> nn.Module:
        return build_backbone("conv4", in_channels=channels, image_size=SIZE, hidden=4)

    fast = build_method("fomaml", net(), vectorize=True, inner_steps=2).train()
    slow = build_method("fomaml", net(), vectorize=False, inner_steps=2).train()
    slow.load_state_dict(fast.state_dict())
    fast.to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    episodes = [
        Episode(torch.randn(6, channels, SIZE, SIZE, generator=g), torch.arange(3).repeat_interleave(2),
                torch.randn(6, channels, SIZE, SIZE, generator=g), torch.arange(3).repeat_interleave(2), ("a", "b", "c"))
        for _ in range(2)
    ]
    moved = [move_episode(e, torch.device("cpu"), channels_last=True) for e in episodes]
    assert fast.vectorized_batch(moved) is None
    assert slow.vectorized_batch(episodes) is None  # vectorize=False
    assert build_method("fomaml", net(), vectorize=True).vectorized_batch(episodes) is not None
    a, _ = step_gradients(fast, moved)
    b, _ = step_gradients(slow, episodes)
    assert_same_gradients(a, b, atol=1e-5, rtol=1e-4)


def test_first_order_checkpointing_keeps_the_vectorised_path() -> None:
    """First-order inner steps store no graph, so ``checkpoint_inner`` changes nothing there: FOMAML keeps
    ``vmap`` and its meta-gradients; second-order MAML with checkpointing runs the per-task loop."""
    episodes = [episode(s) for s in range(2)]
    plain, ckpt = (build_method("fomaml", backbone(), vectorize=True, checkpoint_inner=c).train() for c in (False, True))
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.vectorized_batch(episodes) is not None
    assert build_method("maml", backbone(), vectorize=True, checkpoint_inner=True).vectorized_batch(episodes) is None
    a, _ = step_gradients(plain, episodes)
    b, _ = step_gradients(ckpt, episodes)
    assert_same_gradients(a, b, atol=0, rtol=0)
