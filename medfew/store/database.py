"""Open the database and bring its schema to the current revision (Alembic ``upgrade head``).

A SQLite file gets ``foreign_keys`` on and ``secure_delete`` on (deleted libraries are overwritten
with zeros, not left in free pages). Any other SQLAlchemy URL (PostgreSQL for a team server) is used
as given.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from medfew.store.errors import StoreError
from medfew.store.settings import database_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def migration_config() -> Config:
    """Alembic's configuration for the migrations shipped in this package (no ``alembic.ini``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest schema revision this version of medfew knows."""
    head = ScriptDirectory.from_config(migration_config()).get_current_head()
    assert head is not None
    return head


def create_database_engine(url: str | None = None) -> Engine:
    """An engine for ``url`` (see :func:`medfew.store.settings.database_url`), creating a SQLite file's folder.

    Raises:
        StoreError: A malformed URL, an unknown driver, or a SQLite folder that cannot be created.
    """
    text = database_url(url)
    try:
        parsed = make_url(text)
        engine = create_engine(parsed)
    except (ArgumentError, ImportError, SQLAlchemyError) as exc:
        raise StoreError(f"database URL {_bounded(text)}: {type(exc).__name__}: {_bounded(str(exc))}") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            try:
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder of the database {parsed.database}: {exc}") from exc
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (``"head"``: the newest); a new database gets every table.

    Raises:
        StoreError: The database cannot be reached, or was written by a newer medfew (unknown revision).
    """
    config = migration_config()
    try:
        with engine.begin() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
            known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
            if current is not None and current not in known:
                raise StoreError(f"database {engine.url.render_as_string(hide_password=True)} has schema revision "
                                 f"{_bounded(current)}, newer than this medfew knows ({head_revision()}): "
                                 "upgrade medfew")
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except (SQLAlchemyError, CommandError) as exc:
        raise StoreError(f"database {engine.url.render_as_string(hide_password=True)}: "
                         f"{type(exc).__name__}: {_bounded(str(exc))}") from exc


def open_database(url: str | None = None) -> sessionmaker:
    """Open (creating or upgrading) the database and return its session factory.

    Args:
        url: SQLAlchemy URL, else ``$MEDFEW_DB_URL``, else the default SQLite file.
    """
    engine = create_database_engine(url)
    migrate(engine)
    return sessionmaker(engine, expire_on_commit=False)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def _bounded(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
