from __future__ import annotations

from datetime import UTC, datetime

from daemon.correlation.dedup import rounds
from daemon.correlation.engine import plan
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


def test_plan_joins_open_groups_and_opens_the_rest() -> None:
    new = [(alert("a", group="g1"), 1), (alert("b", group="g2"), 2), (alert("c", group="g2"), 3)]
    result = plan(new, {"g1": 10})
    assert result.joins == {10: [new[0]]}
    assert result.opens == {"g2": [new[1], new[2]]}
