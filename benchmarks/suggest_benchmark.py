"""Suggested test-time settings against the checkpoint's own, on the unseen test domains.

    MEDFEW_DATA_ROOT=/work/shared/data nice -n 10 python benchmarks/suggest_benchmark.py --episodes 150

The episodes are exactly those of ``benchmarks/results.py`` (``run_evaluation``: the same pools,
ways, queries, ``seed=0``, indices ``0..episodes-1``, so the first ``--episodes`` of its 600). Per episode:

* ``default``: the checkpoint's own settings (``{}``);
* ``suggested``: ``medfew.suggest.suggest_settings`` on the support set alone (nearest tasks of the
  checkpoint's meta-dataset, built on the meta-train domains' val splits only; then the leave-one-out
  check of the top 3, which at 1-shot is impossible, so 1-shot takes the nearest tasks' best unchecked);
* ``knn_top1``: the nearest tasks' best configuration without the leave-one-out check (ablation);
* ``oracle``: the best configuration for the episode's *query* labels (an upper bound, reference only).

Nothing here is tuned on these domains: the meta-dataset, the grid, ``top`` and ``neighbours`` are
fixed before this runs. Accuracies are means over episodes with the 95% CI half-width
(``1.96 * sd / sqrt(n)``); ``suggested - default`` is the paired difference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import DOMAINS, QUERIES

from medfew.data.episodes.sampler import EpisodeSampler
from medfew.data.preprocessing import normalize_batch
from medfew.data.sources.pools import load_pool
from medfew.evaluation import confidence_interval_95
from medfew.suggest import (
    describe,
    load_for_checkpoint,
    suggest_settings,
)
from medfew.suggest.build import fixed_feature_methods, score_configuration
from medfew.training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
ARMS = ("default", "suggested", "knn_top1", "oracle")


def run_cell(checkpoint: str, dataset: str, split: str | None, ways: int, shots: int, fewer: bool,
             episodes: int, data_root: str | None) -> dict[str, Any]:
    """Every arm on the first ``episodes`` test episodes of one (domain, shots) cell."""
    base, info = load_checkpoint(checkpoint)
    base.eval()
    meta = load_for_checkpoint(checkpoint, info.weights_sha256)
    prep = info.preprocessing
    pool = load_pool(dataset, split=split, data_root=data_root, image_size=prep.image_size,
                     channels=prep.channels, progress=False)
    normalize = partial(normalize_batch, mode=prep.normalize)
    grid = meta.configurations
    methods, encoded_base, encoded = fixed_feature_methods(base, grid, [pool], normalize, info.weights_sha256, False)
    if encoded is None or encoded_base is None or not all(m.reads_fixed_features for m in methods):
        raise SystemExit("this benchmark scores fixed-feature configurations only (embedding methods, depth 0)")
    spec: dict[str, Any] = {"ways": ways, "shots": shots, "queries": QUERIES, "seed": 0,
                            "too_few": "limit_queries" if fewer else "error"}
    images, features = EpisodeSampler([pool], normalize=None, **spec), EpisodeSampler(encoded, normalize=None, **spec)
    scores: dict[str, list[float]] = {arm: [] for arm in ARMS}
    picks: Counter[str] = Counter()
    t0 = time.perf_counter()
    for index in range(episodes):
        episode, task = images.sample(index), features.sample(index)
        accuracy = [score_configuration(m, episode, task, normalize) for m in methods]
        suggestion = suggest_settings(encoded_base, meta, images=episode.support_images,
                                      model_inputs=task.support_images, labels=task.support_labels)
        chosen = grid.index(suggestion.options)
        scores["default"].append(accuracy[grid.index({})])
        scores["suggested"].append(accuracy[chosen])
        scores["knn_top1"].append(accuracy[grid.index(suggestion.ranked[0].options)])
        scores["oracle"].append(max(accuracy))
        picks[describe(suggestion.options)] += 1
    cell: dict[str, Any] = {"dataset": dataset, "ways": ways, "shots": shots, "episodes": episodes,
                            "wall_s": round(time.perf_counter() - t0, 1)}
    for arm, values in scores.items():
        cell[arm] = {"mean": float(np.mean(values)), "ci95": confidence_interval_95(values)}
    diff = np.array(scores["suggested"]) - np.array(scores["default"])
    cell["suggested_minus_default"] = {"mean": float(diff.mean()), "ci95": confidence_interval_95(diff)}
    cell["changed_share"] = 1.0 - picks[describe({})] / episodes
    cell["picks"] = dict(picks.most_common(4))
    return cell


def render(results: dict[str, Any], path: Path) -> None:
    """Write the markdown page of the benchmark."""
    def pct(stat: dict[str, float]) -> str:
        return f"{100 * stat['mean']:.1f} ± {100 * stat['ci95']:.1f}"

    meta = results["meta_dataset"]
    lines = [
        "# Hyperparameter suggestion on the unseen test domains",
        "",
        (f"Checkpoint: `{results['checkpoint']}` (weights `{results['weights_sha256'][:12]}`). Meta-dataset: "
         f"{meta['tasks']} val episodes of the meta-train domains ({', '.join(meta['datasets'])}), "
         f"{meta['configurations']} configurations; nothing was tuned on the test domains."),
        (f"Episodes: the first {results['episodes']} fixed-seed test episodes of `benchmarks/results.py` "
         f"(seed 0, {QUERIES} queries per class) per cell; the CPU was shared, so fewer than the table's 600."),
        "Mean query accuracy (%) ± 95% CI half-width; the difference is paired per episode.",
        "",
        ("| domain | shots | default | suggested | suggested − default | kNN top-1 (no LOO) "
         "| oracle (query labels) | settings changed |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for cell in results["cells"]:
        diff = cell["suggested_minus_default"]
        lines.append(f"| {cell['dataset']} | {cell['shots']} | {pct(cell['default'])} | {pct(cell['suggested'])} | "
                     f"{100 * diff['mean']:+.1f} ± {100 * diff['ci95']:.1f} | {pct(cell['knn_top1'])} | "
                     f"{pct(cell['oracle'])} | {100 * cell['changed_share']:.0f}% |")
    lines += ["", "Most frequent picks per cell:", ""]
    for cell in results["cells"]:
        picks = "; ".join(f"{name} ({n})" for name, n in cell["picks"].items())
        lines.append(f"- {cell['dataset']} {cell['shots']}-shot: {picks}")
    lines += ["", ("- *default*: the checkpoint's own settings. *suggested*: `medfew suggest` (20 nearest val "
                   "tasks, top 3 checked by leave-one-out on the support set; at 1-shot no leave-one-out is "
                   "possible, so it is the nearest tasks' best). *oracle* picks with the query labels: an upper "
                   "bound, not a method. *settings changed*: episodes where the suggestion is not the default."),
              f"- Command: `{results['command']}`", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--episodes", type=int, default=150)
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 1])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--out", default=str(REPO / "docs" / "suggest"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster than several on a shared machine
    _, info = load_checkpoint(args.checkpoint)
    meta = load_for_checkpoint(args.checkpoint, info.weights_sha256)
    results: dict[str, Any] = {
        "checkpoint": args.checkpoint, "weights_sha256": info.weights_sha256, "episodes": args.episodes,
        "meta_dataset": {"tasks": meta.n_tasks, "configurations": len(meta.configurations),
                         "datasets": meta.provenance.get("built_from", {}).get("datasets", [])},
        "command": f"python benchmarks/suggest_benchmark.py --checkpoint {args.checkpoint} "
                   f"--episodes {args.episodes} --shots {' '.join(map(str, args.shots))}",
        "cells": [],
    }
    for shots in args.shots:
        for dataset, split, ways, fewer in DOMAINS:
            cell = run_cell(args.checkpoint, dataset, split, ways, shots, fewer, args.episodes, args.data_root)
            results["cells"].append(cell)
            print(json.dumps({k: cell[k] for k in ("dataset", "shots", "default", "suggested",
                                                   "suggested_minus_default", "wall_s")}), flush=True)
            out = Path(args.out)
            out.with_suffix(".json").write_text(json.dumps(results, indent=2))
            render(results, out.with_suffix(".md"))


if __name__ == "__main__":
    main()
