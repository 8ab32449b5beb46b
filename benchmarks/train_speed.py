"""Meta-training episodes per second for each method (Conv4, 28x28x3, 5-way 5-shot 15-query).

    python benchmarks/train_speed.py [--steps 10] [--meta-batch 4] [--methods protonet maml ...]

Synthetic episodes of the real shape, so only the method is timed; prints one line per method.
A figure, not a test (no thresholds).
"""

from __future__ import annotations

import argparse
import time

import torch

from medfew.data.episode import Episode
from medfew.methods import build_method, list_methods
from medfew.models import build_backbone


def episode(ways: int, shots: int, queries: int, size: int, seed: int) -> Episode:
    g = torch.Generator().manual_seed(seed)
    return Episode(
        support_images=torch.randn(ways * shots, 3, size, size, generator=g),
        support_labels=torch.arange(ways).repeat_interleave(shots),
        query_images=torch.randn(ways * queries, 3, size, size, generator=g),
        query_labels=torch.arange(ways).repeat_interleave(queries),
        class_names=tuple(f"c{i}" for i in range(ways)),
        global_class_ids=torch.arange(ways),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--methods", nargs="+", default=list_methods())
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, Conv4 {args.size}x{args.size}x3, "
          f"5-way 5-shot 15-query, meta-batch {args.meta_batch}")
    print(f"{'method':<12} {'s/step':>8} {'episodes/s':>11}")
    for name in args.methods:
        backbone = build_backbone("conv4", in_channels=3, image_size=args.size)
        extra = {"num_classes": 5} if name == "baseline" else {}
        method = build_method(name, backbone, **extra).train()
        optimizer = torch.optim.Adam(method.parameters(), lr=1e-3)
        batches = [[episode(5, 5, 15, args.size, s * args.meta_batch + b) for b in range(args.meta_batch)]
                   for s in range(args.steps + 1)]
        times = []
        for step, batch in enumerate(batches):
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            method.training_step(batch)
            optimizer.step()
            if step:  # the first step is warm-up
                times.append(time.perf_counter() - t0)
        times.sort()
        median = times[len(times) // 2]
        print(f"{name:<12} {median:>8.3f} {args.meta_batch / median:>11.1f}", flush=True)


if __name__ == "__main__":
    main()
