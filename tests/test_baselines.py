"""Tests of the raw-pixel baselines (nearest centroid, logistic regression) and their registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfew.data.episodes.episode import Episode
from medfew.data.episodes.pool import ImagePool
from medfew.data.episodes.sampler import EpisodeSampler
from medfew.errors import ConfigError, EpisodeError, RegistryError
from medfew.evaluation import (
    Baseline,
    LogisticRegressionBaseline,
    NearestCentroidBaseline,
    build_baseline,
    compare,
    evaluate,
    list_baselines,
)
from medfew.methods.base import AdaptedModel

BASELINES = list_baselines()


def synthetic_episode(
    *, n: int = 3, k: int = 5, q: int = 5, separation: float = 0.3, seed: int = 0, channels: int = 1
) -> Episode:
    """28x28 episode: pixel noise in [0, 1) plus ``separation * class`` in mean intensity."""
    g = torch.Generator().manual_seed(seed)
    support_labels = torch.arange(n).repeat_interleave(k)
    query_labels = torch.arange(n).repeat_interleave(q)

    def images(labels: torch.Tensor) -> torch.Tensor:
        noise = torch.rand(labels.numel(), channels, 28, 28, generator=g)
        return noise + separation * labels.view(-1, 1, 1, 1).float()

    return Episode(
        support_images=images(support_labels),
        support_labels=support_labels,
        query_images=images(query_labels),
        query_labels=query_labels,
        class_names=tuple(f"class{i}" for i in range(n)),
        source="synthetic",
    )


def test_registry_lists_and_builds_every_baseline() -> None:
    assert BASELINES == ["logistic_regression", "nearest_centroid"]
    for name in BASELINES:
        baseline = build_baseline(name)
        assert isinstance(baseline, Baseline) and baseline.name == name
    assert build_baseline("logistic_regression", C=0.5, max_iter=50).C == 0.5


def test_registry_errors() -> None:
    with pytest.raises(RegistryError, match="unknown baseline 'knn'; known baselines: logistic_regression, nearest_centroid"):
        build_baseline("knn")
    with pytest.raises(ConfigError, match=r"baseline 'nearest_centroid' does not accept options \['C'\]"):
        build_baseline("nearest_centroid", C=1.0)
    with pytest.raises(ConfigError, match="C must be > 0, got 0"):
        LogisticRegressionBaseline(C=0)
    with pytest.raises(ConfigError, match="max_iter must be >= 1, got 0"):
        LogisticRegressionBaseline(max_iter=0)


@pytest.mark.parametrize("name", BASELINES)
def test_contract_shapes_dtype_and_determinism(name: str) -> None:
    episode = synthetic_episode(n=4, k=2, q=3, channels=3)
    adapted = build_baseline(name).adapt(episode.support_images, episode.support_labels)
    assert isinstance(adapted, AdaptedModel) and adapted.n_classes == 4
    logits = adapted.predict(episode.query_images)
    assert logits.shape == (12, 4) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    again = build_baseline(name).adapt(episode.support_images, episode.support_labels).predict(episode.query_images)
    assert torch.equal(logits, again)


@pytest.mark.parametrize("name", BASELINES)
def test_high_accuracy_on_an_easy_episode(name: str) -> None:
    summary = evaluate(build_baseline(name), [synthetic_episode(seed=s) for s in range(3)], progress=False)
    assert summary.accuracy.mean >= 0.95
    assert summary.auroc.mean >= 0.95


@pytest.mark.parametrize("name", BASELINES)
def test_chance_level_on_pure_noise(name: str) -> None:
    episodes = [synthetic_episode(separation=0.0, seed=100 + s) for s in range(20)]
    # accuracy only: no conformal sets (their leave-one-out refits logistic regression 15 times an episode)
    summary = evaluate(build_baseline(name), episodes, progress=False, conformal_alpha=None)
    assert 0.15 <= summary.accuracy.mean <= 0.55  # chance is 1/3 for 3-way
    assert 0.3 <= summary.auroc.mean <= 0.7


def test_nearest_centroid_logits_are_negative_squared_distances() -> None:
    episode = synthetic_episode(n=3, k=2, q=2)
    adapted = NearestCentroidBaseline().adapt(episode.support_images, episode.support_labels)
    flat_support = episode.support_images.flatten(1).double()
    centroids = torch.stack([flat_support[episode.support_labels == c].mean(0) for c in range(3)])
    expected = -torch.cdist(episode.query_images.flatten(1).double(), centroids) ** 2
    logits = adapted.predict(episode.query_images)
    torch.testing.assert_close(logits, expected.float(), rtol=1e-5, atol=1e-3)
    predicted = adapted.classifier.predict(episode.query_images.flatten(1).double().numpy())
    np.testing.assert_array_equal(logits.argmax(1).numpy(), predicted)


@pytest.mark.parametrize("n", [2, 4])
def test_logistic_regression_logits_are_log_predict_proba(n: int) -> None:
    episode = synthetic_episode(n=n, k=3, q=2, separation=0.05)
    adapted = LogisticRegressionBaseline().adapt(episode.support_images, episode.support_labels)
    flat_support = episode.support_images.flatten(1).double().numpy()
    np.testing.assert_allclose(adapted.scaler.mean_, flat_support.mean(0))  # the support's statistics
    np.testing.assert_allclose(adapted.scaler.scale_, flat_support.std(0))
    logits = adapted.predict(episode.query_images)
    expected = adapted.classifier.predict_proba(adapted.scaler.transform(episode.query_images.flatten(1).double().numpy()))
    np.testing.assert_allclose(logits.exp().numpy(), expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(logits.exp().sum(1), torch.ones(n * 2))


def test_logistic_regression_keeps_extreme_scores_finite() -> None:
    episode = synthetic_episode(n=2, k=2, q=2, separation=50.0)
    adapted = LogisticRegressionBaseline(C=1e6).adapt(episode.support_images, episode.support_labels)
    far = episode.query_images * 1e4  # would underflow predict_proba to 0 and log to -inf
    assert torch.isfinite(adapted.predict(far)).all()


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_validation(name: str) -> None:
    baseline = build_baseline(name)
    images = torch.rand(4, 1, 28, 28)
    with pytest.raises(EpisodeError, match=r"missing \[1\]"):
        baseline.adapt(images, torch.tensor([0, 0, 2, 2]))
    with pytest.raises(EpisodeError, match=r"N >= 2, got \[0\]"):
        baseline.adapt(images, torch.tensor([0, 0, 0, 0]))
    with pytest.raises(EpisodeError, match=r"support_labels must be >= 0, got \[-1, 0, 1\]"):
        baseline.adapt(images, torch.tensor([-1, 0, 1, 1]))
    with pytest.raises(EpisodeError, match="support_labels must be integers, got torch.float32"):
        baseline.adapt(images, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(EpisodeError, match=r"support_labels must be a \(4,\) tensor, got \(3,\)"):
        baseline.adapt(images, torch.tensor([0, 1, 0]))
    with pytest.raises(EpisodeError, match=r"support_labels must be a \(4,\) tensor, got list"):
        baseline.adapt(images, [0, 1, 0, 1])  # type: ignore[arg-type]
    with pytest.raises(EpisodeError, match="support_images must be a torch.Tensor, got ndarray"):
        baseline.adapt(images.numpy(), torch.tensor([0, 1, 0, 1]))  # type: ignore[arg-type]
    with pytest.raises(EpisodeError, match=r"non-empty \(B, C, H, W\) batch, got shape \(0, 1, 28, 28\)"):
        baseline.adapt(torch.rand(0, 1, 28, 28), torch.zeros(0, dtype=torch.int64))
    adapted = baseline.adapt(images, torch.tensor([0, 1, 0, 1]))
    with pytest.raises(EpisodeError, match=r"query images have 196 pixels each but the support had 784"):
        adapted.predict(torch.rand(2, 1, 14, 14))


def test_baselines_compared_on_real_medmnist_episodes(data_root) -> None:
    data = np.load(data_root / "medmnist" / "bloodmnist.npz")
    images = torch.from_numpy(data["test_images"][:1200]).permute(0, 3, 1, 2).contiguous()  # uint8 (M, 3, 28, 28)
    labels = torch.from_numpy(data["test_labels"][:1200, 0].astype(np.int64))
    names = ("basophil", "eosinophil", "erythroblast", "immature_granulocyte", "lymphocyte", "monocyte", "neutrophil", "platelet")
    pool = ImagePool(images=images, labels=labels, class_names=names, name="bloodmnist", split="test")
    sampler = EpisodeSampler([pool], ways=5, shots=5, queries=5, seed=3)
    # accuracy only: no conformal sets (their leave-one-out refits logistic regression 25 times an episode)
    results = compare({name: build_baseline(name) for name in BASELINES}, sampler, 6, progress=False,
                      conformal_alpha=None)
    for summary in results.values():
        assert summary.n_episodes == 6 and summary.ways == 5 and summary.shots == 5 and summary.queries == 5
        assert summary.accuracy.mean > 0.3  # chance is 0.2; raw pixels do carry signal on blood cells
        assert summary.per_class_key == "name" and set(summary.per_class) <= set(names)
