"""The database tables (SQLAlchemy 2 ORM). Their history is in ``migrations/versions``: change both together.

Pixels are stored once per distinct image (``images``, keyed by the sha256 of the decoded pixels) and
referenced by the support sets of case libraries and of autosaved drafts. No table has a column for a
patient name, id, date, accession number, institution or file name.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAME_LENGTH = 200
"""Longest library name, class name or user name (characters)."""


class Base(DeclarativeBase):
    pass


class ImageRow(Base):
    """One decoded image as PNG, with its non-identifying DICOM metadata."""

    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    png: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)  # loaded when read, not when listed
    modality: Mapped[str | None] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))
    view: Mapped[str | None] = mapped_column(String(16))


class SupportSetRow(Base):
    """Classes (in order) and labelled scans of one saved support set."""

    __tablename__ = "support_sets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    classes: Mapped[list[str]] = mapped_column(JSON)
    scans: Mapped[list[SupportScanRow]] = relationship(
        order_by="SupportScanRow.position", cascade="all, delete-orphan", lazy="selectin")


class SupportScanRow(Base):
    """One labelled scan of a support set."""

    __tablename__ = "support_scans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("support_sets.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(NAME_LENGTH))
    image_sha256: Mapped[str] = mapped_column(ForeignKey("images.sha256"), index=True)
    image: Mapped[ImageRow] = relationship(lazy="joined")


class LibraryRow(Base):
    """One version of a named case library."""

    __tablename__ = "libraries"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_libraries_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(NAME_LENGTH))
    set_id: Mapped[int] = mapped_column(ForeignKey("support_sets.id"))
    support: Mapped[SupportSetRow] = relationship(lazy="joined")


class DraftRow(Base):
    """The autosaved, unsaved support set of one browser (restored after a page reload)."""

    __tablename__ = "drafts"

    browser_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    set_id: Mapped[int] = mapped_column(ForeignKey("support_sets.id"))
    support: Mapped[SupportSetRow] = relationship(lazy="joined")


class AuditRow(Base):
    """One audit record: an Adapt, or one query scan of a Diagnose (added by migration 0002)."""

    __tablename__ = "audit_records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(32), index=True)
    time_utc: Mapped[datetime] = mapped_column(DateTime, index=True)
    user: Mapped[str] = mapped_column(String(NAME_LENGTH))
    action: Mapped[str] = mapped_column(String(16))
    model_sha256: Mapped[str] = mapped_column(String(64))
    library_name: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    library_version: Mapped[int | None] = mapped_column(Integer)
    support_sha256: Mapped[str] = mapped_column(String(64))
    support_counts: Mapped[dict[str, int]] = mapped_column(JSON)
    query_sha256: Mapped[str | None] = mapped_column(String(64))
    prediction: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    probabilities: Mapped[dict[str, float] | None] = mapped_column(JSON)
    uncertain: Mapped[bool | None]
    out_of_distribution: Mapped[bool | None]
    prediction_set: Mapped[list[str] | None] = mapped_column(JSON)
