"""``Store``: the case-library database (save, list, load, delete libraries; autosaved drafts per browser).

Usage::

    store = Store()                                   # $MEDFEW_DB_URL, else ~/.local/share/medfew/medfew.db
    store.save_library("Pneumocystis vs Streptococcus, CXR", classes, scans, user="dr.a")   # version 1, 2...
    [summary.describe() for summary in store.list_libraries()]
    library = store.load_library("Pneumocystis vs Streptococcus, CXR")   # newest version
    store.save_draft(browser_id, classes, scans)      # the app's autosave
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from medfew.store.database import open_database
from medfew.store.errors import StoreError
from medfew.store.models import (
    NAME_LENGTH,
    DraftRow,
    ImageRow,
    LibraryRow,
    SupportScanRow,
    SupportSetRow,
)
from medfew.store.scans import CaseLibrary, StoredScan

BROWSER_ID = re.compile(r"[0-9a-f]{32}")
"""Form of a browser id (a uuid4 hex): anything else from a URL is refused."""
DRAFT_LIFETIME = timedelta(days=30)
"""How long an autosaved draft is kept without changes (the app purges older ones when it opens the database)."""


def clean_name(text: str, what: str = "library name") -> str:
    """``text`` stripped, checked non-empty, without control characters and at most 200 characters.

    Raises:
        StoreError: Empty, too long, or holding control characters.
    """
    name = (text or "").strip()
    if not name:
        raise StoreError(f"the {what} is empty")
    if len(name) > NAME_LENGTH:
        raise StoreError(f"the {what} has {len(name)} characters; at most {NAME_LENGTH} are allowed")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise StoreError(f"the {what} {name[:40]!r} holds control characters")
    return name


def utc_now() -> datetime:
    """The current UTC time as a naive ``datetime`` (how every time is stored)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Store:
    """The database of case libraries, drafts and audit records.

    Args:
        url: SQLAlchemy URL (else ``$MEDFEW_DB_URL``, else the default SQLite file); opened and
            upgraded to the current schema.

    Raises:
        StoreError: The database cannot be opened or migrated.
    """

    def __init__(self, url: str | None = None) -> None:
        self.sessions: sessionmaker[Session] = open_database(url)

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self.sessions.kw["bind"].url.render_as_string(hide_password=True)

    # ---------------------------------------------------------------- libraries
    def save_library(self, name: str, classes: Sequence[str], scans: Sequence[StoredScan], *,
                     user: str = "local") -> CaseLibrary:
        """Save a support set as the next version of library ``name`` (1 for a new name).

        Raises:
            StoreError: A bad name, no scans, a scan whose class is not in ``classes``, or a database failure.
        """
        name = clean_name(name)
        if not scans:
            raise StoreError(f"library {name!r} has no scans: add labelled scans first")
        with self.transaction() as session:
            latest = session.scalar(select(func.max(LibraryRow.version)).where(LibraryRow.name == name))
            row = LibraryRow(name=name, version=(latest or 0) + 1, created_at=utc_now(),
                             created_by=clean_name(user, "user name"), support=_support_row(session, classes, scans))
            session.add(row)
            session.flush()
            return _library(row)

    def list_libraries(self, *, all_versions: bool = False) -> list[CaseLibrary]:
        """Saved libraries by name (the newest version of each, or every version), scans without pixels."""
        with self.transaction() as session:
            query = select(LibraryRow).order_by(LibraryRow.name, LibraryRow.version.desc())
            rows = session.scalars(query).unique().all()
            seen: set[str] = set()
            out = []
            for row in rows:
                if all_versions or row.name not in seen:
                    out.append(_library(row, pixels=False))
                seen.add(row.name)
            return out

    def load_library(self, name: str, version: int | None = None) -> CaseLibrary:
        """Library ``name`` at ``version`` (``None``: the newest).

        Raises:
            StoreError: No such library or version (the message lists the saved names).
        """
        with self.transaction() as session:
            row = session.scalars(self._versions(name, version).limit(1)).first()
            if row is None:
                raise StoreError(self._missing(session, name, version))
            return _library(row)

    def delete_library(self, name: str, version: int | None = None) -> int:
        """Delete every version of library ``name`` (or only ``version``), with the pixels no one else uses.

        Returns:
            The number of versions deleted.

        Raises:
            StoreError: No such library or version.
        """
        with self.transaction() as session:
            rows = session.scalars(self._versions(name, version)).unique().all()
            if not rows:
                raise StoreError(self._missing(session, name, version))
            return _delete_with_support(session, rows)

    # ---------------------------------------------------------------- drafts (autosave)
    def save_draft(self, browser_id: str, classes: Sequence[str], scans: Sequence[StoredScan]) -> None:
        """Replace the autosaved support set of browser ``browser_id`` (a uuid4 hex)."""
        browser_id = _browser(browser_id)
        with self.transaction() as session:
            old = session.get(DraftRow, browser_id)
            if old is not None:
                support = old.support
                session.delete(old)
                session.delete(support)
                session.flush()
            session.add(DraftRow(browser_id=browser_id, updated_at=utc_now(),
                                 support=_support_row(session, classes, scans)))
            session.flush()
            _drop_unused_images(session)

    def load_draft(self, browser_id: str) -> CaseLibrary | None:
        """The autosaved support set of this browser, or ``None``."""
        with self.transaction() as session:
            row = session.get(DraftRow, _browser(browser_id))
            if row is None:
                return None
            return CaseLibrary(classes=tuple(row.support.classes), scans=_scans(row.support), saved_at=row.updated_at)

    def delete_draft(self, browser_id: str) -> None:
        """Forget this browser's autosaved support set (nothing happens when there is none)."""
        with self.transaction() as session:
            row = session.get(DraftRow, _browser(browser_id))
            if row is not None:
                support = row.support
                session.delete(row)
                session.delete(support)
                session.flush()
                _drop_unused_images(session)

    def purge_drafts(self, older_than: timedelta = DRAFT_LIFETIME) -> int:
        """Forget the drafts not updated for ``older_than`` (and their pixels); returns how many went."""
        with self.transaction() as session:
            rows = session.scalars(select(DraftRow).where(DraftRow.updated_at < utc_now() - older_than)).unique().all()
            return _delete_with_support(session, rows)

    # ---------------------------------------------------------------- helpers
    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error; database errors become StoreError."""
        try:
            with self.sessions.begin() as session:
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(f"database {self.url}: {type(exc).__name__}: {str(exc)[:300]}") from exc

    @staticmethod
    def _versions(name: str, version: int | None):
        query = select(LibraryRow).where(LibraryRow.name == name.strip())
        if version is not None:
            query = query.where(LibraryRow.version == version)
        return query.order_by(LibraryRow.version.desc())

    @staticmethod
    def _missing(session: Session, name: str, version: int | None) -> str:
        names = sorted(set(session.scalars(select(LibraryRow.name))))
        what = f"library {name.strip()[:80]!r}" + (f" version {version}" if version is not None else "")
        return f"no {what} in the database; saved: {', '.join(repr(n) for n in names) or 'none'}"


def _browser(browser_id: str) -> str:
    if not isinstance(browser_id, str) or not BROWSER_ID.fullmatch(browser_id):
        raise StoreError("a browser id must be 32 lower-case hex digits")
    return browser_id


def _support_row(session: Session, classes: Sequence[str], scans: Sequence[StoredScan]) -> SupportSetRow:
    names = [clean_name(c, "class name") for c in classes]
    if len(set(names)) != len(names):
        raise StoreError(f"class names repeat: {names}")
    rows = []
    for position, scan in enumerate(scans):
        if scan.label not in names:
            raise StoreError(f"a scan is labelled {scan.label[:80]!r}, which is not one of the classes {names}")
        if session.get(ImageRow, scan.sha256) is None:
            session.add(ImageRow(sha256=scan.sha256, png=scan.png, **scan.metadata))
            session.flush()
        rows.append(SupportScanRow(position=position, label=scan.label, image_sha256=scan.sha256))
    return SupportSetRow(classes=names, scans=rows)


def _delete_with_support(session: Session, rows: Sequence[Any]) -> int:
    """Delete library versions or drafts with their support sets, then the pixels nothing uses; returns
    how many rows went."""
    for row in rows:
        support = row.support
        session.delete(row)
        session.delete(support)
    session.flush()
    _drop_unused_images(session)
    return len(rows)


def _drop_unused_images(session: Session) -> None:
    used = select(SupportScanRow.image_sha256)
    session.execute(delete(ImageRow).where(ImageRow.sha256.not_in(used)))


def _scans(support: SupportSetRow, pixels: bool = True) -> tuple[StoredScan, ...]:
    return tuple(StoredScan(label=s.label, png=s.image.png if pixels else b"", sha256=s.image_sha256,
                            modality=s.image.modality, body_part=s.image.body_part, view=s.image.view)
                 for s in support.scans)


def _library(row: LibraryRow, pixels: bool = True) -> CaseLibrary:
    return CaseLibrary(classes=tuple(row.support.classes), scans=_scans(row.support, pixels), name=row.name,
                       version=row.version, saved_at=row.created_at, saved_by=row.created_by)
