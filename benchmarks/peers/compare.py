"""medfew against learn2learn, higher and easyfsl on the same work; run it in the benchmark environment.

    make bench-env
    .venv-bench/bin/python -m benchmarks.peers.compare [--repeats 10] [--only learn2learn:maml ...]

Conv4-64 (GroupNorm on both sides), 28x28x3, 5-way 1- and 5-shot, 15 queries; the MAML family at
meta-batch 4 with 1 and 5 inner steps, the metric methods per training episode. Every case runs its two
sides in two fresh processes stepped in lockstep (``benchmarks/peers/driver.py``). Prints the table of
ratios peer / medfew, writes ``docs/benchmarks.json`` and ``docs/benchmarks.png``, and rewrites the
generated block of ``docs/benchmarks.md``. Then times medfew's real sampler against its training step
(``benchmarks/peers/sampler_share.py``). Figures, not tests: nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.peers.cases import TARGETS, build_cases, select_cases
from benchmarks.peers.driver import OMP_WAIT_POLICY, REPO, run_case
from benchmarks.peers.plot import plot_results
from benchmarks.peers.render import render_block, replace_block
from benchmarks.peers.stats import console_table, judge, verdict

DOCS = REPO / "docs"


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, load, Python and package versions of this machine."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kib = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal")), 0)
    import importlib.metadata as md

    versions = {}
    for package in ("torch", "torchvision", "learn2learn", "higher", "easyfsl", "medfew", "numpy"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions}


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def check_peers(python: str) -> None:
    """Fail early, with the fix, when the interpreter lacks a peer."""
    probe = "import learn2learn, higher, easyfsl, medfew"
    done = subprocess.run([python, "-W", "ignore", "-c", probe], capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{python} cannot import the peers ({done.stderr.strip().splitlines()[-1:]}); "
                 f"build the benchmark environment with `make bench-env` and run with .venv-bench/bin/python")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter of the workers (.venv-bench)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--omp-wait-policy", default=OMP_WAIT_POLICY, choices=["PASSIVE", "ACTIVE"],
                        help="OMP_WAIT_POLICY of the workers (PASSIVE: no spinning on a shared machine)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--only", nargs="*", default=None, metavar="SUBSTRING",
                        help="cases whose key contains one of these (e.g. learn2learn:maml 5-steps); "
                             "results of the other cases already in --json are kept")
    parser.add_argument("--json", type=Path, default=DOCS / "benchmarks.json")
    parser.add_argument("--png", type=Path, default=DOCS / "benchmarks.png")
    parser.add_argument("--doc", type=Path, default=DOCS / "benchmarks.md")
    parser.add_argument("--data-root", default=None, help="for the sampler share (default $MEDFEW_DATA_ROOT)")
    parser.add_argument("--sampler-steps", type=int, default=8, help="0 skips the sampler share")
    args = parser.parse_args(argv)

    os.environ.setdefault("OMP_WAIT_POLICY", args.omp_wait_policy)  # for the sampler share in this process
    check_peers(args.python)
    try:
        cases = select_cases(build_cases(), args.only)
    except ValueError as exc:
        parser.error(str(exc))
    previous = json.loads(args.json.read_text()) if args.only and args.json.is_file() else {}
    rows = {r["key"]: r for r in previous.get("results", [])}
    host = machine()
    command = " ".join(shlex.quote(a) for a in [".venv-bench/bin/python", "-m", "benchmarks.peers.compare",
                                                 *(argv if argv is not None else sys.argv[1:])])
    print(f"{host['cpu']}, {host['cores']} cores, load {host['load_average']}; torch "
          f"{host['versions']['torch']}, {args.threads} threads; {len(cases)} cases, "
          f"{args.warmup} warm-up + {args.repeats} timed iterations per side", flush=True)
    commands = [*previous.get("commands", []), command]
    settings = {"threads": args.threads, "warmup": args.warmup, "repeats": args.repeats,
                "omp_wait_policy": args.omp_wait_policy}
    sampler = previous.get("sampler")

    def save() -> dict[str, Any]:  # after every case, so an interrupted run keeps what it measured
        order = {c.key: i for i, c in enumerate(build_cases())}
        results = sorted(rows.values(), key=lambda r: order.get(r["key"], len(order)))
        report = {"generated_utc": now(), "commands": commands, "machine": host, "settings": settings,
                  "results": results, "targets": [judge(t, results) for t in TARGETS], "sampler": sampler}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        return report

    for i, case in enumerate(cases, 1):
        r = run_case(case, python=args.python, threads=args.threads, warmup=args.warmup,
                     repeats=args.repeats, omp_wait_policy=args.omp_wait_policy)
        rows[case.key] = {**r, "measured_utc": now(), "settings": settings,
                          "load_average": [round(x, 2) for x in os.getloadavg()]}
        save()
        print(f"[{i}/{len(cases)}] {case.pair}, {case.setting}: peer {r['peer']['median_s']:.3f} s, medfew "
              f"{r['medfew']['median_s']:.3f} s -> {r['time_ratio']:.2f}x; peak RSS {r['peer']['peak_rss_mb']:.0f}"
              f" / {r['medfew']['peak_rss_mb']:.0f} MiB", flush=True)
    if args.sampler_steps:
        import torch

        from benchmarks.peers.sampler_share import measure_sampler_share

        torch.set_num_threads(args.threads)  # torch is first imported here, after OMP_WAIT_POLICY was set
        sampler = {**measure_sampler_share(args.data_root, steps=args.sampler_steps), "measured_utc": now()}
    host["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report = save()
    results, verdicts = report["results"], report["targets"]
    plot_results(results, args.png, f"peer vs medfew, CPU {args.threads} threads, torch {host['versions']['torch']}")
    if args.doc.is_file():
        args.doc.write_text(replace_block(args.doc.read_text(encoding="utf-8"), render_block(report)),
                            encoding="utf-8")
    print("\n".join(["", *console_table(results), ""]))
    for v in verdicts:
        print(f"{verdict(v['met']):>12}  {v['target']}  (worst {v['worst_time_ratio']})")
    if sampler:
        for name, m in sampler["methods"].items():
            print(f"sampler share of a {name} step: {m['share_percent']:.1f}% (worst "
                  f"{m['worst_share_percent']:.1f}%); sampler / step {m['sampler_over_step_percent']:.1f}% "
                  f"(worst {m['worst_sampler_over_step_percent']:.1f}%)")
    print(f"wrote {args.json}, {args.png}" + (f", {args.doc}" if args.doc.is_file() else ""))


if __name__ == "__main__":
    main()
