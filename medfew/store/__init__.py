"""medfew.store: the database of case libraries, autosaved drafts and the audit trail (SQLAlchemy + Alembic).

SQLite file by default (``$MEDFEW_DB_URL`` for any SQLAlchemy URL; see :mod:`medfew.store.settings`);
the schema is upgraded to the current revision every time a :class:`Store` opens it. A library holds
decoded pixels (PNG), labels, sha256 and modality / body part / view only: never the DICOM files,
file names or patient identifiers.
"""

from medfew.store.archive import export_library, import_library, read_library_archive
from medfew.store.audit import (
    AuditContext,
    AuditRecord,
    adapt_record,
    audit_csv,
    diagnose_records,
    read_audit,
    support_fingerprint,
    user_from_headers,
    write_audit,
)
from medfew.store.database import head_revision, migrate, open_database
from medfew.store.errors import LibraryImportError, StoreError
from medfew.store.library import BROWSER_ID, Store, clean_name
from medfew.store.scans import CaseLibrary, StoredScan, encode_png, stored_scan
from medfew.store.settings import DB_URL_ENV, database_url, default_database_path

__all__ = [
    "BROWSER_ID",
    "DB_URL_ENV",
    "AuditContext",
    "AuditRecord",
    "CaseLibrary",
    "LibraryImportError",
    "Store",
    "StoreError",
    "StoredScan",
    "adapt_record",
    "audit_csv",
    "clean_name",
    "database_url",
    "default_database_path",
    "diagnose_records",
    "encode_png",
    "export_library",
    "head_revision",
    "import_library",
    "migrate",
    "open_database",
    "read_audit",
    "read_library_archive",
    "stored_scan",
    "support_fingerprint",
    "user_from_headers",
    "write_audit",
]
