"""Which incident a new alert belongs to.

For now an alert joins the open incident of its source group (Alertmanager
`groupKey`), or its group opens a new one. Topology correlation over the
CMDB replaces this decision later; the plan's shape stays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.models import Alert
from daemon.store import incidents as incident_store

Placed = tuple[Alert, int]  # an alert and its stored id


@dataclass(slots=True)
class CorrelationPlan:
    joins: dict[int, list[Placed]] = field(default_factory=dict)
    opens: dict[str, list[Placed]] = field(default_factory=dict)


def plan(new: Sequence[Placed], open_by_group: Mapping[str, int]) -> CorrelationPlan:
    result = CorrelationPlan()
    for alert, alert_id in new:
        incident_id = open_by_group.get(alert.group_key)
        if incident_id is not None:
            result.joins.setdefault(incident_id, []).append((alert, alert_id))
        else:
            result.opens.setdefault(alert.group_key, []).append((alert, alert_id))
    return result


async def correlate(conn: AsyncConnection, new: Sequence[Placed]) -> CorrelationPlan:
    open_by_group = await incident_store.open_by_group_key(conn, (a.group_key for a, _ in new))
    return plan(new, open_by_group)
