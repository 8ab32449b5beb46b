"""Metrics of one few-shot episode: query logits and labels -> ``EpisodeMetrics``.

Conventions (shared by every number this module returns):

* Probabilities are ``softmax(logits)`` computed in float64; predictions are ``argmax(logits)``.
* A class absent from the query has no positives, so its sensitivity and its one-vs-rest AUROC are
  undefined and reported as ``NaN``; a class that is the *only* one in the query has no negatives, so
  its specificity and AUROC are ``NaN``. Aggregates skip ``NaN`` entries: balanced accuracy averages
  the recall of the classes present in the query (as ``sklearn.metrics.balanced_accuracy_score``), and
  macro AUROC averages the defined one-vs-rest AUROCs (``NaN`` only when none is defined, i.e. the
  query holds a single class).
* For ``N = 2`` the AUROC is the binary AUROC of the probability of class 1 (which equals both
  one-vs-rest AUROCs).
* Brier score is the multiclass definition ``mean_i sum_c (p_ic - y_ic)^2`` in ``[0, 2]`` for every
  ``N`` (so it is comparable across ways; for ``N = 2`` it is twice the "binary" Brier score).
* NLL is ``-mean_i log p_i,y_i`` from the log-softmax (exact, no probability clipping; it may be
  ``inf`` if a logit of the true class is ``-inf``).
* ECE uses 10 equal-width confidence bins ``(0, 0.1], ..., (0.9, 1]`` over the max probability:
  ``sum_b |B_b| / M * |accuracy(B_b) - confidence(B_b)|``.
* Calibration: :func:`episode_metrics` takes the method's *raw* logits and its ``temperature`` ``T``;
  every probability above is ``softmax(logits / T)`` (``T = 1``: uncalibrated), and
  ``ece_uncalibrated`` is the ECE of ``softmax(logits)`` beside it. Predictions and accuracy do not
  depend on ``T``.
* Selective prediction: a query is *flagged uncertain* when its conformal prediction set (see
  :mod:`medfew.evaluation.conformal`) does not hold exactly one class, or, when the episode has no
  sets, when the normalised entropy of its calibrated probabilities exceeds
  :data:`UNCERTAIN_THRESHOLD`. ``selective_accuracy`` is the accuracy of the unflagged queries
  (``NaN`` when every query is flagged).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import log_softmax
from sklearn.metrics import confusion_matrix, roc_auc_score

from medfew.errors import ConfigError, EpisodeError
from medfew.evaluation.calibration import check_temperature
from medfew.evaluation.conformal import check_alpha

ECE_BINS = 10
UNCERTAIN_THRESHOLD = 0.6
"""Normalised-entropy threshold of the *uncertain* flag where no prediction set is available
(evaluation and the clinician session share it). For two classes it flags a top probability below
about 0.85; for five classes, below about 0.75 (depending on how the rest is spread)."""

ArrayLike = torch.Tensor | np.ndarray


@dataclass(frozen=True, eq=False)
class EpisodeMetrics:
    """Every metric of one episode's query set.

    Attributes:
        accuracy: Fraction of queries whose argmax is the label.
        balanced_accuracy: Mean recall over the classes present in the query.
        auroc: Macro one-vs-rest AUROC (binary AUROC for ``N = 2``); ``NaN`` if undefined.
        sensitivity: ``(N,)`` per-class recall ``TP / (TP + FN)``; ``NaN`` for a class absent from the
            query.
        specificity: ``(N,)`` per-class ``TN / (TN + FP)``; ``NaN`` for a class with no negatives.
        per_class_auroc: ``(N,)`` one-vs-rest AUROC per class; ``NaN`` where undefined.
        nll: Mean negative log-likelihood of the labels (log loss).
        brier: Multiclass Brier score in ``[0, 2]``.
        ece: Expected calibration error with ``ECE_BINS`` bins.
        confusion: ``(N, N)`` int64 confusion matrix, rows = true class, columns = predicted class.
        confidence: ``(M,)`` float64 max softmax probability of each query (for pooled calibration).
        correct: ``(M,)`` bool, whether each query was classified correctly.
        query_counts: ``(N,)`` number of queries of each class.
        class_names: ``(N,)`` class names in label order, or ``None`` when unknown.
        shots: Support images per class ``K``, or ``None`` when unknown.
        temperature: The temperature ``T`` the probabilities were divided by (1.0: uncalibrated).
        ece_uncalibrated: ECE of ``softmax(logits)``, before dividing by ``T``.
        confidence_uncalibrated: ``(M,)`` max probability of ``softmax(logits)`` of each query.
        conformal_alpha: Level of the prediction sets, or ``None`` when the episode had none.
        coverage: Share of queries whose true class is in their set; ``NaN`` without sets.
        set_size: Mean number of classes per set; ``NaN`` without sets.
        flagged: ``(M,)`` bool, whether each query is flagged uncertain (see the module docstring).
        flag_rule: ``"set"`` (set size other than 1) or ``"entropy"`` (normalised entropy of the
            calibrated probabilities above :data:`UNCERTAIN_THRESHOLD`).
    """

    accuracy: float
    balanced_accuracy: float
    auroc: float
    sensitivity: tuple[float, ...]
    specificity: tuple[float, ...]
    per_class_auroc: tuple[float, ...]
    nll: float
    brier: float
    ece: float
    confusion: np.ndarray
    confidence: np.ndarray
    correct: np.ndarray
    query_counts: tuple[int, ...]
    class_names: tuple[str, ...] | None = None
    shots: int | None = None
    temperature: float = 1.0
    ece_uncalibrated: float = math.nan
    confidence_uncalibrated: np.ndarray | None = None
    conformal_alpha: float | None = None
    coverage: float = math.nan
    set_size: float = math.nan
    flagged: np.ndarray | None = None
    flag_rule: str = "entropy"

    @property
    def flagged_share(self) -> float:
        """Share of queries flagged uncertain (``NaN`` when no flags were computed)."""
        return float(self.flagged.mean()) if self.flagged is not None else math.nan

    @property
    def selective_accuracy(self) -> float:
        """Accuracy of the queries that are not flagged uncertain; ``NaN`` if every query is flagged."""
        if self.flagged is None or bool(self.flagged.all()):
            return math.nan
        return float(self.correct[~self.flagged].mean())

    @property
    def ways(self) -> int:
        """Number of classes ``N``."""
        return len(self.sensitivity)

    @property
    def n_queries(self) -> int:
        """Number of query images ``M``."""
        return int(self.confidence.shape[0])


def _to_numpy(values: ArrayLike, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dtype in (torch.bfloat16, torch.float16):  # numpy has no bfloat16
            values = values.double()
        return values.numpy()
    if isinstance(values, np.ndarray):
        return values
    raise EpisodeError(f"{what} must be a torch.Tensor or numpy array, got {type(values).__name__}")


def _validate(
    logits: ArrayLike, labels: ArrayLike, class_names: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Check shapes and values; return float64 ``(M, N)`` logits and int64 ``(M,)`` labels."""
    scores = _to_numpy(logits, "logits")
    targets = _to_numpy(labels, "labels")
    if scores.ndim != 2:
        raise EpisodeError(f"logits must be (M, N), got shape {tuple(scores.shape)}")
    m, n = scores.shape
    if targets.ndim != 1 or targets.shape[0] != m:
        raise EpisodeError(
            f"labels must be ({m},) to match logits {tuple(scores.shape)}, got {tuple(targets.shape)}"
        )
    if m == 0:
        raise EpisodeError("no query images: logits and labels are empty")
    if n < 2:
        raise EpisodeError(f"logits must score at least 2 classes, got N={n}")
    if not np.issubdtype(scores.dtype, np.floating):
        raise EpisodeError(f"logits must be floating point, got {scores.dtype}")
    if targets.dtype == np.bool_ or not np.issubdtype(targets.dtype, np.integer):
        raise EpisodeError(f"labels must be integers, got {targets.dtype}")
    if int(targets.min()) < 0 or int(targets.max()) >= n:
        raise EpisodeError(
            f"labels must lie in [0, {n}) for {n} logit columns, got {np.unique(targets).tolist()}"
        )
    scores = scores.astype(np.float64, copy=False)
    bad = np.isnan(scores) | np.isposinf(scores)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1)).tolist()
        raise EpisodeError(f"logits hold {int(bad.sum())} NaN or +inf values (rows {rows})")
    empty_rows = np.flatnonzero(np.isneginf(scores).all(axis=1))
    if empty_rows.size:
        raise EpisodeError(f"logits rows {empty_rows.tolist()} are -inf for every class")
    if class_names is not None and len(class_names) != n:
        raise EpisodeError(
            f"class_names has {len(class_names)} names but logits score N={n} classes: {list(class_names)}"
        )
    return scores, targets.astype(np.int64, copy=False)


def softmax_probabilities(logits: ArrayLike) -> np.ndarray:
    """``(M, N)`` logits -> ``(M, N)`` float64 softmax probabilities (rows sum to 1)."""
    return np.exp(log_softmax(_to_numpy(logits, "logits").astype(np.float64), axis=1))


def normalized_entropy(probabilities: np.ndarray) -> np.ndarray:
    """``(M, N)`` probabilities -> ``(M,)`` entropy divided by its maximum ``log N``, in ``[0, 1]``."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
    return np.clip(entropy / math.log(p.shape[1]), 0.0, 1.0)


def one_vs_rest_auroc(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, ...]:
    """Per-class one-vs-rest AUROC, ``NaN`` for a class with no positives or no negatives.

    Args:
        probabilities: ``(M, N)`` class probabilities (or any scores, higher = more likely).
        labels: ``(M,)`` int labels in ``[0, N)``.

    Returns:
        ``(N,)`` AUROC of each class's column against "this class vs the rest".
    """
    aurocs = []
    for c in range(probabilities.shape[1]):
        positives = labels == c
        if positives.all() or not positives.any():
            aurocs.append(math.nan)
        else:
            aurocs.append(float(roc_auc_score(positives, probabilities[:, c])))
    return tuple(aurocs)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE over equal-width confidence bins ``(0, 1/n_bins], ..., (1 - 1/n_bins, 1]``.

    Args:
        confidence: ``(M,)`` max probability of each prediction, in ``[0, 1]``.
        correct: ``(M,)`` bool, whether each prediction was right.
        n_bins: Number of bins.

    Returns:
        ``sum_b |B_b| / M * |mean(correct in B_b) - mean(confidence in B_b)|``.
    """
    if confidence.shape != correct.shape or confidence.ndim != 1 or confidence.size == 0:
        raise EpisodeError(
            f"confidence and correct must be equal non-empty (M,) arrays, got {confidence.shape} and {correct.shape}"
        )
    if n_bins < 1:
        raise EpisodeError(f"n_bins must be >= 1, got {n_bins}")
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    bins = np.searchsorted(inner_edges, confidence, side="left")  # right-closed bins
    total = 0.0
    for b in np.unique(bins):
        members = bins == b
        gap = abs(float(correct[members].mean()) - float(confidence[members].mean()))
        total += members.sum() / confidence.size * gap
    return float(total)


def _specificity(confusion: np.ndarray) -> tuple[float, ...]:
    total = confusion.sum()
    values = []
    for c in range(confusion.shape[0]):
        false_pos = confusion[:, c].sum() - confusion[c, c]
        negatives = total - confusion[c, :].sum()
        values.append(float((negatives - false_pos) / negatives) if negatives else math.nan)
    return tuple(values)


def episode_metrics(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    class_names: Sequence[str] | None = None,
    shots: int | None = None,
    temperature: float = 1.0,
    prediction_sets: np.ndarray | None = None,
    conformal_alpha: float | None = None,
    uncertain_threshold: float = UNCERTAIN_THRESHOLD,
) -> EpisodeMetrics:
    """Compute every metric of one episode's query predictions.

    Args:
        logits: ``(M, N)`` raw query logits (tensor or array, any float dtype, any device).
        labels: ``(M,)`` integer query labels in ``[0, N)``.
        class_names: ``(N,)`` class names in label order, kept for per-class summaries.
        shots: Support images per class, kept for the summary.
        temperature: ``T > 0``; probabilities are ``softmax(logits / T)``.
        prediction_sets: ``(M, N)`` bool conformal sets of the queries, or ``None`` (then queries are
            flagged by the entropy rule).
        conformal_alpha: The level the sets were built for (required with ``prediction_sets``).
        uncertain_threshold: Normalised-entropy threshold of the entropy rule, in ``(0, 1)``.

    Returns:
        The episode's ``EpisodeMetrics`` (see the module docstring for ``NaN`` conventions).

    Raises:
        EpisodeError: Shapes disagree, labels are out of range or not integers, logits are NaN/+inf,
            ``class_names`` does not have ``N`` entries, or ``prediction_sets`` is not ``(M, N)`` bool.
        ConfigError: A bad ``temperature``, ``conformal_alpha`` or ``uncertain_threshold``.
    """
    scores, targets = _validate(logits, labels, class_names)
    temperature = check_temperature(temperature)
    if not 0.0 < uncertain_threshold < 1.0:
        raise ConfigError(f"uncertain_threshold must be in (0, 1), got {uncertain_threshold!r}")
    n = scores.shape[1]
    raw_confidence = np.exp(log_softmax(scores, axis=1)).max(axis=1)
    scores = scores / temperature
    log_probs = log_softmax(scores, axis=1)
    probs = np.exp(log_probs)
    predicted = scores.argmax(axis=1)
    correct = predicted == targets
    confusion = confusion_matrix(targets, predicted, labels=np.arange(n)).astype(np.int64)
    positives = confusion.sum(axis=1)
    sensitivity = tuple(
        float(confusion[c, c] / positives[c]) if positives[c] else math.nan for c in range(n)
    )
    # Mean recall of the classes present in the query: what sklearn's balanced_accuracy_score computes,
    # taken from our full-label confusion matrix so absent classes raise no sklearn warnings.
    balanced = float(np.mean([s for s in sensitivity if not math.isnan(s)]))
    per_class_auroc = one_vs_rest_auroc(probs, targets)
    if n == 2:
        auroc = per_class_auroc[1]
    else:
        defined = [a for a in per_class_auroc if not math.isnan(a)]
        auroc = float(np.mean(defined)) if defined else math.nan
    onehot = np.eye(n)[targets]
    confidence = probs.max(axis=1)
    if prediction_sets is None:
        coverage = set_size = math.nan
        flagged = normalized_entropy(probs) > uncertain_threshold
        rule, conformal_alpha = "entropy", None
    else:
        sets = _check_sets(prediction_sets, scores.shape)
        if conformal_alpha is None:
            raise ConfigError("conformal_alpha is required with prediction_sets (the level they were built for)")
        conformal_alpha = check_alpha(conformal_alpha, "conformal_alpha")
        sizes = sets.sum(axis=1)
        coverage, set_size = float(sets[np.arange(targets.size), targets].mean()), float(sizes.mean())
        flagged, rule = sizes != 1, "set"
    return EpisodeMetrics(
        accuracy=float(correct.mean()),
        balanced_accuracy=balanced,
        auroc=auroc,
        sensitivity=sensitivity,
        specificity=_specificity(confusion),
        per_class_auroc=per_class_auroc,
        nll=float(-log_probs[np.arange(targets.size), targets].mean()),
        brier=float(((probs - onehot) ** 2).sum(axis=1).mean()),
        ece=expected_calibration_error(confidence, correct),
        confusion=confusion,
        confidence=confidence,
        correct=correct,
        query_counts=tuple(int(p) for p in positives),
        class_names=tuple(str(c) for c in class_names) if class_names is not None else None,
        shots=shots,
        temperature=temperature,
        ece_uncalibrated=expected_calibration_error(raw_confidence, correct),
        confidence_uncalibrated=raw_confidence,
        conformal_alpha=conformal_alpha,
        coverage=coverage,
        set_size=set_size,
        flagged=flagged,
        flag_rule=rule,
    )


def _check_sets(prediction_sets: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    sets = _to_numpy(prediction_sets, "prediction_sets")
    if sets.dtype != np.bool_ or sets.shape != shape:
        raise EpisodeError(
            f"prediction_sets must be a bool array of the logits' shape {tuple(shape)}, "
            f"got {sets.dtype} {tuple(sets.shape)}"
        )
    return sets
