"""Uncertainty of a few-shot prediction: the prediction set or normalised entropy, and an
out-of-distribution distance rule.

**Uncertain**: when the session has a conformal prediction set for the scan (see
:mod:`medfew.evaluation.conformal`: at least two support scans in every class), the scan is
*uncertain* when its set does not hold exactly one class: several classes (the model cannot tell
them apart at the set's level, e.g. 90%) or none (no class fits). Otherwise (a class with a single
scan, or sets off) the entropy rule of :func:`entropy_flags` applies to the *calibrated*
probabilities ``softmax(logits / T)``: the entropy ``H = -sum_c p_c log p_c`` divided by its maximum
``log N`` lies in ``[0, 1]``; the scan is *uncertain* when it exceeds ``threshold`` (default
:data:`UNCERTAIN_THRESHOLD` = 0.6, the constant evaluation uses too). For two classes 0.6 means a top
probability below about 0.85; for five classes, below about 0.75 (depending on how the rest is spread).

**Out of distribution** (:class:`DistanceReference`): in the adapted model's ``embed`` space, each
class has a mean of its support features. The *reference radius* ``r`` is the largest Euclidean
distance of a support scan to its own class mean; when every class has a single scan (``r = 0``),
``r`` is the smallest distance between two class means instead. A query is out of distribution when
its distance to the *nearest* class mean exceeds ``factor * r`` (default :data:`OOD_FACTOR` = 1.25):
it is farther from every class than any support scan is from its own. The rule is a screening
heuristic on a handful of scans, not a calibrated test.

The default factor was chosen with ``benchmarks/ood_calibration.py`` on the val splits of the default
model's meta-train domains (never a test domain): 5-shot queries of the episode's own classes are
flagged 2.8% of the time and val images of the other domains 79% of the time; at 1-shot (the
between-means radius) 6.9% and 44%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from medfew.errors import ConfigError
from medfew.evaluation.metrics import UNCERTAIN_THRESHOLD

__all__ = ["OOD_FACTOR", "UNCERTAIN_THRESHOLD", "DistanceReference", "check_threshold", "entropy_flags"]

OOD_FACTOR = 1.25


def entropy_flags(probabilities: torch.Tensor, threshold: float = UNCERTAIN_THRESHOLD) -> tuple[float, float, bool]:
    """Entropy of one probability vector and the entropy rule's *uncertain* flag.

    Args:
        probabilities: ``(N,)`` calibrated softmax probabilities, ``N >= 2``.
        threshold: Normalised-entropy threshold in ``(0, 1)``.

    Returns:
        ``(entropy in nats, normalised entropy in [0, 1], normalised entropy > threshold)``.
    """
    p = probabilities.detach().double().clamp_min(0.0)
    entropy = float(-(p * torch.log(p.clamp_min(1e-300))).sum())
    normalised = min(max(entropy / math.log(p.numel()), 0.0), 1.0)
    return entropy, normalised, normalised > threshold


def check_threshold(name: str, value: float, low: float, high: float | None) -> float:
    """Validate a session threshold: a real number in ``(low, high)`` (``high=None``: unbounded)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if value <= low or (high is not None and value >= high):
        bound = f"({low}, {high})" if high is not None else f"> {low}"
        raise ConfigError(f"{name} must be in {bound}, got {value}")
    return float(value)


@dataclass(frozen=True)
class DistanceReference:
    """Class means of the support features and the out-of-distribution radius.

    Attributes:
        class_means: ``(N, D)`` mean feature of each class.
        radius: Reference radius ``r`` (see the module docstring).
        factor: A query is out of distribution beyond ``factor * radius``.
    """

    class_means: torch.Tensor
    radius: float
    factor: float = OOD_FACTOR

    @classmethod
    def fit(cls, features: torch.Tensor, labels: torch.Tensor, n_classes: int, factor: float = OOD_FACTOR) -> DistanceReference:
        """Build the reference from support features.

        Args:
            features: ``(S, D)`` support features.
            labels: ``(S,)`` int64 in ``[0, n_classes)``, every class present.
            n_classes: ``N``.
            factor: See :attr:`factor`.
        """
        features = features.detach().double().flatten(1)
        means = torch.stack([features[labels == c].mean(0) for c in range(n_classes)])
        own = (features - means[labels]).norm(dim=1)
        radius = float(own.max())
        if radius <= 0.0:
            between = torch.cdist(means, means)
            between = between[~torch.eye(n_classes, dtype=torch.bool)]
            radius = float(between.min())
        return cls(class_means=means, radius=radius, factor=factor)

    @property
    def threshold(self) -> float:
        """Distance beyond which a query is out of distribution: ``factor * radius``."""
        return self.factor * self.radius

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """``(M, D) -> (M,)`` distance of each query to its nearest class mean."""
        return torch.cdist(features.detach().double().flatten(1), self.class_means).min(dim=1).values

    def is_outlier(self, features: torch.Tensor) -> torch.Tensor:
        """``(M, D) -> (M,)`` bool: distance to the nearest class mean above :attr:`threshold`."""
        return self.distance(features) > self.threshold
