"""Python runbook actions that ship with incidentd (entry point group
`incidentd.runbook_actions`). Third-party packages register theirs the same way:

    [project.entry-points."incidentd.runbook_actions"]
    my_fix = "my_package.actions:my_fix"

An action is called as `action(args=..., context=...)` (a coroutine function or a
plain one) and returns JSON-able output; raising makes the step fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any


async def tcp_check(*, args: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """Whether `host:port` accepts a TCP connection within `timeout_seconds` (default 5):
    the usual "is it back?" check after a restart."""
    host = str(args["host"])
    port = int(args["port"])
    timeout = float(args.get("timeout_seconds", 5))
    started = time.perf_counter()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"{host}:{port} refused or timed out: {exc}") from None
    writer.close()
    await writer.wait_closed()
    return {"host": host, "port": port,
            "connect_seconds": round(time.perf_counter() - started, 4)}
