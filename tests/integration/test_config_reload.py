"""A configuration reload in process, on a real store: each part takes its new settings,
a secret that did not change keeps its part (a generated token stays valid), a rotated
secret file is read again, and a refused reload changes nothing, the CMDB included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from daemon import app as daemon_app
from daemon import metrics
from daemon.app import Components
from daemon.config import Config, Overrides, load_config
from daemon.itsm.action_links import InvalidLink
from daemon.receivers.endpoint import Integration
from tests.conftest import reset

Client = TestClient  # type: ignore[type-arg]

CMDB_A = "cis:\n  - {id: db-a, name: A, type: database}\n"
CMDB_B = "cis:\n  - {id: db-b, name: B, type: database}\n"
RUNBOOK = {"runbooks": [{"name": "noop", "match": {"alerts": ["alertname=\"Noop\""]},
                         "steps": [{"name": "say", "type": "notify", "message": "hi"}]}]}


@dataclass
class Daemon:
    path: Path
    tmp: Path
    client: Client
    components: Components

    def write(self, **sections: Any) -> None:
        self.path.write_text(yaml.safe_dump(base(self.tmp, **sections)))

    async def reload(self) -> dict[str, Any]:
        resp = await self.client.post("/-/reload", headers={"Authorization": "Bearer admin"})
        body: dict[str, Any] = await resp.json()
        body["http_status"] = resp.status
        return body

    def integration(self, name: str) -> Integration:
        return next(i for i in self.components.intake.integrations if i.name == name)


def base(tmp: Path, **sections: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "api": {"tokens": [{"value": "admin"}, {"env": "INCIDENTD_API_TOKEN"}],
                "read_only_tokens": []},
        "integrations": [
            # Unset: a token is generated for the run.
            {"name": "grafana", "type": "grafana",
             "auth": {"bearer_tokens": [{"env": "INCIDENTD_GRAFANA_TOKEN"}]}},
            {"name": "generic", "type": "generic",
             "auth": {"bearer_tokens": [{"file": str(tmp / "generic.token")}]}},
        ],
        "cmdb": {"files": [str(tmp / "a.yaml")]},
        "notifications": {"action_links": {"secret": {"file": str(tmp / "link.secret")}}},
        "runbooks": {"files": [str(tmp / "runbooks.yaml")]},
    }
    config.update(sections)
    return config


@pytest.fixture
async def daemon(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> AsyncIterator[Daemon]:
    for name in ("INCIDENTD_API_TOKEN", "INCIDENTD_GRAFANA_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "a.yaml").write_text(CMDB_A)
    (tmp_path / "b.yaml").write_text(CMDB_B)
    (tmp_path / "generic.token").write_text("generic-1\n")
    (tmp_path / "link.secret").write_text("link-secret-1\n")
    (tmp_path / "runbooks.yaml").write_text(yaml.safe_dump(RUNBOOK))
    path = tmp_path / "incidentd.yaml"
    path.write_text(yaml.safe_dump(base(tmp_path)))

    def loader() -> Config:
        return load_config(path, environ={}, overrides=Overrides(database_url=database_url))

    await reset(database_url)
    components = await daemon_app.start(loader(), loader=loader, source=str(path))
    try:
        async with TestClient(TestServer(components.app)) as client:
            yield Daemon(path, tmp_path, client, components)
    finally:
        await daemon_app.stop(components)


async def status(client: Client, method: str, path: str, token: str, **kw: Any) -> int:
    resp = await client.request(method, path, headers={"Authorization": f"Bearer {token}"},
                                **kw)
    await resp.read()
    return resp.status


async def cis(d: Daemon) -> list[str]:
    resp = await d.client.get("/api/v1/cmdb/cis", headers={"Authorization": "Bearer admin"})
    return sorted(ci["id"] for ci in (await resp.json())["items"])


async def test_unchanged_secrets_keep_their_parts_and_rotated_files_are_read(
        daemon: Daemon) -> None:
    c = daemon.components
    admin, grafana, generic = c.guard.access.admin, daemon.integration("grafana"), \
        daemon.integration("generic")
    link = c.followup.links.token(1, "acknowledge", "alice")

    assert (await daemon.reload())["http_status"] == 200
    # Nothing changed: the generated admin and Grafana tokens still work, as does the link.
    assert c.guard.access.admin is admin
    assert daemon.integration("grafana") is grafana
    assert daemon.integration("generic") is generic
    assert c.followup.links.verify(link).person == "alice"

    (daemon.tmp / "generic.token").write_text("generic-2\n")
    (daemon.tmp / "link.secret").write_text("link-secret-2\n")
    assert (await daemon.reload())["http_status"] == 200
    assert daemon.integration("grafana") is grafana and c.guard.access.admin is admin
    alert = {"summary": "disk full", "labels": {"alertname": "Disk"}}
    assert await status(daemon.client, "POST", "/api/v1/alerts", "generic-1", json=alert) == 401
    assert await status(daemon.client, "POST", "/api/v1/alerts", "generic-2", json=alert) == 202
    with pytest.raises(InvalidLink):
        c.followup.links.verify(link)  # signed with the secret that was rotated out
    assert c.followup.links.verify(
        c.followup.links.token(1, "resolve", "bob")).person == "bob"


async def test_each_part_takes_its_new_settings(daemon: Daemon) -> None:
    c = daemon.components
    assert await cis(daemon) == ["db-a"]
    daemon.write(
        api={"tokens": [{"value": "admin"}], "read_only_tokens": [{"value": "reader"}],
             "protect_metrics": True},
        cmdb={"files": [str(daemon.tmp / "b.yaml")]},
        correlation={"window_seconds": 60, "max_depth": 2},
        priority={"default_impact": 3},
        lifecycle={"reopen_window_seconds": 5, "close_after_seconds": 60},
        sla={"check_interval_seconds": 2.5},
        escalation={"policies": [{"name": "p", "levels": [{"targets": ["team:x"]}]}],
                    "default_policy": "p"},
        problems={"recurrences": 9},
        changes={"suspect_window_seconds": 120},
        notifications={"action_links": {"secret": {"file": str(daemon.tmp / "link.secret")},
                                        "ttl_seconds": 60},
                       "retry": {"max_attempts": 2},
                       "targets": [{"name": "hook", "type": "webhook",
                                    "url": "http://127.0.0.1:9/hook"}]},
        runbooks={"files": [], "dry_run": True, "max_concurrent_runs": 1},
        logging={"level": "warning"},
    )
    answer = await daemon.reload()
    assert answer["http_status"] == 200, answer
    assert set(answer["changed"]) >= {"api", "cmdb", "correlation", "priority", "lifecycle",
                                      "sla", "escalation", "problems", "changes",
                                      "notifications", "runbooks", "logging"}
    assert answer["restart_required"] == []

    assert await status(daemon.client, "GET", "/metrics", "wrong") == 401
    assert await status(daemon.client, "GET", "/metrics", "reader") == 200
    assert await status(daemon.client, "POST", "/api/v1/runbooks/disable-all", "reader",
                        json={"actor": "r"}) == 403
    assert await cis(daemon) == ["db-b"] and c.cmdb.files == (daemon.tmp / "b.yaml",)
    stages = c.pipeline.stages
    assert stages.reopen_window_seconds == 5
    assert c.followup.escalations.enabled
    assert c.scheduler.get_job("sla-clocks").trigger.interval.total_seconds() == 2.5
    assert c.catalog.current.runbooks == {}
    resp = await daemon.client.get("/api/v1/runbooks", headers={"Authorization": "Bearer admin"})
    assert (await resp.json())["dry_run_all"] is True
    assert c.reloader.running.logging.level == "warning"


async def test_a_refused_reload_changes_nothing_not_even_the_cmdb(daemon: Daemon) -> None:
    c = daemon.components
    before = c.reloader.running
    stages, policies = c.pipeline.stages, c.followup.policies
    (daemon.tmp / "runbooks.yaml").write_text("runbooks: [{name: x, steps: [{type: shell}]}]\n")
    daemon.write(cmdb={"files": [str(daemon.tmp / "b.yaml")]},
                 api={"tokens": [{"value": "other"}]})
    answer = await daemon.reload()
    assert answer["http_status"] == 400, answer
    assert any(str(daemon.tmp / "runbooks.yaml") in e["field"]
               for e in answer["error"]["errors"]), answer
    assert metrics.REGISTRY.get_sample_value("incidentd_config_last_reload_successful") == 0
    assert c.reloader.running is before
    assert c.pipeline.stages is stages and c.followup.policies is policies
    assert await cis(daemon) == ["db-a"] and c.cmdb.files == (daemon.tmp / "a.yaml",)
    assert [r for r in c.catalog.current.runbooks] == ["noop"]
    assert await status(daemon.client, "GET", "/api/v1/incidents", "other") == 401

    (daemon.tmp / "b.yaml").write_text("cis:\n  - {id: db-b, name: B, type: db, "
                                       "depends_on: [ghost]}\n")
    (daemon.tmp / "runbooks.yaml").write_text(yaml.safe_dump(RUNBOOK))
    answer = await daemon.reload()
    assert answer["http_status"] == 400, answer
    assert "unknown CI 'ghost'" in str(answer["error"]["errors"])
    assert await cis(daemon) == ["db-a"] and c.cmdb.files == (daemon.tmp / "a.yaml",)
    assert await status(daemon.client, "GET", "/api/v1/incidents", "admin") == 200
