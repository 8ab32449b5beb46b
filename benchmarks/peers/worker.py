"""One side of one case in its own process, driven line by line by ``compare.py``.

    python -m benchmarks.peers.worker SIDE CASE_JSON THREADS

Protocol (one JSON object per line on stdout; commands on stdin):

* at start: builds the side, then prints ``{"ready": true, "info": ..., "rss_ready_mb": ...}``;
* ``step``: runs one meta-iteration and prints ``{"seconds": s}``;
* ``stop``: prints ``{"peak_rss_mb": ...}`` (``resource.getrusage`` ``ru_maxrss`` of this process) and exits.

A process of its own per side and case keeps each peak RSS honest (nothing else was ever allocated in it),
and the driver's step-by-step lockstep keeps the two sides of a pair under the same machine load.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings


def rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def send(message: dict) -> None:
    """Write one JSON line to stdout (the driver's channel)."""
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    side_id, case_json, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    warnings.simplefilter("ignore")  # peers' deprecation chatter must not reach the protocol channel
    import torch

    from benchmarks.peers.cases import Case
    from benchmarks.peers.sides import build_side, make_tasks

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    case = Case(**json.loads(case_json))
    side = build_side(side_id, case)
    batches = [side.prepare(b) for b in make_tasks(case, n_batches=3)]
    send({"ready": True, "info": {**side.info, "torch": torch.__version__, "threads": torch.get_num_threads()},
          "rss_ready_mb": round(rss_mb(), 1)})
    done = 0
    for line in sys.stdin:
        command = line.strip()
        if command == "step":
            t0 = time.perf_counter()
            side.step(batches[done % len(batches)])
            send({"seconds": time.perf_counter() - t0})
            done += 1
        elif command == "stop":
            send({"peak_rss_mb": round(rss_mb(), 1), "iterations": done})
            return
        else:
            send({"error": f"unknown command {command!r} (expected 'step' or 'stop')"})
            sys.exit(2)


if __name__ == "__main__":
    main()
