"""Message helpers shared by every layer: bounded reprs of untrusted values and "did you mean" hints.

Error messages quote the value a user gave. That value may come from an untrusted file (a YAML
config, a sidecar, a DICOM header), so it is never ``repr()``-ed unbounded: a shared-reference YAML
"billion laughs" list or a 5000-digit integer would otherwise blow up the message itself.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable

_INT_BITS_SHOWN = 128
_MAX_CHARS = 200


class _BoundedRepr(reprlib.Repr):
    """``reprlib`` with small limits, and huge integers described instead of printed."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 2
        self.maxtuple = self.maxlist = self.maxarray = self.maxdict = 6
        self.maxset = self.maxfrozenset = self.maxdeque = 6
        self.maxstring = self.maxother = 80
        self.maxlong = 40

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > _INT_BITS_SHOWN:
            return f"<an integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)


_REPR = _BoundedRepr()


def short_repr(value: object) -> str:
    """A ``repr`` of ``value`` bounded in length and depth (at most 200 characters).

    Example:
        >>> short_repr("x" * 1000)[:10]
        "'xxxxxxxxx"
    """
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not hide the real error
        return f"<a {type(value).__name__}>"
    return text if len(text) <= _MAX_CHARS else text[: _MAX_CHARS - 3] + "..."


def close_match_hint(value: object, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""`` when none is close."""
    word = value if isinstance(value, str) else short_repr(value)
    matches = difflib.get_close_matches(word[:200], list(choices), n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""
