"""A TCP proxy the test can cut: a database that goes away and comes back.

The daemon is pointed at the proxy's port instead of PostgreSQL's. `cut()`
closes the listening socket (new connections are refused, as by a server that
is down) and aborts every open connection on both sides with a reset: the
daemon sees its connections die mid-query, and PostgreSQL sees its clients
vanish, so it rolls their transactions back and frees their advisory locks,
as a restarted server would. `restore()` listens on the same port again.

CI's PostgreSQL is shared by the whole suite, so the tests never restart the
real server; this proxy simulates the outage for one daemon.

The proxy runs its own event loop in a thread: the bytes between the daemon
and the database keep flowing at the same pace however busy the test's own
loop is (e.g. with a flood of client requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_CHUNK = 64 * 1024


class TcpProxy:
    """127.0.0.1:<port> → upstream, with `cut()` / `restore()`."""

    def __init__(self, upstream_host: str, upstream_port: int, *,
                 listen_host: str = "127.0.0.1") -> None:
        self._upstream = (upstream_host, upstream_port)
        self._host = listen_host
        self.port = 0  # chosen by the kernel at the first start, kept afterwards
        self.accepted = 0  # connections accepted over the proxy's life
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy",
                                        daemon=True)
        self._thread.start()

    # -- the test's side (any event loop) -----------------------------------------

    @property
    def up(self) -> bool:
        return self._server is not None

    @property
    def open_connections(self) -> int:
        return len(self._writers) // 2

    async def start(self) -> TcpProxy:
        await self._call(self._listen())
        return self

    async def cut(self) -> int:
        """Refuse new connections and reset every open one; returns how many were open."""
        return await self._call(self._cut())

    async def restore(self) -> None:
        """Accept connections again, on the same port."""
        await self._call(self._listen())

    async def close(self) -> None:
        if self._loop.is_closed():
            return
        await self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10)
        if not self._thread.is_alive():
            self._loop.close()

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return await asyncio.wrap_future(future)

    # -- the proxy's own loop ----------------------------------------------------

    async def _listen(self) -> None:
        if self._server is not None:
            return
        # reuse_address: the port was ours a moment ago and must be again.
        self._server = await asyncio.start_server(self._accept, self._host, self.port,
                                                  reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _cut(self) -> int:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # the listening socket: new connections are refused from now
        writers = list(self._writers)
        self._writers.clear()
        for writer in writers:
            writer.transport.abort()  # RST, no goodbye: a crash, not a clean close
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        return len(writers) // 2

    async def _accept(self, client_reader: asyncio.StreamReader,
                      client_writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted in the instant of a cut
            client_writer.transport.abort()
            return
        self.accepted += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            client_writer.transport.abort()
            return
        if self._server is None:
            client_writer.transport.abort()
            upstream_writer.transport.abort()
            return
        self._writers |= {client_writer, upstream_writer}
        await asyncio.gather(self._pipe(client_reader, upstream_writer),
                             self._pipe(upstream_reader, client_writer))
        self._writers -= {client_writer, upstream_writer}

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction until EOF or a reset; then end the other side."""
        try:
            while chunk := await reader.read(_CHUNK):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if writer in self._writers:  # a clean end (not a cut): pass the EOF on
                with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                    writer.close()
