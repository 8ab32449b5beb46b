"""The benchmark figure: seconds per meta-iteration, peer beside medfew, the ratio peer / medfew beside each pair."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.peers.cases import Case


def plot_results(results: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Write a PNG with one horizontal bar pair per case (gradient-based left, metric right).

    Args:
        results: Rows of :func:`benchmarks.peers.stats.case_result`.
        path: PNG file to write.
        title: Figure title (machine, threads).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        ("MAML family, meta-batch 4 (s / meta-iteration)", [r for r in results if r["case"]["inner_steps"]]),
        ("metric methods (s / training episode)", [r for r in results if not r["case"]["inner_steps"]]),
    ]
    groups = [(name, rows) for name, rows in groups if rows]
    heights = [max(2.0, 0.55 * len(rows) + 1.2) for _, rows in groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (name, rows) in zip(axes[:, 0], groups, strict=True):
        labels = [f"{Case(**r['case']).pair}\n{Case(**r['case']).setting}" for r in rows]
        ys = range(len(rows))
        peer = [r["peer"]["median_s"] for r in rows]
        ours = [r["medfew"]["median_s"] for r in rows]
        ax.barh([y - 0.2 for y in ys], peer, height=0.38, label="peer", color="#b0b0b0")  # above: y is inverted
        ax.barh([y + 0.2 for y in ys], ours, height=0.38, label="medfew", color="#2a7ab0")
        for y, r, p, m in zip(ys, rows, peer, ours, strict=True):
            ax.text(max(p, m), y, f"  {r['time_ratio']:.2f}x", va="center", fontsize=8)
        ax.set_yticks(list(ys), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("seconds (median)")
        ax.set_xlim(0, max(peer + ours) * 1.25)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
