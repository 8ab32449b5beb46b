"""What training and evaluation consume: image pools, episodes, the episode sampler and augmentation."""

from __future__ import annotations

from medfew._exports import lazy_exports

_WHERE = {
    "ImagePool": "medfew.data.episodes.pool",
    "Episode": "medfew.data.episodes.episode",
    "EpisodeSampler": "medfew.data.episodes.sampler",
    "build_augmentation": "medfew.data.episodes.transforms",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
