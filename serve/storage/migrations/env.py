"""Alembic environment of the placement store.

Normally run by :func:`placement.serve.storage.store.migrate` (every :class:`placement.serve.storage.store.Store` open), which
passes its own connection, already inside a locked transaction, as
``config.attributes["connection"]``. From the command line, give the URL:
``alembic -c serve/storage/migrations/alembic.ini -x url=postgresql+psycopg://... upgrade head``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from placement.serve.storage.store import METADATA

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=METADATA,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database: alembic ... -x url=postgresql+psycopg://user@host/db upgrade head")
    with sa.create_engine(url).begin() as conn:
        _run(conn)
