"""Typed errors of the case-library and audit database (``MedfewError`` subclasses: one line for the user)."""

from __future__ import annotations

from medfew.errors import MedfewError


class StoreError(MedfewError):
    """The database cannot be opened or migrated, or a request to it is wrong (unknown library, bad name)."""


class LibraryImportError(StoreError):
    """A library archive (zip of PNGs + ``manifest.json``) is refused; nothing was written.

    Attributes:
        archive: The archive's file name.
        reason: Why, without the file name.
    """

    def __init__(self, archive: str, reason: str) -> None:
        self.archive = archive
        self.reason = reason
        super().__init__(f"{archive}: {reason}")
