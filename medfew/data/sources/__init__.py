"""Where images come from: the dataset catalogue, fetching, manifests, folder inspection, and building
:class:`~medfew.data.episodes.pool.ImagePool` s from them (with their on-disk cache)."""

from __future__ import annotations

from medfew._exports import lazy_exports

_WHERE = {
    "DatasetInfo": "medfew.data.sources.catalog",
    "dataset_info": "medfew.data.sources.catalog",
    "list_datasets": "medfew.data.sources.catalog",
    "resolve_data_root": "medfew.data.sources.catalog",
    "fetch_datasets": "medfew.data.sources.fetch",
    "inspect_path": "medfew.data.sources.inspect",
    "InspectionReport": "medfew.data.sources.inspection_report",
    "Manifest": "medfew.data.sources.manifest",
    "manifest_from_folder": "medfew.data.sources.manifest",
    "load_pool": "medfew.data.sources.pools",
    "load_pools": "medfew.data.sources.pools",
}

__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
