"""Manifests: which image file has which label, group (patient) and split, validated up front.

A :class:`Manifest` is a tuple of :class:`ManifestRow` plus the class vocabulary. Three builders:

- :func:`manifest_from_folder`: class-per-folder layout (``root/<class>/**/<image>``);
- :func:`manifest_from_csv`: a CSV with columns ``path,label`` and optional ``group,split``;
- :func:`manifest_from_catalog`: a catalogue dataset of kind ``folder_csv`` (image folder plus a
  metadata CSV, e.g. the rare chest X-ray set).

Builders are strict by default: the first invalid row raises :class:`~medfew.errors.ManifestError`
naming the source and the 1-based data row. With ``strict=False`` (used by ``inspect``) invalid rows
are dropped and listed in :attr:`Manifest.ignored` instead. Structural problems (unreadable CSV,
missing or unknown columns, no class folder) always raise.

Group values (patient ids) are never quoted in error messages: the rows are named instead.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from medfew.data.sources.catalog import DatasetInfo, dataset_info, resolve_data_root
from medfew.data.sources.folder_entries import classify_file, is_hidden, walk_visible
from medfew.errors import DatasetNotFoundError, ManifestError
from medfew.messages import close_match_hint, short_repr

SPLITS = ("train", "val", "test")
CSV_REQUIRED_COLUMNS = ("path", "label")
CSV_OPTIONAL_COLUMNS = ("group", "split")
@dataclass(frozen=True)
class ManifestRow:
    """One image of a manifest.

    Attributes:
        path: Absolute path of the image file.
        label: Class name.
        group: Group (patient) id, or ``None`` when unknown.
        split: ``"train"``, ``"val"``, ``"test"``, or ``None`` when the manifest has no split.
        source: Name of the dataset (domain) the row belongs to.
    """

    path: Path
    label: str
    group: str | None = None
    split: str | None = None
    source: str = ""


@dataclass(frozen=True)
class Manifest:
    """The validated rows of one dataset.

    Attributes:
        rows: Every usable row, in a stable order (class folder / CSV order).
        class_names: ``(K,)`` class vocabulary in label order. A class may have no row (an empty
            class folder).
        name: Dataset (domain) name.
        source: The folder or CSV file the manifest was built from.
        index_files: Files the manifest itself was read from (CSV); their change invalidates caches.
        ignored: ``(path, reason)`` of every file or row not taken: non-image files in a class
            folder, and (with ``strict=False``) invalid rows.
    """

    rows: tuple[ManifestRow, ...]
    class_names: tuple[str, ...]
    name: str
    source: str
    index_files: tuple[Path, ...] = ()
    ignored: tuple[tuple[str, str], ...] = field(default=())

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[ManifestRow]:
        return iter(self.rows)

    @property
    def has_groups(self) -> bool:
        """Whether any row has a group (patient) id."""
        return any(row.group is not None for row in self.rows)

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names present, in ``train, val, test`` order (empty when no row has a split)."""
        present = {row.split for row in self.rows if row.split is not None}
        return tuple(s for s in SPLITS if s in present)

    def label_index(self, row: ManifestRow) -> int:
        """Index of ``row.label`` in :attr:`class_names`."""
        return self.class_names.index(row.label)

    def class_counts(self) -> dict[str, int]:
        """Rows per class name (every class listed, possibly with 0)."""
        counts = Counter(row.label for row in self.rows)
        return {name: counts.get(name, 0) for name in self.class_names}

    def select_split(self, split: str | None) -> Manifest:
        """The rows of one split (``None`` or ``"all"``: every row).

        Raises:
            ManifestError: ``split`` is not one of the splits present.
        """
        if split is None or split == "all":
            return self
        if split not in self.splits:
            choices = ["all", *self.splits]
            raise ManifestError(self.source, f"unknown split {split!r}; this manifest has: {choices}")
        return replace(self, rows=tuple(row for row in self.rows if row.split == split))


# ------------------------------------------------------------------------------ folder builder


def manifest_from_folder(folder: str | Path, *, name: str | None = None) -> Manifest:
    """Build a manifest from a class-per-folder layout.

    Every non-hidden subfolder of ``folder`` is a class (sorted by name); every image file below it,
    at any depth, is a row of that class. Files are recognised as images by suffix or by content
    (:func:`classify_file`). Hidden files and folders (``.DS_Store``, ``__MACOSX``) are skipped
    silently; other non-image files, and files directly inside ``folder``, are listed in
    :attr:`Manifest.ignored`. An empty class folder is kept as a class with no rows.

    Args:
        folder: The dataset folder.
        name: Dataset name; defaults to the folder's name.

    Raises:
        ManifestError: ``folder`` is not a folder, or has no class subfolder.
    """
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise ManifestError(root, "not a folder")
    name = name or root.name
    entries = sorted(p for p in root.iterdir() if not is_hidden(p))
    class_dirs = [p for p in entries if p.is_dir()]
    if not class_dirs:
        raise ManifestError(root, "no class subfolders: expected one folder per class holding its images")
    ignored = [(str(p), "not inside a class folder") for p in entries if p.is_file()]
    rows: list[ManifestRow] = []
    for class_dir in class_dirs:
        for path in _walk_files(class_dir):
            is_image, reason = classify_file(path)
            if is_image:
                rows.append(ManifestRow(path=path, label=class_dir.name, source=name))
            else:
                ignored.append((str(path), reason))
    return Manifest(
        rows=tuple(rows),
        class_names=tuple(p.name for p in class_dirs),
        name=name,
        source=str(root),
        ignored=tuple(ignored),
    )


def _walk_files(folder: Path) -> Iterator[Path]:
    for dirpath, _, filenames in walk_visible(folder):
        for filename in filenames:
            path = dirpath / filename
            if not is_hidden(path) and path.is_file():
                yield path


# --------------------------------------------------------------------------------- CSV builders


@dataclass
class _RawRow:
    number: int
    path: Path | None
    label: str
    group: str | None
    split: str | None


def manifest_from_csv(
    csv_path: str | Path,
    root: str | Path | None = None,
    *,
    classes: Sequence[str] | None = None,
    name: str | None = None,
    strict: bool = True,
) -> Manifest:
    """Build a manifest from a CSV with columns ``path,label`` and optional ``group,split``.

    Args:
        csv_path: The CSV file (UTF-8, header row first).
        root: Folder that relative paths are relative to; defaults to the CSV's folder.
        classes: The allowed labels in label order; ``None``: the sorted labels found.
        name: Dataset name; defaults to the CSV file's stem.
        strict: Raise on the first invalid row; ``False`` drops it into :attr:`Manifest.ignored`.

    Raises:
        ManifestError: Unreadable CSV, missing or unknown column, no rows, or (strict) a row with a
            missing file, an empty or unknown label, a duplicate path, an unknown split, or a group
            found in two splits. The message names the CSV and the data row.
    """
    csv_path = Path(csv_path).expanduser().resolve()
    base = Path(root).expanduser().resolve() if root is not None else csv_path.parent
    header, records = _read_csv(csv_path)
    columns = [c.strip() for c in header]
    missing = [c for c in CSV_REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(csv_path, f"missing required column(s) {missing}; found {columns}")
    unknown = [c for c in columns if c not in CSV_REQUIRED_COLUMNS + CSV_OPTIONAL_COLUMNS]
    if unknown:
        raise ManifestError(
            csv_path,
            f"unknown column(s) {unknown}; allowed: {list(CSV_REQUIRED_COLUMNS + CSV_OPTIONAL_COLUMNS)}",
        )
    if len(set(columns)) != len(columns):
        raise ManifestError(csv_path, f"duplicate column names in header {columns}")
    raw: list[_RawRow] = []
    for number, record in enumerate(records, start=1):
        values = dict(zip(columns, (v.strip() for v in record)))
        path_text = values.get("path", "")
        path = (base / path_text).resolve() if path_text else None
        raw.append(
            _RawRow(
                number=number,
                path=path,
                label=values.get("label", ""),
                group=values.get("group") or None,
                split=values.get("split") or None,
            )
        )
    return _finish(raw, csv_path, name or csv_path.stem, classes, strict, index_files=(csv_path,))


def manifest_from_catalog(
    dataset: str | DatasetInfo, data_root: str | Path | None = None, *, strict: bool = True
) -> Manifest:
    """Build the manifest of a catalogue dataset of kind ``folder_csv``.

    The image path of each CSV row is ``<data_root>/<folder>/<path columns joined>``, its label
    the label column (one of the catalogue's class names), its group the group column. There is no
    official split, so every row has ``split=None``.

    Args:
        dataset: Catalogue name or its :class:`DatasetInfo`.
        data_root: The data root (else ``$MEDFEW_DATA_ROOT``).
        strict: As in :func:`manifest_from_csv`.

    Raises:
        ManifestError: The dataset is not ``folder_csv``; a column is missing; or (strict) a bad row.
        DatasetNotFoundError: No data root, or the metadata CSV is not in it.
    """
    info = dataset if isinstance(dataset, DatasetInfo) else dataset_info(dataset)
    if info.kind != "folder_csv" or info.metadata_csv is None or info.folder is None:
        raise ManifestError(str(info.manifest_path), f"dataset {info.name!r} is {info.kind!r}, not folder_csv")
    root = resolve_data_root(data_root)
    csv_path = root / info.metadata_csv.path
    if not csv_path.is_file():
        raise DatasetNotFoundError(f"dataset {info.name!r}: metadata CSV {str(csv_path)!r} not found under the data root")
    header, records = _read_csv(csv_path)
    needed = [info.label_column, *info.path_columns] + ([info.group_column] if info.group_column else [])
    missing = [c for c in needed if c not in header]
    if missing:
        raise ManifestError(csv_path, f"missing column(s) {missing} named by {info.manifest_path}")
    index = {c: header.index(c) for c in needed}
    image_root = root / info.folder
    raw: list[_RawRow] = []
    for number, record in enumerate(records, start=1):
        parts = [record[index[c]].strip() for c in info.path_columns]
        path = image_root.joinpath(*parts) if all(parts) else None
        group = None
        if info.group_column:
            group = record[index[info.group_column]].strip() or None
        raw.append(_RawRow(number, path, record[index[info.label_column]].strip(), group, None))
    return _finish(raw, csv_path, info.name, info.class_names, strict, index_files=(csv_path,))


def _read_csv(csv_path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            table = list(csv.reader(fh))
    except FileNotFoundError as exc:
        raise ManifestError(csv_path, "file not found") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(csv_path, f"not a readable UTF-8 CSV ({exc})") from exc
    table = [r for r in table if any(cell.strip() for cell in r)]
    if not table:
        raise ManifestError(csv_path, "empty file: expected a header row and at least one data row")
    header, records = [c.strip() for c in table[0]], table[1:]
    if not records:
        raise ManifestError(csv_path, f"no data rows below the header {header}")
    for number, record in enumerate(records, start=1):
        if len(record) != len(header):
            raise ManifestError(
                csv_path, f"has {len(record)} fields but the header has {len(header)}", row=number
            )
    return header, records


def _finish(
    raw: list[_RawRow],
    source: Path,
    name: str,
    classes: Sequence[str] | None,
    strict: bool,
    *,
    index_files: tuple[Path, ...],
) -> Manifest:
    ignored: list[tuple[str, str]] = []

    def problem(row: _RawRow, message: str) -> None:
        if strict:
            raise ManifestError(source, message, row=row.number)
        where = str(row.path) if row.path is not None else f"{source} row {row.number}"
        ignored.append((where, f"row {row.number}: {message}"))

    known = tuple(classes) if classes is not None else None
    seen_paths: dict[str, int] = {}
    group_split: dict[str, tuple[str, int]] = {}
    rows: list[ManifestRow] = []
    for row in raw:
        if not row.label:
            problem(row, "empty label")
            continue
        if known is not None and row.label not in known:
            problem(row, f"unknown label {short_repr(row.label)}{close_match_hint(row.label, known)}; "
                         f"known labels: {list(known)}")
            continue
        if row.split is not None and row.split not in SPLITS:
            problem(row, f"unknown split {row.split!r}; expected one of {list(SPLITS)} or empty")
            continue
        if row.path is None:
            problem(row, "empty path")
            continue
        if not row.path.is_file():
            problem(row, f"missing file {str(row.path)!r}")
            continue
        key = os.path.normcase(str(row.path))
        if key in seen_paths:
            problem(row, f"duplicate path {str(row.path)!r} (first listed in row {seen_paths[key]})")
            continue
        seen_paths[key] = row.number
        if row.group is not None and row.split is not None:
            first = group_split.setdefault(row.group, (row.split, row.number))
            if first[0] != row.split:
                problem(
                    row,
                    f"group (patient) of this row is in split {row.split!r} but row {first[1]} puts the same "
                    f"group in split {first[0]!r}: one patient must stay in one split",
                )
                continue
        rows.append(ManifestRow(path=row.path, label=row.label, group=row.group, split=row.split, source=name))
    class_names = known if known is not None else tuple(sorted({r.label for r in raw if r.label}))
    return Manifest(
        rows=tuple(rows),
        class_names=class_names,
        name=name,
        source=str(source),
        index_files=index_files,
        ignored=tuple(ignored),
    )
