"""Tests of medfew.evaluation: episode metrics, summaries with 95% CIs, evaluate() and compare()."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, log_loss, roc_auc_score
from torch import nn

from medfew.data.episodes.episode import Episode
from medfew.data.episodes.pool import ImagePool
from medfew.data.episodes.sampler import EpisodeSampler
from medfew.errors import ConfigError, EpisodeError
from medfew.evaluation import (
    EpisodeMetrics,
    NearestCentroidBaseline,
    compare,
    confidence_interval_95,
    episode_metrics,
    evaluate,
    expected_calibration_error,
    normalized_entropy,
    summarize,
)
from medfew.methods.base import AdaptedModel, FewShotMethod


def one_hot_logits(predicted: list[int], n: int, scale: float = 20.0) -> torch.Tensor:
    """``(M, N)`` logits whose argmax is ``predicted`` with confidence near 1."""
    return torch.nn.functional.one_hot(torch.tensor(predicted), n).float() * scale


def softmax(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.double(), dim=1).numpy()


def make_episode(
    n: int = 3, k: int = 2, q: int = 3, *, separation: float = 1.0, seed: int = 0, names: tuple[str, ...] | None = None
) -> Episode:
    """A tiny episode whose classes differ in mean intensity by ``separation``."""
    g = torch.Generator().manual_seed(seed)
    support_labels = torch.arange(n).repeat_interleave(k)
    query_labels = torch.arange(n).repeat_interleave(q)

    def images(labels: torch.Tensor) -> torch.Tensor:
        return torch.rand(labels.numel(), 1, 6, 6, generator=g) * 0.2 + separation * labels.view(-1, 1, 1, 1).float()

    return Episode(
        support_images=images(support_labels),
        support_labels=support_labels,
        query_images=images(query_labels),
        query_labels=query_labels,
        class_names=names or tuple(f"class{i}" for i in range(n)),
        source="synthetic",
    )


# --------------------------------------------------------------------------- episode_metrics
def test_perfect_predictions() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    m = episode_metrics(one_hot_logits(labels.tolist(), 3), labels)
    assert m.accuracy == 1.0 and m.balanced_accuracy == 1.0 and m.auroc == 1.0
    assert m.sensitivity == (1.0, 1.0, 1.0) and m.specificity == (1.0, 1.0, 1.0)
    assert m.nll < 1e-6 and m.brier < 1e-6 and m.ece < 1e-6
    np.testing.assert_array_equal(m.confusion, np.diag([2, 2, 2]))
    assert m.ways == 3 and m.n_queries == 6 and m.query_counts == (2, 2, 2)


def test_all_wrong_predictions() -> None:
    labels = [0, 0, 1, 1, 2, 2]
    logits = one_hot_logits([(y + 1) % 3 for y in labels], 3)
    m = episode_metrics(logits, torch.tensor(labels))
    assert m.accuracy == 0.0 and m.balanced_accuracy == 0.0
    assert m.sensitivity == (0.0, 0.0, 0.0)
    # every class is predicted for the 2 queries of the previous class: 2 false positives of 4 negatives
    assert m.specificity == pytest.approx((0.5, 0.5, 0.5))
    assert m.nll == pytest.approx(20.0, abs=1e-6)  # -log softmax of a logit 20 below the top one
    assert m.auroc == pytest.approx(roc_auc_score(labels, softmax(logits), multi_class="ovr", average="macro"))
    assert m.ece == pytest.approx(1.0, abs=1e-6)  # confidence ~1, accuracy 0


def test_known_confusion_matrix_gives_exact_sensitivity_and_specificity() -> None:
    labels = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    predicted = [0, 0, 1, 2, 1, 1, 0, 2, 2, 2]
    m = episode_metrics(one_hot_logits(predicted, 3), torch.tensor(labels))
    np.testing.assert_array_equal(m.confusion, [[2, 1, 1], [1, 2, 0], [0, 0, 3]])
    assert m.sensitivity == pytest.approx((2 / 4, 2 / 3, 3 / 3))
    # specificity = TN / (TN + FP): class 0 has 6 negatives, 1 FP; classes 1 and 2 have 7 negatives, 1 FP
    assert m.specificity == pytest.approx((5 / 6, 6 / 7, 6 / 7))
    assert m.accuracy == pytest.approx(0.7)
    assert m.balanced_accuracy == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m.balanced_accuracy == pytest.approx(balanced_accuracy_score(labels, predicted))


def test_multiclass_auroc_matches_sklearn_macro_ovr() -> None:
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(4).repeat(10)
    logits = torch.randn(40, 4, generator=g) + 1.5 * torch.nn.functional.one_hot(labels, 4)
    m = episode_metrics(logits, labels)
    probs = softmax(logits)
    assert m.auroc == pytest.approx(roc_auc_score(labels.numpy(), probs, multi_class="ovr", average="macro"))
    for c in range(4):
        assert m.per_class_auroc[c] == pytest.approx(roc_auc_score(labels.numpy() == c, probs[:, c]))
    assert 0.5 < m.auroc < 1.0


def test_binary_auroc_is_the_auroc_of_class_one() -> None:
    g = torch.Generator().manual_seed(2)
    labels = torch.tensor([0, 1] * 8)
    logits = torch.randn(16, 2, generator=g)
    m = episode_metrics(logits, labels)
    assert m.auroc == pytest.approx(roc_auc_score(labels.numpy(), softmax(logits)[:, 1]))
    assert m.per_class_auroc[0] == pytest.approx(m.per_class_auroc[1])


def test_nll_and_brier_match_their_definitions() -> None:
    g = torch.Generator().manual_seed(3)
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 0])
    logits = torch.randn(7, 3, generator=g) * 2
    m = episode_metrics(logits, labels)
    probs = softmax(logits)
    assert m.nll == pytest.approx(log_loss(labels.numpy(), probs, labels=[0, 1, 2]))
    assert m.brier == pytest.approx(((probs - np.eye(3)[labels.numpy()]) ** 2).sum(axis=1).mean())


def test_uniform_logits_hand_computed_calibration() -> None:
    labels = torch.tensor([0, 0, 1, 2])  # argmax of equal logits is class 0: half the queries right
    m = episode_metrics(torch.zeros(4, 4), labels)
    assert m.nll == pytest.approx(math.log(4))
    assert m.brier == pytest.approx((1 - 0.25) ** 2 + 3 * 0.25**2)
    assert m.ece == pytest.approx(abs(0.5 - 0.25))
    assert m.accuracy == 0.5


def test_ece_bins_are_right_closed_and_weighted() -> None:
    confidence = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([True, False, True, True])
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)
    # 0.1 falls in (0, 0.1], 0.15 in (0.1, 0.2]: two bins, not one
    assert expected_calibration_error(np.array([0.1, 0.15]), np.array([True, False])) == pytest.approx(
        0.5 * 0.9 + 0.5 * 0.15
    )
    with pytest.raises(EpisodeError, match=r"equal non-empty \(M,\) arrays"):
        expected_calibration_error(np.array([0.5]), np.array([True, False]))
    with pytest.raises(EpisodeError, match="n_bins must be >= 1, got 0"):
        expected_calibration_error(confidence, correct, n_bins=0)


def test_class_absent_from_query_is_nan_and_skipped_without_warnings() -> None:
    g = torch.Generator().manual_seed(4)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])  # class 2 has no query
    logits = torch.randn(6, 3, generator=g)
    logits[0] = torch.tensor([0.0, 0.0, 5.0])  # one query predicted as the absent class
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = episode_metrics(logits, labels)
    assert math.isnan(m.sensitivity[2]) and not math.isnan(m.specificity[2])
    assert math.isnan(m.per_class_auroc[2])
    probs = softmax(logits)
    expected = np.mean([roc_auc_score(labels.numpy() == c, probs[:, c]) for c in (0, 1)])
    assert m.auroc == pytest.approx(expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert m.balanced_accuracy == pytest.approx(balanced_accuracy_score(labels.numpy(), logits.argmax(1).numpy()))
    assert m.balanced_accuracy == pytest.approx(np.nanmean(m.sensitivity))


def test_single_class_query_has_undefined_auroc_and_specificity() -> None:
    labels = torch.tensor([1, 1, 1])
    m = episode_metrics(one_hot_logits([1, 0, 1], 2), labels)
    assert math.isnan(m.auroc)
    assert math.isnan(m.specificity[1]) and math.isnan(m.sensitivity[0])
    assert m.specificity[0] == pytest.approx(2 / 3)
    assert m.accuracy == pytest.approx(2 / 3)


def test_numpy_and_low_precision_inputs_agree_with_float32_tensors() -> None:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(9, 3, generator=g)
    labels = torch.tensor([0, 1, 2] * 3)
    reference = episode_metrics(logits, labels)
    from_numpy = episode_metrics(logits.numpy(), labels.numpy())
    assert from_numpy.accuracy == reference.accuracy and from_numpy.nll == pytest.approx(reference.nll)
    half = episode_metrics(logits.half(), labels)
    assert half.auroc == pytest.approx(reference.auroc, abs=0.05)


def test_minus_inf_logits_are_allowed_for_masked_classes() -> None:
    logits = torch.tensor([[0.0, -math.inf], [-math.inf, 1.0]])
    m = episode_metrics(logits, torch.tensor([0, 1]))
    assert m.accuracy == 1.0 and m.nll == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("logits", "labels", "kwargs", "match"),
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.int64), {}, r"logits must be \(M, N\), got shape \(4,\)"),
        (torch.zeros(4, 3), torch.zeros(5, dtype=torch.int64), {}, r"labels must be \(4,\) to match logits \(4, 3\), got \(5,\)"),
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), {}, "no query images"),
        (torch.zeros(2, 1), torch.zeros(2, dtype=torch.int64), {}, "at least 2 classes, got N=1"),
        (torch.zeros(2, 3), torch.tensor([0, 3]), {}, r"labels must lie in \[0, 3\) for 3 logit columns, got \[0, 3\]"),
        (torch.zeros(2, 3), torch.tensor([0, -1]), {}, r"labels must lie in \[0, 3\)"),
        (torch.zeros(2, 3), torch.tensor([0.0, 1.0]), {}, "labels must be integers, got float32"),
        (torch.zeros(2, 3), torch.tensor([True, False]), {}, "labels must be integers, got bool"),
        (torch.zeros(2, 3, dtype=torch.int64), torch.tensor([0, 1]), {}, "logits must be floating point, got int64"),
        (torch.tensor([[0.0, math.nan], [0.0, 1.0]]), torch.tensor([0, 1]), {}, r"1 NaN or \+inf values \(rows \[0\]\)"),
        (torch.tensor([[0.0, math.inf], [0.0, 1.0]]), torch.tensor([0, 1]), {}, r"NaN or \+inf"),
        (torch.tensor([[-math.inf, -math.inf], [0.0, 1.0]]), torch.tensor([0, 1]), {}, r"rows \[0\] are -inf"),
        (torch.zeros(2, 3), torch.tensor([0, 1]), {"class_names": ("a", "b")}, "class_names has 2 names but logits score N=3"),
        ([[0.0, 1.0]], torch.tensor([0]), {}, "logits must be a torch.Tensor or numpy array, got list"),
    ],
)
def test_episode_metrics_validation(logits, labels, kwargs, match) -> None:
    with pytest.raises(EpisodeError, match=match):
        episode_metrics(logits, labels, **kwargs)


# --------------------------------------------------------------------------- summarize
def metrics_with_accuracy(correct: int, total: int = 4, names: tuple[str, ...] | None = None) -> EpisodeMetrics:
    labels = [i % 2 for i in range(total)]
    predicted = [y if i < correct else 1 - y for i, y in enumerate(labels)]
    return episode_metrics(one_hot_logits(predicted, 2), torch.tensor(labels), class_names=names, shots=1)


def test_confidence_interval_formula_against_numpy() -> None:
    accuracies = np.array([0.5, 0.75, 1.0, 0.25, 0.75])
    expected = 1.96 * np.std(accuracies, ddof=1) / np.sqrt(accuracies.size)
    assert confidence_interval_95(accuracies) == pytest.approx(expected)
    assert math.isnan(confidence_interval_95([0.5]))
    summary = summarize([metrics_with_accuracy(int(a * 4)) for a in accuracies], method="demo")
    assert summary.accuracy.mean == pytest.approx(accuracies.mean())
    assert summary.accuracy.ci95 == pytest.approx(expected)
    assert summary.accuracy.n == 5 and summary.n_episodes == 5
    assert summary.ways == 2 and summary.shots == 1 and summary.queries == 2


def test_summary_skips_undefined_auroc_and_counts_episodes() -> None:
    defined = metrics_with_accuracy(3)
    single_class = episode_metrics(one_hot_logits([0, 0], 2), torch.tensor([0, 0]), shots=2)
    summary = summarize([defined, single_class, defined])
    assert summary.auroc.n == 2 and summary.auroc.mean == pytest.approx(defined.auroc)
    assert summary.accuracy.n == 3
    assert summary.shots is None  # 1 and 2 shots mixed
    assert summary.queries is None  # the single-class episode has unbalanced query counts


def test_per_class_keyed_by_name_across_permuted_and_partial_episodes() -> None:
    # episode 1: classes (a, b), b always wrong; episode 2: classes (c, a) in another order, all right
    first = episode_metrics(one_hot_logits([0, 0], 2), torch.tensor([0, 1]), class_names=("a", "b"))
    second = episode_metrics(one_hot_logits([0, 1], 2), torch.tensor([0, 1]), class_names=("c", "a"))
    summary = summarize([first, second])
    assert summary.per_class_key == "name"
    assert list(summary.per_class) == ["a", "b", "c"]
    assert summary.per_class["a"].sensitivity == pytest.approx(1.0)
    assert summary.per_class["a"].n_episodes == 2
    assert summary.per_class["b"].sensitivity == 0.0 and summary.per_class["b"].n_episodes == 1
    assert summary.per_class["a"].specificity == pytest.approx((0.0 + 1.0) / 2)


def test_per_class_keyed_by_position_without_names() -> None:
    first = episode_metrics(one_hot_logits([0, 0], 2), torch.tensor([0, 1]))
    second = episode_metrics(one_hot_logits([0, 1], 2), torch.tensor([0, 1]), class_names=("x", "y"))
    summary = summarize([first, second])
    assert summary.per_class_key == "position"
    assert summary.per_class["1"].sensitivity == pytest.approx(0.5)


def test_to_dict_is_strict_json_with_the_documented_keys() -> None:
    single_class = episode_metrics(one_hot_logits([0], 2), torch.tensor([0]), class_names=("a", "b"))
    summary = summarize([single_class], method="nearest_centroid")
    data = json.loads(json.dumps(summary.to_dict(), allow_nan=False))
    for key in (
        "accuracy_mean", "accuracy_ci95", "balanced_accuracy_mean", "balanced_accuracy_ci95",
        "auroc_mean", "auroc_ci95", "n_episodes", "ways", "shots", "queries", "method",
        "nll_mean", "brier_mean", "ece_mean", "ece_pooled", "per_class", "episode_accuracies",
    ):
        assert key in data, key
    assert data["method"] == "nearest_centroid" and data["n_episodes"] == 1 and data["ways"] == 2
    assert data["auroc_mean"] is None and data["accuracy_ci95"] is None  # NaN -> null
    assert data["accuracy_mean"] == 1.0 and data["episode_accuracies"] == [1.0]
    assert data["per_class"]["b"]["sensitivity"] is None and data["ci_method"].startswith("1.96")


def test_format_text_is_a_readable_table() -> None:
    summary = summarize([metrics_with_accuracy(2, names=("normal", "rare")), metrics_with_accuracy(4, names=("normal", "rare"))], method="demo")
    text = summary.format_text()
    assert "method: demo" in text and "2-way 1-shot 2-query" in text
    accuracy_row = next(line for line in text.splitlines() if line.startswith("accuracy"))
    assert "0.7500" in accuracy_row and f"{summary.accuracy.ci95:.4f}" in accuracy_row
    assert any(line.startswith("rare") for line in text.splitlines())


def test_summarize_validation() -> None:
    with pytest.raises(EpisodeError, match="method 'x' with no episodes"):
        summarize([], method="x")
    with pytest.raises(EpisodeError, match=r"expects EpisodeMetrics, got \['float'\]"):
        summarize([0.5])  # type: ignore[list-item]


# --------------------------------------------------------------------------- evaluate
class _Prototypes(AdaptedModel):
    def __init__(self, method: TinyProtoNet, prototypes: torch.Tensor) -> None:
        self.method = method
        self.prototypes = prototypes
        self.n_classes = prototypes.shape[0]

    def predict(self, query_images: torch.Tensor) -> torch.Tensor:
        self.method.seen_grad_in_predict.append(torch.is_grad_enabled())
        return -torch.cdist(self.method.embed(query_images), self.prototypes) ** 2


class TinyProtoNet(FewShotMethod):
    """A real (small) method: linear embedding, prototypes; ``finetune_steps`` SGD steps in adapt."""

    name = "tiny_protonet"

    def __init__(self, in_features: int = 36, finetune_steps: int = 0) -> None:
        super().__init__(nn.Sequential(nn.Flatten(), nn.Linear(in_features, 8), nn.Dropout(0.5)))
        self.finetune_steps = finetune_steps
        self.seen_grad_in_adapt: list[bool] = []
        self.seen_grad_in_predict: list[bool] = []
        self.seen_training_in_adapt: list[bool] = []
        self.bad_output_shape = False

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def adapt(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> AdaptedModel:
        self.seen_grad_in_adapt.append(torch.is_grad_enabled())
        self.seen_training_in_adapt.append(self.training)
        n = int(support_labels.max()) + 1
        head = torch.zeros(n, 8, requires_grad=True)
        for _ in range(self.finetune_steps):  # MAML-style inner loop: needs autograd inside adapt
            logits = self.embed(support_images) @ head.T
            (grad,) = torch.autograd.grad(nn.functional.cross_entropy(logits, support_labels), head)
            head = head - 0.1 * grad
        features = self.embed(support_images)
        prototypes = torch.stack([features[support_labels == c].mean(0) for c in range(n)]) + head
        if self.bad_output_shape:
            prototypes = prototypes[:-1]
        return _Prototypes(self, prototypes)

    def episode_loss(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.adapt(episode.support_images, episode.support_labels).predict(episode.query_images)
        return nn.functional.cross_entropy(logits, episode.query_labels), logits


def test_evaluate_runs_adapt_with_grad_and_predict_without_in_eval_mode() -> None:
    method = TinyProtoNet(finetune_steps=2)
    method.train()
    method.backbone[2].eval()  # a submodule the caller froze in eval mode must stay so
    with torch.no_grad():  # even when the caller disabled autograd, adapt gets it back
        summary = evaluate(method, [make_episode(seed=s) for s in range(3)], progress=False)
    # per episode: one adapt to the support set, then one per left-out support image (3-way 2-shot: 6)
    # for the conformal sets' leave-one-out scores
    assert method.seen_grad_in_adapt == [True] * 3 * 7
    assert method.seen_grad_in_predict == [False] * 3 * 7
    assert method.seen_training_in_adapt == [False] * 3 * 7
    assert method.training and method.backbone[1].training and not method.backbone[2].training
    assert summary.method == "tiny_protonet" and summary.n_episodes == 3
    assert summary.ways == 3 and summary.shots == 2 and summary.queries == 3
    assert summary.per_class_key == "name" and set(summary.per_class) == {"class0", "class1", "class2"}


def test_evaluate_restores_modes_after_an_error_and_checks_logit_shape() -> None:
    method = TinyProtoNet()
    method.bad_output_shape = True
    method.train()
    with pytest.raises(EpisodeError, match=r"'tiny_protonet', episode 0: .* shape \(9, 2\), expected \(M, N\) = \(9, 3\)"):
        evaluate(method, [make_episode()], progress=False)
    assert method.training and method.backbone[2].training


def test_evaluate_n_episodes_takes_a_prefix_of_a_generator() -> None:
    produced: list[int] = []

    def stream():
        for s in range(100):
            produced.append(s)
            yield make_episode(seed=s)

    summary = evaluate(NearestCentroidBaseline(), stream(), n_episodes=4, progress=True, method_name="nc")
    assert summary.n_episodes == 4 and summary.method == "nc"
    assert produced == [0, 1, 2, 3]
    assert summary.accuracy.mean == 1.0  # separated classes


class _NoPredict:
    name = "broken"

    def adapt(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> object:
        return object()


class _ArrayLogits(_NoPredict):
    def adapt(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> object:
        class Adapted:
            def predict(self, query_images: torch.Tensor) -> np.ndarray:
                return np.zeros((query_images.shape[0], 3))

        return Adapted()


def test_evaluate_validation() -> None:
    baseline = NearestCentroidBaseline()
    with pytest.raises(EpisodeError, match="no episodes to evaluate method 'nearest_centroid'"):
        evaluate(baseline, [], progress=False)
    with pytest.raises(EpisodeError, match="n_episodes=3 but the episodes iterable held only 2"):
        evaluate(baseline, [make_episode(), make_episode()], n_episodes=3, progress=False)
    with pytest.raises(EpisodeError, match="item 1 of episodes is a str, not an Episode"):
        evaluate(baseline, [make_episode(), "episode"], progress=False)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ConfigError, match="n_episodes must be an integer >= 1"):
            evaluate(baseline, [make_episode()], n_episodes=bad, progress=False)
    with pytest.raises(ConfigError, match="device: 'gpu0' is not a torch device"):
        evaluate(baseline, [make_episode()], device="gpu0", progress=False)
    with pytest.raises(ConfigError, match="method 'str': expected an object with adapt"):
        evaluate("protonet", [make_episode()], progress=False)  # type: ignore[arg-type]
    sampler = EpisodeSampler([_pool()], ways=3, shots=2, queries=2)
    with pytest.raises(ConfigError, match=r"iterable of Episode, got EpisodeSampler; pass sampler.episodes\(n\)"):
        evaluate(baseline, sampler, progress=False)  # type: ignore[arg-type]
    with pytest.raises(EpisodeError, match="adapt returned object, which has no predict"):
        evaluate(_NoPredict(), [make_episode()], progress=False)
    with pytest.raises(EpisodeError, match="predict returned ndarray, expected a tensor"):
        evaluate(_ArrayLogits(), [make_episode()], progress=False)
    empty_query = Episode(
        support_images=torch.zeros(2, 1, 4, 4),
        support_labels=torch.tensor([0, 1]),
        query_images=torch.zeros(0, 1, 4, 4),
        query_labels=torch.zeros(0, dtype=torch.int64),
        class_names=("a", "b"),
        source="tiny",
    )
    with pytest.raises(EpisodeError, match=r"episode 0 \(tiny\) has no query images"):
        evaluate(baseline, [empty_query], progress=False)


def test_evaluate_refuses_a_method_on_another_device() -> None:
    method = TinyProtoNet().to("meta")
    with pytest.raises(ConfigError, match=r"lives on meta but evaluation was asked on cpu; move it first"):
        evaluate(method, [make_episode()], progress=False)


# --------------------------------------------------------------------------- compare
def _pool(n_classes: int = 4, per_class: int = 12) -> ImagePool:
    g = torch.Generator().manual_seed(7)
    labels = torch.arange(n_classes).repeat(per_class)
    images = torch.rand(labels.numel(), 1, 6, 6, generator=g) * 0.5 + 0.15 * labels.view(-1, 1, 1, 1)
    return ImagePool(images=images, labels=labels, class_names=tuple(f"c{i}" for i in range(n_classes)), name="synthetic")


class CountingSampler(EpisodeSampler):
    """The real sampler, recording which indices were asked for."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []

    def sample(self, index: int) -> Episode:
        self.calls.append(index)
        return super().sample(index)


class Recorder(NearestCentroidBaseline):
    """Nearest centroid that keeps a copy of every support/query it was given, and may vandalise them."""

    def __init__(self, vandal: bool = False) -> None:
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.vandal = vandal

    def adapt(self, support_images: torch.Tensor, support_labels: torch.Tensor):
        self.seen.append((support_images.clone(), support_labels.clone()))
        adapted = super().adapt(support_images, support_labels)
        if self.vandal:
            support_images.mul_(0)  # an in-place edit must not leak to the next method
        return adapted


def test_compare_gives_every_method_the_same_episodes_sampled_once() -> None:
    sampler = CountingSampler([_pool()], ways=3, shots=2, queries=3, seed=11)
    first, second = Recorder(vandal=True), Recorder()
    # (no conformal sets: their leave-one-out adapts would add entries to ``seen``)
    results = compare({"first": first, "second": second}, sampler, 5, start=2, progress=False, conformal_alpha=None)
    assert sampler.calls == [2, 3, 4, 5, 6]
    assert list(results) == ["first", "second"]
    assert all(r.n_episodes == 5 for r in results.values())
    for i, ((s1, l1), (s2, l2)) in enumerate(zip(first.seen, second.seen)):
        fresh = sampler.sample(2 + i)
        assert torch.equal(s1, fresh.support_images) and torch.equal(s2, fresh.support_images)
        assert torch.equal(l1, fresh.support_labels) and torch.equal(l2, fresh.support_labels)
    # identical methods on identical episodes give identical per-episode accuracies
    assert [e.accuracy for e in results["first"].episodes] == [e.accuracy for e in results["second"].episodes]


def test_compare_restores_module_modes_and_accepts_methods_and_baselines() -> None:
    method = TinyProtoNet()
    method.train()
    sampler = EpisodeSampler([_pool()], ways=2, shots=2, queries=2, seed=0)
    results = compare({"proto": method, "nc": NearestCentroidBaseline()}, sampler, 3, progress=False)
    # one adapt per episode and one per left-out support image (2-way 2-shot: 4)
    assert method.training and method.seen_training_in_adapt == [False] * 3 * 5
    assert results["proto"].method == "proto" and results["nc"].ways == 2


def test_compare_validation() -> None:
    sampler = EpisodeSampler([_pool()], ways=2, shots=2, queries=2)
    nc = NearestCentroidBaseline()
    with pytest.raises(ConfigError, match="methods must be a non-empty dict"):
        compare({}, sampler, 2)
    with pytest.raises(ConfigError, match="every name must be a non-empty string, got 3"):
        compare({3: nc}, sampler, 2)  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="method 'x': expected an object with adapt"):
        compare({"x": object()}, sampler, 2)  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match=r"sampler must have sample\(index\)"):
        compare({"nc": nc}, [make_episode()], 2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="n_episodes must be an integer >= 1, got 0"):
        compare({"nc": nc}, sampler, 0)
    with pytest.raises(ConfigError, match="start must be an integer >= 0, got -1"):
        compare({"nc": nc}, sampler, 1, start=-1)

    class WrongSampler:
        def sample(self, index: int) -> str:
            return f"episode {index}"

    with pytest.raises(EpisodeError, match=r"sampler.sample\(0\) returned a str, not an Episode"):
        compare({"nc": nc}, WrongSampler(), 1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- calibration and conformal sets
def test_episode_metrics_divides_by_the_temperature_and_keeps_the_uncalibrated_ece() -> None:
    g = torch.Generator().manual_seed(8)
    labels = torch.arange(3).repeat(6)
    logits = torch.randn(18, 3, generator=g) * 4 + 3 * torch.nn.functional.one_hot(labels, 3)
    raw = episode_metrics(logits, labels)
    scaled = episode_metrics(logits, labels, temperature=2.5)
    reference = episode_metrics(logits / 2.5, labels)
    assert scaled.nll == pytest.approx(reference.nll) and scaled.ece == pytest.approx(reference.ece)
    assert scaled.brier == pytest.approx(reference.brier) and scaled.accuracy == raw.accuracy
    assert scaled.ece_uncalibrated == pytest.approx(raw.ece) and scaled.temperature == 2.5
    np.testing.assert_allclose(scaled.confidence_uncalibrated, raw.confidence)
    assert raw.ece_uncalibrated == pytest.approx(raw.ece) and raw.temperature == 1.0
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(ConfigError, match="temperature must be a finite number > 0"):
            episode_metrics(logits, labels, temperature=bad)


def test_episode_metrics_with_prediction_sets_hand_computed() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2])
    predicted = [0, 1, 1, 1, 2]  # query 1 wrong
    sets = np.array([
        [True, False, False],  # {0}: covers, not flagged, right
        [True, True, False],   # {0, 1}: covers, flagged (wrong anyway)
        [False, True, False],  # {1}: covers, not flagged, right
        [False, False, False],  # empty: misses, flagged (no class fits)
        [False, True, False],  # {1}: misses class 2, not flagged, but the arg-max (2) is right
    ])
    m = episode_metrics(one_hot_logits(predicted, 3), labels, prediction_sets=sets, conformal_alpha=0.1)
    assert m.coverage == pytest.approx(3 / 5) and m.set_size == pytest.approx(5 / 5)
    assert m.flagged.tolist() == [False, True, False, True, False] and m.flag_rule == "set"
    assert m.flagged_share == pytest.approx(2 / 5) and m.conformal_alpha == 0.1
    assert m.selective_accuracy == pytest.approx(1.0)  # queries 0, 2, 4 are all right
    everything = episode_metrics(one_hot_logits(predicted, 3), labels, prediction_sets=np.ones((5, 3), bool),
                                 conformal_alpha=0.1)
    assert everything.flagged_share == 1.0 and math.isnan(everything.selective_accuracy)
    with pytest.raises(EpisodeError, match=r"prediction_sets must be a bool array of the logits' shape \(5, 3\), got bool \(5, 2\)"):
        episode_metrics(one_hot_logits(predicted, 3), labels, prediction_sets=np.ones((5, 2), bool), conformal_alpha=0.1)
    with pytest.raises(EpisodeError, match=r"got float64 \(5, 3\)"):
        episode_metrics(one_hot_logits(predicted, 3), labels, prediction_sets=np.ones((5, 3)), conformal_alpha=0.1)
    with pytest.raises(ConfigError, match="conformal_alpha is required with prediction_sets"):
        episode_metrics(one_hot_logits(predicted, 3), labels, prediction_sets=sets)
    with pytest.raises(ConfigError, match=r"conformal_alpha must be in \(0, 1\)"):
        episode_metrics(one_hot_logits(predicted, 3), labels, prediction_sets=sets, conformal_alpha=1.5)


def test_without_sets_queries_are_flagged_by_calibrated_entropy() -> None:
    labels = torch.tensor([0, 1, 0])
    logits = torch.tensor([[4.0, 0.0], [0.0, 0.2], [3.0, 0.0]])
    m = episode_metrics(logits, labels)
    # normalised entropies: 0.13, 0.99, 0.25 -> only the near-tie is flagged
    assert m.flag_rule == "entropy" and m.flagged.tolist() == [False, True, False]
    assert math.isnan(m.coverage) and math.isnan(m.set_size) and m.conformal_alpha is None
    assert m.selective_accuracy == 1.0
    # a large temperature flattens every probability: all flagged on the calibrated scores
    assert episode_metrics(logits, labels, temperature=20.0).flagged.all()
    assert episode_metrics(logits, labels, uncertain_threshold=0.05).flagged.tolist() == [True, True, True]
    np.testing.assert_allclose(normalized_entropy(np.array([[0.5, 0.5], [1.0, 0.0]])), [1.0, 0.0])


class Tempered(NearestCentroidBaseline):
    """The nearest-centroid baseline carrying a temperature, as a calibrated checkpoint's method does."""

    def __init__(self, temperature: object) -> None:
        self.temperature = temperature


def test_evaluate_uses_the_method_temperature_and_reports_conformal_sets() -> None:
    episodes = [make_episode(n=2, k=5, q=4, separation=0.3, seed=s) for s in range(4)]
    summary = evaluate(Tempered(4.0), episodes, progress=False)
    plain = evaluate(NearestCentroidBaseline(), episodes, progress=False)
    assert summary.temperature == 4.0 and plain.temperature == 1.0
    assert summary.accuracy.mean == plain.accuracy.mean and summary.nll != pytest.approx(plain.nll)
    assert summary.ece_uncalibrated == pytest.approx(plain.ece)
    assert summary.ece_uncalibrated_pooled == pytest.approx(plain.ece_pooled)
    first = summary.episodes[0]
    direct = episode_metrics(NearestCentroidBaseline().adapt(episodes[0].support_images, episodes[0].support_labels)
                             .predict(episodes[0].query_images) / 4.0, episodes[0].query_labels)
    assert first.nll == pytest.approx(direct.nll)
    # 2-way 5-shot: 10 support images, enough for 90% sets; the classes are well apart
    assert summary.conformal_alpha == 0.1 and summary.coverage.n == 4 and summary.flag_rules == ("set",)
    # (a query even closer to its class than the left-out support scans were may get an empty set)
    assert summary.coverage.mean >= 0.85 and 0.85 <= summary.set_size.mean <= 1.0
    assert summary.flagged_share.mean == pytest.approx(1.0 - summary.set_size.mean)
    assert summary.selective_accuracy.mean == 1.0
    off = evaluate(Tempered(4.0), episodes, progress=False, conformal_alpha=None)
    assert off.conformal_alpha is None and off.coverage.n == 0 and math.isnan(off.coverage.mean)
    assert off.flag_rules == ("entropy",) and off.nll == pytest.approx(summary.nll)


def test_one_shot_episodes_have_no_sets_and_fall_back_to_entropy() -> None:
    episodes = [make_episode(n=3, k=1, q=3, seed=s) for s in range(2)]
    summary = evaluate(NearestCentroidBaseline(), episodes, progress=False, conformal_alpha=0.2)
    assert summary.conformal_alpha is None and summary.coverage.n == 0 and summary.flag_rules == ("entropy",)
    assert summary.flagged_share.n == 2
    text = summary.format_text()
    assert "prediction sets: none" in text and "normalised entropy of the calibrated probabilities > 0.6" in text


def test_too_few_support_images_for_the_level_give_full_sets_and_flag_everything() -> None:
    # 2-way 2-shot: S = 4 support images; a 90% set must then hold both classes
    summary = evaluate(NearestCentroidBaseline(), [make_episode(n=2, k=2, q=3, seed=s) for s in range(3)],
                       progress=False)
    assert summary.set_size.mean == 2.0 and summary.coverage.mean == 1.0
    assert summary.flagged_share.mean == 1.0 and math.isnan(summary.selective_accuracy.mean)
    assert summary.selective_accuracy.n == 0


def test_conformal_coverage_holds_over_many_overlapping_episodes() -> None:
    g = torch.Generator().manual_seed(9)
    labels = torch.arange(4).repeat(30)
    images = torch.rand(labels.numel(), 1, 6, 6, generator=g) * 0.5 + 0.03 * labels.view(-1, 1, 1, 1)
    pool = ImagePool(images=images, labels=labels, class_names=("a", "b", "c", "d"), name="overlapping")
    sampler = EpisodeSampler([pool], ways=3, shots=5, queries=5, seed=3)
    summary = evaluate(NearestCentroidBaseline(), sampler.episodes(60), n_episodes=60, progress=False)
    assert summary.accuracy.mean < 0.9  # the classes overlap
    assert summary.coverage.mean >= 0.85 and summary.coverage.n == 60
    assert 1.0 < summary.set_size.mean < 3.0
    assert summary.selective_accuracy.mean >= summary.accuracy.mean  # abstaining on flagged queries helps


def test_evaluate_refuses_bad_temperature_and_alpha() -> None:
    with pytest.raises(ConfigError, match=r"method 'nearest_centroid': temperature must be a finite number > 0, got -1.0"):
        evaluate(Tempered(-1.0), [make_episode()], progress=False)
    with pytest.raises(ConfigError, match=r"temperature must be a finite number > 0, got 'hot'"):
        compare({"t": Tempered("hot")}, EpisodeSampler([_pool()], ways=2, shots=2, queries=2), 1, progress=False)
    with pytest.raises(ConfigError, match=r"conformal_alpha must be in \(0, 1\) .*got 0"):
        evaluate(NearestCentroidBaseline(), [make_episode()], progress=False, conformal_alpha=0)


def test_summary_reports_calibration_and_sets_in_json_and_text() -> None:
    summary = evaluate(Tempered(2.0), [make_episode(n=2, k=5, q=3, seed=s) for s in range(3)], progress=False,
                       method_name="nc")
    data = json.loads(json.dumps(summary.to_dict(), allow_nan=False))
    for key in ("temperature", "ece_uncalibrated_mean", "ece_uncalibrated_pooled", "conformal_alpha",
                "conformal_confidence", "coverage_mean", "coverage_ci95", "coverage_n_episodes", "set_size_mean",
                "set_size_ci95", "flagged_share_mean", "flagged_share_ci95", "selective_accuracy_mean",
                "selective_accuracy_ci95", "flag_rule"):
        assert key in data, key
    assert data["temperature"] == 2.0 and data["conformal_alpha"] == 0.1
    assert data["conformal_confidence"] == pytest.approx(0.9) and data["coverage_n_episodes"] == 3
    assert data["flag_rule"] == "the prediction set does not hold exactly one class"
    text = summary.format_text()
    assert "temperature T = 2.0000" in text and "ECE uncalibrated pooled" in text
    assert "prediction sets: alpha 0.1 (aim: true class in the set in >= 90% of queries)" in text
    for label in ("coverage", "mean set size", "flagged uncertain", "selective accuracy"):
        row = next(line for line in text.splitlines() if line.startswith(label + " "))
        assert row.rstrip().endswith("3"), row
    none = summarize([metrics_with_accuracy(2)])
    data = json.loads(json.dumps(none.to_dict(), allow_nan=False))
    assert data["coverage_mean"] is None and data["conformal_alpha"] is None
    assert data["selective_accuracy_mean"] == 0.5 and data["flagged_share_mean"] == 0.0  # one-hot logits: sure


def test_evaluate_command_reports_sets_and_turns_them_off(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from medfew.cli import main

    rng = np.random.default_rng(0)
    for label, period in (("fine", 4), ("coarse", 14)):
        (tmp_path / label).mkdir()
        for i in range(9):
            row = 0.5 + 0.4 * np.sin(2 * np.pi * (np.arange(28) + rng.uniform(0, period)) / period)
            pixels = np.clip(np.tile(row, (28, 1)) + rng.normal(0, 0.05, (28, 28)), 0, 1)
            Image.fromarray((pixels * 255).astype(np.uint8)).save(tmp_path / label / f"{i}.png")
    common = ["evaluate", "--baseline", "nearest_centroid", "--folder", str(tmp_path), "--ways", "2", "--shots", "5",
              "--queries", "3", "--episodes", "4", "--quiet"]
    assert main([*common, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["conformal_alpha"] == 0.1 and data["coverage_n_episodes"] == 4 and data["coverage_mean"] >= 0.5
    assert data["set_size_mean"] is not None and data["temperature"] == 1.0
    assert main([*common, "--alpha", "0.2"]) == 0
    text = capsys.readouterr().out
    assert "prediction sets: alpha 0.2 (aim: true class in the set in >= 80% of queries)" in text
    assert any(line.startswith("coverage ") for line in text.splitlines())
    for off in ("0", "none"):
        assert main([*common, "--alpha", off, "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["conformal_alpha"] is None and data["coverage_mean"] is None and data["coverage_n_episodes"] == 0
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--alpha", "ninety"])
    assert exit_info.value.code == 2 and "argument --alpha: expected a number in (0, 1)" in capsys.readouterr().err
