"""The ``medfew`` command line: thin commands over the library (the only place that reads argv/YAML).

    medfew data list
    medfew data inspect PATH [--json]
    medfew data fetch NAME... [--size 28|64|128|224]
    medfew train --config FILE [--set section.key=value ...] [--out RUN_DIR]
    torchrun --nproc_per_node N -m medfew train ...      (data-parallel; rank 0 writes RUN_DIR)
    medfew evaluate --checkpoint RUN_DIR|FILE|default (--folder DIR | --manifest FILE | --dataset NAME) ... [--alpha 0.1]
    medfew diagnose --checkpoint default|PATH --support DIR --query FILE... [--report FILE.pdf|.json|.dcm] [--json] [--strict]

Every user error (bad file, unknown key, too few images) is printed as one line naming the file or
key, with exit status 2; there is never a traceback for bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medfew import __version__
from medfew.commands import register_all
from medfew.errors import ConfigError, MedfewError
from medfew.messages import short_repr


# ---------------------------------------------------------------------- data
def _cmd_data_list(args: argparse.Namespace) -> int:
    from medfew.data.sources import dataset_info, list_datasets

    rows = []
    for name in list_datasets():
        info = dataset_info(name)
        rows.append({"name": name, "modality": getattr(info, "modality", ""), "classes": len(info.class_names)})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['name']:<24} {row['classes']:>3} classes  {row['modality']}")
    return 0


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    from medfew.data.sources import inspect_path

    report = inspect_path(args.path, data_root=args.data_root)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_text())
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from medfew.data.sources import fetch_datasets, resolve_data_root

    root = resolve_data_root(args.data_root)
    for path in fetch_datasets(args.names, size=args.size, data_root=root, progress=not args.quiet):
        print(path)
    return 0


# ---------------------------------------------------------------------- train / evaluate
def _parse_overrides(pairs: Sequence[str], dotted: bool = True) -> dict[str, Any]:
    from medfew.safe_yaml import load_user_yaml

    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        flag = "--set" if dotted else "--method-option"
        if not sep:
            form = "section.key=value" if dotted else "key=value"
            raise ConfigError(f"{flag} {short_repr(pair)} must look like {form}")
        try:
            overrides[key.strip()] = load_user_yaml(value)
        except ConfigError as exc:
            raise ConfigError(f"{flag} {short_repr(key.strip())}: {exc}") from None
    return overrides


def read_config_file(path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """Read a YAML config, apply ``--set`` overrides and validate it (errors name the file and key)."""
    from medfew.config import apply_overrides, load_config
    from medfew.safe_yaml import load_user_yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such config file") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{path}: is a directory, not a YAML config file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable YAML file ({exc})") from exc
    try:
        raw = load_user_yaml(text)
        return load_config(apply_overrides({} if raw is None else raw, _parse_overrides(overrides)))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _cmd_train(args: argparse.Namespace) -> int:
    import yaml

    from medfew.experiment import run_training
    from medfew.training.distributed import context_from_env

    config = read_config_file(args.config, args.set or [])
    if args.device:
        from medfew.config import apply_overrides, load_config

        config = load_config(apply_overrides(config.to_dict(), {"train.device": args.device}))
    main = context_from_env().is_main  # under torchrun, rank 0 alone writes and prints
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; the run directory must be a folder (or not exist yet)")
    if main:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--out {out}: cannot create the run directory ({exc.strerror})") from None
        (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
    try:
        result = run_training(config, data_root=args.data_root, run_dir=out, resume=not args.restart,
                              progress=not args.quiet, channels_last=args.channels_last,
                              device_episodes=args.device_episodes)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # joined by run_training under torchrun
            dist.destroy_process_group()
    summary = {"run_dir": str(out), "steps": result.steps_done, "best_val_accuracy": result.best_metric,
               "best_step": result.best_step, "last_train": result.last_train}
    if main:
        print(json.dumps(summary, indent=2))
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from medfew.calibrate import calibrate_checkpoint

    if args.checkpoint == "default":
        raise ConfigError("the shipped default model is already calibrated; give a run directory or .safetensors file")
    block = calibrate_checkpoint(args.checkpoint, data_root=args.data_root, episodes=args.episodes,
                                 shots=args.shots, depths=args.finetune_depths, progress=not args.quiet)
    print(json.dumps(block, indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from medfew.experiment import EvalSource, run_evaluation

    if args.checkpoint is None and args.baseline is None:
        raise ConfigError("give --checkpoint RUN_DIR|FILE|default or --baseline NAME")
    source = EvalSource(folder=args.folder, manifest=args.manifest, dataset=args.dataset, split=args.split)
    summary = run_evaluation(
        checkpoint=args.checkpoint, baseline=args.baseline, source=source, data_root=args.data_root,
        ways=args.ways, shots=args.shots, queries=args.queries, episodes=args.episodes, seed=args.seed,
        allow_fewer_queries=args.allow_fewer_queries, image_size=args.image_size, channels=args.channels,
        device=args.device or "auto", progress=not args.quiet,
        method_options=_parse_overrides(args.method_option or [], dotted=False),
        conformal_alpha=args.alpha, strict=args.strict,
    )
    print(json.dumps(summary.to_dict(), indent=2) if args.json else summary.format_text())
    return 0


def alpha_level(text: str) -> float | None:
    """``--alpha`` value: a level in ``(0, 1)``; ``0`` or ``none`` turns prediction sets off."""
    if text.strip().lower() in ("none", "off", "0", "0.0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), 0 or 'none', got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1) (e.g. 0.1 for 90% sets), 0 or 'none', got {text}")
    return value


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="medfew", description="Few-shot diagnosis of rare diseases in medical images.")
    parser.add_argument("--version", action="version", version=f"medfew {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    def data_root(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-root", default=None, help="data folder (default: $MEDFEW_DATA_ROOT)")

    data = commands.add_parser("data", help="list, inspect and fetch datasets")
    data_cmds = data.add_subparsers(dest="data_command", required=True)
    p = data_cmds.add_parser("list", help="datasets in the catalogue")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_data_list)
    p = data_cmds.add_parser("inspect", help="classes, counts, sizes, modalities and unreadable files")
    p.add_argument("path", help="class folder, CSV manifest, .npz, DICOM folder or catalogue name")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    data_root(p)
    p.set_defaults(func=_cmd_data_inspect)
    p = data_cmds.add_parser("fetch", help="download MedMNIST(+) subsets into the data root")
    p.add_argument("names", nargs="+")
    p.add_argument("--size", type=int, default=28, choices=[28, 64, 128, 224])
    p.add_argument("--quiet", action="store_true")
    data_root(p)
    p.set_defaults(func=_cmd_data_fetch)

    p = commands.add_parser("train", help="meta-train a method from a YAML config")
    p.add_argument("--config", required=True)
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    p.add_argument("--out", default=None, help="run directory (default: runs/CONFIG_NAME)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--restart", action="store_true", help="start afresh instead of resuming the run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--channels-last", action="store_true", help="channels-last weights and images (GPU)")
    p.add_argument("--device-episodes", choices=["auto", "on", "off"], default="auto",
                   help="build training episodes on the GPU (auto: when the pools fit in a quarter of its free memory)")
    data_root(p)
    p.set_defaults(func=_cmd_train)

    p = commands.add_parser(
        "calibrate", help="choose test-time fine-tuning and fit the temperature on the meta-train domains' val episodes"
    )
    p.add_argument("--checkpoint", required=True, help="run directory or .safetensors file (its sidecar is updated)")
    p.add_argument("--episodes", type=int, default=200, help="val episodes (every candidate sees the same ones)")
    p.add_argument("--shots", type=int, default=None, help="support images per class (default: the training episodes')")
    p.add_argument("--finetune-depths", type=int, nargs="+", default=[0], metavar="DEPTH",
                   help="backbone blocks fine-tuned with the head to try (0: head only)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    data_root(p)
    p.set_defaults(func=_cmd_calibrate)

    p = commands.add_parser("evaluate", help="accuracy with 95%% CI over fixed-seed episodes")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--checkpoint", help="run directory, .safetensors file, or 'default'")
    who.add_argument("--baseline", help="raw-pixel baseline: nearest_centroid or logistic_regression")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--folder", help="class-per-folder directory of images or DICOMs")
    where.add_argument("--manifest", help="CSV manifest (path,label[,group,split])")
    where.add_argument("--dataset", help="catalogue dataset name")
    p.add_argument("--split", default=None, help="split of --dataset/--manifest (e.g. test)")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method-option", action="append", metavar="KEY=VALUE",
                   help="test-time method hyperparameter, e.g. feature_transform=cl2 (repeatable)")
    p.add_argument("--allow-fewer-queries", action="store_true", help="small classes get fewer queries instead of an error")
    p.add_argument("--image-size", type=int, default=None, help="baselines only (checkpoints carry their own)")
    p.add_argument("--channels", type=int, default=None, choices=[1, 3], help="baselines only")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first unreadable image (default: skip it, name it, and count it in the summary)")
    p.add_argument("--alpha", type=alpha_level, default=0.1, metavar="ALPHA",
                   help="level of the leave-one-out prediction sets (0.1: 90%% sets; one extra adapt per "
                        "support image); 0 or 'none' turns them off")
    data_root(p)
    p.set_defaults(func=_cmd_evaluate)

    register_all(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medfew`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except MedfewError as exc:
        print(f"medfew: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medfew: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `medfew data inspect X | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
