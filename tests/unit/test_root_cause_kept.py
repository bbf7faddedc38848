"""`RootCauses` keeps counts from call to call: whatever CIs start or stop alerting, in
whatever order, on whatever graph (cycles, CIs outside the CMDB, several incidents,
a CMDB change), it names the root cause `root_cause` works out from scratch."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.correlation.topology import Topology
from daemon.itsm.root_cause import RootCauses, root_cause
from daemon.models import ConfigurationItem


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


def test_a_large_incident_moves_by_few_walks() -> None:
    """The point of keeping counts: a CI that starts alerting costs its own walk, not
    one per alerting CI of the incident."""
    chain = Topology.build(
        ConfigurationItem(id=f"c{i}", name=f"c{i}", type="app",
                          depends_on=(f"c{i + 1}",) if i < 2999 else ())
        for i in range(3000))
    topology = CountingTopology(cis=chain.cis, up=chain.up, down=chain.down)
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
