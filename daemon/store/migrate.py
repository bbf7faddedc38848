"""Alembic, driven from code: `incidentd migrate`, auto-migrate at start, /readyz."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from daemon.store.engine import Store

_MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same for every replica.
_PG_MIGRATION_LOCK = 0x1AC1DE7D


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def upgrade(store: Store) -> None:
    """Bring the schema to head. On PostgreSQL replicas take turns through an advisory lock."""
    async with store.write() as conn:
        if store.dialect == "postgresql":
            lock = sa.text("SELECT pg_advisory_xact_lock(:k)")
            await conn.execute(lock, {"k": _PG_MIGRATION_LOCK})
        await conn.run_sync(_upgrade_sync)


def _upgrade_sync(sync_conn: sa.Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


async def current_revision(store: Store) -> str | None:
    async with store.read() as conn:
        return await conn.run_sync(
            lambda c: MigrationContext.configure(c).get_current_revision()
        )


async def is_current(store: Store) -> bool:
    return await current_revision(store) == head_revision()
