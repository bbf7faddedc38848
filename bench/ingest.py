"""Ingest throughput and latency of the daemon as a real process, against a bare-aiohttp ceiling.

    .venv/bin/python bench/ingest.py [--json] [--quick] [--database sqlite|postgresql|both]
                                     [--duration S] [--concurrency 1,8,32]

For each scenario — (am1) Alertmanager webhooks with 1 alert, (am50) with 50
alerts, (pd) PagerDuty Events v2 single events — and each server — the bare
aiohttp baseline, incidentd on SQLite, incidentd on PostgreSQL — it starts the
server on one loopback port, starts the client processes, warms up with open
alerts (a 10,000-CI CMDB is loaded), then drives the scenario's mix (70 %
repeats of open alerts, 25 % new, 5 % resolves) in a closed loop at each
concurrency for a fixed time, and at half the best rate in an open loop (the
"half-rate p99"). Then, per database, it loads 100,000 open alerts into a
fresh daemon and reads its RSS. Every figure is printed with its ratio to the
baseline measured in the same run. Figures, not assertions: see bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import loadgen
import pyspy
import servers
import workload
from loadgen import ClientSpec, Result
from report import Report, Run, goals, print_tables
from servers import BenchError, ServerProcess

CMDB_CIS = 10_000
FULL_RSS_ALERTS = 100_000
CLIENT_TIMEOUT = 3600.0  # a command that takes longer than this is a hang


@dataclass(frozen=True, slots=True)
class Settings:
    targets: tuple[str, ...]  # "baseline" first, then the databases
    scenarios: tuple[str, ...]
    concurrencies: tuple[int, ...]
    seconds: float
    warmup_alerts: int  # open alerts before measuring (Alertmanager scenarios)
    warmup_pd: int  # open alerts before measuring (PagerDuty: one request each)
    rss_alerts: int
    rss_modes: tuple[str, ...]  # spread, correlated
    load_seconds: float  # the warm-up and the RSS load stop after this long
    clients: int
    half_rate: bool
    quick: bool
    daemon_src: str | None  # run the daemon from this directory instead of the installed one
    py_spy: str | None  # profile the daemon's closed-loop runs into this directory
    analyze: bool  # PostgreSQL: ANALYZE after the warm-up, as autovacuum would have by then


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# a session: one server, one scenario, the client processes


class Session:
    def __init__(self, *, target: str, scenario: str, server: ServerProcess,
                 cmdb_path: Path, clients: int, seed: int) -> None:
        self.target = target
        self.scenario = scenario
        self.server = server
        self.acknowledged = 0  # alerts in 2xx answers over the whole session
        context = multiprocessing.get_context("spawn")
        self.clients: list[tuple[BaseProcess, Connection]] = []
        for index in range(clients):
            ours, theirs = context.Pipe()
            spec = ClientSpec(index=index, scenario=scenario, base_url=server.base_url,
                              cmdb_path=cmdb_path, am_token=servers.AM_TOKEN,
                              pd_routing_key=servers.PD_ROUTING_KEY, seed=seed)
            process = context.Process(target=loadgen.client_main, args=(theirs, spec),
                                      name=f"bench-client-{index}", daemon=True)
            process.start()
            self.clients.append((process, ours))

    def close(self) -> None:
        for process, conn in self.clients:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
            process.join(10)
            if process.is_alive():
                process.kill()

    def command(self, commands: list[tuple[Any, ...]]) -> Result:
        """One command per client process, all at once; their results merged."""
        for (_, conn), command in zip(self.clients, commands, strict=True):
            conn.send(command)
        merged = Result()
        for process, conn in self.clients:
            try:
                if not conn.poll(CLIENT_TIMEOUT):
                    raise BenchError(f"client {process.name} did not answer")
                merged.merge(conn.recv())
            except (EOFError, OSError) as err:
                raise BenchError(f"client {process.name} died ({err!r}); its traceback is "
                                 f"above") from None
        self.acknowledged += merged.alerts
        return merged

    def measure(self, kind: str, commands: list[tuple[Any, ...]], *, concurrency: int,
                target_rate: float | None = None, profile: Path | None = None) -> Run:
        server_cpu0 = self.server.cpu_seconds()
        pg_cpu0 = servers.postgres_cpu() if self.target == "postgresql" else {}
        recorder = pyspy.Recorder(pid=self.server.pid, out=profile) if profile else None
        daemon = self.target != "baseline"
        commits0 = servers.commits(self.server.base_url) if daemon else None
        wall0 = time.perf_counter()
        try:
            result = self.command(commands)
        finally:
            wall = time.perf_counter() - wall0
            if recorder is not None:
                recorder.stop()
        pg_cpu = (servers.cpu_between(pg_cpu0, servers.postgres_cpu())
                  if self.target == "postgresql" else None)
        memory = self.server.memory()
        run = _run(self, kind, result, concurrency=concurrency, wall=wall,
                   server_cpu=self.server.cpu_seconds() - server_cpu0, pg_cpu=pg_cpu,
                   memory=memory, target_rate=target_rate)
        if commits0 is not None:
            commits1 = servers.commits(self.server.base_url)
            batches, alerts = (b - a for a, b in zip(commits0, commits1, strict=True))
            run.alerts_per_commit = alerts / batches if batches else None
        return run


def _run(session: Session, kind: str, result: Result, *, concurrency: int, wall: float,
         server_cpu: float, pg_cpu: float | None, memory: servers.Memory,
         target_rate: float | None) -> Run:
    seconds = result.elapsed or wall
    lat = sorted(result.latencies)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(len(lat) * p))] * 1000 if lat else 0.0

    return Run(
        target=session.target, scenario=session.scenario, kind=kind, concurrency=concurrency,
        seconds=round(seconds, 2), requests=result.requests, alerts=result.alerts,
        req_s=result.requests / seconds if seconds else 0.0,
        alerts_s=result.alerts / seconds if seconds else 0.0,
        p50_ms=pct(0.5), p99_ms=pct(0.99), max_ms=lat[-1] * 1000 if lat else 0.0,
        errors=sum(result.errors.values()), error_kinds=dict(result.errors),
        rss_mb=memory.rss_mb, hwm_mb=memory.hwm_mb,
        server_cpu=server_cpu / wall, client_cpu=result.cpu_seconds / wall,
        postgres_cpu=None if pg_cpu is None else pg_cpu / wall,
        load_1m=os.getloadavg()[0], target_rate=target_rate, late=result.late,
    )


def split(total: int, parts: int) -> list[int]:
    """`total` shared out over `parts`, as evenly as integers go."""
    return [total // parts + (i < total % parts) for i in range(parts)]


# --------------------------------------------------------------------------
# servers and databases


@contextlib.contextmanager
def server_for(target: str, *, port: int, workdir: Path, cmdb_path: Path, label: str,
               source: Path | None) -> Iterator[tuple[ServerProcess, str | None]]:
    """The server for `target`, not started yet, and its database URL (None for the
    baseline); stopped, and its PostgreSQL database dropped, at the end of the block."""
    database: str | None = None
    pg_name: str | None = None
    if target == "baseline":
        server = servers.baseline(port=port, workdir=workdir)
    else:
        if target == "sqlite":
            database = servers.sqlite_url(workdir / f"{label}.db")
        else:
            pg_name = f"bench_{os.getpid()}_{label.replace('-', '_')}"
            database = servers.create_pg_database(pg_name)
        server = servers.daemon(port=port, workdir=workdir, name=label, database_url=database,
                                cmdb_path=cmdb_path, source=source)
    try:
        yield server, database
    finally:
        server.stop()
        if pg_name is not None:
            servers.drop_pg_database(pg_name)


def _source(settings: Settings) -> Path | None:
    return Path(settings.daemon_src).resolve() if settings.daemon_src else None


def warm_up(session: Session, settings: Settings) -> None:
    kind, _ = loadgen.SCENARIOS[session.scenario]
    total = settings.warmup_pd if kind == "pagerduty" else settings.warmup_alerts
    per_client = split(total, len(session.clients))
    result = session.command([("fresh", n, 4, settings.load_seconds) for n in per_client])
    if result.errors:
        note(f"  warm-up errors: {dict(result.errors)}")
    # A short run of the mix itself: first-use costs (imports, caches, statements) go here.
    session.command([("closed", c, min(1.0, settings.seconds / 2))
                     for c in split(2 * len(session.clients), len(session.clients))])


def scenario_session(report: Report, settings: Settings, *, target: str, scenario: str,
                     port: int, workdir: Path, cmdb_path: Path, seed: int) -> None:
    label = f"{target}-{scenario}"
    note(f"[{label}] starting")
    with server_for(target, port=port, workdir=workdir, cmdb_path=cmdb_path, label=label,
                    source=_source(settings)) as (server, database):
        # The client processes start (and import) while the server does.
        session = Session(target=target, scenario=scenario, server=server, cmdb_path=cmdb_path,
                          clients=settings.clients, seed=seed)
        try:
            server.start()
            before = servers.alerts_received(server.base_url) if target != "baseline" else 0.0
            warm_up(session, settings)
            if target == "postgresql" and settings.analyze and database is not None:
                servers.analyze(database)
            closed = [closed_run(session, settings, c) for c in settings.concurrencies]
            report.runs += closed
            if settings.half_rate and target != "baseline":
                report.half_rate.append(half_rate_run(session, settings, closed))
        finally:
            session.close()
        if target != "baseline":
            after = servers.alerts_received(server.base_url)
            report.accounting.append({"target": target, "scenario": scenario,
                                      "acknowledged_alerts": session.acknowledged,
                                      "committed_counter": int(after - before)})


def closed_run(session: Session, settings: Settings, concurrency: int) -> Run:
    commands: list[tuple[Any, ...]] = [
        ("closed", c, settings.seconds) for c in split(concurrency, len(session.clients))]
    profile = None
    if settings.py_spy and session.target != "baseline":
        profile = Path(settings.py_spy) / f"{session.target}-{session.scenario}-c{concurrency}.txt"
    run = session.measure("closed", commands, concurrency=concurrency, profile=profile)
    run.profile = str(profile) if profile else None
    note(f"  c={concurrency:<3} {run.alerts_s:9.0f} alerts/s {run.req_s:8.0f} req/s  "
         f"p50 {run.p50_ms:6.1f} p99 {run.p99_ms:7.1f} max {run.max_ms:7.1f} ms  "
         f"errors {run.errors}  RSS {run.rss_mb:.0f} MB  cpu srv {run.server_cpu:.2f} "
         f"cli {run.client_cpu:.2f}  alerts/commit {run.alerts_per_commit or 0:.1f}")
    return run


def half_rate_run(session: Session, settings: Settings, closed: list[Run]) -> Run:
    best = max(closed, key=lambda r: r.req_s)
    rate = best.req_s / 2
    per_client = rate / len(session.clients)
    run = session.measure("paced", [("paced", per_client, settings.seconds)] * len(session.clients),
                          concurrency=0, target_rate=rate)
    note(f"  half rate {rate:.0f} req/s: p50 {run.p50_ms:.1f} p99 {run.p99_ms:.1f} "
         f"max {run.max_ms:.1f} ms, got {run.req_s:.0f} req/s, errors {run.errors}, "
         f"late {run.late}")
    return run


def rss_session(report: Report, settings: Settings, *, target: str, mode: str, port: int,
                workdir: Path, cmdb_path: Path, seed: int) -> None:
    """Load open alerts into a fresh daemon and read its memory. `correlated`: the mix's
    new alerts (they correlate over the CMDB, into few large incidents); `spread`: each
    request's 50 alerts on unknown machines, an incident of their own."""
    label = f"{target}-rss-{mode}"
    note(f"[{label}] loading {settings.rss_alerts:,} open alerts in batches of "
         f"{loadgen.FRESH_BATCH}")
    with server_for(target, port=port, workdir=workdir, cmdb_path=cmdb_path, label=label,
                    source=_source(settings)) as (server, database):
        session = Session(target=target, scenario="am50", server=server, cmdb_path=cmdb_path,
                          clients=settings.clients, seed=seed)
        try:
            server.start()
            per_client = split(settings.rss_alerts, len(session.clients))
            profile = Path(settings.py_spy) / f"{label}.txt" if settings.py_spy else None
            run = session.measure("load", [("fresh", n, 4, settings.load_seconds,
                                            mode == "spread") for n in per_client],
                                  concurrency=4 * len(session.clients), profile=profile)
            run.profile = str(profile) if profile else None
        finally:
            session.close()
        assert database is not None
        run.open_alerts = servers.count_firing(database)
        run.scenario = f"rss-{mode}"
        report.rss.append(run)
        note(f"  {run.open_alerts:,} firing alerts stored: RSS {run.rss_mb:.0f} MB "
             f"(peak {run.hwm_mb:.0f} MB), loaded at {run.alerts_s:.0f} alerts/s, "
             f"errors {run.errors}")


# --------------------------------------------------------------------------
# the whole bench


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((servers.LOOPBACK, 0))
        return int(sock.getsockname()[1])


def daemon_commit(source: Path | None) -> str | None:
    """The commit the daemon runs from: a git work tree's HEAD, or what a `COMMIT` file
    beside an unpacked `git archive` says."""
    if source is not None and (source / "COMMIT").is_file():
        return (source / "COMMIT").read_text().strip()
    where = source or servers.REPO_ROOT
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        return subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip() or None
    return None


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    uname = " ".join(platform.uname())
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        uname = subprocess.run(["uname", "-a"], check=True, capture_output=True,
                               text=True).stdout.strip()
    return {"uname": uname, "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "load_1m_at_start": os.getloadavg()[0]}


def fill_ratios(report: Report) -> None:
    base = {(r.scenario, r.concurrency): r.alerts_s for r in report.runs
            if r.target == "baseline"}
    for run in report.runs:
        ceiling = base.get((run.scenario, run.concurrency))
        if ceiling:
            run.ratio = run.alerts_s / ceiling


@contextlib.contextmanager
def failures(report: Report, label: str) -> Iterator[None]:
    """A session that fails is reported, and the bench goes on with the next one."""
    try:
        yield
    except BenchError as err:
        note(f"[{label}] FAILED: {err}")
        report.failures.append({"session": label, "error": str(err)})


def bench(settings: Settings) -> Report:
    report = Report(machine=machine(), settings=asdict(settings))
    report.machine["daemon_commit"] = daemon_commit(_source(settings))
    workdir = Path(tempfile.mkdtemp(prefix="incidentd-bench-"))
    cmdb_path = workdir / "cmdb.json"
    cmdb_path.write_bytes(workload.cmdb_document(CMDB_CIS))
    port = free_port()
    note(f"bench: {CMDB_CIS:,}-CI CMDB, port {port}, files in {workdir}")
    seed = 1
    for target in settings.targets:
        for scenario in settings.scenarios:
            seed += 1
            with failures(report, f"{target}-{scenario}"):
                scenario_session(report, settings, target=target, scenario=scenario,
                                 port=port, workdir=workdir, cmdb_path=cmdb_path, seed=seed)
    for target in settings.targets:
        for mode in settings.rss_modes if target != "baseline" and settings.rss_alerts else ():
            seed += 1
            with failures(report, f"{target}-rss-{mode}"):
                rss_session(report, settings, target=target, mode=mode, port=port,
                            workdir=workdir, cmdb_path=cmdb_path, seed=seed)
    fill_ratios(report)
    report.profiles = [pyspy.summarize(Path(r.profile)) for r in report.runs + report.rss
                       if r.profile and Path(r.profile).exists()]
    report.goals = goals(report.runs, report.half_rate, report.rss, full_rss=FULL_RSS_ALERTS)
    return report


def parse_args(argv: list[str] | None = None) -> tuple[Settings, bool]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout "
                        "(the tables go to stderr)")
    parser.add_argument("--quick", action="store_true",
                        help="short everything (~1.5 min): a smoke test, not figures")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="seconds per measured run (default 10, quick 1)")
    parser.add_argument("--concurrency", default="1,8,32", metavar="LIST",
                        help="in-flight requests of the closed-loop runs (default 1,8,32)")
    parser.add_argument("--scenarios", default="am1,am50,pd", metavar="LIST",
                        help="of am1 (Alertmanager, 1 alert), am50 (50 alerts), pd (PagerDuty)")
    parser.add_argument("--clients", type=int, default=os.cpu_count() or 2,
                        help="client processes (default: one per core)")
    parser.add_argument("--rss-alerts", type=int, default=None,
                        help="open alerts for the RSS run (default 100000, quick 2000; 0 skips)")
    parser.add_argument("--rss-mode", choices=["spread", "correlated", "both"], default="both",
                        help="the memory run's alerts: an incident per request (spread), the "
                             "mix's, correlating over the CMDB (correlated), or both (default)")
    parser.add_argument("--warmup", type=int, default=None, metavar="N",
                        help="open alerts before measuring (default 5000, quick 300; "
                             "PagerDuty a fifth of it: one request each)")
    parser.add_argument("--load-timeout", type=float, default=None, metavar="S",
                        help="stop the warm-up and the RSS load after S seconds (default 600, "
                             "quick 60): a slow daemon then reports what it reached")
    parser.add_argument("--no-half-rate", action="store_true", help="skip the paced runs")
    parser.add_argument("--py-spy", default=None, metavar="DIR",
                        help="profile the daemon during each closed-loop and memory run with "
                             "py-spy (not a dependency: pip install py-spy); stacks to DIR")
    parser.add_argument("--no-analyze", action="store_true",
                        help="PostgreSQL: measure on a database never analysed (by default "
                             "the bench runs ANALYZE after the warm-up, as autovacuum does "
                             "within a minute on a daemon that has been running)")
    parser.add_argument("--daemon-src", default=None, metavar="DIR",
                        help="run the daemon from DIR (e.g. `git archive` of a commit, "
                             "unpacked) instead of the installed package")
    args = parser.parse_args(argv)
    scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    unknown = [s for s in scenarios if s not in loadgen.SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")
    databases = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    quick = bool(args.quick)
    warmup = args.warmup if args.warmup is not None else (300 if quick else 5_000)
    return (Settings(
        targets=("baseline", *databases), scenarios=scenarios,
        concurrencies=tuple(int(c) for c in args.concurrency.split(",") if c.strip()),
        seconds=args.duration if args.duration is not None else (1.0 if quick else 10.0),
        warmup_alerts=warmup, warmup_pd=max(1, warmup // 5),
        rss_alerts=args.rss_alerts if args.rss_alerts is not None
        else (2_000 if quick else FULL_RSS_ALERTS),
        rss_modes=("spread", "correlated") if args.rss_mode == "both" else (args.rss_mode,),
        load_seconds=args.load_timeout or (60.0 if quick else 600.0),
        clients=max(1, args.clients), half_rate=not args.no_half_rate, quick=quick,
        daemon_src=args.daemon_src, py_spy=args.py_spy, analyze=not args.no_analyze,
    ), bool(args.json))


def main(argv: list[str] | None = None) -> int:
    settings, as_json = parse_args(argv)
    if settings.py_spy:
        if pyspy.binary() is None:
            note("--py-spy: py-spy is not installed (.venv/bin/pip install py-spy)")
            return 2
        Path(settings.py_spy).mkdir(parents=True, exist_ok=True)
    report = bench(settings)
    print_tables(report, file=sys.stderr if as_json else sys.stdout)
    if as_json:
        print(json.dumps(asdict(report), indent=1))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
