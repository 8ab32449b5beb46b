"""A run directory's checkpoints: complete step directories, published by one atomically replaced pointer.

Layout of a run directory ``RUN``::

    RUN/published.json                    {"best": "best-000100", "last": "last-000120"}   (the pointer)
    RUN/checkpoints/last-000120/          model.safetensors, model.json, train_state.safetensors
    RUN/checkpoints/best-000100/          model.safetensors, model.json
    RUN/config.yaml, metrics.jsonl, learning_curve.png

Writing the checkpoints of step N (:func:`write_step_dir`, then :func:`publish`):

1. each checkpoint goes into a fresh ``checkpoints/<role>-N.tmp/``; its files are fsynced, the folder is
   renamed to ``<role>-N`` and ``checkpoints/`` is fsynced; nothing reads these folders yet;
2. the pointer is written to ``.published.json.tmp``, fsynced and moved over ``published.json`` with one
   ``os.replace`` (then ``RUN`` is fsynced): this single rename publishes the whole step;
3. only then are the folders the pointer no longer names removed (the last and the best are kept).

Readers follow the pointer, so a kill at any moment leaves the previous pointer with its untouched
folders, or the new one: never a mixture of two steps. A new best is always published together with a
``last`` of the same step, so the published training state always knows the published best. On the next
start :func:`clean_stale` removes what a kill left behind (``*.tmp``, folders the pointer does not name).

Run directories of older medfew versions (flat ``best.*``, ``last.*``, ``train_state.safetensors``) still
load; :func:`adopt_flat_layout` moves one into this layout when it is resumed.

For tests only, ``MEDFEW_TEST_KILL_AT=<boundary>`` (one of :data:`BOUNDARIES`) makes the writer SIGKILL its
own process at that boundary, the first time it is reached.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from medfew.errors import CheckpointError

POINTER = "published.json"
CHECKPOINTS = "checkpoints"
WEIGHTS = "model.safetensors"
STATE = "train_state.safetensors"
ROLES = ("best", "last")
FLAT_FILES = ("best.safetensors", "best.json", "last.safetensors", "last.json", "train_state.safetensors")
KILL_ENV = "MEDFEW_TEST_KILL_AT"
BOUNDARIES = (
    "best/weights", "best/sidecar", "best/renamed",
    "last/weights", "last/sidecar", "last/state", "last/renamed",
    "pointer/written", "pointer/replaced",
)
_STEP_DIR = re.compile(r"(best|last)-(\d{6,})")


def kill_point(role: str, event: str) -> None:
    """Test-only fault injection: SIGKILL this process when ``MEDFEW_TEST_KILL_AT`` is ``role/event``."""
    if os.environ.get(KILL_ENV) == f"{role}/{event}":
        os.kill(os.getpid(), signal.SIGKILL)


def role_of(folder: Path) -> str:
    """``best`` or ``last`` for a (temporary) step directory, else the folder's name."""
    match = _STEP_DIR.match(folder.name)
    return match.group(1) if match else folder.name


def read_pointer(run: str | Path) -> dict[str, Path]:
    """The step directories ``published.json`` names, by role; ``{}`` when the run has no pointer.

    Raises:
        CheckpointError: The pointer is unreadable, names something other than a step directory of
            its role, or a directory that is missing.
    """
    path = Path(run) / POINTER
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint pointer ({exc})") from exc
    if not isinstance(raw, dict) or "last" not in raw or set(raw) - set(ROLES):
        raise CheckpointError(f"{path}: a checkpoint pointer is a JSON object with 'last' and optionally 'best'")
    folders = {}
    for role, name in raw.items():
        match = _STEP_DIR.fullmatch(name) if isinstance(name, str) else None
        if match is None or match.group(1) != role:
            raise CheckpointError(f"{path}: {role!r} must name a {role}-NNNNNN step directory, got {str(name)[:80]!r}")
        folder = Path(run) / CHECKPOINTS / name
        if not (folder / WEIGHTS).is_file():
            raise CheckpointError(f"{path}: names {CHECKPOINTS}/{name}, which holds no {WEIGHTS}")
        folders[role] = folder
    return folders


def write_step_dir(run: str | Path, role: str, step: int, write: Callable[[Path], None]) -> Path:
    """Fill a fresh ``checkpoints/<role>-<step>.tmp/`` with ``write(folder)``, make it durable, rename it.

    The folder is complete on disk before it gets its final name, and unpublished until :func:`publish`.

    Returns:
        The final step directory.
    """
    final = Path(run) / CHECKPOINTS / f"{role}-{step:06d}"
    if final in read_pointer(run).values():
        raise CheckpointError(f"{final}: already published; refusing to overwrite a published checkpoint")
    tmp = final.with_name(final.name + ".tmp")
    for stale in (tmp, final):  # left by a kill before publication
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        for file in tmp.iterdir():
            _fsync(file)
        _fsync(tmp)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync(final.parent)
    kill_point(role, "renamed")
    return final


def publish(run: str | Path, **folders: Path) -> None:
    """Point ``best`` and/or ``last`` at new step directories in one atomic replace, then prune the rest."""
    run = Path(run)
    names = {role: folder.name for role, folder in {**read_pointer(run), **folders}.items()}
    tmp = run / f".{POINTER}.tmp"
    tmp.write_text(json.dumps(dict(sorted(names.items()))), encoding="utf-8")
    _fsync(tmp)
    kill_point("pointer", "written")
    os.replace(tmp, run / POINTER)
    _fsync(run)
    kill_point("pointer", "replaced")
    clean_stale(run)


def clean_stale(run: str | Path) -> list[Path]:
    """Remove what an interrupted write left in ``run``; return what was removed.

    That is every ``*.tmp`` file or folder medfew writes, every step directory the pointer does not name
    and, once the run has a pointer, the flat files of the older layout it replaced.
    """
    run = Path(run)
    published = set(read_pointer(run).values())
    doomed = [p for p in run.glob(".*.tmp") if p.is_file()]
    if (run / CHECKPOINTS).is_dir():
        doomed += [p for p in (run / CHECKPOINTS).iterdir() if p not in published]
    for folder in published:
        doomed += folder.glob(".*.tmp")  # an atomic write (e.g. a sidecar update) cut short
    if published:
        doomed += [run / name for name in FLAT_FILES if (run / name).is_file()]
    for path in doomed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return doomed


def reset(run: str | Path) -> None:
    """Forget every checkpoint of ``run`` (a restart): unpublish first, then delete."""
    run = Path(run)
    (run / POINTER).unlink(missing_ok=True)
    _fsync(run)
    shutil.rmtree(run / CHECKPOINTS, ignore_errors=True)
    for name in FLAT_FILES:
        (run / name).unlink(missing_ok=True)
    clean_stale(run)


def adopt_flat_layout(run: str | Path) -> bool:
    """Move a resumable run of the older flat layout into step directories; ``True`` if it did.

    ``last.*`` with ``train_state.safetensors`` become ``last-N``, ``best.*`` becomes ``best-M`` (N and M
    from the sidecars' ``metrics.step``); both are published at once, then the flat files are removed.
    """
    run = Path(run)
    if (run / POINTER).exists() or not (run / "train_state.safetensors").is_file():
        return False
    copies = {"last": {"last.safetensors": WEIGHTS, "last.json": "model.json", "train_state.safetensors": STATE},
              "best": {"best.safetensors": WEIGHTS, "best.json": "model.json"}}
    folders = {}
    for role, files in copies.items():
        if not (run / f"{role}.safetensors").is_file():
            continue
        step = _flat_step(run / f"{role}.json")
        folders[role] = write_step_dir(
            run, role, step, lambda folder, files=files: [shutil.copyfile(run / a, folder / b) for a, b in files.items()]
        )
    if "last" not in folders:
        raise CheckpointError(f"{run}: train_state.safetensors without last.safetensors; start afresh (CLI: --restart)")
    publish(run, **folders)
    return True


def _flat_step(sidecar: Path) -> int:
    try:
        step = json.loads(sidecar.read_text(encoding="utf-8"))["metrics"]["step"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{sidecar}: no readable metrics.step, cannot resume this run ({exc!r:.200})") from exc
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{sidecar}: metrics.step must be a step number, got {str(step)[:40]!r}")
    return step


def _fsync(path: Path) -> None:
    """Flush a file or a folder (its entries) to disk; folders cannot be opened on every OS."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
