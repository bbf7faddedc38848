"""Reloading the configuration while running (SIGHUP, `POST /-/reload`), as Prometheus
and Alertmanager do.

The loader the command line used (same file, environment and flags) reads the
configuration again. One that does not load, or whose CMDB or runbook files do not, is
refused whole: one error line lists the problems (file, key path, reason), the running
configuration stays, and `incidentd_config_last_reload_successful` reads 0.

A valid one goes to the composition root's `apply` (see `daemon.app.apply_config`),
which builds every new part first (anything that can fail fails there, changing
nothing), writes the CMDB files to the store, then swaps the parts into the running
components in one synchronous step on the event loop: a request or a batch reads its
configuration once when it starts, so none sees half of the old and half of the new.

Settings a running daemon cannot change (where it listens, its database, the ingest
queue, …) keep their running value; a warning names each changed key path.

Reloads run one at a time. A request arriving during a reload waits for the next one,
and several arriving meanwhile share it: that reload reads the files after all of them.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel

from daemon import metrics
from daemon.api.responses import json_response
from daemon.config import Config, ConfigError
from daemon.errors import InvalidInput

log = structlog.get_logger("incidentd.reload")

Loader = Callable[[], Config]
# (running, new) → None once applied; raises `ConfigError` to refuse, changing nothing.
Apply = Callable[[Config, Config], Awaitable[None]]

# Key paths whose new value needs a restart; the running value stays until then.
RESTART_ONLY: tuple[tuple[str, ...], ...] = (
    ("server",),  # the listening socket and its limits are set up once
    ("database",),  # the store, its pool and the leadership lock are opened once
    ("ingest",),  # the bounds of the running ingest queue
    ("logging", "format"),  # the renderer is fixed at start (the level is live)
    # Slack's and the inbound webhook's verifiers are built once, with their replay memory.
    ("notifications", "slack"),
    ("notifications", "inbound_webhook"),
    # ITSM connectors: the sender, the notifier and the update endpoint share one set.
    ("connectors",),
)


class Refused(ConfigError):
    """A part of the new configuration is unusable; `what` says which, for the log line."""

    def __init__(self, what: str, problems: list[str]) -> None:
        super().__init__(problems)
        self.what = what


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    problems: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()  # top-level sections that now differ
    restart_required: tuple[str, ...] = ()  # key paths that changed but wait for a restart

    def as_json(self) -> dict[str, Any]:
        return {"status": "reloaded", "changed": list(self.changed),
                "restart_required": list(self.restart_required)}


class Reloader:
    """Runs reloads one at a time and remembers the configuration in force."""

    def __init__(self, *, loader: Loader, running: Config, apply: Apply) -> None:
        self._loader = loader
        self._apply = apply
        self.running = running
        self._lock = asyncio.Lock()
        self._asked = 0  # reload requests so far
        self._covered = 0  # requests the last reload started after
        self._last = ReloadResult(ok=True)
        self._tasks: set[asyncio.Task[ReloadResult]] = set()
        self._closing = False
        # Like Prometheus: the configuration loaded at start counts as a successful load.
        metrics.CONFIG_RELOAD_SUCCESSFUL.set(1)
        metrics.CONFIG_RELOAD_SUCCESS_TIME.set(time.time())

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/-/reload", self.handle)]

    def on_signal(self) -> None:
        """SIGHUP: reload in the background; the outcome is logged."""
        if self._closing:
            return
        task = asyncio.get_running_loop().create_task(self.reload(via="SIGHUP"),
                                                      name="config-reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """At shutdown: take no more signals, let a reload in flight finish."""
        self._closing = True
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def handle(self, request: web.Request) -> web.Response:
        """`POST /-/reload` (admin token): 200 when applied, 400 with the problems."""
        result = await self.reload(via="http")
        if not result.ok:
            raise InvalidInput("configuration not reloaded; the running one stays",
                               [as_error(p) for p in result.problems])
        return json_response(result.as_json())

    async def reload(self, *, via: str) -> ReloadResult:
        self._asked += 1
        ticket = self._asked
        async with self._lock:
            if self._covered >= ticket:
                return self._last  # a reload that began after this request did its work
            self._covered = self._asked
            self._last = await self._reload_once(via)
            return self._last

    async def _reload_once(self, via: str) -> ReloadResult:
        try:
            # Off the event loop: it reads files, and requests keep being answered.
            wanted = await asyncio.to_thread(self._loader)
        except ConfigError as err:
            return self._refused(via, "configuration file invalid", err.problems)
        restart = restart_required(self.running, wanted)
        applied = keep_running(self.running, wanted)
        try:
            await self._apply(self.running, applied)
        except ConfigError as err:
            what = err.what if isinstance(err, Refused) else "configuration invalid"
            return self._refused(via, what, err.problems)
        except Exception:  # a bug: the reload is refused, the daemon goes on
            log.exception("configuration reload failed", via=via)
            return self._refused(via, "internal error",
                                 ["internal error while reloading; see the daemon log"])
        changed = tuple(name for name in Config.model_fields
                        if getattr(self.running, name) != getattr(applied, name))
        self.running = applied
        for path in restart:
            log.warning(f"{path} changed; restart to apply", key=path)
        metrics.CONFIG_RELOAD_SUCCESSFUL.set(1)
        metrics.CONFIG_RELOAD_SUCCESS_TIME.set(time.time())
        log.info("configuration reloaded", via=via, changed=list(changed),
                 restart_required=restart)
        return ReloadResult(ok=True, changed=changed, restart_required=tuple(restart))

    def _refused(self, via: str, what: str, problems: list[str]) -> ReloadResult:
        metrics.CONFIG_RELOAD_SUCCESSFUL.set(0)
        log.error(f"configuration reload refused ({what}); the running configuration stays",
                  via=via, problems=problems)
        return ReloadResult(ok=False, problems=tuple(problems))


# -- what needs a restart ---------------------------------------------------------


def restart_required(running: Config, wanted: Config) -> list[str]:
    """The changed key paths under `RESTART_ONLY` (paths only: values may be secrets)."""
    changed: list[str] = []
    for path in RESTART_ONLY:
        changed += _differences(_at(running, path), _at(wanted, path), ".".join(path))
    return changed


def keep_running(running: Config, wanted: Config) -> Config:
    """`wanted`, with the running value at every `RESTART_ONLY` path."""
    kept: BaseModel = wanted
    for path in RESTART_ONLY:
        kept = _replaced(kept, path, _at(running, path))
    assert isinstance(kept, Config)
    return kept


def _at(model: BaseModel, path: tuple[str, ...]) -> Any:
    value: Any = model
    for key in path:
        value = getattr(value, key)
    return value


def _replaced(model: BaseModel, path: tuple[str, ...], value: Any) -> BaseModel:
    head, rest = path[0], path[1:]
    new = _replaced(getattr(model, head), rest, value) if rest else value
    # No validation needed: both values passed it, and the model is frozen.
    return model.model_copy(update={head: new})


def _differences(old: Any, new: Any, path: str) -> list[str]:
    """Key paths of the leaves that differ (a list counts as one leaf)."""
    if isinstance(old, BaseModel) and type(old) is type(new):
        found: list[str] = []
        for name in type(old).model_fields:
            found += _differences(getattr(old, name), getattr(new, name), f"{path}.{name}")
        return found
    return [] if old == new else [path]


# -- problems as JSON ---------------------------------------------------------------

# The middle part of `file: key.path: reason` (or `file: line 3, column 7: reason`).
_WHERE = re.compile(r"^(?:[\w.\[\]-]+|line \d+, column \d+)$")


def as_error(problem: str) -> dict[str, str]:
    """`{"field": "file: key path", "reason": ...}` of one `file: key path: reason`."""
    source, sep, rest = problem.partition(": ")
    if not sep:
        return {"field": "", "reason": problem}
    where, sep, reason = rest.partition(": ")
    if sep and _WHERE.match(where):
        return {"field": f"{source}: {where}", "reason": reason}
    return {"field": source, "reason": rest}
