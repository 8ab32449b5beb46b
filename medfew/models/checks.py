"""Argument checks that raise :class:`~medfew.errors.ConfigError` naming the owner, key and value.

Shared by the backbone and method constructors so that every bad hyperparameter fails at build
time with the same kind of message, e.g. ``maml: head must be one of ['proto', 'zero'], got
'protoo' (did you mean 'proto'?)``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from medfew.errors import ConfigError


def close_match_hint(value: object, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""`` when none is close."""
    matches = difflib.get_close_matches(str(value), list(choices), n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def check_choice(owner: str, key: str, value: object, choices: Iterable[str]) -> str:
    """Check that ``value`` is one of ``choices`` and return it."""
    options = list(choices)
    if not isinstance(value, str) or value not in options:
        raise ConfigError(f"{owner}: {key} must be one of {options}, got {value!r}{close_match_hint(value, options)}")
    return value


def check_int(owner: str, key: str, value: object, minimum: int) -> int:
    """Check that ``value`` is an ``int`` (not a ``bool``) of at least ``minimum`` and return it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{owner}: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def check_positive(owner: str, key: str, value: object) -> float:
    """Check that ``value`` is a finite real number > 0 and return it as ``float``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ConfigError(f"{owner}: {key} must be a finite number > 0, got {value!r}")
    return float(value)


def check_bool(owner: str, key: str, value: object) -> bool:
    """Check that ``value`` is a ``bool`` (``0``/``1`` are refused: they hide typos in configs)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}: {key} must be true or false, got {value!r}")
    return value
