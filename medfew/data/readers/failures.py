"""Turning what third-party decoders raise on malformed files into ``ImageReadError`` naming the file and why."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from medfew.errors import ImageReadError, MedfewError

MALFORMED: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,  # numpy's UFuncTypeError too
    IndexError,
    AttributeError,
    KeyError,
    ArithmeticError,
    EOFError,
    struct.error,
    zlib.error,
)
"""What pydicom, Pillow, nibabel and numpy raise on malformed content (not medfew's own errors)."""


def describe(exc: BaseException) -> str:
    """``"<type>: <message>"`` on one line, bounded in length (messages may quote untrusted values)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"


@contextmanager
def reading(name: str, what: str) -> Iterator[None]:
    """Re-raise a :data:`MALFORMED` exception of the block as ``ImageReadError(name, f"{what} (...)")``.

    Args:
        name: The file name.
        what: The step that failed, e.g. ``"cannot apply the Modality LUT"``.

    Raises:
        ImageReadError: For any :data:`MALFORMED` exception; medfew's own errors pass unchanged.
    """
    try:
        yield
    except MedfewError:
        raise
    except MALFORMED as exc:
        raise ImageReadError(name, f"{what} ({describe(exc)})") from exc
