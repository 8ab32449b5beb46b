"""medfew.suggest: meta-learned test-time settings for a new task (the warm start of Feurer et al. 2015).

* ``descriptors``: ``support_descriptor(images, labels, features)`` - what a support set looks like.
* ``configurations``: the test-time option grid of a checkpoint and ``with_options(method, options)``.
* ``metadataset``: ``MetaDataset`` - (task descriptor, configuration, score) records beside a checkpoint.
* ``build``: ``build_meta_dataset(checkpoint)`` from val episodes of the meta-train domains.
* ``retrieval``: nearest past tasks and ``rank_configurations``.
* ``loo``: leave-one-out check of candidates with a 95% Wilson interval.
* ``suggestion``: ``suggest_settings`` / ``suggest_for_folder`` -> ``Suggestion``.
* ``recorder``: ``EvaluationRecorder``, an ``evaluate(on_episode=...)`` hook that appends records.
"""

from medfew.suggest.build import build_meta_dataset, describe_build
from medfew.suggest.configurations import configuration_grid, describe, with_options
from medfew.suggest.descriptors import DESCRIPTOR_NAMES, support_descriptor
from medfew.suggest.loo import CandidateCheck, check_candidates, wilson_interval
from medfew.suggest.metadataset import (
    MetaDataset,
    load_for_checkpoint,
    meta_dataset_path,
)
from medfew.suggest.recorder import EvaluationRecorder
from medfew.suggest.retrieval import (
    RankedConfiguration,
    nearest_tasks,
    rank_configurations,
)
from medfew.suggest.suggestion import (
    Suggestion,
    load_support_folder,
    suggest_for_folder,
    suggest_settings,
)

__all__ = [
    "DESCRIPTOR_NAMES",
    "CandidateCheck",
    "EvaluationRecorder",
    "MetaDataset",
    "RankedConfiguration",
    "Suggestion",
    "build_meta_dataset",
    "check_candidates",
    "configuration_grid",
    "describe",
    "describe_build",
    "load_for_checkpoint",
    "load_support_folder",
    "meta_dataset_path",
    "nearest_tasks",
    "rank_configurations",
    "suggest_for_folder",
    "suggest_settings",
    "support_descriptor",
    "wilson_interval",
    "with_options",
]
