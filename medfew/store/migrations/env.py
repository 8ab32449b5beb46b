"""Alembic environment of medfew's database: run by :func:`medfew.store.database.migrate` on a live connection.

There is no ``alembic.ini``: the caller passes the connection in ``config.attributes["connection"]``.
A developer adds a revision with ``alembic -c <ini naming script_location=medfew/store/migrations> revision``
and writes its ``upgrade`` by hand (migrations never import the current models: those move on).
"""

from __future__ import annotations

from alembic import context

from medfew.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("medfew's migrations run on a connection given by medfew.store.database.migrate")
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
