"""Lazy public exports for package ``__init__`` modules (PEP 562).

A package declares ``__all__`` and where each public name lives; the defining module is imported on
first use. ``import medfew`` and ``import medfew.data`` therefore stay light (no torch import until a
name needs it) and never create import cycles between subpackages.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, where: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose public names live in submodules.

    Args:
        package: The package's ``__name__``.
        where: Public name -> the dotted module (absolute) that defines it.

    Returns:
        The two module-level functions to assign in the package's ``__init__``.
    """

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(set(where) | set(globals()))

    return __getattr__, __dir__
