"""The OpenAPI 3.1 document of the HTTP API, served at `/api/v1/openapi.json`.

Request schemas come from the pydantic models that validate the bodies, so
the document cannot drift from what the daemon accepts.
"""

from __future__ import annotations

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

_ERROR = {"description": "Error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}


def _body(model: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {
        "$ref": _REF.format(model=model)}}}}


def _ingest(summary: str, model: str, ok: str, security: str) -> dict[str, Any]:
    return {"post": {
        "summary": summary, "requestBody": _body(model), "security": [{security: []}],
        "responses": {ok: {"description": "Committed"}, "400": _ERROR, "401": _ERROR,
                      "413": _ERROR, "503": _ERROR},
    }}


def _read(summary: str) -> dict[str, Any]:
    return {"get": {"summary": summary, "security": [{"apiToken": []}],
                    "responses": {"200": {"description": "OK"}, "400": _ERROR, "401": _ERROR}}}


def _action(summary: str) -> dict[str, Any]:
    return {"post": {
        "summary": summary, "security": [{"apiToken": []}],
        "parameters": [{"name": "id", "in": "path", "required": True,
                        "schema": {"type": "string"}, "description": "id or key (INC-000001)"}],
        "requestBody": {**_body("ActionBody"), "required": False},
        "responses": {"200": {"description": "The incident"}, "404": _ERROR, "409": _ERROR},
    }}


def _write(summary: str, model: str, ok: str) -> dict[str, Any]:
    return {"summary": summary, "security": [{"apiToken": []}], "requestBody": _body(model),
            "responses": {ok: {"description": "The record"}, "400": _ERROR, "404": _ERROR,
                          "409": _ERROR}}


def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for name, model in _MODELS.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    schemas["Error"] = {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string"}, "reason": {"type": "string"}}}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "incidentd", "version": __version__},
        "paths": {
            "/api/v1/alerts": {
                **_ingest("Send alerts in incidentd's own format", "GenericAlerts", "202",
                          "integrationToken"),
                **_read("List alerts, newest first"),
            },
            "/api/v1/alerts/alertmanager": _ingest(
                "Alertmanager webhook (version 4)", "AlertmanagerWebhook", "200",
                "integrationToken"),
            "/api/v1/alerts/grafana": _ingest(
                "Grafana webhook contact point", "GrafanaWebhook", "200", "integrationToken"),
            "/v2/enqueue": _ingest(
                "PagerDuty Events API v2", "PagerDutyEvent", "202", "routingKey"),
            "/v2/change/enqueue": _ingest(
                "PagerDuty change events", "PagerDutyChangeEvent", "202", "routingKey"),
            "/api/v1/incidents": _read("List incidents, newest first"),
            "/api/v1/incidents/{id}": {
                **_read("One incident with alerts, timeline, SLA clocks, escalation, problems "
                        "and suspected changes"),
                "patch": _write("Set the priority by hand (with a reason)", "PriorityBody",
                                "200"),
            },
            **{f"/api/v1/incidents/{{id}}/{action}": _action(summary) for action, summary in (
                ("acknowledge", "Acknowledge an incident"),
                ("hold", "Put an incident on hold (SLA clocks pause)"),
                ("resume", "Resume an incident on hold"),
                ("resolve", "Resolve an incident"),
                ("close", "Close a resolved incident"),
                ("reopen", "Reopen a resolved incident"))},
            "/api/v1/incidents/{id}/escalate": {"post": {
                **_action("Notify the next (or a given) escalation level")["post"],
                "requestBody": {**_body("EscalateBody"), "required": False}}},
            "/api/v1/changes": {
                **_read("List change records, newest first (filter: state)"),
                "post": _write("Record a change", "NewChange", "201"),
            },
            "/api/v1/changes/{id}": {
                **_read("One change, with the alerts its window held back and the incidents "
                        "it is suspected in"),
                "patch": _write("Move or edit a change", "ChangeEdit", "200"),
            },
            "/api/v1/problems": {
                **_read("List problems, newest first (filter: status)"),
                "post": _write("Open a problem by hand", "NewProblem", "201"),
            },
            "/api/v1/problems/{id}": {
                **_read("One problem with its incidents"),
                "patch": _write("Edit a problem, mark it a known error, resolve it",
                                "ProblemEdit", "200"),
            },
            "/api/v1/reports/summary": _read(
                "Incident counts, MTTA, MTTR, SLA compliance, reopen rate, noise reduction and "
                "change success rate (since, until, service, priority)"),
            "/api/v1/notifications": _read(
                "The outbox: deliveries newest first (filters: state, incident, target)"),
            "/api/v1/notifications/{id}": _read("One delivery, with its payload"),
            "/api/v1/notifications/{id}/resend": {"post": {
                "summary": "Send a dead or delivered notification again",
                "security": [{"apiToken": []}],
                "responses": {"200": {"description": "Pending again"}, "404": _ERROR,
                              "409": _ERROR}}},
            "/api/v1/integrations/slack/actions": {"post": {
                "summary": "Slack interactivity (Acknowledge/Resolve buttons), signed with "
                           "X-Slack-Signature",
                "requestBody": {"required": True, "content": {
                    "application/x-www-form-urlencoded": {"schema": {
                        "type": "object", "required": ["payload"],
                        "properties": {"payload": {"type": "string",
                                                   "description": "block_actions JSON"}}}}}},
                "responses": {"200": {"description": "Taken; the message is updated later"},
                              "400": _ERROR, "401": _ERROR}}},
            "/api/v1/webhooks/actions": {"post": {
                "summary": "Acknowledge or resolve from a bot or tool, signed with "
                           "X-Incidentd-Signature",
                "requestBody": _body("InboundAction"),
                "responses": {"200": {"description": "Done (or already acknowledged)"},
                              "400": _ERROR, "401": _ERROR, "404": _ERROR, "409": _ERROR}}},
            **openapi_paths(_ERROR),
            "/api/v1/cmdb/cis": _read("List configuration items (filters: type, service)"),
            "/api/v1/cmdb/cis/{id}": {
                **_read("One configuration item, with its dependents"),
                "put": {"summary": "Create or replace a CI", "security": [{"apiToken": []}],
                        "requestBody": _body("CI"),
                        "responses": {"200": {"description": "Replaced"},
                                      "201": {"description": "Created"}, "400": _ERROR}},
                "delete": {"summary": "Delete a CI nothing depends on",
                           "security": [{"apiToken": []}],
                           "responses": {"204": {"description": "Deleted"}, "404": _ERROR,
                                         "409": _ERROR}},
            },
            "/api/v1/cmdb/import": {"post": {
                "summary": "Import a whole CMDB document (JSON, YAML or CSV); mode=merge|replace",
                "security": [{"apiToken": []}], "requestBody": _body("CmdbDocument"),
                "responses": {"200": {"description": "Counts"}, "400": _ERROR, "413": _ERROR,
                              "415": _ERROR}}},
            "/api/v1/cmdb/reload": {"post": {
                "summary": "Read the configured CMDB files again",
                "security": [{"apiToken": []}],
                "responses": {"200": {"description": "Counts"}, "400": _ERROR}}},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiToken": {"type": "http", "scheme": "bearer"},
                "integrationToken": {"type": "http", "scheme": "bearer",
                                     "description": "or basic auth, or an HMAC signature"},
                "routingKey": {"type": "apiKey", "in": "query", "name": "routing_key",
                               "description": "PagerDuty style: `routing_key` in the body"},
            },
        },
    }
