"""Inspect a dataset before using it: classes, usable image counts, sizes, modalities, problems.

:func:`inspect_path` accepts a class-per-folder directory, a flat folder of images (e.g. DICOM
files), a manifest CSV, a MedMNIST ``.npz`` or a catalogue name. It never stops at the first bad
file: every file is checked and every failure is reported with its reason.

How files are checked: by default every image is **fully decoded** with the same reader that
training uses (``load_image``), because header checks miss truncated pixel data (a truncated JPEG
opens fine and fails only on decode). ``decode=False`` checks headers only (Pillow ``open`` +
``verify`` for rasters, DICOM metadata without pixels): much faster on big folders, but a file it
passes can still fail to decode later.

Folder rule: a folder with at least one (non-hidden) subfolder is a class-per-folder dataset, every
subfolder a class; a folder without subfolders is a *flat* collection: ``classes`` is empty and the
images are only counted, by modality and size. Hidden files (``.DS_Store``, ``__MACOSX``) are skipped
silently; files lying directly in a class-per-folder root are listed under ``ignored``.

Entries that can never be images are problems too, never skipped silently: a broken symbolic link,
a symbolic link loop, a FIFO, socket or device file (never opened: reading a FIFO would block), and a
folder named like an image file (``scan.png/``), which does not make a class. An ``.npz`` among the
images is reported with the real reason it cannot be used (e.g. an array of Python objects, which is
never unpickled).

Modality: the DICOM ``Modality`` (``CT``, ``MR``...) for DICOM files, the file format (``png``,
``jpeg``...) for raster files, and the catalogue's modality for MedMNIST.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from medfew.data.readers import load_image, read_dicom_metadata, read_medmnist, sniff_format
from medfew.data.sources.catalog import DatasetInfo, dataset_info, is_catalog_name, npz_dataset_name, resolve_data_root
from medfew.data.sources.folder_entries import (
    IMAGE_FORMATS,
    is_hidden,
    named_like_image,
    unusable_entries,
    unusable_entry,
)
from medfew.data.sources.inspection_report import ClassSummary, InspectionReport
from medfew.data.sources.kinds import NpzSource, dataset_kind
from medfew.data.sources.manifest import Manifest, ManifestRow, manifest_from_csv, manifest_from_folder
from medfew.errors import DatasetNotFoundError, ImageReadError

_ROOT_FILE = "not inside a class folder"


# --------------------------------------------------------------------------------- entry point


def inspect_path(path: str | Path, *, data_root: str | Path | None = None, decode: bool = True) -> InspectionReport:
    """Inspect a dataset folder, manifest CSV, MedMNIST ``.npz`` or catalogue name.

    Args:
        path: What to inspect. A string without a path separator that names a catalogue dataset is
            looked up in the data root.
        data_root: Data root for catalogue names (else ``$MEDFEW_DATA_ROOT``).
        decode: Fully decode each image (default, exact); ``False``: headers only (fast).

    Returns:
        The report; unusable files are in ``report.problems``, never raised.

    Raises:
        DatasetNotFoundError: ``path`` does not exist and is not a catalogue name.
        ManifestError: A CSV that cannot be read at all (unreadable, missing or unknown columns).
    """
    if isinstance(path, str) and is_catalog_name(path):
        return _inspect_catalog(dataset_info(path), data_root, decode)
    p = Path(path).expanduser()
    if p.is_dir():
        if any(child.is_dir() and not is_hidden(child) and not named_like_image(child) for child in p.iterdir()):
            manifest = manifest_from_folder(p)
            return _inspect_manifest(manifest, str(p), "class_folder", Path(manifest.source), decode)
        return _inspect_flat(p, decode)
    if p.is_file() and p.suffix.lower() == ".csv":
        manifest = manifest_from_csv(p, strict=False)
        return _inspect_manifest(manifest, str(p), "csv", p.resolve().parent, decode)
    if p.is_file() and p.suffix.lower() == ".npz":
        stem = npz_dataset_name(p)
        info = dataset_info(stem) if is_catalog_name(stem) else None
        return _inspect_npz(p, str(p), "npz", info)
    raise DatasetNotFoundError(f"{str(path)!r} is not an existing folder, .csv or .npz file, nor a catalogue name")


# ------------------------------------------------------------------------------------- sources


def _inspect_catalog(info: DatasetInfo, data_root: str | Path | None, decode: bool) -> InspectionReport:
    root = resolve_data_root(data_root)
    kind = f"catalog:{info.kind}"
    try:
        located = dataset_kind(info.kind).locate(info, root, strict=False)
    except DatasetNotFoundError as exc:
        return _missing(info, kind, str(exc))
    if isinstance(located, NpzSource):
        return _inspect_npz(located.path, info.name, kind, info, base=root)
    return _inspect_manifest(located, info.name, kind, root, decode, info=info)


def _missing(info: DatasetInfo, kind: str, reason: str) -> InspectionReport:
    return InspectionReport(
        path=info.name,
        kind=kind,
        name=info.name,
        classes=tuple(ClassSummary(name, 0) for name in info.class_names),
        n_images=0,
        problems=((info.name, reason),),
    )


def _inspect_npz(
    npz: Path, shown: str, kind: str, info: DatasetInfo | None, base: Path | None = None
) -> InspectionReport:
    name = info.name if info is not None else npz.stem
    rel = _rel(npz, base or npz.parent)
    if not npz.is_file():
        reason = "file not found" + (f": run `medfew data fetch {info.name}`" if info is not None else "")
        if info is not None:
            return _missing(info, kind, f"{rel}: {reason}")
        return InspectionReport(shown, kind, name, (), 0, ((rel, reason),))
    problems: list[tuple[str, str]] = []
    per_split: dict[str, np.ndarray] = {}
    sizes: list[tuple[int, int]] = []
    size_counts: list[int] = []
    for split in ("train", "val", "test"):
        try:
            images, labels = read_medmnist(npz, split)
        except Exception as exc:  # noqa: BLE001 - a broken archive is reported, not raised
            problems.append((rel, f"split {split!r}: {getattr(exc, 'reason', exc)}"))
            continue
        per_split[split] = np.asarray(labels, dtype=np.int64).reshape(-1)
        sizes.append((int(images.shape[1]), int(images.shape[2])))
        size_counts.append(int(images.shape[0]))
    n_classes = len(info.class_names) if info is not None else 0
    for labels in per_split.values():
        if labels.size:
            n_classes = max(n_classes, int(labels.max()) + 1)
    names = list(info.class_names) if info is not None else []
    names += [str(i) for i in range(len(names), n_classes)]
    counts = {s: np.bincount(lab, minlength=n_classes) for s, lab in per_split.items()}
    classes = tuple(
        ClassSummary(cname, int(sum(c[i] for c in counts.values())), {s: int(c[i]) for s, c in counts.items()})
        for i, cname in enumerate(names)
    )
    total = sum(int(lab.size) for lab in per_split.values())
    return InspectionReport(
        path=shown,
        kind=kind,
        name=name,
        classes=classes,
        n_images=total,
        problems=tuple(problems),
        modalities={info.modality if info is not None else "medmnist": total} if total else {},
        formats={"npz": total} if total else {},
        sizes=tuple(sizes),
        size_counts=tuple(size_counts),
        splits={s: int(lab.size) for s, lab in per_split.items()},
    )


def _inspect_manifest(
    manifest: Manifest, shown: str, kind: str, base: Path, decode: bool, info: DatasetInfo | None = None
) -> InspectionReport:
    problems = [(_rel(Path(p), base), _npz_reason(Path(p)) or r) for p, r in manifest.ignored if r != _ROOT_FILE]
    ignored = [(_rel(Path(p), base), r) for p, r in manifest.ignored if r == _ROOT_FILE]
    if kind == "class_folder":
        problems += [(_rel(p, base), r) for p, r in unusable_entries(base)]
    good: list[ManifestRow] = []
    modalities: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    sizes: list[tuple[int, int]] = []
    for row in manifest.rows:
        result = _check_file(row.path, decode)
        if isinstance(result, str):
            problems.append((_rel(row.path, base), result))
            continue
        fmt, modality, size = result
        good.append(row)
        formats[fmt] += 1
        modalities[modality] += 1
        sizes.append(size)
    splits = [s for s in ("train", "val", "test") if any(r.split == s for r in manifest.rows)]
    has_groups = manifest.has_groups
    classes = []
    for cname in manifest.class_names:
        members = [r for r in good if r.label == cname]
        classes.append(
            ClassSummary(
                name=cname,
                n_images=len(members),
                splits={s: sum(r.split == s for r in members) for s in splits},
                n_groups=len({r.group for r in members if r.group is not None}) if has_groups else None,
            )
        )
    return InspectionReport(
        path=shown,
        kind=kind,
        name=info.name if info is not None else manifest.name,
        classes=tuple(classes),
        n_images=len(good),
        problems=tuple(sorted(problems)),
        ignored=tuple(ignored),
        modalities=dict(modalities.most_common()),
        formats=dict(formats.most_common()),
        sizes=tuple(sizes),
        size_counts=(1,) * len(sizes),
        n_groups=len({r.group for r in good if r.group is not None}) if has_groups else None,
        splits={s: sum(r.split == s for r in good) for s in splits},
    )


def _inspect_flat(folder: Path, decode: bool) -> InspectionReport:
    problems: list[tuple[str, str]] = []
    modalities: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    sizes: list[tuple[int, int]] = []
    for path in sorted(p for p in folder.iterdir() if not is_hidden(p)):
        reason = unusable_entry(path)
        if reason is not None:
            problems.append((path.name, reason))
        if reason is not None or not path.is_file():
            continue
        result = _check_file(path, decode)
        if isinstance(result, str):
            problems.append((path.name, result))
            continue
        fmt, modality, size = result
        formats[fmt] += 1
        modalities[modality] += 1
        sizes.append(size)
    return InspectionReport(
        path=str(folder),
        kind="flat_folder",
        name=folder.resolve().name,
        classes=(),
        n_images=len(sizes),
        problems=tuple(problems),
        modalities=dict(modalities.most_common()),
        formats=dict(formats.most_common()),
        sizes=tuple(sizes),
        size_counts=(1,) * len(sizes),
    )


# ------------------------------------------------------------------------------- one file check


def _check_file(path: Path, decode: bool) -> tuple[str, str, tuple[int, int]] | str:
    """``(format, modality, (H, W))`` of a usable image, or the reason it is not usable."""
    try:
        fmt = sniff_format(path)
    except ImageReadError as exc:
        return exc.reason
    if fmt == "npz":
        return _npz_reason(path) or "a NumPy .npz file, not an image"
    if fmt not in IMAGE_FORMATS:
        return f"a {fmt} file, not an image"
    try:
        modality = _dicom_modality(path) if fmt == "dicom" else fmt
        if decode:
            array = load_image(path)
            size = (int(array.shape[-2]), int(array.shape[-1]))
        else:
            size = _header_size(path, fmt)
    except ImageReadError as exc:
        return exc.reason
    except Exception as exc:  # noqa: BLE001 - a decoder crash is a per-file problem, not a reason to stop
        return f"{type(exc).__name__}: {exc}"
    return fmt, modality, size


def _npz_reason(path: Path) -> str | None:
    """Why an ``.npz`` found among the images cannot be used (``None`` for another format).

    Read with the image reader, which checks the array header first and never unpickles.
    """
    try:
        if sniff_format(path) != "npz":
            return None
    except ImageReadError:
        return None
    try:
        load_image(path)
    except ImageReadError as exc:
        return f"a NumPy .npz that is not a usable image: {exc.reason}"
    return "a NumPy .npz array: dataset folders take image files (PNG, JPEG, TIFF, BMP, DICOM, NIfTI), not .npz"


def _dicom_modality(path: Path) -> str:
    clinical = getattr(read_dicom_metadata(path), "clinical", None) or {}
    return str(clinical.get("Modality") or "unknown DICOM modality")


def _header_size(path: Path, fmt: str) -> tuple[int, int]:
    """``(H, W)`` from the header only (``decode=False``)."""
    if fmt == "dicom":
        meta = read_dicom_metadata(path)
        for rows, cols in (("rows", "columns"), ("Rows", "Columns")):
            values = (getattr(meta, rows, None), getattr(meta, cols, None))
            if all(isinstance(v, int) for v in values):
                return int(values[0]), int(values[1])
        clinical = getattr(meta, "clinical", None) or {}
        if isinstance(clinical.get("Rows"), int) and isinstance(clinical.get("Columns"), int):
            return int(clinical["Rows"]), int(clinical["Columns"])
        array = load_image(path)  # no size in the metadata: decode after all
        return int(array.shape[-2]), int(array.shape[-1])
    if fmt == "nifti":
        array = load_image(path)
        return int(array.shape[-2]), int(array.shape[-1])
    try:
        with Image.open(path) as im:
            width, height = im.size
            im.verify()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
        raise ImageReadError(path, f"broken {fmt} file ({exc})") from exc
    return int(height), int(width)


def _rel(path: Path, base: Path) -> str:
    """``path`` relative to ``base``; only its folder is resolved (a link is shown by its own name, a loop is fine)."""
    try:
        return (path.parent.resolve() / path.name).relative_to(base.resolve()).as_posix()
    except (ValueError, OSError, RuntimeError):
        return str(path)
