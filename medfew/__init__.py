"""medfew: few-shot diagnosis of rare diseases in medical images.

The everyday entry points are re-exported here, lazily (``import medfew`` imports no torch and never
streamlit); each subpackage declares its own public API in ``__all__``::

    from medfew import DiagnosisSession, load_checkpoint, load_image, evaluate
"""

from __future__ import annotations

from medfew._exports import lazy_exports

__version__ = "0.1.0"

_WHERE = {
    "DiagnosisSession": "medfew.diagnosis",
    "build_report": "medfew.reporting",
    "load_checkpoint": "medfew.training.checkpoint",
    "save_checkpoint": "medfew.training.checkpoint",
    "fit": "medfew.training.loop",
    "load_image": "medfew.data.readers",
    "load_pool": "medfew.data.sources.pools",
    "Episode": "medfew.data.episodes.episode",
    "EpisodeSampler": "medfew.data.episodes.sampler",
    "build_backbone": "medfew.models",
    "build_method": "medfew.methods",
    "evaluate": "medfew.evaluation",
    "load_config": "medfew.config",
    "MedfewError": "medfew.errors",
}

__all__ = [
    "__version__",
    "DiagnosisSession",
    "Episode",
    "EpisodeSampler",
    "MedfewError",
    "build_backbone",
    "build_method",
    "build_report",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_config",
    "load_image",
    "load_pool",
    "save_checkpoint",
]
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
