"""Work per ingest batch that does not depend on how loaded the machine is.

    .venv/bin/python bench/statements.py [--database sqlite|postgresql] [--warmup 5000]
                                         [--batches 40] [--size 50] [--profile N] [--json]

The daemon runs in this process (`daemon.app.start`, the bench's config and
10,000-CI CMDB, timer jobs stopped), behind aiohttp's test server. After a
warm-up of open alerts it sends Alertmanager webhooks of `--size` alerts
from the bench's mix (70 % repeats, 25 % new, 5 % resolves), one at a time so
that each request is one ingest batch, and counts:

- the SQL statements the ingest writer sent per batch (a SQLAlchemy
  `before_cursor_execute` listener; an executemany counts once), by kind;
- with `--profile N`, Python function calls per alert over N requests
  (cProfile, the whole process: HTTP, parsing, the pipeline, the driver).

Both are counts, not timings: two trees can be compared on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import servers
import sqlalchemy as sa
import workload
import yaml
from aiohttp.test_utils import TestClient, TestServer

CMDB_CIS = 10_000
_WRITER_TASK = "ingest-writer"


def statement_kind(sql: str) -> str:
    """`INSERT alerts`, `UPDATE incident_alerts`, `SELECT incidents` ...: the verb and the
    first table named."""
    text = " ".join(sql.split())
    verb = text.split(" ", 1)[0].upper()
    found = re.search(r"\b(?:INTO|UPDATE|FROM)\s+\"?(\w+)", text, re.IGNORECASE)
    if verb in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"):
        return verb
    return f"{verb} {found.group(1) if found else '?'}"


class StatementCounter:
    """Counts the statements the ingest writer's task sends on an engine."""

    def __init__(self, engine: sa.engine.Engine, *, where: bool = False) -> None:
        self.kinds: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()  # wall time by kind: only with --where
        self.where = where
        self._started: tuple[str, float] | None = None
        sa.event.listen(engine, "before_cursor_execute", self._seen)
        sa.event.listen(engine, "after_cursor_execute", self._done)

    def _seen(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
              executemany: bool) -> None:
        try:
            task = asyncio.current_task()
        except RuntimeError:
            return
        if task is not None and task.get_name() == _WRITER_TASK:
            kind = statement_kind(statement)
            if self.where:
                kind += f"  ({_caller()})"
                self._started = (kind, time.perf_counter())
            self.kinds[kind] += 1

    def _done(self, *args: Any) -> None:
        if self._started is not None:
            kind, started = self._started
            self.seconds[kind] += time.perf_counter() - started
            self._started = None

    def take(self) -> Counter[str]:
        taken, self.kinds = self.kinds, Counter()
        return taken


def _caller() -> str:
    """The innermost daemon function outside the store's engine: who sent the statement."""
    import greenlet

    # SQLAlchemy runs the driver in a child greenlet; the daemon's frames are on the
    # suspended parent's stack.
    parent = greenlet.getcurrent().parent
    frame = parent.gr_frame if parent is not None else sys._getframe(2)
    while frame is not None:
        file = frame.f_code.co_filename
        if "/daemon/" in file and not file.endswith("store/engine.py"):
            module = file.rsplit("/daemon/", 1)[1].removesuffix(".py").replace("/", ".")
            return f"{module}.{frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return "?"


def config_for(workdir: Path, database: str, source: Path | None) -> Path:
    cmdb_path = workdir / "cmdb.json"
    cmdb_path.write_bytes(workload.cmdb_document(CMDB_CIS))
    if database == "sqlite":
        url = servers.sqlite_url(workdir / "incidentd.db")
    else:
        url = servers.create_pg_database(workdir.name)
    example = (source or servers.REPO_ROOT) / "config" / "incidentd.example.yaml"
    config = servers.daemon_config(port=8999, database_url=url, cmdb_path=cmdb_path,
                                   example=example)
    path = workdir / "incidentd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def measure(args: argparse.Namespace, config_path: Path) -> dict[str, Any]:
    from daemon import app as daemon_app
    from daemon import logging as daemon_logging
    from daemon.config import load_config

    config = load_config(config_path, environ={})
    # Log as the daemon does (its cost is part of the count), into a file.
    log_file = (config_path.parent / "daemon.log").open("w")
    sys.stderr, stderr = log_file, sys.stderr
    try:
        daemon_logging.configure(level=config.logging.level, fmt=config.logging.format)
    finally:
        sys.stderr = stderr
    components = await daemon_app.start(config)
    components.scheduler.pause()  # only ingest work is counted
    counter = StatementCounter(components.store.writer_engine.sync_engine, where=args.where)
    client = TestClient(TestServer(components.app))
    await client.start_server()
    headers = {"Authorization": f"Bearer {servers.AM_TOKEN}",
               "Content-Type": "application/json", "User-Agent": "Alertmanager/0.25.0"}
    doc = orjson.loads(workload.cmdb_document(CMDB_CIS))
    mix = workload.Mix(targets=workload.alertable(doc["cis"]), namespace="s", seed=1)

    async def send(body: bytes) -> None:
        async with client.post("/api/v1/alerts/alertmanager", data=body,
                               headers=headers) as resp:
            if resp.status // 100 != 2:
                raise SystemExit(f"HTTP {resp.status}: {await resp.text()}")

    try:
        for n in workload.chunks(args.warmup, 50):
            group, made = mix.fresh(n)
            await send(workload.alertmanager_body(group, [(i, True) for i in made]))
        if args.database == "postgresql":
            # What autovacuum gathers within a minute of a running daemon's tables growing.
            async with components.store.write() as conn:
                await conn.exec_driver_sql("ANALYZE")
        counter.take()
        per_batch: list[int] = []
        kinds: Counter[str] = Counter()
        for _ in range(args.batches):
            group, alerts = mix.next_request(args.size)
            await send(workload.alertmanager_body(group, alerts))
            taken = counter.take()
            per_batch.append(sum(taken.values()))
            kinds.update(taken)
        seconds = counter.seconds
        calls = 0
        if args.profile:
            profiler = cProfile.Profile()
            for _ in range(args.profile):
                group, alerts = mix.next_request(args.size)
                body = workload.alertmanager_body(group, alerts)
                profiler.enable()
                await send(body)
                profiler.disable()
            stats = pstats.Stats(profiler)
            calls = sum(row[1] for row in stats.stats.values())  # type: ignore[attr-defined]
            if args.profile_out:
                stats.dump_stats(args.profile_out)
    finally:
        await client.close()
        await daemon_app.stop(components)
    return {
        "daemon": str(args.daemon_src or "work tree"), "database": args.database,
        "warmup": args.warmup, "size": args.size,
        "batches": len(per_batch),
        "statements_per_batch": {"mean": sum(per_batch) / len(per_batch),
                                 "min": min(per_batch), "max": max(per_batch)},
        "by_kind_per_batch": {k: v / len(per_batch) for k, v in kinds.most_common()},
        "ms_by_kind_per_batch": {k: 1000 * v / len(per_batch) for k, v in seconds.items()},
        "calls_per_alert": calls / (args.profile * args.size) if args.profile else None,
    }


def show(out: dict[str, Any]) -> None:
    s = out["statements_per_batch"]
    print(f"{out['daemon']} on {out['database']}: {out['batches']} batches of "
          f"{out['size']} alerts after {out['warmup']} open: statements per batch mean "
          f"{s['mean']:.1f}, "
          f"min {s['min']}, max {s['max']}", file=sys.stderr)
    ms = out["ms_by_kind_per_batch"]
    for kind, n in out["by_kind_per_batch"].items():
        took = f"{ms[kind]:7.2f} ms" if kind in ms else ""
        print(f"  {n:6.2f} {took}  {kind}", file=sys.stderr)
    if out["calls_per_alert"] is not None:
        print(f"Python function calls per alert: {out['calls_per_alert']:.0f}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--warmup", type=int, default=5000)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    parser.add_argument("--profile-out", default=None, help="write the cProfile stats here")
    parser.add_argument("--where", action="store_true",
                        help="count statements by the daemon function that sent them")
    parser.add_argument("--daemon-src", type=Path, default=None, metavar="DIR",
                        help="count the daemon of another source tree (a git archive)")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep the database to study plans: SQLite copied into DIR, "
                        "PostgreSQL not dropped")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_stmts_") as tmp:
        workdir = Path(tmp)
        if args.daemon_src:
            sys.path.insert(0, str(args.daemon_src))  # ahead of the editable install
        config_path = config_for(workdir, args.database, args.daemon_src)
        try:
            out = asyncio.run(measure(args, config_path))
            if args.keep and args.database == "sqlite":
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(workdir / "incidentd.db", args.keep / "incidentd.db")
        finally:
            if args.database == "postgresql" and args.keep is None:
                servers.drop_pg_database(workdir.name)
            elif args.database == "postgresql":
                print(f"kept PostgreSQL database {workdir.name}", file=sys.stderr)
    show(out)
    if args.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
