"""Merge the results.json of several ``benchmarks/results.py`` runs (e.g. run in parallel) and render the doc.

    python benchmarks/merge_results.py runs/bench_a/results.json runs/bench_b/results.json --out docs/results.json

Later inputs win where two runs hold the same training record or cell. ``docs/results.md`` was made from
``runs/bench_{a,b,c,d,e,f,g}/results.json`` in that order (a: protonet, matchingnet, baseline, reptile;
b: maml, fomaml, metasgd; c: protonet+cl2 and the raw-pixel baselines; d: protonet+strongaug; e:
protonet+mixdomains; f: the logistic head and ProtoNet's val cells; g: the other methods' val cells).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from results import render  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results.json")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "results.md")
    parser.add_argument("--episodes", type=int, default=600)
    args = parser.parse_args()
    merged: dict = {"training": {}, "cells": {}}
    for path in args.inputs:
        data = json.loads(path.read_text())
        merged["training"].update(data["training"])
        merged["cells"].update(data["cells"])
        merged["machine"] = data.get("machine", "")
    args.out.write_text(json.dumps(merged, indent=2))
    render(merged, args.doc, args.episodes)
    print(f"{len(merged['cells'])} cells, {len(merged['training'])} trained methods -> {args.doc}")


if __name__ == "__main__":
    main()
