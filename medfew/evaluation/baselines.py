"""Raw-pixel baselines with the method contract: ``adapt(support) -> AdaptedModel``, ``predict(query)``.

They learn nothing across episodes: each support set is fitted from scratch on flattened pixels with
scikit-learn, so a meta-learned method has to beat them to be worth its training. Their logits are
plain tensors (not differentiable with respect to the query images).

The nearest centroid computes its leave-one-out logits (the scores of conformal prediction sets) in
closed form, from the centroid of a class without one image; logistic regression has no shortcut, so
:func:`medfew.evaluation.conformal.leave_one_out_logits` refits it once per support image.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch
from scipy.special import log_softmax
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid
from sklearn.preprocessing import StandardScaler

from medfew.errors import ConfigError, EpisodeError, RegistryError
from medfew.methods.base import (
    MIN_CLASSES,
    AdaptedModel,
    check_leave_one_out,
    support_shortfall,
)


def _flatten(images: torch.Tensor, what: str) -> np.ndarray:
    """``(B, C, H, W)`` (or any ``(B, ...)``) tensor -> ``(B, C*H*W)`` float64 array."""
    if not isinstance(images, torch.Tensor):
        raise EpisodeError(f"{what} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim < 2 or images.shape[0] == 0:
        raise EpisodeError(
            f"{what} must be a non-empty (B, C, H, W) batch, got shape {tuple(images.shape)}"
        )
    return images.detach().to("cpu", torch.float64).reshape(images.shape[0], -1).numpy()


def _check_support(images: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate a support set; return flattened ``(S, D)`` features, ``(S,)`` labels and ``N``."""
    features = _flatten(images, "support_images")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise EpisodeError(f"support_labels must be a ({features.shape[0]},) tensor, got {shape}")
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise EpisodeError(f"support_labels must be integers, got {labels.dtype}")
    targets = labels.detach().cpu().numpy().astype(np.int64)
    if targets.min() < 0:
        raise EpisodeError(f"support_labels must be >= 0, got {np.unique(targets).tolist()}")
    counts = np.bincount(targets).tolist()  # (N,) with N = max label + 1
    too_few, missing = support_shortfall(dict(enumerate(counts)))
    if too_few or missing:
        raise EpisodeError(
            f"support_labels must cover every class 0..N-1 with N >= {MIN_CLASSES}, "
            f"got {np.unique(targets).tolist()}" + (f" (missing {missing})" if missing else "")
        )
    return features, targets, len(counts)


class _FittedPixels(AdaptedModel):
    """Shared query handling of the raw-pixel adapted models."""

    def __init__(self, n_classes: int, n_features: int) -> None:
        self.n_classes = n_classes
        self.n_features = n_features

    def _query(self, query_images: torch.Tensor) -> np.ndarray:
        features = _flatten(query_images, "query_images")
        if features.shape[1] != self.n_features:
            raise EpisodeError(
                f"query images have {features.shape[1]} pixels each but the support had {self.n_features} "
                f"(query shape {tuple(query_images.shape)})"
            )
        return features

    @staticmethod
    def _as_logits(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(values)).to(device=like.device, dtype=torch.float32)


class NearestCentroidModel(_FittedPixels):
    """Class centroids of the support pixels; logits are negative squared Euclidean distances."""

    def __init__(self, classifier: NearestCentroid, n_features: int) -> None:
        super().__init__(len(classifier.classes_), n_features)
        self.classifier = classifier
        self.centroids = np.asarray(classifier.centroids_, dtype=np.float64)  # (N, D)

    def predict(self, query_images: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W)`` -> ``(M, N)`` float32 logits ``-||x - centroid_n||^2``."""
        features = self._query(query_images)
        distances = ((features[:, None, :] - self.centroids[None, :, :]) ** 2).sum(axis=-1)
        return self._as_logits(-distances, query_images)


def _leave_one_out_support(images: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate a support set for leave-one-out: every class needs at least 2 images."""
    features, targets, n = _check_support(images, labels)
    check_leave_one_out(torch.from_numpy(targets), n)
    return features, targets, n


class LogisticRegressionModel(_FittedPixels):
    """Multinomial (binary for ``N = 2``) logistic regression on standardised support pixels."""

    def __init__(self, scaler: StandardScaler, classifier: LogisticRegression, n_features: int) -> None:
        super().__init__(len(classifier.classes_), n_features)
        self.scaler = scaler
        self.classifier = classifier

    def predict(self, query_images: torch.Tensor) -> torch.Tensor:
        """``(M, C, H, W)`` -> ``(M, N)`` float32 log-probabilities (``predict_proba`` in log space)."""
        return self._as_logits(self.log_probabilities(self._query(query_images)), query_images)

    def log_probabilities(self, features: np.ndarray) -> np.ndarray:
        """``(M, D)`` flattened pixels -> ``(M, N)`` float64 log-probabilities."""
        decision = np.asarray(self.classifier.decision_function(self.scaler.transform(features)), dtype=np.float64)
        if decision.ndim == 1:  # binary: the score of class 1 against class 0
            decision = np.stack([np.zeros_like(decision), decision], axis=1)
        # log_softmax of the decision function equals log(predict_proba) without underflow to -inf.
        return log_softmax(decision, axis=1)


class Baseline(ABC):
    """A method without meta-learned parameters: every support set is fitted from scratch."""

    name: str = ""

    @abstractmethod
    def adapt(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> AdaptedModel:
        """Fit the support set.

        Args:
            support_images: ``(N*K, C, H, W)`` float32.
            support_labels: ``(N*K,)`` int64 in ``[0, N)``, every class present.

        Raises:
            EpisodeError: Bad shapes, non-integer labels, or a class with no support image.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class NearestCentroidBaseline(Baseline):
    """``sklearn.neighbors.NearestCentroid`` on flattened raw pixels."""

    name = "nearest_centroid"

    def adapt(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> NearestCentroidModel:
        features, targets, _ = _check_support(support_images, support_labels)
        with warnings.catch_warnings():
            # 1-shot: sklearn computes a within-class spread (unused without shrinkage) from 0 dof.
            warnings.filterwarnings("ignore", message="invalid value encountered", category=RuntimeWarning)
            classifier = NearestCentroid(metric="euclidean").fit(features, targets)
        return NearestCentroidModel(classifier, features.shape[1])

    def leave_one_out_logits(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> torch.Tensor:
        """Exact leave-one-out logits in closed form: image ``i`` against its class centroid without it.

        Args:
            support_images: ``(S, C, H, W)``.
            support_labels: ``(S,)`` integer labels in ``[0, N)``; every class with at least 2 images.

        Returns:
            ``(S, N)`` float32 logits ``-||x_i - centroid_n^(-i)||^2``.

        Raises:
            EpisodeError: A bad support set or a class with fewer than 2 images.
        """
        features, targets, n = _leave_one_out_support(support_images, support_labels)
        counts = np.bincount(targets, minlength=n).astype(np.float64)
        sums = np.stack([features[targets == c].sum(axis=0) for c in range(n)])  # (N, D)
        centroids = np.broadcast_to(sums / counts[:, None], (features.shape[0], *sums.shape)).copy()  # (S, N, D)
        rows = np.arange(features.shape[0])
        centroids[rows, targets] = (sums[targets] - features) / (counts[targets] - 1)[:, None]
        distances = ((features[:, None, :] - centroids) ** 2).sum(axis=-1)
        return _FittedPixels._as_logits(-distances, support_images)


class LogisticRegressionBaseline(Baseline):
    """``sklearn.linear_model.LogisticRegression`` (L2, lbfgs) on support-standardised raw pixels.

    Args:
        C: Inverse L2 regularisation strength.
        max_iter: Fixed lbfgs iteration budget (the fit is deterministic).

    Raises:
        ConfigError: ``C <= 0`` or ``max_iter < 1``.
    """

    name = "logistic_regression"

    def __init__(self, C: float = 1.0, max_iter: int = 1000) -> None:
        if not C > 0:
            raise ConfigError(f"logistic_regression: C must be > 0, got {C}")
        if max_iter < 1:
            raise ConfigError(f"logistic_regression: max_iter must be >= 1, got {max_iter}")
        self.C = float(C)
        self.max_iter = int(max_iter)

    def adapt(self, support_images: torch.Tensor, support_labels: torch.Tensor) -> LogisticRegressionModel:
        features, targets, _ = _check_support(support_images, support_labels)
        scaler = StandardScaler().fit(features)  # constant pixels get scale 1, not a division by zero
        classifier = LogisticRegression(C=self.C, max_iter=self.max_iter, solver="lbfgs", random_state=0)
        classifier.fit(scaler.transform(features), targets)
        return LogisticRegressionModel(scaler, classifier, features.shape[1])



_BASELINES: dict[str, Callable[..., Baseline]] = {
    NearestCentroidBaseline.name: NearestCentroidBaseline,
    LogisticRegressionBaseline.name: LogisticRegressionBaseline,
}


def list_baselines() -> list[str]:
    """Names of the registered baselines, sorted."""
    return sorted(_BASELINES)


def build_baseline(name: str, **kwargs: object) -> Baseline:
    """Build a baseline by name.

    Args:
        name: One of ``list_baselines()``.
        **kwargs: Passed to the baseline's constructor (e.g. ``C``, ``max_iter`` for logistic regression).

    Raises:
        RegistryError: Unknown name (the message lists the known ones).
        ConfigError: Keyword arguments the baseline does not accept, or bad values.
    """
    if name not in _BASELINES:
        raise RegistryError(f"unknown baseline {name!r}; known baselines: {', '.join(list_baselines())}")
    try:
        return _BASELINES[name](**kwargs)
    except TypeError as error:
        raise ConfigError(f"baseline {name!r} does not accept options {sorted(kwargs)}: {error}") from error
