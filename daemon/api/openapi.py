"""The OpenAPI 3.1 document of the HTTP API, served at `/api/v1/openapi.json`.

Request schemas come from the pydantic models that validate the bodies, so
the document cannot drift from what the daemon accepts. Response schemas are
written here, next to nothing else, and `tests/e2e/test_schemathesis.py`
checks every answer of a real daemon against them.

Every operation documents its 2xx answer, its 4xx/5xx answers in the `Error`
shape (PagerDuty's endpoints answer errors in PagerDuty's own shape; the
signed-link pages in HTML), and who may call it: `adminToken` or
`readOnlyToken` (bearer) for the API (a read-only token reads only: 403 on
any change), per-integration bearer or basic credentials or an HMAC signature
for alert ingest, Slack's and incidentd's own signatures for chat actions.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from daemon import __version__
from daemon.api.changes import EditBody, NewChangeBody
from daemon.api.incidents import ActionBody, EscalateBody, PatchBody
from daemon.api.problems import NewProblemBody, PatchProblemBody
from daemon.api.runbooks import OPENAPI_MODELS, openapi_paths
from daemon.itsm.cmdb_documents import CIDocument, CIModel
from daemon.itsm.inbound_webhook import ActionRequest
from daemon.receivers.alertmanager import WebhookMessage
from daemon.receivers.generic import GenericBody
from daemon.receivers.grafana import GrafanaMessage
from daemon.receivers.pagerduty import PDChangeEvent, PDEvent

_REF = "#/components/schemas/{model}"
_MODELS: dict[str, type[BaseModel]] = {
    "GenericAlerts": GenericBody,
    "AlertmanagerWebhook": WebhookMessage,
    "GrafanaWebhook": GrafanaMessage,
    "PagerDutyEvent": PDEvent,
    "PagerDutyChangeEvent": PDChangeEvent,
    "ActionBody": ActionBody,
    "EscalateBody": EscalateBody,
    "PriorityBody": PatchBody,
    "NewChange": NewChangeBody,
    "ChangeEdit": EditBody,
    "NewProblem": NewProblemBody,
    "ProblemEdit": PatchProblemBody,
    "InboundAction": ActionRequest,
    **OPENAPI_MODELS,
    "CI": CIModel,
    "CmdbDocument": CIDocument,
}

JSON = "application/json"
_PATH_PARAM = re.compile(r"{(\w+)}")
_WRITES = ("post", "put", "patch", "delete")

# -- schema helpers -------------------------------------------------------------------


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF.format(model=name)}


def _obj(props: dict[str, Any], *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object whose every property but `optional` is always present."""
    return {"type": "object", "properties": props,
            "required": [p for p in props if p not in optional]}


def _null(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_STR = {"type": "string"}
_INT = {"type": "integer"}
_NUM = {"type": "number"}
_BOOL = {"type": "boolean"}
_TIME = {"type": "string", "format": "date-time"}
_OPT_TIME = _null(_TIME)
_OPT_STR = _null(_STR)
_OPT_INT = _null(_INT)
_OPT_NUM = _null(_NUM)
_STRS = {"type": "array", "items": _STR}
_INTS = {"type": "array", "items": _INT}
_ANY_OBJ = {"type": "object"}
_STR_MAP = {"type": "object", "additionalProperties": _STR}
_LINKS = {"type": "array", "items": _obj({"href": _STR, "text": _STR})}


def _enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def _page_of(item: str) -> dict[str, Any]:
    return _obj({"items": {"type": "array", "items": _ref(item)}, "next_cursor": _OPT_STR})


_SEVERITY = _enum("critical", "error", "warning", "info")
_PRIORITY = _null(_enum("P1", "P2", "P3", "P4", "P5"))


def _response_schemas() -> dict[str, Any]:
    """What the daemon answers, as `daemon.api.*` serializes it."""
    alert = _obj({
        "id": _INT, "fingerprint": _STR, "source": _STR, "status": _enum("firing", "resolved"),
        "severity": _SEVERITY, "summary": _STR, "labels": _STR_MAP, "annotations": _STR_MAP,
        "starts_at": _OPT_TIME, "ends_at": _OPT_TIME, "occurrences": _INT,
        "last_seen": _OPT_TIME, "ci": _OPT_STR, "role": _STR, "flapping": _BOOL,
        "links": _LINKS, "details": _ANY_OBJ})
    listed_alert = {**alert, "properties": {
        **{k: v for k, v in alert["properties"].items() if k != "role"},
        "group_key": _STR, "incident_ids": _INTS}}
    listed_alert["required"] = list(listed_alert["properties"])
    sla_clock = _obj({
        "clock": _STR, "policy": _STR, "priority": _STR, "calendar": _OPT_STR,
        "target_seconds": _NUM, "started_at": _OPT_TIME, "due_at": _OPT_TIME,
        "elapsed_seconds": _NUM, "remaining_seconds": _NUM, "paused": _BOOL, "state": _STR,
        "breached_at": _OPT_TIME, "stopped_at": _OPT_TIME})
    escalation = _null(_obj({"policy": _STR, "level": _INT, "cycle": _INT, "state": _STR,
                             "next_at": _OPT_TIME, "targets": _STRS}))
    linked_problem = _obj({"id": _INT, "key": _STR, "title": _STR, "status": _STR,
                           "known_error": _BOOL, "workaround": _OPT_STR})
    suspect = _obj({"id": _INT, "summary": _STR, "type": _STR, "state": _STR, "cis": _STRS,
                    "occurred_at": _OPT_TIME, "planned_start": _OPT_TIME,
                    "planned_end": _OPT_TIME, "outcome": _OPT_STR})
    incident = _obj({
        "id": _INT, "key": _STR, "title": _STR,
        "status": _enum("triggered", "acknowledged", "on_hold", "resolved", "closed"),
        "severity": _SEVERITY, "created_at": _TIME, "acknowledged_at": _OPT_TIME,
        "resolved_at": _OPT_TIME, "group_key": _STR, "priority": _PRIORITY,
        "impact": _OPT_INT, "urgency": _OPT_INT, "priority_manual": _BOOL,
        "closed_at": _OPT_TIME, "root_cause_ci": _OPT_STR, "impacted_cis": _STRS,
        "impacted_services": _STRS, "merged_into": _OPT_STR, "alert_name": _OPT_STR,
        "alerts": {"type": "array", "items": _ref("Alert")},
        "sla": {"type": "array", "items": sla_clock}, "escalation": escalation,
        "problems": {"type": "array", "items": linked_problem},
        "suspected_changes": {"type": "array", "items": suspect},
        "external_tickets": {"type": "array", "items": _obj({
            "connector": _STR, "id": _STR, "key": _OPT_STR, "url": _OPT_STR})}})
    timeline = _obj({"at": _TIME, "actor": _STR, "kind": _STR, "detail": _ANY_OBJ})
    detail = {**incident, "properties": {
        **incident["properties"], "timeline": {"type": "array", "items": timeline},
        "already_acknowledged": _obj({"by": _STR, "at": _OPT_TIME})}}
    detail["required"] = [*incident["required"], "timeline"]
    change = _obj({
        "id": _INT, "integration": _STR, "type": _STR, "state": _STR, "summary": _STR,
        "description": _OPT_STR, "source": _OPT_STR, "cis": _STRS, "occurred_at": _OPT_TIME,
        "planned_start": _OPT_TIME, "planned_end": _OPT_TIME, "approver": _OPT_STR,
        "outcome": _OPT_STR, "received_at": _OPT_TIME, "updated_at": _OPT_TIME,
        "details": _ANY_OBJ, "links": {"type": "array", "items": _ANY_OBJ}})
    change_detail = {**change, "properties": {
        **change["properties"],
        "alerts": {"type": "array", "items": _obj({
            "id": _INT, "fingerprint": _STR, "source": _STR, "status": _STR, "severity": _STR,
            "summary": _STR, "ci": _OPT_STR, "first_seen": _OPT_TIME, "linked_at": _OPT_TIME,
            "incident_ids": _INTS})},
        "incidents": {"type": "array", "items": _obj({
            "id": _INT, "key": _STR, "title": _STR, "status": _STR, "priority": _PRIORITY,
            "created_at": _OPT_TIME, "linked_at": _OPT_TIME})},
        "warnings": {"type": "array", "items": _obj({"field": _STR, "reason": _STR})}}}
    change_detail["required"] = [*change["required"], "alerts", "incidents"]
    problem = _obj({
        "id": _INT, "key": _STR, "title": _STR,
        "status": _enum("open", "known_error", "resolved", "closed"), "known_error": _BOOL,
        "root_cause_ci": _OPT_STR, "alert_name": _OPT_STR, "description": _OPT_STR,
        "workaround": _OPT_STR, "created_by": _STR, "created_at": _TIME,
        "updated_at": _OPT_TIME, "resolved_at": _OPT_TIME, "incident_count": _INT})
    problem_detail = {**problem, "properties": {
        **problem["properties"], "incidents": {"type": "array", "items": _obj({
            "id": _INT, "key": _STR, "title": _STR, "status": _STR, "created_at": _OPT_TIME,
            "linked_at": _OPT_TIME})}}}
    problem_detail["required"] = [*problem["required"], "incidents"]
    notification = _obj({
        "id": _INT, "event_id": _STR, "event_type": _STR, "incident_id": _OPT_INT,
        "incident": _OPT_STR, "target": _STR, "state": _enum("pending", "delivered", "dead"),
        "attempts": _INT, "next_attempt_at": _OPT_TIME, "last_status": _OPT_INT,
        "last_error": _OPT_STR, "created_at": _TIME, "updated_at": _OPT_TIME,
        "delivered_at": _OPT_TIME, "payload": {}}, optional=("payload",))
    run = _obj({
        "id": _INT, "runbook": _STR, "incident_id": _OPT_INT, "alert_id": _OPT_INT,
        "ci": _OPT_STR, "status": _STR, "dry_run": _BOOL, "trigger": _STR, "actor": _OPT_STR,
        "approver": _OPT_STR, "params": {}, "steps": {}, "error": _OPT_STR,
        "created_at": _TIME, "updated_at": _OPT_TIME, "started_at": _OPT_TIME,
        "finished_at": _OPT_TIME, "approval_expires_at": _OPT_TIME, "context": {}},
        optional=("context",))
    runbook = _obj({
        "name": _STR, "description": _OPT_STR, "match": _ANY_OBJ, "approval": _STR,
        "dry_run": _BOOL, "rate_limit": _null(_ANY_OBJ), "circuit_breaker_failures": _OPT_INT,
        "timeout_seconds": _NUM, "params": _STRS,
        "steps": {"type": "array", "items": _obj({"type": _STR, "name": _OPT_STR})},
        "state": _obj({"disabled": _BOOL, "reason": _OPT_STR, "consecutive_failures": _INT,
                       "updated_at": _OPT_TIME})})
    ci = _obj({"id": _STR, "name": _OPT_STR, "type": _STR, "service": _OPT_STR,
               "owner_group": _OPT_STR, "criticality": _OPT_INT, "environment": _OPT_STR,
               "attributes": _ANY_OBJ, "depends_on": _STRS})
    ci_detail = {**ci, "properties": {**ci["properties"], "dependents": _STRS}}
    ci_detail["required"] = [*ci["required"], "dependents"]
    counts = {k: _INT for k in ("added", "updated", "removed", "cis", "edges", "services")}
    stats = _obj({"count": _INT, "mean": _OPT_NUM, "p50": _OPT_NUM, "p90": _OPT_NUM},
                 optional=("p50", "p90"))
    return {
        "Error": _obj({"error": _obj({
            "code": _STR, "message": _STR,
            "errors": {"type": "array", "items": _obj({"field": _STR, "reason": _STR})}},
            optional=("errors",))}),
        "PagerDutyError": _obj({"status": _STR, "message": _STR, "errors": _STRS}),
        "Ingested": _obj({"status": _enum("success"), "alerts": _INT, "fingerprints": _STRS}),
        "PagerDutyAccepted": _obj({"status": _enum("success"), "message": _STR,
                                   "dedup_key": _STR}, optional=("dedup_key",)),
        "Alert": alert,
        "AlertListItem": listed_alert,
        "AlertPage": _page_of("AlertListItem"),
        "Incident": incident,
        "IncidentDetail": detail,
        "IncidentPage": _page_of("Incident"),
        "Change": change,
        "ChangeDetail": change_detail,
        "ChangePage": _page_of("Change"),
        "Problem": problem,
        "ProblemDetail": problem_detail,
        "ProblemPage": _page_of("Problem"),
        "Notification": notification,
        "NotificationPage": _page_of("Notification"),
        "RunbookRun": run,
        "RunbookRunPage": _page_of("RunbookRun"),
        "Runbook": runbook,
        "RunbookCatalog": _obj({
            "items": {"type": "array", "items": _ref("Runbook")}, "disabled_all": _BOOL,
            "disabled_all_reason": _OPT_STR, "dry_run_all": _BOOL, "files": _STRS}),
        "KillSwitch": _obj({"disabled_all": _BOOL, "disabled_all_reason": _OPT_STR,
                            "updated_at": _TIME}),
        "CIRecord": ci,
        "CIDetail": ci_detail,
        "CIPage": _page_of("CIRecord"),
        "CmdbImported": _obj({"mode": _enum("merge", "replace"), **counts}),
        "CmdbReloaded": _obj({"files": _STRS, **counts}),
        "InboundActionDone": _obj({"incident": _STR, "status": _STR,
                                   "already_acknowledged": _null(_obj({"by": _STR,
                                                                       "at": _OPT_TIME}))}),
        "Report": _obj({
            "since": _TIME, "until": _TIME,
            "filters": _obj({"service": _OPT_STR, "priority": _null(_STRS)}),
            "incidents": _obj({"total": _INT,
                               "by_status": {"type": "object", "additionalProperties": _INT},
                               "by_priority": {"type": "object",
                                               "additionalProperties": _INT}}),
            "mtta_seconds": stats, "mttr_seconds": stats, "sla": _ANY_OBJ,
            "reopen_rate": _OPT_NUM, "alerts": _ANY_OBJ, "changes": _ANY_OBJ,
            "automation": _ANY_OBJ}),
        "Health": _obj({"status": _STR}),
        "Readiness": _obj({"status": _enum("ready", "unavailable"), "problems": _STRS},
                          optional=("problems",)),
    }


# -- operation helpers ----------------------------------------------------------------

_ERROR_TEXT = {
    "400": "Invalid input: `error.errors` names each field and the reason",
    "401": "Missing or wrong credentials",
    "403": "The credentials may not do this (a read-only token asked for a change)",
    "404": "No such record",
    "405": "Method not allowed",
    "408": "The request did not arrive in time (server.request_read_timeout_seconds)",
    "409": "Not possible in the record's present state",
    "413": "Body over the size limit",
    "415": "Content-Type not accepted: the message says which is expected",
    "429": "Overloaded: retry after Retry-After seconds",
    "500": "Internal error (details in the daemon's log, never in the answer)",
    "503": "Overloaded or the database is unreachable: retry after Retry-After seconds",
}
_ERROR_SCHEMA = {"$ref": "#/components/schemas/Error"}


def _error(code: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": _ERROR_TEXT[code],
            "content": {JSON: {"schema": schema or _ERROR_SCHEMA}}}


def _ok(description: str, schema: str | None, media: str = JSON) -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {media: {"schema": _ref(schema)}}}


def _body(model: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": _ref(model)}}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or _STR}


def _paging(filters: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    return [
        _query("limit", "page size (default 50)", {"type": "integer", "minimum": 1,
                                                    "maximum": 500}),
        _query("cursor", "`next_cursor` of the previous page"),
        *(filters or []),
    ]


_Security = list[dict[str, list[str]]]
_ADMIN: _Security = [{"adminToken": []}]
_READER: _Security = [{"adminToken": []}, {"readOnlyToken": []}]
_INGEST: _Security = [{"integrationToken": []}, {"integrationBasic": []},
                      {"integrationSignature": []}]


def _op(summary: str, ok: str, schema: str | None, *, codes: tuple[str, ...] = (),
        body: dict[str, Any] | None = None, params: list[dict[str, Any]] | None = None,
        security: list[dict[str, list[str]]] | None = None, media: str = JSON
        ) -> dict[str, Any]:
    spec: dict[str, Any] = {"summary": summary, "responses": {
        ok: _ok(summary if schema is None else "OK", schema, media),
        **{c: _error(c) for c in codes}}}
    if body is not None:
        spec["requestBody"] = body
    if params:
        spec["parameters"] = params
    if security is not None:
        spec["security"] = security
    return spec


def _ingest(summary: str, model: str, ok: str) -> dict[str, Any]:
    return _op(summary, ok, "Ingested", body=_body(model), security=_INGEST,
               codes=("400", "401", "408", "413", "415", "503"))


def _pagerduty(summary: str, model: str) -> dict[str, Any]:
    """PagerDuty's own answers; `routing_key` in the body picks the integration (no header
    credentials, as with PagerDuty: an unknown key is a 400)."""
    errors = {c: _error(c, _ref("PagerDutyError"))
              for c in ("400", "408", "413", "415", "429")}
    return {"summary": summary, "security": [], "requestBody": _body(model),
            "responses": {"202": _ok("Accepted", "PagerDutyAccepted"), **errors}}


def _by_name() -> dict[str, Any]:
    """`POST /api/v1/alerts/{integration}`: the answers of the integration's type."""
    either_error = {"anyOf": [_ERROR_SCHEMA, _ref("PagerDutyError")]}
    return {
        "summary": "Alerts for the integration of this name, in its type's format "
                   "(alertmanager and grafana: 200; generic: 202; pagerduty: PagerDuty's "
                   "answers)",
        "security": [*_INGEST, {}],
        "requestBody": {"required": True, "content": {JSON: {"schema": {}}}},
        "responses": {
            "200": _ok("Committed", "Ingested"),
            "202": {"description": "Committed", "content": {JSON: {"schema": {
                "anyOf": [_ref("Ingested"), _ref("PagerDutyAccepted")]}}}},
            **{c: _error(c, either_error) for c in ("400", "408", "413", "415")},
            "401": _error("401"), "404": _error("404"),
            "429": _error("429", _ref("PagerDutyError")), "503": _error("503")}}


def _incident_action(summary: str, body: str = "ActionBody") -> dict[str, Any]:
    return _op(summary, "200", "IncidentDetail", body=_body(body, required=False),
               codes=("400", "404", "408", "409", "413", "415"))


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": _STR}}}


def _link_page(summary: str) -> dict[str, Any]:
    return {"summary": summary, "security": [], "responses": {
        "200": _html("The page"), "403": _html("Forged, garbled, expired or used link"),
        "404": _html("The incident or run is gone"), "409": _html("Not possible now"),
        "500": _html("Internal error"), "503": _html("Database unavailable")}}


# -- the paths ------------------------------------------------------------------------


def _paths() -> dict[str, Any]:
    body_codes = ("400", "408", "413", "415")
    return {
        "/healthz": {"get": _op("Alive", "200", "Health", security=[])},
        "/readyz": {"get": {**_op("Ready: database reachable, schema current, not draining",
                                  "200", "Readiness", security=[]),
                            "responses": {"200": _ok("Ready", "Readiness"),
                                          "503": _ok("Not ready: `problems` says why",
                                                     "Readiness")}}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics (a token only with api.protect_metrics)",
            "security": [{}, *_READER],
            "responses": {"200": {"description": "Prometheus text format", "content": {
                "text/plain": {"schema": _STR}}}, "401": _error("401")}}},
        "/api/v1/openapi.json": {"get": {
            "summary": "This document", "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {
                JSON: {"schema": _ANY_OBJ}}}}}},
        "/api/v1/alerts": {
            "post": _ingest("Send alerts in incidentd's own format (one or a list)",
                            "GenericAlerts", "202"),
            "get": _op("List alerts, newest first", "200", "AlertPage", codes=("400",),
                       params=_paging([_query("status", "firing or resolved",
                                              _enum("firing", "resolved"))])),
        },
        "/api/v1/alerts/alertmanager": {"post": _ingest(
            "Alertmanager webhook (version 4), for the integration named `alertmanager`",
            "AlertmanagerWebhook", "200")},
        "/api/v1/alerts/grafana": {"post": _ingest(
            "Grafana webhook contact point, for the integration named `grafana`",
            "GrafanaWebhook", "200")},
        "/api/v1/alerts/{integration}": {
            "post": _by_name(),
            "parameters": [{"name": "integration", "in": "path", "required": True,
                            "schema": _STR, "description": "the integration's name"}]},
        "/v2/enqueue": {"post": _pagerduty("PagerDuty Events API v2", "PagerDutyEvent")},
        "/v2/change/enqueue": {"post": _pagerduty("PagerDuty change events",
                                                  "PagerDutyChangeEvent")},
        "/api/v1/incidents": {"get": _op(
            "List incidents, newest first", "200", "IncidentPage", codes=("400",),
            params=_paging([_query("status", "comma list of statuses; `open` means "
                                             "triggered and acknowledged")]))},
        "/api/v1/incidents/{id}": {
            "get": _op("One incident with alerts, timeline, SLA clocks, escalation, problems "
                       "and suspected changes", "200", "IncidentDetail", codes=("404",)),
            "patch": _op("Set the priority by hand (with a reason)", "200", "IncidentDetail",
                         body=_body("PriorityBody"), codes=(*body_codes, "404", "409")),
        },
        **{f"/api/v1/incidents/{{id}}/{action}": {"post": _incident_action(summary)}
           for action, summary in (
               ("acknowledge", "Acknowledge an incident"),
               ("hold", "Put an incident on hold (SLA clocks pause)"),
               ("resume", "Resume an incident on hold"),
               ("resolve", "Resolve an incident"),
               ("close", "Close a resolved incident"),
               ("reopen", "Reopen a resolved incident"))},
        "/api/v1/incidents/{id}/escalate": {"post": _incident_action(
            "Notify the next (or a given) escalation level", "EscalateBody")},
        "/api/v1/changes": {
            "get": _op("List change records, newest first", "200", "ChangePage",
                       codes=("400",), params=_paging([_query("state", "comma list")])),
            "post": _op("Record a change", "201", "ChangeDetail", body=_body("NewChange"),
                        codes=(*body_codes, "409")),
        },
        "/api/v1/changes/{id}": {
            "get": _op("One change, with the alerts its window held back and the incidents "
                       "it is suspected in", "200", "ChangeDetail", codes=("404",)),
            "patch": _op("Move or edit a change", "200", "ChangeDetail",
                         body=_body("ChangeEdit"), codes=(*body_codes, "404", "409")),
        },
        "/api/v1/problems": {
            "get": _op("List problems, newest first", "200", "ProblemPage", codes=("400",),
                       params=_paging([_query("status", "comma list")])),
            "post": _op("Open a problem by hand", "201", "ProblemDetail",
                        body=_body("NewProblem"), codes=(*body_codes, "409")),
        },
        "/api/v1/problems/{id}": {
            "get": _op("One problem with its incidents", "200", "ProblemDetail",
                       codes=("404",)),
            "patch": _op("Edit a problem, mark it a known error, resolve it", "200",
                         "ProblemDetail", body=_body("ProblemEdit"),
                         codes=(*body_codes, "404", "409")),
        },
        "/api/v1/reports/summary": {"get": _op(
            "Incident counts, MTTA, MTTR, SLA compliance, reopen rate, noise reduction and "
            "change success rate", "200", "Report", codes=("400",), params=[
                _query("since", "RFC 3339 (default: 7 days before until)"),
                _query("until", "RFC 3339 (default: now)"),
                _query("service", "business service CI id"),
                _query("priority", "P1 or a comma list")])},
        "/api/v1/notifications": {"get": _op(
            "The outbox: deliveries newest first", "200", "NotificationPage", codes=("400",),
            params=_paging([_query("state", "pending, delivered or dead"),
                            _query("incident", "incident id or key"),
                            _query("target", "target name")]))},
        "/api/v1/notifications/{id}": {"get": _op("One delivery, with its payload", "200",
                                                  "Notification", codes=("404",))},
        "/api/v1/notifications/{id}/resend": {"post": _op(
            "Send a dead or delivered notification again", "200", "Notification",
            codes=("404", "409"))},
        "/actions/{token}": {
            "get": _link_page("A signed link's confirmation page (changes nothing)"),
            "post": _link_page("Perform a signed link's action, once"),
        },
        "/api/v1/integrations/slack/actions": {"post": {
            "summary": "Slack interactivity (Acknowledge/Resolve, Approve/Deny buttons), "
                       "signed with X-Slack-Signature",
            "security": [{"slackSignature": []}],
            "requestBody": {"required": True, "content": {
                "application/x-www-form-urlencoded": {"schema": {
                    "type": "object", "required": ["payload"],
                    "properties": {"payload": {"type": "string",
                                               "description": "block_actions JSON"}}}}}},
            "responses": {"200": {"description": "Taken; the message is updated later"},
                          **{c: _error(c) for c in (*body_codes, "401", "503")}}}},
        "/api/v1/webhooks/actions": {"post": _op(
            "Acknowledge or resolve from a bot or tool, signed with X-Incidentd-Signature",
            "200", "InboundActionDone", body=_body("InboundAction"),
            security=[{"incidentdSignature": []}],
            codes=(*body_codes, "401", "404", "409"))},
        **_runbook_paths(),
        "/api/v1/cmdb/cis": {"get": _op(
            "List configuration items in id order", "200", "CIPage", codes=("400",),
            params=_paging([_query("type", "CI type"),
                            _query("service", "business service CI id")]))},
        "/api/v1/cmdb/cis/{id}": {
            "get": _op("One configuration item, with its dependents", "200", "CIDetail",
                       codes=("404",)),
            "put": {**_op("Create or replace a CI", "200", "CIDetail", body=_body("CI"),
                          codes=(*body_codes, "409")),
                    "responses": {"200": _ok("Replaced", "CIDetail"),
                                  "201": _ok("Created", "CIDetail"),
                                  **{c: _error(c) for c in (*body_codes, "409")}}},
            "delete": _op("Delete a CI nothing depends on", "204", None,
                          codes=("404", "409")),
        },
        "/api/v1/cmdb/import": {"post": _op(
            "Import a whole CMDB document (JSON, YAML or CSV by Content-Type)", "200",
            "CmdbImported", codes=(*body_codes, "409"),
            params=[_query("mode", "merge (default) or replace", _enum("merge", "replace"))],
            body={"required": True, "content": {
                JSON: {"schema": _ref("CmdbDocument")},
                "application/yaml": {"schema": _ref("CmdbDocument")},
                "text/csv": {"schema": _STR}}})},
        "/api/v1/cmdb/reload": {"post": _op("Read the configured CMDB files again", "200",
                                            "CmdbReloaded", codes=("400", "409"))},
        **_connector_paths(body_codes),
    }


def _connector_paths(body_codes: tuple[str, ...]) -> dict[str, Any]:
    """ITSM suites post their updates with each connector's own inbound credentials."""
    result = _obj({"action": _STR, "outcome": _enum("applied", "unchanged"), "status": _STR,
                   "reason": _STR}, optional=("status", "reason"))
    done = _obj({"incident": _OPT_STR, "results": {"type": "array", "items": result},
                 "reason": _STR}, optional=("reason",))
    return {"/api/v1/connectors/{name}/updates": {"post": {
        "summary": "An ITSM suite's update to a ticket (ServiceNow business rule, Jira "
                   "webhook, generic JSON): resolve, acknowledge, reopen, note",
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": _STR,
                        "description": "the connector's name"}],
        "security": [{"integrationBasic": []}, {"integrationToken": []},
                     {"integrationSignature": []}],
        "requestBody": {"required": True, "content": {JSON: {"schema": {
            "type": "object", "description": "the suite's own format (see the README)"}}}},
        "responses": {"200": {"description": "What was done",
                              "content": {JSON: {"schema": done}}},
                      **{c: _error(c) for c in (*body_codes, "401", "404")}}}}}


_RUNBOOK_ANSWERS = {
    "/api/v1/runbooks": "RunbookCatalog",
    "/api/v1/runbooks/disable-all": "KillSwitch",
    "/api/v1/runbooks/enable-all": "KillSwitch",
    "/api/v1/runbooks/{name}/enable": "Runbook",
    "/api/v1/runbooks/{name}/run": "RunbookRun",
    "/api/v1/runbook-runs": "RunbookRunPage",
    "/api/v1/runbook-runs/{id}": "RunbookRun",
    "/api/v1/runbook-runs/{id}/approve": "RunbookRun",
    "/api/v1/runbook-runs/{id}/deny": "RunbookRun",
}


def _runbook_paths() -> dict[str, Any]:
    """`daemon.api.runbooks`' own paths, with their answers and parameters filled in."""
    paths = openapi_paths(_error("400"))
    for path, ops in paths.items():
        for method, spec in ops.items():
            spec["security"] = _ADMIN if method in _WRITES else _READER
            codes = [c for c in spec["responses"] if c.startswith(("4", "5"))]
            ok = next(c for c in spec["responses"] if c.startswith("2"))
            spec["responses"] = {ok: _ok("OK", _RUNBOOK_ANSWERS[path]),
                                 **{c: _error(c) for c in codes}}
            if "requestBody" in spec:
                spec["responses"].update({c: _error(c) for c in ("400", "408", "413", "415")})
            if path == "/api/v1/runbook-runs" and method == "get":
                spec["parameters"] = _paging([
                    _query("status", "comma list of run statuses"),
                    _query("incident", "incident id or key"),
                    _query("runbook", "runbook name")])
    return paths


def _finish(paths: dict[str, Any]) -> dict[str, Any]:
    """What every operation shares: path parameters, who may call it, the errors any
    request can meet."""
    for path, ops in paths.items():
        names = _PATH_PARAM.findall(path)
        declared = {p["name"] for p in ops.get("parameters", [])}
        for method, spec in ops.items():
            if method == "parameters":
                continue
            own = {p["name"] for p in spec.get("parameters", []) if p["in"] == "path"}
            missing = [n for n in names if n not in declared | own]
            if missing:
                spec["parameters"] = [
                    {"name": n, "in": "path", "required": True, "schema": _STR,
                     "description": _PARAM_TEXT.get(n, "")} for n in missing
                ] + spec.get("parameters", [])
            spec.setdefault("security", _ADMIN if method in _WRITES else _READER)
            responses = spec["responses"]
            if spec["security"] in (_ADMIN, _READER):
                responses.setdefault("401", _error("401"))
                if method in _WRITES:
                    responses.setdefault("403", _error("403"))
            if path.startswith(("/api/", "/v2/")):
                responses.setdefault("500", _error("500"))
                responses.setdefault("503", _error("503"))
    return paths


_PARAM_TEXT = {"id": "the record's id (incidents and problems: also the key, INC-000123)",
               "name": "the runbook's name", "token": "the signed token of the link"}


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for name, model in _MODELS.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    schemas.update(_response_schemas())
    return {
        "openapi": "3.1.0",
        "info": {"title": "incidentd", "version": __version__,
                 "description": "Alerts in, correlated incidents, SLA timers, runbooks and "
                                "on-call actions out. Errors are JSON: "
                                "`{\"error\": {\"code\", \"message\", \"errors\"?}}`."},
        "paths": _finish(_paths()),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer",
                               "description": "api.tokens: everything"},
                "readOnlyToken": {"type": "http", "scheme": "bearer",
                                  "description": "api.read_only_tokens: GET only; any change "
                                                 "is 403"},
                "integrationToken": {"type": "http", "scheme": "bearer",
                                     "description": "an integration's bearer_tokens"},
                "integrationBasic": {"type": "http", "scheme": "basic",
                                     "description": "an integration's basic credentials"},
                "integrationSignature": {
                    "type": "apiKey", "in": "header", "name": "X-Incidentd-Signature",
                    "description": "an integration's hmac: HMAC-SHA256 of the body (header "
                                   "name per integration; Grafana's own headers for grafana)"},
                "slackSignature": {"type": "apiKey", "in": "header", "name": "X-Slack-Signature",
                                   "description": "Slack's v0 signature with "
                                                  "X-Slack-Request-Timestamp"},
                "incidentdSignature": {
                    "type": "apiKey", "in": "header", "name": "X-Incidentd-Signature",
                    "description": "v1=HMAC-SHA256 of `<X-Incidentd-Timestamp>.<body>` with "
                                   "notifications.inbound_webhook.secrets"},
            },
        },
    }
