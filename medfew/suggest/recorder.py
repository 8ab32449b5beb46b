"""Let evaluation runs grow a checkpoint's meta-dataset: one (descriptor, configuration, score) record per episode.

    recorder = EvaluationRecorder.for_checkpoint(checkpoint, method, options, source="organamnist/val")
    evaluate(method, episodes, on_episode=recorder)
    recorder.save()

Record only episodes of domains a suggestion may learn from (meta-train domains, or a user's own
past tasks): records of a benchmark's test domains would let later suggestions be tuned on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medfew.data.episodes.episode import Episode
from medfew.errors import CheckpointError
from medfew.evaluation.metrics import EpisodeMetrics
from medfew.methods.base import FewShotMethod
from medfew.models.precomputed import PrecomputedFeatures
from medfew.suggest.descriptors import support_descriptor
from medfew.suggest.metadataset import MetaDataset, meta_dataset_path
from medfew.training.checkpoint import read_checkpoint_info


class EvaluationRecorder:
    """An ``on_episode`` hook of :func:`medfew.evaluation.evaluate` that appends records to a meta-dataset.

    Args:
        meta: The meta-dataset to append to.
        method: The evaluated method (its backbone gives the support features).
        options: The method options it was evaluated with (``{}``: the checkpoint's settings).
        source: Where the episodes come from (provenance).
        unit_images: Whether the episodes' images are in ``[0, 1]`` (normalisation ``"unit"``), so that
            image statistics can be read from them; otherwise those entries are ``NaN``.
        path: Where :meth:`save` writes.
    """

    def __init__(self, meta: MetaDataset, method: FewShotMethod, options: dict[str, Any], source: str, *,
                 unit_images: bool = False, path: str | Path | None = None) -> None:
        self.meta, self.method, self.source, self.path = meta, method, source, path
        self.configuration = meta.configuration_index(options)
        self.unit_images = unit_images

    @classmethod
    def for_checkpoint(cls, checkpoint: str | Path, method: FewShotMethod, options: dict[str, Any],
                       source: str) -> EvaluationRecorder:
        """A recorder appending to the meta-dataset beside ``checkpoint`` (a new one if it has none).

        Raises:
            CheckpointError: An existing meta-dataset measured with other weights, or unreadable.
        """
        info = read_checkpoint_info(checkpoint)
        path = meta_dataset_path(checkpoint)
        meta = MetaDataset.load(path, checkpoint=checkpoint) if path.is_file() else MetaDataset(info.weights_sha256)
        if meta.weights_sha256 != info.weights_sha256:
            raise CheckpointError(f"{path} was built for weights {meta.weights_sha256[:12]}, not "
                                  f"{info.weights_sha256[:12]}: records of two models cannot be mixed")
        return cls(meta, method, options, source, unit_images=info.preprocessing.normalize == "unit", path=path)

    def __call__(self, index: int, episode: Episode, metrics: EpisodeMetrics) -> None:
        """Describe the episode's support set and record its query accuracy."""
        with torch.no_grad():
            features = self.method.backbone(episode.support_images)
        reads_images = self.unit_images and not isinstance(self.method.backbone, PrecomputedFeatures)
        images = episode.support_images if reads_images else None
        descriptor = support_descriptor(images, episode.support_labels, features)
        self.meta.add_task(descriptor, self.source, {self.configuration: float(metrics.accuracy)})

    def save(self, path: str | Path | None = None) -> Path:
        """Write the meta-dataset (to ``path``, else the recorder's path)."""
        target = path or self.path
        if target is None:
            raise CheckpointError("the recorder has no meta-dataset path: pass save(path)")
        return self.meta.save(target)
