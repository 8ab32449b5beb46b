"""medfew.data: image readers, dataset catalogue and manifests, image pools, episodes and their sampler."""

from __future__ import annotations

from medfew._exports import lazy_exports

_WHERE = {
    "load_image": "medfew.data.readers",
    "read_dicom_metadata": "medfew.data.readers",
    "DatasetInfo": "medfew.data.catalog",
    "dataset_info": "medfew.data.catalog",
    "list_datasets": "medfew.data.catalog",
    "resolve_data_root": "medfew.data.catalog",
    "Manifest": "medfew.data.manifest",
    "manifest_from_folder": "medfew.data.manifest",
    "ImagePool": "medfew.data.pool",
    "load_pool": "medfew.data.pools",
    "load_pools": "medfew.data.pools",
    "Episode": "medfew.data.episode",
    "EpisodeSampler": "medfew.data.sampler",
    "normalize_batch": "medfew.data.transforms",
    "build_augmentation": "medfew.data.transforms",
}

__all__ = [
    "DatasetInfo",
    "Episode",
    "EpisodeSampler",
    "ImagePool",
    "Manifest",
    "build_augmentation",
    "dataset_info",
    "list_datasets",
    "load_image",
    "load_pool",
    "load_pools",
    "manifest_from_folder",
    "normalize_batch",
    "read_dicom_metadata",
    "resolve_data_root",
]
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
