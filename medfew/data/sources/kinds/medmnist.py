"""The ``medmnist`` kind: one ``.npz`` per image size (28, 64, 128, 224) holding the official splits,
downloadable from the catalogue's ``url_pattern``."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

from medfew.data.sources.catalog import MEDMNIST_SIZES, MEDMNIST_SPLITS, DatasetInfo, JsonReader, file_spec
from medfew.data.sources.kinds import DatasetKind, NpzSource
from medfew.errors import DatasetNotFoundError, ManifestError


class MedmnistKind(DatasetKind):
    """MedMNIST / MedMNIST+ archives (``files`` by size, ``download.url_pattern``)."""

    name = "medmnist"
    fetchable = True

    def parse(self, top: JsonReader, splits: dict[str, int]) -> dict[str, Any]:
        if sorted(splits) != sorted(MEDMNIST_SPLITS):
            raise ManifestError(top.source, f"key 'splits' of a medmnist dataset must be {list(MEDMNIST_SPLITS)}, "
                                            f"got {list(splits)}")
        download = top.child("download")
        pattern = download.get("url_pattern", str)
        if "{filename}" not in pattern:
            raise ManifestError(top.source, f"key 'download.url_pattern' lacks the '{{filename}}' placeholder: "
                                            f"{pattern!r}")
        files_reader = top.child("files")
        files = {}
        for size_key in files_reader.obj:
            if not size_key.isdigit() or int(size_key) not in MEDMNIST_SIZES:
                raise ManifestError(top.source,
                                    f"key 'files.{size_key}' is not an image size in {list(MEDMNIST_SIZES)}")
            files[int(size_key)] = file_spec(files_reader.child(size_key))
        if 28 not in files:
            raise ManifestError(top.source, "key 'files.28' is missing: every medmnist dataset has a 28x28 file")
        return dict(files=MappingProxyType(dict(sorted(files.items()))), url_pattern=pattern)

    def locate(self, info: DatasetInfo, root: Path, *, image_size: int = 28, strict: bool = True) -> NpzSource:
        """The archive of the requested size when present, else the smallest larger one, else the largest."""
        present = {size: root / spec.path for size, spec in info.files.items() if (root / spec.path).is_file()}
        if not present:
            spec = info.files[28]
            raise DatasetNotFoundError(
                f"dataset {info.name!r}: {str(root / spec.path)!r} not found; run `medfew data fetch {info.name}` "
                f"or download {info.url_for(28)} there by hand"
            )
        larger = [s for s in present if s >= image_size]
        size = image_size if image_size in present else (min(larger) if larger else max(present))
        return NpzSource(present[size], size, root)


KIND = MedmnistKind()
