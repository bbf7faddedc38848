"""Process harness for the end-to-end tests.

The daemon, Prometheus and Alertmanager run as real child processes, each
started from an argv list (never through a shell, so the PID we hold is the
server's own) with its output captured to a log file under the test's
`tmp_path`, and each stopped by that PID. Helpers here never sleep for a
fixed "long enough": they poll with short intervals and, on timeout, fail
with the last value seen and the tail of every process log.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import require

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO_ROOT / "config" / "incidentd.example.yaml"
AM_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "alertmanager-0.25"

LOOPBACK = "127.0.0.1"
ADMIN_TOKEN = "e2e-admin-token-5b1f"
INTEGRATION_TOKEN = "e2e-alertmanager-token-9c3e"

# Generous enough for a loaded CI box, short enough that a hang is reported
# well inside the suite's budget.
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


# --------------------------------------------------------------------------
# small utilities


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 60) -> str:
    """The last `lines` lines of a log file (or a note that there is none)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"<no log file at {path}>"
    rows = text.splitlines()
    shown = rows[-lines:]
    head = (
        f"... ({len(rows) - len(shown)} earlier lines in {path})\n"
        if len(rows) > len(shown)
        else ""
    )
    return head + "\n".join(shown)


def require_binary(name: str) -> str:
    """Path of an external binary the test needs.

    Missing on a developer box: the test is skipped with the reason. Missing
    when `CI=true`: the test fails, because CI must run every e2e test.
    """
    path = shutil.which(name)
    require(path is not None,
            f"{name} is not installed (Debian: apt-get install prometheus prometheus-alertmanager)")
    assert path is not None
    return path


def short_json(value: Any, limit: int = 4000) -> str:
    try:
        text = json.dumps(value, indent=1, default=str, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more chars)"


# --------------------------------------------------------------------------
# processes


class ManagedProcess:
    """One child process started from argv, output to `log_path`, stopped by PID."""

    def __init__(
        self,
        *,
        name: str,
        argv: list[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------

    def spawn(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"===== {time.strftime('%H:%M:%S')} start: {self.argv}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                # Own session: a Ctrl-C in the terminal reaches pytest, which
                # then stops us by PID in teardown, instead of racing it.
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines)

    def describe(self, lines: int = 40) -> str:
        state = "not started"
        if self.proc is not None:
            rc = self.proc.poll()
            state = f"pid {self.proc.pid}, " + ("running" if rc is None else f"exited rc={rc}")
        return f"----- {self.name} ({state}); last log lines:\n{self.tail(lines)}"

    def send_signal(self, sig: int) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)

    async def wait_exit(self, seconds: float) -> int | None:
        """Exit code, or None if still running after `seconds`."""
        assert self.proc is not None
        deadline = time.monotonic() + seconds
        while True:
            rc = self.proc.poll()
            if rc is not None or time.monotonic() >= deadline:
                return rc
            await asyncio.sleep(0.05)

    async def terminate(self, seconds: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait up to `seconds`; SIGKILL if still alive. Returns the SIGTERM exit code
        or None when it had to be killed."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        rc = await self.wait_exit(seconds)
        if rc is None:
            self.proc.kill()
            await self.wait_exit(5)
        return rc

    async def kill9(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        rc = await self.wait_exit(5)
        assert rc is not None, f"{self.name} pid {self.proc.pid} survived SIGKILL"

    # -- readiness ---------------------------------------------------------

    async def wait_http_ok(self, url: str, seconds: float = READY_TIMEOUT) -> None:
        """Poll `url` until it answers 200; fail early (with the log) if the process dies."""
        deadline = time.monotonic() + seconds
        last = "no answer yet"
        timeout_cfg = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout_cfg) as session:
            while True:
                if not self.alive:
                    pytest.fail(
                        f"{self.name} exited with rc={self.returncode} before {url} was ready\n"
                        f"{self.describe(80)}",
                        pytrace=False,
                    )
                try:
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            return
                        last = f"HTTP {resp.status}: {(await resp.text())[:500]}"
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    pytest.fail(
                        f"{self.name} not ready at {url} after {seconds}s (last: {last})\n"
                        f"{self.describe(80)}",
                        pytrace=False,
                    )
                await asyncio.sleep(0.1)


class ProcessRegistry:
    """Every process a test started; stopped in reverse order at teardown and
    shown (log tails) when the test fails."""

    def __init__(self) -> None:
        self.processes: list[ManagedProcess] = []

    def add(self, proc: ManagedProcess) -> ManagedProcess:
        self.processes.append(proc)
        return proc

    def describe(self, lines: int = 40) -> str:
        return "\n".join(p.describe(lines) for p in self.processes) or "<no processes>"

    async def stop_all(self) -> None:
        for proc in reversed(self.processes):
            await proc.terminate()


class DaemonProcess(ManagedProcess):
    """`python -m daemon run` on its own port and SQLite file.

    By default it runs the shipped example config with the admin and
    Alertmanager tokens in its environment. A test that needs other
    integrations passes `config`: a mapping (written as YAML to
    `tmp_path/<name>.yaml`; start from `example_config()`) or the path of a
    YAML file. `env` adds variables (e.g. `INCIDENTD_PAGERDUTY_ROUTING_KEY`)
    on top of those, and may override them. Nothing `INCIDENTD_*` leaks in
    from the environment pytest runs in.
    """

    def __init__(
        self,
        *,
        tmp_path: Path,
        name: str = "incidentd",
        config: Mapping[str, Any] | Path | None = None,
        env: Mapping[str, str] | None = None,
        database_url: str | None = None,
    ) -> None:
        self.port = free_port()
        self.db_path = tmp_path / f"{name}.db"
        # Default: its own SQLite file; replicas share one PostgreSQL URL instead.
        self.database_url = database_url or f"sqlite+aiosqlite:///{self.db_path}"
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        if config is None:
            self.config_path = EXAMPLE_CONFIG
        elif isinstance(config, Path):
            self.config_path = config
        else:
            self.config_path = tmp_path / f"{name}.yaml"
            self.config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENTD_")}
        child_env.update(
            INCIDENTD_API_TOKEN=ADMIN_TOKEN,
            INCIDENTD_ALERTMANAGER_TOKEN=INTEGRATION_TOKEN,
            PYTHONUNBUFFERED="1",
        )
        child_env.update(env or {})
        argv = [
            sys.executable,
            "-m",
            "daemon",
            "run",
            "--config",
            str(self.config_path),
            "--listen",
            f"{LOOPBACK}:{self.port}",
            "--database-url",
            self.database_url,
        ]
        super().__init__(
            name=name, argv=argv, log_path=tmp_path / f"{name}.log", env=child_env, cwd=REPO_ROOT
        )

    def integration_url(self, integration: str) -> str:
        """`POST /api/v1/alerts/{integration}`."""
        return f"{self.base_url}/api/v1/alerts/{integration}"

    @property
    def pagerduty_events_url(self) -> str:
        """PagerDuty Events API v2 (`routing_key` in the body picks the integration)."""
        return f"{self.base_url}/v2/enqueue"

    @property
    def alertmanager_webhook_url(self) -> str:
        return self.integration_url("alertmanager")

    async def start(self) -> DaemonProcess:
        self.spawn()
        await self.wait_http_ok(f"{self.base_url}/readyz")
        return self

    async def stop(self, seconds: float = STOP_TIMEOUT) -> int:
        """SIGTERM and the exit code; fails the test if it does not exit in time."""
        rc = await self.terminate(seconds)
        if rc is None:
            pytest.fail(
                f"{self.name} did not exit within {seconds}s of SIGTERM (killed)\n"
                f"{self.describe(80)}",
                pytrace=False,
            )
        return rc

    async def restart(self) -> DaemonProcess:
        """Start again on the same DB file and port (after stop() or kill9())."""
        assert not self.alive, "stop() or kill9() the daemon before restart()"
        return await self.start()


def webhook_receiver(
    url: str,
    *,
    bearer: str | None = None,
    basic: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """An Alertmanager receiver (without its name) posting `webhook_configs` to
    `url`, with `send_resolved` and bearer or basic (username, password) auth."""
    http_config: dict[str, Any] = {}
    if bearer is not None:
        http_config["authorization"] = {"type": "Bearer", "credentials": bearer}
    if basic is not None:
        http_config["basic_auth"] = {"username": basic[0], "password": basic[1]}
    webhook: dict[str, Any] = {"url": url, "send_resolved": True}
    if http_config:
        webhook["http_config"] = http_config
    return {"webhook_configs": [webhook]}


def pagerduty_receiver(url: str, routing_key: str) -> dict[str, Any]:
    """An Alertmanager receiver (without its name) sending PagerDuty Events v2 to
    `url` (instead of events.pagerduty.com) with `routing_key`, and resolutions."""
    return {"pagerduty_configs": [{"url": url, "routing_key": routing_key, "send_resolved": True}]}


class AlertmanagerProcess(ManagedProcess):
    """Debian's `prometheus-alertmanager`, routing every alert to one receiver.

    The receiver is a bearer-authenticated webhook to `webhook_url` unless
    `receiver` gives its config (see `webhook_receiver`, `pagerduty_receiver`).
    Alerts are grouped by `alertname`, with 1 s group wait and interval.
    """

    def __init__(
        self,
        *,
        tmp_path: Path,
        webhook_url: str | None = None,
        token: str = INTEGRATION_TOKEN,
        receiver: Mapping[str, Any] | None = None,
        name: str = "alertmanager",
    ) -> None:
        binary = require_binary("prometheus-alertmanager")
        if receiver is None:
            assert webhook_url, "give webhook_url or receiver"
            receiver = webhook_receiver(webhook_url, bearer=token)
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        workdir = tmp_path / name
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        config = {
            "route": {
                "receiver": "incidentd",
                "group_by": ["alertname"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "incidentd", **receiver}],
        }
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--cluster.listen-address=",
            "--log.level=info",
        ]
        super().__init__(name=name, argv=argv, log_path=workdir / "alertmanager.log")

    async def start(self) -> AlertmanagerProcess:
        self.spawn()
        await self.wait_http_ok(f"{self.url}/-/ready")
        return self

    async def amtool_add(
        self,
        labels: Mapping[str, str],
        *,
        annotations: Mapping[str, str] | None = None,
        end: str | None = None,
    ) -> str:
        """`amtool alert add` against this Alertmanager; its output. `end`
        (RFC 3339) in the past or now resolves an alert with the same labels."""
        amtool = require_binary("amtool")
        argv = [amtool, f"--alertmanager.url={self.url}", "alert", "add"]
        argv += [f"{k}={v}" for k, v in labels.items()]
        argv += [f"--annotation={k}={v}" for k, v in (annotations or {}).items()]
        if end is not None:
            argv.append(f"--end={end}")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail(f"{argv} did not finish within 30 s\n{self.describe(40)}", pytrace=False)
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            pytest.fail(
                f"{argv} exited {proc.returncode}: {text}\n{self.describe(40)}", pytrace=False
            )
        return text

    async def metrics_text(self, session: aiohttp.ClientSession) -> str:
        async with session.get(f"{self.url}/metrics") as resp:
            text = await resp.text()
            assert resp.status == 200, f"GET {self.url}/metrics answered {resp.status}"
            return text


class PrometheusProcess(ManagedProcess):
    """Debian's `prometheus`: 1 s scrapes and rule evaluation, alerts to one Alertmanager."""

    def __init__(
        self,
        *,
        tmp_path: Path,
        alertmanager_port: int | None,
        scrape_targets: Mapping[str, str],
        rule_groups: list[dict[str, Any]] | None = None,
    ) -> None:
        binary = require_binary("prometheus")
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        workdir = tmp_path / "prometheus"
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in scrape_targets.items()
            ],
        }
        if alertmanager_port is not None:
            config["alerting"] = {
                "alertmanagers": [
                    {"static_configs": [{"targets": [f"{LOOPBACK}:{alertmanager_port}"]}]}
                ]
            }
        if rule_groups:
            rules_path = workdir / "rules.yml"
            rules_path.write_text(yaml.safe_dump({"groups": rule_groups}, sort_keys=False))
            config["rule_files"] = [str(rules_path)]
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            # Default 1 m: an alert that fires before Alertmanager is
            # discovered would otherwise wait a minute to be sent again.
            "--rules.alert.resend-delay=1s",
            "--log.level=info",
        ]
        super().__init__(name="prometheus", argv=argv, log_path=workdir / "prometheus.log")

    async def start(self) -> PrometheusProcess:
        self.spawn()
        await self.wait_http_ok(f"{self.url}/-/ready")
        return self

    async def query_sum(
        self, session: aiohttp.ClientSession, promql: str
    ) -> tuple[float | None, Any]:
        """Sum of an instant vector query (None if empty) and the raw answer."""
        async with session.get(f"{self.url}/api/v1/query", params={"query": promql}) as resp:
            body = await resp.json(content_type=None)
        if resp.status != 200 or body.get("status") != "success":
            return None, body
        result = body["data"]["result"]
        if not result:
            return None, body
        return sum(float(item["value"][1]) for item in result), body


# --------------------------------------------------------------------------
# the demo scrape target


class DemoTarget:
    """A real aiohttp server in the test's event loop exposing `demo_up`."""

    def __init__(self) -> None:
        self.value = 1
        self.scrapes = 0
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        body = (
            "# HELP demo_up Whether the demo service is up (1) or down (0).\n"
            "# TYPE demo_up gauge\n"
            f"demo_up {self.value}\n"
        )
        return web.Response(text=body, content_type="text/plain", charset="utf-8")

    async def start(self) -> DemoTarget:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def local_server(app: web.Application) -> AsyncIterator[int]:
    """Serve `app` on a free loopback port for the block (a webhook target, an agent);
    yields the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, 0).start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


async def constant(value: T) -> T:
    """`value` as an awaitable: lets `poll` watch something the test holds itself."""
    return value


# --------------------------------------------------------------------------
# the daemon's HTTP API


class ApiError(AssertionError):
    pass


class IncidentdClient:
    """Thin client for the daemon's API. No keep-alive, so a restarted daemon
    never meets a stale pooled connection."""

    def __init__(self, daemon: DaemonProcess, session: aiohttp.ClientSession) -> None:
        self.daemon = daemon
        self.session = session

    @property
    def base(self) -> str:
        return self.daemon.base_url

    @staticmethod
    def admin_headers() -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def _json(self, method: str, path: str, expect: Iterable[int] = (200,), **kw: Any) -> Any:
        async with self.session.request(method, f"{self.base}{path}", **kw) as resp:
            text = await resp.text()
            if resp.status not in tuple(expect):
                raise ApiError(
                    f"{method} {path} answered {resp.status}, expected {tuple(expect)}: "
                    f"{text[:2000]}\n"
                    f"{self.daemon.describe(40)}"
                )
            return json.loads(text) if text else None

    async def post_alertmanager(
        self, payload: bytes | Mapping[str, Any], *, token: str = INTEGRATION_TOKEN
    ) -> tuple[int, str]:
        """POST a webhook body as Alertmanager 0.25 does (compact JSON + newline,
        `Content-Type: application/json` without charset). Returns (status, body)."""
        data = payload if isinstance(payload, bytes) else alertmanager_bytes(payload)
        headers = {
            "User-Agent": "Alertmanager/0.25.0",
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        }
        async with self.session.post(
            self.daemon.alertmanager_webhook_url, data=data, headers=headers
        ) as resp:
            return resp.status, await resp.text()

    async def incidents(self, status: str | None = None, limit: int = 100) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return await self._json(
            "GET", "/api/v1/incidents", params=params, headers=self.admin_headers()
        )

    async def all_incidents(
        self, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return await self._paginate("/api/v1/incidents", status=status, limit=limit)

    async def incident(self, incident_id: int) -> dict[str, Any]:
        return await self._json(
            "GET", f"/api/v1/incidents/{incident_id}", headers=self.admin_headers()
        )

    async def all_alerts(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self._paginate("/api/v1/alerts", limit=limit)

    async def _paginate(
        self, path: str, *, limit: int, status: str | None = None
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        seen_cursors: set[str] = set()
        while True:
            params: dict[str, Any] = {"limit": limit}
            if status:
                params["status"] = status
            if cursor:
                params["cursor"] = cursor
            page = await self._json("GET", path, params=params, headers=self.admin_headers())
            assert set(page) >= {"items", "next_cursor"}, (
                f"GET {path} page shape: {short_json(page)}"
            )
            assert len(page["items"]) <= limit, (
                f"GET {path}?limit={limit} gave {len(page['items'])} items"
            )
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return items
            assert cursor not in seen_cursors, (
                f"GET {path}: next_cursor {cursor!r} repeats (endless paging)"
            )
            seen_cursors.add(cursor)

    async def action(
        self, incident_id: int, verb: str, actor: str, expect: Iterable[int] = (200,)
    ) -> Any:
        return await self._json(
            "POST",
            f"/api/v1/incidents/{incident_id}/{verb}",
            expect=expect,
            json={"actor": actor},
            headers=self.admin_headers(),
        )

    async def metrics_text(self) -> str:
        async with self.session.get(f"{self.base}/metrics") as resp:
            text = await resp.text()
            assert resp.status == 200, f"GET /metrics answered {resp.status}: {text[:1000]}"
            return text


# --------------------------------------------------------------------------
# payloads and metrics


def example_config() -> dict[str, Any]:
    """A fresh copy of the shipped example config, for a test to extend and
    pass to `DaemonProcess(config=...)`."""
    loaded = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    assert isinstance(loaded, dict), EXAMPLE_CONFIG
    # The copy lives elsewhere: keep its CMDB and runbook files pointing at the shipped ones.
    for section in ("cmdb", "runbooks"):
        loaded[section]["files"] = [str(EXAMPLE_CONFIG.parent / f)
                                    for f in loaded[section]["files"]]
    return loaded


def fixture_bytes(name: str) -> bytes:
    return (AM_FIXTURES / name).read_bytes()


def fixture_json(name: str) -> dict[str, Any]:
    return json.loads(fixture_bytes(name))


def alertmanager_bytes(payload: Mapping[str, Any]) -> bytes:
    """Serialise like Alertmanager: compact JSON and a trailing newline."""
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def alertmanager_group(
    *, group: str, fingerprints: list[str], severity: str = "critical", status: str = "firing"
) -> dict[str, Any]:
    """A copy of the captured Prometheus-rule payload for alert group `group`
    (its own `groupKey` and `alertname`) carrying one alert per fingerprint."""
    base = fixture_json("prometheus_firing.json")
    template = base["alerts"][0]
    alerts = []
    for i, fp in enumerate(fingerprints):
        alert = copy.deepcopy(template)
        alert["status"] = status
        alert["fingerprint"] = fp
        alert["labels"] = {
            "alertname": group,
            "instance": f"e2e-{group.lower()}-{i}.invalid:9100",
            "job": "e2e",
            "service": f"svc-{group.lower()}",
            "severity": severity,
        }
        alert["annotations"] = {"summary": f"{group} instance {i} is down"}
        alerts.append(alert)
    common = {
        "alertname": group,
        "job": "e2e",
        "service": f"svc-{group.lower()}",
        "severity": severity,
    }
    base.update(
        status=status,
        alerts=alerts,
        groupLabels={"alertname": group},
        commonLabels=common if len(alerts) > 1 else alerts[0]["labels"],
        commonAnnotations={} if len(alerts) > 1 else alerts[0]["annotations"],
        groupKey=f'{{}}:{{alertname="{group}"}}',
    )
    return base


def metric_value(text: str, sample_name: str, **labels: str) -> float | None:
    """Sum of the samples named `sample_name` whose labels include `labels`;
    None when there is no such sample at all."""
    total: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != sample_name:
                continue
            if all(sample.labels.get(k) == v for k, v in labels.items()):
                total = (total or 0.0) + float(sample.value)
    return total


# --------------------------------------------------------------------------
# polling


async def poll(
    what: str,
    fetch: Callable[[], Awaitable[T]],
    check: Callable[[T], Any],
    *,
    within: float,
    diagnostics: Callable[[], str],
    interval: float = 0.25,
) -> Any:
    """Call `fetch` until `check(value)` is truthy and return that truthy result.

    Connection errors count as "not yet". On timeout the test fails naming
    what it waited for, the last value (or error) seen, and the process logs.
    """
    deadline = time.monotonic() + within
    last: Any = "<nothing fetched yet>"
    while True:
        try:
            value = await fetch()
            last = value
            result = check(value)
            if result:
                return result
        except (TimeoutError, aiohttp.ClientError, OSError, ApiError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            pytest.fail(
                f"timed out after {within:.0f}s waiting for {what}\n"
                f"last seen:\n{short_json(last)}\n\n{diagnostics()}",
                pytrace=False,
            )
        await asyncio.sleep(interval)
