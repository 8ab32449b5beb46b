"""What a folder holds, for manifests and ``data inspect``: which files are image candidates
(:func:`classify_file`), which are OS clutter (:func:`is_hidden`), a loop-safe walk
(:func:`walk_visible`), and the entries that can never be images (broken or looping symbolic links,
FIFOs, sockets, devices, ``x.png/``).

``data inspect`` lists the latter as problems instead of skipping them silently. Only ``stat`` is called on
an entry, so a FIFO is never opened (reading one would block).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from medfew.data.readers import sniff_format
from medfew.errors import ImageReadError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom", ".dic", ".nii"}
)
IMAGE_FORMATS = frozenset({"dicom", "png", "jpeg", "tiff", "bmp", "nifti"})
"""Formats (as :func:`~medfew.data.readers.sniff_format` names them) that are images."""
_JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


def is_hidden(path: Path) -> bool:
    """Whether a file or folder is OS clutter ignored silently (``.DS_Store``, ``__MACOSX``, dotfiles)."""
    return path.name.startswith(".") or path.name in _JUNK_NAMES


def classify_file(path: Path) -> tuple[bool, str]:
    """Whether a file is an image candidate, and why not when it is not.

    A known image suffix is enough (a broken ``.png`` still counts: decoding reports it later).
    Files without one are recognised by content, so a DICOM named ``IM0001`` counts.

    Returns:
        ``(True, "")`` for an image candidate, else ``(False, reason)``.
    """
    name = path.name.lower()
    if path.suffix.lower() in IMAGE_SUFFIXES or name.endswith(".nii.gz"):
        return True, ""
    try:
        fmt = sniff_format(path)
    except ImageReadError as exc:
        return False, exc.reason
    except OSError as exc:
        return False, f"cannot read file ({exc})"
    if fmt not in IMAGE_FORMATS:
        return False, f"a {fmt} file, not an image"
    return True, ""


def walk_visible(root: Path) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``os.walk(root, followlinks=True)`` in sorted order, without hidden folders, and visiting each
    real folder once (a symlink loop is walked once): ``(folder, subfolder names, file names)``."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(Path(d)))
        yield Path(dirpath), dirnames, sorted(filenames)


def named_like_image(path: Path) -> bool:
    """Whether a name ends like an image file (``.png``, ``.dcm``, ``.nii.gz``...)."""
    name = path.name.lower()
    return path.suffix.lower() in IMAGE_SUFFIXES or name.endswith(".nii.gz")


def unusable_entry(path: Path) -> str | None:
    """Why a folder entry can never be an image (a link to nowhere, a FIFO, a folder named ``x.png``), else ``None``.

    Only ``lstat`` / ``stat`` are called: a FIFO is never opened.
    """
    try:
        mode = path.stat().st_mode  # follows symbolic links
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop: it never reaches a file"
        if path.is_symlink():
            return "broken symbolic link: its target does not exist"
        return f"cannot read ({exc.strerror or type(exc).__name__})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder named like an image file, not an image" if named_like_image(path) else None
    if stat.S_ISFIFO(mode):
        kind = "a FIFO (named pipe)"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device file"
    else:
        kind = "a special file"
    return f"not a regular file: {kind}"


def unusable_entries(root: Path) -> Iterator[tuple[Path, str]]:
    """Every entry below a class-per-folder root (links followed once) that :func:`unusable_entry` rejects."""
    for dirpath, dirnames, filenames in walk_visible(root):
        for name in filenames + dirnames:
            path = dirpath / name
            reason = None if is_hidden(path) else unusable_entry(path)
            if reason is not None:
                yield path, reason
