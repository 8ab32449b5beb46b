"""Suggest test-time settings for a new support set: nearest past tasks, then a leave-one-out check.

1. Describe the support set (:func:`~medfew.suggest.descriptors.support_descriptor`).
2. Rank the checkpoint's configurations by their query accuracy on the most similar tasks of its
   meta-dataset (:func:`~medfew.suggest.retrieval.rank_configurations`).
3. Score the ``top`` best of them by leave-one-out on the support set (:mod:`medfew.suggest.loo`) and
   pick the one with the most leave-one-out hits (ties: the better-ranked one).

Only the support set is read. With a class of a single image there is no leave-one-out: the
best-ranked configuration is returned unchecked (:attr:`Suggestion.checked` is false).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from medfew.data.preprocessing import Preprocessing
from medfew.data.sources.manifest import manifest_from_folder
from medfew.diagnosis import load_input
from medfew.errors import ImageReadError, MedfewError, SupportSetError
from medfew.methods.base import FewShotMethod, support_classes
from medfew.suggest.configurations import describe, with_options
from medfew.suggest.descriptors import support_descriptor
from medfew.suggest.loo import CandidateCheck, check_candidates, pick
from medfew.suggest.metadataset import MetaDataset, load_for_checkpoint
from medfew.suggest.retrieval import (
    DEFAULT_NEIGHBOURS,
    RankedConfiguration,
    nearest_tasks,
    rank_configurations,
)
from medfew.training.checkpoint import load_checkpoint

DEFAULT_TOP = 3
MIN_PER_CLASS = 2


@dataclass(frozen=True)
class Suggestion:
    """The suggested settings for one support set and the evidence behind them.

    Attributes:
        options: The method options to use (``{}``: keep the checkpoint's settings).
        check: Its leave-one-out result, or ``None`` when a class has a single image.
        checks: Every checked candidate, in prior order.
        ranked: Every configuration, ranked on the nearest past tasks.
        descriptor: The support set's descriptor.
        neighbour_sources: Where the nearest past tasks came from (source -> count).
    """

    options: dict[str, Any]
    check: CandidateCheck | None
    checks: list[CandidateCheck]
    ranked: list[RankedConfiguration]
    descriptor: dict[str, float]
    neighbour_sources: dict[str, int] = field(default_factory=dict)

    @property
    def checked(self) -> bool:
        """Whether the pick was checked by leave-one-out on the support set."""
        return self.check is not None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the ``--json`` output)."""
        def check_dict(c: CandidateCheck) -> dict[str, Any]:
            return {"options": c.options, "description": describe(c.options), "loo_accuracy": c.accuracy,
                    "loo_correct": c.correct, "loo_total": c.total, "ci95_wilson": [c.ci_low, c.ci_high],
                    "neighbour_accuracy": c.neighbour_accuracy}

        return {
            "options": self.options,
            "description": describe(self.options),
            "checked": self.checked,
            "pick": None if self.check is None else check_dict(self.check),
            "candidates": [check_dict(c) for c in self.checks],
            "ranked": [{"options": r.options, "neighbour_accuracy": r.neighbour_accuracy,
                        "neighbour_tasks": r.neighbour_tasks} for r in self.ranked],
            "descriptor": self.descriptor,
            "neighbour_sources": self.neighbour_sources,
            "interval": "95% Wilson score interval of the leave-one-out accuracy",
        }


def suggest_settings(
    base: FewShotMethod,
    meta: MetaDataset,
    *,
    images: torch.Tensor | None,
    model_inputs: torch.Tensor,
    labels: torch.Tensor,
    top: int = DEFAULT_TOP,
    neighbours: int = DEFAULT_NEIGHBOURS,
) -> Suggestion:
    """Suggest test-time settings for one support set.

    Args:
        base: The checkpoint's method with its own settings (not modified).
        meta: The checkpoint's meta-dataset.
        images: ``(S, C, H, W)`` support images in ``[0, 1]`` (image statistics), or ``None``.
        model_inputs: ``(S, ...)`` what ``base`` reads: the normalised images (or pre-computed features).
        labels: ``(S,)`` int64 in ``[0, N)``.
        top: How many of the best-ranked configurations to check by leave-one-out.
        neighbours: How many nearest past tasks vote.

    Raises:
        ConfigError: ``top`` or ``neighbours`` below 1, or an empty meta-dataset.
        EpisodeError: A bad support set.
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        from medfew.errors import ConfigError

        raise ConfigError(f"top must be an integer >= 1, got {top!r}")
    n_classes = support_classes(model_inputs, labels)
    with torch.no_grad():
        features = base.backbone(model_inputs)
    descriptor = support_descriptor(images, labels, features)
    ranked = rank_configurations(meta, descriptor, neighbours)
    sources: dict[str, int] = {}
    for task in nearest_tasks(meta, descriptor, neighbours):
        sources[meta.sources[task]] = sources.get(meta.sources[task], 0) + 1
    if int(torch.bincount(labels, minlength=n_classes).min()) < MIN_PER_CLASS:
        return Suggestion(ranked[0].options, None, [], ranked, descriptor, sources)
    candidates = [(r.options, r.neighbour_accuracy) for r in ranked[:top]]
    checks = check_candidates(partial(with_options, base), model_inputs, labels, candidates)
    best = pick(checks)
    return Suggestion(best.options, best, checks, ranked, descriptor, sources)


def load_support_folder(folder: str | Path, preprocessing: Preprocessing) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Read a class-per-folder support set as the model's prepared images.

    Args:
        folder: One subfolder per class holding its scans (DICOM, PNG, JPEG, ...).
        preprocessing: The checkpoint's input size and channels.

    Returns:
        ``(S, C, H, W)`` images in ``[0, 1]`` (before normalisation), ``(S,)`` labels, class names.

    Raises:
        ManifestError: Not a folder, or no class subfolders.
        ImageReadError: Files that cannot be read (each named, with why).
        SupportSetError: Fewer than 2 classes, or a class with fewer than 2 scans (leave-one-out needs 2).
    """
    manifest = manifest_from_folder(folder)
    images, labels, problems = [], [], []
    for row in manifest.rows:
        try:
            pixels = load_input(row.path).pixels
            images.append(preprocessing.prepare(pixels))
            labels.append(manifest.label_index(row))
        except MedfewError as error:
            problems.append((str(row.path), getattr(error, "reason", str(error))[:200]))
    if problems:
        (path, reason), rest = problems[0], problems[1:]
        more = f"; {len(rest)} more unreadable support file(s): " + ", ".join(p for p, _ in rest[:5]) if rest else ""
        raise ImageReadError(path, reason + more)
    counts = {name: labels.count(i) for i, name in enumerate(manifest.class_names)}
    if len(counts) < 2:
        raise SupportSetError(f"{folder}: a support set needs at least 2 class folders, got {list(counts)}")
    small = {name: n for name, n in counts.items() if n < MIN_PER_CLASS}
    if small:
        raise SupportSetError(
            f"{folder}: every class needs at least {MIN_PER_CLASS} scans for the leave-one-out check; "
            + ", ".join(f"{name!r} has {n}" for name, n in small.items())
        )
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64), manifest.class_names


def suggest_for_folder(
    checkpoint: str | Path, folder: str | Path, *, top: int = DEFAULT_TOP, neighbours: int = DEFAULT_NEIGHBOURS
) -> Suggestion:
    """Load ``checkpoint`` and its meta-dataset, read the support ``folder`` and suggest settings.

    Raises:
        CheckpointError: A missing checkpoint, or no (or a stale) meta-dataset (with how to build one).
        ManifestError, ImageReadError, SupportSetError: See :func:`load_support_folder`.
    """
    base, info = load_checkpoint(checkpoint)
    meta = load_for_checkpoint(checkpoint, info.weights_sha256)
    images, labels, _ = load_support_folder(folder, info.preprocessing)
    inputs = info.preprocessing.normalize_batch(images)
    return suggest_settings(base.eval(), meta, images=images, model_inputs=inputs, labels=labels, top=top,
                            neighbours=neighbours)
