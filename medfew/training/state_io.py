"""Safe, atomic serialisation of nested training state (optimiser, schedule, RNG) to safetensors.

Tensors go into the safetensors payload; the nesting and every non-tensor value go into its JSON
metadata. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from medfew.data.atomic import atomic_save_tensors, atomic_write_bytes  # noqa: F401 - re-exported
from medfew.errors import CheckpointError
from medfew.training.run_store import kill_point, role_of

_SKELETON_KEY = "medfew_state"


def save_state(path: Path, state: Any) -> None:
    """Save a nested structure of dicts, lists, tuples, tensors and JSON scalars to ``path``."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, tensors)
    atomic_save_tensors(path, tensors, metadata={_SKELETON_KEY: json.dumps(skeleton)})
    kill_point(role_of(Path(path).parent), "state")


def load_state(path: Path) -> Any:
    """Inverse of :func:`save_state`.

    Raises:
        CheckpointError: The file is missing, not safetensors, or not a medfew state file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such state file")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    if _SKELETON_KEY not in metadata:
        raise CheckpointError(f"{path}: not a medfew training-state file (no {_SKELETON_KEY!r} metadata)")
    return _unflatten(json.loads(metadata[_SKELETON_KEY]), tensors)


def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_key(k), _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__" if isinstance(obj, list) else "__tuple__": [_flatten(v, tensors) for v in obj]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"cannot save a value of type {type(obj).__name__} in a training state")


def _key(k: Any) -> Any:
    if isinstance(k, (bool, int, float, str)):
        return k
    raise CheckpointError(f"cannot save a dict key of type {type(k).__name__}")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [_unflatten(v, tensors) for v in obj["__list__"]]
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        raise CheckpointError(f"malformed training state entry: {sorted(obj)}")
    return obj
