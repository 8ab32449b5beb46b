"""Data-parallel meta-training across processes (``torchrun``), by an all-reduce of the meta-gradients.

Every rank holds the whole model. For outer step ``s`` with meta-batch ``B``, rank ``r`` of ``W``
samples its contiguous share of episodes ``s * B + b`` (:func:`shard`), computes the mean meta-gradient
over them (``method.training_step``), weights it by its share of ``B`` and all-reduces the sum. The
result is the mean over the whole meta-batch: the single-process gradient up to float rounding, for
every method (MAML family, Reptile's direction, the metric methods), with no DDP wrapper around the
functional inner loops. Weights are broadcast from rank 0 at the start, so every rank steps the same
optimiser on the same gradient and stays identical.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``);
:func:`init_distributed` reads them, choosing NCCL on CUDA and Gloo on CPU. Without them, or with
``WORLD_SIZE=1``, everything here is a no-op.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from medfew.errors import ConfigError

logger = logging.getLogger(__name__)

#: How long a rank waits at a collective, e.g. while rank 0 validates or writes a checkpoint.
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: Global rank in ``[0, world_size)``.
        world_size: Number of processes (1: not distributed).
        local_rank: Rank on this node (selects the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files, logs and progress."""
        return self.rank == 0


SINGLE = DistContext()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name} must be an integer, got {value!r}") from exc


def context_from_env() -> DistContext:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (as torchrun sets them); defaults: one process.

    Raises:
        ConfigError: Values that are not integers or a rank outside ``[0, WORLD_SIZE)``.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return DistContext(rank=rank, world_size=world, local_rank=local)


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun describes (once per process) and return this rank's context.

    Args:
        device: The resolved training device; CUDA selects NCCL and ``cuda:LOCAL_RANK``, CPU Gloo.

    Returns:
        :data:`SINGLE` when not launched by torchrun (or ``WORLD_SIZE=1``).
    """
    ctx = context_from_env()
    if not ctx.enabled:
        return SINGLE
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size, timeout=TIMEOUT)
        logger.info("rank %d of %d joined the %s process group", ctx.rank, ctx.world_size, backend)
    elif dist.get_world_size() != ctx.world_size or dist.get_rank() != ctx.rank:
        raise ConfigError(
            f"the process group (rank {dist.get_rank()} of {dist.get_world_size()}) disagrees with the "
            f"environment (RANK={ctx.rank}, WORLD_SIZE={ctx.world_size})"
        )
    return ctx


def rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """``cuda:LOCAL_RANK`` for a distributed CUDA run, else ``device`` unchanged."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def shard(meta_batch: int, ctx: DistContext) -> range:
    """Indices ``b`` of the meta-batch this rank draws (contiguous, sizes differing by at most one).

    Raises:
        ConfigError: Fewer episodes per meta-batch than processes (some rank would have none).
    """
    if meta_batch < ctx.world_size:
        raise ConfigError(
            f"train.meta_batch={meta_batch} is smaller than the {ctx.world_size} processes: every rank needs "
            "at least one episode per step (raise meta_batch or start fewer processes)"
        )
    return range(ctx.rank * meta_batch // ctx.world_size, (ctx.rank + 1) * meta_batch // ctx.world_size)


def broadcast_module(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers to every rank (in place)."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def all_reduce_gradients(params: list[nn.Parameter], weight: float, ctx: DistContext) -> None:
    """Replace each ``.grad`` by ``sum over ranks of weight_r * grad_r`` (one flat all-reduce).

    ``weight`` is this rank's share of the meta-batch, so the sum is the meta-batch mean. A parameter
    without a gradient on every rank keeps ``None`` (as in a single process); one with a gradient on
    some rank only is treated as zero elsewhere.
    """
    if not ctx.enabled or not params:
        return
    device = params[0].device
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(has)
    live = [p for p, h in zip(params, has.tolist()) if h > 0]
    if not live:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) * weight for p in live])
    dist.all_reduce(flat)
    offset = 0
    for p in live:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def reduce_figures(values: list[torch.Tensor], weight: float, ctx: DistContext) -> list[torch.Tensor]:
    """Meta-batch means of per-rank scalar figures (loss, accuracy) for logging: ``sum weight_r * v_r``."""
    if not ctx.enabled:
        return values
    stacked = torch.stack([v.detach().float().reshape(()) for v in values]) * weight
    dist.all_reduce(stacked)
    return list(stacked.unbind())


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ctx.enabled:
        dist.barrier()
