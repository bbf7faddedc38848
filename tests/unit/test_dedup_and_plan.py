from __future__ import annotations

from datetime import UTC, datetime

from daemon.config import CorrelationConfig
from daemon.correlation.dedup import rounds
from daemon.correlation.engine import Correlator
from daemon.correlation.topology import TopologyHolder
from daemon.models import Alert, AlertStatus, Severity


def alert(fp: str, status: str = "firing", group: str = "g1") -> Alert:
    return Alert(
        source="alertmanager", integration="am", fingerprint=fp, status=AlertStatus(status),
        severity=Severity.ERROR, summary=fp, labels={"alertname": fp}, annotations={},
        starts_at=datetime(2026, 1, 1, tzinfo=UTC), ends_at=None, generator_url=None,
        group_key=group,
    )


def test_rounds_put_each_identity_once_per_round_in_order() -> None:
    a1, b1, a2, a3 = alert("a"), alert("b"), alert("a", "resolved"), alert("a")
    assert rounds([a1, b1, a2, a3]) == [[a1, b1], [a2], [a3]]


def test_rounds_of_distinct_alerts_is_one_round() -> None:
    batch = [alert(str(i)) for i in range(100)]
    assert rounds(batch) == [batch]


def test_unbound_alerts_join_open_groups_and_open_the_rest() -> None:
    correlator = Correlator(config=CorrelationConfig(), topology=TopologyHolder(), group_by={})
    new = [(alert("a", group="g1"), 1), (alert("b", group="g2"), 2), (alert("c", group="g2"), 3)]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    result = correlator.plan(new, bound={}, unbound={"g1": 10}, now=now)
    assert result.joins == {10: [new[0]]}
    [opened] = result.opens
    assert (opened.group_key, opened.alerts) == ("g2", [new[1], new[2]])


def test_group_by_labels_per_integration() -> None:
    correlator = Correlator(config=CorrelationConfig(), topology=TopologyHolder(),
                            group_by={"am": ["alertname"]})
    assert correlator.group_key(alert("x")) == "am:{alertname=x}"
