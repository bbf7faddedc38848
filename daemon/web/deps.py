"""What the console's page modules are built from: the parts the API is built from."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.clock import Clock
from daemon.correlation.topology import TopologyHolder
from daemon.itsm.cmdb import Cmdb
from daemon.itsm.followup import FollowUp
from daemon.store import Store


@dataclass(frozen=True, slots=True)
class ConsoleDeps:
    store: Store
    clock: Clock
    topology: TopologyHolder
    cmdb: Cmdb
    # The ITSM parts of an incident's JSON (SLA clocks, escalation, problems, suspected
    # changes) as `GET /api/v1/incidents` shows them: `daemon.api.incidents.itsm_parts`
    # needs it. None only where a test builds pages without it (no SLA then).
    followup: FollowUp | None = None
