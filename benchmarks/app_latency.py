"""Adapt-plus-diagnose latency of a clinician session, 5-way 5-shot, on this machine's CPU.

    python benchmarks/app_latency.py [--repeats 5] [--methods default protonet matchingnet maml ...]

``default`` is the shipped default model; the other names are freshly built Conv4 methods (latency
does not depend on the weights). Support and query scans are real RetinaMNIST test images (28x28x3)
from the data root, given to ``DiagnosisSession`` as arrays. Prints medians over ``--repeats`` fresh
sessions of: ``adapt``; ``diagnose`` of one query with its Grad-CAM map; their sum (the target is under
one second for ProtoNet and MatchingNet); and ``leave-one-out`` (the app runs it after Adapt when every
class has two or more scans). A figure, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from medfew.data.preprocessing import Preprocessing
from medfew.data.readers import read_medmnist
from medfew.data.sources.catalog import resolve_data_root
from medfew.diagnosis import DiagnosisSession
from medfew.methods import build_method
from medfew.models import build_backbone

PREPROCESSING = Preprocessing(image_size=28, channels=3, normalize="zscore")
EXTRA = {"baseline": {"num_classes": 30}}


def scans(data_root: Path, ways: int, shots: int) -> tuple[list[list[np.ndarray]], list[np.ndarray]]:
    """``shots`` support images per class and one query per class, uint8 ``(3, 28, 28)``."""
    images, labels = read_medmnist(data_root / "medmnist" / "retinamnist.npz", "test")
    support, queries = [], []
    for c in range(ways):
        picked = images[labels == c][: shots + 1]
        as_chw = [np.ascontiguousarray(np.moveaxis(image, -1, 0)) for image in picked]
        support.append(as_chw[:shots])
        queries.append(as_chw[shots])
    return support, queries


def session_for(name: str) -> DiagnosisSession:
    if name == "default":
        return DiagnosisSession("default")
    backbone = build_backbone("conv4", in_channels=3, image_size=28)
    return DiagnosisSession.from_method(build_method(name, backbone, **EXTRA.get(name, {})), PREPROCESSING)


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+",
                        default=["default", "protonet", "matchingnet", "baseline", "maml", "fomaml", "metasgd", "reptile"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    support, queries = scans(resolve_data_root(args.data_root), args.ways, args.shots)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.ways}-way {args.shots}-shot, "
          f"28x28x3, medians of {args.repeats} fresh sessions (seconds)")
    print(f"{'model':<12} {'adapt':>8} {'diagnose':>9} {'sum':>8} {'leave-one-out':>14}")
    for name in args.methods:
        rows = []
        for repeat in range(args.repeats + 1):  # the first is a warm-up
            session = session_for(name)
            for c, images in enumerate(support):
                for image in images:
                    session.add_support(image, f"class {c}")
            adapt = timed(session.adapt)
            query = queries[repeat % len(queries)]
            diagnose = timed(partial(session.diagnose, query, saliency=True))
            loo = timed(session.leave_one_out)
            if repeat:
                rows.append((adapt, diagnose, adapt + diagnose, loo))
        med = [statistics.median(column) for column in zip(*rows)]
        print(f"{name:<12} {med[0]:>8.3f} {med[1]:>9.3f} {med[2]:>8.3f} {med[3]:>14.3f}", flush=True)


if __name__ == "__main__":
    main()
