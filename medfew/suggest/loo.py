"""Check candidate configurations by leave-one-out on the support set itself.

Each candidate scores every support image with the model adapted to the *other* support images
(the method's ``leave_one_out_logits``: exact and cheap for heads on fixed features). Its
leave-one-out accuracy estimates its accuracy on new scans of these classes; the interval is the
Wilson score interval of a binomial proportion (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``),
which treats the ``S`` leave-one-out outcomes as independent (they share most of their training data,
so the interval is optimistic).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from scipy.stats import binomtest

from medfew.evaluation import leave_one_out_logits
from medfew.methods.base import FewShotMethod

CONFIDENCE = 0.95


@dataclass(frozen=True)
class CandidateCheck:
    """One candidate's leave-one-out result on the support set.

    Attributes:
        options: The method options.
        correct: Support images its leave-one-out model classified correctly.
        total: Support images ``S``.
        ci_low: Lower end of the 95% Wilson interval of the accuracy.
        ci_high: Upper end.
        neighbour_accuracy: The candidate's mean accuracy on the nearest past tasks (its prior rank).
    """

    options: dict[str, Any]
    correct: int
    total: int
    ci_low: float
    ci_high: float
    neighbour_accuracy: float

    @property
    def accuracy(self) -> float:
        """Leave-one-out accuracy ``correct / total``."""
        return self.correct / self.total


def wilson_interval(correct: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of ``correct / total`` at ``confidence``."""
    interval = binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def check_candidates(
    build: Callable[[dict[str, Any]], FewShotMethod],
    images: torch.Tensor,
    labels: torch.Tensor,
    candidates: Sequence[tuple[dict[str, Any], float]],
) -> list[CandidateCheck]:
    """Leave-one-out accuracy of each candidate on one support set.

    Args:
        build: Options -> the method with those options.
        images: ``(S, C, H, W)`` model-ready support images (or pre-computed feature maps the method reads).
        labels: ``(S,)`` int64 in ``[0, N)``; every class has at least 2 images.
        candidates: ``(options, neighbour accuracy)`` pairs in their prior order.

    Returns:
        One check per candidate, in the given order.

    Raises:
        EpisodeError: A class with fewer than 2 images.
    """
    checks = []
    for options, prior in candidates:
        logits = leave_one_out_logits(build(options), images, labels)
        correct = int((logits.argmax(-1) == labels).sum())
        low, high = wilson_interval(correct, int(labels.numel()))
        checks.append(CandidateCheck(options, correct, int(labels.numel()), low, high, prior))
    return checks


def pick(checks: Sequence[CandidateCheck]) -> CandidateCheck:
    """The best check: most leave-one-out hits, then the better prior rank (earlier in ``checks``)."""
    return max(enumerate(checks), key=lambda item: (item[1].correct, -item[0]))[1]
