"""The engine pair: one writer, many readers, on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


class StoreUnavailable(Exception):
    """The database cannot be reached or refused the work; the caller may retry later."""


# Errors that mean "the database is not there right now", as opposed to a bug.
_UNAVAILABLE = (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError, OSError)


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
            engine = create_async_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, **common
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
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction on the writer, committed when the block exits cleanly."""
        try:
            async with self._writer.begin() as conn:
                yield conn
        except _UNAVAILABLE as err:
            raise StoreUnavailable(_reason(err)) from err

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._reader.connect() as conn:
                yield conn
        except _UNAVAILABLE as err:
            raise StoreUnavailable(_reason(err)) from err

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()


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
