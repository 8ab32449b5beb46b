"""Folder entries that can never be images: broken or looping symbolic links, FIFOs, sockets, devices, ``x.png/``.

``data inspect`` lists them as problems instead of skipping them silently. Only ``stat`` is called on
an entry, so a FIFO is never opened (reading one would block).
"""

from __future__ import annotations

import errno
import stat
from collections.abc import Iterator
from pathlib import Path

from medfew.data.sources.manifest import IMAGE_SUFFIXES, is_hidden, walk_visible


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
