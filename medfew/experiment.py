"""Experiments end to end: a validated config -> pools, samplers, model -> training or evaluation.

This is the composition layer behind ``medfew train`` and ``medfew evaluate``; it takes typed
configs and keyword arguments, never argv or YAML.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medfew import __version__
from medfew.config import ExperimentConfig
from medfew.data.episodes.pool import ImagePool
from medfew.data.episodes.sampler import EpisodeSampler
from medfew.data.episodes.transforms import build_augmentation
from medfew.data.preprocessing import Preprocessing
from medfew.data.sources.encoded_pool import encoded_pool
from medfew.data.sources.pools import load_pool, load_pools
from medfew.errors import ConfigError
from medfew.evaluation import EvaluationSummary, build_baseline, evaluate
from medfew.methods import build_method
from medfew.methods.base import FewShotMethod
from medfew.models import build_backbone
from medfew.models.precomputed import PrecomputedFeatures, encode_with_flip
from medfew.training.checkpoint import load_checkpoint
from medfew.training.device import episodes_on_device, resolve_device
from medfew.training.distributed import init_distributed, rank_device
from medfew.training.loop import FitResult, fit

VAL_SEED_OFFSET = 1_000_003


def build_model(config: ExperimentConfig, *, num_classes: int) -> tuple[FewShotMethod, dict[str, Any]]:
    """Build the backbone and method a config names; return the method and the backbone's config.

    ``num_classes`` (the size of the meta-train class vocabulary) is passed to methods that take it.

    Raises:
        ConfigError: An unknown option of the backbone or method (the registries name the key).
        RegistryError: An unknown backbone or method name.
    """
    data = config.data
    backbone = build_backbone(
        config.backbone.name, in_channels=data.channels, image_size=data.image_size, **config.backbone.options
    )
    options = _with_context(config.method.name, dict(config.method.options), num_classes)
    return build_method(config.method.name, backbone, **options), backbone.config()


def _with_context(name: str, options: dict[str, Any], num_classes: int) -> dict[str, Any]:
    from medfew.methods import method_class

    accepted = inspect.signature(method_class(name)).parameters
    if "num_classes" in accepted and "num_classes" not in options:
        return {**options, "num_classes": num_classes}
    return options


def run_training(
    config: ExperimentConfig,
    *,
    data_root: str | Path | None,
    run_dir: str | Path,
    resume: bool = True,
    until_step: int | None = None,
    progress: bool = True,
    channels_last: bool = False,
    device_episodes: str = "auto",
) -> FitResult:
    """Meta-train the configured method on ``data.train``, validating on ``data.val``.

    Launched by ``torchrun``, every process joins the process group, trains on its share of each
    meta-batch, and rank 0 alone validates and writes ``run_dir`` (:mod:`medfew.training.distributed`).

    Args:
        config: The validated experiment.
        data_root: Where the datasets live (``None``: ``$MEDFEW_DATA_ROOT``).
        run_dir: Output directory (see :func:`~medfew.training.loop.fit`).
        resume: Continue a run directory that holds a training state.
        until_step: Stop after this step.
        progress: Progress bars (rank 0).
        channels_last: Channels-last weights and images (GPU option).
        device_episodes: Build training episodes on the GPU: ``"auto"`` (when the training pools
            take at most a quarter of its free memory), ``"on"`` or ``"off"``; on the CPU episodes
            are page-locked instead when training on CUDA.
    """
    data, ep, train = config.data, config.episode, config.train
    device = resolve_device(train.device)
    ctx = init_distributed(device)
    device = rank_device(device, ctx)
    progress = progress and ctx.is_main
    pool_args = dict(data_root=data_root, image_size=data.image_size, channels=data.channels, progress=progress)
    train_pools = [p.capped(data.max_per_class, seed=train.seed)
                   for p in load_pools(list(data.train), split=data.train_split, **pool_args)]
    val_pools = [p.capped(data.max_per_class, seed=train.seed)
                 for p in (load_pools(list(data.val), split=data.val_split, **pool_args) if data.val else [])]
    prep = Preprocessing(data.image_size, data.channels, data.normalize)
    normalize = prep.normalize_batch
    sampler_args = dict(ways=ep.ways, shots=ep.shots, queries=ep.queries, too_few="skip",
                        allow_fewer_ways=data.allow_fewer_ways, mix_domains=data.mix_domains, normalize=normalize)
    augment = None if data.augment == "none" else build_augmentation(data.augment, seed=train.seed)
    torch.manual_seed(train.seed)  # the initial weights are part of the experiment (and equal on every rank)
    method, backbone_config = build_model(config, num_classes=sum(len(p.class_names) for p in train_pools))
    if data.frozen_cache and has_frozen_prefix(method.backbone):
        train_pools, val_pools = (encode_pools(pools, method.backbone, normalize, progress=progress)
                                  for pools in (train_pools, val_pools))
        sampler_args["normalize"], augment = None, None  # the maps are normalised; augmentation acts on images
        method.backbone.reads_prefix = True
    on_device = episodes_on_device(device_episodes, train_pools, device)
    train_sampler = EpisodeSampler(train_pools, seed=train.seed, augment=augment, device=device if on_device else None,
                                   pin_memory=device.type == "cuda" and not on_device, **sampler_args)
    validate = None
    if val_pools and ctx.is_main:
        val_sampler = EpisodeSampler(val_pools, seed=train.seed + VAL_SEED_OFFSET, **sampler_args)

        def validate(m: FewShotMethod) -> dict[str, Any]:
            summary = evaluate(m, val_sampler.episodes(train.eval_episodes), n_episodes=train.eval_episodes,
                               progress=False, method_name=m.name, device=str(next(m.parameters()).device),
                               conformal_alpha=None)  # accuracy chooses the step; sets are not needed here
            return summary.to_dict()

    meta = dict(
        backbone=config.backbone.name,
        backbone_config=backbone_config,
        preprocessing=prep,
        class_pool=list(train_sampler.class_vocabulary),
        data_provenance=[dict(p.provenance, name=p.name, split=p.split) for p in train_pools + val_pools],
        config=config.to_dict(),
    )
    try:
        return fit(method, train_sampler, settings=train, run_dir=run_dir, checkpoint_meta=meta,
                   validate=validate, resume=resume, until_step=until_step, progress=progress, dist_ctx=ctx,
                   channels_last=channels_last)
    finally:
        if hasattr(method.backbone, "reads_prefix"):
            method.backbone.reads_prefix = False


def has_frozen_prefix(backbone: torch.nn.Module) -> bool:
    """Whether ``backbone`` has frozen lower blocks whose outputs can be cached per image."""
    return callable(getattr(backbone, "prefix", None)) and int(getattr(backbone, "freeze", 0)) > 0


def encode_pools(
    pools: list[ImagePool], backbone: torch.nn.Module, normalize: Any, *, progress: bool
) -> list[ImagePool]:
    """Replace each pool's images by the backbone's frozen-prefix maps (computed once, cached)."""
    return [
        encoded_pool(pool, encode=backbone.prefix, signature=backbone.prefix_signature(), normalize=normalize,
                     progress=progress)
        for pool in pools
    ]


def precompute_features(
    method: FewShotMethod, pools: list[ImagePool], normalize: Any, *, signature: str, progress: bool
) -> list[ImagePool]:
    """Encode every pool image once and make ``method`` read the stored features.

    For a method whose test-time adaptation reads fixed features (``method.reads_fixed_features``):
    each image becomes the pair ``[f(x), f(flip(x))]`` (:mod:`medfew.models.precomputed`, cached in
    the pool cache under ``signature`` plus the backbone's config), and ``method.backbone`` is
    replaced by the stand-in that reads them, so episodes give exactly the logits the images would.
    The method is changed in place: call this on a copy used for evaluation only.

    Returns:
        The encoded pools (draw episodes from them with ``normalize=None``).
    """
    backbone = method.backbone
    config = backbone.config() if callable(getattr(backbone, "config", None)) else {}
    key = f"features+flip|{signature}|{type(backbone).__name__}|{sorted(config.items())}"
    encoded = [encoded_pool(pool, encode=encode_with_flip(backbone.eval()), signature=key, normalize=normalize,
                            progress=progress) for pool in pools]
    read_precomputed(method, encoded)
    return encoded


def read_precomputed(method: FewShotMethod, encoded: list[ImagePool]) -> None:
    """Make ``method`` read the features of pools that :func:`precompute_features` encoded with its weights."""
    method.backbone = PrecomputedFeatures(int(encoded[0].images.shape[1]))


@dataclass(frozen=True)
class EvalSource:
    """Where evaluation episodes come from: exactly one of folder, manifest or dataset."""

    folder: str | None = None
    manifest: str | None = None
    dataset: str | None = None
    split: str | None = None

    def resolve(self) -> str:
        given = [s for s in (self.folder, self.manifest, self.dataset) if s]
        if len(given) != 1:
            raise ConfigError("give exactly one of --folder, --manifest or --dataset")
        return given[0]


def run_evaluation(
    *,
    checkpoint: str | None,
    baseline: str | None,
    source: EvalSource,
    data_root: str | Path | None,
    ways: int,
    shots: int,
    queries: int,
    episodes: int,
    seed: int = 0,
    allow_fewer_queries: bool = False,
    image_size: int | None = None,
    channels: int | None = None,
    device: str = "auto",
    progress: bool = True,
    method_options: dict[str, Any] | None = None,
    conformal_alpha: float | None = 0.1,
    strict: bool = False,
) -> EvaluationSummary:
    """Evaluate a checkpoint or a raw-pixel baseline on fixed-seed episodes of one source.

    ``method_options`` replace saved hyperparameters at test time (a checkpoint only), e.g.
    ``{"feature_transform": "cl2"}`` for SimpleShot-style normalisation of a ProtoNet.
    ``conformal_alpha`` is the level of the per-episode leave-one-out prediction sets (coverage, set
    size, selective accuracy), or ``None`` for none (see :func:`medfew.evaluation.evaluate`).
    Unreadable images are skipped with a warning naming each (listed in the summary's provenance),
    or raise with ``strict``.
    """
    from medfew.training.device import resolve_device

    if (checkpoint is None) == (baseline is None):
        raise ConfigError("give exactly one of a checkpoint or a baseline")
    if episodes < 1:
        raise ConfigError(f"'episodes' must be at least 1, got {episodes}")
    if checkpoint is not None:
        if image_size is not None or channels is not None:
            raise ConfigError("--image-size/--channels apply to baselines; a checkpoint carries its own preprocessing")
        model, info = load_checkpoint(checkpoint, method_options=method_options)
        prep, name = info.preprocessing, info.method
    else:
        if method_options:
            raise ConfigError("method options apply to checkpoints, not to raw-pixel baselines")
        model = build_baseline(baseline)
        prep = Preprocessing(image_size or 28, channels or 3, "zscore")
        name = baseline
    pool = load_pool(source.resolve(), split=source.split, data_root=data_root,
                     image_size=prep.image_size, channels=prep.channels, progress=progress,
                     on_error="raise" if strict else "skip")
    normalize: Any = prep.normalize_batch
    if checkpoint is not None and model.reads_fixed_features:
        [pool] = precompute_features(model, [pool], normalize, signature=info.weights_sha256, progress=progress)
        normalize = None
    sampler = EpisodeSampler(
        [pool], ways=ways, shots=shots, queries=queries, seed=seed,
        too_few="limit_queries" if allow_fewer_queries else "error",
        normalize=normalize,
    )
    summary = evaluate(model, sampler.episodes(episodes), n_episodes=episodes, device=str(resolve_device(device)),
                       progress=progress, method_name=name, conformal_alpha=conformal_alpha)
    provenance = {
        "medfew_version": __version__,
        "seed": seed,
        "episodes": episodes,
        "checkpoint": checkpoint,
        "checkpoint_sha256": None if checkpoint is None else info.weights_sha256,
        "method_options": dict(method_options or {}),
        "baseline": baseline,
        "source": {"folder": source.folder, "manifest": source.manifest, "dataset": source.dataset,
                   "split": source.split},
        "data": {k: pool.provenance.get(k) for k in ("kind", "dataset", "split", "files", "images_sha256")},
        "skipped": list(pool.provenance.get("skipped", [])),
    }
    return dataclasses.replace(summary, queries_requested=queries, provenance=provenance)
