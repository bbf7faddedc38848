"""Order does not matter: a burst grouped in any arrival order gives the same incidents."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.config import CorrelationConfig
from daemon.correlation.engine import Correlator
from daemon.correlation.topology import Topology, TopologyHolder
from daemon.itsm.root_cause import root_cause
from daemon.models import Alert, AlertStatus, ConfigurationItem, Severity

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@st.composite
def graphs(draw: st.DrawFn) -> Topology:
    """A random DAG: node i may depend only on nodes with a higher number."""
    n = draw(st.integers(min_value=2, max_value=14))
    items = []
    for i in range(n):
        later = list(range(i + 1, n))
        deps = draw(st.lists(st.sampled_from(later), max_size=3, unique=True)) if later else []
        items.append(ConfigurationItem(id=f"c{i}", name=f"c{i}", type="app",
                                       depends_on=tuple(f"c{d}" for d in deps)))
    return Topology.build(items)


def alert(i: int, ci: str | None) -> Alert:
    return Alert(source="generic", integration="g", fingerprint=f"a{i}",
                 status=AlertStatus.FIRING, severity=Severity.ERROR, summary="s", labels={},
                 annotations={}, starts_at=NOW, ends_at=None, generator_url=None,
                 group_key=f"grp{i % 2}", ci_id=ci)


def grouping(correlator: Correlator, burst: list[tuple[Alert, int]]) -> set[frozenset[str]]:
    plan = correlator.plan(burst, bound={}, unbound={}, now=NOW)
    assert not plan.joins and not plan.merges
    return {frozenset(a.fingerprint for a, _ in g.alerts) for g in plan.opens}


@settings(max_examples=300, deadline=None)
@given(data=st.data(), topology=graphs(), siblings=st.booleans(),
       depth=st.integers(min_value=1, max_value=4))
def test_any_arrival_order_gives_the_same_incidents(
    data: st.DataObject, topology: Topology, siblings: bool, depth: int
) -> None:
    cis = sorted(topology.cis)
    targets = data.draw(st.lists(st.one_of(st.none(), st.sampled_from(cis)),
                                 min_size=1, max_size=12))
    burst = [(alert(i, ci), i + 1) for i, ci in enumerate(targets)]
    config = CorrelationConfig(max_depth=depth, join_siblings=siblings, max_fanout=2)
    correlator = Correlator(config=config, topology=TopologyHolder(topology), group_by={})
    expected = grouping(correlator, burst)
    shuffled = data.draw(st.permutations(burst))
    assert grouping(correlator, list(shuffled)) == expected
    # and the root cause of each group does not depend on the order either
    assert {root_cause(topology, [a.ci_id for a, _ in burst if a.ci_id])} == {
        root_cause(topology, [a.ci_id for a, _ in shuffled if a.ci_id])}


@settings(max_examples=200, deadline=None)
@given(topology=graphs(), data=st.data())
def test_unrelated_cis_never_share_an_incident(topology: Topology, data: st.DataObject) -> None:
    cis = sorted(topology.cis)
    targets = data.draw(st.lists(st.sampled_from(cis), min_size=2, max_size=8))
    burst = [(alert(i, ci), i + 1) for i, ci in enumerate(targets)]
    correlator = Correlator(config=CorrelationConfig(max_depth=20), topology=TopologyHolder(
        topology), group_by={})
    for group in grouping(correlator, burst):
        members = [targets[int(fp[1:])] for fp in group]
        # all members lie in one connected part of the graph (edges either way)
        assert set(members) <= component(topology, members[0])


def component(topology: Topology, start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        node = todo.pop()
        for other in topology.up.get(node, frozenset()) | topology.down.get(node, frozenset()):
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return seen
