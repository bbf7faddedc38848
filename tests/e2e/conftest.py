"""Fixtures for the end-to-end tests: the daemon, Prometheus and Alertmanager
as real processes on free loopback ports, with all files under `tmp_path`.

Every process a test starts is registered in `procs`; teardown stops them by
PID in reverse order, and a failing test's report carries each log's tail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .harness import (
    AlertmanagerProcess,
    DaemonProcess,
    DemoTarget,
    IncidentdClient,
    ProcessRegistry,
    PrometheusProcess,
)

_PROCS = pytest.StashKey[ProcessRegistry]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    registry = item.stash.get(_PROCS, None)
    if report.failed and registry is not None:
        for proc in registry.processes:
            report.sections.append((f"{proc.name} log tail ({proc.log_path})", proc.tail(80)))
    return report


@pytest.fixture
async def procs(request: pytest.FixtureRequest) -> AsyncIterator[ProcessRegistry]:
    registry = ProcessRegistry()
    request.node.stash[_PROCS] = registry
    try:
        yield registry
    finally:
        await registry.stop_all()


@pytest.fixture
def daemon_factory(tmp_path: Path, procs: ProcessRegistry) -> Callable[..., DaemonProcess]:
    """Make (not start) a daemon with its own port and DB: `await d.start()`.

    Made first and started later so Alertmanager's config can name its port
    and everything can start concurrently. `make(config=..., env=...)` runs
    it with a test's own config (a mapping, written to a YAML file under
    `tmp_path`, or a path) and extra environment variables.
    """
    counter = 0

    def make(
        *,
        config: Mapping[str, Any] | Path | None = None,
        env: Mapping[str, str] | None = None,
        database_url: str | None = None,
    ) -> DaemonProcess:
        nonlocal counter
        counter += 1
        name = "incidentd" if counter == 1 else f"incidentd{counter}"
        daemon = DaemonProcess(tmp_path=tmp_path, name=name, config=config, env=env,
                               database_url=database_url)
        return procs.add(daemon)  # type: ignore[return-value]

    return make


@pytest.fixture
async def daemon(daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    return await daemon_factory().start()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # force_close: no keep-alive, so a killed/restarted daemon never leaves
    # a stale pooled connection behind.
    connector = aiohttp.TCPConnector(force_close=True, limit=200)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        yield session


@pytest.fixture
def make_client(http: aiohttp.ClientSession) -> Callable[[DaemonProcess], IncidentdClient]:
    return lambda d: IncidentdClient(d, http)


@pytest.fixture
def client(
    daemon: DaemonProcess, make_client: Callable[[DaemonProcess], IncidentdClient]
) -> IncidentdClient:
    return make_client(daemon)


@pytest.fixture
def alertmanager_factory(
    tmp_path: Path, procs: ProcessRegistry
) -> Callable[..., AlertmanagerProcess]:
    """Make (not start) an Alertmanager whose only receiver is `webhook_url`
    (bearer auth), or `make(receiver={...})` for another receiver config."""
    counter = 0

    def make(
        webhook_url: str | None = None,
        *,
        receiver: Mapping[str, Any] | None = None,
    ) -> AlertmanagerProcess:
        nonlocal counter
        counter += 1
        name = "alertmanager" if counter == 1 else f"alertmanager{counter}"
        am = AlertmanagerProcess(
            tmp_path=tmp_path, webhook_url=webhook_url, receiver=receiver, name=name
        )
        return procs.add(am)  # type: ignore[return-value]

    return make


@pytest.fixture
def prometheus_factory(tmp_path: Path, procs: ProcessRegistry) -> Callable[..., PrometheusProcess]:
    """Make (not start) a Prometheus:
    `make(alertmanager_port=..., scrape_targets={job: "host:port"}, rule_groups=[...])`."""

    def make(**kwargs: object) -> PrometheusProcess:
        return procs.add(PrometheusProcess(tmp_path=tmp_path, **kwargs))  # type: ignore[arg-type,return-value]

    return make


@pytest.fixture
async def demo_target() -> AsyncIterator[DemoTarget]:
    target = await DemoTarget().start()
    try:
        yield target
    finally:
        await target.close()
