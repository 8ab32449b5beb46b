"""Temperature scaling: one scalar ``T > 0`` so that ``softmax(logits / T)`` matches observed accuracy.

:func:`fit_temperature` pools the query logits of many episodes (which may have different numbers
of classes ``N``) and picks the ``T`` that minimises their mean negative log-likelihood, by a
bounded 1-D search over ``log T`` in ``[log 0.05, log 20]``
(``scipy.optimize.minimize_scalar(method="bounded")``). Dividing every logit by the same ``T`` never
changes an arg-max, so accuracy is untouched; only the confidence moves: ``T > 1`` softens an
overconfident model, ``T < 1`` sharpens an underconfident one (Guo et al., 2017, "On Calibration of
Modern Neural Networks").

Fit ``T`` on episodes that never score a model that is then reported (the validation splits of the
meta-train domains), never on a test domain. A checkpoint carries it in its ``calibration`` block and
``load_checkpoint`` sets ``method.temperature``; evaluation and the clinician session divide by it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from medfew.errors import ConfigError, EpisodeError

TEMPERATURE_BOUNDS = (0.05, 20.0)
"""The search interval of :func:`fit_temperature` (a fitted value on a bound means the bound was hit)."""


def _episode_arrays(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                    index: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate one episode; return float64 ``(M, N)`` logits and int64 ``(M,)`` labels."""
    arrays = []
    for what, value in (("logits", logits), ("labels", labels)):
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            value = value.double() if value.is_floating_point() else value
            value = value.numpy()
        if not isinstance(value, np.ndarray):
            raise EpisodeError(f"episode {index}: {what} must be a torch.Tensor or numpy array, "
                               f"got {type(value).__name__}")
        arrays.append(value)
    scores, targets = arrays
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] < 2:
        raise EpisodeError(f"episode {index}: logits must be a non-empty (M, N) array with N >= 2, "
                           f"got shape {tuple(scores.shape)}")
    if not np.issubdtype(scores.dtype, np.floating):
        raise EpisodeError(f"episode {index}: logits must be floating point, got {scores.dtype}")
    if targets.shape != (scores.shape[0],):
        raise EpisodeError(f"episode {index}: labels must be ({scores.shape[0]},) to match logits "
                           f"{tuple(scores.shape)}, got {tuple(targets.shape)}")
    if targets.dtype == np.bool_ or not np.issubdtype(targets.dtype, np.integer):
        raise EpisodeError(f"episode {index}: labels must be integers, got {targets.dtype}")
    if int(targets.min()) < 0 or int(targets.max()) >= scores.shape[1]:
        raise EpisodeError(f"episode {index}: labels must lie in [0, {scores.shape[1]}), "
                           f"got {np.unique(targets).tolist()}")
    bad = ~np.isfinite(scores)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1)).tolist()
        raise EpisodeError(f"episode {index}: logits hold {int(bad.sum())} non-finite values (rows {rows}); "
                           "a temperature cannot be fitted to them")
    return scores.astype(np.float64, copy=False), targets.astype(np.int64, copy=False)


def _pooled(logits: Sequence[torch.Tensor | np.ndarray],
            labels: Sequence[torch.Tensor | np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    if isinstance(logits, (torch.Tensor, np.ndarray)) or isinstance(labels, (torch.Tensor, np.ndarray)):
        raise EpisodeError("logits and labels must be sequences with one (M, N) / (M,) entry per episode, "
                           f"got {type(logits).__name__} and {type(labels).__name__}; wrap a single episode in a list")
    logits, labels = list(logits), list(labels)
    if not logits:
        raise EpisodeError("no episodes: fit_temperature needs the query logits and labels of at least one episode")
    if len(logits) != len(labels):
        raise EpisodeError(f"got logits of {len(logits)} episodes but labels of {len(labels)}")
    by_ways: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for i, (z, y) in enumerate(zip(logits, labels)):
        scores, targets = _episode_arrays(z, y, i)
        by_ways.setdefault(scores.shape[1], []).append((scores, targets))
    # one (sum M_i, N) block per number of classes: the NLL is then a few vectorised passes
    return [(np.concatenate([z for z, _ in group]), np.concatenate([y for _, y in group]))
            for group in by_ways.values()]


def _nll(episodes: list[tuple[np.ndarray, np.ndarray]], temperature: float) -> float:
    total, count = 0.0, 0
    for scores, targets in episodes:
        log_probs = log_softmax(scores / temperature, axis=1)
        total -= float(log_probs[np.arange(targets.size), targets].sum())
        count += targets.size
    return total / count


def pooled_nll(
    logits: Sequence[torch.Tensor | np.ndarray],
    labels: Sequence[torch.Tensor | np.ndarray],
    temperature: float = 1.0,
) -> float:
    """Mean negative log-likelihood of ``softmax(logits / temperature)`` over all queries of all episodes.

    Args:
        logits: One ``(M_i, N_i)`` float array or tensor per episode (raw logits).
        labels: One ``(M_i,)`` integer array or tensor per episode, in ``[0, N_i)``.
        temperature: ``T > 0``.

    Raises:
        EpisodeError: Empty input, mismatched shapes, labels out of range, or non-finite logits.
        ConfigError: ``temperature`` is not a finite number > 0.
    """
    return _nll(_pooled(logits, labels), check_temperature(temperature))


def check_temperature(temperature: object, what: str = "temperature") -> float:
    """Return ``temperature`` as a float if it is a finite real number > 0.

    Raises:
        ConfigError: Naming ``what`` and the bad value.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise ConfigError(f"{what} must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def fit_temperature(
    logits: Sequence[torch.Tensor | np.ndarray],
    labels: Sequence[torch.Tensor | np.ndarray],
) -> float:
    """The temperature ``T`` minimising the pooled NLL of ``softmax(logits / T)``.

    Args:
        logits: One ``(M_i, N_i)`` float array or tensor of raw query logits per episode (``N_i`` may
            differ between episodes).
        labels: One ``(M_i,)`` integer array or tensor of query labels per episode, in ``[0, N_i)``.

    Returns:
        ``T`` in :data:`TEMPERATURE_BOUNDS` (``[0.05, 20]``), found by a bounded search over ``log T``.

    Raises:
        EpisodeError: No episodes, logits and labels of different lengths or shapes, labels out of
            range or not integers, or NaN / infinite logits.
    """
    episodes = _pooled(logits, labels)
    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(lambda log_t: _nll(episodes, math.exp(log_t)), bounds=(low, high),
                             method="bounded", options={"xatol": 1e-5})
    return float(math.exp(result.x))
