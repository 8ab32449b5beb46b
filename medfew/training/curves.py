"""The learning-curve figure of a run, drawn from its ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """Split a ``metrics.jsonl`` into training records and validation records."""
    train, val = [], []
    if not path.is_file():
        return train, val
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            (val if "val" in record else train).append(record)
    return train, val


def plot_learning_curve(metrics_path: Path, out_path: Path) -> Path | None:
    """Plot training loss/accuracy and validation accuracy (with its 95% CI) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = read_metrics(metrics_path)
    if not train and not val:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    if train:
        steps = [r["step"] for r in train]
        ax_loss.plot(steps, [r["loss"] for r in train], lw=1)
        ax_acc.plot(steps, [r["accuracy"] for r in train], lw=1, label="train (query accuracy)")
    if val:
        steps = [r["step"] for r in val]
        means = [r["val"]["accuracy_mean"] for r in val]
        cis = [r["val"].get("accuracy_ci95", 0.0) for r in val]
        ax_acc.errorbar(steps, means, yerr=cis, marker="o", capsize=3, label="validation (95% CI)")
    ax_loss.set(xlabel="outer step", ylabel="loss", title="meta-training loss")
    ax_acc.set(xlabel="outer step", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    ax_acc.legend(loc="lower right")
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path
