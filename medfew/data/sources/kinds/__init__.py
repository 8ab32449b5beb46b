"""Dataset kinds: what each ``kind`` of catalogue entry means, in one module per kind.

A kind knows how to parse its own keys of a ``data_manifests/<name>.json`` entry, how to locate what
to read under the data root, and whether medfew can download it. The catalogue, the pool loader, the
inspector and the fetcher ask the kind instead of switching on its name, so a new kind is one new
module here (defining ``KIND``, a :class:`DatasetKind`) plus one line in :data:`_MODULES`.

What a kind locates is one of the two on-disk forms the pool loader and the inspector read: an
:class:`NpzSource` (one MedMNIST-layout archive holding every split) or a
:class:`~medfew.data.sources.manifest.Manifest` (one file per image).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from medfew.errors import DatasetNotFoundError

if TYPE_CHECKING:
    from medfew.data.sources.catalog import DatasetInfo, JsonReader
    from medfew.data.sources.manifest import Manifest

_MODULES: dict[str, str] = {
    "medmnist": "medfew.data.sources.kinds.medmnist",
    "folder_csv": "medfew.data.sources.kinds.folder_csv",
}

__all__ = ["DatasetKind", "NpzSource", "dataset_kind", "known_kinds"]


@dataclass(frozen=True)
class NpzSource:
    """One MedMNIST-layout ``.npz`` archive (``{split}_images`` / ``{split}_labels``).

    Attributes:
        path: The archive.
        native_size: Its image side, when known (the catalogue's per-size files).
        base: Folder the provenance paths are written relative to (the data root).
    """

    path: Path
    native_size: int | None
    base: Path


class DatasetKind:
    """How the catalogue entries of one kind are parsed, located and fetched.

    Subclasses set :attr:`name` and implement :meth:`parse` and :meth:`locate`; a kind medfew can
    download also sets :attr:`fetchable` (the download itself is :mod:`medfew.data.sources.fetch`).
    """

    name: ClassVar[str]
    fetchable: ClassVar[bool] = False

    def parse(self, top: JsonReader, splits: dict[str, int]) -> dict[str, Any]:
        """The kind's own :class:`~medfew.data.sources.catalog.DatasetInfo` fields, read from the
        entry's JSON object.

        Raises:
            ManifestError: A missing or invalid key, named with the manifest file.
        """
        raise NotImplementedError

    def locate(
        self, info: DatasetInfo, root: Path, *, image_size: int = 28, strict: bool = True
    ) -> NpzSource | Manifest:
        """What to read for ``info`` under the data root ``root``.

        Args:
            info: The catalogue entry (of this kind).
            root: The resolved data root.
            image_size: The side the images will be resized to (a kind with several native sizes
                picks the closest one at or above it).
            strict: For manifests, refuse bad rows instead of listing them as ignored.

        Raises:
            DatasetNotFoundError: The files are not under the data root (the message says how to get them).
        """
        raise NotImplementedError

    def not_fetchable(self, info: DatasetInfo) -> DatasetNotFoundError:
        """The error ``medfew data fetch`` raises for a kind it cannot download."""
        return DatasetNotFoundError(
            f"dataset {info.name!r} ({info.kind}) cannot be downloaded by medfew: get it from "
            f"{info.homepage or 'its publisher'} and put it under <data_root>/{info.folder or ''}"
        )


def dataset_kind(name: str) -> DatasetKind:
    """The :class:`DatasetKind` registered as ``name`` (one of :func:`known_kinds`).

    Raises:
        KeyError: An unknown kind (the catalogue refuses those while parsing, naming the file).
    """
    return importlib.import_module(_MODULES[name]).KIND


def known_kinds() -> tuple[str, ...]:
    """The registered kind names, in registration order."""
    return tuple(_MODULES)
