"""Run one case: both sides in fresh worker processes, stepped in lockstep, interleaved round by round.

Each side lives in its own process (``benchmarks.peers.worker``), so its peak RSS counts nothing but its
own imports, model and training. Only one side computes at a time: round ``r`` runs one meta-iteration of
each side back to back, peer first in even rounds and medfew first in odd ones, so both see the same
machine load and neither always follows the other.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from benchmarks.peers.cases import Case
from benchmarks.peers.stats import case_result, summarise_side

REPO = Path(__file__).resolve().parents[2]
logger = logging.getLogger(__name__)

# libgomp's default lets idle OpenMP threads spin. On a machine whose cores are shared with other jobs
# (more runnable threads than cores) the spinning threads of a 2-thread torch fight each other and the
# other jobs: a learn2learn FOMAML iteration measured 5.5 s instead of 0.8 s here. Passive waiting
# removes that artefact and applies to both sides alike; pass "ACTIVE" on a quiet machine if you like.
OMP_WAIT_POLICY = "PASSIVE"


class WorkerError(RuntimeError):
    """A worker process failed or broke the protocol (the message carries its stderr tail)."""


class Worker:
    """A running ``benchmarks.peers.worker`` process for one side of one case.

    Args:
        side: Side id (``"learn2learn:maml"``, ``"medfew:maml"``, ...).
        case: The configuration.
        python: Interpreter of the benchmark environment.
        threads: ``torch.set_num_threads`` (and OMP/MKL threads) of the worker.
        omp_wait_policy: ``OMP_WAIT_POLICY`` of the worker (see :data:`OMP_WAIT_POLICY`).
    """

    def __init__(self, side: str, case: Case, python: str, threads: int,
                 omp_wait_policy: str = OMP_WAIT_POLICY) -> None:
        self.side = side
        self._stderr: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115 (lives as long as the worker; close())
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "OMP_WAIT_POLICY": omp_wait_policy,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        self._proc = subprocess.Popen(
            [python, "-m", "benchmarks.peers.worker", side, json.dumps(case.to_dict()), str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=REPO, env=env, text=True,
        )

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-3000:]

    def receive(self) -> dict[str, Any]:
        """The next JSON message of the worker (lines that are not JSON are logged and skipped).

        Raises:
            WorkerError: The worker exited, or reported an error.
        """
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                logger.debug("%s printed: %s", self.side, line.rstrip())
                continue
            if "error" in message:
                raise WorkerError(f"{self.side}: {message['error']}")
            return message
        code = self._proc.wait()
        raise WorkerError(f"{self.side} exited with code {code}; stderr:\n{self._stderr_tail()}")

    def send(self, command: str) -> dict[str, Any]:
        """Send ``command`` (``"step"`` / ``"stop"``) and return the answer."""
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(command + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError as exc:
            raise WorkerError(f"{self.side} is gone; stderr:\n{self._stderr_tail()}") from exc
        return self.receive()

    def close(self) -> None:
        """Make sure the process is gone."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._stderr.close()


def run_case(case: Case, *, python: str = sys.executable, threads: int = 2, warmup: int = 2,
             repeats: int = 10, omp_wait_policy: str = OMP_WAIT_POLICY) -> dict[str, Any]:
    """Measure ``case``: ``warmup`` untimed then ``repeats`` timed meta-iterations per side, interleaved.

    Returns:
        The :func:`~benchmarks.peers.stats.case_result` row.

    Raises:
        WorkerError: A side failed (its stderr is in the message).
    """
    workers = {"peer": Worker(case.peer, case, python, threads, omp_wait_policy),
               "medfew": Worker(case.medfew, case, python, threads, omp_wait_policy)}
    try:
        ready = {role: w.receive() for role, w in workers.items()}  # both import and build in parallel
        for _ in range(warmup):
            for w in workers.values():
                w.send("step")
        times: dict[str, list[float]] = {role: [] for role in workers}
        for r in range(repeats):
            for role in ("peer", "medfew") if r % 2 == 0 else ("medfew", "peer"):
                times[role].append(workers[role].send("step")["seconds"])
        final = {role: w.send("stop") for role, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()

    def summary(role: str) -> dict[str, Any]:
        return summarise_side(times[role], final[role]["peak_rss_mb"], side=workers[role].side,
                              rss_ready_mb=ready[role]["rss_ready_mb"], info=ready[role]["info"])

    return case_result(case, summary("peer"), summary("medfew"))
