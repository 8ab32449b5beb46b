"""The dataset catalogue: public datasets described by JSON manifests in ``data_manifests/``.

Each ``data_manifests/<name>.json`` describes one dataset relative to a *data root* (never pixels,
never patient data): its files and checksums, licence, citation, class names in label order and
official split counts. This module finds those files, parses and validates them into frozen
:class:`DatasetInfo` objects (each kind parses its own keys: :mod:`medfew.data.sources.kinds`) and
resolves the data root; file checksums are :mod:`medfew.data.sources.checksums`.

Where the manifests are found, first match wins:

1. ``$MEDFEW_MANIFEST_DIR`` when set (a folder of ``*.json``);
2. ``data_manifests/`` beside the ``medfew`` package, i.e. the repository root (source checkouts
   and editable installs);
3. ``medfew/data_manifests/`` inside the installed package (for a wheel that ships them as
   package data).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from medfew.data.sources.kinds import dataset_kind, known_kinds
from medfew.errors import (
    DatasetNotFoundError,
    ManifestError,
    RegistryError,
)
from medfew.messages import close_match_hint, short_repr

DATA_ROOT_ENV = "MEDFEW_DATA_ROOT"
MANIFEST_DIR_ENV = "MEDFEW_MANIFEST_DIR"
SCHEMA_VERSION = 1
MEDMNIST_SIZES = (28, 64, 128, 224)
MEDMNIST_SPLITS = ("train", "val", "test")

_PACKAGE_DIR = Path(__file__).resolve().parents[2]  # .../medfew
_REPO_MANIFESTS = _PACKAGE_DIR.parent / "data_manifests"
_PACKAGED_MANIFESTS = _PACKAGE_DIR / "data_manifests"


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset, relative to the data root.

    Attributes:
        path: Path relative to the data root, e.g. ``medmnist/bloodmnist.npz``.
        filename: Name of the file on the download server (``bloodmnist_64.npz``).
        md5: Hex md5, or ``None`` when unknown.
        sha256: Hex sha256, or ``None`` when unknown.
        size_bytes: File size in bytes, or ``None`` when unknown.
    """

    path: str
    filename: str
    md5: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None

    @property
    def has_checksum(self) -> bool:
        """Whether at least one checksum is known."""
        return bool(self.md5 or self.sha256)


@dataclass(frozen=True)
class DatasetInfo:
    """A catalogue entry, parsed and validated from ``data_manifests/<name>.json``.

    Attributes:
        name: Catalogue name, e.g. ``"bloodmnist"``.
        kind: A registered kind (:func:`~medfew.data.sources.kinds.known_kinds`): ``"medmnist"`` (one
            ``.npz`` per image size) or ``"folder_csv"`` (image folder plus a metadata CSV).
        title: Human-readable title.
        description: One-paragraph description.
        modality: Imaging modality, in words.
        task: ``"multi-class"``, ``"binary-class"`` or ``"ordinal-regression"``.
        n_channels: Native channel count (1 greyscale, 3 RGB).
        licence: Licence of the data (or how it is given per image).
        homepage: Project page of the dataset.
        citation: References to cite, in order.
        class_names: ``(K,)`` class names in label order.
        splits: Official split name -> number of images (``{"all": n}`` when there is no split).
        class_counts: Split name -> ``(K,)`` images per class, in label order.
        files: MedMNIST only: image size (28, 64, 128, 224) -> :class:`FileSpec`.
        url_pattern: MedMNIST only: download URL with a ``{filename}`` placeholder.
        folder: folder_csv only: image folder relative to the data root.
        metadata_csv: folder_csv only: the metadata CSV.
        label_column: folder_csv only: CSV column holding the class name.
        path_columns: folder_csv only: CSV columns joined (as path parts) below ``folder``.
        group_column: folder_csv only: CSV column holding the group (patient) id, or ``None``.
        licence_column: folder_csv only: CSV column holding the per-image licence, or ``None``.
        manifest_path: The JSON file this entry was read from.
    """

    name: str
    kind: str
    title: str
    description: str
    modality: str
    task: str
    n_channels: int
    licence: str
    homepage: str
    citation: tuple[str, ...]
    class_names: tuple[str, ...]
    splits: Mapping[str, int]
    class_counts: Mapping[str, tuple[int, ...]]
    files: Mapping[int, FileSpec] = field(default_factory=lambda: MappingProxyType({}))
    url_pattern: str | None = None
    folder: str | None = None
    metadata_csv: FileSpec | None = None
    label_column: str | None = None
    path_columns: tuple[str, ...] = ()
    group_column: str | None = None
    licence_column: str | None = None
    manifest_path: Path | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.class_names)

    def file_for_size(self, size: int) -> FileSpec:
        """The MedMNIST file of one image size.

        Raises:
            DatasetNotFoundError: The dataset is not MedMNIST, or has no file of that size.
        """
        if self.kind != "medmnist":
            raise DatasetNotFoundError(f"dataset {self.name!r} ({self.kind}) has no per-size files")
        if size not in self.files:
            raise DatasetNotFoundError(
                f"dataset {self.name!r} has no {size}x{size} file; sizes: {sorted(self.files)}"
            )
        return self.files[size]

    def url_for(self, size: int) -> str:
        """Official download URL of the MedMNIST file of one image size."""
        spec = self.file_for_size(size)
        if not self.url_pattern:
            raise DatasetNotFoundError(f"dataset {self.name!r} has no download URL in {self.manifest_path}")
        return self.url_pattern.format(filename=spec.filename)


def resolve_data_root(data_root: str | Path | None, *, must_exist: bool = True) -> Path:
    """The data root: the argument, else ``$MEDFEW_DATA_ROOT``.

    Args:
        data_root: An explicit folder, or ``None`` to use the environment.
        must_exist: Raise when the folder does not exist (``fetch`` passes ``False``).

    Returns:
        The absolute data-root path.

    Raises:
        DatasetNotFoundError: Neither is given, or the folder does not exist.
    """
    if data_root is not None and str(data_root) != "":
        root, origin = Path(data_root).expanduser(), "data_root argument"
    elif os.environ.get(DATA_ROOT_ENV):
        root, origin = Path(os.environ[DATA_ROOT_ENV]).expanduser(), f"${DATA_ROOT_ENV}"
    else:
        raise DatasetNotFoundError(
            f"no data root: pass data_root (--data-root) or set the environment variable {DATA_ROOT_ENV}"
        )
    if must_exist and not root.is_dir():
        raise DatasetNotFoundError(f"data root {str(root)!r} (from {origin}) is not an existing folder")
    return root.resolve()


def manifest_dir() -> Path:
    """The folder the catalogue reads ``*.json`` manifests from (see the module docstring).

    Raises:
        DatasetNotFoundError: No manifest folder exists.
    """
    env = os.environ.get(MANIFEST_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise DatasetNotFoundError(f"${MANIFEST_DIR_ENV}={env!r} is not an existing folder")
        return path.resolve()
    for candidate in (_REPO_MANIFESTS, _PACKAGED_MANIFESTS):
        if candidate.is_dir():
            return candidate
    raise DatasetNotFoundError(
        f"no dataset manifests found: looked in {str(_REPO_MANIFESTS)!r} and {str(_PACKAGED_MANIFESTS)!r}; "
        f"set {MANIFEST_DIR_ENV} to a folder of <name>.json manifests"
    )


def list_datasets() -> list[str]:
    """Names of every catalogue dataset, sorted."""
    return sorted(p.stem for p in manifest_dir().glob("*.json") if not p.name.startswith("."))


def dataset_info(name: str) -> DatasetInfo:
    """The validated catalogue entry of one dataset.

    Args:
        name: Catalogue name (case-insensitive), e.g. ``"bloodmnist"``.

    Raises:
        RegistryError: Unknown name; the message lists the known names and a close match.
        ManifestError: The JSON file is malformed; the message names the file and the key.
    """
    known = list_datasets()
    key = str(name).strip().lower()
    if key not in known:
        raise RegistryError(
            f"unknown dataset {short_repr(name)}{close_match_hint(key, known)}; known datasets: {', '.join(known)}"
        )
    path = manifest_dir() / f"{key}.json"
    return _load_info(path, path.stat().st_mtime_ns)


def npz_dataset_name(path: str | Path) -> str:
    """The catalogue name a MedMNIST file name stands for: ``bloodmnist_64.npz`` -> ``"bloodmnist"``
    (the 28x28 file has no size suffix; any other stem is returned as it is)."""
    stem = Path(path).stem
    name, _, size = stem.rpartition("_")
    return name if name and size.isdigit() and int(size) in MEDMNIST_SIZES and int(size) != 28 else stem


def is_catalog_name(name: object) -> bool:
    """Whether ``name`` is a string naming a catalogue dataset (no error when no catalogue)."""
    if not isinstance(name, str) or "/" in name or os.sep in name:
        return False
    try:
        return name.strip().lower() in list_datasets()
    except DatasetNotFoundError:
        return False


# ----------------------------------------------------------------------------------- parsing


@lru_cache(maxsize=64)
def _load_info(path: Path, _mtime_ns: int) -> DatasetInfo:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(path, f"not a readable JSON manifest ({exc})") from exc
    return _parse_info(raw, path)


class JsonReader:
    """Typed access to one JSON object of a catalogue manifest; every error names the manifest file
    and the key (the kinds in :mod:`medfew.data.sources.kinds` read their own keys with it)."""

    def __init__(self, source: Path, obj: Any, prefix: str = "") -> None:
        if not isinstance(obj, dict):
            raise ManifestError(source, f"key {prefix or '<top>'!r} must be an object, got {type(obj).__name__}")
        self.source, self.obj, self.prefix = source, obj, prefix

    def _key(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def get(self, key: str, types: type | tuple[type, ...], *, required: bool = True) -> Any:
        if key not in self.obj or self.obj[key] is None:
            if required:
                raise ManifestError(self.source, f"missing key {self._key(key)!r}")
            return None
        value = self.obj[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
            raise ManifestError(
                self.source, f"key {self._key(key)!r} has type {type(value).__name__}, expected {_names(types)}"
            )
        if isinstance(value, str) and required and not value.strip():
            raise ManifestError(self.source, f"key {self._key(key)!r} is empty")
        return value

    def child(self, key: str, *, required: bool = True) -> JsonReader | None:
        value = self.get(key, dict, required=required)
        return None if value is None else JsonReader(self.source, value, self._key(key))

    def str_list(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list)
        if not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise ManifestError(self.source, f"key {self._key(key)!r} must be a non-empty list of non-empty strings")
        return tuple(value)


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _names(types: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in _as_tuple(types))


def file_spec(reader: JsonReader) -> FileSpec:
    """The :class:`FileSpec` at ``reader`` (a path relative to the data root, optional checksums and size)."""
    path = reader.get("path", str)
    if Path(path).is_absolute() or ".." in Path(path).parts:
        raise ManifestError(reader.source, f"key {reader._key('path')!r} must be relative to the data root, got {path!r}")
    md5 = reader.get("md5", str, required=False)
    sha256 = reader.get("sha256", str, required=False)
    for algo, value, length in (("md5", md5, 32), ("sha256", sha256, 64)):
        if value is not None and (len(value) != length or any(c not in "0123456789abcdefABCDEF" for c in value)):
            raise ManifestError(reader.source, f"key {reader._key(algo)!r} is not a {length}-digit hex digest: {value!r}")
    size = reader.get("size_bytes", int, required=False)
    if size is not None and size <= 0:
        raise ManifestError(reader.source, f"key {reader._key('size_bytes')!r} must be positive, got {size}")
    filename = reader.get("filename", str, required=False) or Path(path).name
    return FileSpec(path=path, filename=filename, md5=md5, sha256=sha256, size_bytes=size)


def _parse_info(raw: Any, source: Path) -> DatasetInfo:
    top = JsonReader(source, raw)
    version = top.get("schema_version", int)
    if version != SCHEMA_VERSION:
        raise ManifestError(source, f"key 'schema_version' is {version}, this medfew reads {SCHEMA_VERSION}")
    name = top.get("name", str)
    if name != source.stem:
        raise ManifestError(source, f"key 'name' is {name!r} but the file is named {source.name!r}")
    kind = top.get("kind", str)
    if kind not in known_kinds():
        raise ManifestError(source, f"key 'kind' is {kind!r}, expected one of {list(known_kinds())}")
    class_names = top.str_list("class_names")
    if len(set(class_names)) != len(class_names):
        raise ManifestError(source, f"key 'class_names' has duplicates: {list(class_names)}")
    splits = _parse_splits(top)
    counts_reader = top.child("class_counts")
    class_counts: dict[str, tuple[int, ...]] = {}
    for split_name, counts in counts_reader.obj.items():
        if split_name not in splits:
            raise ManifestError(source, f"key 'class_counts.{split_name}' is not a split in 'splits': {list(splits)}")
        if (
            not isinstance(counts, list)
            or len(counts) != len(class_names)
            or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
        ):
            raise ManifestError(
                source, f"key 'class_counts.{split_name}' must list {len(class_names)} non-negative integers"
            )
        if sum(counts) != splits[split_name]:
            raise ManifestError(
                source,
                f"key 'class_counts.{split_name}' sums to {sum(counts)} but 'splits.{split_name}' is {splits[split_name]}",
            )
        class_counts[split_name] = tuple(counts)
    n_channels = top.get("n_channels", int)
    if n_channels not in (1, 3):
        raise ManifestError(source, f"key 'n_channels' must be 1 or 3, got {n_channels}")
    common: dict[str, Any] = dict(
        name=name,
        kind=kind,
        title=top.get("title", str),
        description=top.get("description", str, required=False) or "",
        modality=top.get("modality", str),
        task=top.get("task", str),
        n_channels=n_channels,
        licence=top.get("licence", str),
        homepage=top.get("homepage", str, required=False) or "",
        citation=top.str_list("citation"),
        class_names=class_names,
        splits=MappingProxyType(splits),
        class_counts=MappingProxyType(class_counts),
        manifest_path=source,
    )
    return DatasetInfo(**common, **dataset_kind(kind).parse(top, splits))


def _parse_splits(top: JsonReader) -> dict[str, int]:
    splits_reader = top.child("splits")
    splits: dict[str, int] = {}
    for split_name, count in splits_reader.obj.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ManifestError(top.source, f"key 'splits.{split_name}' must be a non-negative integer, got {count!r}")
        splits[split_name] = count
    if not splits:
        raise ManifestError(top.source, "key 'splits' is empty")
    return splits
