"""Meta-training speed per method (Conv4, 28x28x3, 5-way 5-shot 15-query), and vmap vs per-task loop.

    python benchmarks/train_speed.py [--steps 10] [--meta-batch 4] [--methods protonet maml ...]
                                     [--device cpu|cuda] [--channels-last] [--compile] [--bf16]

Synthetic episodes of the real shape, so only the method is timed. Prints one line per method; for
the gradient-based methods it times the vectorised path (``vectorize=True``; the default ``"auto"``
picks it on CUDA only) and the forced per-task loop (``vectorize=False``) alternately in one run, so
their ratio holds on a noisy machine; with ``--channels-last`` only the loop (the vectorised path falls
back to it for that layout). A figure, not a test (no thresholds).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from medfew.data.episodes.episode import Episode
from medfew.methods import build_method, list_methods
from medfew.models import build_backbone
from medfew.training.device import move_episode

VECTORISABLE = ("maml", "fomaml", "metasgd", "reptile")


def episode(ways: int, shots: int, queries: int, size: int, seed: int) -> Episode:
    g = torch.Generator().manual_seed(seed)
    return Episode(
        support_images=torch.randn(ways * shots, 3, size, size, generator=g),
        support_labels=torch.arange(ways).repeat_interleave(shots),
        query_images=torch.randn(ways * queries, 3, size, size, generator=g),
        query_labels=torch.arange(ways).repeat_interleave(queries),
        class_names=tuple(f"c{i}" for i in range(ways)),
        global_class_ids=torch.arange(ways),
    )


def build(name: str, args: argparse.Namespace, **options) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    backbone = build_backbone("conv4", in_channels=3, image_size=args.size)
    extra = {"num_classes": 5} if name == "baseline" else {}
    if name in VECTORISABLE:
        extra["inner_steps"] = args.inner_steps
    method = build_method(name, backbone, **extra, **options).train().to(args.device)
    if args.channels_last:
        method.to(memory_format=torch.channels_last)
    return method, torch.optim.Adam(method.parameters(), lr=1e-3)


def one_step(method, optimizer, batch, device: torch.device, bf16: bool = False) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        method.training_step(batch)
    optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--methods", nargs="+", default=list_methods())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the backbone")
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast (on the CPU too)")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, Conv4 {args.size}x{args.size}x3, "
          f"5-way 5-shot 15-query, meta-batch {args.meta_batch}, {args.inner_steps} inner steps"
          f"{', channels-last' if args.channels_last else ''}")
    batches = [[move_episode(episode(5, 5, 15, args.size, s * args.meta_batch + b), device,
                             channels_last=args.channels_last) for b in range(args.meta_batch)]
               for s in range(args.steps + 1)]
    print(f"{'method':<12} {'s/step':>8} {'episodes/s':>11} {'loop s/step':>12} {'vmap speed-up':>14}")
    for name in args.methods:
        variants = {"vmap": {"vectorize": True}, "loop": {"vectorize": False}} if name in VECTORISABLE else {"": {}}
        if args.channels_last and name in VECTORISABLE:  # vmap falls back to the loop for that layout
            variants = {"loop": {"vectorize": False}}
        first = dict(next(iter(variants.values())))  # the variants below differ from the first in one thing
        if args.compile:
            variants["compiled"] = first
        if args.bf16:
            variants["bf16"] = first
        runs = {}
        for label, options in variants.items():
            method, optimizer = build(name, args, **options)
            if label == "compiled":
                method.backbone = torch.compile(method.backbone)
            runs[label] = (method, optimizer, [])
        for step, batch in enumerate(batches):  # alternate the variants step by step
            for label, (method, optimizer, times) in list(runs.items()):
                try:
                    elapsed = one_step(method, optimizer, batch, device, bf16=label == "bf16")
                except Exception as exc:  # torch.compile under torch.func transforms may refuse
                    if label != "compiled":
                        raise
                    print(f"{name:<12} torch.compile failed: {type(exc).__name__}: {str(exc)[:200]}")
                    del runs[label]
                    continue
                if step:  # the first step is warm-up (and compilation)
                    times.append(elapsed)
        median = {label: statistics.median(times) for label, (_, _, times) in runs.items()}
        main_label = next(iter(median))
        line = f"{name:<12} {median[main_label]:>8.3f} {args.meta_batch / median[main_label]:>11.1f}"
        if "loop" in median and "vmap" in median:
            line += f" {median['loop']:>12.3f} {median['loop'] / median['vmap']:>13.2f}x"
        for label in ("compiled", "bf16"):
            if label in median:
                line += f"   {label} {median[label]:.3f} s/step ({median[main_label] / median[label]:.2f}x)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
