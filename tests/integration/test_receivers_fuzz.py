"""Property-based tests over HTTP, on a real store (SQLite and PostgreSQL): whatever a
client posts to a receiver, the answer is never a 500 and a refused request
writes nothing.

For each receiver route, with valid credentials, hypothesis posts arbitrary JSON,
mutated valid bodies, arbitrary bytes and oversized bodies, and checks:

- the status is the route's success status, 400 or 413; the body is JSON in the
  route's shape;
- the answer agrees with the parser (`tests/unit/test_receivers_properties.py`):
  a body the parser refuses gets 400, one it takes gets the success status;
- a refused request leaves every table as it was (no partial write);
- an accepted one adds at most one alert row per firing alert, counts one
  occurrence per firing alert, never removes rows, and records one change per
  change event.

The daemon runs in process, once per test, on an event loop of the test's own:
hypothesis drives a sync function, and each example runs one request on that loop.

Inputs the fuzzing once found to answer 500 are pinned by the tests at the end.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon import app as daemon_app
from daemon.config import Overrides, load_config
from daemon.errors import InvalidInput
from daemon.models import Acknowledgement, Alert, AlertStatus
from daemon.receivers import pagerduty
from daemon.receivers.validation import reject_nul
from tests.conftest import reset
from tests.unit.test_receivers_properties import (
    FIXTURE_ROUTING_KEY,
    SEEDS,
    byte_bodies,
    encode,
    json_bodies,
    json_values,
    mutated_bodies,
    parse_or_reject,
)

EXAMPLE = Path(__file__).parents[2] / "config" / "incidentd.example.yaml"
MAX_BODY = 16 * 1024  # server.max_body_bytes here; PagerDuty's own limit is fixed

T = TypeVar("T")


@dataclass(frozen=True)
class Route:
    path: str
    headers: dict[str, str]
    ok: int  # the success status
    limit: int  # body bytes accepted
    pd_shape: bool  # PagerDuty's answer shape ({"status", "message", "errors"})


ROUTES = {
    "alertmanager": Route("/api/v1/alerts/alertmanager", {"Authorization": "Bearer am-token"},
                          200, MAX_BODY, False),
    "grafana": Route("/api/v1/alerts/grafana", {"Authorization": "Bearer grafana-token"},
                     200, MAX_BODY, False),
    "generic": Route("/api/v1/alerts", {"Authorization": "Bearer generic-token"},
                     202, MAX_BODY, False),
    "pagerduty": Route("/v2/enqueue", {}, 202, pagerduty.MAX_BODY_BYTES, True),
    "pagerduty_change": Route("/v2/change/enqueue", {}, 202, pagerduty.MAX_BODY_BYTES, True),
}


class State(NamedTuple):
    alerts: int
    occurrences: int
    firing: int
    incidents: int
    acknowledged: int
    resolved: int
    incident_alerts: int
    timeline: int
    changes: int


_STATE = sa.text(
    "SELECT (SELECT count(*) FROM alerts), (SELECT coalesce(sum(occurrences), 0) FROM alerts),"
    " (SELECT count(*) FROM alerts WHERE status = 'firing'), (SELECT count(*) FROM incidents),"
    " (SELECT count(*) FROM incidents WHERE status = 'acknowledged'),"
    " (SELECT count(*) FROM incidents WHERE status = 'resolved'),"
    " (SELECT count(*) FROM incident_alerts), (SELECT count(*) FROM timeline),"
    " (SELECT count(*) FROM changes)"
)


class Daemon:
    """The daemon in process on a real store, on an event loop this test owns."""

    def __init__(self, components: daemon_app.Components, client: TestClient,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.components = components
        self.client = client
        self.loop = loop
        self.dialect = components.store.dialect

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    async def state(self) -> State:
        async with self.components.store.read() as conn:
            row = (await conn.execute(_STATE)).one()
        return State(*(int(v) for v in row))

    async def post(self, route: Route, body: bytes) -> tuple[int, Any, State, State]:
        """Post; return the status, the decoded JSON answer, the state before and after."""
        before = await self.state()
        resp = await self.client.post(route.path, data=body, headers=route.headers)
        raw = await resp.read()
        after = await self.state()
        assert resp.content_type == "application/json", (resp.status, raw[:300])
        return resp.status, json.loads(raw), before, after


async def _client(components: daemon_app.Components) -> TestClient:
    client = TestClient(TestServer(components.app))  # needs a running loop
    await client.start_server()
    return client


@contextmanager
def running_daemon(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    monkeypatch.setenv("INCIDENTD_API_TOKEN", "admin-token")
    monkeypatch.setenv("INCIDENTD_ALERTMANAGER_TOKEN", "am-token")
    monkeypatch.setenv("INCIDENTD_GRAFANA_TOKEN", "grafana-token")
    monkeypatch.setenv("INCIDENTD_GENERIC_TOKEN", "generic-token")
    monkeypatch.setenv("INCIDENTD_PAGERDUTY_ROUTING_KEY", FIXTURE_ROUTING_KEY)
    config = load_config(EXAMPLE, environ={"INCIDENTD_SERVER_MAX_BODY_BYTES": str(MAX_BODY)},
                         overrides=Overrides(database_url=database_url))
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(reset(database_url))
        components = loop.run_until_complete(daemon_app.start(config))
        try:
            client = loop.run_until_complete(_client(components))
            try:
                yield Daemon(components, client, loop)
            finally:
                loop.run_until_complete(client.close())
        finally:
            loop.run_until_complete(daemon_app.stop(components))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# ---------------------------------------------------------------------------
# The property every request must satisfy
# ---------------------------------------------------------------------------

def check_answer(daemon: Daemon, kind: str, body: bytes) -> None:
    route = ROUTES[kind]
    status, answer, before, after = daemon.run(daemon.post(route, body))
    events = None if len(body) > route.limit or _has_nul(body) else parse_or_reject(kind, body)

    # The status: what the parser said, or 413; never a 500.
    assert status in {route.ok, 400, 413}, (status, answer)
    if len(body) > route.limit:
        assert status == 413, (status, answer)
    elif events is None:
        assert status == 400, (status, answer)
    elif kind.startswith("pagerduty"):
        key = json.loads(body)["routing_key"]
        assert status == (route.ok if key == FIXTURE_ROUTING_KEY else 400), (status, answer)
    else:
        assert status == route.ok, (status, answer)

    # The answer's shape.
    if status != route.ok:
        if route.pd_shape:
            assert isinstance(answer["status"], str) and isinstance(answer["message"], str)
            assert all(isinstance(e, str) for e in answer["errors"])
        else:
            assert isinstance(answer["error"]["code"], str), answer
            assert isinstance(answer["error"]["message"], str), answer
        # Refused: nothing written, nothing updated.
        assert after == before, (status, answer, before, after)
        return

    assert events is not None
    assert answer["status"] == "success", answer
    # Nothing is ever deleted.
    assert after.alerts >= before.alerts and after.incidents >= before.incidents
    assert after.timeline >= before.timeline and after.changes >= before.changes
    if kind == "pagerduty_change":
        assert after._replace(changes=before.changes) == before
        assert after.changes == before.changes + 1
        return
    assert after.changes == before.changes
    firing = sum(1 for e in events if isinstance(e, Alert) and e.status is AlertStatus.FIRING)
    assert after.alerts - before.alerts <= firing, (events, before, after)
    assert after.occurrences - before.occurrences == firing, (events, before, after)
    if kind == "pagerduty":
        sent = json.loads(body).get("dedup_key")
        assert answer["dedup_key"] == (sent or answer["dedup_key"])
        if isinstance(events[0], Acknowledgement):  # acknowledges; never opens anything
            assert (after.alerts, after.incidents) == (before.alerts, before.incidents)
    else:
        assert answer["alerts"] == len(events)
        assert answer["fingerprints"] == [e.fingerprint for e in events]


def _oversized(kind: str) -> st.SearchStrategy[bytes]:
    """A valid body padded with JSON whitespace to just under, at, or just over the limit."""
    limit = ROUTES[kind].limit

    def pad(seed: Any, extra: int) -> bytes:
        body = encode(seed)
        return body + b" " * (limit - len(body) + extra)

    return st.builds(pad, st.sampled_from(SEEDS[kind]), st.sampled_from([-1, 0, 1, 1000]))


def http_bodies(kind: str) -> st.SearchStrategy[bytes]:
    keep = ("routing_key",) if kind.startswith("pagerduty") else ()
    mutated = mutated_bodies(kind, keep=keep)
    return st.one_of(
        mutated, mutated, mutated, mutated,  # weighted: most requests are near-valid
        mutated_bodies(kind),  # PagerDuty: the routing key too
        json_bodies(json_values),
        byte_bodies(kind),
        _oversized(kind),
    )


# Examples per test; no example database, so nothing is written into the repository.
HTTP = settings(max_examples=75, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("kind", list(ROUTES))
def test_receiver_never_500s_and_refusals_write_nothing(
    kind: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_daemon(database_url, monkeypatch) as daemon:

        @HTTP
        @given(body=http_bodies(kind))
        def one_request(body: bytes) -> None:
            check_answer(daemon, kind, body)

        one_request()


# ---------------------------------------------------------------------------
# One bad alert among good ones: 400, and none of them stored
# ---------------------------------------------------------------------------

_label_names = st.sampled_from(["alertname", "instance", "job", "severity", "team", "zone"])
_label_values = st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=12)
_labels = st.dictionaries(_label_names, _label_values, min_size=1, max_size=4)
_fingerprints = st.text("0123456789abcdef", min_size=1, max_size=16)


def _am_alert(labels: dict[str, str], fingerprint: str, status: str) -> dict[str, Any]:
    return {"status": status, "labels": labels, "annotations": {"summary": "s"},
            "startsAt": "2026-11-26T18:54:31.275Z", "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": fingerprint}


def _generic_alert(labels: dict[str, str], fingerprint: str, status: str) -> dict[str, Any]:
    return {"summary": f"summary of {fingerprint}", "status": status, "labels": labels,
            "fingerprint": fingerprint}


_LONG = "x" * 4097
# Ways to make one alert invalid, each certain to be refused, by the schema or the limits.
_BREAK_AM: list[Callable[[dict[str, Any]], Any]] = [
    lambda a: {**a, "status": "burning"},
    lambda a: {**a, "labels": 5},
    lambda a: {**a, "labels": {"alertname": 1}},
    lambda a: {**a, "startsAt": "yesterday"},
    lambda a: {k: v for k, v in a.items() if k != "startsAt"},
    lambda a: {k: v for k, v in a.items() if k != "labels"},
    lambda a: 42,
    lambda a: None,
    lambda a: {**a, "labels": {f"l{i}": "v" for i in range(65)}},
    lambda a: {**a, "labels": {"alertname": _LONG}},
    lambda a: {**a, "labels": {"n" * 257: "v"}},
]
_BREAK_GENERIC: list[Callable[[dict[str, Any]], Any]] = [
    lambda a: {**a, "status": "burning"},
    lambda a: {**a, "severity": "urgent"},
    lambda a: {**a, "unknown_field": 1},
    lambda a: {k: v for k, v in a.items() if k != "summary"},
    lambda a: {**a, "summary": ""},
    lambda a: {**a, "fingerprint": "f" * 256},
    lambda a: {**a, "labels": [1]},
    lambda a: {**a, "links": [{"href": ""}]},
    lambda a: {**a, "starts_at": "yesterday"},
    lambda a: 42,
    lambda a: {**a, "labels": {f"l{i}": "v" for i in range(65)}},
    lambda a: {**a, "labels": {"alertname": _LONG}},
]


@st.composite
def mixed_bodies(draw: st.DrawFn, kind: str) -> tuple[bytes, int]:
    """A list of good alerts with one bad one at a position after the first."""
    make = _generic_alert if kind == "generic" else _am_alert
    breakers = _BREAK_GENERIC if kind == "generic" else _BREAK_AM
    good = draw(st.lists(
        st.builds(make, _labels, _fingerprints, st.sampled_from(["firing", "resolved"])),
        min_size=1, max_size=5))
    bad_at = draw(st.integers(1, len(good)))
    victim = draw(st.builds(make, _labels, _fingerprints, st.just("firing")))
    alerts = [*good[:bad_at], draw(st.sampled_from(breakers))(victim), *good[bad_at:]]
    if kind == "generic":
        return encode(alerts), bad_at
    seed = SEEDS[kind][0]
    return encode({**seed, "alerts": alerts}), bad_at


@pytest.mark.parametrize("kind", ["alertmanager", "grafana", "generic"])
def test_one_bad_alert_among_good_ones_stores_none(
    kind: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = ROUTES[kind]
    with running_daemon(database_url, monkeypatch) as daemon:
        # Some alerts already firing, so a partial write could also be an update.
        for seed in SEEDS[kind]:
            status, answer, _, _ = daemon.run(daemon.post(route, encode(seed)))
            assert status == route.ok, answer

        @HTTP
        @given(case=mixed_bodies(kind))
        def one_request(case: tuple[bytes, int]) -> None:
            body, bad_at = case
            status, answer, before, after = daemon.run(daemon.post(route, body))
            assert status == 400, answer
            assert after == before
            first = answer["error"]["errors"][0]["field"]
            assert f"[{bad_at}]" in first, (bad_at, answer)
            # The same alerts without the bad one are taken.
            good = json.loads(body)
            items = good if kind == "generic" else good["alerts"]
            del items[bad_at]
            status, answer, before, after = daemon.run(daemon.post(route, encode(good)))
            assert status == route.ok, answer
            assert answer["alerts"] == len(items)

        one_request()


# ---------------------------------------------------------------------------
# What the fuzzing once found (each was a 500): now a clear answer, nothing half-stored
# ---------------------------------------------------------------------------

_AM_NAIVE = {**SEEDS["alertmanager"][0], "alerts": [
    {**SEEDS["alertmanager"][0]["alerts"][0], "startsAt": "2026-11-26T18:54:31"}]}
_AM_LONG_FP = {**SEEDS["alertmanager"][0], "alerts": [
    {**SEEDS["alertmanager"][0]["alerts"][0], "fingerprint": "f" * 256}]}
_PD_TRIGGER = {"routing_key": FIXTURE_ROUTING_KEY, "event_action": "trigger",
               "payload": {"summary": "s", "source": "s", "severity": "info"}}

FOUND = [
    # a time without an offset is taken as UTC
    pytest.param("generic", {"summary": "x", "starts_at": "2026-11-26T12:00:00"}, True,
                 id="generic-naive-starts_at"),
    pytest.param("alertmanager", _AM_NAIVE, True, id="alertmanager-naive-startsAt"),
    pytest.param("pagerduty", {**_PD_TRIGGER, "payload": {
        **_PD_TRIGGER["payload"], "timestamp": "2026-11-26T12:00:00"}}, True,
        id="pagerduty-naive-timestamp"),
    pytest.param("pagerduty_change", {"routing_key": FIXTURE_ROUTING_KEY, "payload": {
        "summary": "deploy", "timestamp": "2026-11-26T12:00:00"}}, True,
        id="pagerduty-change-naive-timestamp"),
    # what cannot be stored is refused with 400
    pytest.param("generic", {"summary": "x", "starts_at": "0001-01-01T00:00:00+01:00"}, False,
                 id="generic-starts_at-out-of-range-in-utc"),
    pytest.param("pagerduty", {**_PD_TRIGGER, "payload": {
        **_PD_TRIGGER["payload"], "custom_details": 2**64}}, False,
        id="pagerduty-custom_details-int-over-64-bits"),
    pytest.param("generic", {"summary": "x\x00"}, False, id="generic-NUL-in-summary"),
    pytest.param("pagerduty", {"routing_key": FIXTURE_ROUTING_KEY, "event_action": "acknowledge",
                               "dedup_key": "a\x00"}, False,
                 id="pagerduty-acknowledge-NUL-in-dedup_key"),
    pytest.param("alertmanager", _AM_LONG_FP, False, id="alertmanager-fingerprint-256"),
]


@pytest.mark.parametrize(("kind", "payload", "accepted"), FOUND)
def test_once_found_inputs_get_a_clear_answer(
    kind: str, payload: Any, accepted: bool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_daemon(database_url, monkeypatch) as daemon:
        route = ROUTES[kind]
        status, answer, before, after = daemon.run(daemon.post(route, encode(payload)))
        assert status == (route.ok if accepted else 400), answer
        if not accepted:
            assert after == before


def _has_nul(body: bytes) -> bool:
    try:
        reject_nul(body)
    except InvalidInput:
        return True
    return False
