"""The meta-dataset of a checkpoint: (task descriptor, configuration, score) records, kept as JSON.

One file per checkpoint, beside its weights: ``RUN/best.safetensors`` -> ``RUN/best.suggest.json``
(the shipped default model's is ``medfew/assets/default_model/model.suggest.json``). It holds

* ``descriptor_names`` and one ``descriptor`` per task (:mod:`medfew.suggest.descriptors`);
* ``configurations``: method-option dicts (``{}`` = the checkpoint's own settings);
* ``records``: ``[task index, configuration index, score]`` triples, the score being the query
  accuracy of that episode under that configuration;
* ``weights_sha256``: the weights it was measured with (a retrained checkpoint needs a new one).

It is built from episodes of the meta-train domains' val splits (:func:`medfew.suggest.build_meta_dataset`)
and grows with evaluation runs (:class:`medfew.suggest.EvaluationRecorder`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfew.data.atomic import atomic_write_bytes
from medfew.errors import CheckpointError
from medfew.suggest.configurations import configuration_key
from medfew.suggest.descriptors import DESCRIPTOR_NAMES, descriptor_vector
from medfew.training.checkpoint import resolve_checkpoint

FORMAT = "medfew-suggest-metadataset/1"
SUFFIX = ".suggest.json"
BUILD_HINT = "build one with: medfew suggest build --checkpoint {checkpoint}"


def meta_dataset_path(checkpoint: str | Path) -> Path:
    """Where the meta-dataset of ``checkpoint`` (``"default"``, a run directory or a file) lives."""
    weights = resolve_checkpoint(checkpoint)
    return weights.with_name(weights.stem + SUFFIX)


@dataclass
class MetaDataset:
    """Tasks, configurations and the score of each tried (task, configuration) pair.

    Attributes:
        weights_sha256: The checkpoint weights the scores were measured with.
        configurations: Method-option dicts.
        descriptors: ``(T, F)`` task descriptors (``NaN`` where undefined), ``F = len(DESCRIPTOR_NAMES)``.
        sources: ``(T,)`` where each task came from (e.g. ``"organamnist/val"``), for provenance only.
        records: ``(R, 3)`` rows ``(task, configuration, score)``.
        provenance: How it was built (datasets, split, seeds, episode shapes).
    """

    weights_sha256: str
    configurations: list[dict[str, Any]] = field(default_factory=list)
    descriptors: np.ndarray = field(default_factory=lambda: np.zeros((0, len(DESCRIPTOR_NAMES))))
    sources: list[str] = field(default_factory=list)
    records: list[tuple[int, int, float]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_tasks(self) -> int:
        """Number of tasks ``T``."""
        return len(self.sources)

    def configuration_index(self, options: dict[str, Any]) -> int:
        """The index of ``options`` among the configurations, appending it when new."""
        key = configuration_key(options)
        for index, known in enumerate(self.configurations):
            if configuration_key(known) == key:
                return index
        self.configurations.append(dict(options))
        return len(self.configurations) - 1

    def add_task(self, descriptor: dict[str, float], source: str, scores: dict[int, float]) -> int:
        """Append one task and its scores (configuration index -> query accuracy); returns its index."""
        self.descriptors = np.vstack([self.descriptors, np.array([descriptor_vector(descriptor)])])
        self.sources.append(source)
        task = len(self.sources) - 1
        self.records.extend((task, int(c), float(s)) for c, s in scores.items())
        return task

    def score_matrix(self) -> np.ndarray:
        """``(T, C)`` scores, ``NaN`` where a configuration was not tried on a task (repeats averaged)."""
        total = np.zeros((self.n_tasks, len(self.configurations)))
        count = np.zeros_like(total)
        for task, config, score in self.records:
            total[task, config] += score
            count[task, config] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    # ---------------------------------------------------------------- files
    def to_json(self) -> dict[str, Any]:
        """The JSON document (``NaN`` written as ``null``)."""
        return {
            "format": FORMAT,
            "weights_sha256": self.weights_sha256,
            "descriptor_names": list(DESCRIPTOR_NAMES),
            "configurations": self.configurations,
            "tasks": [{"source": s, "descriptor": [None if math.isnan(v) else round(float(v), 6) for v in d]}
                      for s, d in zip(self.sources, self.descriptors)],
            "records": [[t, c, round(s, 6)] for t, c, s in self.records],
            "provenance": self.provenance,
        }

    def save(self, path: str | Path) -> Path:
        """Write the JSON file atomically; returns its path."""
        path = Path(path)
        atomic_write_bytes(path, json.dumps(self.to_json(), separators=(",", ":")).encode())
        return path

    @classmethod
    def load(cls, path: str | Path, *, checkpoint: str | Path | None = None) -> MetaDataset:
        """Read a meta-dataset file.

        Args:
            path: The ``.suggest.json`` file.
            checkpoint: Named in the error messages (how to build a missing one).

        Raises:
            CheckpointError: A missing or malformed file (named, with how to rebuild it).
        """
        path = Path(path)
        hint = BUILD_HINT.format(checkpoint=checkpoint or "CHECKPOINT")
        if not path.is_file():
            raise CheckpointError(f"no meta-dataset for this checkpoint ({path} does not exist); {hint}")
        try:
            raw = json.loads(path.read_text())
            if raw.get("format") != FORMAT or list(raw["descriptor_names"]) != list(DESCRIPTOR_NAMES):
                raise ValueError(f"format {str(raw.get('format'))[:60]!r} or descriptor names differ from {FORMAT}")
            descriptors = np.array([[math.nan if v is None else float(v) for v in t["descriptor"]]
                                    for t in raw["tasks"]], dtype=float).reshape(-1, len(DESCRIPTOR_NAMES))
            meta = cls(weights_sha256=str(raw["weights_sha256"]), configurations=list(raw["configurations"]),
                       descriptors=descriptors, sources=[str(t["source"]) for t in raw["tasks"]],
                       records=[(int(t), int(c), float(s)) for t, c, s in raw["records"]],
                       provenance=dict(raw.get("provenance", {})))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{path}: not a readable meta-dataset ({str(error)[:200]}); {hint}") from error
        bad = [r for r in meta.records if not (0 <= r[0] < meta.n_tasks and 0 <= r[1] < len(meta.configurations))]
        if bad:
            raise CheckpointError(f"{path}: {len(bad)} records point outside the tasks or configurations; {hint}")
        return meta


def load_for_checkpoint(checkpoint: str | Path, weights_sha256: str) -> MetaDataset:
    """The meta-dataset of ``checkpoint``, checked against its weights.

    Raises:
        CheckpointError: No meta-dataset, an unreadable one, or one measured with other weights.
    """
    path = meta_dataset_path(checkpoint)
    meta = MetaDataset.load(path, checkpoint=checkpoint)
    if meta.weights_sha256 != weights_sha256:
        raise CheckpointError(
            f"{path} was built for weights {meta.weights_sha256[:12]}, but the checkpoint's are "
            f"{weights_sha256[:12]}; {BUILD_HINT.format(checkpoint=checkpoint)}"
        )
    return meta
