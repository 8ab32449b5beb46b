"""The cache of decoded pools: in memory per process, and on disk as safetensors plus a JSON sidecar.

Entries live under ``$MEDFEW_CACHE_DIR`` (default ``~/.cache/medfew``) in ``pools/<key>.safetensors``.
The key hashes the source files' paths, sizes and modification times with every preprocessing
setting, so an edited file or a new setting gives a new entry. An unreadable entry is ignored with a
warning and rebuilt; a cache folder that cannot be written only costs a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from safetensors.torch import load_file

import medfew
from medfew.data.atomic import atomic_save_tensors, atomic_write_bytes
from medfew.data.episodes.pool import ImagePool
from medfew.errors import MedfewError

PREPROCESS_VERSION = 1
"""Bump when decoding or resizing changes, to invalidate every cached pool."""
CACHE_DIR_ENV = "MEDFEW_CACHE_DIR"
_CACHE_FORMAT = 1

_MEMORY: dict[str, ImagePool] = {}
_STATS = {"memory_hits": 0, "disk_hits": 0, "builds": 0}


def cache_dir() -> Path:
    """The disk cache folder: ``$MEDFEW_CACHE_DIR`` or ``~/.cache/medfew``."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medfew"


def clear_memory_cache() -> None:
    """Forget every pool cached in this process (the disk cache stays)."""
    _MEMORY.clear()


def cache_stats() -> dict[str, int]:
    """Counts of ``memory_hits``, ``disk_hits`` and ``builds`` since the process started."""
    return dict(_STATS)


def note_build() -> None:
    """Count one pool built from its source files (cached or not), for :func:`cache_stats`."""
    _STATS["builds"] += 1


def cache_key(
    *,
    kind: str,
    name: str,
    split: str | None,
    class_names: Sequence[str],
    files: Sequence[Path],
    image_size: int,
    channels: int,
    on_error: str,
) -> str:
    """A hex key over everything that determines a pool's content."""
    stamps = []
    for path in files:
        st = path.stat()
        stamps.append([str(path), st.st_size, st.st_mtime_ns])
    payload = {
        "format": _CACHE_FORMAT, "preprocess": PREPROCESS_VERSION, "medfew": medfew.__version__,
        "kind": kind, "name": name, "split": split, "classes": list(class_names),
        "image_size": image_size, "channels": channels, "on_error": on_error, "files": stamps,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:40]


def lookup(key: str) -> ImagePool | None:
    """The cached pool for ``key`` (memory first, then disk), or ``None``."""
    hit = _MEMORY.get(key)
    if hit is not None:
        _STATS["memory_hits"] += 1
        return hit
    pool = _read_disk(key)
    if pool is not None:
        _STATS["disk_hits"] += 1
        _MEMORY[key] = pool
    return pool


def store(key: str, pool: ImagePool) -> None:
    """Record a freshly built pool in memory and on disk."""
    _MEMORY[key] = pool
    _write_disk(key, pool)


def _entry_paths(key: str) -> tuple[Path, Path]:
    folder = cache_dir() / "pools"
    return folder / f"{key}.safetensors", folder / f"{key}.json"


def _read_disk(key: str) -> ImagePool | None:
    tensor_path, meta_path = _entry_paths(key)
    if not (tensor_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != _CACHE_FORMAT or meta.get("key") != key:
            raise MedfewError("sidecar does not match this cache key")
        tensors = load_file(str(tensor_path))
        images, labels = tensors["images"], tensors["labels"]
        if list(images.shape) != meta["shape"] or str(images.dtype) != meta["dtype"]:
            raise MedfewError(f"tensor shape {list(images.shape)} differs from the sidecar {meta['shape']}")
        return ImagePool(
            images=images,
            labels=labels,
            class_names=tuple(meta["class_names"]),
            name=meta["name"],
            groups=tensors.get("groups"),
            split=meta["split"],
            provenance=meta["provenance"],
        )
    except Exception as exc:  # noqa: BLE001 - any unreadable entry is rebuilt, never fatal
        warnings.warn(f"ignoring corrupt pool cache entry {tensor_path} ({exc}); rebuilding", RuntimeWarning, stacklevel=3)
        for path in (tensor_path, meta_path):
            try:
                path.unlink()
            except OSError:
                pass
        return None


def _write_disk(key: str, pool: ImagePool) -> None:
    tensor_path, meta_path = _entry_paths(key)
    tensors = {"images": pool.images.contiguous(), "labels": pool.labels.contiguous()}
    if pool.groups is not None:
        tensors["groups"] = pool.groups.contiguous()
    meta = {
        "format": _CACHE_FORMAT,
        "key": key,
        "name": pool.name,
        "split": pool.split,
        "class_names": list(pool.class_names),
        "shape": list(pool.images.shape),
        "dtype": str(pool.images.dtype),
        "provenance": pool.provenance,
    }
    try:
        atomic_save_tensors(tensor_path, tensors)
        atomic_write_bytes(meta_path, json.dumps(meta).encode("utf-8"))
    except OSError as exc:
        warnings.warn(f"could not write the pool cache under {tensor_path.parent} ({exc})", RuntimeWarning, stacklevel=3)
