"""Alembic environment: always runs on a connection handed over by daemon.store.migrate."""

from __future__ import annotations

from alembic import context

from daemon.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `incidentd migrate`, not the alembic command")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
