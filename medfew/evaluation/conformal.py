"""Conformal prediction sets calibrated on the support set itself, by leave-one-out.

A few-shot task has no separate calibration set: the only labelled scans are the ``S`` support
scans. So every support scan is scored by the model adapted to the *other* ``S - 1`` scans
(:func:`leave_one_out_logits`), its nonconformity score is ``1 - p(true class)`` under the calibrated
probabilities ``softmax(logits / T)``, and :class:`ConformalSets` turns those ``S`` scores into
prediction sets for the queries with the maintained library crepes
(``crepes.ConformalClassifier.fit(scores)``, then ``predict_set(query_scores, confidence=1 - alpha,
smoothing=False)``): a class ``c`` is in a query's set when its p-value
``(#{support scores >= 1 - p_c} + 1) / (S + 1)`` is at least ``alpha``.

What this does and does not promise:

* If the ``S`` support scans and the query were exchangeable *and* every score came from the same
  model, this would be split conformal prediction and the set would hold the true class with
  probability at least ``1 - alpha``. Here each calibration score comes from a model adapted to
  ``S - 1`` scans while the query is scored by the model adapted to all ``S``: this is the jackknife
  form of split conformal, whose guarantee is only approximate (the query's score is usually a
  little *lower* than the left-out scores, which errs on the side of larger sets, but no bound is
  proved for every method). Coverage is therefore measured, not assumed: ``medfew evaluate`` reports
  the empirical coverage over many episodes.
* Exchangeability is a property of how the support scans were chosen: scans of another scanner,
  protocol or population than the queries void it.
* The coverage is marginal: an average over support sets and queries. With ``S`` near 10, the coverage
  of the queries of *one* support set can be far from ``1 - alpha`` either way (a support set of very
  alike scans gives a tight threshold that typical queries exceed: empty or missing sets).
* Non-smoothed p-values are used, so the sets are deterministic (a scan always gets the same set)
  and conservative (coverage at or above ``1 - alpha`` in the exchangeable case, not exactly equal).
* With ``S + 1 <= 1 / alpha`` support scans (fewer than 10 at ``alpha = 0.1``) even the smallest
  p-value ``1 / (S + 1)`` reaches ``alpha``, so **every class is in every set**: that is the honest
  answer at that level, and :attr:`ConformalSets.always_full` says so.
* A class with a single support scan cannot be left out (the model adapted to the rest would not
  know the class), so there is no set at all: :func:`leave_one_out_unavailable` gives the reason.
* A set can be empty (every class scores beyond all support scans): no class fits the query at
  this level, which is as much a warning as a set of several classes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch
from crepes import ConformalClassifier

from medfew.errors import ConfigError, EpisodeError
from medfew.methods.base import (
    MIN_LEAVE_ONE_OUT,
    FewShotMethod,
    check_leave_one_out,
    support_classes,
    support_shortfall,
)

DEFAULT_ALPHA = 0.1
"""Default miscoverage level: sets meant to hold the true class in at least 90% of cases."""

Progress = Callable[[int, int], None]
"""``progress(done, total)``, called after each left-out support image."""


def check_alpha(alpha: object, what: str = "alpha") -> float:
    """Return ``alpha`` as a float if it is a real number strictly between 0 and 1.

    Raises:
        ConfigError: Naming ``what`` and the bad value.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha):
        raise ConfigError(f"{what} must be a number in (0, 1), got {alpha!r}")
    if not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"{what} must be in (0, 1) (e.g. 0.1 for 90% sets), got {alpha}")
    return float(alpha)


def min_support_for(alpha: float) -> int:
    """The fewest support scans ``S`` for which a set at level ``alpha`` can leave a class out.

    A class is always in the set while its smallest possible p-value ``1 / (S + 1)`` is at least
    ``alpha`` (compared as crepes does, against ``1 - (1 - alpha)``).
    """
    threshold = 1.0 - (1.0 - check_alpha(alpha))
    n = max(int(math.floor(1.0 / threshold)) - 2, 1)
    while 1.0 / (n + 1) >= threshold:
        n += 1
    return n


def _as_array(values: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        values = values.double() if values.is_floating_point() else values
        return values.numpy()
    if isinstance(values, np.ndarray):
        return values
    raise EpisodeError(f"{what} must be a torch.Tensor or numpy array, got {type(values).__name__}")


def _check_probabilities(probabilities: torch.Tensor | np.ndarray, what: str, n_classes: int | None) -> np.ndarray:
    array = _as_array(probabilities, what)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] < 2:
        raise EpisodeError(f"{what} must be a non-empty (rows, N) array with N >= 2, got shape {tuple(array.shape)}")
    if n_classes is not None and array.shape[1] != n_classes:
        raise EpisodeError(f"{what} score {array.shape[1]} classes but the sets were fitted for N={n_classes}")
    if not np.issubdtype(array.dtype, np.floating):
        raise EpisodeError(f"{what} must be floating point, got {array.dtype}")
    array = array.astype(np.float64, copy=False)
    bad = ~np.isfinite(array) | (array < 0.0) | (array > 1.0 + 1e-6)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1)).tolist()
        raise EpisodeError(f"{what} must be probabilities in [0, 1]; rows {rows} are not")
    return array


class ConformalSets:
    """Prediction sets from the leave-one-out nonconformity scores of a support set.

    Build with :meth:`fit`; see the module docstring for what the sets promise.

    Attributes:
        alpha: Miscoverage level; sets aim at ``confidence = 1 - alpha``.
        scores: ``(S,)`` float64 calibration nonconformity scores ``1 - p(true class)``.
        n_classes: ``N``.
    """

    def __init__(self, classifier: ConformalClassifier, scores: np.ndarray, alpha: float, n_classes: int) -> None:
        self._classifier = classifier
        self.scores = scores
        self.alpha = alpha
        self.n_classes = n_classes

    @classmethod
    def fit(cls, loo_probabilities: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
            alpha: float = DEFAULT_ALPHA) -> ConformalSets:
        """Fit on the calibrated leave-one-out probabilities of the support scans.

        Args:
            loo_probabilities: ``(S, N)`` probabilities of each support scan from the model adapted to
                the others (``softmax(leave_one_out_logits / T)``).
            labels: ``(S,)`` integer labels of the support scans, in ``[0, N)``.
            alpha: Miscoverage level in ``(0, 1)``.

        Raises:
            ConfigError: ``alpha`` outside ``(0, 1)``.
            EpisodeError: Shapes disagree, labels out of range or not integers, or probabilities that
                are not finite values in ``[0, 1]``.
        """
        alpha = check_alpha(alpha)
        probabilities = _check_probabilities(loo_probabilities, "loo_probabilities", None)
        targets = _as_array(labels, "labels")
        s, n = probabilities.shape
        if targets.shape != (s,):
            raise EpisodeError(f"labels must be ({s},) to match loo_probabilities {(s, n)}, got {tuple(targets.shape)}")
        if targets.dtype == np.bool_ or not np.issubdtype(targets.dtype, np.integer):
            raise EpisodeError(f"labels must be integers, got {targets.dtype}")
        if int(targets.min()) < 0 or int(targets.max()) >= n:
            raise EpisodeError(f"labels must lie in [0, {n}) for {n} probability columns, got {np.unique(targets).tolist()}")
        scores = 1.0 - probabilities[np.arange(s), targets.astype(np.int64)]
        return cls(ConformalClassifier().fit(scores), scores, alpha, n)

    @property
    def confidence(self) -> float:
        """``1 - alpha``: the share of cases the sets aim to cover."""
        return 1.0 - self.alpha

    @property
    def n_calibration(self) -> int:
        """``S``, the number of calibration (support) scores."""
        return int(self.scores.shape[0])

    @property
    def always_full(self) -> bool:
        """Whether ``S`` is too small for the level, so that every set holds every class."""
        return self.n_calibration < min_support_for(self.alpha)

    def predict(self, probabilities: torch.Tensor | np.ndarray) -> np.ndarray:
        """The prediction sets of query scans.

        Args:
            probabilities: ``(M, N)`` calibrated probabilities of the queries (``softmax(logits / T)``
                from the model adapted to the whole support set).

        Returns:
            ``(M, N)`` bool: ``True`` where the class is in the query's set.

        Raises:
            EpisodeError: Not ``(M, N)`` probabilities for the fitted ``N``.
        """
        array = _check_probabilities(probabilities, "probabilities", self.n_classes)
        sets = self._classifier.predict_set(1.0 - array, confidence=self.confidence, smoothing=False)
        return np.asarray(sets, dtype=bool)

    def __repr__(self) -> str:
        return f"ConformalSets(alpha={self.alpha}, n_calibration={self.n_calibration}, n_classes={self.n_classes})"


def leave_one_out_unavailable(support_labels: torch.Tensor | np.ndarray,
                              class_names: Sequence[str] | None = None) -> str | None:
    """Why leave-one-out scores (and so prediction sets) cannot be computed, or ``None`` if they can.

    Args:
        support_labels: ``(S,)`` integer labels in ``[0, N)``.
        class_names: ``(N,)`` names used in the message (positions otherwise).
    """
    labels = _as_array(support_labels, "support_labels").astype(np.int64)
    counts = np.bincount(labels, minlength=len(class_names) if class_names is not None else 0).tolist()
    _, single = support_shortfall(dict(enumerate(counts)), per_class=MIN_LEAVE_ONE_OUT)
    if not single:
        return None
    names = [class_names[c] for c in single] if class_names is not None else single
    plural = len(single) > 1
    return (f"class{'es' if plural else ''} {names} ha{'ve' if plural else 's'} fewer than {MIN_LEAVE_ONE_OUT} "
            "support scans, so leave-one-out cannot score them and there is no prediction set")


def _overrides_leave_one_out(method_or_baseline: object) -> bool:
    own = getattr(type(method_or_baseline), "leave_one_out_logits", None)
    return callable(own) and own is not FewShotMethod.leave_one_out_logits


def leave_one_out_logits(
    method_or_baseline: object,
    support_images: torch.Tensor,
    support_labels: torch.Tensor,
    *,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Score each support image with the model adapted to all the *other* support images.

    A method with its own ``leave_one_out_logits`` (a cheaper exact equivalent, or
    :meth:`FewShotMethod.leave_one_out_logits`) is asked for it. Objects without one (the raw-pixel
    baselines) get one ``adapt`` per support image here, with autograd enabled inside ``adapt`` (the
    MAML family fine-tunes there) and ``predict`` under ``torch.no_grad()``. When ``progress`` is given
    and the method only has the base class's loop, the same loop runs here so that each left-out image
    can be reported.

    Args:
        method_or_baseline: Anything with ``adapt(images, labels) -> model`` whose ``predict`` gives
            ``(M, N)`` logits.
        support_images: ``(S, C, H, W)`` float32.
        support_labels: ``(S,)`` int64 in ``[0, N)``, every class with at least 2 images.
        progress: ``progress(done, total)`` after each left-out image (once, at the end, for a method's
            own implementation).

    Returns:
        ``(S, N)`` raw logits (not divided by any temperature), detached.

    Raises:
        EpisodeError: A bad support set, a class with fewer than 2 images, or logits of the wrong shape.
    """
    n_classes = support_classes(support_images, support_labels)
    check_leave_one_out(support_labels, n_classes)
    total = int(support_labels.shape[0])
    own = getattr(method_or_baseline, "leave_one_out_logits", None)
    if callable(own) and (progress is None or _overrides_leave_one_out(method_or_baseline)):
        logits = own(support_images, support_labels)
        if progress is not None:
            progress(total, total)
    else:
        logits = leave_one_out_by_adapt(method_or_baseline, support_images, support_labels, progress=progress)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (total, n_classes):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise EpisodeError(f"leave-one-out logits must be (S, N) = ({total}, {n_classes}), got {shape}")
    return logits.detach()


def leave_one_out_by_adapt(
    method_or_baseline: object,
    support_images: torch.Tensor,
    support_labels: torch.Tensor,
    *,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Leave-one-out logits the slow, plain way: one ``adapt`` on the other images per support image.

    The reference every cheaper ``leave_one_out_logits`` must agree with. ``adapt`` runs with autograd
    enabled (the MAML family fine-tunes there), ``predict`` under ``torch.no_grad()``.

    Args:
        method_or_baseline: Anything with ``adapt``.
        support_images: ``(S, C, H, W)``.
        support_labels: ``(S,)`` int64 in ``[0, N)``, every class with at least 2 images (not checked
            here: see :func:`leave_one_out_logits`).
        progress: ``progress(done, total)`` after each left-out image.

    Returns:
        ``(S, N)`` raw logits, detached.
    """
    total = int(support_labels.shape[0])
    rows = []
    for i in range(total):
        keep = torch.arange(total, device=support_labels.device) != i
        with torch.enable_grad():  # MAML-family methods take gradient steps inside adapt
            adapted = method_or_baseline.adapt(support_images[keep], support_labels[keep])  # type: ignore[attr-defined]
        with torch.no_grad():
            rows.append(adapted.predict(support_images[i : i + 1]).detach())
        if progress is not None:
            progress(i + 1, total)
    return torch.cat(rows)
