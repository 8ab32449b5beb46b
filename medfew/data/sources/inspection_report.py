"""What :func:`~medfew.data.sources.inspect.inspect_path` finds: :class:`InspectionReport` (per-class
counts, sizes, modalities, problems) with its text and JSON forms."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SIZE_BINS: tuple[tuple[str, int], ...] = (("<=64", 64), ("65-256", 256), ("257-1024", 1024), (">1024", 1 << 62))
"""Histogram bins of the longest image side."""

@dataclass(frozen=True)
class ClassSummary:
    """Usable images of one class.

    Attributes:
        name: Class name.
        n_images: Usable (decodable) images.
        splits: Usable images per split, when the source has splits.
        n_groups: Distinct groups (patients) among the usable images, when the source has groups.
    """

    name: str
    n_images: int
    splits: dict[str, int] = field(default_factory=dict)
    n_groups: int | None = None


@dataclass(frozen=True)
class InspectionReport:
    """What :func:`inspect_path` found.

    Attributes:
        path: The inspected path (or catalogue name).
        kind: ``class_folder``, ``flat_folder``, ``csv``, ``npz``, or ``catalog:<kind>``.
        name: Dataset name.
        classes: One entry per class, in label order (empty for a flat folder).
        n_images: Usable images in total.
        problems: ``(path, reason)`` of every file or row that cannot be used.
        ignored: ``(path, reason)`` of files deliberately not taken (e.g. a CSV beside the classes).
        modalities: Usable images per modality.
        formats: Usable images per file format.
        sizes: ``(H, W)`` of each usable image file (MedMNIST: one entry per split).
        size_counts: How many images each entry of ``sizes`` stands for.
        n_groups: Distinct groups (patients) in total, or ``None`` without a group column.
        splits: Usable images per split, when known.
    """

    path: str
    kind: str
    name: str
    classes: tuple[ClassSummary, ...]
    n_images: int
    problems: tuple[tuple[str, str], ...]
    ignored: tuple[tuple[str, str], ...] = ()
    modalities: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    sizes: tuple[tuple[int, int], ...] = ()
    size_counts: tuple[int, ...] = ()
    n_groups: int | None = None
    splits: dict[str, int] = field(default_factory=dict)

    def size_summary(self) -> dict[str, Any]:
        """``{"min": [H, W], "max": [H, W], "histogram": {bin: n}}`` over the longest side (empty when no image)."""
        if not self.sizes:
            return {}
        arr = np.asarray(self.sizes)
        weights = np.asarray(self.size_counts or [1] * len(self.sizes))
        longest = arr.max(axis=1)
        histogram: dict[str, int] = {}
        low = 0
        for label, high in SIZE_BINS:
            histogram[label] = int(weights[(longest > low) & (longest <= high)].sum())
            low = high
        by_area = arr.prod(axis=1)
        return {
            "min": [int(v) for v in arr[int(by_area.argmin())]],
            "max": [int(v) for v in arr[int(by_area.argmax())]],
            "histogram": histogram,
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``classes``, ``problems`` and the rest)."""
        return {
            "path": self.path,
            "kind": self.kind,
            "name": self.name,
            "n_images": self.n_images,
            "n_groups": self.n_groups,
            "splits": dict(self.splits),
            "classes": [
                {"name": c.name, "n_images": c.n_images, "splits": dict(c.splits), "n_groups": c.n_groups}
                for c in self.classes
            ],
            "modalities": dict(self.modalities),
            "formats": dict(self.formats),
            "image_sizes": self.size_summary(),
            "problems": [{"path": p, "reason": r} for p, r in self.problems],
            "ignored": [{"path": p, "reason": r} for p, r in self.ignored],
        }

    def format_text(self) -> str:
        """A readable report: a class table, then modalities, sizes, problems."""
        head = f"{self.path} ({self.kind}): {self.n_images} usable image(s)"
        if self.classes:
            head += f" in {len(self.classes)} class(es)"
        if self.n_groups is not None:
            head += f", {self.n_groups} group(s)"
        lines = [head]
        if self.classes:
            lines += ["", *_class_table(self.classes, list(self.splits), self.n_groups is not None)]
        lines.append("")
        lines.append("modalities: " + (_counts_text(self.modalities) or "-"))
        lines.append("formats:    " + (_counts_text(self.formats) or "-"))
        summary = self.size_summary()
        if summary:
            (h0, w0), (h1, w1) = summary["min"], summary["max"]
            lines.append(f"image size: min {h0}x{w0}, max {h1}x{w1} (HxW)")
            lines.append("longest side: " + _counts_text(summary["histogram"], keep_zero=True))
        for title, entries in (("problems", self.problems), ("ignored", self.ignored)):
            lines.append("")
            lines.append(f"{title}: {len(entries)}" if entries else f"{title}: none")
            lines += [f"  {p}: {r}" for p, r in entries]
        return "\n".join(lines)


def _counts_text(counts: dict[str, int], keep_zero: bool = False) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v or keep_zero)


def _class_table(classes: Iterable[ClassSummary], splits: list[str], groups: bool) -> list[str]:
    classes = list(classes)
    width = max(12, *(len(c.name) for c in classes))
    cols = ["images", *splits] + (["groups"] if groups else [])
    lines = ["class".ljust(width) + "".join(f"{c:>8}" for c in cols)]
    for c in classes:
        cells = [c.n_images, *(c.splits.get(s, 0) for s in splits)]
        if groups:
            cells.append(c.n_groups if c.n_groups is not None else "-")
        lines.append(c.name.ljust(width) + "".join(f"{v:>8}" for v in cells))
    return lines
