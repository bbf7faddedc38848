"""`incidentd replay`: run recorded alerts through the real pipeline, offline.

Each input line is `{"received_at": RFC 3339, "source": "alertmanager|pagerduty|grafana|generic",
"payload": {...}}`. The payloads go through the same parsers, binding rules,
correlation engine and incident rules as live traffic, on a throwaway SQLite
store and a clock set to each line's `received_at`, so teams can tune rules
before going live. Replaying the same input twice gives the same output.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from daemon.api.serialize import incident_json
from daemon.app import build_pipeline
from daemon.config import Config, ConfigError
from daemon.correlation.topology import Topology, TopologyHolder
from daemon.errors import InvalidInput
from daemon.models import AlertEvent, ConfigurationItem, Incident, Severity
from daemon.receivers import pagerduty
from daemon.receivers.alertmanager import AlertmanagerParser
from daemon.receivers.generic import GenericParser
from daemon.receivers.grafana import GrafanaParser
from daemon.receivers.normalize import Limits
from daemon.store import Store, migrate
from daemon.store import incidents as incident_store

SOURCES = ("alertmanager", "pagerduty", "grafana", "generic")


class ReplayLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    received_at: datetime
    source: str
    payload: dict[str, Any] | list[Any]


class ReplayClock:
    def __init__(self) -> None:
        self.current = datetime(1970, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current


@dataclass(frozen=True, slots=True)
class ReplayResult:
    incidents: list[Incident]
    lines: int
    alerts: int


def read_lines(path: Path) -> Iterator[tuple[int, ReplayLine]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                line = ReplayLine.model_validate_json(raw)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "line"
                raise ConfigError([f"{path}:{number}: {where}: {first['msg']}"]) from None
            if line.source not in SOURCES:
                raise ConfigError([f"{path}:{number}: source: use one of {', '.join(SOURCES)}"])
            if line.received_at.tzinfo is None:
                line = line.model_copy(update={"received_at": line.received_at.replace(
                    tzinfo=UTC)})
            yield number, line


class _Parsers:
    """One parser per source, named after the config's integration of that type if any."""

    def __init__(self, config: Config, clock: ReplayClock) -> None:
        names = {i.type: i.name for i in reversed(config.integrations)}
        sev = {i.type: Severity(i.default_severity) for i in config.integrations}
        self._clock = clock
        self._pd_name = names.get("pagerduty", "pagerduty")
        self._am = AlertmanagerParser(integration=names.get("alertmanager", "alertmanager"),
                                      default_severity=sev.get("alertmanager", Severity.WARNING),
                                      limits=Limits())
        self._grafana = GrafanaParser(integration=names.get("grafana", "grafana"),
                                      default_severity=sev.get("grafana", Severity.WARNING),
                                      limits=Limits())
        self._generic = GenericParser(integration=names.get("generic", "generic"),
                                      default_severity=sev.get("generic", Severity.WARNING),
                                      limits=Limits(), clock=clock)

    def parse(self, source: str, body: bytes) -> list[AlertEvent]:
        if source == "alertmanager":
            return self._am.parse(body)
        if source == "grafana":
            return self._grafana.parse(body)
        if source == "generic":
            return self._generic.parse(body)
        event = pagerduty.parse_event(body)
        # A made-up key must not be random, or two replays would differ.
        dedup = event.dedup_key or hashlib.sha256(body).hexdigest()[:32]
        return [pagerduty.to_event(event, integration=self._pd_name, dedup_key=dedup,
                                   clock=self._clock)]


async def replay(path: Path, *, config: Config, cis: Sequence[ConfigurationItem]) -> ReplayResult:
    clock = ReplayClock()
    holder = TopologyHolder(Topology.build(cis))
    pipeline = build_pipeline(config, holder, clock)
    parsers = _Parsers(config, clock)
    alerts = lines = 0
    with tempfile.TemporaryDirectory(prefix="incidentd-replay-") as tmp:
        store = Store.open(f"sqlite+aiosqlite:///{tmp}/replay.db")
        try:
            await migrate.upgrade(store)
            for number, line in read_lines(path):
                clock.current = line.received_at
                try:
                    events = parsers.parse(line.source, orjson.dumps(line.payload))
                except InvalidInput as err:
                    raise ConfigError([f"{path}:{number}: payload: {err.message}"]) from None
                async with store.write() as conn:
                    await pipeline.process(conn, events)
                pipeline.committed()
                lines += 1
                alerts += len(events)
            found = await _all_incidents(store)
        finally:
            await store.close()
    return ReplayResult(found, lines, alerts)


async def _all_incidents(store: Store) -> list[Incident]:
    out: list[Incident] = []
    async with store.read() as conn:
        cursor = None
        while True:
            page = await incident_store.list_incidents(conn, statuses=None, limit=500,
                                                       before_id=cursor)
            for item in page:
                found = await incident_store.get_incident(conn, item.id)
                if found is not None:
                    out.append(found)
            if len(page) < 500:
                break
            cursor = page[-1].id
    return sorted(out, key=lambda i: i.id)


def incident_line(incident: Incident) -> bytes:
    """The incident JSON of the API, with alerts named by fingerprint (stable across runs)."""
    data = incident_json(incident)
    data["alerts"] = [{k: a[k] for k in ("fingerprint", "status", "labels", "ci", "role")}
                      for a in data["alerts"]]
    data.pop("group_key", None)
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def summary_line(incident: Incident) -> str:
    impacted = ",".join(incident.impacted_services) or "-"
    return (f"{incident.key}  {incident.status.value:<12} {incident.severity.value:<8} "
            f"root={incident.root_cause_ci or '-'}  services={impacted}  "
            f"alerts={len(incident.alerts)}  {incident.title}")
