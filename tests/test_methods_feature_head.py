"""ProtoNet's fitted test-time head: logistic regression on the (centred, L2-normalised) support features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import nn

from medfew.data.episodes.episode import Episode
from medfew.data.preprocessing import Preprocessing
from medfew.errors import ConfigError
from medfew.methods import build_method
from medfew.methods.functional import transform_features
from medfew.methods.protonet import (
    LinearHeadClassifier,
    PrototypeClassifier,
    fit_logistic_head,
)
from medfew.models import build_backbone
from medfew.training.checkpoint import load_checkpoint, save_checkpoint

SIZE = 28


class Flatten(nn.Module):
    """``(B, C, H, W) -> (B, C*H*W)``: the identity feature map, so the head sees the raw points."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def points(centres: torch.Tensor, per_class: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs as ``(N*per_class, 1, 1, D)`` "images" and their ``(N*per_class,)`` labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(centres)).repeat_interleave(per_class)
    x = centres[labels] + spread * torch.randn(len(labels), centres.shape[1], generator=g)
    return x.view(len(labels), 1, 1, -1), labels


def conv4_protonet(**hp: object) -> nn.Module:
    return build_method("protonet", build_backbone("conv4", in_channels=1, image_size=SIZE, hidden=8), **hp).eval()


@pytest.mark.parametrize("ways", [2, 3])
@pytest.mark.parametrize("transform", ["none", "cl2"])
def test_logistic_head_reproduces_scikit_learn_on_the_transformed_features(ways: int, transform: str) -> None:
    torch.manual_seed(0)
    method = conv4_protonet(feature_transform=transform, head="logistic", head_c=2.0)
    g = torch.Generator().manual_seed(1)
    support, labels = torch.randn(ways * 3, 1, SIZE, SIZE, generator=g), torch.arange(ways).repeat_interleave(3)
    query = torch.randn(7, 1, SIZE, SIZE, generator=g)
    adapted = method.adapt(support, labels)
    assert isinstance(adapted, LinearHeadClassifier) and adapted.n_classes == ways
    logits = adapted.predict(query)
    assert logits.shape == (7, ways) and torch.isfinite(logits).all()
    with torch.no_grad():
        feats = method.backbone(support)
        centre = feats.mean(0) if transform == "cl2" else None
        x_support = transform_features(feats, transform, centre).double().numpy()
        x_query = transform_features(method.backbone(query), transform, centre).double().numpy()
    reference = LogisticRegression(C=2.0, max_iter=1000).fit(x_support, labels.numpy())
    probabilities = F.softmax(logits.detach().double(), dim=-1).numpy()
    np.testing.assert_allclose(probabilities, reference.predict_proba(x_query), atol=1e-5)
    assert (logits.argmax(-1).numpy() == reference.predict(x_query)).all()


def test_logistic_head_separates_what_the_prototypes_cannot() -> None:
    # Class 0 is spread along x over [-6, 0.5], class 1 sits in [1, 1.5]: the classes are linearly
    # separable near x = 0.75, but the means' bisector is at x = -0.75, so the nearest prototype sends
    # class-0 queries at x = 0 and 0.3 to class 1. A fitted linear head puts its boundary in the gap.
    g = torch.Generator().manual_seed(0)
    xs = torch.cat([torch.linspace(-6.0, 0.5, 20), torch.linspace(1.0, 1.5, 20)])
    support = torch.stack([xs, 0.05 * torch.randn(40, generator=g)], 1).view(40, 1, 1, 2)
    labels = torch.arange(2).repeat_interleave(20)
    query = torch.tensor([[0.0, 0.0], [0.3, 0.0], [-5.0, 0.0], [1.2, 0.0], [1.4, 0.0]]).view(5, 1, 1, 2)
    query_labels = torch.tensor([0, 0, 0, 1, 1])
    proto = build_method("protonet", Flatten()).eval()
    fitted = build_method("protonet", Flatten(), head="logistic", head_c=100.0).eval()
    proto_pred = proto.adapt(support, labels).predict(query).argmax(-1)
    fitted_pred = fitted.adapt(support, labels).predict(query).argmax(-1)
    assert proto_pred[:2].tolist() == [1, 1], proto_pred
    assert (fitted_pred == query_labels).all(), fitted_pred


def test_logistic_head_learns_separable_blobs_and_is_differentiable_for_saliency() -> None:
    centres = 3.0 * torch.eye(4)
    support, labels = points(centres, per_class=5, spread=0.3, seed=0)
    query, query_labels = points(centres, per_class=10, spread=0.3, seed=1)
    method = build_method("protonet", Flatten(), feature_transform="cl2", head="logistic").eval()
    query = query.clone().requires_grad_()
    logits = method.adapt(support, labels).predict(query)
    assert (logits.argmax(-1) == query_labels).all()
    logits.gather(1, query_labels[:, None]).sum().backward()
    assert query.grad is not None and torch.isfinite(query.grad).all() and query.grad.abs().sum() > 0


def test_two_class_fit_gives_symmetric_logits_of_the_decision_function() -> None:
    features = torch.tensor([[0.0, 1.0], [0.2, 0.9], [1.0, 0.0], [0.9, 0.1]])
    labels = torch.tensor([0, 0, 1, 1])
    weight, bias = fit_logistic_head(features, labels, 2, c=1.0)
    assert weight.shape == (2, 2) and bias.shape == (2,) and weight.dtype == torch.float32
    torch.testing.assert_close(weight[0], -weight[1])
    reference = LogisticRegression(C=1.0, max_iter=1000).fit(features.double().numpy(), labels.numpy())
    z = reference.decision_function(features.double().numpy())
    logits = features @ weight.T + bias
    np.testing.assert_allclose((logits[:, 1] - logits[:, 0]).numpy(), z, rtol=1e-5, atol=1e-6)


def test_meta_training_loss_is_the_prototype_loss_whatever_the_head() -> None:
    g = torch.Generator().manual_seed(0)
    episode = Episode(
        support_images=torch.randn(6, 1, SIZE, SIZE, generator=g), support_labels=torch.arange(3).repeat_interleave(2),
        query_images=torch.randn(6, 1, SIZE, SIZE, generator=g), query_labels=torch.arange(3).repeat_interleave(2),
        class_names=("a", "b", "c"), source="random",
    )
    torch.manual_seed(0)
    proto = conv4_protonet(feature_transform="cl2").train()
    torch.manual_seed(0)
    fitted = conv4_protonet(feature_transform="cl2", head="logistic").train()
    loss_p, logits_p = proto.episode_loss(episode)
    loss_f, logits_f = fitted.episode_loss(episode)
    torch.testing.assert_close(loss_f, loss_p)
    torch.testing.assert_close(logits_f, logits_p)
    loss_f.backward()
    assert all(p.grad is not None for p in fitted.backbone.parameters())
    assert isinstance(fitted.prototype_classifier(episode.support_images, episode.support_labels), PrototypeClassifier)


def test_head_is_a_test_time_method_option_of_a_saved_checkpoint(tmp_path: Path) -> None:
    backbone = build_backbone("conv4", in_channels=1, image_size=16, hidden=8)
    method = build_method("protonet", backbone, feature_transform="cl2")
    path = save_checkpoint(tmp_path / "model", method, backbone="conv4", backbone_config=backbone.config(),
                           preprocessing=Preprocessing(16, 1, "zscore"), class_pool=["a/x"],
                           data_provenance=[{"name": "toy", "sha256": "0" * 64}], config={"k": 1}, metrics={})
    plain, info = load_checkpoint(path)
    assert info.method_hparams["head"] == "prototype" and plain.head == "prototype"
    loaded, _ = load_checkpoint(path, method_options={"head": "logistic", "head_c": 10.0})
    assert loaded.head == "logistic" and loaded.head_c == 10.0 and loaded.feature_transform == "cl2"
    support, labels = torch.rand(4, 1, 16, 16), torch.tensor([0, 0, 1, 1])
    assert isinstance(loaded.adapt(support, labels), LinearHeadClassifier)
    assert isinstance(plain.adapt(support, labels), PrototypeClassifier)


def test_checkpoints_saved_before_the_head_existed_load_with_the_prototype_head(tmp_path: Path) -> None:
    from medfew.training.checkpoint import update_sidecar

    path = save_checkpoint(tmp_path / "old", conv4_protonet(), backbone="conv4",
                           backbone_config={"in_channels": 1, "image_size": SIZE, "hidden": 8, "norm": "group"},
                           preprocessing=Preprocessing(SIZE, 1))
    old = {"feature_transform": "none", "scale": 1.0, "learn_scale": False}  # what checkpoints held before heads
    update_sidecar(path, method_hparams=old)
    method, info = load_checkpoint(path)
    assert "head" not in info.method_hparams and method.head == "prototype"


@pytest.mark.parametrize(
    ("hp", "match"),
    [
        ({"head": "logreg"}, r"protonet: head must be one of \['prototype', 'logistic', 'finetune'\], got 'logreg'"),
        ({"head": "Logistic"}, r"got 'Logistic' \(did you mean 'logistic'\?\)"),
        ({"head": "logistic", "head_c": 0}, r"protonet: head_c must be a finite number > 0, got 0"),
        ({"head_c": float("inf")}, r"protonet: head_c must be a finite number > 0, got inf"),
        ({"head_c": True}, r"protonet: head_c must be a finite number > 0, got True"),
    ],
)
def test_invalid_head_options_are_refused(hp: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        conv4_protonet(**hp)
