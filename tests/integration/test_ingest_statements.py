"""How many SQL statements an ingest batch sends (SQLite and PostgreSQL): a count per
batch, never per alert. A count, not a timing: it fails the day someone brings back a
statement per alert or per incident."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from daemon.models import Incident
from daemon.store import Store
from tests.conftest import FakeClock
from tests.integration.test_correlation_scenarios import World, alert, ci, svc

# Every statement of a 50-alert batch that repeats, opens, joins, merges and resolves,
# with the follow-up (SLA clocks, escalation, problems, suspected changes) included.
# 26-27 today, depending on the backend; the margin is for a new step, not for a loop.
MAX_STATEMENTS = 30
# A batch of 50 alerts may cost a few statements more than one of 5 (a step that has
# nothing to do skips its statement, as the problems' link check does when no incident
# has both a root cause and an alert name), never 45 more.
MAX_GROWTH = 6


@contextmanager
def sent(store: Store) -> Iterator[list[str]]:
    """The SQL texts the writer engine sends meanwhile, in order."""
    texts: list[str] = []

    def keep(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        texts.append(statement)

    engine = store.writer_engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", keep)
    try:
        yield texts
    finally:
        sa.event.remove(engine, "before_cursor_execute", keep)


def by_kind(texts: list[str]) -> Counter[str]:
    """Statements by their first words."""
    return Counter(" ".join(t.split()[:3]) for t in texts)


def estate(n: int) -> list[Any]:
    """`n` apps on a few databases on one host, in one service: alerts correlate."""
    dbs = [ci(f"db-{i}", "host", type_="database") for i in range(5)]
    apps = [ci(f"app-{i}", f"db-{i % 5}", service="svc") for i in range(n)]
    return [svc("svc", *(a.id for a in apps[:10])), *apps, *dbs, ci("host", type_="host")]


async def warmed(store: Store, clock: FakeClock) -> World:
    world = World(store, clock, *estate(200))
    await warm(world)
    return world


async def warm(world: World) -> None:
    # 60 firing alerts in a few incidents, some unbound.
    await world.send(*(alert(f"w{i}", f"app-{i}") for i in range(40)))
    world.clock.advance(5)
    await world.send(*(alert(f"u{i}", None, group="am:unbound") for i in range(20)))
    world.clock.advance(5)


def mixed_batch(tag: str, size: int) -> list[Any]:
    """Of `size` alerts: 60 % repeats, 30 % new (bound and unbound), 10 % resolves."""
    repeats = [alert(f"w{i}", f"app-{i}") for i in range(size * 6 // 10)]
    new = [alert(f"{tag}{i}", f"app-{40 + i}" if i % 3 else None, group="am:unbound")
           for i in range(size * 3 // 10)]
    resolves = [alert(f"w{39 - i}", f"app-{39 - i}", status="resolved")
                for i in range(size - len(repeats) - len(new))]
    return repeats + new + resolves


async def test_a_batch_costs_statements_per_batch_not_per_alert(
    store: Store, clock: FakeClock
) -> None:
    world = await warmed(store, clock)
    with sent(store) as small:
        await world.send(*mixed_batch("s", 5))
    clock.advance(5)
    with sent(store) as large:
        await world.send(*mixed_batch("l", 50))
    assert len(large) <= MAX_STATEMENTS, by_kind(large)
    assert len(large) - len(small) <= MAX_GROWTH, by_kind(large) - by_kind(small)


def roles(incident: Incident) -> dict[str, str]:
    return {a.fingerprint: a.role for a in incident.alerts}


async def test_a_merge_keeps_the_root_and_corrects_the_roles_it_brings(
    store: Store, clock: FakeClock
) -> None:
    # The incident taken in had its own root cause: under the older incident's root,
    # that alert is a symptom now, though it was linked long before this batch.
    world = World(store, clock, ci("app-a", "db"), ci("db", type_="database"),
                  ci("app-b"), ci("x", "db", "app-b"), join_siblings=False)
    await world.send(alert("db-down", "db"), alert("a-errors", "app-a"))
    clock.advance(5)
    await world.send(alert("b-errors", "app-b"))
    older, newer = await world.incidents()
    assert roles(newer) == {"b-errors": "root_cause"}
    clock.advance(5)
    await world.send(alert("x-errors", "x"))  # related to both: the newer merges in
    older, newer = await world.incidents()
    assert (older.root_cause_ci, newer.merged_into) == ("db", older.id)
    assert roles(older) == {"db-down": "root_cause", "a-errors": "symptom",
                            "b-errors": "symptom", "x-errors": "symptom"}


async def test_batches_of_different_sizes_reuse_their_statement_texts(
    store: Store, clock: FakeClock
) -> None:
    # A new text is a prepare round trip on PostgreSQL: IN lists are padded to a power
    # of two (daemon/store/in_lists.py), so batches of 17 to 31 alerts, whose lists
    # have 9 to 31 values, share most texts with one of 32 instead of each bringing its own.
    world = await warmed(store, clock)
    with sent(store) as one:
        await world.send(*mixed_batch("a", 32))
    clock.advance(5)
    with sent(store) as others:
        for n, size in enumerate(range(17, 32, 2)):
            await world.send(*mixed_batch(f"b{n}", size))
            clock.advance(5)
    # Multi-row INSERTs left out: the text of one follows its row count (new incidents).
    first, later = _not_inserts(one), _not_inserts(others)
    # Some lists still move to the next power of two, and later batches take steps the
    # first did not (resolves closing incidents): 11 new texts with padding, 30 without.
    assert len(later - first) <= 15, sorted(later - first)


def _not_inserts(texts: list[str]) -> set[str]:
    return {t for t in texts if not t.lstrip().upper().startswith("INSERT")}
