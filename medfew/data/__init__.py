"""medfew.data: image readers (``readers``), preprocessing, where images come from (``sources``: catalogue,
manifests, fetch, inspection, image pools) and what training consumes (``episodes``: pools, episodes,
their sampler, augmentation)."""

from __future__ import annotations

from medfew._exports import lazy_exports

_WHERE = {
    "load_image": "medfew.data.readers",
    "load_image_with_meta": "medfew.data.readers",
    "read_dicom_metadata": "medfew.data.readers",
    "DatasetInfo": "medfew.data.sources.catalog",
    "dataset_info": "medfew.data.sources.catalog",
    "list_datasets": "medfew.data.sources.catalog",
    "resolve_data_root": "medfew.data.sources.catalog",
    "Manifest": "medfew.data.sources.manifest",
    "manifest_from_folder": "medfew.data.sources.manifest",
    "ImagePool": "medfew.data.episodes.pool",
    "load_pool": "medfew.data.sources.pools",
    "load_pools": "medfew.data.sources.pools",
    "Episode": "medfew.data.episodes.episode",
    "EpisodeSampler": "medfew.data.episodes.sampler",
    "Preprocessing": "medfew.data.preprocessing",
    "normalize_batch": "medfew.data.preprocessing",
    "build_augmentation": "medfew.data.episodes.transforms",
}

__all__ = [
    "DatasetInfo",
    "Episode",
    "EpisodeSampler",
    "ImagePool",
    "Manifest",
    "Preprocessing",
    "build_augmentation",
    "dataset_info",
    "list_datasets",
    "load_image",
    "load_image_with_meta",
    "load_pool",
    "load_pools",
    "manifest_from_folder",
    "normalize_batch",
    "read_dicom_metadata",
    "resolve_data_root",
]
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
