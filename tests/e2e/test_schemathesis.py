"""schemathesis against a real daemon: every operation of `/api/v1/openapi.json`, with
the admin token (each integration's own credential on alert ingest), answers without a
5xx, with a documented status code, content type and headers, and with a body that
matches its schema.

The daemon is seeded first (incidents, a change, a problem, a runbook run, a
notification) and the seeded ids become the examples of the path parameters, so the
examples phase reaches real rows; the coverage and fuzzing phases then try everything
else, valid and invalid. Examples are bounded and generation deterministic, so a run
costs about the same every time (well under two minutes on two busy cores).

schemathesis runs as its command line, `st`, the same way one runs it by hand against a
daemon of one's own (see the README):

    CHECKS=not_a_server_error,status_code_conformance,content_type_conformance
    CHECKS=$CHECKS,response_schema_conformance,response_headers_conformance
    st run http://127.0.0.1:8080/api/v1/openapi.json \
      -H "Authorization: Bearer $INCIDENTD_API_TOKEN" -c $CHECKS -n 20

(Its pytest plugin does not run on pytest 9.2: it sets `Node._nodeid`, which is gone.)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from .harness import (
    ADMIN_TOKEN,
    INTEGRATION_TOKEN,
    REPO_ROOT,
    DaemonProcess,
    alertmanager_bytes,
    alertmanager_group,
    local_server,
)
from .secure_setup import ENV, GENERIC_TOKEN, GRAFANA_TOKEN, bearer, secure_config

pytestmark = pytest.mark.e2e

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance")
MAX_EXAMPLES = 12
# The whole run; it takes well under this, even on a loaded machine.
RUN_TIMEOUT = 240.0


@pytest.fixture
async def daemon_with_data(daemon_factory: Callable[..., DaemonProcess]
                           ) -> AsyncIterator[tuple[DaemonProcess, dict[str, str]]]:
    async def accept(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    receiver = web.Application()
    receiver.router.add_post("/hook", accept)
    async with local_server(receiver) as port:  # the notification target answers 200
        config = secure_config(webhook_url=f"http://127.0.0.1:{port}/hook")
        daemon = await daemon_factory(config=config, env=ENV).start()
        yield daemon, await _seed(daemon.base_url)


async def _seed(base: str) -> dict[str, str]:
    admin = bearer(ADMIN_TOKEN)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:

        async def call(method: str, path: str, *, expect: int = 200, **kw: Any) -> Any:
            async with s.request(method, f"{base}{path}", **kw) as resp:
                text = await resp.text()
                assert resp.status == expect, f"seeding {method} {path}: {resp.status} {text}"
                return json.loads(text)

        for group in ("SeedOne", "SeedTwo"):
            body = alertmanager_bytes(alertmanager_group(group=group, fingerprints=[group]))
            await call("POST", "/api/v1/alerts/alertmanager", data=body,
                       headers={**bearer(INTEGRATION_TOKEN), "Content-Type": "application/json"})
        incident = (await call("GET", "/api/v1/incidents", headers=admin))["items"][0]
        change = await call("POST", "/api/v1/changes", expect=201, headers=admin,
                            json={"summary": "seeded change", "cis": ["host-17"]})
        problem = await call("POST", "/api/v1/problems", expect=201, headers=admin,
                             json={"title": "seeded problem", "incidents": [incident["id"]]})
        runbook = (await call("GET", "/api/v1/runbooks", headers=admin))["items"][0]["name"]
        run = await call("POST", f"/api/v1/runbooks/{runbook}/run", expect=201, headers=admin,
                         json={"incident": incident["id"]})
        notification = (await call("GET", "/api/v1/notifications", headers=admin))["items"][0]
        ci = (await call("GET", "/api/v1/cmdb/cis", headers=admin))["items"][0]["id"]
    return {"/api/v1/incidents/": str(incident["id"]), "/api/v1/changes/": str(change["id"]),
            "/api/v1/problems/": str(problem["id"]), "/api/v1/runbook-runs/": str(run["id"]),
            "/api/v1/notifications/": str(notification["id"]), "/api/v1/runbooks/": runbook,
            "/api/v1/cmdb/cis/": ci}


async def _schema_with_examples(base: str, ids: dict[str, str]) -> dict[str, Any]:
    """The document as any client loads it, over HTTP; the seeded ids become the examples
    of the path parameters (only here: real ids differ per deployment)."""
    async with aiohttp.ClientSession() as s, s.get(f"{base}/api/v1/openapi.json") as resp:
        assert resp.status == 200, await resp.text()
        doc: dict[str, Any] = await resp.json()
    for path, ops in doc["paths"].items():
        example = next((v for prefix, v in ids.items() if path.startswith(prefix)), None)
        for key, op in ops.items():
            for param in op if key == "parameters" else op.get("parameters", []):
                if param["in"] == "path" and example is not None:
                    param["example"] = example
    return doc


def _toml(base: str) -> str:
    """schemathesis' configuration: the admin token everywhere, each integration's own
    token on its ingest path, only the checks this test is about."""
    def headers(token: str) -> str:
        return f'headers = {{ Authorization = "Bearer {token}" }}'

    per_path = [("/api/v1/alerts/alertmanager", INTEGRATION_TOKEN),
                ("/api/v1/alerts/grafana", GRAFANA_TOKEN)]
    operations = "".join(f'\n[[operations]]\ninclude-path = "{path}"\n{headers(token)}\n'
                         for path, token in per_path)
    operations += ('\n[[operations]]\ninclude-path = "/api/v1/alerts"\ninclude-method = "POST"\n'
                   f"{headers(GENERIC_TOKEN)}\n")
    checks = "\n".join(f"{name}.enabled = true" for name in CHECKS)
    return f"""
base-url = "{base}"
workers = 2
request-timeout = 30
hooks = "tests.e2e.schemathesis_hooks"
{headers(ADMIN_TOKEN)}

[generation]
max-examples = {MAX_EXAMPLES}
deterministic = true
database = "none"

[phases.stateful]
enabled = false

[checks]
enabled = false
{checks}
{operations}"""


async def test_every_operation_keeps_its_contract(
    daemon_with_data: tuple[DaemonProcess, dict[str, str]], tmp_path: Path
) -> None:
    daemon, ids = daemon_with_data
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(await _schema_with_examples(daemon.base_url, ids)))
    config = tmp_path / "schemathesis.toml"
    config.write_text(_toml(daemon.base_url))
    st = Path(sys.executable).with_name("st")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "NO_COLOR": "1", "COLUMNS": "120"}
    proc = await asyncio.create_subprocess_exec(
        str(st), "--config-file", str(config), "run", str(schema),
        "--checks", ",".join(CHECKS), "--report-dir", str(tmp_path / "report"),
        cwd=REPO_ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"schemathesis did not finish within {RUN_TIMEOUT:.0f}s")
    report = out.decode(errors="replace")
    assert proc.returncode == 0, f"schemathesis found problems:\n{report[-20000:]}"
    assert daemon.alive, daemon.describe(60)
