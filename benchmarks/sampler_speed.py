"""Episodes per second of the sampler alone (decoded pools cached), at 28x28 and 84x84.

    python benchmarks/sampler_speed.py [--data-root DIR] [--episodes 200] [--sizes 28 84]

Prints one line per configuration; a figure, not a test (no thresholds).
"""

from __future__ import annotations

import argparse
import time
from functools import partial

from medfew.data.episodes.sampler import EpisodeSampler
from medfew.data.episodes.transforms import build_augmentation
from medfew.data.preprocessing import normalize_batch
from medfew.data.sources.pools import load_pools

DATASETS = ["organamnist", "bloodmnist", "pneumoniamnist"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 84])
    args = parser.parse_args()
    print(f"{'size':>5} {'augment':>9} {'load s':>7} {'episodes/s':>11} {'ms/episode':>11}   (5-way 5-shot 15-query)")
    for size in args.sizes:
        t0 = time.perf_counter()
        pools = load_pools(DATASETS, split="train", data_root=args.data_root, image_size=size, channels=3)
        load_s = time.perf_counter() - t0
        for augment in ("none", "standard"):
            sampler = EpisodeSampler(
                pools, ways=5, shots=5, queries=15, seed=0, too_few="skip", allow_fewer_ways=True,
                normalize=partial(normalize_batch, mode="zscore"),
                augment=None if augment == "none" else build_augmentation(augment, seed=0),
            )
            sampler.sample(0)  # warm-up
            t0 = time.perf_counter()
            for index in range(1, args.episodes + 1):
                sampler.sample(index)
            elapsed = time.perf_counter() - t0
            print(f"{size:>5} {augment:>9} {load_s:>7.2f} {args.episodes / elapsed:>11.1f} {1000 * elapsed / args.episodes:>11.2f}")


if __name__ == "__main__":
    main()
