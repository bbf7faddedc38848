"""The ingest flow: queued alerts → dedup → correlation → incidents, one commit per batch.

Request handlers hand their parsed alerts to one `IngestWriter` and await a
future. The writer drains whatever is queued (up to a batch limit), runs the
whole pipeline for the batch in one transaction, commits once, and only then
resolves every waiting future: many concurrent requests share one fsync, and
a request is never answered before its alerts are committed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon import metrics
from daemon.clock import Clock
from daemon.correlation import dedup
from daemon.correlation.binding import Binder
from daemon.correlation.engine import CorrelationPlan, Correlator, Placed
from daemon.correlation.flapping import FlapDetector
from daemon.correlation.topology import TopologyHolder
from daemon.errors import Overloaded
from daemon.itsm import impact, incidents
from daemon.itsm.followup import Effects, FollowUp, Policies
from daemon.itsm.impact import SeverityRaised
from daemon.itsm.incidents import Transition
from daemon.itsm.maintenance import Maintenance, Suppressed
from daemon.itsm.priority import PriorityMatrix
from daemon.itsm.root_cause import RootCauses
from daemon.models import Alert, AlertEvent, incident_key
from daemon.store import Store, StoreUnavailable
from daemon.store import alerts as alert_store
from daemon.store import incidents as incident_store
from daemon.store.incidents import IncidentState
from daemon.store.link_memory import LinkMemory

log = structlog.get_logger("incidentd.ingest")


class Outcome(enum.StrEnum):
    """What became of a firing alert (the `outcome` of `incidentd_alerts_processed_total`)."""

    NEW = "new"  # it opened an incident
    CORRELATED = "correlated"  # it joined an open incident, reopened one, or came back flapping
    DUPLICATE = "duplicate"  # it repeated an alert already firing
    SUPPRESSED = "suppressed"  # a maintenance window held it back


@dataclass(slots=True)
class BatchResult:
    transitions: list[Transition] = field(default_factory=list)
    received: Counter[tuple[str, str]] = field(default_factory=Counter)
    processed: Counter[tuple[str, Outcome]] = field(default_factory=Counter)
    raised: list[SeverityRaised] = field(default_factory=list)
    suppressed: int = 0  # new alerts a maintenance window kept from paging
    touched: set[int] = field(default_factory=set)
    effects: Effects = field(default_factory=Effects)
    # Every incident the batch changed, as it stands at the end of the batch (after
    # impact and priority were worked out again).
    final: dict[int, IncidentState] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Stages:
    """The configured stages of the pipeline; a configuration reload replaces them whole."""

    binder: Binder
    correlator: Correlator
    flapping: FlapDetector
    maintenance: Maintenance
    priorities: PriorityMatrix
    reopen_window_seconds: int


@dataclass(slots=True)
class Kept:
    """What the pipeline keeps from one batch to the next instead of reading it again:
    what open incidents' links add up to, and the counts behind their root causes."""

    links: LinkMemory = field(default_factory=LinkMemory)
    roots: RootCauses = field(default_factory=RootCauses)


class Pipeline:
    """bind → dedup → flapping → maintenance → correlation → incidents → impact →
    follow-up (problems, suspected changes, SLA clocks, escalation), in the caller's
    transaction."""

    def __init__(self, *, stages: Stages, topology: TopologyHolder, followup: FollowUp,
                 clock: Clock) -> None:
        self._stages = stages
        self._followup = followup
        self._topology = topology
        self._clock = clock
        self._kept = Kept()

    @property
    def stages(self) -> Stages:
        return self._stages

    def reconfigure(self, stages: Stages) -> None:
        """A configuration reload. A batch reads the stages (and the follow-up's
        policies) once, at its start: it runs wholly under the old or the new ones."""
        self._stages = stages

    async def process(self, conn: AsyncConnection, batch: Sequence[AlertEvent]) -> BatchResult:
        """Run the batch in the caller's transaction. A caller that commits it says so
        with `committed`; until then the next batch trusts nothing kept from this one."""
        stages, policies, links = self._stages, self._followup.policies, self._kept.links
        await serialize_correlation(conn)
        await links.begin(conn)
        now = self._clock.now()
        result = BatchResult()
        result.received.update(
            (e.source, e.status.value if isinstance(e, Alert) else "acknowledge") for e in batch
        )
        for group in dedup.rounds(stages.binder.bind(batch)):
            outcome = await dedup.apply(conn, group, now)
            links.resolved((r.ci_id, r.incident_ids) for r in outcome.resolved)
            await incident_store.alerts_seen(
                conn, outcome.repeated_bound + [r.id for r in outcome.resolved if r.ci_id], now)
            result.processed.update((a.source, Outcome.DUPLICATE) for a in outcome.repeated)
            await self._place(conn, stages, self._kept, outcome.new, now, result)
            result.transitions += await incidents.resolve_cleared(conn, outcome.resolved, now)
            result.transitions += await incidents.acknowledge_from_sources(
                conn, outcome.acknowledged, now
            )
        await self._follow_up(conn, policies, result, now)
        await links.end(conn)
        self._kept.roots.keep_only(links.kept)
        return result

    @property
    def links(self) -> LinkMemory:
        return self._kept.links

    def committed(self) -> None:
        """The last `process` committed: what it kept of the links is the database's."""
        self._kept.links.committed()

    async def release_maintenance(self, conn: AsyncConnection) -> BatchResult:
        """Alerts still firing when their maintenance window ended get incidents now.

        They were counted (as suppressed) when they arrived: not again here. Rare (a
        timer), so it keeps nothing between runs: its changes count as another writer's,
        and the next ingest batch reads the incidents' links afresh."""
        stages, policies = self._stages, self._followup.policies
        await serialize_correlation(conn)
        now = self._clock.now()
        result = BatchResult()
        released = await stages.maintenance.release(conn, now)
        await self._place(conn, stages, Kept(), released, now, result)
        result.processed.clear()
        await self._follow_up(conn, policies, result, now)
        return result

    async def _follow_up(self, conn: AsyncConnection, policies: Policies, result: BatchResult,
                         now: datetime) -> None:
        changed = result.touched | {t.incident.id for t in result.transitions}
        result.effects = await self._followup.after(conn, changed, now, policies=policies)
        # Where the changed incidents ended up (the follow-up read it: it changes no
        # incident row): an incident opened in this batch is counted under the priority
        # correlation gave it, not the none it was inserted with.
        result.final = result.effects.states
        result.transitions = [
            dataclasses.replace(t, incident=result.final.get(t.incident.id, t.incident))
            if t.previous is None else t
            for t in result.transitions
        ]

    async def _place(self, conn: AsyncConnection, stages: Stages, kept: Kept,
                     new: Sequence[Placed], now: datetime, result: BatchResult) -> None:
        """Put new alerts into incidents: flapping ones back where they were, alerts
        under a maintenance window nowhere, the rest where correlation says; then work
        out root cause and impact again."""
        if not new:
            return
        links, roots = kept.links, kept.roots
        reopen_window = stages.reopen_window_seconds
        lookback = max(stages.flapping.window, timedelta(seconds=reopen_window))
        earlier = await alert_store.earlier_firings(conn, new, since=now - lookback)
        split = await stages.flapping.split(conn, new, now, earlier)
        suppressed, steady = await stages.maintenance.split(conn, split.steady, now)
        result.suppressed += len(suppressed)
        reopened, back, steady = await incidents.reopen_for_alerts(
            conn, steady, now, window_seconds=reopen_window, earlier=earlier)
        plan = await stages.correlator.correlate(conn, steady, now, links=links)
        _count_outcomes(result, new, suppressed, plan)
        opened = await incidents.open_incidents(conn, plan.opens, now)
        for transition, group in zip(opened, plan.opens, strict=True):
            links.linked(transition.incident.id, (a for a, _ in group.alerts), opened=True)
        for joins in (plan.joins, back, split.flapping):
            await incidents.attach_alerts(conn, joins, now, flapping=joins is split.flapping)
            for incident_id, members in joins.items():
                links.linked(incident_id, (a for a, _ in members), opened=False)
        merged = await incidents.merge_incidents(conn, plan.merges, now)
        links.merged(dict(plan.merges))
        touched = {t.incident.id for t in opened} | set(plan.joins) | set(split.flapping)
        touched |= set(back)
        merged_into = {into for _, into in plan.merges}
        touched |= merged_into
        result.raised += await impact.refresh(conn, self._topology.current, touched, now,
                                              priorities=stages.priorities, links=links,
                                              root_causes=roots, merged_into=merged_into)
        result.transitions += reopened + opened + merged
        result.touched |= touched


def _count_outcomes(result: BatchResult, new: Sequence[Placed], suppressed: Sequence[Suppressed],
                    plan: CorrelationPlan) -> None:
    """Each new alert once: held by maintenance, opening an incident, or else correlated
    (joined an open one, reopened a resolved one, flapping back into its own)."""
    held = {s.alert_id for s in suppressed}
    opening = {alert_id for group in plan.opens for _, alert_id in group.alerts}
    result.processed.update(
        (alert.source, Outcome.SUPPRESSED if alert_id in held
         else Outcome.NEW if alert_id in opening else Outcome.CORRELATED)
        for alert, alert_id in new
    )


# "incidentd-ingest" folded into a bigint: the lock ingest transactions take.
_INGEST_LOCK = 0x696E67657374


async def serialize_correlation(conn: AsyncConnection) -> None:
    """One ingest transaction at a time across replicas (PostgreSQL).

    Deciding which incident an alert joins reads the open incidents; two replicas
    deciding at once would each miss the other's uncommitted incident and open two
    for one group. The lock is held until commit; group commit keeps it cheap. On
    SQLite the single writer already does this.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INGEST_LOCK})


# Tries at getting a database connection before a batch is refused (PostgreSQL).
_CONNECT_ATTEMPTS = 3
# How long the writer waits for the senders of its last batch to come back before it
# starts the next one without them, and the pause in arrivals after which it stops
# waiting at once (see `IngestWriter._gather`).
GATHER_SECONDS = 0.004
GATHER_PAUSE_SECONDS = 0.001


@dataclass(slots=True)
class _Pending:
    alerts: Sequence[AlertEvent]
    done: asyncio.Future[None]


class IngestWriter:
    """The single writer of the hot path; bounded, batched, drained on shutdown."""

    def __init__(
        self,
        *,
        store: Store,
        pipeline: Pipeline,
        max_queued_alerts: int,
        max_batch_alerts: int,
        retry_after_seconds: int,
    ) -> None:
        self._store = store
        self._pipeline = pipeline
        self._max_queued = max_queued_alerts
        self._max_batch = max_batch_alerts
        self._retry_after = retry_after_seconds
        self._queue: deque[_Pending] = deque()
        self._queued_alerts = 0
        self._wakeup = asyncio.Event()
        self._arrived = asyncio.Event()  # a request was queued (what `_gather` waits on)
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def retry_after(self) -> int:
        return self._retry_after

    async def submit(self, alerts: Sequence[AlertEvent], *, overload_status: int = 503) -> None:
        """Return once `alerts` are committed; raise `Overloaded` or `StoreUnavailable`."""
        if not alerts:
            return
        if self._closing:
            raise Overloaded("shutting down", retry_after=self._retry_after, status=overload_status)
        if self._queued_alerts and self._queued_alerts + len(alerts) > self._max_queued:
            raise Overloaded(
                f"ingest queue full ({self._queued_alerts} alerts waiting)",
                retry_after=self._retry_after, status=overload_status,
            )
        pending = _Pending(alerts, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._queued_alerts += len(alerts)
        metrics.INGEST_QUEUED.set(self._queued_alerts)
        self._wakeup.set()
        self._arrived.set()
        try:
            # Shielded: a client that hangs up must not cancel a commit others share.
            await asyncio.shield(pending.done)
        except StoreUnavailable:
            # The reason is in the writer's log line; a client only learns to come back.
            raise Overloaded(
                "database unavailable; retry later", retry_after=self._retry_after,
                status=overload_status, reason="store_unavailable",
            ) from None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ingest-writer")

    async def stop(self) -> None:
        """Take nothing new, commit everything already queued, then return."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def run_until_idle(self) -> None:
        """Burst mode: commit what is queued now and return (for tests and replay)."""
        while self._queue:
            await self._commit_next_batch()

    async def _run(self) -> None:
        senders = 0  # requests answered by the last commit, and those queued behind it
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                await self._gather(senders)
                senders = await self._commit_next_batch() + len(self._queue)
            if self._closing and not self._queue:
                return

    async def _gather(self, senders: int) -> None:
        """Wait briefly for the senders of the last batch, when they were several.

        Concurrent senders come back together: each sends its next request as soon as
        the last one is answered. Starting a batch with the first to arrive splits them
        into a batch of one and a batch of the rest, each paying the fixed cost of a
        batch; and senders that fell into two groups stay so, each group's batch
        committing while the other waits (measured: 32 senders of one alert each, 16
        alerts a commit). So when the last commit answered or had queued behind it
        several requests, wait for as many, up to `GATHER_SECONDS`. Senders that are
        not coming back together (independent ones, arriving at random) are not waited
        for: a pause of `GATHER_PAUSE_SECONDS` in arrivals ends the wait. A lone sender
        waits for nothing; neither does a queue that already holds that many."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_SECONDS
        while (senders > 1 and len(self._queue) < senders and not self._closing
               and self._queued_alerts < self._max_batch):
            left = deadline - loop.time()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                async with asyncio.timeout(min(left, GATHER_PAUSE_SECONDS)):
                    await self._arrived.wait()
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Pending]:
        taken: list[_Pending] = []
        size = 0
        while self._queue and (not taken or size + len(self._queue[0].alerts) <= self._max_batch):
            pending = self._queue.popleft()
            taken.append(pending)
            size += len(pending.alerts)
        self._queued_alerts -= size
        metrics.INGEST_QUEUED.set(self._queued_alerts)
        return taken

    async def _commit_next_batch(self) -> int:
        """Commit the next batch; how many requests it held."""
        taken = self._take_batch()
        await self._commit(taken)
        return len(taken)

    async def _commit(self, taken: list[_Pending]) -> None:
        batch = [a for p in taken for a in p.alerts]
        started = time.perf_counter()
        try:
            # Only getting the connection is retried (briefly: a pooled connection
            # replaced after a database restart). Once the batch's statements are
            # sent, a failure fails the batch and every request in it gets 503/429,
            # even if the failure hit the COMMIT and the outcome is unknown: retrying
            # here could not tell a lost commit from a landed one. The sender's own
            # retry is safe either way: the dedup upsert finds an alert that did land
            # firing and counts an occurrence, it never stores it twice.
            async with self._store.write(connect_attempts=_CONNECT_ATTEMPTS) as conn:
                result = await self._pipeline.process(conn, batch)
            self._pipeline.committed()
        except StoreUnavailable as err:
            log.warning("store unavailable; alerts refused", reason=str(err), alerts=len(batch),
                        requests=len(taken))
            _fail(taken, err)
            return
        except Exception as err:
            if len(taken) > 1:
                # One request's alerts broke the shared transaction: commit each
                # request alone, so only the culprit fails, not its neighbours.
                for pending in taken:
                    await self._commit([pending])
                return
            log.exception("ingest batch failed", alerts=len(batch))  # a bug: 500, writer lives
            _fail(taken, err)
            return
        metrics.INGEST_DURATION.observe(time.perf_counter() - started)
        metrics.INGEST_BATCH_ALERTS.observe(len(batch))
        record(result)
        for pending in taken:
            if not pending.done.done():
                pending.done.set_result(None)


def _fail(taken: Sequence[_Pending], err: BaseException) -> None:
    for pending in taken:
        if not pending.done.done():
            pending.done.set_exception(err)


def record(result: BatchResult) -> None:
    """Metrics and log lines of a committed batch."""
    for (source, status), n in result.received.items():
        metrics.ALERTS_RECEIVED.labels(source, status).inc(n)
    for (source, outcome), n in result.processed.items():
        metrics.ALERTS_PROCESSED.labels(source, outcome.value).inc(n)
    incidents.record_metrics(result.transitions)
    for state in result.final.values():  # last: where the batch left each incident
        metrics.OPEN_INCIDENTS.observe(state.id, state.priority, state.status.value)
    result.effects.record_metrics()
    if result.suppressed:
        metrics.ALERTS_SUPPRESSED.inc(result.suppressed)
    for t in result.transitions:
        log.info(
            "incident opened" if t.previous is None else f"incident {t.incident.status.value}",
            incident_id=t.incident.id, incident=incident_key(t.incident.id),
            severity=t.incident.severity.value, how=t.how.value,
        )
