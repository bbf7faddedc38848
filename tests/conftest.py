"""Shared fixtures: a real store on SQLite and on PostgreSQL, through the same code.

PostgreSQL: each test session creates its own database on the server at
$INCIDENTD_TEST_PG (default 127.0.0.1:5432, user postgres, trust auth) and
drops it at the end. Under CI=true a missing server fails the tests instead
of skipping them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from daemon.ingest import Pipeline
from daemon.scheduler import Jobs
from daemon.store import Store, migrate
from daemon.store.tables import metadata

FIXTURES = Path(__file__).parent / "fixtures"
PG_ADMIN_DSN = os.environ.get("INCIDENTD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip locally when a real dependency is missing; fail under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing dependency fails the run)")
    pytest.skip(reason)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session; dropped afterwards."""
    import asyncio

    import asyncpg

    name = f"incidentd_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as err:
        require(False, f"PostgreSQL at {PG_ADMIN_DSN} is not usable: {err}")
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    yield f"{base}/{name}"
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/incidentd.db"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A migrated, empty store."""
    s = Store.open(database_url)
    await migrate.upgrade(s)
    await empty(s)
    yield s
    await s.close()


@pytest.fixture
async def pg_store(pg_database: str) -> AsyncIterator[Store]:
    """A migrated, empty store on PostgreSQL only: for what only PostgreSQL has (row
    locks between replicas, advisory locks)."""
    s = Store.open(pg_database)
    await migrate.upgrade(s)
    await empty(s)
    yield s
    await s.close()


async def reset(database_url: str) -> None:
    """Migrate and empty the database a daemon is about to start on.

    Before the start, not after: the daemon's timer jobs run at once, and
    emptying tables under them would race (and deadlock on PostgreSQL).
    """
    s = Store.open(database_url)
    try:
        await migrate.upgrade(s)
        await empty(s)
    finally:
        await s.close()


async def empty(store: Store) -> None:
    """Empty the session's PostgreSQL database (each SQLite test has its own file)."""
    if store.dialect == "postgresql":
        # link_changes is one row the schema comes with (migration 0013), not data.
        tables = ", ".join(t.name for t in metadata.sorted_tables if t.name != "link_changes")
        async with store.write() as conn:
            await conn.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / "alertmanager-0.25" / name).read_bytes()


def make_pipeline(clock: FakeClock, topology: object = None, **correlation: object) -> Pipeline:
    """The ingest pipeline as the daemon builds it, on a given graph and settings."""
    from daemon.app import build_pipeline
    from daemon.config import Config, CorrelationConfig
    from daemon.correlation.topology import TopologyHolder

    holder = topology if isinstance(topology, TopologyHolder) else TopologyHolder()
    config = Config(correlation=CorrelationConfig.model_validate(correlation))
    return build_pipeline(config, holder, clock)


def make_jobs(store: Store, clock: FakeClock, config: object = None,
              topology: object = None) -> Jobs:
    """The timer jobs as the daemon builds them (run them by awaiting their methods)."""
    from daemon.app import build_pipeline
    from daemon.config import Config
    from daemon.correlation.topology import TopologyHolder
    from daemon.itsm.followup import FollowUp

    cfg = config if isinstance(config, Config) else Config()
    holder = topology if isinstance(topology, TopologyHolder) else TopologyHolder()
    followup = FollowUp(cfg, holder, clock=clock)
    pipeline = build_pipeline(cfg, holder, clock, followup)
    return Jobs(store=store, clock=clock, config=cfg, followup=followup, pipeline=pipeline)
