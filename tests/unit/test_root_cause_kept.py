"""`RootCauses` keeps counts from call to call: whatever CIs start or stop alerting, in
whatever order, on whatever graph (cycles, CIs outside the CMDB, several incidents,
a CMDB change), it names the root cause `root_cause` works out from scratch."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.correlation.topology import Topology
from daemon.itsm.root_cause import RootCauses, root_cause
from daemon.models import ConfigurationItem, Severity
from daemon.store.link_memory import LinkSummary


@st.composite
def graphs(draw: st.DrawFn) -> Topology:
    """Any directed graph, cycles included, with varied criticality."""
    n = draw(st.integers(min_value=1, max_value=16))
    names = [f"c{i}" for i in range(n)]
    items = [
        ConfigurationItem(
            id=name, name=name, type="app", criticality=draw(st.integers(1, 4)),
            depends_on=tuple(draw(st.lists(st.sampled_from(names), max_size=3, unique=True))))
        for name in names
    ]
    return Topology.build(items)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), first=graphs(), second=graphs(), depth=st.integers(1, 8))
def test_kept_counts_name_the_same_root_as_a_fresh_count(
        data: st.DataObject, first: Topology, second: Topology, depth: int) -> None:
    roots = RootCauses(depth=depth)
    for step in range(data.draw(st.integers(1, 12), label="steps")):
        topology = second if step > 6 and data.draw(st.booleans(), label="cmdb changed") \
            else first
        names = [*sorted(topology.cis), "outside-the-cmdb"]
        incident = data.draw(st.integers(1, 3), label="incident")
        alerting = set(data.draw(st.lists(st.sampled_from(names), max_size=10), label="cis"))
        assert roots.of(topology, incident, alerting) == root_cause(topology, alerting, depth)


_walks: list[str] = []


class CountingTopology(Topology):
    def upstream(self, ci_id: str, depth: int | None = None) -> frozenset[str]:
        _walks.append(ci_id)
        return super().upstream(ci_id, depth)


def counted_chain(n: int) -> CountingTopology:
    """c0 → c1 → … → c(n-1), each depending on the next; its upstream walks counted."""
    chain = Topology.build(
        ConfigurationItem(id=f"c{i}", name=f"c{i}", type="app",
                          depends_on=(f"c{i + 1}",) if i < n - 1 else ())
        for i in range(n))
    return CountingTopology(cis=chain.cis, up=chain.up, down=chain.down)


def test_a_large_incident_moves_by_few_walks() -> None:
    """The point of keeping counts: a CI that starts alerting costs its own walk, not
    one per alerting CI of the incident."""
    topology = counted_chain(3000)
    roots = RootCauses()
    alerting = {f"c{i}" for i in range(0, 3000, 3)}
    assert roots.of(topology, 1, alerting) == root_cause(topology, alerting) == "c2997"
    _walks.clear()
    assert roots.of(topology, 1, alerting | {"c2999"}) == "c2999"
    assert _walks == ["c2999"]
    _walks.clear()
    assert roots.of(topology, 1, alerting - {"c0"}) == "c2997"
    assert sorted(_walks) == ["c0", "c2999"]
    _walks.clear()
    assert roots.of(topology, 1, alerting - {"c0"}) == "c2997"  # nothing moved: no walk
    assert _walks == []


def _item(name: str, *depends_on: str, criticality: int = 3) -> ConfigurationItem:
    return ConfigurationItem(id=name, name=name, type="app", criticality=criticality,
                             depends_on=depends_on)


def test_the_order_of_the_tops_follows_every_move() -> None:
    """The tops are kept in order from call to call: a top overtaken and then back ahead,
    a top that appears when what was above it stops alerting, a top that stops alerting
    and starts again. Each step is one call, so which CI moves when is fixed."""
    topology = Topology.build([
        _item("z"), _item("a", "z"), *(_item(f"a{i}", "a") for i in (1, 2, 3)),
        _item("b"), *(_item(f"b{i}", "b") for i in (1, 2, 3)),
    ])
    roots = RootCauses()
    alerting: set[str] = set()
    for start, stop, root in [
        ({"b", "b1"}, set(), "b"),
        ({"z", "a"}, set(), "b"),  # z and b: one dependent each, b first by name
        ({"a1", "a2", "a3"}, set(), "z"),  # a is under z: no top
        (set(), {"z"}, "a"),  # a a top now, with 3 dependents
        (set(), {"a1"}, "a"),  # 2, still ahead of b's 1
        (set(), {"a2", "a3"}, "b"),  # 0: b ahead
        ({"a1", "a2"}, set(), "a"),  # 2: a back ahead
        (set(), {"b"}, "a"),  # b1 a top, with nothing under it
        ({"b2", "b3"}, set(), "a"),
        ({"b"}, set(), "b"),  # b back, with 3 dependents
        (set(), {"b"}, "a"),  # and gone again: its dependents count stays 3
    ]:
        alerting = (alerting | start) - stop
        assert roots.of(topology, 1, alerting) == root_cause(topology, alerting) == root


def test_the_kept_order_takes_bounded_memory() -> None:
    """Many moves leave behind outdated entries in the order of the tops; they are
    dropped, not piled up."""
    star = Topology.build([_item("hub"), *(_item(f"leaf{i}", "hub") for i in range(40))])
    roots = RootCauses()
    alerting = {"hub"}
    for step in range(2000):
        alerting ^= {f"leaf{step % 40}"}
        if step % 7 == 0:  # the hub stops or starts alerting: the leaves are tops or not
            alerting ^= {"hub"}
        assert roots.of(star, 1, alerting) == root_cause(star, alerting)
        counts = roots._counts[1]
        assert len(counts.heap) <= 2 * len(counts.tops) + 64


def test_a_summary_seen_before_answers_without_looking_at_its_cis() -> None:
    """Unchanged since last asked: the last answer, no walk. Moved: only the CIs it says
    moved are walked, not every alerting CI."""
    topology = counted_chain(3000)
    roots = RootCauses()
    summary = LinkSummary()
    for i in range(0, 3000, 3):
        summary.add(f"c{i}", Severity.WARNING, firing=True)
    assert roots.of_links(topology, 1, summary) == "c2997"
    _walks.clear()
    assert roots.of_links(topology, 1, summary) == "c2997"
    assert _walks == []
    summary.add("c2999", Severity.WARNING, firing=True)
    summary.add("c3", Severity.WARNING, firing=True)  # a second alert on c3: not moved
    assert roots.of_links(topology, 1, summary) == "c2999"
    assert _walks == ["c2999"]
    _walks.clear()
    assert summary.resolve_one("c0")
    assert roots.of_links(topology, 1, summary) == "c2999"
    assert sorted(_walks) == ["c0"]


@st.composite
def summary_steps(draw: st.DrawFn) -> list[tuple[str, str, int]]:
    """What happens to an incident's links between (and instead of) root-cause asks."""
    names = [*(f"c{i}" for i in range(16)), "outside-the-cmdb"]
    kinds = st.sampled_from(["fire", "bind", "resolve", "merge", "ask", "ask"])
    return draw(st.lists(st.tuples(kinds, st.sampled_from(names), st.integers(1, 2)),
                         max_size=30))


@settings(max_examples=300, deadline=None)
@given(topology=graphs(), other=graphs(), steps=summary_steps(), depth=st.integers(1, 8))
def test_counts_moved_by_a_summary_name_the_same_root_as_a_fresh_count(
        topology: Topology, other: Topology, steps: list[tuple[str, str, int]],
        depth: int) -> None:
    roots = RootCauses(depth=depth)
    summaries = {1: LinkSummary(), 2: LinkSummary()}
    for n, (kind, ci, incident) in enumerate(steps):
        summary = summaries[incident]
        if kind == "fire":
            summary.add(ci, Severity.WARNING, firing=True)
        elif kind == "bind":  # an alert that arrived resolved, as read from the database
            summary.add(ci, Severity.WARNING, firing=False)
        elif kind == "resolve":
            summary.resolve_one(ci)
        elif kind == "merge":
            summary.absorb(summaries[3 - incident])
            summaries[3 - incident] = LinkSummary()
        else:
            graph = other if n % 7 == 6 else topology  # now and then a CMDB change
            assert roots.of_links(graph, incident, summary) == root_cause(
                graph, set(summary.alerting), depth)


def test_a_summary_changes_shape_exactly_when_its_cis_do() -> None:
    summary = LinkSummary()
    shapes = [summary.shape]

    def moved() -> bool:
        shapes.append(summary.shape)
        return shapes[-1] != shapes[-2]

    summary.add("a", Severity.WARNING, firing=True)
    assert moved()
    summary.add("a", Severity.CRITICAL, firing=True)  # a second alert on a: same CIs
    assert not moved()
    summary.add(None, Severity.CRITICAL, firing=True)
    assert not moved()
    summary.add("b", Severity.WARNING, firing=False)  # a CI, not a firing one
    assert moved()
    summary.add("b", Severity.WARNING, firing=True)  # b fires now
    assert moved()
    assert summary.resolve_one("a") and not moved()  # one of a's two alerts left firing
    assert summary.resolve_one("a") and moved()  # a fires no more
    assert not summary.resolve_one("a") and not moved()  # nothing was firing on a
    other = LinkSummary()
    other.add("c", Severity.WARNING, firing=True)
    summary.absorb(other)  # a merge
    assert moved()
    assert LinkSummary().shape != LinkSummary().shape  # unique over all summaries
