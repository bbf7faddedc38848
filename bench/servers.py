"""The servers the bench drives, as real processes: incidentd, and the bare aiohttp baseline.

Each is started from an argv list (no shell, so the PID we hold is the
server's own), logs to a file in the bench's temp dir, and is stopped by that
PID. Its memory and CPU come from `/proc/<pid>/`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPO_ROOT / "config" / "incidentd.example.yaml"
BENCH_DIR = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"
PG_ADMIN_DSN = os.environ.get("INCIDENTD_BENCH_PG",
                              "postgresql://postgres@127.0.0.1:5432/postgres")
ADMIN_TOKEN = "bench-admin-token-4f2a9c"
AM_TOKEN = "bench-alertmanager-token-7d1e0b"
PD_ROUTING_KEY = "benchroutingkey0123456789abcdef0"  # PagerDuty keys are 32 characters
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The bench cannot go on (a server did not start, a database is missing)."""


@dataclass(frozen=True, slots=True)
class Memory:
    rss_mb: float  # VmRSS now
    hwm_mb: float  # VmHWM: the peak RSS so far


class ServerProcess:
    """One server process on `port`, output to `log_path`, stopped by PID."""

    def __init__(self, *, name: str, argv: list[str], port: int, log_path: Path,
                 ready_path: str, env: Mapping[str, str] | None = None,
                 cwd: Path = REPO_ROOT) -> None:
        self.name = name
        self.ready_path = ready_path
        self.cwd = cwd
        self.argv = argv
        self.port = port
        self.base_url = f"http://{LOOPBACK}:{port}"
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Start and return once `ready_path` answers 200."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.cwd, start_new_session=True)
        self._wait_ready(self.base_url + self.ready_path)

    def _wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited rc={self.proc.returncode} before it was "
                                 f"ready; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as exc:
                last = str(exc)
            time.sleep(0.05)
        self.stop()
        raise BenchError(f"{self.name} not ready at {url} after {READY_TIMEOUT}s ({last}); "
                         f"see {self.log_path}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def memory(self) -> Memory:
        fields = _status_fields(self.pid)
        return Memory(rss_mb=fields.get("VmRSS", 0) / 1024, hwm_mb=fields.get("VmHWM", 0) / 1024)

    def cpu_seconds(self) -> float:
        """User + system CPU of the process (all its threads) so far."""
        return _cpu_of(self.pid)


def _status_fields(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out


def _cpu_of(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def postgres_cpu() -> dict[int, float]:
    """CPU seconds so far of every PostgreSQL process on the machine (ours and anyone
    else's), by PID."""
    out: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "postgres":
                out[int(entry.name)] = _cpu_of(int(entry.name))
        except (OSError, ValueError):
            continue  # gone meanwhile
    return out


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two `postgres_cpu()` readings by the processes alive at the end
    (a backend that exited meanwhile takes its share with it: an underestimate)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


# --------------------------------------------------------------------------
# the two kinds of server


def baseline(*, port: int, workdir: Path) -> ServerProcess:
    argv = [sys.executable, str(BENCH_DIR / "baseline_server.py"), "--port", str(port)]
    return ServerProcess(name="baseline", argv=argv, port=port,
                         log_path=workdir / "baseline.log", ready_path="/healthz")


def daemon(*, port: int, workdir: Path, name: str, database_url: str, cmdb_path: Path,
           source: Path | None = None) -> ServerProcess:
    """`incidentd run` with the bench's config; from `source` (a checkout or a `git archive`
    of another commit, run with this venv) instead of the installed package when given."""
    config_path = workdir / f"{name}.yaml"
    # The example config of the code that runs: another tree's may have other keys.
    example = (source or REPO_ROOT) / "config" / "incidentd.example.yaml"
    config = daemon_config(port=port, database_url=database_url, cmdb_path=cmdb_path,
                           example=example)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INCIDENTD_")}
    env["PYTHONUNBUFFERED"] = "1"
    script = Path(sys.executable).parent / "incidentd"
    if source is not None:
        command = [sys.executable, "-m", "daemon"]
        env["PYTHONPATH"] = str(source)  # ahead of the editable install's path
    else:
        command = [str(script)] if script.exists() else [sys.executable, "-m", "daemon"]
    return ServerProcess(name=name, argv=[*command, "run", "--config", str(config_path)],
                         port=port, log_path=workdir / f"{name}.log", env=env,
                         cwd=source or REPO_ROOT, ready_path="/readyz")


def daemon_config(*, port: int, database_url: str, cmdb_path: Path,
                  example: Path = EXAMPLE_CONFIG) -> dict[str, Any]:
    """The shipped example config (SLA, escalation, runbooks as shipped), with the
    bench's listen address, database, tokens and CMDB, and no notification targets."""
    config: dict[str, Any] = yaml.safe_load(example.read_text())
    config["server"]["listen"] = f"{LOOPBACK}:{port}"
    config["database"]["url"] = database_url
    config["api"]["tokens"] = [{"value": ADMIN_TOKEN}]
    config["integrations"] = [
        {"name": "alertmanager", "type": "alertmanager",
         "auth": {"bearer_tokens": [{"value": AM_TOKEN}]}, "default_severity": "warning"},
        {"name": "pagerduty", "type": "pagerduty",
         "auth": {"routing_keys": [{"value": PD_ROUTING_KEY}]}, "default_severity": "error"},
    ]
    config["cmdb"]["files"] = [str(cmdb_path)]
    config["runbooks"]["files"] = [str(example.parent / f)
                                   for f in config["runbooks"]["files"]]
    config["notifications"]["targets"] = []
    config["notifications"]["public_url"] = f"http://{LOOPBACK}:{port}"
    return config


# --------------------------------------------------------------------------
# databases


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def create_pg_database(name: str) -> str:
    """A fresh PostgreSQL database; its SQLAlchemy URL."""
    _pg_admin(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


def drop_pg_database(name: str) -> None:
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_admin(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(run())
    except (OSError, asyncpg.PostgresError) as err:
        raise BenchError(f"PostgreSQL at {PG_ADMIN_DSN}: {err}") from None


def analyze(database_url: str) -> None:
    """ANALYZE a PostgreSQL database: the statistics autovacuum gathers within a minute
    of a table growing, which a database created for a 10-second run lacks (its plans
    then guess: e.g. one read 3.7 ms before, 0.4 ms after)."""
    import asyncpg

    async def run() -> None:
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    asyncio.run(run())


def count_firing(database_url: str) -> int:
    """Firing alerts in the store, read straight from the database."""
    sql = "SELECT count(*) FROM alerts WHERE status = 'firing'"
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.split("///", 1)[1]) as conn:
            return int(conn.execute(sql).fetchone()[0])
    import asyncpg

    async def run() -> int:
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return int(await conn.fetchval(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


def _metric_lines(base_url: str) -> list[str]:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as resp:
        return resp.read().decode().splitlines()


def _total(lines: list[str], prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))


def alerts_received(base_url: str) -> float:
    """`incidentd_alerts_received_total`, all series: alert events committed so far."""
    return _total(_metric_lines(base_url), "incidentd_alerts_received_total{")


def commits(base_url: str) -> tuple[float, float]:
    """Ingest batches committed so far and the alerts in them
    (`incidentd_ingest_batch_alerts` count and sum)."""
    lines = _metric_lines(base_url)
    return (_total(lines, "incidentd_ingest_batch_alerts_count "),
            _total(lines, "incidentd_ingest_batch_alerts_sum "))
