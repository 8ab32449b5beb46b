"""Where the database lives: ``$MEDFEW_DB_URL`` (any SQLAlchemy URL), else a SQLite file in the user's data folder.

The default file is ``$XDG_DATA_HOME/medfew/medfew.db`` (``~/.local/share/medfew/medfew.db`` when
``XDG_DATA_HOME`` is unset). A team server points every app and CLI at one database, e.g.
``MEDFEW_DB_URL=postgresql+psycopg://medfew@db.hospital.local/medfew``.
"""

from __future__ import annotations

import os
from pathlib import Path

DB_URL_ENV = "MEDFEW_DB_URL"


def default_database_path() -> Path:
    """``$XDG_DATA_HOME/medfew/medfew.db``, or ``~/.local/share/medfew/medfew.db``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "medfew" / "medfew.db"


def database_url(url: str | None = None) -> str:
    """The database URL: ``url``, else ``$MEDFEW_DB_URL``, else the default SQLite file.

    Args:
        url: An explicit SQLAlchemy URL (``sqlite:///path.db``, ``postgresql+psycopg://...``) or ``None``.
    """
    chosen = url or os.environ.get(DB_URL_ENV)
    return chosen if chosen else f"sqlite:///{default_database_path()}"
