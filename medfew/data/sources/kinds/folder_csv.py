"""The ``folder_csv`` kind: an image folder under the data root plus a metadata CSV naming each
image's class (and optionally its patient group and licence)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfew.data.sources.catalog import DatasetInfo, JsonReader, file_spec
from medfew.data.sources.kinds import DatasetKind
from medfew.data.sources.manifest import Manifest, manifest_from_catalog
from medfew.errors import ManifestError


class FolderCsvKind(DatasetKind):
    """Image files listed by a metadata CSV (``folder``, ``metadata_csv``, ``columns``)."""

    name = "folder_csv"

    def parse(self, top: JsonReader, splits: dict[str, int]) -> dict[str, Any]:
        folder = top.get("folder", str)
        if Path(folder).is_absolute() or ".." in Path(folder).parts:
            raise ManifestError(top.source, f"key 'folder' must be relative to the data root, got {folder!r}")
        columns = top.child("columns")
        return dict(
            folder=folder,
            metadata_csv=file_spec(top.child("metadata_csv")),
            label_column=columns.get("label", str),
            path_columns=columns.str_list("path"),
            group_column=columns.get("group", str, required=False),
            licence_column=columns.get("licence", str, required=False),
        )

    def locate(self, info: DatasetInfo, root: Path, *, image_size: int = 28, strict: bool = True) -> Manifest:
        return manifest_from_catalog(info, root, strict=strict)


KIND = FolderCsvKind()
