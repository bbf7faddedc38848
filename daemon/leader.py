"""Which replica runs the timers.

On PostgreSQL any number of replicas share one database. The periodic jobs
(SLA clocks, escalation, maintenance windows, approvals, closing) run on one of
them: the one holding a session-level advisory lock. The lock lives on a
connection of its own; when that replica dies, PostgreSQL drops the connection
and the lock with it, and another replica takes it at its next try (every
`TRY_SECONDS`). The jobs also claim their rows with `FOR UPDATE SKIP LOCKED`, so
a moment with two leaders doubles nothing.

On SQLite there is one node: a second daemon on the same database file is
refused at start with a clear error (an exclusive lock on `<file>.lock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from daemon.config import ConfigError

log = structlog.get_logger("incidentd.leader")

# "incidentd" in ASCII, as a bigint: the advisory lock every replica competes for.
LOCK_KEY = 0x696E636964656E74
TRY_SECONDS = 5.0


class Leadership:
    def __init__(self, url: str, *, try_seconds: float = TRY_SECONDS) -> None:
        self._url = url
        self._try = try_seconds
        self._sqlite = make_url(url).get_backend_name() == "sqlite"
        self._leader = False
        self._lock_file: IO[str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: AsyncConnection | None = None
        self._stopping = False

    @property
    def is_leader(self) -> bool:
        return self._leader

    async def start(self) -> None:
        """SQLite: take the file lock (or refuse); PostgreSQL: compete for leadership."""
        if self._sqlite:
            self._lock_sqlite()
            self._leader = True
            return
        # Its own engine and connection: the lock must not go back to a shared pool.
        self._engine = create_async_engine(self._url, poolclass=sa.pool.NullPool)
        await self._try_once()
        self._task = asyncio.create_task(self._compete(), name="leadership")

    async def stop(self) -> None:
        """Give leadership up at once (closing the connection releases the lock)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop_connection()
        if not self._sqlite:
            await self._engine.dispose()
        if self._lock_file is not None:
            self._lock_file.close()
        self._leader = False

    # -- PostgreSQL --------------------------------------------------------------

    async def _compete(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._try)
            await self._try_once()

    async def _try_once(self) -> None:
        try:
            if self._conn is None:
                conn = await self._engine.connect()
                self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            if self._leader:  # still connected means still holding it
                await self._conn.execute(sa.text("SELECT 1"))
                return
            got = (await self._conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"),
                                            {"key": LOCK_KEY})).scalar()
        except Exception as err:  # the database is away: no leader here until it is back
            if self._leader:
                log.warning("leadership lost: database connection failed",
                            reason=type(err).__name__)
            self._leader = False
            await self._drop_connection()
            return
        if got:
            self._leader = True
            log.info("leadership acquired: this replica runs the timers")

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    # -- SQLite ------------------------------------------------------------------

    def _lock_sqlite(self) -> None:
        database = make_url(self._url).database
        if not database or database == ":memory:":
            return
        path = Path(f"{database}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError([
                f"database.url: {database} is in use by incidentd (pid {holder}); SQLite "
                "serves one daemon: stop the other one, or use PostgreSQL to run several "
                "replicas"]) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle
