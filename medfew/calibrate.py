"""Choose a checkpoint's test-time settings and fit its temperature on validation episodes only.

``medfew calibrate --checkpoint RUN`` draws fixed-seed episodes from the **val splits of the
meta-train domains** (the checkpoint's own ``data.val``; never a test domain), scores every candidate
test-time read-out of the method on exactly those episodes, keeps the most accurate one, fits a logit
temperature on its query logits (:func:`medfew.evaluation.calibration.fit_temperature`), and writes
both into the checkpoint's sidecar (``method.hyperparameters`` and ``calibration``). The weights are
not touched. Evaluation, ``medfew diagnose`` and the app then use the stored settings and divide
logits by the temperature.

Candidates (for methods that offer ``head="finetune"``, i.e. ProtoNet): the
method's saved read-out and ``head="finetune"`` over a small grid of steps, learning rates and
fine-tuned depths. Other methods keep their read-out and only get a temperature.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from medfew.data.episodes.sampler import EpisodeSampler
from medfew.data.sources.pools import load_pools
from medfew.errors import ConfigError
from medfew.evaluation.calibration import fit_temperature
from medfew.evaluation.metrics import expected_calibration_error
from medfew.evaluation.summary import confidence_interval_95
from medfew.experiment import precompute_features, read_precomputed
from medfew.methods import method_class
from medfew.training.checkpoint import load_checkpoint, read_checkpoint_info, update_sidecar

CALIBRATION_SEED_OFFSET = 2_000_003
"""Added to the training seed: calibration episodes differ from those that chose the best step."""
FINETUNE_STEPS: tuple[int, ...] = (20, 100)
FINETUNE_LRS: tuple[float, ...] = (0.01, 0.05)


def candidate_options(method_name: str, depths: Sequence[int] = (0,)) -> list[dict[str, Any]]:
    """Test-time option sets to compare: ``{}`` (the saved read-out) first, then the fine-tuning grid."""
    accepted = inspect.signature(method_class(method_name)).parameters
    candidates: list[dict[str, Any]] = [{}]
    if "finetune_steps" in accepted:
        for depth, steps, lr in itertools.product(depths, FINETUNE_STEPS, FINETUNE_LRS):
            candidates.append({"head": "finetune", "finetune_steps": steps, "finetune_lr": lr, "finetune_depth": depth})
    return candidates


def calibrate_checkpoint(
    checkpoint: str | Path,
    *,
    data_root: str | Path | None = None,
    episodes: int = 200,
    shots: int | None = None,
    depths: Sequence[int] = (0,),
    write: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Pick the test-time read-out and fit the temperature of ``checkpoint`` on its val episodes.

    Args:
        checkpoint: A run directory or ``.safetensors`` file (``"default"`` is read-only: ``write=False``).
        data_root: Where the val datasets live (``None``: ``$MEDFEW_DATA_ROOT``).
        episodes: Val episodes (every candidate sees the same ones).
        shots: Support images per class (default: the training episodes').
        depths: Fine-tuned backbone depths to try (0: head only).
        write: Store the result in the checkpoint's sidecar.
        progress: Progress bar.

    Returns:
        The calibration block: chosen options, temperature, ECE before/after, each candidate's val
        accuracy with its 95% CI, and the episode specification.

    Raises:
        ConfigError: The checkpoint names no val datasets, or ``episodes < 10``.
    """
    info = read_checkpoint_info(checkpoint)
    config = info.config
    data, episode, train = config.get("data", {}), config.get("episode", {}), config.get("train", {})
    if not data.get("val"):
        raise ConfigError(f"{info.path}: its config names no val datasets (data.val) to calibrate on")
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 10:
        raise ConfigError(f"calibration episodes must be an integer >= 10, got {episodes!r}")
    prep = info.preprocessing
    pools = load_pools(list(data["val"]), split=data.get("val_split", "val"), data_root=data_root,
                       image_size=prep.image_size, channels=prep.channels, progress=progress)
    pools = [p.capped(int(data.get("max_per_class", 0)), seed=int(train.get("seed", 0))) for p in pools]
    spec = dict(ways=int(episode.get("ways", 5)), shots=int(shots or episode.get("shots", 5)),
                queries=int(episode.get("queries", 15)), seed=int(train.get("seed", 0)) + CALIBRATION_SEED_OFFSET)
    normalize = prep.normalize_batch
    sampler = EpisodeSampler(pools, too_few="skip", allow_fewer_ways=True, normalize=normalize, **spec)
    candidates = candidate_options(info.method, depths)
    methods = [load_checkpoint(checkpoint, method_options=options)[0] for options in candidates]
    samplers = []  # the same episodes, drawn from images or from features computed once per image
    encoded_sampler = None  # every candidate has the same weights, so one encoding serves them all
    for method in methods:
        if not method.reads_fixed_features:
            samplers.append(sampler)
            continue
        if encoded_sampler is None:
            encoded = precompute_features(method, pools, normalize, signature=info.weights_sha256, progress=progress)
            encoded_sampler = EpisodeSampler(encoded, too_few="skip", allow_fewer_ways=True, normalize=None, **spec)
        else:
            read_precomputed(method, encoded)
        samplers.append(encoded_sampler)
    logits: list[list[torch.Tensor]] = [[] for _ in candidates]
    labels: list[torch.Tensor] = []
    for index in tqdm(range(episodes), desc="calibrate", unit="episode", disable=not progress):
        tasks = {id(source): source.sample(index) for source in samplers}  # each distinct sampler draws once
        for method, source, out in zip(methods, samplers, logits):
            task = tasks[id(source)]
            out.append(_query_logits(method, task.support_images, task.support_labels, task.query_images))
        labels.append(task.query_labels)
    accuracies = [_episode_accuracies(out, labels) for out in logits]
    best = int(np.argmax([a.mean() for a in accuracies]))  # ties: the earlier (simpler) candidate
    temperature = fit_temperature(logits[best], labels)
    block = {
        "temperature": temperature,
        "fitted_on": {"datasets": list(data["val"]), "split": data.get("val_split", "val"), "episodes": episodes,
                      **spec},
        "ece_before": _pooled_ece(logits[best], labels, 1.0),
        "ece_after": _pooled_ece(logits[best], labels, temperature),
        "chosen_options": candidates[best],
        "candidates": [
            {"options": options, "val_accuracy": float(a.mean()), "val_accuracy_ci95": confidence_interval_95(a)}
            for options, a in zip(candidates, accuracies)
        ],
    }
    if write:
        update_sidecar(checkpoint, method_hparams=methods[best].hyperparameters(), calibration=block)
    return block


def _query_logits(method: Callable[..., Any], support: torch.Tensor, labels: torch.Tensor,
                  query: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():  # gradient-based methods adapt with gradients
        adapted = method.adapt(support, labels)
    with torch.no_grad():
        return adapted.predict(query).detach().double().cpu()


def _episode_accuracies(logits: list[torch.Tensor], labels: list[torch.Tensor]) -> np.ndarray:
    return np.array([float((lg.argmax(-1) == y).double().mean()) for lg, y in zip(logits, labels)])


def _pooled_ece(logits: list[torch.Tensor], labels: list[torch.Tensor], temperature: float) -> float:
    probabilities = [torch.softmax(lg / temperature, dim=-1) for lg in logits]
    confidence = torch.cat([p.max(-1).values for p in probabilities]).numpy()
    correct = torch.cat([p.argmax(-1) == y for p, y in zip(probabilities, labels)]).numpy()
    return expected_calibration_error(confidence, correct)
