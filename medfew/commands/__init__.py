"""Sub-commands that live in their own module, registered into ``medfew``'s parser.

Each module named in :data:`COMMAND_MODULES` defines ``register(commands)``, which adds its parser(s)
to the ``argparse`` sub-parsers of :func:`medfew.cli.build_parser` and sets ``func`` on each. A module
imports its heavy dependencies inside the command function, so ``medfew --help`` stays fast. Adding a
command is one new module plus one line here.
"""

from __future__ import annotations

import argparse
import importlib

__all__ = ["COMMAND_MODULES", "register_all"]

COMMAND_MODULES: tuple[str, ...] = ("diagnose", "library", "audit", "pacs", "suggest")
"""Dotted names of the modules under ``medfew.commands`` to register, in help order."""


def register_all(commands: argparse._SubParsersAction) -> None:
    """Let every module of :data:`COMMAND_MODULES` add its sub-commands to ``commands``."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"medfew.commands.{name}").register(commands)
