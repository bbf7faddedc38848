"""Which replica runs the timers.

On PostgreSQL any number of replicas share one database. The periodic jobs
(SLA clocks, escalation, maintenance windows, approvals, closing) run on one of
them: the one holding a session-level advisory lock. The lock lives on a
connection of its own; when that replica dies, PostgreSQL drops the connection
and the lock with it, and another replica takes it at its next try (every
`TRY_SECONDS`). The jobs also claim their rows with `FOR UPDATE SKIP LOCKED`, so
a moment with two leaders doubles nothing.

A leader that is alive but silent (the process frozen, its host cut off) would
hold the lock for ever; its connection therefore carries `idle_session_timeout`
and TCP keepalives bounded by `timeout_seconds` (`database.leader_timeout_seconds`),
so the server ends the session, and the lock with it, once the leader stops
checking in every `TRY_SECONDS`.

When the database restarts or the network cuts the lock's connection, the lock
is gone: the leader stops leading the moment asyncpg reports the connection
closed (or at its next check, which a silent database fails by timing out), and
competes again like any replica until the database is back.

On SQLite there is one node: a second daemon on the same database file is
refused at start with a clear error (an exclusive lock on `<file>.lock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from daemon.config import ConfigError

log = structlog.get_logger("incidentd.leader")

# "incidentd" in ASCII, as a bigint: the advisory lock every replica competes for.
LOCK_KEY = 0x696E636964656E74
TRY_SECONDS = 5.0
# A connect or check slower than this counts as a lost connection: a database that
# stopped answering guarantees no lock to rely on.
CHECK_TIMEOUT_SECONDS = 5.0
DEFAULT_TIMEOUT_SECONDS = 15


class Leadership:
    def __init__(self, url: str, *, try_seconds: float = TRY_SECONDS,
                 timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._url = url
        self._try = try_seconds
        self._timeout = timeout_seconds
        self._sqlite = make_url(url).get_backend_name() == "sqlite"
        self._leader = False
        self._lock_file: IO[str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn: AsyncConnection | None = None
        # The asyncpg connection under `_conn`, watched for its end; None once it ended.
        self._driver: Any = None
        self._lost = asyncio.Event()
        self._failures = 0
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
        self._engine = create_async_engine(self._url, poolclass=sa.pool.NullPool,
                                           connect_args={"timeout": CHECK_TIMEOUT_SECONDS})
        await self._try_once()
        self._task = asyncio.create_task(self._compete(), name="leadership")

    async def stop(self) -> None:
        """Give leadership up at once (closing the connection releases the lock)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop_connection(graceful=True)
        if not self._sqlite:
            await self._engine.dispose()
        if self._lock_file is not None:
            self._lock_file.close()
        self._leader = False

    # -- PostgreSQL --------------------------------------------------------------

    async def _compete(self) -> None:
        while not self._stopping:
            # Woken early when the lock's connection ends: stop leading at once and
            # try to get it back, instead of at the next periodic check.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), self._try)
            self._lost.clear()
            await self._try_once()

    async def _try_once(self) -> None:
        """Keep (or try to take) the lock; any failure means: not the leader now.

        Never raises: the database being away is this loop's normal weather."""
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                got = await self._check()
        except Exception as err:  # the database is away: no leader here until it is back
            await self._failed(err)
            return
        if self._failures:
            log.info("leadership: database reachable again", failed_tries=self._failures)
            self._failures = 0
        if got and not self._leader:
            self._leader = True
            log.info("leadership acquired: this replica runs the timers")

    async def _check(self) -> bool:
        """True while this replica holds the lock (still connected means still holding)."""
        if self._conn is not None and self._driver is None:
            await self._drop_connection(graceful=False)  # it ended under us
        if self._conn is None:
            conn = await self._engine.connect()
            self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await self._watch(self._conn)
            await self._bound_silence(self._conn)
        if self._leader:
            await self._conn.execute(sa.text("SELECT 1"))
            return True
        got = (await self._conn.execute(sa.text("SELECT pg_try_advisory_lock(:key)"),
                                        {"key": LOCK_KEY})).scalar()
        return bool(got)

    async def _bound_silence(self, conn: AsyncConnection) -> None:
        """Have the server end this session once it is silent for `timeout_seconds`
        (idle between checks: PostgreSQL 14+), or its peer unreachable (keepalives)."""
        ms = int(max(self._timeout, 2 * self._try) * 1000)
        idle = max(1, self._timeout // 3)
        settings = {"idle_session_timeout": str(ms), "tcp_keepalives_idle": str(idle),
                    "tcp_keepalives_interval": str(idle), "tcp_keepalives_count": "3"}
        for name, value in settings.items():
            try:
                await conn.execute(sa.text("SELECT set_config(:name, :value, false)"),
                                   {"name": name, "value": value})
            except sa.exc.DBAPIError as err:  # an older server: the bound is weaker
                log.warning("leadership: setting not supported by this PostgreSQL",
                            setting=name, reason=type(err.orig).__name__)

    async def _watch(self, conn: AsyncConnection) -> None:
        """Be told the moment the lock's connection closes (asyncpg's termination
        listener): the server restarted or the network cut it, and the lock is gone."""
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        self._driver = driver
        if driver is not None and hasattr(driver, "add_termination_listener"):
            driver.add_termination_listener(self._terminated)

    def _terminated(self, driver: object) -> None:
        if driver is not self._driver or self._stopping:
            return  # we closed it ourselves
        self._driver = None
        if self._leader:
            self._leader = False
            log.warning("leadership lost: the database connection closed; trying again",
                        every_seconds=self._try)
        self._lost.set()

    async def _failed(self, err: BaseException) -> None:
        self._failures += 1
        if self._leader:
            log.warning("leadership lost: database connection failed; trying again",
                        reason=type(err).__name__, every_seconds=self._try)
        elif self._failures == 1:
            log.warning("leadership: database unreachable; trying again",
                        reason=type(err).__name__, every_seconds=self._try)
        self._leader = False
        await self._drop_connection(graceful=False)

    async def _drop_connection(self, *, graceful: bool) -> None:
        conn, self._conn = self._conn, None
        self._driver = None  # from here on its end is ours, not news
        if conn is None:
            return
        if graceful:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                    await conn.close()
                    return
        # A dead or stuck connection: drop the socket without waiting for an answer.
        with contextlib.suppress(Exception):
            await conn.invalidate()
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
