"""What the benches feed the daemon: a generated CMDB and a realistic alert mix.

The CMDB is layered like a real estate: business services, then web front
ends, applications, databases, hosts and network gear. Most dependencies stay
inside one service; a few cross over (a shared database, a shared host), and
the network layer is shared by everyone. It is written in the CMDB file
format (`{"cis": [...]}`, see `daemon/itsm/cmdb_documents.py`).

The alert mix is per alert: 70 % repeat an alert that is firing now, 25 % are
new, 5 % resolve one that is firing. Alerts bind to CMDB CIs through the
`instance` label (Alertmanager) or `payload.source` (PagerDuty); a share of
them names machines the CMDB does not know, as in life. Each client process
draws fingerprints from its own namespace, so processes never race on one
alert and every repeat or resolve names an alert the client knows is open.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

# (type, share of all CIs); services first, network last (shared by every service).
LAYERS: tuple[tuple[str, float], ...] = (
    ("service", 0.02), ("web", 0.13), ("app", 0.35), ("database", 0.15), ("host", 0.30),
    ("network", 0.05),
)
REGIONS = ("eu-west-1", "eu-central-1", "us-east-1", "us-west-2")

# Alert names by the type of CI they fire on.
ALERTNAMES: dict[str, tuple[str, ...]] = {
    "host": ("NodeDown", "HighCPU", "DiskFull", "MemoryPressure"),
    "app": ("HighErrorRate", "HighLatency", "PodCrashLooping"),
    "database": ("ReplicationLag", "TooManyConnections"),
    "web": ("Http5xx", "CertificateExpiry"),
}
SEVERITIES = ("critical", "error", "warning", "warning", "info")

REPEAT_SHARE = 0.70
NEW_SHARE = 0.25  # the rest (5 %) resolves an open alert
UNBOUND_SHARE = 0.2  # alerts from machines the CMDB does not know


# --------------------------------------------------------------------------
# the CMDB


def layered_graph(n_cis: int, n_edges: int, rng: random.Random
                  ) -> tuple[list[list[str]], dict[str, set[str]]]:
    """CI ids per layer and each CI's dependencies: every edge points one or two
    layers down (services → web → app → database → host → network)."""
    layers = [[f"{name}-{i}" for i in range(max(1, int(n_cis * share)))]
              for name, share in LAYERS]
    deps: dict[str, set[str]] = {ci: set() for layer in layers for ci in layer}
    flat = [(i, ci) for i, layer in enumerate(layers[:-1]) for ci in layer]
    count = 0
    while count < n_edges:
        level, ci = rng.choice(flat)
        below = layers[min(len(layers) - 1, level + rng.choice((1, 1, 1, 2)))]
        target = rng.choice(below)
        if target not in deps[ci]:
            deps[ci].add(target)
            count += 1
    return layers, deps


def service_cmdb(n_cis: int, rng: random.Random) -> list[dict[str, Any]]:
    """A CMDB document's CIs: each non-network CI belongs to one business service;
    dependencies mostly stay within the service (about 3 edges per CI)."""
    layers = [[f"{name}-{i}" for i in range(max(1, int(n_cis * share)))]
              for name, share in LAYERS]
    services, *middle, network = layers
    # Deal the CIs of each middle layer out to the services.
    owner: dict[str, str] = {}
    by_service: dict[tuple[str, int], list[str]] = {}
    for level, layer in enumerate(middle):
        for i, ci in enumerate(layer):
            svc = services[i % len(services)]
            owner[ci] = svc
            by_service.setdefault((svc, level), []).append(ci)
    cis: list[dict[str, Any]] = []
    for i, svc in enumerate(services):
        tops = by_service.get((svc, 0), []) or by_service.get((svc, 1), [])
        cis.append({"id": svc, "name": f"Service {i}", "type": "service",
                    "criticality": 1 + i % 3, "depends_on": sorted(tops)})
    for level, layer in enumerate(middle):
        kind = LAYERS[level + 1][0]
        for ci in layer:
            deps = _dependencies(ci, level, owner, by_service, middle, network, rng)
            cis.append({
                "id": ci, "name": ci, "type": kind, "service": owner[ci],
                "owner_group": f"team-{owner[ci]}", "criticality": 2 + level % 3,
                "environment": "prod",
                "attributes": {"region": REGIONS[hash_index(ci, len(REGIONS))]},
                "depends_on": sorted(deps),
            })
    for ci in network:
        cis.append({"id": ci, "name": ci, "type": "network", "owner_group": "netops",
                    "criticality": 2, "environment": "prod", "depends_on": []})
    return cis


def _dependencies(ci: str, level: int, owner: dict[str, str],
                  by_service: dict[tuple[str, int], list[str]], middle: list[list[str]],
                  network: list[str], rng: random.Random) -> set[str]:
    if level == len(middle) - 1:  # hosts sit on one or two network devices
        return set(rng.sample(network, min(len(network), rng.choice((1, 2)))))
    deps: set[str] = set()
    for _ in range(rng.choice((2, 3, 3, 4))):
        below = level + rng.choice((1, 1, 1, 2))
        if below >= len(middle):
            continue
        same = by_service.get((owner[ci], below))
        pool = same if same and rng.random() < 0.9 else middle[below]
        deps.add(rng.choice(pool))
    return deps


def hash_index(text: str, n: int) -> int:
    """A stable index in [0, n) (Python's `hash` of str changes per process)."""
    return sum(text.encode()) % n


def cmdb_document(n_cis: int, seed: int = 7) -> bytes:
    return orjson.dumps({"cis": service_cmdb(n_cis, random.Random(seed))})


def alertable(cis: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(ci id, type, region) of every CI alerts fire on."""
    return [(c["id"], c["type"], c.get("attributes", {}).get("region", REGIONS[0]))
            for c in cis if c["type"] in ALERTNAMES]


# --------------------------------------------------------------------------
# the alert mix


@dataclass(slots=True, eq=False)  # compared by identity: a pool holds each once
class Identity:
    """What stays the same across every repeat of one alert."""

    fingerprint: str
    alertname: str
    instance: str
    region: str
    severity: str
    # The alert as a firing Alertmanager alert, serialised once: the client builds 50-alert
    # bodies by joining these, so making requests costs the client little CPU.
    firing_json: bytes = b""


@dataclass(slots=True)
class Pool:
    """Open alerts of one group, with O(1) random pick and removal."""

    items: list[Identity] = field(default_factory=list)

    def add(self, identity: Identity) -> None:
        self.items.append(identity)

    def draw(self, keep: int, take: int, rng: random.Random
             ) -> tuple[list[Identity], list[Identity]]:
        """Distinct random alerts: `keep` stay in the pool, `take` leave it (fewer when
        the pool is smaller)."""
        picked = rng.sample(range(len(self.items)), min(keep + take, len(self.items)))
        taken_at = sorted(picked[:take], reverse=True)
        kept = [self.items[i] for i in picked[take:]]
        taken = [self._pop(i) for i in taken_at]  # highest index first: swaps stay valid
        return kept, taken

    def _pop(self, i: int) -> Identity:
        self.items[i], self.items[-1] = self.items[-1], self.items[i]
        return self.items.pop()


class Mix:
    """One client process's view of what is firing, and the next requests' alerts."""

    def __init__(self, *, targets: list[tuple[str, str, str]], namespace: str, seed: int
                 ) -> None:
        self.rng = random.Random(seed)
        self.targets = targets
        self.namespace = namespace
        self.counter = 0
        self.pools: dict[tuple[str, str], Pool] = {}
        self.groups = sorted({(name, region) for _, kind, region in targets
                              for name in ALERTNAMES[kind]})
        self.by_group: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for ci, kind, region in targets:
            for name in ALERTNAMES[kind]:
                self.by_group.setdefault((name, region), []).append((ci, kind))

    @property
    def open_count(self) -> int:
        return sum(len(p.items) for p in self.pools.values())

    def new_identity(self, group: tuple[str, str], *, bound: bool = True) -> Identity:
        self.counter += 1
        name, region = group
        if not bound or self.rng.random() < UNBOUND_SHARE:
            instance = f"vm-{self.namespace}-{self.counter % 5000}.unmanaged:9100"
        else:
            instance = f"{self.rng.choice(self.by_group[group])[0]}:9100"
        identity = Identity(fingerprint=f"{self.namespace}-{self.counter}", alertname=name,
                            instance=instance, region=region,
                            severity=self.rng.choice(SEVERITIES))
        identity.firing_json = orjson.dumps(_am_alert(identity, True))
        return identity

    def pool(self, group: tuple[str, str]) -> Pool:
        return self.pools.setdefault(group, Pool())

    def fresh(self, n: int) -> tuple[tuple[str, str], list[Identity]]:
        """`n` new alerts of one group (for warm-up and the RSS load), now open."""
        group = self.rng.choice(self.groups)
        made = [self.new_identity(group) for _ in range(n)]
        for identity in made:
            self.pool(group).add(identity)
        return group, made

    def spread(self, n: int) -> tuple[tuple[str, str], list[Identity]]:
        """`n` new alerts of a group of their own, on machines the CMDB does not know: they
        open an incident of their own and correlate with nothing (not kept in a pool)."""
        name, region = self.rng.choice(self.groups)
        group = (f"{name}{self.namespace}x{self.counter}", region)
        return group, [self.new_identity(group, bound=False) for _ in range(n)]

    def next_request(self, n: int) -> tuple[tuple[str, str], list[tuple[Identity, bool]]]:
        """`n` alerts of one group drawn from the mix: (identity, firing)."""
        group = self.rng.choice(self.groups)
        pool = self.pool(group)
        draws = [self.rng.random() for _ in range(n)]
        n_repeat = sum(d < REPEAT_SHARE for d in draws)
        n_resolve = sum(d >= REPEAT_SHARE + NEW_SHARE for d in draws)
        # Distinct alerts within one request, as Alertmanager sends them.
        repeats, resolves = pool.draw(n_repeat, n_resolve, self.rng)
        fresh = [self.new_identity(group) for _ in range(n - len(repeats) - len(resolves))]
        for identity in fresh:
            pool.add(identity)
        out = [(i, True) for i in repeats] + [(i, True) for i in fresh]
        out += [(i, False) for i in resolves]
        self.rng.shuffle(out)
        return group, out


# --------------------------------------------------------------------------
# request bodies


_STARTS = "2026-11-26T10:00:00Z"
_NEVER = "0001-01-01T00:00:00Z"


def _labels(identity: Identity) -> dict[str, str]:
    return {"alertname": identity.alertname, "instance": identity.instance, "job": "node",
            "region": identity.region, "severity": identity.severity}


def _am_alert(identity: Identity, firing: bool) -> dict[str, Any]:
    return {
        "status": "firing" if firing else "resolved",
        "labels": _labels(identity),
        "annotations": {"summary": f"{identity.alertname} on {identity.instance}",
                        "runbook_url": f"https://runbooks.example/{identity.alertname}"},
        "startsAt": _STARTS,
        "endsAt": _NEVER if firing else "2026-11-26T10:05:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up+%3D%3D+0",
        "fingerprint": identity.fingerprint,
    }


def alertmanager_body(group: tuple[str, str], alerts: list[tuple[Identity, bool]]) -> bytes:
    """An Alertmanager v4 webhook as Alertmanager 0.25 sends it (compact JSON + newline)."""
    name, region = group
    items = b",".join(i.firing_json if firing else orjson.dumps(_am_alert(i, False))
                      for i, firing in alerts)
    firing_any = any(f for _, f in alerts)
    head = orjson.dumps({
        "receiver": "incidentd", "status": "firing" if firing_any else "resolved",
        "groupLabels": {"alertname": name, "region": region},
        "commonLabels": {"alertname": name, "region": region},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "version": "4",
        "groupKey": f'{{}}:{{alertname="{name}", region="{region}"}}', "truncatedAlerts": 0,
    })
    return head[:-1] + b',"alerts":[' + items + b"]}\n"


def pagerduty_body(routing_key: str, identity: Identity, firing: bool) -> bytes:
    """A PagerDuty Events API v2 trigger or resolve."""
    if not firing:
        return orjson.dumps({"routing_key": routing_key, "event_action": "resolve",
                             "dedup_key": identity.fingerprint})
    return orjson.dumps({
        "routing_key": routing_key, "event_action": "trigger",
        "dedup_key": identity.fingerprint,
        "payload": {"summary": f"{identity.alertname} on {identity.instance}",
                    "source": identity.instance.split(":")[0],
                    "severity": identity.severity,
                    "component": identity.alertname, "group": identity.region,
                    "class": "bench", "custom_details": {"value": 97.5}},
        "client": "bench", "client_url": "https://monitoring.example/bench",
    })


def chunks(n: int, size: int) -> Iterator[int]:
    """Sizes of the requests that carry `n` alerts, `size` at a time."""
    while n > 0:
        yield min(size, n)
        n -= size
