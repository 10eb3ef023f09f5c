"""Alembic environment: migrations run on the connection cellsight hands over (see migrate.py)."""

from __future__ import annotations

from alembic import context

from cellsight.storage.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("cellsight migrations run through cellsight.storage.migrate.upgrade(engine)")

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
