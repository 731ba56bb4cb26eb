"""Alembic environment: always run programmatically by ``control_api.storage.migrate``.

The caller hands over an open synchronous connection in ``config.attributes["connection"]``
(SQLAlchemy's ``run_sync`` bridge from the async engine), so the same code migrates SQLite
and PostgreSQL.
"""

from alembic import context

from control_api.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `videoconf migrate`, not the alembic command line")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
