"""THE meta-training loop, the same for every method.

Each outer step draws a meta-batch of episodes (episode ``step * meta_batch + b`` of the sampler),
asks the method for its meta-gradients (``method.training_step``), clips them and takes one optimiser
step. Validation runs every ``eval_every`` steps through a caller-supplied callback and the best
model is kept. The checkpoints of a step (best and/or last weights, sidecars, training state) are
published as one atomic unit (:mod:`medfew.training.run_store`), so a run killed at any moment
resumes exactly where its last published step stopped (weights, optimiser, schedule, RNG state,
step, ``metrics.jsonl``); weights holding NaN or infinity are never saved, and stop the run.

Under ``torchrun`` (a :class:`~medfew.training.distributed.DistContext` with several ranks) each rank
draws its share of every meta-batch and the meta-gradients are all-reduced before the step (see
:mod:`medfew.training.distributed`); only rank 0 validates and writes the run directory.

On a GPU the step never waits for the device: episodes are copied without blocking (page-locked when
the sampler pins them, or built on the device), and the loss, accuracy and gradient norm are read
back only on the steps that log them.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from medfew.config import TrainConfig
from medfew.data.episodes.sampler import EpisodeSampler
from medfew.errors import CheckpointError
from medfew.methods.base import FewShotMethod
from medfew.training.checkpoint import (
    NonFiniteWeightsError,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
)
from medfew.training.curves import plot_learning_curve
from medfew.training.device import autocast, move_episode, resolve_amp, resolve_device
from medfew.training.distributed import (
    SINGLE,
    DistContext,
    all_reduce_gradients,
    barrier,
    broadcast_module,
    rank_device,
    reduce_figures,
    shard,
)
from medfew.training.run_store import (
    STATE,
    WEIGHTS,
    adopt_flat_layout,
    clean_stale,
    publish,
    read_pointer,
    reset,
    write_step_dir,
)
from medfew.training.state_io import atomic_write_bytes, load_state, save_state

Validate = Callable[[FewShotMethod], dict[str, Any]]
METRICS_FILE = "metrics.jsonl"


@dataclass
class FitResult:
    """What a call to :func:`fit` did.

    Attributes:
        steps_done: Outer steps completed in total (including those before a resume).
        best_metric: Best validation ``accuracy_mean`` seen, or ``None`` without validation.
        best_step: The step of the best validation.
        last_train: The last logged training loss and accuracy.
        run_dir: Where everything was written.
    """

    steps_done: int
    best_metric: float | None
    best_step: int | None
    last_train: dict[str, float] = field(default_factory=dict)
    run_dir: Path | None = None


def make_optimizer(method: FewShotMethod, settings: TrainConfig) -> torch.optim.Optimizer:
    """The outer optimiser over every trainable parameter of the method."""
    params = [p for p in method.parameters() if p.requires_grad]
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, weight_decay=settings.weight_decay)
    cls = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=settings.lr, weight_decay=settings.weight_decay)


def make_schedule(optimizer: torch.optim.Optimizer, settings: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then constant or cosine decay to zero at ``settings.steps``."""
    warmup, total = settings.warmup_steps, settings.steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if settings.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(
    method: FewShotMethod,
    sampler: EpisodeSampler,
    *,
    settings: TrainConfig,
    run_dir: str | Path,
    checkpoint_meta: dict[str, Any],
    validate: Validate | None = None,
    resume: bool = True,
    until_step: int | None = None,
    progress: bool = True,
    dist_ctx: DistContext = SINGLE,
    channels_last: bool = False,
) -> FitResult:
    """Meta-train ``method`` on episodes from ``sampler``.

    Args:
        method: Any registered few-shot method.
        sampler: Source of training episodes; episode indices are derived from the step, so a
            resumed run sees exactly the episodes an uninterrupted one would.
        settings: Steps, optimiser, schedule, clipping, evaluation and checkpoint cadence, device.
        run_dir: Output directory: ``published.json`` naming the ``best`` and ``last`` step
            directories under ``checkpoints/`` (the last with ``train_state.safetensors``),
            ``metrics.jsonl``, ``learning_curve.png``.
        checkpoint_meta: Keyword arguments for :func:`save_checkpoint` besides ``method`` and
            ``metrics`` (backbone, backbone_config, preprocessing, class_pool, data_provenance, config).
        validate: Called with the method every ``eval_every`` steps; returns metrics with
            ``accuracy_mean``, which chooses the best checkpoint (rank 0 only when distributed).
        resume: Continue from ``run_dir`` when it holds a published training state; ``False``
            deletes the run's checkpoints first.
        until_step: Stop after this step (as if interrupted); ``None`` runs to ``settings.steps``.
        progress: Show a progress bar (rank 0 only).
        dist_ctx: This process's place in a data-parallel run (from
            :func:`~medfew.training.distributed.init_distributed`); the default is one process.
        channels_last: Keep convolution weights and episode images in channels-last layout (a GPU
            option; it changes no result beyond float rounding).
    """
    run = Path(run_dir)
    main = dist_ctx.is_main
    if main:
        run.mkdir(parents=True, exist_ok=True)
    device = rank_device(resolve_device(settings.device), dist_ctx)
    amp_dtype = resolve_amp(settings.amp, device)
    share = shard(settings.meta_batch, dist_ctx)
    weight = len(share) / settings.meta_batch
    method.to(device)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(method, settings)
    schedule = make_schedule(optimizer, settings)
    start, best_metric, best_step = 0, None, None
    if main:  # the one writer tidies up after a kill, or forgets the old run
        if resume:
            clean_stale(run)
            adopt_flat_layout(run)
        else:
            reset(run)
    resuming = resume and main and "last" in read_pointer(run)
    if dist_ctx.enabled:  # rank 0's view of the run directory decides for everyone
        flag = torch.tensor([float(resuming)], device=device)
        torch.distributed.broadcast(flag, src=0)
        resuming = bool(flag.item())
    if resuming:
        start, best_metric, best_step = _restore(run, method, optimizer, schedule, device, checkpoint_meta.get("config"))
        if main:
            _truncate_log(run / METRICS_FILE, start)
    else:
        torch.manual_seed(settings.seed)
        if main:
            (run / METRICS_FILE).unlink(missing_ok=True)
    broadcast_module(method, dist_ctx)  # identical weights on every rank, however each built them
    stop = settings.steps if until_step is None else min(until_step, settings.steps)
    params = [p for p in method.parameters() if p.requires_grad]
    last_train: dict[str, float] = {}
    t0 = time.perf_counter()
    bar = tqdm(total=settings.steps, initial=start, disable=not (progress and main), desc=f"train {method.name}",
               unit="step")
    with open(run / METRICS_FILE, "a", encoding="utf-8") if main else contextlib.nullcontext() as log:
        for step in range(start, stop):
            method.train()
            base = step * settings.meta_batch
            episodes = [move_episode(sampler.sample(base + b), device, channels_last=channels_last) for b in share]
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, amp_dtype):
                out = method.training_step(episodes)
            all_reduce_gradients(params, weight, dist_ctx)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            optimizer.step()
            schedule.step()
            done = step + 1
            if done % settings.log_every == 0 or done == stop:
                loss, acc = reduce_figures([out.loss, out.accuracy], weight, dist_ctx)
                last_train = {"loss": float(loss), "accuracy": float(acc)}  # the only host reads of a step
                if main:
                    record = {"step": done, **last_train, "lr": schedule.get_last_lr()[0],
                              "grad_norm": float(grad_norm), "elapsed_s": round(time.perf_counter() - t0, 3)}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{last_train['loss']:.3f}", acc=f"{last_train['accuracy']:.3f}")
            new_best = None
            if main and validate is not None and (done % settings.eval_every == 0 or done == settings.steps):
                metrics = validate(method)
                log.write(json.dumps({"step": done, "val": metrics}) + "\n")
                log.flush()
                score = float(metrics["accuracy_mean"])
                if best_metric is None or score > best_metric:
                    best_metric, best_step, new_best = score, done, metrics
            if main and (new_best is not None or done % settings.checkpoint_every == 0 or done == stop):
                state = {"step": done, "best_metric": best_metric, "best_step": best_step,
                         "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "rng": _rng_state()}
                _publish_step(run, done, method, checkpoint_meta, train=last_train, val=new_best, state=state)
            bar.update(1)
    bar.close()
    if main:
        plot_learning_curve(run / METRICS_FILE, run / "learning_curve.png")
    best_metric, best_step = _share_best(best_metric, best_step, device, dist_ctx)
    barrier(dist_ctx)  # rank 0's files are complete before any rank returns
    return FitResult(stop, best_metric, best_step, last_train, run)


def _publish_step(
    run: Path,
    step: int,
    method: FewShotMethod,
    meta: dict[str, Any],
    *,
    train: dict[str, float],
    val: dict[str, Any] | None,
    state: dict[str, Any],
) -> None:
    """Write step ``step``'s checkpoints (a new best, if any, and the last with its training state), then
    publish them together in one atomic pointer replace."""
    def write_last(folder: Path) -> None:
        save_checkpoint(folder / "model", method, metrics={"step": step, "train": train}, **meta)
        save_state(folder / STATE, state)

    try:
        folders = {}
        if val is not None:
            folders["best"] = write_step_dir(run, "best", step, lambda folder: save_checkpoint(
                folder / "model", method, metrics={"val": val, "step": step}, **meta))
        folders["last"] = write_step_dir(run, "last", step, write_last)
    except NonFiniteWeightsError as exc:
        kept = read_pointer(run).get("last")
        raise NonFiniteWeightsError(
            f"step {step}: training diverged, {exc}; "
            + (f"the last good checkpoint stays published ({kept})" if kept else "no checkpoint was published")
        ) from exc
    publish(run, **folders)


def _truncate_log(path: Path, step: int) -> None:
    """Drop ``metrics.jsonl`` records after ``step`` (written before a kill, to be written again)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the kill
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line + "\n")
    atomic_write_bytes(path, "".join(kept).encode())


def _share_best(
    metric: float | None, step: int | None, device: torch.device, ctx: DistContext
) -> tuple[float | None, int | None]:
    """Rank 0's best validation (it alone validates) on every rank."""
    if not ctx.enabled:
        return metric, step
    box = torch.tensor([math.nan if metric is None else metric, -1 if step is None else step],
                       dtype=torch.float64, device=device)
    torch.distributed.broadcast(box, src=0)
    value, at = box.tolist()
    return (None, None) if math.isnan(value) else (value, int(at))


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


# where a run executes; train.amp also changes the rounding (bf16), which a resumed run may accept
_RESUMABLE_CHANGES = {"train.device", "train.amp"}


def _config_changes(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts, as ``key: old -> new``."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += _config_changes(old, new, f"{prefix}{key}.")
        elif old != new and f"{prefix}{key}" not in _RESUMABLE_CHANGES:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


def _restore(
    run: Path,
    method: FewShotMethod,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LambdaLR,
    device: torch.device,
    config: dict[str, Any] | None,
) -> tuple[int, float | None, int | None]:
    folder = read_pointer(run)["last"]
    state = load_state(folder / STATE)
    info = read_checkpoint_info(folder / WEIGHTS)
    if info.metrics.get("step") != state["step"]:
        raise CheckpointError(
            f"{folder}: its weights are of step {info.metrics.get('step')} but its training state of step "
            f"{state['step']} (a run directory of an older medfew, killed between two writes); start afresh "
            "(CLI: --restart)"
        )
    if info.method != method.name:
        raise CheckpointError(f"{run}: holds a {info.method!r} run, cannot resume it as {method.name!r}")
    changed = _config_changes(info.config, config or {})
    if changed:
        raise CheckpointError(
            f"{run}: holds a run with a different config ({'; '.join(changed[:5])}); resuming would mix two "
            "experiments: use another output directory or start afresh (CLI: --restart)"
        )
    loaded, _ = load_checkpoint(folder / WEIGHTS, map_location=str(device))
    method.load_state_dict(loaded.state_dict())
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"]), state["best_metric"], state["best_step"]
