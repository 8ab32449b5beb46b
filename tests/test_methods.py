"""Few-shot methods: the registry contract for every method, a learnable toy task, and the math."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medfew.data.episodes.episode import Episode
from medfew.errors import ConfigError, EpisodeError, RegistryError
from medfew.methods import build_method, list_methods, method_class
from medfew.methods.base import FewShotMethod, support_classes
from medfew.methods.finetune import adam_steps
from medfew.methods.functional import (
    attention_log_probs,
    cosine_logits,
    linear_logits,
    proto_head,
    prototypes,
    squared_euclidean,
    transform_features,
)
from medfew.methods.registry import METHODS
from medfew.models import build_backbone

SIZE = 28
NUM_CLASSES = 6  # Baseline++'s meta-train vocabulary in these tests

# (registry name, hyperparameters): every method, plus the variants that add parameters or code paths.
CASES = [
    ("protonet", {}),
    ("protonet", {"feature_transform": "cl2", "learn_scale": True}),
    ("protonet", {"feature_transform": "l2"}),
    ("matchingnet", {}),
    ("matchingnet", {"fce": True}),
    ("maml", {}),
    ("maml", {"head": "zero", "inner_params": "head", "inner_steps": 2}),
    ("fomaml", {}),
    ("metasgd", {}),
    ("metasgd", {"inner_params": "head"}),
    ("reptile", {}),
    ("baseline", {"num_classes": NUM_CLASSES}),
    ("l2o", {}),
    ("l2o", {"first_order": True, "lstm_hidden": 4}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in hp.items())}" if hp else name for name, hp in CASES]


def make(name: str, hp: dict, hidden: int = 8) -> FewShotMethod:
    return build_method(name, build_backbone("conv4", in_channels=1, image_size=SIZE, hidden=hidden), **hp)


def random_episode(ways: int = 3, shots: int = 2, queries: int = 2, seed: int = 0) -> Episode:
    g = torch.Generator().manual_seed(seed)
    return Episode(
        support_images=torch.randn(ways * shots, 1, SIZE, SIZE, generator=g),
        support_labels=torch.arange(ways).repeat_interleave(shots),
        query_images=torch.randn(ways * queries, 1, SIZE, SIZE, generator=g),
        query_labels=torch.arange(ways).repeat_interleave(queries),
        class_names=tuple(f"c{i}" for i in range(ways)),
        source="random",
        global_class_ids=torch.randperm(NUM_CLASSES, generator=g)[:ways],
    )


def test_every_registered_method_is_covered() -> None:
    assert {name for name, _ in CASES} == set(list_methods())
    assert set(list_methods()) == {"protonet", "matchingnet", "maml", "fomaml", "metasgd", "reptile", "baseline", "l2o"}


@pytest.mark.parametrize(("name", "hp"), CASES, ids=IDS)
def test_logits_shape_and_finite(name: str, hp: dict) -> None:
    method = make(name, hp).eval()
    episode = random_episode()
    with torch.no_grad():
        adapted = method.adapt(episode.support_images, episode.support_labels)
        logits = adapted.predict(episode.query_images)
        features = adapted.embed(episode.query_images)
        loss, loss_logits = method.episode_loss(episode)
    assert adapted.n_classes == 3
    assert logits.shape == loss_logits.shape == (6, 3)
    assert torch.isfinite(logits).all() and torch.isfinite(loss) and loss.ndim == 0
    assert features is not None and features.shape[0] == 6 and torch.isfinite(features).all()
    assert method.name == name


@pytest.mark.parametrize(("name", "hp"), CASES, ids=IDS)
def test_training_step_leaves_finite_gradients_on_every_parameter(name: str, hp: dict) -> None:
    method = make(name, hp).train()
    out = method.training_step([random_episode(seed=1), random_episode(ways=2, seed=2)])
    assert out.loss.ndim == 0 and torch.isfinite(out.loss) and 0 <= float(out.accuracy) <= 1
    params = dict(method.named_parameters())
    assert params and all(p.requires_grad for p in params.values())
    missing = [k for k, p in params.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing}"
    assert any(p.grad.abs().sum() > 0 for p in params.values())


@pytest.mark.parametrize(("name", "hp"), CASES, ids=IDS)
def test_predictions_do_not_depend_on_the_batch(name: str, hp: dict) -> None:
    method = make(name, hp).eval()
    episode = random_episode(queries=3)
    with torch.no_grad():
        adapted = method.adapt(episode.support_images, episode.support_labels)
        batch = adapted.predict(episode.query_images)
        singles = torch.cat([adapted.predict(q.unsqueeze(0)) for q in episode.query_images])
        perm = torch.randperm(len(batch))
        permuted = adapted.predict(episode.query_images[perm])
        with_strangers = adapted.predict(torch.cat([episode.query_images[:2], 5 * torch.randn(4, 1, SIZE, SIZE)]))
    torch.testing.assert_close(singles, batch, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(permuted, batch[perm], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(with_strangers[:2], batch[:2], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("name", "hp"), CASES, ids=IDS)
def test_hyperparameters_round_trip_rebuilds_an_equal_method(name: str, hp: dict) -> None:
    method = make(name, hp)
    optimiser = torch.optim.SGD(method.parameters(), lr=0.1)
    method.training_step([random_episode(seed=3)])
    optimiser.step()  # trained weights, so the rebuilt method cannot match by its initialisation
    hyperparameters = json.loads(json.dumps(method.hyperparameters()))
    backbone = method.backbone
    torch.manual_seed(123)
    rebuilt = build_method(method.name, build_backbone(backbone.name, **backbone.config()), **hyperparameters)
    assert rebuilt.hyperparameters() == method.hyperparameters()
    rebuilt.load_state_dict(method.state_dict())
    episode = random_episode(seed=4)
    method.eval(), rebuilt.eval()
    with torch.no_grad():
        expected = method.adapt(episode.support_images, episode.support_labels).predict(episode.query_images)
        actual = rebuilt.adapt(episode.support_images, episode.support_labels).predict(episode.query_images)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize(("name", "hp"), CASES, ids=IDS)
def test_predict_is_differentiable_with_respect_to_the_query(name: str, hp: dict) -> None:
    """Grad-CAM needs d logits / d query even when adaptation ran under ``no_grad``."""
    method = make(name, hp).eval()
    episode = random_episode()
    with torch.no_grad():
        adapted = method.adapt(episode.support_images, episode.support_labels)
    query = episode.query_images[:2].clone().requires_grad_()
    adapted.predict(query)[:, 1].sum().backward()
    assert query.grad is not None and torch.isfinite(query.grad).all() and query.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "hp"), CASES, ids=IDS)
def test_adapt_works_under_inference_mode(name: str, hp: dict) -> None:
    method = make(name, hp).eval()
    episode = random_episode()
    with torch.no_grad():
        expected = method.adapt(episode.support_images, episode.support_labels).predict(episode.query_images)
    with torch.inference_mode():
        support, labels, query = (
            episode.support_images.clone(),
            episode.support_labels.clone(),
            episode.query_images.clone(),
        )
        logits = method.adapt(support, labels).predict(query)
    torch.testing.assert_close(logits, expected)


# --- a learnable toy task -------------------------------------------------------------------------


def _stripes(n_patterns: int) -> torch.Tensor:
    """``(n, SIZE, SIZE)`` sinusoidal stripes at ``n`` orientations."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    angles = [math.pi * c / n_patterns for c in range(n_patterns)]
    return torch.stack([torch.sin((xx * math.cos(a) + yy * math.sin(a)) * 2 * math.pi / 6) for a in angles])


def toy_episode(g: torch.Generator, ways: int = 2, shots: int = 5, queries: int = 5, n_patterns: int = 4) -> Episode:
    """Classes are stripe orientations (random phase), hidden under pixel noise and a bright blob at a
    random place: random features mostly see the blob (near chance), learnt ones the stripes."""
    stripes = _stripes(n_patterns)
    classes = torch.randperm(n_patterns, generator=g)[:ways]
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")

    def images(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(ways).repeat_interleave(per_class)
        shifts = torch.randint(0, 6, (len(labels),), generator=g).tolist()
        x = torch.stack([torch.roll(stripes[classes[y]], s, dims=1) for y, s in zip(labels.tolist(), shifts)])
        x = x + torch.randn(x.shape, generator=g)
        cy, cx = (torch.randint(0, SIZE, (len(labels), 1, 1), generator=g) for _ in range(2))
        x = x + 3.0 * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 20.0)
        return x.unsqueeze(1), labels

    (sx, sy), (qx, qy) = images(shots), images(queries)
    names = tuple(f"orientation{int(c)}" for c in classes)
    return Episode(sx, sy, qx, qy, names, source="toy", global_class_ids=classes.clone())


def toy_accuracy(method: FewShotMethod, n_episodes: int = 16) -> float:
    g = torch.Generator().manual_seed(1000)
    method.eval()
    correct = 0.0
    with torch.no_grad():
        for _ in range(n_episodes):
            e = toy_episode(g)
            logits = method.adapt(e.support_images, e.support_labels).predict(e.query_images)
            correct += float((logits.argmax(-1) == e.query_labels).float().mean())
    method.train()
    return correct / n_episodes


GRADIENT_TOY = {"inner_steps": 1, "test_inner_steps": 2, "inner_lr": 0.1}
TOY = {  # name -> (hyperparameters, outer optimiser, learning rate)
    "protonet": ({}, "adam", 0.005),
    "matchingnet": ({}, "adam", 0.005),
    "baseline": ({"num_classes": 4}, "adam", 0.005),
    "maml": (GRADIENT_TOY, "adam", 0.01),
    "fomaml": (GRADIENT_TOY, "adam", 0.005),
    "metasgd": (GRADIENT_TOY, "adam", 0.01),
    "reptile": ({**GRADIENT_TOY, "inner_steps": 2}, "sgd", 1.0),
    "l2o": (GRADIENT_TOY, "adam", 0.01),
}


@pytest.mark.parametrize("name", sorted(TOY))
def test_each_method_learns_a_separable_toy_task(name: str) -> None:
    hp, optimiser_name, lr = TOY[name]
    method = make(name, hp, hidden=16)
    before = toy_accuracy(method)
    optimiser_cls = torch.optim.Adam if optimiser_name == "adam" else torch.optim.SGD
    optimiser = optimiser_cls(method.parameters(), lr=lr)
    g = torch.Generator().manual_seed(7)
    for _ in range(40):
        optimiser.zero_grad()
        method.training_step([toy_episode(g)])
        optimiser.step()
    after = toy_accuracy(method)
    assert before < 0.65, f"toy task too easy before training: {before:.2f}"
    assert after >= 0.7 and after >= before + 0.15, f"{name}: accuracy {before:.2f} -> {after:.2f}"


# --- registry and validation ----------------------------------------------------------------------


def test_unknown_method_and_hyperparameters_are_refused() -> None:
    backbone = build_backbone("conv4", in_channels=1, hidden=4)
    with pytest.raises(RegistryError, match=r"unknown method 'protonets' \(did you mean 'protonet'\?\); known methods"):
        build_method("protonets", backbone)
    with pytest.raises(
        ConfigError, match=r"method 'maml': unknown argument 'inner_step' \(did you mean 'inner_steps'\?\)"
    ):
        build_method("maml", backbone, inner_step=3)
    with pytest.raises(ConfigError, match=r"method 'reptile': unknown argument 'inner_params'"):
        build_method("reptile", backbone, inner_params="head")
    with pytest.raises(ConfigError, match=r"method 'baseline': missing required argument\(s\) \['num_classes'\]"):
        build_method("baseline", backbone)
    with pytest.raises(RegistryError, match="method 'maml' is already registered"):
        METHODS.register("maml")(FewShotMethod)
    assert method_class("fomaml").name == "fomaml"


class _NoFeatureDim(nn.Module):
    """A real backbone without the ``feature_dim`` attribute some methods need."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


@pytest.mark.parametrize(
    ("name", "hp", "match"),
    [
        (
            "protonet",
            {"feature_transform": "cl3"},
            r"protonet: feature_transform must be one of \['none', 'l2', 'cl2'\], got 'cl3' \(did you mean 'cl2'\?\)",
        ),
        ("protonet", {"scale": 0}, "protonet: scale must be a finite number > 0, got 0"),
        ("protonet", {"learn_scale": "yes"}, "protonet: learn_scale must be true or false, got 'yes'"),
        ("matchingnet", {"fce": 1}, "matchingnet: fce must be true or false, got 1"),
        ("matchingnet", {"fce_steps": 0}, "matchingnet: fce_steps must be an integer >= 1, got 0"),
        ("matchingnet", {"scale": float("inf")}, "matchingnet: scale must be a finite number > 0"),
        ("maml", {"inner_steps": -1}, "maml: inner_steps must be an integer >= 0, got -1"),
        ("maml", {"test_inner_steps": 1.5}, "maml: test_inner_steps must be an integer >= 0, got 1.5"),
        ("maml", {"inner_lr": 0.0}, "maml: inner_lr must be a finite number > 0, got 0.0"),
        (
            "maml",
            {"head": "protoo"},
            r"maml: head must be one of \['proto', 'zero'\], got 'protoo' \(did you mean 'proto'\?\)",
        ),
        ("maml", {"inner_params": "some"}, r"maml: inner_params must be one of \['all', 'head'\], got 'some'"),
        ("maml", {"first_order": "no"}, "maml: first_order must be true or false, got 'no'"),
        ("maml", {"learn_inner_lr": None}, "maml: learn_inner_lr must be true or false, got None"),
        ("fomaml", {"first_order": False}, "fomaml: first_order is fixed to True for this method, got False"),
        ("metasgd", {"learn_inner_lr": False}, "metasgd: learn_inner_lr is fixed to True for this method, got False"),
        ("reptile", {"inner_lr": -1}, "reptile: inner_lr must be a finite number > 0, got -1"),
        ("baseline", {"num_classes": 1}, "baseline: num_classes must be an integer >= 2, got 1"),
        ("baseline", {"num_classes": 4, "adapt_steps": -1}, "baseline: adapt_steps must be an integer >= 0, got -1"),
        ("baseline", {"num_classes": 4, "adapt_lr": 0}, "baseline: adapt_lr must be a finite number > 0, got 0"),
        ("baseline", {"num_classes": 4, "scale": -2.0}, "baseline: scale must be a finite number > 0, got -2.0"),
    ],
)
def test_invalid_hyperparameters_are_refused(name: str, hp: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make(name, hp, hidden=4)


@pytest.mark.parametrize(
    ("name", "hp", "match"),
    [
        ("matchingnet", {"fce": True}, "matchingnet: fce=True needs a backbone with an integer feature_dim, got None"),
        ("metasgd", {}, "metasgd: learn_inner_lr needs a backbone with an integer feature_dim, got None"),
        ("baseline", {"num_classes": 4}, "baseline: backbone.feature_dim must be an integer >= 1, got None"),
    ],
)
def test_methods_that_size_parameters_need_a_feature_dim(name: str, hp: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_method(name, _NoFeatureDim(), **hp)


@pytest.mark.parametrize(
    ("images", "labels", "match"),
    [
        (torch.zeros(4, 1, 8, 8), torch.tensor([0, 0, 1]), r"support images must be \(S, C, H, W\) and labels \(S,\)"),
        (torch.zeros(4, 8, 8), torch.tensor([0, 0, 1, 1]), r"support images must be \(S, C, H, W\)"),
        (torch.zeros(4, 1, 8, 8), torch.tensor([0, 0, 1, 1], dtype=torch.int32), "must be non-empty int64"),
        (torch.zeros(4, 1, 8, 8), torch.tensor([-1, 0, 1, 1]), r"int64 in \[0, N\), got torch.int64 \[-1, 0, 1\]"),
        (
            torch.zeros(4, 1, 8, 8),
            torch.tensor([0, 0, 2, 2]),
            r"cover every class 0..N-1 with N >= 2, got counts \[2, 0, 2\]",
        ),
        (torch.zeros(2, 1, 8, 8), torch.tensor([0, 0]), r"with N >= 2, got counts \[2\]"),
    ],
)
def test_support_sets_are_validated(images: torch.Tensor, labels: torch.Tensor, match: str) -> None:
    with pytest.raises(EpisodeError, match=match):
        support_classes(images, labels)
    method = make("protonet", {}, hidden=4)
    with pytest.raises(EpisodeError, match=match):
        method.adapt(images, labels)


def test_baseline_needs_global_class_ids_in_range() -> None:
    method = make("baseline", {"num_classes": 4}, hidden=4)
    episode = random_episode()
    no_ids = Episode(
        episode.support_images,
        episode.support_labels,
        episode.query_images,
        episode.query_labels,
        episode.class_names,
        source="random",
    )
    with pytest.raises(EpisodeError, match="baseline: training needs episodes with global_class_ids .source 'random'."):
        method.episode_loss(no_ids)
    bad = Episode(
        episode.support_images,
        episode.support_labels,
        episode.query_images,
        episode.query_labels,
        episode.class_names,
        global_class_ids=torch.tensor([0, 1, 4]),
    )
    with pytest.raises(EpisodeError, match=r"global_class_ids \[0, 1, 4\] outside \[0, 4\) \(num_classes=4\)"):
        method.episode_loss(bad)


# --- method-specific behaviour --------------------------------------------------------------------


def test_protonet_cl2_centres_on_the_support_mean_and_normalises() -> None:
    method = make("protonet", {"feature_transform": "cl2"}).eval()
    episode = random_episode()
    with torch.no_grad():
        adapted = method.adapt(episode.support_images, episode.support_labels)
        raw = method.backbone(episode.support_images)
        query = adapted.embed(episode.query_images)
    torch.testing.assert_close(adapted.centre, raw.mean(0))
    torch.testing.assert_close(query.norm(dim=-1), torch.ones(6))
    expected = prototypes(F.normalize(raw - raw.mean(0), dim=-1), episode.support_labels, 3)
    torch.testing.assert_close(adapted.prototypes, expected)
    assert method.hyperparameters()["scale"] == 10.0  # the default for normalised features


def test_protonet_learnt_scale_changes_with_training() -> None:
    method = make("protonet", {"feature_transform": "l2", "learn_scale": True, "scale": 5.0})
    assert float(method.log_scale.detach().exp()) == pytest.approx(5.0)
    optimiser = torch.optim.SGD([method.log_scale], lr=0.5)
    method.training_step([random_episode()])
    optimiser.step()
    assert float(method.log_scale.detach().exp()) != pytest.approx(5.0)


def test_matchingnet_log_probabilities_sum_to_one() -> None:
    for hp in ({}, {"fce": True}):
        method = make("matchingnet", hp).eval()
        episode = random_episode()
        with torch.no_grad():
            log_probs = method.adapt(episode.support_images, episode.support_labels).predict(episode.query_images)
        torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(6))


def test_matchingnet_fce_uses_the_support_context() -> None:
    """With FCE a support image's embedding depends on the other support images; without, it does not."""
    episode = random_episode()
    for fce in (False, True):
        method = make("matchingnet", {"fce": fce}).eval()
        with torch.no_grad():
            full = method.adapt(episode.support_images, episode.support_labels).support
            other = episode.support_images.clone()
            other[-1] = torch.randn(1, SIZE, SIZE)
            changed = method.adapt(other, episode.support_labels).support
        assert torch.allclose(full[0], changed[0]) is (not fce)


def test_baseline_adapt_is_deterministic_and_fits_the_support() -> None:
    method = make("baseline", {"num_classes": 4}).eval()
    episode = random_episode()
    first = method.adapt(episode.support_images, episode.support_labels)
    second = method.adapt(episode.support_images, episode.support_labels)
    torch.testing.assert_close(first.weight, second.weight, rtol=0, atol=0)
    start = build_method("baseline", method.backbone, num_classes=4, adapt_steps=0).adapt(
        episode.support_images, episode.support_labels
    )
    with torch.no_grad():
        features = F.normalize(method.backbone(episode.support_images), dim=-1)
    torch.testing.assert_close(start.weight, F.normalize(prototypes(features, episode.support_labels, 3), dim=-1))

    def support_loss(adapted) -> float:
        with torch.no_grad():
            return float(F.cross_entropy(adapted.predict(episode.support_images), episode.support_labels))

    assert support_loss(first) < support_loss(start)


def test_baseline_episode_logits_are_the_episode_columns_of_the_global_classifier() -> None:
    method = make("baseline", {"num_classes": NUM_CLASSES})
    episode = random_episode()
    loss, logits = method.episode_loss(episode)
    with torch.no_grad():
        full = cosine_logits(method.backbone(episode.query_images), method.classifier, method.scale)
    torch.testing.assert_close(logits.detach(), full[:, episode.global_class_ids])
    assert loss.ndim == 0


def test_adam_steps_matches_torch_adam() -> None:
    features = torch.randn(10, 5)
    labels = torch.arange(2).repeat(5)
    start = torch.randn(2, 5)

    def loss_fn(w: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(cosine_logits(features, w, 10.0), labels)

    weight = start.clone().requires_grad_()
    optimiser = torch.optim.Adam([weight], lr=0.05)
    for _ in range(20):
        optimiser.zero_grad()
        loss_fn(weight).backward()
        optimiser.step()
    torch.testing.assert_close(adam_steps(lambda p: loss_fn(p[0]), [start], steps=20, lr=0.05)[0], weight.detach())


# --- functional math ------------------------------------------------------------------------------


def test_prototypes_and_distances() -> None:
    features = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 0, 2, 1, 2])
    protos = prototypes(features, labels, 3)
    for c in range(3):
        torch.testing.assert_close(protos[c], features[labels == c].mean(0))
    queries = torch.randn(5, 4)
    torch.testing.assert_close(squared_euclidean(queries, protos), torch.cdist(queries, protos) ** 2)
    assert (squared_euclidean(protos, protos).diagonal() == 0).all()


def test_proto_head_equals_the_prototype_classifier_up_to_a_row_constant() -> None:
    features, labels, queries = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2]), torch.randn(5, 4)
    weight, bias = proto_head(features, labels, 3)
    expected = -squared_euclidean(queries, prototypes(features, labels, 3)) + queries.pow(2).sum(-1, keepdim=True)
    torch.testing.assert_close(linear_logits(queries, weight, bias), expected)


def test_attention_log_probs() -> None:
    similarities = torch.randn(4, 5)
    labels = torch.tensor([0, 1, 1, 2, 2])
    log_probs = attention_log_probs(similarities, labels, 3)
    attention = similarities.softmax(-1)
    expected = torch.stack([attention[:, labels == c].sum(-1) for c in range(3)], -1).log()
    torch.testing.assert_close(log_probs, expected)
    assert torch.isfinite(attention_log_probs(1000 * similarities, labels, 3)).all()


def test_feature_transforms() -> None:
    features = torch.randn(5, 4) + 3
    centre = features.mean(0)
    torch.testing.assert_close(transform_features(features, "none"), features)
    torch.testing.assert_close(transform_features(features, "l2").norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(transform_features(features, "cl2", centre), F.normalize(features - centre, dim=-1))
    with pytest.raises(ConfigError, match="'cl2' needs the support mean as centre"):
        transform_features(features, "cl2")
    with pytest.raises(ConfigError, match=r"kind must be one of \['none', 'l2', 'cl2'\], got 'l1'"):
        transform_features(features, "l1")


def test_cosine_logits_are_bounded_by_the_scale() -> None:
    logits = cosine_logits(torch.randn(8, 4), torch.randn(3, 4), 7.0)
    assert logits.abs().max() <= 7.0 + 1e-5
    torch.testing.assert_close(cosine_logits(torch.ones(1, 4), torch.ones(1, 4), 7.0), torch.tensor([[7.0]]))


@pytest.mark.parametrize("name", ["protonet", "matchingnet", "baseline"])
def test_metric_methods_accept_batch_norm_and_are_batch_independent_in_eval_mode(name: str) -> None:
    hp = {"num_classes": NUM_CLASSES} if name == "baseline" else {}
    net = build_backbone("conv4", in_channels=1, image_size=SIZE, hidden=8, norm="batch")
    method = build_method(name, net, **hp)
    method.training_step([random_episode(seed=5)])  # moves the running statistics off their defaults
    method.eval()
    episode = random_episode()
    with torch.no_grad():
        adapted = method.adapt(episode.support_images, episode.support_labels)
        batch = adapted.predict(episode.query_images)
        singles = torch.cat([adapted.predict(q.unsqueeze(0)) for q in episode.query_images])
    torch.testing.assert_close(singles, batch, atol=1e-5, rtol=1e-4)
