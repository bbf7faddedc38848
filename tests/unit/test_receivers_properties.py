"""Property-based tests: whatever body arrives, every receiver parser either returns
events or raises `InvalidInput`; never any other exception.

Three kinds of input: arbitrary JSON values, structure-aware mutations of valid
bodies (a field replaced by arbitrary JSON, deleted, added, a list item
duplicated), and arbitrary bytes (invalid UTF-8, truncated or corrupted JSON).

The strategies here are shared with `tests/integration/test_receivers_fuzz.py`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.errors import InvalidInput
from daemon.models import Acknowledgement, Alert, AlertEvent, ChangeRecord, Severity
from daemon.receivers import pagerduty
from daemon.receivers.alertmanager import AlertmanagerParser
from daemon.receivers.generic import GenericParser
from daemon.receivers.grafana import GrafanaParser
from daemon.receivers.normalize import Limits
from tests.conftest import FakeClock, fixture_bytes

# ---------------------------------------------------------------------------
# Valid bodies, the seeds of the mutations
# ---------------------------------------------------------------------------

FIXTURE_ROUTING_KEY = "realclientsroutingkey00000000000"

GRAFANA_FIRING: dict[str, Any] = {
    "receiver": "incidentd", "status": "firing", "orgId": 1, "version": "1",
    "groupKey": '{}/{__grafana_receiver__="incidentd"}:{alertname="High memory"}',
    "truncatedAlerts": 0, "title": "[FIRING:1] High memory", "state": "alerting",
    "message": "**Firing**\n\nValue: B=44.2", "externalURL": "https://grafana.example/",
    "groupLabels": {"alertname": "High memory"},
    "commonLabels": {"alertname": "High memory", "team": "blue"},
    "commonAnnotations": {"summary": "High memory on us-1"},
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "High memory", "team": "blue", "zone": "us-1",
                       "severity": "warning"},
            "annotations": {"summary": "High memory on us-1", "runbook_url": "https://rb/1"},
            "startsAt": "2026-11-26T09:51:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://grafana.example/alerting/grafana/1afz/view",
            "fingerprint": "c6eadffa33fcdf37",
            "silenceURL": "https://grafana.example/alerting/silence/new",
            "dashboardURL": "https://grafana.example/d/abcd",
            "panelURL": "https://grafana.example/d/abcd?viewPanel=4",
            "imageURL": "https://grafana.example/img.png",
            "values": {"B": 44.23943737541908, "C": 1, "D": None},
            "valueString": "[ var='B' value=44.2 ]",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "High memory", "team": "blue", "zone": "us-2"},
            "annotations": {},
            "startsAt": "2026-11-26T09:41:03Z",
            "endsAt": "2026-11-26T09:51:03Z",
            "fingerprint": "",
        },
    ],
}

GENERIC_ONE: dict[str, Any] = {
    "summary": "Disk on db-1 is 95% full", "severity": "critical", "status": "firing",
    "fingerprint": "disk-db-1", "labels": {"alertname": "DiskFull", "instance": "db-1"},
    "annotations": {"runbook": "https://runbooks.example/disk"},
    "starts_at": "2026-11-26T11:59:00Z", "generator_url": "https://monitor.example/disk",
    "group": "db", "ci": "db-1",
    "links": [{"href": "https://grafana.example/d/disk", "text": "Dashboard"}],
    "details": {"used_pct": 95.2, "mounts": ["/", "/var"]},
}
GENERIC_MANY: list[dict[str, Any]] = [
    GENERIC_ONE,
    {"summary": "Backup job late", "labels": {"alertname": "BackupLate"}},
    {"status": "resolved", "fingerprint": "disk-db-0", "ends_at": "2026-11-26T11:00:00+01:00"},
]

PD_CHANGE: dict[str, Any] = {
    "routing_key": FIXTURE_ROUTING_KEY,
    "payload": {"summary": "Deployed checkout v1.2.3", "source": "ci.example",
                "timestamp": "2026-11-26T11:30:00.000+0000",
                "custom_details": {"build": 42, "commit": "abc123"}},
    "links": [{"href": "https://ci.example/builds/42", "text": "Build 42"}],
    "images": [{"src": "https://ci.example/badge.png", "alt": "badge"}],
}


def _fixture(name: str) -> Any:
    return json.loads(fixture_bytes(name))


# Per receiver kind: the valid bodies mutations start from.
SEEDS: dict[str, list[Any]] = {
    "alertmanager": [_fixture("prometheus_firing.json"), _fixture("prometheus_resolved.json"),
                     _fixture("amtool_firing.json")],
    "grafana": [GRAFANA_FIRING],
    "generic": [GENERIC_ONE, GENERIC_MANY],
    "pagerduty": [_fixture("pagerduty_v2_trigger.json"), _fixture("pagerduty_v2_resolve.json"),
                  {"routing_key": FIXTURE_ROUTING_KEY, "event_action": "acknowledge",
                   "dedup_key": "1c54a190def197d94dd7af8e8a5610574eb4dd4c3cc9b2"}],
    "pagerduty_change": [PD_CHANGE],
}
KINDS = tuple(SEEDS)

# Field names of the formats, so that arbitrary objects sometimes have the right keys.
KNOWN_KEYS = sorted({
    "version", "status", "alerts", "labels", "annotations", "startsAt", "endsAt", "fingerprint",
    "generatorURL", "groupKey", "truncatedAlerts", "values", "orgId", "summary", "severity",
    "starts_at", "ends_at", "links", "href", "text", "details", "routing_key", "event_action",
    "dedup_key", "payload", "source", "timestamp", "images", "src", "custom_details", "class",
    "client", "client_url", "group", "ci", "alertname",
})

# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

_offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
_datetimes = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59),
                          timezones=st.one_of(st.none(), st.just(UTC), _offsets))
# Timestamps in the spellings senders use, and a few they should not.
timestamps: st.SearchStrategy[Any] = st.one_of(
    _datetimes.map(lambda d: d.isoformat()),
    _datetimes.map(lambda d: d.isoformat().replace("+00:00", "Z")),
    st.sampled_from([
        "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-01:00", "2026-11-26T18:54:31.275Z", "2026-11-26T18:54:31",
        "2026-11-26", "2026-11-26T18:54:31.123456789Z", "yesterday", "", "T", "now",
    ]),
    st.integers(-(2**40), 2**40),
    st.floats(-1e12, 1e12),
)

# Values with a meaning somewhere in the formats, or at a limit.
interesting: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from([
        "firing", "resolved", "trigger", "acknowledge", "resolve", "critical", "error",
        "warning", "info", "page", "4", "1", "", " ", "\x00", "a\x00b", "\u2028", "\U0001f525",
        0, -1, 1, 2**31, 2**63, 2**64, -(2**63) - 1, 10**30, 1e308, -0.0, 0.5, True, False, None,
        [], {},
    ]),
    timestamps,
    # Just over or under the limits: 255/1024/4096 characters, 64 labels.
    st.sampled_from([255, 256, 1024, 1025, 4096, 4097]).map(lambda n: "x" * n),
    st.sampled_from([64, 65]).map(lambda n: {f"l{i}": "v" for i in range(n)}),
)

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(),  # NaN and ±Infinity included
    st.text(), st.text(st.characters()),  # the latter has lone surrogates and NUL
    st.sampled_from(KNOWN_KEYS), interesting,
)
_keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8))

json_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(_keys, children, max_size=6),
    ),
    max_leaves=25,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*prefix, i))
    return out


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


_strings = st.one_of(
    st.text(max_size=20), st.text(st.characters(), max_size=20),
    st.sampled_from(["", " ", "\x00", "a\x00b", "firing", "resolved", "critical", "4"]),
    st.sampled_from([255, 256, 1024, 1025, 4096, 4097]).map(lambda n: "x" * n),
    timestamps.filter(lambda t: isinstance(t, str)),
)
_numbers = st.one_of(st.integers(), st.floats(), st.sampled_from([2**63, 2**64, 10**30, -0.0]))


def _similar(node: Any) -> st.SearchStrategy[Any]:
    """A value of the same JSON type as `node`: the edits a schema is most likely to take."""
    if isinstance(node, str):
        return _strings
    if isinstance(node, bool):
        return st.booleans()
    if isinstance(node, int | float):
        return _numbers
    if isinstance(node, dict):
        return st.dictionaries(_keys, _strings, max_size=5)
    if isinstance(node, list) and node:
        return st.lists(st.sampled_from(node), max_size=len(node) + 2)  # drop, reorder, repeat
    return json_values


@st.composite
def mutations(draw: st.DrawFn, seed: Any, *, keep: tuple[str, ...] = ()) -> Any:
    """`seed` with one to three random edits; top-level keys in `keep` are left alone.

    An edit picks any node of the document and gives it a value of the same type
    (most often), an arbitrary value, deletes it, adds a sibling, or repeats a list item.
    """
    doc = copy.deepcopy(seed)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if not (p and p[0] in keep)]
        path = draw(st.sampled_from(paths))
        node = _at(doc, path)
        op = draw(st.sampled_from(["similar", "similar", "similar", "arbitrary", "delete", "add",
                                   "duplicate"]))
        if op == "similar":
            value = draw(_similar(node))
        else:
            value = draw(st.one_of(interesting, json_values))
        # A copy: a later edit must not change a value the strategies share ([] or {}).
        value = copy.deepcopy(value)
        if op == "add" and isinstance(node, dict):
            node[draw(_keys)] = value
        elif op == "add" and isinstance(node, list):
            node.insert(draw(st.integers(0, len(node))), value)
        elif op == "duplicate" and isinstance(node, list) and node:
            node.append(copy.deepcopy(draw(st.sampled_from(node))))
        elif op == "delete" and path:
            del _at(doc, path[:-1])[path[-1]]
        elif path:
            _at(doc, path[:-1])[path[-1]] = value
        else:
            doc = value
    return doc


def encode(value: Any, ascii_only: bool = True) -> bytes:
    """JSON as a sender might write it: NaN/Infinity and lone surrogates pass through."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def json_bodies(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.builds(encode, values, st.booleans())


def mutated_bodies(kind: str, *, keep: tuple[str, ...] = ()) -> st.SearchStrategy[bytes]:
    return json_bodies(st.one_of(*(mutations(s, keep=keep) for s in SEEDS[kind])))


@st.composite
def corrupted(draw: st.DrawFn, body: bytes) -> bytes:
    """A valid body truncated, or with bytes replaced or inserted (often invalid UTF-8)."""
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["truncate", "insert", "replace"]))
        junk = draw(st.one_of(st.binary(min_size=1, max_size=4),
                              st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00",
                                               b'"', b"{", b"]", b",", b"\\u"])))
        if op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = junk
        else:
            data[i:i + len(junk)] = junk
    return bytes(data)


def byte_bodies(kind: str) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=300),
        st.sampled_from([b"", b"null", b"[]", b"{}", b"\xef\xbb\xbf{}", b"NaN", b"1e999"]),
        st.one_of(*(corrupted(encode(s)) for s in SEEDS[kind])),
    )


def any_bodies(kind: str) -> st.SearchStrategy[bytes]:
    return st.one_of(json_bodies(json_values), mutated_bodies(kind), byte_bodies(kind))


# ---------------------------------------------------------------------------
# The parsers, as the endpoints call them
# ---------------------------------------------------------------------------

CLOCK = FakeClock()
_AM = AlertmanagerParser(integration="alertmanager", default_severity=Severity.WARNING,
                         limits=Limits())
_GRAFANA = GrafanaParser(integration="grafana", default_severity=Severity.WARNING,
                         limits=Limits())
_GENERIC = GenericParser(integration="generic", default_severity=Severity.ERROR,
                         limits=Limits(), clock=CLOCK)


def _pd_event(body: bytes) -> list[AlertEvent]:
    event = pagerduty.parse_event(body)
    dedup_key = event.dedup_key or pagerduty.new_dedup_key()
    return [pagerduty.to_event(event, integration="pagerduty", dedup_key=dedup_key, clock=CLOCK)]


def _pd_change(body: bytes) -> list[ChangeRecord]:
    return [pagerduty.to_change(pagerduty.parse_change(body), integration="pagerduty",
                                clock=CLOCK)]


PARSE: dict[str, Callable[[bytes], list[Any]]] = {
    "alertmanager": _AM.parse,
    "grafana": _GRAFANA.parse,
    "generic": _GENERIC.parse,
    "pagerduty": _pd_event,
    "pagerduty_change": _pd_change,
}


def parse_or_reject(kind: str, body: bytes) -> list[Any] | None:
    """The parsed events, or None when the parser refused the body with `InvalidInput`.

    Any other exception propagates: that is the failure the properties look for.
    """
    try:
        events = PARSE[kind](body)
    except InvalidInput as err:
        assert isinstance(err.message, str) and err.message
        assert all(isinstance(e.get("field"), str) and isinstance(e.get("reason"), str)
                   for e in err.errors), err.errors
        orjson.dumps({"message": err.message, "errors": err.errors})  # the endpoint sends these
        return None
    assert isinstance(events, list)
    wanted = ChangeRecord if kind == "pagerduty_change" else (Alert, Acknowledgement)
    assert all(isinstance(e, wanted) for e in events), events
    if kind != "pagerduty_change":
        assert all(isinstance(e.fingerprint, str) and e.fingerprint for e in events)
        orjson.dumps([e.fingerprint for e in events])  # the endpoint sends these
    return events


def expected_count(kind: str, value: Any) -> int | None:
    """How many events a body that parses must give (None: not known from the value)."""
    if kind in ("alertmanager", "grafana"):
        return len(value["alerts"])
    if kind == "generic":
        return len(value) if isinstance(value, list) else 1
    return 1


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

FAST = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
kinds = pytest.mark.parametrize("kind", KINDS)


@kinds
@FAST
@given(data=st.data())
def test_arbitrary_json_is_parsed_or_refused(kind: str, data: st.DataObject) -> None:
    value = data.draw(json_values, label="value")
    events = parse_or_reject(kind, encode(value, data.draw(st.booleans(), label="ascii")))
    if events is not None:
        assert len(events) == expected_count(kind, value)


@kinds
@FAST
@given(data=st.data())
def test_mutated_valid_bodies_are_parsed_or_refused(kind: str, data: st.DataObject) -> None:
    value = data.draw(st.one_of(*(mutations(s) for s in SEEDS[kind])), label="value")
    events = parse_or_reject(kind, encode(value, data.draw(st.booleans(), label="ascii")))
    if events is not None:
        assert len(events) == expected_count(kind, value)


@kinds
@FAST
@given(data=st.data())
def test_arbitrary_bytes_are_parsed_or_refused(kind: str, data: st.DataObject) -> None:
    parse_or_reject(kind, data.draw(byte_bodies(kind), label="body"))


@kinds
def test_the_seeds_are_valid(kind: str) -> None:
    """Mutations start from bodies the parsers take, so they probe near the valid space."""
    for seed in SEEDS[kind]:
        events = parse_or_reject(kind, encode(seed))
        assert events is not None, seed
        assert len(events) == expected_count(kind, seed)
