"""Two daemon processes on one fresh PostgreSQL database share the work and do none
of it twice.

1. The same alerts, and different alerts of one correlation group (label-grouped and
   CMDB-related), posted by many clients to both replicas at once, round after round
   (fire, repeat, new member, resolve, fire again inside and after the reopen window):
   one open incident per group at every moment (a monitor samples the database all
   along), one alert row per firing, repeat counts equal to the 2xx answers, every
   alert linked to the right incident.
2. The outbox: 200 incidents through both replicas to a slow webhook target, whose
   events fall due at one instant; the test holds both replicas' claims in flight at
   once (a table lock stops them after their `SELECT ... FOR UPDATE SKIP LOCKED`):
   every event delivered exactly once, both replicas delivered some.
3. Runbook runs: an automatic runbook calling a local agent on 30 incidents on 30
   CIs; every run executed exactly once, by one replica or the other, none stuck.
4. Escalation across leader handovers: kill -9 of the leader just before level 2
   falls due, SIGTERM of the next leader just before level 3; every level notified
   exactly once, none skipped, and leadership moves within the 15 s bound.
5. An acknowledgement at the follower while the leader's SLA sweep has breached the
   same clock but not committed: one breach, notified once.

Everything is checked in the database directly as well as through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import itertools
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from tests.conftest import reset

from .harness import (
    LOOPBACK,
    DaemonProcess,
    IncidentdClient,
    alertmanager_bytes,
    alertmanager_group,
    constant,
    example_config,
    local_server,
    metric_value,
    poll,
)

pytestmark = pytest.mark.e2e

OPEN = ("triggered", "acknowledged", "on_hold")
# Replicas sit behind one load balancer: one public address (event ids derive from it).
PUBLIC_URL = "http://incidentd.e2e.invalid"
LEADER_LINE = "leadership acquired"
# The bound on a leader handover.
TAKEOVER_BOUND_SECONDS = 15.0


# --------------------------------------------------------------------------
# shared helpers


def replica_config() -> dict[str, Any]:
    config = example_config()
    # Two replicas and the test's own connections share one server with other test runs.
    config["database"]["pool_size"] = 5
    config["notifications"]["public_url"] = PUBLIC_URL
    return config


async def start_replicas(
    url: str, daemon_factory: Callable[..., DaemonProcess], config: dict[str, Any]
) -> tuple[DaemonProcess, DaemonProcess]:
    """A fresh database, then two daemons starting on it at once (as a deployment rolls
    them out); returns (leader, follower)."""
    await reset(url)
    first = daemon_factory(config=config, database_url=url)
    second = daemon_factory(config=config, database_url=url)
    await asyncio.gather(first.start(), second.start())
    leaders = [d for d in (first, second) if log_count(d, LEADER_LINE)]
    assert len(leaders) == 1, f"{len(leaders)} leaders\n{both(first, second)()}"
    return (first, second) if leaders[0] is first else (second, first)


@pytest.fixture
async def db(pg_database: str) -> AsyncIterator[AsyncEngine]:
    """The test's own view of the shared database (no pool: nothing lingers)."""
    engine = create_async_engine(pg_database, poolclass=sa.pool.NullPool)
    try:
        yield engine
    finally:
        await engine.dispose()


async def query(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(sa.text(sql), params))


def log_count(daemon: DaemonProcess, text: str) -> int:
    """How often `text` is in the daemon's whole log (all its lives)."""
    try:
        return daemon.log_path.read_text(encoding="utf-8", errors="replace").count(text)
    except FileNotFoundError:
        return 0


def both(first: DaemonProcess, second: DaemonProcess) -> Callable[[], str]:
    return lambda: f"{first.describe(60)}\n{second.describe(60)}"


async def metric(client: IncidentdClient, name: str, **labels: str) -> float:
    return metric_value(await client.metrics_text(), name, **labels) or 0.0


# --------------------------------------------------------------------------
# 1. concurrent ingest of one group at both replicas


POSTS_PER_REPLICA = 5  # per group and round: 4 groups x 2 replicas x 5 = 40 at once
REOPEN_WINDOW_SECONDS = 8


@dataclass(frozen=True)
class Member:
    """One alert identity of a group, with the labels every post of it carries."""

    group: str
    fingerprint: str
    alertname: str
    labels: dict[str, str]


@dataclass
class Episode:
    """One firing of an identity: one alert row, counted once per acknowledged post."""

    era: int
    acked: int = 0


Pair = tuple[list[list[int]], list[list[int]]]  # member subsets at the first, second replica


@dataclass(frozen=True)
class Round:
    """One round: per kind of group, the member subsets each replica posts (one payload
    per subset, cycled over its posts)."""

    what: str
    status: str
    split: Pair  # label groups whose members are split between the replicas
    same: Pair  # label groups both replicas get the same alerts of
    topology: Pair  # the CMDB group, members split between the replicas
    era: int = 0  # 0: the groups' first incidents (reopened in place); 1: the next ones
    reopens: bool = False  # must come within the reopen window of the first firing


def _both(subsets: list[list[int]]) -> Pair:
    return subsets, subsets


ROUNDS = [
    # Disjoint members at each replica: only serialized correlation keeps one incident.
    Round("first firing: different members race at both replicas", "firing",
          split=([[0]], [[1]]), same=_both([[0, 1], [0], [1]]), topology=([[0]], [[1]])),
    Round("repeats and a new member", "firing",
          split=([[0], [2]], [[1], [1, 2]]), same=_both([[0, 1], [2], [1, 2], [0, 1, 2]]),
          topology=([[0], [2]], [[1], [2]])),
    Round("everything resolves", "resolved", split=_both([[0, 1, 2]]),
          same=_both([[0, 1, 2]]), topology=_both([[0], [1], [2]])),
    Round("firing again within the reopen window", "firing",
          split=([[0]], [[1]]), same=_both([[0], [1], [0, 1]]), topology=([[0]], [[1]]),
          reopens=True),
    Round("resolving again", "resolved", split=_both([[0, 1]]), same=_both([[0, 1]]),
          topology=_both([[0], [1]])),
    Round("firing again after the reopen window", "firing",
          split=([[0], [2]], [[1]]), same=_both([[0, 1, 2], [2], [0]]),
          topology=([[0], [2]], [[1]]), era=1),
]


def topology_cmdb(path: Path) -> Path:
    """svc ─▶ app ─▶ db ─▶ host: alerts on any of them belong together."""
    cis = [
        {"id": "rep-svc", "name": "Replica service", "type": "service", "criticality": 2,
         "depends_on": ["rep-app"]},
        {"id": "rep-app", "name": "Replica app", "type": "application", "service": "rep-svc",
         "depends_on": ["rep-db"]},
        {"id": "rep-db", "name": "Replica db", "type": "database", "service": "rep-svc",
         "depends_on": ["rep-host"]},
        {"id": "rep-host", "name": "Replica host", "type": "host"},
    ]
    path.write_text(yaml.safe_dump({"cis": cis}))
    return path


def make_groups(tag: str) -> dict[str, list[Member]]:
    """Label-grouped (unbound) groups, two split and one the same at both replicas, and
    one topology group; three members each."""
    groups: dict[str, list[Member]] = {}
    for name in (f"RepSplitAx{tag}", f"RepSplitBx{tag}", f"RepSamex{tag}"):
        groups[name] = [
            Member(name, f"{name}-f{k}", name,
                   {"alertname": name, "instance": f"{name.lower()}-{k}.invalid:9100",
                    "job": "e2e", "severity": "critical"})
            for k in range(3)]
    topo = f"RepTopo{tag}"
    groups[topo] = [
        Member(topo, f"{topo}-{ci}", f"RepTopo{ci.title()}x{tag}",
               {"alertname": f"RepTopo{ci.title()}x{tag}", "ci": f"rep-{ci}", "job": "e2e",
                "severity": "critical"})
        for ci in ("app", "db", "host")]
    return groups


def payload(members: Sequence[Member], status: str) -> bytes:
    """An Alertmanager notification of these members (one alert name: one group)."""
    body = alertmanager_group(group=members[0].alertname,
                              fingerprints=[m.fingerprint for m in members], status=status)
    for alert, member in zip(body["alerts"], members, strict=True):
        alert["labels"] = dict(member.labels)
    return alertmanager_bytes(body)


class Ledger:
    """What was sent and acknowledged: each identity's firing episodes, in order."""

    def __init__(self, groups: dict[str, list[Member]]) -> None:
        self.groups = groups
        self.member = {m.fingerprint: m for ms in groups.values() for m in ms}
        self.episodes: dict[str, list[Episode]] = defaultdict(list)
        self.firing: set[str] = set()

    def begin(self, fingerprints: set[str], status: str, era: int) -> None:
        """A round starts: identities that are not firing get a new episode."""
        for fp in sorted(fingerprints):
            if status == "firing" and fp not in self.firing:
                self.episodes[fp].append(Episode(era))
                self.firing.add(fp)
            elif status == "resolved":
                self.firing.discard(fp)

    def acknowledged(self, fingerprints: Sequence[str], status: str) -> None:
        if status == "firing":
            for fp in fingerprints:
                self.episodes[fp][-1].acked += 1

    def group_firing(self, group: str) -> bool:
        return any(m.fingerprint in self.firing for m in self.groups[group])


async def blast(posts: Sequence[tuple[IncidentdClient, bytes]]) -> list[int]:
    """Post everything at once (released together), answer statuses in order."""
    go = asyncio.Event()

    async def one(client: IncidentdClient, body: bytes) -> int:
        await go.wait()
        status, _ = await client.post_alertmanager(body)
        return status

    tasks = [asyncio.create_task(one(c, b)) for c, b in posts]
    await asyncio.sleep(0)  # every task waits at the barrier
    go.set()
    return list(await asyncio.gather(*tasks))


class OneOpenPerGroup:
    """Samples the database while the rounds run: never two open incidents for a group,
    never more open incidents than groups."""

    def __init__(self, engine: AsyncEngine, ledger: Ledger) -> None:
        self._engine = engine
        self._group_of = {fp: m.group for fp, m in ledger.member.items()}
        self._groups = len(ledger.groups)
        self.samples = 0
        self.violations: list[str] = []

    async def run(self) -> None:
        async with self._engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            while True:
                await self._sample(conn)
                await asyncio.sleep(0.02)

    async def _sample(self, conn: AsyncConnection) -> None:
        linked = await conn.execute(sa.text(
            "SELECT i.id, a.fingerprint FROM incidents i "
            "JOIN incident_alerts ia ON ia.incident_id = i.id "
            "JOIN alerts a ON a.id = ia.alert_id WHERE i.status IN :open"
        ).bindparams(sa.bindparam("open", expanding=True)), {"open": list(OPEN)})
        per_group: dict[str, set[int]] = defaultdict(set)
        for incident_id, fp in linked:
            per_group[self._group_of.get(fp, f"<unknown {fp}>")].add(incident_id)
        count = (await conn.execute(sa.text(
            "SELECT count(*) FROM incidents WHERE status IN :open"
        ).bindparams(sa.bindparam("open", expanding=True)), {"open": list(OPEN)})).scalar()
        self.samples += 1
        doubled = {g: sorted(ids) for g, ids in per_group.items() if len(ids) > 1}
        if doubled:
            self.violations.append(f"two open incidents for one group: {doubled}")
        if count is not None and count > self._groups:
            self.violations.append(f"{count} open incidents for {self._groups} groups")


class IngestCheck:
    """The rounds of test 1 and what must hold after each."""

    def __init__(self, engine: AsyncEngine, ledger: Ledger,
                 clients: tuple[IncidentdClient, IncidentdClient]) -> None:
        self.engine = engine
        self.ledger = ledger
        self.clients = clients
        self.incident_of: dict[tuple[str, int], int] = {}

    def posts(self, rnd: Round) -> tuple[list[tuple[IncidentdClient, bytes]], list[list[str]]]:
        """Every post of the round: per group and replica, POSTS_PER_REPLICA payloads cycling
        through the round's member subsets."""
        posts: list[tuple[IncidentdClient, bytes]] = []
        sent: list[list[str]] = []
        for group, members in self.ledger.groups.items():
            pair = (rnd.topology if group.startswith("RepTopo") else
                    rnd.split if group.startswith("RepSplit") else rnd.same)
            for client, subsets in zip(self.clients, pair, strict=True):
                for subset in itertools.islice(itertools.cycle(subsets), POSTS_PER_REPLICA):
                    chosen = [members[k] for k in subset]
                    posts.append((client, payload(chosen, rnd.status)))
                    sent.append([m.fingerprint for m in chosen])
        return posts, sent

    async def play(self, rnd: Round) -> None:
        posts, sent = self.posts(rnd)
        self.ledger.begin({fp for fps in sent for fp in fps}, rnd.status, rnd.era)
        statuses = await blast(posts)
        refused = Counter(s for s in statuses if s != 200)
        # Nothing here should be refused (the queue is far from full): a 5xx is a bug.
        assert not refused, f"{rnd.what}: answers other than 200: {dict(refused)}"
        for fps in sent:
            self.ledger.acknowledged(fps, rnd.status)

    async def check_store(self, rnd: Round) -> None:
        rows = await query(self.engine,
                           "SELECT a.id, a.fingerprint, a.status, a.occurrences, ia.incident_id "
                           "FROM alerts a LEFT JOIN incident_alerts ia ON ia.alert_id = a.id "
                           "ORDER BY a.id")
        links = Counter(r.id for r in rows)
        assert all(n == 1 for n in links.values()), (
            f"{rnd.what}: alerts linked to more than one incident: "
            f"{[r for r in rows if links[r.id] > 1]}")
        by_fp: dict[str, list[Any]] = defaultdict(list)
        for r in rows:
            by_fp[r.fingerprint].append(r)
        assert set(by_fp) == set(self.ledger.episodes), f"{rnd.what}: identities {set(by_fp)}"
        for fp, episodes in self.ledger.episodes.items():
            self._check_identity(rnd, fp, by_fp[fp], episodes)
        incidents = {r.id: r for r in await query(
            self.engine, "SELECT id, status, merged_into FROM incidents ORDER BY id")}
        assert set(incidents) == set(self.incident_of.values()), (
            f"{rnd.what}: incidents {sorted(incidents)}, expected "
            f"{sorted(self.incident_of.values())} (one per group and era)")
        for (group, era), incident_id in self.incident_of.items():
            row = incidents[incident_id]
            current = era == max(e for g, e in self.incident_of if g == group)
            want_open = current and self.ledger.group_firing(group)
            assert row.merged_into is None, f"{rnd.what}: {incident_id} was merged: {row}"
            assert (row.status in OPEN) == want_open, (
                f"{rnd.what}: incident {incident_id} of {group} (era {era}) is {row.status}")

    def _check_identity(self, rnd: Round, fp: str, rows: list[Any],
                        episodes: list[Episode]) -> None:
        group = self.ledger.member[fp].group
        assert len(rows) == len(episodes), (
            f"{rnd.what}: {fp} has {len(rows)} alert rows for {len(episodes)} firings: {rows}")
        for index, (row, episode) in enumerate(zip(rows, episodes, strict=True)):
            last = index == len(episodes) - 1
            want = "firing" if last and fp in self.ledger.firing else "resolved"
            assert row.status == want, f"{rnd.what}: {fp} row {row.id} is {row.status}"
            assert row.occurrences == episode.acked, (
                f"{rnd.what}: {fp} firing #{index + 1} counted {row.occurrences} "
                f"occurrences for {episode.acked} acknowledged posts")
            assert row.incident_id is not None, f"{rnd.what}: {fp} row {row.id} is unlinked"
            known = self.incident_of.setdefault((group, episode.era), row.incident_id)
            assert row.incident_id == known, (
                f"{rnd.what}: {fp} (group {group}, era {episode.era}) is on incident "
                f"{row.incident_id}, the rest of its group on {known}")
        others = {i for (g, _), i in self.incident_of.items() if g != group}
        mine = {i for (g, _), i in self.incident_of.items() if g == group}
        assert not others & mine, f"{rnd.what}: groups share incidents: {self.incident_of}"

    async def check_api(self, rnd: Round) -> None:
        """Both replicas answer the same: the open incidents, and each one's alerts."""
        expected = sorted(i for (g, era), i in self.incident_of.items()
                          if self.ledger.group_firing(g)
                          and era == max(e for gg, e in self.incident_of if gg == g))
        for client in self.clients:
            listed = sorted(i["id"] for i in await client.all_incidents(status="open"))
            assert listed == expected, f"{rnd.what}: {client.base} lists open {listed}"
        rows = await query(self.engine,
                           "SELECT a.id, a.occurrences, a.status, ia.incident_id FROM alerts a "
                           "JOIN incident_alerts ia ON ia.alert_id = a.id")
        for n, incident_id in enumerate(expected):
            detail = await self.clients[n % 2].incident(incident_id)
            shown = sorted((a["id"], a["occurrences"], a["status"]) for a in detail["alerts"])
            stored = sorted((r.id, r.occurrences, r.status) for r in rows
                            if r.incident_id == incident_id)
            assert shown == stored, f"{rnd.what}: incident {incident_id} alerts {shown}"

    async def wait_past_reopen_window(self) -> None:
        """Until every resolution is older than the reopen window (a computed instant)."""
        [row] = await query(self.engine, "SELECT max(resolved_at) AS at FROM incidents")
        assert row.at is not None
        remaining = row.at.timestamp() + REOPEN_WINDOW_SECONDS + 0.5 - time.time()
        await asyncio.sleep(max(0.0, remaining))


async def test_concurrent_ingest_of_one_group_at_both_replicas_opens_one_incident(
    tmp_path: Path, pg_database: str, db: AsyncEngine,
    daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
) -> None:
    config = replica_config()
    config["cmdb"]["files"] = [str(topology_cmdb(tmp_path / "cmdb.yaml"))]
    config["lifecycle"] = {"reopen_window_seconds": REOPEN_WINDOW_SECONDS}
    first, second = await start_replicas(pg_database, daemon_factory, config)
    ledger = Ledger(make_groups(uuid.uuid4().hex[:6]))
    check = IngestCheck(db, ledger, (make_client(first), make_client(second)))
    monitor = OneOpenPerGroup(db, ledger)
    watching = asyncio.create_task(monitor.run())
    started = time.time()
    try:
        for rnd in ROUNDS:
            if rnd.era == 1:
                await check.wait_past_reopen_window()
            # The window counts from the earlier firing's first sight (the first round).
            assert not rnd.reopens or time.time() - started < REOPEN_WINDOW_SECONDS - 1, (
                f"{rnd.what}: the box is too slow for the scenario "
                f"({time.time() - started:.1f} s since the first firing)")
            await check.play(rnd)
            await check.check_store(rnd)
            await check.check_api(rnd)
            assert not monitor.violations, f"{rnd.what}: {monitor.violations[:5]}"
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    assert monitor.samples > len(ROUNDS), "the monitor barely ran"
    assert not monitor.violations, monitor.violations[:5]

    # Each group: its first incident opened once, reopened once, resolved twice; its
    # second one opened once (after the window), still open.
    kinds = await query(db, "SELECT incident_id, kind, count(*) AS n FROM timeline "
                            "WHERE kind IN ('opened', 'reopened', 'resolved', 'merged') "
                            "GROUP BY incident_id, kind")
    seen = {(r.incident_id, r.kind): r.n for r in kinds}
    for (group, era), incident_id in check.incident_of.items():
        want = ({"opened": 1, "reopened": 1, "resolved": 2} if era == 0 else {"opened": 1})
        got = {k: seen.get((incident_id, k), 0)
               for k in ("opened", "reopened", "resolved", "merged")}
        assert got == {"merged": 0, "reopened": 0, "resolved": 0} | want, (
            f"{group} era {era} (incident {incident_id}) timeline: {got}")
    assert len(check.incident_of) == 2 * len(ledger.groups)


# --------------------------------------------------------------------------
# 2. the outbox is claimed once


HOOK = "replica-hook"
OUTBOX_INCIDENTS = 200  # two claims' worth (the sender claims at most 100 per pass)
# Time left before the parked events fall due when the test locks the outbox table.
PARK_MARGIN_SECONDS = 1.5


class SlowTarget:
    """A webhook target that takes its time and counts accepted deliveries by event id.

    Until `accepting`, it answers 429 with `Retry-After: <gate>` (an HTTP date): the
    daemon parks every event until that one instant. The gate stays a few seconds ahead
    until the test freezes it (events parked at a passed gate are refused again).
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.accepting = False
        self.frozen = False
        self.gate = 0.0
        self.refused: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.events: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def handle(self, request: web.Request) -> web.Response:
        event_id = request.headers["X-Incidentd-Event-Id"]
        body = await request.json()
        if not self.accepting:
            self.refused[event_id] += 1
            if not self.frozen and self.gate - time.time() < PARK_MARGIN_SECONDS:
                self.gate = float(int(time.time()) + 4)
            gate = datetime.fromtimestamp(self.gate, UTC)
            return web.Response(status=429, headers={
                "Retry-After": email.utils.format_datetime(gate, usegmt=True)})
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        self.accepted[event_id] += 1
        self.events.append(body["event"])
        return web.Response(status=204)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        return app


async def post_spread(clients: Sequence[IncidentdClient], bodies: Sequence[bytes], *,
                      concurrency: int) -> None:
    """Post each body to the replicas in turn, `concurrency` at a time; all must be 200."""
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int, body: bytes) -> None:
        async with gate:
            status, text = await clients[n % len(clients)].post_alertmanager(body)
        assert status == 200, f"post {n}: {status} {text[:300]}"

    await asyncio.gather(*(one(n, b) for n, b in enumerate(bodies)))


async def outbox_rows(db: AsyncEngine) -> list[Any]:
    return await query(db, "SELECT event_id, state, attempts, last_status, next_attempt_at "
                           "FROM notifications WHERE target = :t ORDER BY id", t=HOOK)


async def park_at_gate(db: AsyncEngine, target: SlowTarget,
                       diagnostics: Callable[[], str]) -> None:
    """Until every event was refused and waits for the target's gate, with time left;
    then the gate stays where it is."""
    while True:
        def parked(rows: list[Any]) -> bool:
            return len(rows) == OUTBOX_INCIDENTS and all(
                r.state == "pending" and r.last_status == 429
                and abs(r.next_attempt_at.timestamp() - target.gate) < 1.0 for r in rows)

        await poll("every event parked until the target's Retry-After", lambda: outbox_rows(db),
                   parked, within=60, diagnostics=diagnostics)
        # Nothing is in flight now, so nothing moves the gate under this check.
        if target.gate - time.time() >= PARK_MARGIN_SECONDS:
            target.frozen = True
            return
        # Too little time left (a slow box): at the gate they are refused again and
        # parked at a later one.
        await asyncio.sleep(max(0.0, target.gate - time.time()))


async def claims_waiting(conn: AsyncConnection) -> int:
    """Sessions blocked by the test's lock on the outbox table: sender claims (nothing else
    writes it now) that hold their rows and wait to write the lease."""
    return int((await conn.execute(sa.text(
        "SELECT count(DISTINCT pid) FROM pg_locks WHERE relation = 'notifications'::regclass "
        "AND NOT granted AND pid <> pg_backend_pid()"))).scalar() or 0)


async def test_outbox_events_are_delivered_exactly_once_by_either_replica(
    pg_database: str, db: AsyncEngine,
    daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
) -> None:
    target = SlowTarget(delay=0.05)
    async with local_server(target.app()) as port:
        config = replica_config()
        config["notifications"].update(
            poll_interval_seconds=0.1,
            retry={"timeout_seconds": 10, "initial_seconds": 0.2, "max_seconds": 0.5,
                   "max_attempts": 100},
            targets=[{"name": HOOK, "type": "webhook", "url": f"http://{LOOPBACK}:{port}/hook",
                      "rate_limit_per_minute": 100_000,
                      "routes": [{"events": ["incident.triggered"]}]}])
        first, second = await start_replicas(pg_database, daemon_factory, config)
        diagnostics = both(first, second)
        clients = [make_client(first), make_client(second)]
        tag = uuid.uuid4().hex[:6]
        bodies = [payload([Member(f"Out{n}x{tag}", f"out-{tag}-{n}", f"Out{n}x{tag}",
                                  {"alertname": f"Out{n}x{tag}", "job": "e2e",
                                   "severity": "warning"})], "firing")
                  for n in range(OUTBOX_INCIDENTS)]
        await post_spread(clients, bodies, concurrency=20)
        await park_at_gate(db, target, diagnostics)

        # Both replicas' senders claim at the gate. A SHARE lock on the outbox lets their
        # `SELECT ... FOR UPDATE SKIP LOCKED` run but holds the lease they write next: the
        # two claims are in flight at once, and SKIP LOCKED must give them disjoint rows.
        async with db.connect() as conn, conn.begin():
            await conn.execute(sa.text("LOCK TABLE notifications IN SHARE MODE"))
            assert time.time() < target.gate, "the events fell due before the lock"
            target.accepting = True
            waiting = await poll("a claim of each replica at once", lambda: claims_waiting(conn),
                                 lambda n: n if n >= 2 else None, within=20, interval=0.05,
                                 diagnostics=diagnostics)
        assert waiting == 2, f"{waiting} claims blocked at once"

        await poll("every event delivered", lambda: outbox_rows(db),
                   lambda rows: all(r.state == "delivered" for r in rows),
                   within=60, diagnostics=diagnostics)

        async def delivered() -> list[float]:
            return [await metric(c, "incidentd_notifications_total", target=HOOK,
                                 outcome="delivered") for c in clients]

        # Counted after the outcome commits: wait for both counts to catch up.
        per_replica = await poll("the delivery counts", delivered,
                                 lambda counts: counts if sum(counts) >= OUTBOX_INCIDENTS
                                 else None, within=20, diagnostics=diagnostics)
        rows = await outbox_rows(db)

    doubled = sorted(e for e, n in target.accepted.items() if n > 1)
    assert not doubled, f"{len(doubled)} events delivered more than once: {doubled[:5]} ..."
    assert set(target.accepted) == {r.event_id for r in rows}, "missing or unknown events"
    assert set(target.refused) == set(target.accepted), "an event was never refused first"
    assert all(r.last_status == 204 for r in rows), rows
    incidents = Counter(e["incident"]["id"] for e in target.events)
    assert len(incidents) == OUTBOX_INCIDENTS and set(incidents.values()) == {1}
    assert {e["event_type"] for e in target.events} == {"incident.triggered"}
    assert sum(per_replica) == OUTBOX_INCIDENTS, f"deliveries per replica {per_replica}"
    assert all(n > 0 for n in per_replica), f"deliveries per replica {per_replica}"
    print(f"outbox: deliveries per replica {per_replica}, "
          f"at most {target.max_in_flight} requests in flight at the target")


# --------------------------------------------------------------------------
# 3. runbook runs are claimed once


RUNBOOK = "replica-fix"
RUNBOOK_CIS = 30


class FixAgent:
    """The host agent the runbook calls: it takes a while and counts each run."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.runs: Counter[int] = Counter()
        self.cis: Counter[str] = Counter()

    async def fix(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.delay)
        self.runs[int(request.headers["X-Incidentd-Run"])] += 1
        self.cis[request.match_info["ci"]] += 1
        return web.json_response({"fixed": True})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/fix/{ci}", self.fix)
        return app


def runbook_files(tmp_path: Path, port: int) -> tuple[Path, Path]:
    cmdb = tmp_path / "hosts.yaml"
    cmdb.write_text(yaml.safe_dump({"cis": [
        {"id": f"rb-host-{n:02d}", "name": f"Host {n}", "type": "host"}
        for n in range(RUNBOOK_CIS)]}))
    catalog = tmp_path / "runbooks.yaml"
    catalog.write_text(yaml.safe_dump({"runbooks": [{
        "name": RUNBOOK,
        "match": {"alerts": ['alertname="ReplicaFix"'], "ci_types": ["host"]},
        "rate_limit": None,
        "steps": [{"name": "call-agent", "type": "http", "method": "POST",
                   "url": f"http://{LOOPBACK}:{port}/fix/{{{{ ci.id }}}}",
                   "headers": {"X-Incidentd-Run": "{{ run.id }}"},
                   "body": {"incident": "{{ incident.key }}"},
                   "expect_status": [200], "timeout_seconds": 20}],
    }]}))
    return cmdb, catalog


async def test_runbook_runs_are_executed_exactly_once_by_either_replica(
    tmp_path: Path, pg_database: str, db: AsyncEngine,
    daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
) -> None:
    agent = FixAgent(delay=0.3)
    async with local_server(agent.app()) as port:
        cmdb, catalog = runbook_files(tmp_path, port)
        config = replica_config()
        config["cmdb"]["files"] = [str(cmdb)]
        config["runbooks"] = {"files": [str(catalog)], "poll_interval_seconds": 0.1,
                              "max_concurrent_runs": 4}
        first, second = await start_replicas(pg_database, daemon_factory, config)
        clients = [make_client(first), make_client(second)]
        bodies = [payload([Member("ReplicaFix", f"fix-{uuid.uuid4().hex[:10]}", "ReplicaFix",
                                  {"alertname": "ReplicaFix", "ci": f"rb-host-{n:02d}",
                                   "severity": "critical"})], "firing")
                  for n in range(RUNBOOK_CIS)]
        await post_spread(clients, bodies, concurrency=10)

        async def runs() -> list[Any]:
            return await query(db, "SELECT id, status, owner, ci_id, incident_id, steps, error "
                                   "FROM runbook_runs ORDER BY id")

        rows = await poll("every run finished", runs,
                          lambda rs: rs if len(rs) == RUNBOOK_CIS and all(
                              r.status not in ("queued", "running") for r in rs) else None,
                          within=60, diagnostics=both(first, second))

        async def finished() -> list[float]:
            return [await metric(c, "incidentd_runbook_runs_total", runbook=RUNBOOK,
                                 outcome="succeeded") for c in clients]

        per_replica = await poll("the run counts", finished,
                                 lambda counts: counts if sum(counts) >= RUNBOOK_CIS else None,
                                 within=20, diagnostics=both(first, second))

    assert [r.status for r in rows] == ["succeeded"] * RUNBOOK_CIS, [
        (r.id, r.status, r.error) for r in rows if r.status != "succeeded"]
    doubled = {run: n for run, n in agent.runs.items() if n > 1}
    assert not doubled, f"runs executed more than once: {doubled}"
    assert set(agent.runs) == {r.id for r in rows}, "a run never reached the agent"
    assert sorted(agent.cis) == sorted(r.ci_id for r in rows)
    assert len({r.ci_id for r in rows}) == RUNBOOK_CIS
    assert len({r.incident_id for r in rows}) == RUNBOOK_CIS
    for r in rows:
        [step] = r.steps
        assert (step["status"], step["attempts"]) == ("succeeded", 1), (r.id, step)
    owners = Counter(r.owner for r in rows)
    assert len(owners) == 2, f"runs per executor: {dict(owners)} (both replicas should run some)"
    assert sum(per_replica) == RUNBOOK_CIS and all(n > 0 for n in per_replica), per_replica
    entries = await query(db, "SELECT incident_id, kind, count(*) AS n FROM timeline "
                              "WHERE kind IN ('runbook_started', 'runbook_succeeded', "
                              "'runbook_failed') GROUP BY incident_id, kind")
    per_incident = Counter((e.incident_id, e.kind) for e in entries for _ in range(e.n))
    assert all(per_incident[(r.incident_id, "runbook_started")] == 1
               and per_incident[(r.incident_id, "runbook_succeeded")] == 1
               and per_incident[(r.incident_id, "runbook_failed")] == 0 for r in rows), entries
    print(f"runbooks: runs per replica {per_replica}")


# --------------------------------------------------------------------------
# 4. escalation across leader handovers


PAGER = "pager"
LEVEL1_SECONDS = 7  # time to kill the leader before level 2 is due
LEVEL2_SECONDS = 11  # time to restart it and SIGTERM the next leader before level 3
KILL_BEFORE_DUE_SECONDS = 2.5


class Pager:
    """The webhook the escalation levels page: (incident, level) per event."""

    def __init__(self) -> None:
        self.by_event: Counter[str] = Counter()
        self.levels: list[tuple[int, int]] = []

    async def handle(self, request: web.Request) -> web.Response:
        event = (await request.json())["event"]
        self.by_event[event["id"]] += 1
        if event["event_type"] == "incident.escalated":
            self.levels.append((event["incident"]["id"], event["detail"]["level"]))
        return web.Response(status=204)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/page", self.handle)
        return app


def escalation_config(port: int) -> dict[str, Any]:
    config = replica_config()
    page = ["webhook:" + PAGER]
    config["escalation"] = {
        "check_interval_seconds": 0.2, "default_policy": "handover", "rules": [],
        "policies": [{"name": "handover", "levels": [
            {"targets": page, "timeout_seconds": LEVEL1_SECONDS},
            {"targets": page, "timeout_seconds": LEVEL2_SECONDS},
            {"targets": page, "timeout_seconds": 3600}]}]}
    config["notifications"].update(
        poll_interval_seconds=0.1,
        targets=[{"name": PAGER, "type": "webhook", "url": f"http://{LOOPBACK}:{port}/page",
                  "routes": [{"events": ["incident.escalated"]}]}])
    return config


def escalated(incident: dict[str, Any]) -> list[tuple[int, str]]:
    return [(e["detail"]["level"], e["detail"]["reason"])
            for e in incident["timeline"] if e["kind"] == "escalated"]


def instant(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).timestamp()


async def sleep_until(moment: float, *, what: str) -> None:
    """Wait for a computed instant; fail if it has already passed (the box was too slow
    for the scenario to mean anything)."""
    remaining = moment - time.time()
    assert remaining > 0, f"too late to {what}: {-remaining:.1f} s past the moment"
    await asyncio.sleep(remaining)


async def takeover(new_leader: DaemonProcess, before: int, since: float,
                   diagnostics: Callable[[], str]) -> float:
    """Seconds until `new_leader` logs leadership (once more than `before` times)."""
    await poll("the other replica to take leadership over",
               lambda: constant(log_count(new_leader, LEADER_LINE)),
               lambda n: n > before, within=TAKEOVER_BOUND_SECONDS, interval=0.05,
               diagnostics=diagnostics)
    return time.monotonic() - since


async def test_escalation_levels_are_notified_once_across_leader_handovers(
    pg_database: str, db: AsyncEngine,
    daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
) -> None:
    pager = Pager()
    async with local_server(pager.app()) as port:
        first, second = await start_replicas(pg_database, daemon_factory,
                                             escalation_config(port))
        diagnostics = both(first, second)
        one, two = make_client(first), make_client(second)

        # The incident comes in at the follower; level 1 is notified with the opening.
        group = f"Handover{uuid.uuid4().hex[:8]}"
        status, text = await two.post_alertmanager(alertmanager_group(
            group=group, fingerprints=[uuid.uuid4().hex[:16]]))
        assert status == 200, text
        [incident] = await two.all_incidents()
        number = int(incident["id"])
        incident = await two.incident(number)
        assert escalated(incident) == [(1, "opened")], incident["timeline"]
        level2_due = instant(incident["escalation"]["next_at"])

        # kill -9 of the leader shortly before level 2 falls due.
        await sleep_until(level2_due - KILL_BEFORE_DUE_SECONDS, what="kill the leader")
        killed_at = time.monotonic()
        await first.kill9()
        [ladder] = await query(db, "SELECT level FROM escalations WHERE incident_id = :i",
                               i=number)
        assert ladder.level == 0, "level 2 was notified before the leader was killed"
        after_kill = await takeover(second, 0, killed_at, diagnostics)

        incident = await poll("level 2 by the new leader", lambda: two.incident(number),
                              lambda i: i if len(escalated(i)) >= 2 else None,
                              within=TAKEOVER_BOUND_SECONDS, diagnostics=diagnostics)
        assert escalated(incident) == [(1, "opened"), (2, "timeout")], incident["timeline"]
        level3_due = instant(incident["escalation"]["next_at"])

        # The killed replica comes back as a follower; then SIGTERM of the leader.
        await first.restart()
        assert log_count(first, LEADER_LINE) == 1, "a second leader while one holds the lock"
        await sleep_until(level3_due - KILL_BEFORE_DUE_SECONDS, what="stop the leader")
        stopped_at = time.monotonic()
        second.send_signal(signal.SIGTERM)
        after_term = await takeover(first, 1, stopped_at, diagnostics)
        assert await second.wait_exit(30) == 0, second.describe(60)

        incident = await poll("level 3 by the replica that came back",
                              lambda: one.incident(number),
                              lambda i: i if len(escalated(i)) >= 3 else None,
                              within=TAKEOVER_BOUND_SECONDS, diagnostics=diagnostics)
        await poll("level 3 at the pager", lambda: constant(list(pager.levels)),
                   lambda levels: len(levels) >= 3, within=20, diagnostics=diagnostics)
        outbox = await poll(
            "the pager's outbox rows delivered",
            lambda: query(db, "SELECT state FROM notifications WHERE target = :t", t=PAGER),
            lambda rows: rows if rows and all(r.state == "delivered" for r in rows) else None,
            within=20, diagnostics=diagnostics)

    assert escalated(incident) == [(1, "opened"), (2, "timeout"), (3, "timeout")], (
        incident["timeline"])
    assert sorted(pager.levels) == [(number, 1), (number, 2), (number, 3)], pager.levels
    assert set(pager.by_event.values()) == {1}, pager.by_event
    assert len(outbox) == 3
    print(f"escalation: takeover {after_kill:.1f} s after kill -9, "
          f"{after_term:.1f} s after SIGTERM")


# --------------------------------------------------------------------------
# 5. an acknowledgement at one replica while the leader breaches the same clock


SLA_HOOK = "sla-hook"
RESPONSE_SECONDS = 4


def breach_config(port: int) -> dict[str, Any]:
    config = replica_config()
    config["sla"] = {"check_interval_seconds": 0.2, "policies": [
        {"name": "fast", "priorities": ["P1", "P2", "P3", "P4", "P5"],
         "response_seconds": RESPONSE_SECONDS, "resolution_seconds": 3600}]}
    config["escalation"] = {"policies": [], "rules": [], "default_policy": None}
    config["notifications"].update(
        poll_interval_seconds=0.1,
        targets=[{"name": SLA_HOOK, "type": "webhook", "url": f"http://{LOOPBACK}:{port}/sla",
                  "routes": [{"events": ["incident.sla_breached"]}]}])
    return config


async def lock_waiters(conn: AsyncConnection, *, on_outbox: bool) -> int:
    """Sessions waiting for the test's outbox table lock (`on_outbox`), or for another
    transaction's row locks."""
    where = ("relation = 'notifications'::regclass" if on_outbox
             else "locktype = 'transactionid'")
    return int((await conn.execute(sa.text(
        f"SELECT count(DISTINCT pid) FROM pg_locks WHERE {where} AND NOT granted "
        "AND pid <> pg_backend_pid()"))).scalar() or 0)


async def test_an_acknowledgement_racing_the_leaders_breach_does_not_double_it(
    pg_database: str, db: AsyncEngine,
    daemon_factory: Callable[..., DaemonProcess],
    make_client: Callable[[DaemonProcess], IncidentdClient],
) -> None:
    """The leader's SLA sweep has breached the response clock but not committed yet when
    an acknowledgement at the other replica reconciles the same clock: the breach is
    recorded and notified once, and the clock stays breached."""
    hook: Counter[str] = Counter()

    async def receive(request: web.Request) -> web.Response:
        event = (await request.json())["event"]
        hook[f"{event['event_type']}:{event['detail'].get('clock')}"] += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/sla", receive)
    async with local_server(app) as port:
        first, second = await start_replicas(pg_database, daemon_factory, breach_config(port))
        diagnostics = both(first, second)
        one, two = make_client(first), make_client(second)
        status, text = await two.post_alertmanager(alertmanager_group(
            group=f"Race{uuid.uuid4().hex[:8]}", fingerprints=[uuid.uuid4().hex[:16]]))
        assert status == 200, text
        [incident] = await two.all_incidents()
        number = int(incident["id"])
        due = next(instant(c["due_at"]) for c in incident["sla"] if c["clock"] == "response")

        # Hold the leader's sweep inside its transaction: it breaches the clock, then
        # waits to write the outbox row, still holding the clock's row lock.
        await sleep_until(due - 1.0, what="lock the outbox before the breach")
        async with db.connect() as conn, conn.begin():
            await conn.execute(sa.text("LOCK TABLE notifications IN SHARE MODE"))
            await poll("the leader's sweep to reach the outbox", lambda: lock_waiters(
                conn, on_outbox=True), lambda n: n >= 1, within=20, interval=0.05,
                diagnostics=diagnostics)
            acknowledging = asyncio.create_task(two.action(number, "acknowledge", "alice"))
            await poll("the acknowledgement to meet the sweep's lock",
                       lambda: lock_waiters(conn, on_outbox=False),
                       lambda n: n >= 1 or acknowledging.done(), within=20, interval=0.05,
                       diagnostics=diagnostics)
        acknowledged = await acknowledging
        assert acknowledged["status"] == "acknowledged", acknowledged

        await poll("the breach notification", lambda: constant(dict(hook)),
                   lambda seen: seen, within=20, diagnostics=diagnostics)
        incident = await one.incident(number)
        rows = await query(db, "SELECT state FROM notifications WHERE target = :t", t=SLA_HOOK)
        await poll("the outbox settled", lambda: query(
            db, "SELECT state FROM notifications WHERE target = :t", t=SLA_HOOK),
            lambda rs: all(r.state == "delivered" for r in rs), within=20,
            diagnostics=diagnostics)
        breaches = [await metric(c, "incidentd_sla_breaches_total", clock="response")
                    for c in (one, two)]

    entries = [e["detail"]["clock"] for e in incident["timeline"] if e["kind"] == "sla_breached"]
    assert entries == ["response"], f"breach entries {entries}: {incident['timeline']}"
    response = next(c for c in incident["sla"] if c["clock"] == "response")
    assert response["state"] == "breached", response
    assert instant(response["breached_at"]) == due, response
    assert dict(hook) == {"incident.sla_breached:response": 1}, dict(hook)
    assert len(rows) == 1, rows
    assert sum(breaches) == 1, f"breaches counted per replica: {breaches}"
