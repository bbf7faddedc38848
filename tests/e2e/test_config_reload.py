"""The daemon as a process: SIGHUP (and `POST /-/reload`) reloads the whole configuration
without dropping a request; an invalid one is refused and the running one stays; a
setting that needs a restart is named and not applied."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.conftest import reset

from .harness import (
    ADMIN_TOKEN,
    LOOPBACK,
    DaemonProcess,
    IncidentdClient,
    alertmanager_group,
    constant,
    example_config,
    free_port,
    local_server,
    metric_value,
    poll,
)

pytestmark = pytest.mark.e2e

OLD_TOKEN = "reload-old-admin-token-1c7d"
NEW_TOKEN = "reload-new-admin-token-8e2a"
READ_TOKEN = "reload-read-only-token-4b90"
AM2_TOKEN = "reload-second-alertmanager-token-77f3"
SUCCESSFUL = "incidentd_config_last_reload_successful"
SUCCESS_TIME = "incidentd_config_last_reload_success_timestamp_seconds"
POSTERS = 3
AFTER_RELOAD = 20  # requests each poster still sends once the new config is seen


def first_config() -> dict[str, Any]:
    config = example_config()
    config["api"] = {"tokens": [{"env": "INCIDENTD_API_TOKEN"}, {"value": OLD_TOKEN}],
                     "read_only_tokens": [{"value": READ_TOKEN}]}
    return config


def second_config(hook_url: str) -> dict[str, Any]:
    """The old token out and a new one in, a second Alertmanager integration with its own
    token, a webhook target, and a new default escalation policy."""
    config = first_config()
    config["api"]["tokens"] = [{"env": "INCIDENTD_API_TOKEN"}, {"value": NEW_TOKEN}]
    config["integrations"].append({"name": "am2", "type": "alertmanager",
                                   "auth": {"bearer_tokens": [{"value": AM2_TOKEN}]}})
    config["notifications"]["targets"] = [{"name": "hook", "type": "webhook", "url": hook_url,
                                           "routes": [{"events": ["incident.triggered"]}]}]
    config["escalation"]["policies"].append(
        {"name": "reloaded", "levels": [{"targets": ["team:reload"], "timeout_seconds": 600}]})
    config["escalation"]["default_policy"] = "reloaded"
    return config


def write(path: Path, config: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False))


async def status(http: aiohttp.ClientSession, method: str, url: str,
                 token: str | None = None, **kw: Any) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, headers=headers, **kw) as resp:
        await resp.read()
        return resp.status


async def gauges(client: IncidentdClient) -> tuple[float | None, float | None]:
    text = await client.metrics_text()
    return metric_value(text, SUCCESSFUL), metric_value(text, SUCCESS_TIME)


class Posters:
    """Clients posting Alertmanager webhooks in a loop, every answer recorded."""

    def __init__(self, client: IncidentdClient) -> None:
        self.client = client
        self.answers: Counter[str] = Counter()
        self.sent = 0
        self.reloaded_at: int | None = None  # `sent` when the new config was seen
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._post(n)) for n in range(POSTERS)]

    async def stop(self) -> None:
        await asyncio.gather(*self._tasks)

    def done(self) -> bool:
        return (self.reloaded_at is not None
                and self.sent >= self.reloaded_at + POSTERS * AFTER_RELOAD)

    async def _post(self, number: int) -> None:
        while not self.done():
            body = alertmanager_group(group=f"Load{number}x{self.sent}",
                                      fingerprints=[uuid.uuid4().hex[:16]])
            try:
                code, _ = await self.client.post_alertmanager(body)
                self.answers[str(code)] += 1
            except (aiohttp.ClientError, OSError) as exc:
                self.answers[type(exc).__name__] += 1
            self.sent += 1
            await asyncio.sleep(0)


async def test_sighup_under_load_applies_the_new_config_and_drops_no_request(
    database_url: str, tmp_path: Path, daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient], http: aiohttp.ClientSession,
) -> None:
    await reset(database_url)
    delivered: list[str] = []

    async def hook(req: web.Request) -> web.Response:
        delivered.append(req.headers.get("X-Incidentd-Event-Type", ""))
        return web.Response(status=204)

    hook_app = web.Application()
    hook_app.router.add_post("/hook", hook)
    path = tmp_path / "incidentd.yaml"
    write(path, first_config())
    async with local_server(hook_app) as port:
        daemon = await daemon_factory(config=path, database_url=database_url).start()
        client = make_client(daemon)
        base = daemon.base_url
        assert await status(http, "GET", f"{base}/api/v1/incidents", OLD_TOKEN) == 200
        assert await status(http, "GET", f"{base}/api/v1/incidents", NEW_TOKEN) == 401
        assert await status(http, "POST", daemon.integration_url("am2"), AM2_TOKEN,
                            json={}) == 404
        _, started_at = await gauges(client)

        posters = Posters(client)
        posters.start()
        await poll("requests before the reload", lambda: constant(posters.sent),
                   lambda n: n >= 3 * POSTERS, within=20, diagnostics=daemon.describe)
        write(path, second_config(f"http://{LOOPBACK}:{port}/hook"))
        daemon.send_signal(signal.SIGHUP)
        await poll("the new admin token", lambda: status(
            http, "GET", f"{base}/api/v1/incidents", NEW_TOKEN), lambda s: s == 200,
            within=30, diagnostics=daemon.describe)
        posters.reloaded_at = posters.sent
        await asyncio.wait_for(posters.stop(), timeout=120)

        assert set(posters.answers) == {"200"}, (
            f"every request during the reload is answered 2xx: {dict(posters.answers)}")
        assert posters.sent > posters.reloaded_at
        assert await status(http, "GET", f"{base}/api/v1/incidents", OLD_TOKEN) == 401
        assert await status(http, "GET", f"{base}/api/v1/incidents", ADMIN_TOKEN) == 200
        assert await status(http, "GET", f"{base}/api/v1/incidents", READ_TOKEN) == 200

        # The new integration takes alerts with its own token, and only with it.
        group = f"Reloaded{uuid.uuid4().hex[:8]}"
        body = alertmanager_group(group=group, fingerprints=[uuid.uuid4().hex[:16]])
        assert await status(http, "POST", daemon.integration_url("am2"), "wrong",
                            json=body) == 401
        assert await status(http, "POST", daemon.integration_url("am2"), AM2_TOKEN,
                            json=body) == 200
        page = await client.incidents()
        incident_id = next(i["id"] for i in page["items"] if group in i["group_key"])
        incident = await client.incident(incident_id)
        assert incident["escalation"]["policy"] == "reloaded", incident["escalation"]
        await poll("a delivery to the new webhook target", lambda: constant(delivered),
                   lambda d: "incident.triggered" in d, within=30,
                   diagnostics=daemon.describe)

        successful, reloaded_at = await gauges(client)
        assert successful == 1
        assert reloaded_at is not None and started_at is not None and reloaded_at > started_at
        log = daemon.tail(400)
        assert "configuration reloaded" in log
        assert "restart to apply" not in log
        assert OLD_TOKEN not in log and NEW_TOKEN not in log and AM2_TOKEN not in log


async def test_an_invalid_config_is_refused_and_the_running_one_stays(
    tmp_path: Path, daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient], http: aiohttp.ClientSession,
) -> None:
    path = tmp_path / "incidentd.yaml"
    write(path, first_config())
    daemon = await daemon_factory(config=path).start()
    client = make_client(daemon)
    incidents = f"{daemon.base_url}/api/v1/incidents"
    assert await gauges(client) == (1, pytest.approx(time.time(), abs=120))

    async def refused(marker: str) -> None:
        daemon.send_signal(signal.SIGHUP)
        line = await poll(f"the refusal naming {marker!r}", lambda: constant(daemon.tail(400)),
                          lambda text: next((row for row in text.splitlines()
                                             if "reload refused" in row and marker in row),
                                            None), within=30, diagnostics=daemon.describe)
        assert str(path) in line, line
        assert daemon.alive
        assert await status(http, "GET", incidents, OLD_TOKEN) == 200
        assert await status(http, "GET", incidents, NEW_TOKEN) == 401
        assert (await gauges(client))[0] == 0

    path.write_text("api:\n  tokens: [unclosed\n")
    await refused("invalid YAML")
    changed = second_config("http://127.0.0.1:9/hook")
    changed["escalation"]["check_interval_seconds"] = 0
    write(path, changed)
    await refused("escalation.check_interval_seconds")

    write(path, second_config("http://127.0.0.1:9/hook"))
    daemon.send_signal(signal.SIGHUP)
    await poll("the gauge back at 1", lambda: gauges(client), lambda g: g[0] == 1, within=30,
               diagnostics=daemon.describe)
    assert await status(http, "GET", incidents, NEW_TOKEN) == 200
    assert await status(http, "GET", incidents, OLD_TOKEN) == 401


async def test_a_changed_listen_address_is_named_and_not_applied(
    tmp_path: Path, daemon_factory: Callable[..., DaemonProcess],
    http: aiohttp.ClientSession,
) -> None:
    path = tmp_path / "incidentd.yaml"
    daemon = daemon_factory(config=path)
    # The address from the file, not from --listen (a flag would win over the file).
    at = daemon.argv.index("--listen")
    del daemon.argv[at:at + 2]
    config = first_config()
    config["server"]["listen"] = f"{LOOPBACK}:{daemon.port}"
    write(path, config)
    await daemon.start()

    other = free_port()
    config["server"]["listen"] = f"{LOOPBACK}:{other}"
    config["api"]["tokens"].append({"value": NEW_TOKEN})  # applied live meanwhile
    write(path, config)
    daemon.send_signal(signal.SIGHUP)
    await poll("the restart warning", lambda: constant(daemon.tail(400)),
               lambda text: "server.listen changed; restart to apply" in text, within=30,
               diagnostics=daemon.describe)
    assert await status(http, "GET", f"{daemon.base_url}/api/v1/incidents", NEW_TOKEN) == 200
    with pytest.raises((aiohttp.ClientError, OSError)):
        await status(http, "GET", f"http://{LOOPBACK}:{other}/healthz")

    async with http.post(f"{daemon.base_url}/-/reload",
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
    assert answer["status"] == "reloaded"
    assert answer["restart_required"] == ["server.listen"]


async def test_post_reload_needs_an_admin_token_and_says_what_is_wrong(
    tmp_path: Path, daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient], http: aiohttp.ClientSession,
) -> None:
    path = tmp_path / "incidentd.yaml"
    write(path, first_config())
    daemon = await daemon_factory(config=path).start()
    reload_url = f"{daemon.base_url}/-/reload"
    assert await status(http, "POST", reload_url) == 401
    assert await status(http, "POST", reload_url, "not-a-token") == 401
    assert await status(http, "POST", reload_url, READ_TOKEN) == 403

    async with http.post(reload_url, headers={"Authorization": f"Bearer {OLD_TOKEN}"}) as resp:
        assert resp.status == 200, await resp.text()
        assert await resp.json() == {"status": "reloaded", "changed": [],
                                     "restart_required": []}

    broken = first_config()
    broken["correlation"] = {"window_seconds": -1}
    write(path, broken)
    async with http.post(reload_url, headers={"Authorization": f"Bearer {OLD_TOKEN}"}) as resp:
        answer = await resp.json()
        assert resp.status == 400, answer
    errors = answer["error"]["errors"]
    assert {"field": f"{path}: correlation.window_seconds",
            "reason": "Input should be greater than 0"} in errors, errors
    assert "Traceback" not in str(answer)
    assert (await gauges(make_client(daemon)))[0] == 0
    assert await status(http, "GET", f"{daemon.base_url}/api/v1/incidents", OLD_TOKEN) == 200
