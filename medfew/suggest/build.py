"""Build a checkpoint's meta-dataset from episodes of its meta-train domains' val splits.

The pools, the per-class cap, the normalisation and the feature pre-computation are those of
:mod:`medfew.calibrate` (the same val splits; never a test domain), with other seeds and a spread of
episode shapes (ways x shots), so that the descriptors cover small and larger support sets. Every
configuration of :func:`~medfew.suggest.configurations.configuration_grid` is scored on every episode.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from medfew.data.episodes.episode import Episode
from medfew.data.episodes.pool import ImagePool
from medfew.data.episodes.sampler import EpisodeSampler
from medfew.data.sources.pools import load_pools
from medfew.errors import ConfigError
from medfew.evaluation import query_logits
from medfew.experiment import precompute_features, read_precomputed
from medfew.methods.base import FewShotMethod
from medfew.models.precomputed import PrecomputedFeatures
from medfew.suggest.configurations import configuration_grid, with_options
from medfew.suggest.descriptors import support_descriptor
from medfew.suggest.metadataset import MetaDataset, meta_dataset_path
from medfew.training.checkpoint import load_checkpoint

META_SEED_OFFSET = 3_000_017
"""Added to the training seed: these episodes differ from validation's and calibration's."""
EPISODE_SHAPES: tuple[tuple[int, int], ...] = ((5, 1), (5, 5), (2, 1), (2, 5), (3, 3), (5, 10))
"""(ways, shots) of the val episodes; 5-way episodes of a 2-class domain become 2-way."""
QUERIES = 15


def build_meta_dataset(
    checkpoint: str | Path,
    *,
    data_root: str | Path | None = None,
    episodes_per_shape: int = 50,
    shapes: Sequence[tuple[int, int]] = EPISODE_SHAPES,
    depths: Sequence[int] = (0,),
    out: str | Path | None = None,
    progress: bool = True,
) -> tuple[MetaDataset, Path]:
    """Score every test-time configuration of ``checkpoint`` on val episodes of its meta-train domains.

    Args:
        checkpoint: ``"default"``, a run directory or a ``.safetensors`` file.
        data_root: Where the val datasets live (``None``: ``$MEDFEW_DATA_ROOT``).
        episodes_per_shape: Episodes per (ways, shots) shape.
        shapes: The (ways, shots) shapes.
        depths: Fine-tuned backbone depths in the grid (> 0 is slow: no feature pre-computation).
        out: Output file (default: beside the checkpoint, :func:`meta_dataset_path`).
        progress: Progress bars.

    Returns:
        The meta-dataset and the path it was written to.

    Raises:
        ConfigError: The checkpoint names no val datasets, or ``episodes_per_shape < 1``.
    """
    if isinstance(episodes_per_shape, bool) or not isinstance(episodes_per_shape, int) or episodes_per_shape < 1:
        raise ConfigError(f"episodes per shape must be an integer >= 1, got {episodes_per_shape!r}")
    base, info = load_checkpoint(checkpoint)
    base.eval()
    data, train = info.config.get("data", {}), info.config.get("train", {})
    if not data.get("val"):
        raise ConfigError(f"{info.path}: its config names no val datasets (data.val) to build a meta-dataset on")
    prep, seed = info.preprocessing, int(train.get("seed", 0))
    split = data.get("val_split", "val")
    pools = load_pools(list(data["val"]), split=split, data_root=data_root, image_size=prep.image_size,
                       channels=prep.channels, progress=progress)
    pools = [p.capped(int(data.get("max_per_class", 0)), seed=seed) for p in pools]
    normalize = prep.normalize_batch
    grid = configuration_grid(info.method, info.method_hparams, depths)
    methods, encoded_base, encoded = fixed_feature_methods(base, grid, pools, normalize, info.weights_sha256, progress)
    meta = MetaDataset(weights_sha256=info.weights_sha256, configurations=grid, provenance={
        "built_from": {"datasets": list(data["val"]), "split": split, "episodes_per_shape": episodes_per_shape,
                       "shapes": [list(s) for s in shapes], "queries": QUERIES, "seed": seed + META_SEED_OFFSET},
        "score": "query accuracy of the episode"})
    for shape_index, (ways, shots) in enumerate(shapes):
        spec: dict[str, Any] = {"ways": ways, "shots": shots, "queries": QUERIES, "too_few": "skip",
                                "allow_fewer_ways": True, "seed": seed + META_SEED_OFFSET + 7919 * shape_index}
        images = EpisodeSampler(pools, normalize=None, **spec)
        features = None if encoded is None else EpisodeSampler(encoded, normalize=None, **spec)
        for index in tqdm(range(episodes_per_shape), desc=f"meta-dataset {ways}-way {shots}-shot",
                          unit="episode", disable=not progress):
            episode = images.sample(index)
            encoded_episode = None if features is None else features.sample(index)
            descriptor = episode_descriptor(base, episode, encoded_episode, encoded_base, normalize)
            scores = {c: score_configuration(m, episode, encoded_episode, normalize) for c, m in enumerate(methods)}
            meta.add_task(descriptor, f"{episode.source}/{split}", scores)
    path = Path(out) if out is not None else meta_dataset_path(checkpoint)
    meta.save(path)
    return meta, path


def fixed_feature_methods(
    base: FewShotMethod,
    grid: Sequence[dict[str, Any]],
    pools: list[ImagePool],
    normalize: Callable[[torch.Tensor], torch.Tensor],
    signature: str,
    progress: bool,
) -> tuple[list[FewShotMethod], FewShotMethod | None, list[ImagePool] | None]:
    """One method per configuration; those that read fixed features read them from pools encoded once.

    Every configuration shares the base's weights, so one encoding of the pools
    (:func:`medfew.experiment.precompute_features`) serves all of them.

    Returns:
        The methods (in ``grid`` order), the base reading the encoded pools (or ``None``), and the
        encoded pools (or ``None`` when no configuration reads fixed features).
    """
    light = copy.copy(base)  # the configurations are built without copying the backbone each time
    light._modules = {**base._modules, "backbone": PrecomputedFeatures(1)}
    methods = [with_options(light, options) for options in grid]
    if not any(m.reads_fixed_features for m in methods):
        return [with_options(base, options) for options in grid], None, None
    encoded_base = copy.deepcopy(base)
    encoded = precompute_features(encoded_base, pools, normalize, signature=signature, progress=progress)
    for index, method in enumerate(methods):
        if method.reads_fixed_features:
            read_precomputed(method, encoded)
        else:
            methods[index] = with_options(base, grid[index])
    return methods, encoded_base, encoded


def episode_descriptor(
    base: FewShotMethod,
    episode: Episode,
    encoded_episode: Episode | None,
    encoded_base: FewShotMethod | None,
    normalize: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, float]:
    """The descriptor of an episode's support set (``[0, 1]`` images; features from the encoded copy if any)."""
    with torch.no_grad():
        if encoded_episode is not None and encoded_base is not None:
            features = encoded_base.backbone(encoded_episode.support_images)
        else:
            features = base.backbone(normalize(episode.support_images))
    return support_descriptor(episode.support_images, episode.support_labels, features)


def score_configuration(
    method: FewShotMethod,
    episode: Episode,
    encoded_episode: Episode | None,
    normalize: Callable[[torch.Tensor], torch.Tensor],
) -> float:
    """Query accuracy of ``method`` on the episode (from its features when the method reads fixed ones)."""
    if method.reads_fixed_features and encoded_episode is not None:
        task = encoded_episode
    else:
        task = normalized(episode, normalize)
    logits = query_logits(method, task)
    return float((logits.argmax(-1) == task.query_labels).double().mean())


def normalized(episode: Episode, normalize: Callable[[torch.Tensor], torch.Tensor]) -> Episode:
    """The episode with its ``[0, 1]`` images normalised for the model."""
    return dataclasses.replace(episode, support_images=normalize(episode.support_images),
                               query_images=normalize(episode.query_images))


def describe_build(meta: MetaDataset) -> dict[str, Any]:
    """A short summary of a meta-dataset (tasks, configurations, records, sources)."""
    sources: dict[str, int] = {}
    for source in meta.sources:
        sources[source] = sources.get(source, 0) + 1
    return {"tasks": meta.n_tasks, "configurations": len(meta.configurations), "records": len(meta.records),
            "sources": sources}
