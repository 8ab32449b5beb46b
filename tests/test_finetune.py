"""Test-time fine-tuning (``head="finetune"``) and the exact fast leave-one-out of ProtoNet."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medfew.errors import ConfigError, EpisodeError
from medfew.methods import build_method
from medfew.methods.base import FewShotMethod
from medfew.methods.finetune import FineTuneSettings, adam_steps, finetune_head
from medfew.methods.protonet import LinearHeadClassifier
from medfew.models import build_backbone

SIZE = 28


def protonet(**hp: object) -> FewShotMethod:
    torch.manual_seed(0)
    backbone = build_backbone("conv4", in_channels=1, image_size=SIZE, hidden=8)
    return build_method("protonet", backbone, **hp).eval()


def task(ways: int = 3, shots: int = 4, queries: int = 6, seed: int = 1) -> tuple[torch.Tensor, ...]:
    """Images whose class shifts their mean brightness (learnable from pixels, not trivially)."""
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(ways).repeat_interleave(shots)
    yq = torch.arange(ways).repeat_interleave(queries)
    xs = torch.randn(len(ys), 1, SIZE, SIZE, generator=g) + 0.5 * ys.view(-1, 1, 1, 1)
    xq = torch.randn(len(yq), 1, SIZE, SIZE, generator=g) + 0.5 * yq.view(-1, 1, 1, 1)
    return xs, ys, xq, yq


@pytest.mark.parametrize("transform", ["none", "l2", "cl2"])
def test_zero_steps_is_the_prototype_classifier(transform: str) -> None:
    xs, ys, xq, _ = task()
    scale = 1.0 if transform == "none" else 10.0
    proto = protonet(feature_transform=transform)
    tuned = protonet(feature_transform=transform, head="finetune", finetune_steps=0, finetune_flip=False,
                     finetune_scale=scale)
    with torch.no_grad():
        expected = torch.softmax(proto.adapt(xs, ys).predict(xq).double(), -1)
        adapted = tuned.adapt(xs, ys)
        got = torch.softmax(adapted.predict(xq).double(), -1)
    assert isinstance(adapted, LinearHeadClassifier)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_finetuning_lowers_the_support_loss_and_changes_the_head() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(5)
    features = F.normalize(torch.randn(15, 16, generator=g) + 0.3 * F.one_hot(labels, 16).float(), dim=-1)
    start = FineTuneSettings(steps=0, flip=False)
    tuned = FineTuneSettings(steps=100, lr=0.05, flip=False)

    def loss(settings: FineTuneSettings) -> float:
        weight, bias = finetune_head(features, labels, 3, settings)
        return float(F.cross_entropy(features @ weight.T + bias, labels))

    assert loss(tuned) < 0.5 * loss(start)


def test_adam_steps_minimises_a_quadratic() -> None:
    target = torch.tensor([3.0, -2.0])
    (result,) = adam_steps(lambda p: (p[0] - target).pow(2).sum(), [torch.zeros(2)], steps=500, lr=0.05)
    torch.testing.assert_close(result, target, atol=1e-2, rtol=0)


@pytest.mark.parametrize(
    "hp",
    [
        {"head": "prototype"},
        {"head": "prototype", "feature_transform": "cl2"},
        {"head": "logistic", "feature_transform": "cl2"},
        {"head": "finetune", "feature_transform": "cl2", "finetune_steps": 5},
        {"head": "finetune", "feature_transform": "none", "finetune_steps": 5, "finetune_flip": False},
    ],
)
def test_fast_leave_one_out_equals_one_adapt_per_image(hp: dict) -> None:
    method = protonet(**hp)
    xs, ys, _, _ = task()
    fast = method.leave_one_out_logits(xs, ys)
    slow = FewShotMethod.leave_one_out_logits(method, xs, ys)
    assert fast.shape == (len(ys), 3)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)


def test_leave_one_out_needs_two_images_per_class() -> None:
    xs, ys, _, _ = task(shots=1)
    with pytest.raises(EpisodeError, match=r"at least 2 support images per class; classes \[0, 1, 2\] have \[1, 1, 1\]"):
        protonet().leave_one_out_logits(xs, ys)


def test_finetuning_the_top_block_leaves_the_meta_trained_weights_alone() -> None:
    method = protonet(head="finetune", finetune_depth=1, finetune_steps=5, finetune_lr=0.01)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    xs, ys, xq, _ = task()
    adapted = method.adapt(xs, ys)
    for key, value in method.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    top = adapted.backbone.blocks[-1][0].weight
    assert not torch.equal(top, method.backbone.blocks[-1][0].weight)  # the copy moved
    assert torch.equal(adapted.backbone.blocks[0][0].weight, method.backbone.blocks[0][0].weight)  # the rest did not
    head_only = protonet(head="finetune", finetune_depth=0, finetune_steps=5, finetune_lr=0.01).adapt(xs, ys)
    with torch.no_grad():
        assert not torch.allclose(adapted.predict(xq), head_only.predict(xq))
    loo = method.leave_one_out_logits(xs, ys)  # the generic one-adapt-per-image path
    assert loo.shape == (len(ys), 3) and torch.isfinite(loo).all()


def test_finetune_depth_beyond_the_backbone_is_refused() -> None:
    xs, ys, _, _ = task()
    with pytest.raises(ConfigError, match=r"finetune depth must be in \[1, 4\], got 5"):
        protonet(head="finetune", finetune_depth=5).adapt(xs, ys)


@pytest.mark.parametrize(
    ("hp", "match"),
    [
        ({"finetune_steps": -1}, r"protonet: finetune_steps must be an integer >= 0, got -1"),
        ({"finetune_lr": 0}, r"protonet: finetune_lr must be a finite number > 0, got 0"),
        ({"finetune_depth": 1.5}, r"protonet: finetune_depth must be an integer >= 0, got 1.5"),
        ({"finetune_flip": "yes"}, r"protonet: finetune_flip must be true or false"),
    ],
)
def test_invalid_finetune_options_are_refused(hp: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        protonet(head="finetune", **hp)


def test_finetune_settings_round_trip_through_hyperparameters() -> None:
    method = protonet(head="finetune", finetune_steps=7, finetune_lr=0.2, finetune_depth=1, finetune_flip=False)
    rebuilt = build_method("protonet", method.backbone, **method.hyperparameters())
    assert rebuilt.finetune == method.finetune == FineTuneSettings(steps=7, lr=0.2, depth=1, flip=False)


@pytest.mark.parametrize(("name", "extra"), [("protonet", {}), ("matchingnet", {}), ("baseline", {"num_classes": 4})])
def test_every_embedding_method_offers_the_finetune_head(name: str, extra: dict) -> None:
    from medfew.data.episodes.episode import Episode

    torch.manual_seed(0)
    backbone = build_backbone("conv4", in_channels=1, image_size=SIZE, hidden=8)
    native = build_method(name, backbone, **extra).eval()
    tuned = build_method(name, backbone, head="finetune", finetune_steps=3, **extra).eval()
    tuned.load_state_dict(native.state_dict())  # the same meta-learned weights (Baseline++'s classifier too)
    xs, ys, xq, yq = task()
    adapted = tuned.adapt(xs, ys)
    assert isinstance(adapted, LinearHeadClassifier) and adapted.predict(xq).shape == (len(yq), 3)
    assert not isinstance(native.adapt(xs, ys), LinearHeadClassifier)
    assert tuned.reads_fixed_features
    rebuilt = build_method(name, backbone, **tuned.hyperparameters())
    assert rebuilt.head == "finetune" and rebuilt.finetune == tuned.finetune
    # meta-training keeps the method's own read-out whatever the test-time head
    episode = Episode(support_images=xs, support_labels=ys, query_images=xq, query_labels=yq,
                      class_names=("a", "b", "c"), global_class_ids=torch.arange(3))
    torch.manual_seed(1)
    loss_native, _ = native.episode_loss(episode)
    torch.manual_seed(1)
    loss_tuned, _ = tuned.episode_loss(episode)
    torch.testing.assert_close(loss_tuned, loss_native)


@pytest.mark.parametrize(("name", "extra"), [("matchingnet", {}), ("baseline", {"num_classes": 4})])
def test_batched_finetune_folds_equal_one_adapt_per_image(name: str, extra: dict) -> None:
    torch.manual_seed(0)
    method = build_method(name, build_backbone("conv4", in_channels=1, image_size=SIZE, hidden=8),
                          head="finetune", finetune_steps=8, **extra).eval()
    xs, ys, _, _ = task()
    torch.testing.assert_close(method.leave_one_out_logits(xs, ys), FewShotMethod.leave_one_out_logits(method, xs, ys),
                               rtol=1e-4, atol=1e-4)
