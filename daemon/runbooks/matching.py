"""Does a runbook apply to this alert on this incident?

Pure and cheap: the catalog's matchers are parsed once, and this runs for
each new alert of an incident against each runbook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from daemon.models import ConfigurationItem
from daemon.runbooks.catalog import Runbook, RunbookMatch

_RANK = {"P1": 1, "P2": 2, "P3": 3, "P4": 4, "P5": 5}


def matches(runbook: Runbook, *, labels: Mapping[str, str], incident_status: str,
            priority: str | None, impacted_services: Sequence[str],
            ci: ConfigurationItem | None) -> bool:
    """True when every criterion of `runbook.match` holds; an absent criterion always holds."""
    match = runbook.match
    return (
        incident_status in match.statuses
        and all(m.matches(labels) for m in match.matchers)
        and _ci_type_ok(match, ci)
        and _service_ok(match, impacted_services, ci)
        and _priority_ok(match, priority)
    )


def _ci_type_ok(match: RunbookMatch, ci: ConfigurationItem | None) -> bool:
    if match.ci_types is None:
        return True
    # A runbook for databases must not run on an alert bound to no CI.
    return ci is not None and ci.type in match.ci_types


def _service_ok(match: RunbookMatch, impacted_services: Sequence[str],
                ci: ConfigurationItem | None) -> bool:
    if match.services is None:
        return True
    services = set(impacted_services)
    if ci is not None:
        if ci.service:
            services.add(ci.service)
        if ci.is_service:
            services.add(ci.id)
    return not services.isdisjoint(match.services)


def _priority_ok(match: RunbookMatch, priority: str | None) -> bool:
    if match.min_priority is None:
        return True
    # An incident not yet prioritised does not meet a minimum.
    rank = _RANK.get(str(priority)) if priority is not None else None
    return rank is not None and rank <= _RANK[match.min_priority]
