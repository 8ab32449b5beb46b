"""Argument checks that raise :class:`~medfew.errors.ConfigError` naming the owner, key and value.

Shared by the backbone and method constructors so that every bad hyperparameter fails at build
time with the same kind of message, e.g. ``maml: head must be one of ['proto', 'zero'], got
'protoo' (did you mean 'proto'?)``.
"""

from __future__ import annotations

from collections.abc import Iterable

from medfew.errors import ConfigError
from medfew.messages import close_match_hint, short_repr

__all__ = ["check_bool", "check_choice", "check_int", "check_positive", "close_match_hint"]


def check_choice(owner: str, key: str, value: object, choices: Iterable[str]) -> str:
    """Check that ``value`` is one of ``choices`` and return it."""
    options = list(choices)
    if not isinstance(value, str) or value not in options:
        raise ConfigError(f"{owner}: {key} must be one of {options}, got {short_repr(value)}{close_match_hint(value, options)}")
    return value


def check_int(owner: str, key: str, value: object, minimum: int) -> int:
    """Check that ``value`` is an ``int`` (not a ``bool``) of at least ``minimum`` and return it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{owner}: {key} must be an integer >= {minimum}, got {short_repr(value)}")
    return value


def check_positive(owner: str, key: str, value: object) -> float:
    """Check that ``value`` is a finite real number > 0 and return it as ``float``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ConfigError(f"{owner}: {key} must be a finite number > 0, got {short_repr(value)}")
    return float(value)


def check_bool(owner: str, key: str, value: object) -> bool:
    """Check that ``value`` is a ``bool`` (``0``/``1`` are refused: they hide typos in configs)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{owner}: {key} must be true or false, got {short_repr(value)}")
    return value
