"""Nearest past tasks and the configurations that did best on them (the warm start of Feurer et al. 2015).

Descriptors are standardised with the meta-dataset's own means and standard deviations (a constant
entry counts 1), and tasks are compared by the root mean squared difference over the entries both
define (``NaN`` entries are skipped). The ``k`` nearest tasks vote: each configuration's score is its
mean query accuracy on those of the ``k`` tasks it was tried on.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from medfew.errors import ConfigError
from medfew.suggest.descriptors import descriptor_vector
from medfew.suggest.metadataset import MetaDataset

DEFAULT_NEIGHBOURS = 20


@dataclass(frozen=True)
class RankedConfiguration:
    """A configuration and how it did on the nearest past tasks.

    Attributes:
        index: Its index in the meta-dataset's configurations.
        options: The method options (``{}``: the checkpoint's settings).
        neighbour_accuracy: Mean query accuracy on the nearest tasks it was tried on.
        neighbour_tasks: On how many of them it was tried.
    """

    index: int
    options: dict[str, Any]
    neighbour_accuracy: float
    neighbour_tasks: int


def standardised_distances(meta: MetaDataset, descriptor: dict[str, float]) -> np.ndarray:
    """``(T,)`` distances from ``descriptor`` to every task of ``meta`` (``inf`` with no shared entry)."""
    table = meta.descriptors
    with _quiet():
        mean = np.nanmean(table, axis=0)
        std = np.nanstd(table, axis=0)
    std = np.where(np.isfinite(std) & (std > 1e-9), std, 1.0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    query = (np.array(descriptor_vector(descriptor)) - mean) / std
    with _quiet():
        diff = np.square((table - mean) / std - query)  # NaN where either side is undefined
    shared = np.isfinite(diff)
    total = np.where(shared, diff, 0.0).sum(1)
    count = shared.sum(1)
    return np.where(count > 0, np.sqrt(total / np.maximum(count, 1)), np.inf)


def nearest_tasks(meta: MetaDataset, descriptor: dict[str, float], k: int = DEFAULT_NEIGHBOURS) -> np.ndarray:
    """Indices of the ``k`` tasks closest to ``descriptor``, nearest first (ties: earlier task first).

    Raises:
        ConfigError: ``k < 1`` or an empty meta-dataset.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"neighbours must be an integer >= 1, got {k!r}")
    if meta.n_tasks == 0:
        raise ConfigError("the meta-dataset holds no tasks")
    distances = standardised_distances(meta, descriptor)
    order = np.argsort(distances, kind="stable")
    return order[np.isfinite(distances[order])][:k]


def rank_configurations(
    meta: MetaDataset, descriptor: dict[str, float], k: int = DEFAULT_NEIGHBOURS
) -> list[RankedConfiguration]:
    """Configurations by their mean accuracy on the ``k`` nearest tasks, best first.

    A configuration tried on fewer than half of those tasks ranks after every one tried on more;
    ties keep the meta-dataset's order (the checkpoint's own settings first).
    """
    tasks = nearest_tasks(meta, descriptor, k)
    scores = meta.score_matrix()[tasks]  # (k, C)
    tried = np.isfinite(scores).sum(0)
    with _quiet():
        mean = np.where(tried > 0, np.nanmean(scores, axis=0), -np.inf)
    enough = tried * 2 >= len(tasks)
    order = sorted(range(len(meta.configurations)), key=lambda c: (not enough[c], -mean[c], c))
    return [RankedConfiguration(c, meta.configurations[c], float(mean[c]), int(tried[c]))
            for c in order if tried[c] > 0]


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's all-NaN and divide warnings (undefined entries are expected)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
