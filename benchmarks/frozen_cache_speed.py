"""Meta-training a pretrained EfficientNet-Lite with and without the frozen-prefix cache.

    python benchmarks/frozen_cache_speed.py [--size 64] [--stages 5] [--freeze 3] [--steps 5]
                                           [--meta-batch 4] [--images 2000]

Prints the time to build the cache (the frozen stem and stages run once over ``--images`` synthetic
images), and the seconds per ProtoNet meta-training step (5-way 5-shot 15-query episodes) when the
frozen part is recomputed for every episode and when episodes are drawn from the cached maps. A
figure, not a test (no thresholds).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medfew.data.episodes.pool import ImagePool
from medfew.data.episodes.sampler import EpisodeSampler
from medfew.data.sources.encoded_pool import encoded_pool
from medfew.methods import build_method
from medfew.models import build_backbone


def synthetic_pool(n: int, size: int) -> ImagePool:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 10
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return ImagePool(images=images, labels=labels, class_names=tuple(f"c{i}" for i in range(10)), name="synthetic")


def step_times(method: torch.nn.Module, sampler: EpisodeSampler, steps: int, meta_batch: int) -> list[float]:
    optimizer = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for step in range(steps + 1):  # the first step warms up and is not counted
        batch = [sampler.sample(step * meta_batch + b) for b in range(meta_batch)]
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        method.training_step(batch)
        optimizer.step()
        if step:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--stages", type=int, default=5)
    parser.add_argument("--freeze", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = build_backbone("efficientnet_lite0", image_size=args.size, stages=args.stages, freeze=args.freeze)
    method = build_method("protonet", backbone, feature_transform="cl2", learn_scale=True).train()
    pool = synthetic_pool(args.images, args.size)
    episode = dict(ways=5, shots=5, queries=15, seed=0)

    start = time.perf_counter()
    cached = encoded_pool(pool, encode=backbone.prefix, signature="benchmark", cache=False)
    build_s = time.perf_counter() - start

    backbone.reads_prefix = False
    recompute = step_times(method, EpisodeSampler([pool], **episode), args.steps, args.meta_batch)
    backbone.reads_prefix = True
    from_cache = step_times(method, EpisodeSampler([cached], **episode), args.steps, args.meta_batch)
    backbone.reads_prefix = False

    per_image = cached.images[0].numel() * 4
    print(f"EfficientNet-Lite0 stages={args.stages} freeze={args.freeze} at {args.size}x{args.size}, "
          f"meta-batch {args.meta_batch} of 5-way 5-shot 15-query, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"cache build: {build_s:.1f} s for {args.images} images ({1000 * build_s / args.images:.2f} ms/image, "
          f"{per_image / 1024:.1f} KiB/image cached)")
    print(f"step, frozen part recomputed: {statistics.median(recompute):.3f} s (median of {len(recompute)})")
    print(f"step, from the cache:         {statistics.median(from_cache):.3f} s (median of {len(from_cache)})")
    print(f"speed-up: {statistics.median(recompute) / statistics.median(from_cache):.1f}x")


if __name__ == "__main__":
    main()
