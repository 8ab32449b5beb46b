"""Choose the out-of-distribution factor of ``DiagnosisSession`` on the meta-train domains' val splits.

    python benchmarks/ood_calibration.py [--checkpoint default] [--episodes 100]

For each meta-train domain (OrganAMNIST, BloodMNIST, PneumoniaMNIST; val split only — never a test
domain) it draws fixed-seed 5-shot episodes (up to 5 ways), adapts the model, and measures each query's
distance to the nearest support class mean divided by the support reference radius (the rule in
:mod:`medfew.diagnosis.uncertainty`). *In-distribution* queries come from the episode's own classes;
*out-of-distribution* queries are val images of the two other domains. For a range of factors it prints
the share of in-distribution queries flagged (false alarms) and of other-domain queries flagged
(detections), and the smallest factor whose false-alarm rate is at most ``--max-false-alarms``.
"""

from __future__ import annotations

import argparse
from functools import partial

import numpy as np
import torch

from medfew.data.episodes.sampler import EpisodeSampler
from medfew.data.preprocessing import normalize_batch
from medfew.data.sources.pools import load_pools
from medfew.diagnosis import DistanceReference
from medfew.training.checkpoint import load_checkpoint

DOMAINS = ["organamnist", "bloodmnist", "pneumoniamnist"]
FACTORS = [1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per domain")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--foreign", type=int, default=50, help="other-domain queries per episode")
    parser.add_argument("--max-false-alarms", type=float, default=0.05)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    method, info = load_checkpoint(args.checkpoint)
    method.eval()
    prep = info.preprocessing
    normalize = partial(normalize_batch, mode=prep.normalize)
    pools = load_pools(DOMAINS, split="val", data_root=args.data_root, image_size=prep.image_size,
                       channels=prep.channels)
    rng = np.random.default_rng(0)
    inside, outside = [], []
    for d, pool in enumerate(pools):
        ways = min(5, len(pool.class_names))
        sampler = EpisodeSampler([pool], ways=ways, shots=args.shots, queries=args.queries, seed=d,
                                 too_few="limit_queries", normalize=normalize)
        others = torch.cat([p.images for j, p in enumerate(pools) if j != d])
        for episode in sampler.episodes(args.episodes):
            pick = torch.from_numpy(rng.choice(len(others), args.foreign, replace=False))
            foreign = others[pick]
            foreign = normalize(foreign.float() / 255.0 if foreign.dtype == torch.uint8 else foreign)
            with torch.no_grad():
                adapted = method.adapt(episode.support_images, episode.support_labels)
                reference = DistanceReference.fit(adapted.embed(episode.support_images), episode.support_labels,
                                                  ways, factor=1.0)
                inside.append(reference.distance(adapted.embed(episode.query_images)) / reference.radius)
                outside.append(reference.distance(adapted.embed(foreign)) / reference.radius)
    inside_all, outside_all = torch.cat(inside), torch.cat(outside)
    print(f"{info.name}: {len(inside_all)} in-distribution and {len(outside_all)} other-domain queries "
          f"({args.episodes} episodes x {len(DOMAINS)} val domains, {args.shots}-shot)")
    print(f"{'factor':>7} {'false alarms':>13} {'detections':>11}")
    chosen = None
    for factor in FACTORS:
        fa, det = float((inside_all > factor).float().mean()), float((outside_all > factor).float().mean())
        print(f"{factor:>7.2f} {100 * fa:>12.1f}% {100 * det:>10.1f}%")
        if chosen is None and fa <= args.max_false_alarms:
            chosen = factor
    print(f"smallest factor with at most {100 * args.max_false_alarms:.0f}% false alarms: {chosen}")


if __name__ == "__main__":
    main()
