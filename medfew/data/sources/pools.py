"""Load an :class:`~medfew.data.episodes.pool.ImagePool` from a catalogue name, folder, CSV or ``.npz``.

Every image is decoded and resized once; the result is cached in memory and on disk (see
:mod:`medfew.data.sources.pool_cache`). Nothing is ever written to the data root.

Sources, tried in this order:

- a string naming a catalogue dataset (no path separator): ``"bloodmnist"``, ``"covid_chestxray_rare"``;
- a folder: class-per-folder layout (:func:`~medfew.data.sources.manifest.manifest_from_folder`);
- a ``.csv`` file: a manifest CSV (:func:`~medfew.data.sources.manifest.manifest_from_csv`);
- a ``.npz`` file in MedMNIST layout (class names from the catalogue when the file name matches).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from medfew.data.episodes.pool import ImagePool
from medfew.data.preprocessing import preprocess_batch, preprocess_image
from medfew.data.readers import load_image, read_medmnist
from medfew.data.sources.catalog import (
    MEDMNIST_SPLITS,
    DatasetInfo,
    dataset_info,
    is_catalog_name,
    list_datasets,
    npz_dataset_name,
    resolve_data_root,
)
from medfew.data.sources.checksums import file_digest
from medfew.data.sources.kinds import NpzSource, dataset_kind
from medfew.data.sources.manifest import Manifest, manifest_from_csv, manifest_from_folder
from medfew.data.sources.pool_cache import (  # noqa: F401 - re-exported
    PREPROCESS_VERSION,
    cache_dir,
    cache_key,
    cache_stats,
    clear_memory_cache,
    lookup,
    note_build,
    store,
)
from medfew.errors import ConfigError, DatasetNotFoundError, ImageReadError, ManifestError, MedfewError

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]


def load_pool(
    source: str | Path,
    *,
    split: str | None = None,
    data_root: str | Path | None = None,
    image_size: int = 28,
    channels: int = 3,
    cache: bool = True,
    on_error: OnError = "raise",
    progress: bool = False,
) -> ImagePool:
    """Decode every image of one dataset split into an :class:`ImagePool`.

    Args:
        source: A catalogue name, a class-per-folder directory, a manifest CSV or a MedMNIST ``.npz``.
        split: MedMNIST: required, one of ``train``, ``val``, ``test``. Folders and CSVs: ``None`` or
            ``"all"`` for every image, else a split named in the CSV's ``split`` column.
        data_root: Data root for catalogue names (else ``$MEDFEW_DATA_ROOT``).
        image_size: Side ``S`` of the square output images.
        channels: ``C``, 1 (greyscale) or 3.
        cache: Use and fill the memory and disk caches.
        on_error: ``"raise"``: the first unreadable image raises its
            :class:`~medfew.errors.ImageReadError`. ``"skip"``: each unreadable image is skipped with
            a warning naming it, and listed in ``provenance["skipped"]``.
        progress: Show a progress bar while decoding image files.

    Returns:
        The pool: ``images (M, C, S, S)`` (uint8 for MedMNIST, float32 in ``[0, 1]`` for image
        files), ``labels (M,)`` int64, ``groups (M,)`` int64 (``-1`` unknown) or ``None`` when the
        source has no group column. Treat it as read-only: cache hits return the same object.

    Raises:
        ConfigError: Bad ``image_size``, ``channels``, ``on_error`` or ``split``.
        DatasetNotFoundError: Unknown source, or its files are missing.
        ManifestError: An invalid manifest, or no usable image at all.
        ImageReadError: With ``on_error="raise"``, the first image that cannot be decoded.
    """
    _check_args(image_size, channels, on_error)
    plan = _plan(source, split, data_root, image_size)
    key = cache_key(
        kind=plan.kind, name=plan.name, split=plan.split, class_names=plan.class_names,
        files=plan.key_files, image_size=image_size, channels=channels, on_error=on_error,
    )
    if cache:
        hit = lookup(key)
        if hit is not None:
            return hit
    pool = _build(plan, image_size, channels, on_error, progress)
    note_build()
    if cache:
        store(key, pool)
    return pool


def load_pools(
    names: Sequence[str | Path],
    split: str | None | Mapping[str, str | None] = None,
    **kwargs: Any,
) -> list[ImagePool]:
    """:func:`load_pool` for several sources.

    Args:
        names: Sources, as for :func:`load_pool`.
        split: One split for all, or a mapping source name -> split (missing names get ``None``).
        **kwargs: Passed to :func:`load_pool`.
    """
    pools = []
    for name in names:
        this_split = split.get(str(name)) if isinstance(split, Mapping) else split
        pools.append(load_pool(name, split=this_split, **kwargs))
    return pools


# ------------------------------------------------------------------------------------ planning


@dataclass
class _Plan:
    """What to load: enough to compute the cache key without decoding anything."""

    kind: Literal["medmnist", "manifest"]
    name: str
    split: str
    class_names: tuple[str, ...]
    key_files: list[Path]
    base: Path  # provenance paths are relative to this
    npz_path: Path | None = None
    info: DatasetInfo | None = None
    native_size: int | None = None
    manifest: Manifest | None = None


def _check_args(image_size: int, channels: int, on_error: str) -> None:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}")
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def _plan(source: str | Path, split: str | None, data_root: str | Path | None, image_size: int) -> _Plan:
    if isinstance(source, str) and is_catalog_name(source):
        info = dataset_info(source)
        root = resolve_data_root(data_root)
        located = dataset_kind(info.kind).locate(info, root, image_size=image_size)
        if isinstance(located, NpzSource):
            return _Plan("medmnist", info.name, _medmnist_split(info.name, split), info.class_names, [located.path],
                         located.base, located.path, info, native_size=located.native_size)
        return _plan_manifest(located, split, root, info)
    path = Path(source).expanduser()
    if path.is_dir():
        manifest = manifest_from_folder(path)
        return _plan_manifest(manifest, split, Path(manifest.source))
    if path.is_file() and path.suffix.lower() == ".csv":
        manifest = manifest_from_csv(path)
        return _plan_manifest(manifest, split, path.resolve().parent)
    if path.is_file() and path.suffix.lower() == ".npz":
        return _plan_npz(path.resolve(), split)
    raise DatasetNotFoundError(
        f"{str(source)!r} is neither a catalogue dataset ({', '.join(list_datasets())}) nor an existing "
        "folder, .csv or .npz file"
    )


def _medmnist_split(name: str, split: str | None) -> str:
    if split not in MEDMNIST_SPLITS:
        raise ConfigError(
            f"split={split!r}: MedMNIST dataset {name!r} needs split= one of {', '.join(MEDMNIST_SPLITS)}"
        )
    return split


def _plan_npz(path: Path, split: str | None) -> _Plan:
    stem = npz_dataset_name(path)
    info = dataset_info(stem) if is_catalog_name(stem) else None
    name = info.name if info is not None else path.stem
    class_names = info.class_names if info is not None else ()
    return _Plan("medmnist", name, _medmnist_split(name, split), class_names, [path], path.parent, path, info)


def _plan_manifest(manifest: Manifest, split: str | None, base: Path, info: DatasetInfo | None = None) -> _Plan:
    selected = manifest.select_split(split)
    return _Plan(
        kind="manifest",
        name=manifest.name,
        split=split or "all",
        class_names=manifest.class_names,
        key_files=[*manifest.index_files, *(row.path for row in selected.rows)],
        base=base,
        info=info,
        manifest=selected,
    )


# ------------------------------------------------------------------------------------ building


def _build(plan: _Plan, image_size: int, channels: int, on_error: str, progress: bool) -> ImagePool:
    if plan.kind == "medmnist":
        return _build_medmnist(plan, image_size, channels)
    return _build_manifest(plan, image_size, channels, on_error, progress)


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


def _build_medmnist(plan: _Plan, image_size: int, channels: int) -> ImagePool:
    assert plan.npz_path is not None
    npz = plan.npz_path
    sha256 = file_digest(npz, "sha256")
    spec = plan.info.files.get(plan.native_size) if plan.info is not None and plan.native_size else None
    if spec is not None:
        expected = spec.sha256 or spec.md5
        actual = sha256 if spec.sha256 else (file_digest(npz, "md5") if spec.md5 else None)
        if expected and actual != expected.lower():
            raise MedfewError(
                f"{npz}: checksum differs from the catalogue ({'sha256' if spec.sha256 else 'md5'} expected "
                f"{expected}, got {actual}): the file is damaged or not the official one; fetch it again"
            )
    raw_images, raw_labels = read_medmnist(npz, plan.split)
    labels = torch.as_tensor(np.asarray(raw_labels, dtype=np.int64).reshape(-1))
    class_names = plan.class_names
    if not class_names:
        n = int(labels.max()) + 1 if labels.numel() else 0
        class_names = tuple(str(i) for i in range(n))
    if labels.numel() and int(labels.max()) >= len(class_names):
        raise ManifestError(npz, f"labels go up to {int(labels.max())} but {plan.name!r} has {len(class_names)} classes")
    images = preprocess_batch(raw_images, image_size=image_size, channels=channels).contiguous()
    provenance = {
        "kind": "medmnist",
        "dataset": plan.name,
        "split": plan.split,
        "files": [{"path": _relative(npz, plan.base), "sha256": sha256, "size_bytes": npz.stat().st_size}],
        "native_size": int(raw_images.shape[1]),
        "image_size": image_size,
        "channels": channels,
        "preprocess_version": PREPROCESS_VERSION,
        "skipped": [],
    }
    return ImagePool(
        images=images,
        labels=labels,
        class_names=tuple(class_names),
        name=plan.name,
        groups=None,
        split=plan.split,
        provenance=provenance,
    )


def _build_manifest(plan: _Plan, image_size: int, channels: int, on_error: str, progress: bool) -> ImagePool:
    manifest = plan.manifest
    assert manifest is not None
    for path, reason in manifest.ignored:
        if reason != "not inside a class folder":
            warnings.warn(f"{plan.name}: ignoring {path}: {reason}", RuntimeWarning, stacklevel=4)
    images: list[torch.Tensor] = []
    labels: list[int] = []
    groups: list[str | None] = []
    skipped: list[dict[str, str]] = []
    digests: list[str] = []
    rows = tqdm(manifest.rows, desc=f"decoding {plan.name}", unit="img", disable=not progress)
    for row in rows:
        try:
            image = load_image(row.path)
            tensor = preprocess_image(image, image_size=image_size, channels=channels)
        except ImageReadError as exc:
            if on_error == "raise":
                raise
            warnings.warn(f"{plan.name}: skipping unreadable image {row.path}: {exc.reason}", RuntimeWarning, stacklevel=4)
            skipped.append({"path": _relative(row.path, plan.base), "reason": exc.reason})
            continue
        images.append(torch.as_tensor(tensor, dtype=torch.float32))
        labels.append(manifest.label_index(row))
        groups.append(row.group)
        digests.append(f"{_relative(row.path, plan.base)}\t{file_digest(row.path)}")
    if not images:
        raise ManifestError(manifest.source, f"no usable image ({len(skipped)} unreadable, split {plan.split!r})")
    label_tensor = torch.tensor(labels, dtype=torch.int64)
    counts = np.bincount(label_tensor.numpy(), minlength=len(plan.class_names))
    empty = [name for name, n in zip(plan.class_names, counts) if n == 0]
    if empty:
        warnings.warn(f"{plan.name}: classes with no usable image: {empty}", RuntimeWarning, stacklevel=4)
    group_tensor = None
    if manifest.has_groups:
        ids = {g: i for i, g in enumerate(sorted({g for g in groups if g is not None}))}
        group_tensor = torch.tensor([ids[g] if g is not None else -1 for g in groups], dtype=torch.int64)
    provenance: dict[str, Any] = {
        "kind": "catalog" if plan.info is not None else "manifest",
        "dataset": plan.name,
        "split": plan.split,
        "files": [
            {"path": _relative(p, plan.base), "sha256": file_digest(p), "size_bytes": p.stat().st_size}
            for p in manifest.index_files
        ],
        "n_image_files": len(digests),
        "images_sha256": hashlib.sha256("\n".join(digests).encode()).hexdigest(),
        "image_size": image_size,
        "channels": channels,
        "preprocess_version": PREPROCESS_VERSION,
        "skipped": skipped,
    }
    _check_index_checksum(plan, provenance)
    return ImagePool(
        images=torch.stack(images).contiguous(),
        labels=label_tensor,
        class_names=plan.class_names,
        name=plan.name,
        groups=group_tensor,
        split=plan.split,
        provenance=provenance,
    )


def _check_index_checksum(plan: _Plan, provenance: dict[str, Any]) -> None:
    """Warn when a catalogue dataset's metadata CSV differs from the catalogue's checksum."""
    spec = plan.info.metadata_csv if plan.info is not None else None
    if spec is None or not spec.sha256:
        return
    for entry in provenance["files"]:
        if entry["path"] == spec.path and entry["sha256"] != spec.sha256:
            warnings.warn(
                f"{plan.name}: {spec.path} differs from the catalogue (sha256 {entry['sha256']}, "
                f"expected {spec.sha256}); using it as it is",
                RuntimeWarning,
                stacklevel=5,
            )
