"""The reload mechanism on its own: what needs a restart, one reload at a time (requests
arriving meanwhile share the next one), refusals keep the running configuration, and the
live logging level."""

from __future__ import annotations

import asyncio
import logging

import pytest
import structlog

from daemon import logging as daemon_logging
from daemon import metrics
from daemon.config import Config, ConfigError
from daemon.reloading import Refused, Reloader, as_error, keep_running, restart_required


def config(**sections: object) -> Config:
    return Config.model_validate(sections)


def successful() -> float | None:
    return metrics.REGISTRY.get_sample_value("incidentd_config_last_reload_successful")


def test_restart_only_changes_are_named_by_key_path_and_keep_their_running_value() -> None:
    running = config(server={"listen": "127.0.0.1:8080"},
                     database={"url": "postgresql+asyncpg://u:secret@db/x"})
    wanted = config(server={"listen": "127.0.0.1:9090"},
                    database={"url": "postgresql+asyncpg://u:other@db/x", "pool_size": 3},
                    ingest={"max_queued_alerts": 5}, logging={"level": "debug",
                                                              "format": "console"},
                    correlation={"window_seconds": 60})
    assert restart_required(running, wanted) == [
        "server.listen", "database.url", "database.pool_size", "ingest.max_queued_alerts",
        "logging.format"]
    applied = keep_running(running, wanted)
    assert applied.server == running.server and applied.database == running.database
    assert applied.ingest == running.ingest
    assert applied.logging.format == "json" and applied.logging.level == "debug"  # level: live
    assert applied.correlation.window_seconds == 60
    assert restart_required(running, applied) == []


def test_problems_become_field_and_reason() -> None:
    assert as_error("/etc/i.yaml: server.listen: expected HOST:PORT, got 'x'") == {
        "field": "/etc/i.yaml: server.listen", "reason": "expected HOST:PORT, got 'x'"}
    assert as_error("/etc/i.yaml: line 3, column 1: invalid YAML: found ':'") == {
        "field": "/etc/i.yaml: line 3, column 1", "reason": "invalid YAML: found ':'"}
    assert as_error("/etc/i.yaml: cannot read: No such file or directory") == {
        "field": "/etc/i.yaml", "reason": "cannot read: No such file or directory"}
    assert as_error("no structure") == {"field": "", "reason": "no structure"}


class Loads:
    """A loader and an `apply` that count their calls; `apply` can be held open."""

    def __init__(self) -> None:
        self.loaded = 0
        self.applied: list[Config] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.next: Config | Exception = config()

    def load(self) -> Config:
        self.loaded += 1
        if isinstance(self.next, Exception):
            raise self.next
        return self.next

    async def apply(self, running: Config, new: Config) -> None:
        self.entered.set()
        await self.gate.wait()
        self.applied.append(new)


async def test_requests_during_a_reload_wait_and_share_the_next_one() -> None:
    loads = Loads()
    reloader = Reloader(loader=loads.load, running=config(), apply=loads.apply)
    loads.gate.clear()
    first = asyncio.create_task(reloader.reload(via="test"))
    await asyncio.wait_for(loads.entered.wait(), timeout=30)
    # Two more arrive while the first is applying: one more reload serves both.
    later = [asyncio.create_task(reloader.reload(via="test")) for _ in range(2)]
    await asyncio.sleep(0)  # each runs up to the lock the first one holds
    assert loads.loaded == 1 and not any(t.done() for t in later)
    loads.gate.set()
    results = await asyncio.gather(first, *later)
    assert all(r.ok for r in results)
    assert loads.loaded == 2 and len(loads.applied) == 2
    assert results[1] is results[2]


async def test_a_refused_reload_keeps_the_running_config_and_sets_the_gauge_to_0() -> None:
    loads = Loads()
    running = config(correlation={"window_seconds": 60})
    reloader = Reloader(loader=loads.load, running=running, apply=loads.apply)
    assert successful() == 1
    loads.next = ConfigError(["/etc/i.yaml: correlation.window_seconds: bad"])
    result = await reloader.reload(via="test")
    assert not result.ok and result.problems == ("/etc/i.yaml: correlation.window_seconds: bad",)
    assert reloader.running is running and not loads.applied
    assert successful() == 0

    loads.next = config(correlation={"window_seconds": 90})

    async def refuse(running: Config, new: Config) -> None:
        raise Refused("runbook files invalid", ["r.yaml: runbooks.0.steps: bad"])

    reloader = Reloader(loader=loads.load, running=running, apply=refuse)
    assert not (await reloader.reload(via="test")).ok
    assert reloader.running is running and successful() == 0

    async def crash(running: Config, new: Config) -> None:
        raise RuntimeError("a bug")

    reloader = Reloader(loader=loads.load, running=running, apply=crash)
    result = await reloader.reload(via="test")
    assert not result.ok and "internal error" in result.problems[0]

    reloader = Reloader(loader=loads.load, running=running, apply=loads.apply)
    result = await reloader.reload(via="test")
    assert result.ok and result.changed == ("correlation",)
    assert reloader.running.correlation.window_seconds == 90
    assert successful() == 1


def test_the_logging_level_moves_for_loggers_already_in_use() -> None:
    try:
        daemon_logging.set_level("warning")
        with pytest.raises(structlog.DropEvent):
            daemon_logging._gate(None, "info", {})
        assert daemon_logging._gate(None, "error", {"event": "x"}) == {"event": "x"}
        daemon_logging.set_level("debug")
        assert daemon_logging._gate(None, "debug", {}) == {}
    finally:
        daemon_logging.set_level(logging.getLevelName(logging.INFO).lower())
