"""``medfew suggest``: test-time settings for a new support set, from the checkpoint's past tasks.

    medfew suggest --checkpoint default --support DIR [--top 3] [--neighbours 20] [--json]
    medfew suggest build --checkpoint RUN [--episodes-per-shape 60] [--data-root DIR] [--out FILE]

``suggest`` reads only the support folder (one subfolder per class, at least 2 scans each), finds the
most similar tasks of the checkpoint's meta-dataset, ranks its configurations there and checks the
best few by leave-one-out on the support scans. ``suggest build`` creates the meta-dataset from val
episodes of the checkpoint's meta-train domains (see :mod:`medfew.suggest`).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from medfew.errors import ConfigError


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``suggest`` (and its ``build`` action) to the ``medfew`` parser."""
    p = commands.add_parser("suggest", help="suggest test-time settings for a support set from similar past tasks")
    p.add_argument("--checkpoint", default="default", help="'default', a run directory or a .safetensors file")
    p.add_argument("--support", help="class-per-folder directory of labelled support scans (2+ per class)")
    p.add_argument("--top", type=int, default=3, help="best-ranked configurations checked by leave-one-out")
    p.add_argument("--neighbours", type=int, default=20, help="nearest past tasks that vote")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_suggest)
    actions = p.add_subparsers(dest="suggest_action", metavar="{build}")
    b = actions.add_parser("build", help="build the checkpoint's meta-dataset from its val episodes")
    b.add_argument("--checkpoint", dest="build_checkpoint", required=True,
                   help="'default', a run directory or a .safetensors file")
    b.add_argument("--episodes-per-shape", type=int, default=60, help="val episodes per (ways, shots) shape")
    b.add_argument("--data-root", default=None, help="data folder (default: $MEDFEW_DATA_ROOT)")
    b.add_argument("--out", default=None, help="output file (default: beside the checkpoint, *.suggest.json)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_cmd_build)


def _cmd_suggest(args: argparse.Namespace) -> int:
    from medfew.suggest import suggest_for_folder

    if not args.support:
        raise ConfigError("medfew suggest needs --support DIR (or the action: medfew suggest build --checkpoint ...)")
    suggestion = suggest_for_folder(args.checkpoint, args.support, top=args.top, neighbours=args.neighbours)
    result = suggestion.to_dict()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"suggested settings: {result['description']}")
    pick = result["pick"]
    if pick is not None:
        low, high = pick["ci95_wilson"]
        print(f"  leave-one-out accuracy on the {pick['loo_total']} support scans: {pick['loo_correct']}/"
              f"{pick['loo_total']} = {100 * pick['loo_accuracy']:.1f}% (95% Wilson interval "
              f"{100 * low:.1f}-{100 * high:.1f}%)")
    print("  checked (best on the most similar past tasks first):")
    for rank, candidate in enumerate(result["candidates"], 1):
        print(f"    {rank}. {candidate['description']}: past tasks {100 * candidate['neighbour_accuracy']:.1f}%, "
              f"leave-one-out {candidate['loo_correct']}/{candidate['loo_total']}")
    print("  nearest past tasks: " + ", ".join(f"{s} x{n}" for s, n in result["neighbour_sources"].items()))
    if result["options"]:
        flags = " ".join(f"--method-option {k}={_flag(v)}" for k, v in sorted(result["options"].items()))
        print(f"  evaluate with: medfew evaluate --checkpoint {args.checkpoint} {flags} ...")
    return 0


def _flag(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _cmd_build(args: argparse.Namespace) -> int:
    from medfew.suggest import build_meta_dataset, describe_build

    meta, path = build_meta_dataset(args.build_checkpoint, data_root=args.data_root,
                                    episodes_per_shape=args.episodes_per_shape, out=args.out,
                                    progress=not args.quiet)
    print(json.dumps({"meta_dataset": str(path), **describe_build(meta)}, indent=2))
    return 0
