"""medfew.training: the one meta-training loop, checkpoints (safetensors + JSON sidecar), devices."""

from __future__ import annotations

from medfew._exports import lazy_exports

_WHERE = {
    "fit": "medfew.training.loop",
    "FitResult": "medfew.training.loop",
    "CheckpointInfo": "medfew.training.checkpoint",
    "Preprocessing": "medfew.data.preprocessing",
    "load_checkpoint": "medfew.training.checkpoint",
    "save_checkpoint": "medfew.training.checkpoint",
    "read_checkpoint_info": "medfew.training.checkpoint",
    "resolve_device": "medfew.training.device",
}

__all__ = [
    "CheckpointInfo",
    "FitResult",
    "Preprocessing",
    "fit",
    "load_checkpoint",
    "read_checkpoint_info",
    "resolve_device",
    "save_checkpoint",
]
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
