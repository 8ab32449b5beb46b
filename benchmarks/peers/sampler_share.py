"""The sampler's share of a meta-training step, with medfew's real EpisodeSampler on the MedMNIST pools.

    python -m benchmarks.peers.sampler_share [--data-root DIR] [--steps 8] [--threads 2]

The issue's target: the sampler never more than 10% of a training step. The training loop
(``medfew.training.loop.fit``) draws the meta-batch synchronously before each step, so this times exactly
that: ``sampler.sample(i)`` for the ``meta_batch`` episodes of a step (decoded pools cached, as in
training; the configs' ``normalize: zscore`` and ``augment: standard``), then ``training_step`` and the
optimiser step on them. Reported per method: median sampler seconds per step, median step seconds, the
share ``sampler / (sampler + step)`` and the overhead ``sampler / step``, in percent (median and worst step).
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from typing import Any

import torch

from benchmarks.peers.stats import median

DATASETS = ("organamnist", "bloodmnist", "pneumoniamnist")  # the configs' data.train
METHODS: dict[str, dict[str, Any]] = {  # method -> hyperparameters (configs/maml.yaml uses 3 inner steps)
    "protonet": {},
    "maml": {"inner_steps": 5, "inner_lr": 0.01},
}


def measure_sampler_share(data_root: str | None, *, steps: int = 8, warmup: int = 1, meta_batch: int = 4,
                          augment: str = "standard", methods: dict[str, dict[str, Any]] | None = None
                          ) -> dict[str, Any]:
    """Time the sampler and the training step of each method, step by step.

    Args:
        data_root: Folder holding ``medmnist/*.npz`` (``None``: ``$MEDFEW_DATA_ROOT``).
        steps: Timed steps per method (after ``warmup`` untimed ones).
        warmup: Untimed steps first.
        meta_batch: Episodes per step (the configs' ``train.meta_batch``).
        augment: Augmentation preset of the sampler (``"standard"`` as in the configs, or ``"none"``).
        methods: Method name -> hyperparameters (default :data:`METHODS`).

    Returns:
        ``{"setup": ..., "methods": {name: {"sampler_s", "step_s", "share_percent", ...}}}``.
    """
    from medfew.data.episodes.sampler import EpisodeSampler
    from medfew.data.episodes.transforms import build_augmentation
    from medfew.data.preprocessing import normalize_batch
    from medfew.data.sources.pools import load_pools
    from medfew.methods import build_method
    from medfew.models import build_backbone

    pools = load_pools(list(DATASETS), split="train", data_root=data_root, image_size=28, channels=3,
                       progress=False)
    sampler = EpisodeSampler(
        pools, ways=5, shots=5, queries=15, seed=0, too_few="skip", allow_fewer_ways=True,
        normalize=partial(normalize_batch, mode="zscore"),
        augment=None if augment == "none" else build_augmentation(augment, seed=0),
    )
    out: dict[str, Any] = {"setup": {"datasets": list(DATASETS), "split": "train", "ways": 5, "shots": 5,
                                     "queries": 15, "meta_batch": meta_batch, "augment": augment,
                                     "normalize": "zscore", "steps": steps, "warmup": warmup},
                           "methods": {}}
    for name, hyper in (methods or METHODS).items():
        backbone = build_backbone("conv4", in_channels=3, image_size=28, hidden=64, norm="group")
        method = build_method(name, backbone, **hyper).train()
        optimizer = torch.optim.Adam(method.parameters(), lr=1e-3)
        sample_s, step_s = [], []
        for step in range(warmup + steps):
            t0 = time.perf_counter()
            episodes = [sampler.sample(step * meta_batch + b) for b in range(meta_batch)]
            t1 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            method.training_step(episodes)
            optimizer.step()
            t2 = time.perf_counter()
            if step >= warmup:
                sample_s.append(t1 - t0)
                step_s.append(t2 - t1)
        shares = [100 * s / (s + t) for s, t in zip(sample_s, step_s, strict=True)]
        overheads = [100 * s / t for s, t in zip(sample_s, step_s, strict=True)]
        out["methods"][name] = {
            "hyperparameters": method.hyperparameters(),
            "sampler_s": round(median(sample_s), 5),
            "step_s": round(median(step_s), 5),
            "share_percent": round(median(shares), 2),
            "worst_share_percent": round(max(shares), 2),
            "sampler_over_step_percent": round(median(overheads), 2),
            "worst_sampler_over_step_percent": round(max(overheads), 2),
        }
    return out


def share_lines(result: dict[str, Any]) -> list[str]:
    """Markdown table of a :func:`measure_sampler_share` result."""
    lines = [("| method | sampler s per step | training step s | sampler / (sampler + step): median, worst "
             "| sampler / step: median, worst |"),
             "|---|---|---|---|---|"]
    for name, m in result["methods"].items():
        lines.append(f"| {name} | {m['sampler_s']:.4f} | {m['step_s']:.3f} | {m['share_percent']:.1f}%, "
                     f"{m['worst_share_percent']:.1f}% | {m['sampler_over_step_percent']:.1f}%, "
                     f"{m['worst_sampler_over_step_percent']:.1f}% |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--augment", default="standard", choices=["standard", "none"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = measure_sampler_share(args.data_root, steps=args.steps, augment=args.augment)
    print("\n".join(share_lines(result)))


if __name__ == "__main__":
    main()
