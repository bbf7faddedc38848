"""What each step type does, given its rendered fields. One attempt per call.

The executor time-limits every call (`asyncio.wait_for`) and records the
`Outcome`. Commands run without a shell, as an argv list, in a session of
their own so that a timeout kills everything they started (the whole process
group), with stdin closed and an environment made only of the allowlisted
variables plus the step's own. Every captured output is cut to a byte limit
while it is read, so a chatty command cannot fill the daemon's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import aiohttp
import orjson

from daemon.runbooks.catalog import ACTIONS_GROUP
from daemon.store import Store
from daemon.store import runbooks as run_store

READ_CHUNK = 64 * 1024
WAIT_POLL_SECONDS = 0.5
REDACTED = "[redacted]"
# Header names whose values are credentials: recorded as "[redacted]".
_SECRET_HEADER_PARTS = ("authorization", "cookie", "token", "secret", "key", "password",
                        "signature")


@dataclass(slots=True)
class Outcome:
    ok: bool
    output: Any = None
    exit_code: int | None = None
    http_status: int | None = None
    error: str | None = None


def truncate(data: bytes, limit: int, total: int | None = None) -> str:
    """`data` as text, cut to `limit` bytes, saying how much there was."""
    size = len(data) if total is None else total
    text = data[:limit].decode("utf-8", errors="replace")
    return text if size <= limit else f"{text}… [truncated: {size} bytes in all]"


def recorded_input(rendered: Mapping[str, Any]) -> dict[str, Any]:
    """The rendered step as the run record keeps it: env values and credential-bearing
    headers are replaced, since run records are shown through the API."""
    out = dict(rendered)
    if isinstance(out.get("env"), dict):
        out["env"] = dict.fromkeys(out["env"], REDACTED)
    if isinstance(out.get("headers"), dict):
        out["headers"] = {k: REDACTED if _secret_header(k) else v
                          for k, v in out["headers"].items()}
    return out


def _secret_header(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_HEADER_PARTS)


# -- http ----------------------------------------------------------------------


async def http(rendered: Mapping[str, Any], *, session: aiohttp.ClientSession,
               max_output: int) -> Outcome:
    """One request; success when the status is one the step expects."""
    body = rendered.get("body")
    try:
        # Redirects are not followed: the step names the one endpoint it may reach.
        async with session.request(
                rendered["method"], rendered["url"], headers=rendered.get("headers") or {},
                json=body if body is not None else None, allow_redirects=False) as resp:
            data, total = await _read_limited(resp.content, max_output)
            status = resp.status
    except (aiohttp.ClientError, ValueError) as exc:
        return Outcome(ok=False, error=f"request failed: {type(exc).__name__}: {exc}"[:500])
    expected = rendered.get("expect_status") or [200, 201, 202, 204]
    ok = status in expected
    return Outcome(ok=ok, output=truncate(data, max_output, total), http_status=status,
                   error=None if ok else f"HTTP {status}, expected one of {expected}")


async def _read_limited(stream: aiohttp.StreamReader, limit: int) -> tuple[bytes, int]:
    """Up to `limit` bytes (and one more, to tell a cut body from a whole one)."""
    kept = bytearray()
    while len(kept) <= limit:
        chunk = await stream.read(min(READ_CHUNK, limit + 1 - len(kept)))
        if not chunk:
            break
        kept += chunk
    return bytes(kept), len(kept)


# -- command -------------------------------------------------------------------


def command_env(allowlist: list[str], own: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted variables of the daemon's environment, then the step's own."""
    env = {name: os.environ[name] for name in allowlist if name in os.environ}
    env.update(own)
    return env


async def command(rendered: Mapping[str, Any], *, max_output: int) -> Outcome:
    """Run argv without a shell; success is exit status 0. Cancelling it (a timeout)
    kills its whole process group."""
    argv: list[str] = list(rendered["argv"])
    env = command_env(list(rendered.get("env_allowlist") or []), rendered.get("env") or {})
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=rendered.get("cwd"), env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)
    except OSError as exc:
        return Outcome(ok=False, error=f"cannot start {argv[0]}: {exc.strerror or exc}")
    try:
        assert proc.stdout is not None and proc.stderr is not None
        (out, out_total), (err, err_total) = await asyncio.gather(
            _capture(proc.stdout, max_output), _capture(proc.stderr, max_output))
        code = await proc.wait()
    except BaseException:
        _kill_group(proc)
        with contextlib.suppress(ProcessLookupError, asyncio.CancelledError):
            await asyncio.shield(proc.wait())
        raise
    output = {"stdout": truncate(out, max_output, out_total),
              "stderr": truncate(err, max_output, err_total)}
    return Outcome(ok=code == 0, output=output, exit_code=code,
                   error=None if code == 0 else f"exit status {code}")


async def _capture(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, int]:
    """Keep the first `limit` bytes, read (and drop) the rest so the child never blocks."""
    kept = bytearray()
    total = 0
    while chunk := await stream.read(READ_CHUNK):
        total += len(chunk)
        if len(kept) < limit:
            kept += chunk[:limit - len(kept)]
    return bytes(kept), total


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    # The child leads its own session, so its group id is its pid; killing the group
    # also stops whatever it started (a shell script's children, say).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


# -- python --------------------------------------------------------------------


def load_action(name: str) -> Callable[..., Any]:
    """The callable registered as `name` in the entry point group; KeyError if none."""
    loaded: Callable[..., Any] = entry_points(group=ACTIONS_GROUP)[name].load()
    return loaded


async def python(rendered: Mapping[str, Any], *, context: Mapping[str, Any],
                 max_output: int) -> Outcome:
    """Call the action with `args=` and `context=`; its return value is the output.

    A coroutine function is awaited (and cancelled on timeout); a plain function
    runs in a thread, which a timeout abandons but cannot stop.
    """
    try:
        action = load_action(rendered["action"])
    except KeyError:
        return Outcome(ok=False, error=f"no python action {rendered['action']!r} in "
                                       f"{ACTIONS_GROUP}")
    except Exception as exc:
        return Outcome(ok=False, error=f"cannot load action: {type(exc).__name__}: {exc}"[:500])
    args = copy.deepcopy(dict(rendered.get("args") or {}))
    mine = copy.deepcopy(dict(context))
    try:
        if inspect.iscoroutinefunction(action):
            result = await action(args=args, context=mine)
        else:
            result = await asyncio.to_thread(action, args=args, context=mine)
            if inspect.isawaitable(result):
                result = await result
    except Exception as exc:
        return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:max_output])
    return Outcome(ok=True, output=_json_output(result, max_output))


def _json_output(value: Any, limit: int) -> Any:
    try:
        data = orjson.dumps(value)
    except TypeError:
        return truncate(repr(value).encode(), limit)
    return value if len(data) <= limit else truncate(data, limit)


# -- wait_for_resolution -------------------------------------------------------


async def wait_for_resolution(store: Store, *, incident_id: int | None,
                              alert_id: int | None) -> Outcome:
    """Poll until the triggering alert (or every alert of the incident) is resolved.
    Runs until cancelled: the executor's step timeout is how long to wait."""
    while True:
        async with store.read() as conn:
            firing = await run_store.still_firing(conn, incident_id=incident_id,
                                                  alert_id=alert_id)
        if firing == 0:
            return Outcome(ok=True, output="resolved")
        await asyncio.sleep(WAIT_POLL_SECONDS)
