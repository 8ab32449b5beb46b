"""Conformal prediction sets from leave-one-out support scores: coverage, set sizes, edge cases, errors.

Coverage is checked empirically over many random few-shot tasks of Gaussian class blobs, with a real
ProtoNet (its own exact leave-one-out), on separable and on overlapping classes; the baseline path
(one adapt per left-out image) is checked against a hand computation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medfew.errors import ConfigError, EpisodeError
from medfew.evaluation import (
    ConformalSets,
    LogisticRegressionBaseline,
    NearestCentroidBaseline,
    check_alpha,
    leave_one_out_logits,
    leave_one_out_unavailable,
    min_support_for,
)
from medfew.evaluation.conformal import leave_one_out_by_adapt
from medfew.methods import build_method
from medfew.methods.base import FewShotMethod

ALPHA = 0.1
TOLERANCE = 0.03  # the mean of >= 200 tasks' coverage has a standard error near 0.01


@pytest.fixture(autouse=True)
def one_thread():
    """Hundreds of tiny tasks: one intra-op thread is ~10x faster than a contended pool (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def blob_task(rng: np.random.Generator, *, ways: int, shots: int, queries: int, separation: float,
              dim: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Support and query "images" ``(B, 1, 1, dim)`` of Gaussian blobs around random class means."""
    means = rng.normal(0.0, separation, (ways, dim))

    def draw(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = np.repeat(np.arange(ways), k)
        points = means[labels] + rng.normal(0.0, 1.0, (labels.size, dim))
        return torch.tensor(points, dtype=torch.float32).view(-1, 1, 1, dim), torch.from_numpy(labels)

    return (*draw(shots), *draw(queries))


def tiny_protonet(**options: object) -> FewShotMethod:
    """A real ProtoNet whose backbone flattens ``(B, 1, 1, D)`` to ``(B, D)`` (features = the points)."""
    return build_method("protonet", nn.Flatten(), **options).eval()


def coverage_and_size(method: object, separation: float, tasks: int, seed: int) -> tuple[float, float]:
    """Mean coverage and mean set size over ``tasks`` random 3-way 6-shot tasks (S = 18 >= 10)."""
    rng = np.random.default_rng(seed)
    coverages, sizes = [], []
    for _ in range(tasks):
        support, support_labels, query, query_labels = blob_task(rng, ways=3, shots=6, queries=10,
                                                                 separation=separation)
        loo = leave_one_out_logits(method, support, support_labels)
        sets = ConformalSets.fit(torch.softmax(loo.double(), 1), support_labels, ALPHA)
        with torch.no_grad():
            logits = method.adapt(support, support_labels).predict(query)  # type: ignore[attr-defined]
        member = sets.predict(torch.softmax(logits.double(), 1))
        coverages.append(member[np.arange(len(query_labels)), query_labels.numpy()].mean())
        sizes.append(member.sum(1).mean())
    return float(np.mean(coverages)), float(np.mean(sizes))


@pytest.mark.parametrize("options", [{}, {"feature_transform": "l2"}], ids=["euclidean", "l2-normalised"])
def test_empirical_coverage_on_separable_and_overlapping_blobs(options: dict) -> None:
    # (the nearest-centroid baseline gives the same logits as the Euclidean ProtoNet here; its
    # one-adapt-per-image path is checked against a hand computation below)
    method = tiny_protonet(**options)
    separable = coverage_and_size(method, separation=4.0, tasks=200, seed=0)
    overlapping = coverage_and_size(method, separation=0.6, tasks=200, seed=1)
    for coverage, _ in (separable, overlapping):
        assert coverage >= 1 - ALPHA - TOLERANCE
    assert separable[1] < overlapping[1] - 0.5  # confident where classes separate, honest where they do not
    assert 0.9 <= separable[1] < 1.3 and overlapping[1] > 1.8  # (a set can be empty: see test below)


def test_exchangeable_probabilities_cover_at_the_split_conformal_rate() -> None:
    """Calibration and query scores from one distribution: split conformal, coverage >= 1 - alpha."""
    rng = np.random.default_rng(2)
    coverages = []
    for _ in range(400):
        labels = rng.integers(0, 4, 30)
        logits = rng.normal(0.0, 1.0, (30, 4)) + 1.5 * np.eye(4)[labels]
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        sets = ConformalSets.fit(probs[:15], labels[:15], ALPHA).predict(probs[15:])
        coverages.append(sets[np.arange(15), labels[15:]].mean())
    assert np.mean(coverages) >= 1 - ALPHA - 0.01
    assert np.mean(coverages) < 0.97  # not trivially every class


def test_protonet_own_leave_one_out_equals_one_adapt_per_image() -> None:
    rng = np.random.default_rng(3)
    support, labels, _, _ = blob_task(rng, ways=3, shots=3, queries=1, separation=2.0)
    method = tiny_protonet()
    calls: list[tuple[int, int]] = []
    own = leave_one_out_logits(method, support, labels, progress=lambda d, t: calls.append((d, t)))
    assert own.shape == (9, 3)
    assert calls == [(9, 9)]  # ProtoNet's exact fast version runs in one go: progress reports its end
    torch.testing.assert_close(own, leave_one_out_by_adapt(method, support, labels))
    for i in range(9):
        keep = torch.arange(9) != i
        expected = method.adapt(support[keep], labels[keep]).predict(support[i : i + 1])
        torch.testing.assert_close(own[i : i + 1], expected.detach())


def test_nearest_centroid_closed_form_equals_refitting_and_logistic_regression_loops_with_progress() -> None:
    rng = np.random.default_rng(4)
    support, labels, _, _ = blob_task(rng, ways=3, shots=3, queries=1, separation=3.0)
    baseline = NearestCentroidBaseline()
    closed_form = leave_one_out_logits(baseline, support, labels)
    torch.testing.assert_close(closed_form, leave_one_out_by_adapt(baseline, support, labels), rtol=1e-5, atol=1e-5)
    # image 0 scored by the centroids of the other images, by hand
    rest = support[1:].flatten(1).double()
    centroids = torch.stack([rest[labels[1:] == c].mean(0) for c in range(3)])
    expected = -((support[0].flatten().double() - centroids) ** 2).sum(1)
    torch.testing.assert_close(closed_form[0].double(), expected, rtol=1e-5, atol=1e-5)
    # logistic regression has no shortcut: one fit per left-out image, each reported
    calls: list[tuple[int, int]] = []
    refits = leave_one_out_logits(LogisticRegressionBaseline(), support, labels, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 9) for i in range(1, 10)] and refits.shape == (9, 3)
    assert torch.allclose(refits.exp().sum(1), torch.ones(9), atol=1e-5)  # log-probabilities


def test_too_few_support_scans_put_every_class_in_every_set() -> None:
    assert min_support_for(0.1) == 10 and min_support_for(0.2) == 5 and min_support_for(0.6) == 1
    labels = np.array([0, 0, 0, 1, 1, 1])
    perfect = np.eye(2)[labels]
    small = ConformalSets.fit(perfect, labels, 0.1)
    assert small.always_full and small.n_calibration == 6 and small.confidence == pytest.approx(0.9)
    assert small.predict(np.array([[0.999, 0.001], [0.5, 0.5]])).all()
    labels = np.repeat([0, 1], 5)
    enough = ConformalSets.fit(np.eye(2)[labels] * 0.9 + 0.05, labels, 0.1)
    assert not enough.always_full
    np.testing.assert_array_equal(enough.predict(np.array([[0.97, 0.03], [0.5, 0.5]])), [[True, False], [False, False]])


def test_a_scan_unlike_every_class_gets_an_empty_set() -> None:
    labels = np.repeat([0, 1, 2], 4)
    confident = np.full((12, 3), 0.02) + 0.94 * np.eye(3)[labels]  # every support scan scored 0.96 right
    sets = ConformalSets.fit(confident, labels, 0.1).predict(np.full((1, 3), 1 / 3))
    assert sets.shape == (1, 3) and not sets.any()


def test_a_class_with_a_single_scan_has_no_leave_one_out_and_no_set() -> None:
    labels = torch.tensor([0, 0, 1, 2, 2])
    assert leave_one_out_unavailable(labels) == (
        "class [1] has fewer than 2 support scans, so leave-one-out cannot score them and there is no prediction set"
    )
    assert "classes ['b', 'c'] have fewer than 2" in leave_one_out_unavailable(torch.tensor([0, 0, 1, 2]), ("a", "b", "c"))
    assert leave_one_out_unavailable(torch.tensor([0, 0, 1, 1])) is None
    with pytest.raises(EpisodeError, match=r"at least 2 support images per class; classes \[1\] have \[1\]"):
        leave_one_out_logits(NearestCentroidBaseline(), torch.rand(5, 1, 2, 2), labels)
    with pytest.raises(EpisodeError, match=r"at least 2 support images per class"):
        leave_one_out_logits(tiny_protonet(), torch.rand(5, 1, 2, 2), labels)


@pytest.mark.parametrize(
    ("alpha", "match"),
    [
        (0.0, r"alpha must be in \(0, 1\) \(e.g. 0.1 for 90% sets\), got 0.0"),
        (1.0, r"alpha must be in \(0, 1\) .*got 1.0"),
        (-0.1, r"got -0.1"),
        (math.nan, r"alpha must be a number in \(0, 1\), got nan"),
        ("0.1", r"alpha must be a number in \(0, 1\), got '0.1'"),
        (True, r"alpha must be a number in \(0, 1\), got True"),
        (None, r"alpha must be a number in \(0, 1\), got None"),
    ],
)
def test_alpha_validation(alpha, match) -> None:
    with pytest.raises(ConfigError, match=match):
        ConformalSets.fit(np.eye(2)[[0, 1]], np.array([0, 1]), alpha)
    with pytest.raises(ConfigError, match=match.replace("alpha", "conformal_alpha", 1)):
        check_alpha(alpha, "conformal_alpha")


def test_input_validation() -> None:
    probs, labels = np.eye(3)[[0, 1, 2, 0]], np.array([0, 1, 2, 0])
    with pytest.raises(EpisodeError, match=r"labels must be \(4,\) to match loo_probabilities \(4, 3\), got \(3,\)"):
        ConformalSets.fit(probs, labels[:3])
    with pytest.raises(EpisodeError, match=r"labels must lie in \[0, 3\) .*got \[0, 1, 3\]"):
        ConformalSets.fit(probs, np.array([0, 1, 3, 0]))
    with pytest.raises(EpisodeError, match="labels must be integers, got float64"):
        ConformalSets.fit(probs, labels.astype(float))
    with pytest.raises(EpisodeError, match=r"must be probabilities in \[0, 1\]; rows \[1\] are not"):
        ConformalSets.fit(np.array([[0.5, 0.5], [2.0, -1.0]]), np.array([0, 1]))
    with pytest.raises(EpisodeError, match=r"loo_probabilities must be a non-empty \(rows, N\) array"):
        ConformalSets.fit(np.zeros(3), np.zeros(3, dtype=int))
    sets = ConformalSets.fit(probs, labels)
    with pytest.raises(EpisodeError, match="probabilities score 2 classes but the sets were fitted for N=3"):
        sets.predict(np.eye(2))
    with pytest.raises(EpisodeError, match="probabilities must be a torch.Tensor or numpy array, got list"):
        sets.predict([[1.0, 0.0, 0.0]])  # type: ignore[arg-type]
    assert repr(sets) == "ConformalSets(alpha=0.1, n_calibration=4, n_classes=3)"

    class Wrong(NearestCentroidBaseline):
        def leave_one_out_logits(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(labels), 5)

    with pytest.raises(EpisodeError, match=r"leave-one-out logits must be \(S, N\) = \(4, 2\), got \(4, 5\)"):
        leave_one_out_logits(Wrong(), torch.rand(4, 1, 2, 2), torch.tensor([0, 0, 1, 1]))
