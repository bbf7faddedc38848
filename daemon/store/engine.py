"""The engine pair: one writer, many readers, on SQLite or PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
import structlog
from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

log = structlog.get_logger("incidentd.store")


class StoreUnavailable(Exception):
    """The database cannot be reached or refused the work; the caller may retry later."""


# Errors that mean "the database is not there right now", as opposed to a bug. SQLite's
# "database is locked" and "database or disk is full" are OperationalErrors too; a pool
# with no free connection left (exc.TimeoutError) is an overload, also worth a retry.
_UNAVAILABLE = (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError,
                exc.TimeoutError, OSError)
# PostgreSQL SQLSTATEs of a server going away or not taking clients: class 08
# (connection exception: asyncpg reports a connection cut mid-query as 08003),
# 57P01-57P03 (admin shutdown, crash shutdown, cannot connect now: a restart) and
# 53300 (too many connections). asyncpg's errors reach us as a plain DBAPIError.
_UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300")
# How long one attempt to open a PostgreSQL connection may take (asyncpg's default is 60 s):
# a database that does not answer is reported as unavailable well before clients give up.
CONNECT_TIMEOUT_SECONDS = 10.0


def is_unavailable(err: BaseException) -> bool:
    """True when `err` says the database is away (worth a retry later), not a bug."""
    if isinstance(err, (StoreUnavailable, *_UNAVAILABLE)):
        return True
    if isinstance(err, exc.DBAPIError) and err.connection_invalidated:
        return True  # SQLAlchemy saw a disconnect and threw the connection away
    state = getattr(getattr(err, "orig", None) or err, "sqlstate", None)
    return isinstance(state, str) and state.startswith(_UNAVAILABLE_STATES)


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class Store:
    """Owns the engines. SQLite gets one writer connection (WAL lets readers run
    beside it); PostgreSQL shares one pool between writes and reads."""

    def __init__(self, writer: AsyncEngine, reader: AsyncEngine) -> None:
        self._writer = writer
        self._reader = reader

    @classmethod
    def open(cls, url: str, *, sqlite_synchronous: str = "NORMAL", pool_size: int = 10) -> Store:
        parsed = make_url(url)
        common: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}
        if parsed.get_backend_name() != "sqlite":
            # pool_pre_ping: a pooled connection that died while idle (the server
            # restarted) is replaced at checkout instead of failing the next request.
            # A disconnect seen mid-query invalidates the whole pool (SQLAlchemy does
            # that on every disconnect error), so recovery after an outage is one
            # fresh connect per checkout, not one failed request per stale connection.
            # A statement text not in the prepared-statement cache costs a round trip
            # to prepare it: the ingest's ~30 statements, each in a few padded lengths
            # (`in_lists`), outgrow asyncpg's default of 100.
            engine = create_async_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                connect_args={"timeout": CONNECT_TIMEOUT_SECONDS,
                              "prepared_statement_cache_size": 500}, **common
            )
            return cls(engine, engine)
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        writer = create_async_engine(url, pool_size=1, max_overflow=0, **common)
        reader = create_async_engine(url, pool_size=4, max_overflow=0, **common)
        _sqlite_pragmas(writer, synchronous=sqlite_synchronous, read_only=False)
        _sqlite_pragmas(reader, synchronous=sqlite_synchronous, read_only=True)
        return cls(writer, reader)

    @property
    def dialect(self) -> str:
        return self._writer.dialect.name

    @property
    def writer_engine(self) -> AsyncEngine:
        return self._writer

    @asynccontextmanager
    async def write(self, *, connect_attempts: int = 1) -> AsyncIterator[AsyncConnection]:
        """A transaction on the writer, committed when the block exits cleanly.

        Any sign that the database is away (refused, reset, shut down, cut mid-query
        or mid-commit) comes out as `StoreUnavailable`. With `connect_attempts` > 1
        on PostgreSQL, getting the connection is retried briefly: nothing has been
        sent yet then, so a retry cannot do anything twice. Once the block has
        started, nothing is retried here; the caller decides.
        """
        with _unavailable_as_store_error():
            async with AsyncExitStack() as stack:
                yield await self._begin(stack, connect_attempts)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        with _unavailable_as_store_error():
            async with self._reader.connect() as conn:
                yield conn

    async def _begin(self, stack: AsyncExitStack, attempts: int) -> AsyncConnection:
        if attempts <= 1 or self.dialect == "sqlite":  # SQLite's busy_timeout waits already
            return await stack.enter_async_context(self._writer.begin())
        retrying = AsyncRetrying(stop=stop_after_attempt(attempts),
                                 wait=wait_exponential(multiplier=0.05, max=0.5),
                                 retry=retry_if_exception(is_unavailable), reraise=True)
        async for attempt in retrying:
            with attempt:
                # A failed attempt leaves nothing on the stack: begin() only enters
                # once it holds a connection.
                return await stack.enter_async_context(self._writer.begin())
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()


async def wait_for_database(action: Callable[[], Awaitable[None]], *, total_seconds: float,
                            url: str) -> None:
    """Run `action` (connect, migrate, ...) until it works, retrying while the database
    is away (`StoreUnavailable`) with backoff for up to `total_seconds`, a warning per
    failed try; then the last `StoreUnavailable` is raised. Other errors (a wrong
    password, a missing database) are not waited out: they come out at once."""
    started = time.monotonic()
    backoff = wait_exponential(multiplier=0.5, max=5) + wait_random(0, 0.25)

    def pause(state: RetryCallState) -> float:
        left = total_seconds - (time.monotonic() - started)
        return max(0.0, min(backoff(state), left))  # the last try comes at the deadline

    def give_up(_: RetryCallState) -> bool:
        return time.monotonic() - started >= total_seconds

    def say(state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome is not None else None
        log.warning("database unreachable at start; retrying", database=url,
                    attempt=state.attempt_number, retry_in_seconds=round(state.upcoming_sleep, 2),
                    gives_up_in_seconds=round(
                        max(0.0, total_seconds - (time.monotonic() - started)), 1),
                    reason=str(err))

    async for attempt in AsyncRetrying(retry=retry_if_exception_type(StoreUnavailable),
                                       stop=give_up, wait=pause, before_sleep=say, reraise=True):
        with attempt:
            await action()


def _reason(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or err
    return f"{type(orig).__name__}: {orig}".splitlines()[0][:200]


def _sqlite_pragmas(engine: AsyncEngine, *, synchronous: str, read_only: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide where transactions begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # IMMEDIATE takes the write lock up front, so a writer never fails
        # half-way on a lock upgrade; readers need no lock in WAL mode.
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@contextmanager
def _unavailable_as_store_error() -> Iterator[None]:
    """Errors that mean "the database is away" leave the store as `StoreUnavailable`;
    anything else (a bug) leaves as it came."""
    try:
        yield
    except StoreUnavailable:
        raise
    except Exception as err:
        if is_unavailable(err):
            raise StoreUnavailable(_reason(err)) from err
        raise
