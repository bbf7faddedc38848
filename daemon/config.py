"""The whole configuration as one pydantic model.

Sources, later ones winning: built-in defaults, the YAML file, `INCIDENTD_*`
environment variables (one per scalar setting, named after its key path:
`database.url` → `INCIDENTD_DATABASE_URL`), then CLI flags. Unknown keys are
errors, and every error names the file, the key path and the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from daemon import templating

ENV_PREFIX = "INCIDENTD_"


class ConfigError(Exception):
    """The configuration is unusable; `problems` lists each as `file: path: reason`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Strict):
    """Where a secret comes from. Exactly one of `env`, `file`, `value`.

    `env` and `file` keep secrets out of the config file; `value` exists for
    tests and throwaway setups.
    """

    env: str | None = None
    file: Path | None = None
    value: str | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        given = [k for k in ("env", "file", "value") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of env, file or value")
        return self

    def describe(self) -> str:
        if self.env:
            return f"env {self.env}"
        if self.file:
            return f"file {self.file}"
        return "inline value"


class ServerConfig(_Strict):
    listen: str = "127.0.0.1:8080"
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    shutdown_timeout_seconds: float = Field(default=30.0, gt=0)
    # Slow clients: a request's headers must arrive within this long of the connection
    # opening (or of the request's first byte on a kept-alive connection), and its body
    # within this long of its headers; else 408 and the connection is closed.
    request_read_timeout_seconds: float = Field(default=30.0, gt=0)
    # Open connections at most; one more is answered 503 and closed at once.
    max_connections: int = Field(default=1000, gt=0)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_listen(value)
        return value

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]


class DatabaseConfig(_Strict):
    url: str = "sqlite+aiosqlite:///./var/incidentd.db"
    auto_migrate: bool = True
    # NORMAL survives a process crash in WAL mode; FULL also survives power loss.
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    pool_size: int = Field(default=10, gt=0)
    # At start, how long to wait for PostgreSQL to answer (retrying with backoff, one
    # log line per try) before giving up with exit code 2; 0: one try. SQLite: one try.
    connect_timeout_seconds: float = Field(default=60.0, ge=0)
    # PostgreSQL, several replicas: a leader whose lock connection stays silent this
    # long (the process frozen, its host cut off) is disconnected by the server, and
    # another replica takes the timers over within this plus 5 s.
    leader_timeout_seconds: int = Field(default=15, ge=10)

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("use a sqlite+aiosqlite:// or postgresql+asyncpg:// URL")
        return value


class IngestConfig(_Strict):
    # Bounded in alerts, not requests, so memory stays bounded under a flood.
    max_queued_alerts: int = Field(default=20_000, gt=0)
    max_batch_alerts: int = Field(default=2_000, gt=0)
    retry_after_seconds: int = Field(default=5, gt=0)


class ApiConfig(_Strict):
    # Admin tokens: everything under /api/v1/.
    tokens: list[SecretRef] = Field(default_factory=lambda: [SecretRef(env="INCIDENTD_API_TOKEN")])
    # Read-only tokens: GET requests only (dashboards, reporting scripts, a status page).
    read_only_tokens: list[SecretRef] = Field(
        default_factory=lambda: [SecretRef(env="INCIDENTD_API_READ_TOKEN")])
    # Require a token (read-only or admin) on GET /metrics too.
    protect_metrics: bool = False


class ConsoleConfig(_Strict):
    """The web console at /ui/ (sign-in with an API token, for a session cookie)."""

    # Signs session cookies; unset: one is generated per run (sessions then end with
    # the run, and replicas do not accept each other's).
    session_secret: SecretRef = SecretRef(env="INCIDENTD_SESSION_SECRET")
    # How long a sign-in lasts.
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)


class BasicCredential(_Strict):
    username: str
    password: SecretRef


class HmacConfig(_Strict):
    """An HMAC-SHA256 signature of the raw body in a header.

    With `timestamp_header`, the signed text is `<timestamp>:<body>` and a
    request older than `max_age_seconds`, or seen before, is refused.
    """

    secrets: list[SecretRef] = Field(min_length=1)
    # Default: X-Incidentd-Signature; for grafana, Grafana's own header names.
    header: str | None = None
    prefix: str = ""  # e.g. "sha256=" or "v1="
    encoding: Literal["hex", "base64"] = "hex"
    timestamp_header: str | None = None
    max_age_seconds: int = Field(default=300, gt=0)


class AuthConfig(_Strict):
    """Credentials an integration accepts; any one that matches admits the request.

    Several entries of one kind let a secret be rotated without downtime.
    PagerDuty senders authenticate by `routing_keys` in the body instead.
    """

    bearer_tokens: list[SecretRef] = Field(default_factory=list)
    basic: list[BasicCredential] = Field(default_factory=list)
    hmac: HmacConfig | None = None
    routing_keys: list[SecretRef] = Field(default_factory=list)


class IntegrationDefaults(_Strict):
    """Added to every alert of the integration; what the alert says itself wins."""

    labels: dict[str, str] = Field(default_factory=dict)
    service: str | None = None  # becomes the `service` label
    ci: str | None = None  # CI id hint for alerts that name none


class ReceiverLimits(_Strict):
    """Bounds on one request; a breach is a 400 or 413 and nothing is stored."""

    max_body_bytes: int | None = Field(default=None, gt=0)  # default: server.max_body_bytes
    max_alerts: int = Field(default=1000, gt=0)
    max_labels: int = Field(default=64, gt=0)
    max_label_name_length: int = Field(default=256, gt=0)
    max_label_value_length: int = Field(default=4096, gt=0)


IntegrationType = Literal["alertmanager", "pagerduty", "grafana", "generic"]


class IntegrationConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    type: IntegrationType
    auth: AuthConfig
    default_severity: Literal["critical", "error", "warning", "info"] = "warning"
    defaults: IntegrationDefaults = IntegrationDefaults()
    limits: ReceiverLimits = ReceiverLimits()
    # Alerts bound to no CI open one incident per distinct value of these labels
    # (like Alertmanager's group_by); unset: the source's own grouping.
    group_by: list[str] | None = None

    @model_validator(mode="after")
    def _credentials_fit_type(self) -> IntegrationConfig:
        auth = self.auth
        if self.type == "pagerduty":
            if not auth.routing_keys:
                raise ValueError("a pagerduty integration needs auth.routing_keys")
        elif auth.routing_keys:
            raise ValueError(f"auth.routing_keys is for pagerduty integrations, not {self.type}")
        elif not (auth.bearer_tokens or auth.basic or auth.hmac):
            raise ValueError("give at least one credential (bearer_tokens, basic or hmac)")
        return self


class CmdbConfig(_Strict):
    """CMDB files (YAML or JSON, `cis: [...]`) loaded at start, on SIGHUP and on reload."""

    files: list[Path] = Field(default_factory=list)


class BindingRule(_Strict):
    """Binds an alert to a CI: when `match` holds, `ci` (a template) names the CI id.

    `match` takes Alertmanager-style matchers: `name="v"`, `name!="v"`,
    `name=~"regex"`, `name!~"regex"`. The first rule naming a known CI wins.
    """

    match: list[str] = Field(default_factory=list)
    sources: list[str] | None = None
    ci: str


def _default_binding() -> list[BindingRule]:
    return [
        BindingRule(ci="{{ labels.ci }}"),
        BindingRule(ci="{{ labels.instance | strip_port }}"),
        BindingRule(sources=["pagerduty"], ci="{{ labels.component }}"),
        BindingRule(sources=["pagerduty"], ci="{{ labels.source }}"),
    ]


class CorrelationConfig(_Strict):
    # An open incident takes a related alert only if it had activity this recently.
    window_seconds: int = Field(default=600, gt=0)
    # How many dependency hops away an alert's CI may be from an incident's CIs.
    max_depth: int = Field(default=3, ge=1, le=20)
    # Two CIs that share a dependency are related (siblings); a dependency with
    # more dependents than `max_fanout` (a core switch, DNS) does not relate them.
    join_siblings: bool = True
    max_fanout: int = Field(default=50, ge=1)
    # An alert that changes state more than `flapping_changes` times within
    # `flapping_window_seconds` is flapping: its new firings open nothing new.
    flapping_changes: int = Field(default=6, ge=2)
    flapping_window_seconds: int = Field(default=3600, gt=0)
    binding: list[BindingRule] = Field(default_factory=_default_binding)


class PriorityRule(_Strict):
    """Overrides impact and/or urgency when any alert of the incident matches."""

    match: list[str] = Field(min_length=1)
    impact: int | None = Field(default=None, ge=1)
    urgency: int | None = Field(default=None, ge=1)


PriorityName = Literal["P1", "P2", "P3", "P4", "P5"]
SeverityName = Literal["critical", "error", "warning", "info"]


def _default_matrix() -> list[list[PriorityName]]:
    return [["P1", "P2", "P3"], ["P2", "P3", "P4"], ["P3", "P4", "P5"]]


def _default_urgency() -> dict[SeverityName, int]:
    return {"critical": 1, "error": 2, "warning": 3, "info": 3}


class PriorityConfig(_Strict):
    """Priority = matrix[impact - 1][urgency - 1]; 1 is the highest impact and urgency."""

    matrix: list[list[PriorityName]] = Field(default_factory=_default_matrix)
    # Impact from the highest criticality (1 = highest) among the impacted business
    # services, else of the root-cause CI; `default_impact` when there is none.
    impact_by_criticality: dict[int, int] = Field(
        default_factory=lambda: {1: 1, 2: 1, 3: 2, 4: 3, 5: 3})
    default_impact: int = Field(default=2, ge=1)
    urgency_by_severity: dict[SeverityName, int] = Field(default_factory=_default_urgency)
    rules: list[PriorityRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fits_the_matrix(self) -> PriorityConfig:
        rows, cols = len(self.matrix), len(self.matrix[0]) if self.matrix else 0
        if not rows or any(len(r) != cols for r in self.matrix):
            raise ValueError("matrix must be a non-empty grid: one row per impact, "
                             "one column per urgency")
        impacts = [*self.impact_by_criticality.values(), self.default_impact,
                   *(r.impact for r in self.rules if r.impact)]
        urgencies = [*self.urgency_by_severity.values(), *(r.urgency for r in self.rules
                                                          if r.urgency)]
        if any(not 1 <= i <= rows for i in impacts):
            raise ValueError(f"impacts must be between 1 and {rows} (the matrix rows)")
        if any(not 1 <= u <= cols for u in urgencies):
            raise ValueError(f"urgencies must be between 1 and {cols} (the matrix columns)")
        return self


class LifecycleConfig(_Strict):
    # An alert firing again on an incident resolved this recently reopens it.
    reopen_window_seconds: int = Field(default=3600, ge=0)
    # A resolved incident closes after this long without reopening.
    close_after_seconds: int = Field(default=86_400, gt=0)


class CalendarConfig(_Strict):
    """A calendar as written in configuration (one per SLA policy)."""

    timezone: str = "UTC"
    always: bool = True
    weekdays: list[int] = [0, 1, 2, 3, 4]
    start: time = time(9, 0)
    end: time = time(17, 0)
    holidays: list[date] = []

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (expected an IANA name "
                             "such as 'Europe/Berlin')") from exc
        return value

    @field_validator("weekdays")
    @classmethod
    def _weekday_range(cls, value: list[int]) -> list[int]:
        bad = [d for d in value if not 0 <= d <= 6]
        if bad:
            raise ValueError(f"weekdays must be 0 (Monday) .. 6 (Sunday), got {bad}")
        return value

    @field_validator("start", "end")
    @classmethod
    def _naive_time(cls, value: time) -> time:
        # The zone comes from `timezone`; a per-time offset would silently disagree
        # with it half of the year.
        if value.tzinfo is not None:
            raise ValueError("business hours are local times; give the zone in 'timezone'")
        return value

    @model_validator(mode="after")
    def _hours_make_sense(self) -> CalendarConfig:
        # Checked even when `always` is set: a wrong value there is a typo waiting
        # to bite the day someone switches `always` off.
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start}); "
                             "overnight shifts are not supported")
        if not self.always and not self.weekdays:
            raise ValueError("a business-hours calendar needs at least one weekday")
        return self


class SlaPolicy(_Strict):
    """Response (acknowledge) and resolution targets for some priorities, in a calendar."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    priorities: list[PriorityName] = Field(min_length=1)
    response_seconds: int = Field(gt=0)
    resolution_seconds: int = Field(gt=0)
    # A name under `sla.calendars`, or `24x7`.
    calendar: str = "24x7"


def _default_sla_policies() -> list[SlaPolicy]:
    hour = 3600
    targets = {"P1": (15 * 60, 4 * hour), "P2": (30 * 60, 8 * hour), "P3": (4 * hour, 24 * hour),
               "P4": (8 * hour, 72 * hour), "P5": (24 * hour, 168 * hour)}
    return [SlaPolicy(name=p.lower(), priorities=[p],
                      response_seconds=r, resolution_seconds=s)
            for p, (r, s) in targets.items()]


class SlaConfig(_Strict):
    # Warn once at each of these fractions of a target; the breach comes at 1.0.
    warn_at: list[float] = Field(default_factory=lambda: [0.75])
    # How often the timer job looks for warnings and breaches that fell due.
    check_interval_seconds: float = Field(default=10.0, gt=0)
    calendars: dict[str, CalendarConfig] = Field(default_factory=dict)
    policies: list[SlaPolicy] = Field(default_factory=_default_sla_policies)

    @field_validator("warn_at")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in value):
            raise ValueError("warning fractions must be between 0 and 1 (exclusive)")
        return sorted(set(value))

    @model_validator(mode="after")
    def _references(self) -> SlaConfig:
        names = set(self.calendars) | {"24x7"}
        for policy in self.policies:
            if policy.calendar not in names:
                raise ValueError(f"policy {policy.name!r}: unknown calendar {policy.calendar!r} "
                                 f"(known: {', '.join(sorted(names))})")
        seen: dict[str, str] = {}
        for policy in self.policies:
            for p in policy.priorities:
                if p in seen:
                    raise ValueError(f"priority {p} is in policies {seen[p]!r} and "
                                     f"{policy.name!r}; give each priority one policy")
                seen[p] = policy.name
        return self


class EscalationLevel(_Strict):
    # Who is notified at this level: `user:alice`, `team:dba`, `webhook:ops-chat` …
    targets: list[str] = Field(min_length=1)
    # How long this level has to acknowledge before the next one is notified.
    timeout_seconds: int = Field(default=900, gt=0)

    @field_validator("targets")
    @classmethod
    def _typed(cls, value: list[str]) -> list[str]:
        bad = [t for t in value if ":" not in t or not t.split(":", 1)[1]]
        if bad:
            raise ValueError(f"targets are written kind:name (e.g. user:alice), got {bad}")
        return value


class EscalationPolicy(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    levels: list[EscalationLevel] = Field(min_length=1)
    # How many more times the whole ladder runs after the last level times out.
    repeat: int = Field(default=0, ge=0, le=100)


class EscalationRule(_Strict):
    """Choose `policy` for incidents matching every given condition."""

    services: list[str] | None = None  # any impacted business service among these
    priorities: list[PriorityName] | None = None
    policy: str


class EscalationConfig(_Strict):
    policies: list[EscalationPolicy] = Field(default_factory=list)
    rules: list[EscalationRule] = Field(default_factory=list)
    # For incidents no rule matches; none: such incidents do not escalate.
    default_policy: str | None = None
    check_interval_seconds: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _references(self) -> EscalationConfig:
        names = [p.name for p in self.policies]
        if len(set(names)) != len(names):
            raise ValueError("escalation policy names must be unique")
        wanted = [r.policy for r in self.rules] + ([self.default_policy]
                                                   if self.default_policy else [])
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ValueError(f"unknown escalation policy {', '.join(unknown)} "
                             f"(known: {', '.join(names) or 'none'})")
        return self


class ProblemsConfig(_Strict):
    # Incidents with the same root-cause CI and alert name, this many within the
    # window, open a problem record.
    recurrences: int = Field(default=3, ge=2)
    window_seconds: int = Field(default=7 * 86_400, gt=0)


class ChangesConfig(_Strict):
    # Changes on an incident's CIs or upstream this long before it are suspects.
    suspect_window_seconds: int = Field(default=86_400, gt=0)
    # During an approved change's window, alerts on CIs that depend on its CIs
    # are maintenance noise too (not only alerts on the changed CIs).
    maintenance_includes_dependents: bool = True
    check_interval_seconds: float = Field(default=30.0, gt=0)


EVENT_TYPES = (
    "incident.triggered", "incident.acknowledged", "incident.escalated", "incident.resolved",
    "incident.reopened", "incident.priority_updated", "incident.sla_warning",
    "incident.sla_breached", "runbook.pending_approval", "runbook.started",
    "runbook.succeeded", "runbook.failed", "runbook.notify",
)


class NotificationRoute(_Strict):
    """Which events a target gets: every given condition must hold."""

    # Event types, or a prefix ending in `*` (`incident.*`); none: all of them.
    events: list[str] | None = None
    services: list[str] | None = None  # any impacted business service among these
    priorities: list[PriorityName] | None = None
    # Only escalation events notifying one of these (1-based) levels.
    escalation_levels: list[int] | None = None

    @field_validator("events")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        for event in value or []:
            prefix = event[:-1] if event.endswith("*") else None
            if prefix is not None and not any(t.startswith(prefix) for t in EVENT_TYPES):
                raise ValueError(f"{event!r} matches no event type")
            if prefix is None and event not in EVENT_TYPES and not event.startswith("runbook."):
                raise ValueError(f"unknown event type {event!r} (known: "
                                 f"{', '.join(EVENT_TYPES)}, runbook.*)")
        return value


class NotificationTarget(_Strict):
    """Where notifications go: a generic webhook or Slack."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    type: Literal["webhook", "slack"]
    # webhook: the URL the JSON envelope is POSTed to.
    url: str | None = None
    # webhook: each signs the body (`X-Incidentd-Signature: v1=<hex>,v1=<hex>`); several
    # during a rotation, so receivers holding either secret can verify.
    secrets: list[SecretRef] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    # slack: an incoming-webhook URL (it is a secret), or a bot token and a channel.
    webhook_url: SecretRef | None = None
    bot_token: SecretRef | None = None
    channel: str | None = None
    api_url: str = "https://slack.com/api"
    rate_limit_per_minute: int = Field(default=60, gt=0)
    routes: list[NotificationRoute] = Field(default_factory=lambda: [NotificationRoute()])

    @model_validator(mode="after")
    def _complete(self) -> NotificationTarget:
        if self.type == "webhook" and not self.url:
            raise ValueError("a webhook target needs a url")
        if self.type == "slack" and not (self.webhook_url or (self.bot_token and self.channel)):
            raise ValueError("a slack target needs webhook_url, or bot_token and channel")
        return self


class RetryConfig(_Strict):
    """Delivery retries: exponential backoff with jitter, honouring Retry-After."""

    max_attempts: int = Field(default=10, ge=1)
    initial_seconds: float = Field(default=1.0, gt=0)
    max_seconds: float = Field(default=600.0, gt=0)
    timeout_seconds: float = Field(default=10.0, gt=0)


class ActionLinksConfig(_Strict):
    # Signs the links; unset: one is generated per run (links then die with the run).
    secret: SecretRef = SecretRef(env="INCIDENTD_ACTION_LINK_SECRET")
    ttl_seconds: int = Field(default=3600, gt=0)


class SlackConfig(_Strict):
    # Verifies `X-Slack-Signature` on button clicks; unset: Slack actions are refused.
    signing_secret: SecretRef = SecretRef(env="INCIDENTD_SLACK_SIGNING_SECRET")
    max_age_seconds: int = Field(default=300, gt=0)


class InboundWebhookConfig(_Strict):
    # Verify `X-Incidentd-Signature` on POST /api/v1/webhooks/actions; none: refused.
    secrets: list[SecretRef] = Field(default_factory=list)
    max_age_seconds: int = Field(default=300, gt=0)


class NotificationsConfig(_Strict):
    # Where people reach this daemon (action links point here); default from server.listen.
    public_url: str | None = None
    targets: list[NotificationTarget] = Field(default_factory=list)
    retry: RetryConfig = RetryConfig()
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    action_links: ActionLinksConfig = ActionLinksConfig()
    slack: SlackConfig = SlackConfig()
    inbound_webhook: InboundWebhookConfig = InboundWebhookConfig()

    @model_validator(mode="after")
    def _unique(self) -> NotificationsConfig:
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError("notification target names must be unique")
        return self


class RunbooksConfig(_Strict):
    """Automated runbooks: the catalog files and the guards that hold for all of them."""

    # Runbook catalog files (YAML, `runbooks: [...]`), read at start and on SIGHUP.
    files: list[Path] = Field(default_factory=list)
    # Every run only renders and records what it would do.
    dry_run: bool = False
    # A run waiting for approval expires after this long.
    approval_ttl_seconds: int = Field(default=3600, gt=0)
    # Captured stdout/stderr/HTTP bodies are cut to this many bytes per step.
    max_output_bytes: int = Field(default=64 * 1024, gt=0)
    max_concurrent_runs: int = Field(default=4, gt=0)
    poll_interval_seconds: float = Field(default=1.0, gt=0)


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


# -- ITSM suite connectors ------------------------------------------------------------
#
# Each connector mirrors incidents into one ITSM suite (ServiceNow, Jira Service
# Management, or a generic JSON tool) through the outbox, and takes the suite's updates
# back at POST /api/v1/connectors/{name}/updates. Templates render in a Jinja2 sandbox
# with `incident`, `event`, `ci` and `note` (the event said in one line).

ConnectorAction = Literal["acknowledge", "resolve", "reopen"]
CONNECTOR_TEMPLATE_ROOTS = frozenset({"incident", "event", "ci", "note"})


def _connector_template(value: str) -> str:
    """A template a connector renders: it must compile and name only known variables."""
    try:
        templating.check(value, path="template", roots=CONNECTOR_TEMPLATE_ROOTS)
    except templating.TemplateFailed as exc:
        raise ValueError(exc.reason) from None
    return value


ConnectorTemplate = Annotated[str, AfterValidator(_connector_template)]


def _templates_in(value: Any) -> Any:
    """Every string inside a JSON value is a template."""
    if isinstance(value, str):
        _connector_template(value)
    elif isinstance(value, list):
        for item in value:
            _templates_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            _templates_in(item)
    return value


class ConnectorBasicAuth(_Strict):
    username: str = Field(min_length=1)
    password: SecretRef  # ServiceNow: the user's password; Jira Cloud: an API token


class ConnectorAuth(_Strict):
    """How incidentd signs in to the suite: basic auth, or a bearer (OAuth) token."""

    basic: ConnectorBasicAuth | None = None
    bearer: SecretRef | None = None

    @model_validator(mode="after")
    def _one(self) -> ConnectorAuth:
        if (self.basic is None) == (self.bearer is None):
            raise ValueError("give exactly one of basic or bearer")
        return self


class ConnectorInbound(_Strict):
    """Who may post the suite's updates to POST /api/v1/connectors/{name}/updates.

    Any one matching credential admits a request. `hmac` defaults by type: ServiceNow
    `X-Incidentd-Signature: <base64>` (what GlideCertificateEncryption.generateMac
    gives), Jira `X-Hub-Signature: sha256=<hex>` (Jira Cloud's webhook secret), generic
    `X-Incidentd-Signature: v1=<hex>` (like our inbound webhook).
    """

    basic: list[BasicCredential] = Field(default_factory=list)
    bearer_tokens: list[SecretRef] = Field(default_factory=list)
    hmac: HmacConfig | None = None
    # Updates made by these suite users (the integration's own account) are ignored:
    # a change incidentd made itself must not come back as a person's change.
    ignore_users: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)


class _ConnectorCommon(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    url: str
    # Which events reach the suite, like a notification target's routes; the first event
    # that reaches it for an incident opens its ticket.
    routes: list[NotificationRoute] = Field(default_factory=lambda: [NotificationRoute()])
    rate_limit_per_minute: int = Field(default=60, gt=0)
    inbound: ConnectorInbound = ConnectorInbound()

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        # A suite's changes are made by actor `<name>:<user>`; `runbook:` means automation.
        if value in ("runbook", "incidentd"):
            raise ValueError(f"{value!r} is reserved")
        return value


def _default_impact_urgency() -> dict[PriorityName, tuple[int, int]]:
    # ServiceNow's default priority lookup: impact 1 with urgency 1 is its priority 1, ...
    return {"P1": (1, 1), "P2": (1, 2), "P3": (2, 2), "P4": (2, 3), "P5": (3, 3)}


class ServiceNowStates(_Strict):
    """The incident `state` values incidentd sets (ServiceNow's defaults)."""

    acknowledge: str = "2"  # In Progress
    resolve: str = "6"  # Resolved
    reopen: str = "1"  # New (or "2": In Progress)


def _default_servicenow_inbound() -> dict[str, ConnectorAction]:
    return {"2": "acknowledge", "6": "resolve", "7": "resolve", "1": "reopen"}


class ServiceNowMapping(_Strict):
    table: str = Field(default="incident", pattern=r"^[a-z0-9_]+$")
    short_description: ConnectorTemplate = "[{{ incident.key }}] {{ incident.title }}"
    description: ConnectorTemplate = (
        "{{ incident.title }}\n\nOpened by incidentd: {{ incident.url }}\n"
        "Priority: {{ incident.priority }}, severity: {{ incident.severity }}\n"
        "Root-cause CI: {{ incident.root_cause_ci or 'unknown' }}")
    work_note: ConnectorTemplate = "[incidentd] {{ note }}"
    close_code: str = "Solution provided"
    close_notes: ConnectorTemplate = "Resolved in incidentd: {{ note }}"
    # Our priority → (impact, urgency); ServiceNow computes its priority from them.
    impact_urgency: dict[PriorityName, tuple[int, int]] = Field(
        default_factory=_default_impact_urgency)
    # The root-cause CI → `cmdb_ci`: our CI's `name` (or `id`) looked up in this column.
    ci_match: Literal["name", "id"] = "name"
    ci_lookup_field: str = Field(default="name", pattern=r"^[a-z0-9_.]+$")
    # `assignment_group` from the CI's owner group, looked up in sys_user_group by name.
    assignment_group_from_ci: bool = True
    default_assignment_group: str | None = None
    states: ServiceNowStates = ServiceNowStates()
    # More fields set on create (templates), e.g. caller_id, category, contact_type.
    fields: dict[str, ConnectorTemplate] = Field(default_factory=dict)
    # Inbound: the suite's `state` value → what it does to the incident.
    inbound_states: dict[str, ConnectorAction] = Field(
        default_factory=_default_servicenow_inbound)


class ServiceNowConnector(_ConnectorCommon):
    type: Literal["servicenow"]
    auth: ConnectorAuth
    mapping: ServiceNowMapping = ServiceNowMapping()


def _default_jira_priorities() -> dict[PriorityName, str]:
    return {"P1": "Highest", "P2": "High", "P3": "Medium", "P4": "Low", "P5": "Lowest"}


def _default_jira_transitions() -> dict[ConnectorAction, list[str]]:
    return {"acknowledge": ["In Progress", "Start Progress"],
            "resolve": ["Resolve", "Resolved", "Done", "Close"],
            "reopen": ["Reopen", "Reopened", "To Do", "Open"]}


def _default_jira_inbound() -> dict[str, ConnectorAction]:
    return {"In Progress": "acknowledge", "Resolved": "resolve", "Done": "resolve",
            "Closed": "resolve", "Reopened": "reopen"}


class JiraMapping(_Strict):
    project: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    issue_type: str = "Task"
    summary: ConnectorTemplate = "[{{ incident.key }}] {{ incident.title }}"
    description: ConnectorTemplate = (
        "{{ incident.title }}\n\nOpened by incidentd: {{ incident.url }}\n"
        "Priority: {{ incident.priority }}, severity: {{ incident.severity }}\n"
        "Root-cause CI: {{ incident.root_cause_ci or 'unknown' }}")
    comment: ConnectorTemplate = "[incidentd] {{ note }}"
    # Our priority → a Jira priority name (none: the field is left out).
    priorities: dict[PriorityName, str] = Field(default_factory=_default_jira_priorities)
    labels: list[str] = Field(default_factory=lambda: ["incidentd"])
    # The label that names the incident (`incidentd-INC-000123`): how a retried create
    # finds the issue it made before.
    key_label_prefix: str = Field(default="incidentd-", pattern=r"^[A-Za-z0-9_.-]*$")
    # Transition names tried in order, on acknowledge / resolve / reopen.
    transitions: dict[ConnectorAction, list[str]] = Field(
        default_factory=_default_jira_transitions)
    # More fields on create (strings are templates), e.g. {"components": [{"name": "db"}]}.
    fields: dict[str, Any] = Field(default_factory=dict)
    # Inbound: a status the issue moved to → what it does to the incident.
    inbound_statuses: dict[str, ConnectorAction] = Field(default_factory=_default_jira_inbound)

    @field_validator("labels")
    @classmethod
    def _label_chars(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not v or any(c.isspace() for c in v)]
        if bad:
            raise ValueError(f"Jira labels cannot be empty or hold spaces: {bad}")
        return value

    @field_validator("fields")
    @classmethod
    def _field_templates(cls, value: dict[str, Any]) -> dict[str, Any]:
        return dict(_templates_in(value))


class JiraConnector(_ConnectorCommon):
    type: Literal["jira"]
    auth: ConnectorAuth
    mapping: JiraMapping


class GenericConnector(_ConnectorCommon):
    """The notification envelope POSTed to `url` (signed like a webhook target); a JSON
    answer `{"id": ...}` names the ticket the tool made."""

    type: Literal["generic"]
    secrets: list[SecretRef] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    auth: ConnectorAuth | None = None


ConnectorConfig = Annotated[ServiceNowConnector | JiraConnector | GenericConnector,
                            Field(discriminator="type")]


class Config(_Strict):
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    ingest: IngestConfig = IngestConfig()
    api: ApiConfig = ApiConfig()
    console: ConsoleConfig = ConsoleConfig()
    integrations: list[IntegrationConfig] = Field(default_factory=list)
    cmdb: CmdbConfig = CmdbConfig()
    correlation: CorrelationConfig = CorrelationConfig()
    priority: PriorityConfig = PriorityConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    sla: SlaConfig = SlaConfig()
    escalation: EscalationConfig = EscalationConfig()
    problems: ProblemsConfig = ProblemsConfig()
    changes: ChangesConfig = ChangesConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    runbooks: RunbooksConfig = RunbooksConfig()
    logging: LoggingConfig = LoggingConfig()
    # ITSM suites kept in step with incidents (ServiceNow, Jira, generic).
    connectors: list[ConnectorConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_connectors(self) -> Config:
        # One namespace: a connector is a delivery target like a notification target.
        names = [t.name for t in self.notifications.targets] + [c.name for c in self.connectors]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError("connector names must be unique among connectors and "
                             f"notification targets; repeated: {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _unique_integrations(self) -> Config:
        names = [i.name for i in self.integrations]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"integration names must be unique; repeated: {', '.join(dupes)}")
        return self

    def integration(self, name: str) -> IntegrationConfig | None:
        return next((i for i in self.integrations if i.name == name), None)




def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class Overrides:
    """Settings given on the command line; they win over file and environment."""

    listen: str | None = None
    database_url: str | None = None


def load_config(
    path: Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Overrides = Overrides(),
) -> Config:
    """Read, merge and validate the configuration, or raise `ConfigError`."""
    source = str(path) if path else "<defaults>"
    data = _read_yaml(path) if path else {}
    env = os.environ if environ is None else environ
    for key_path, value in _env_overrides(env):
        _set_path(data, key_path, value)
    if overrides.listen:
        _set_path(data, ("server", "listen"), overrides.listen)
    if overrides.database_url:
        _set_path(data, ("database", "url"), overrides.database_url)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([f"{source}: {p}" for p in _describe(exc)]) from None
    if path is None:
        return config
    # Like Prometheus' rule_files: relative CMDB and runbook paths are relative to the
    # config file.
    def near(files: list[Path]) -> list[Path]:
        return [f if f.is_absolute() else path.parent / f for f in files]

    return config.model_copy(update={
        "cmdb": CmdbConfig(files=near(config.cmdb.files)),
        "runbooks": config.runbooks.model_copy(update={"files": near(config.runbooks.files)}),
    })


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}: {where}invalid YAML: {problem}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections"])
    return data


def _describe(exc: ValidationError) -> Iterator[str]:
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        reason = err["msg"]
        if err["type"] == "extra_forbidden":
            reason = "unknown key"
        elif reason.startswith("Value error, "):
            reason = reason.removeprefix("Value error, ")
        yield f"{loc}: {reason}"


def _scalar_paths(
    model: type[BaseModel], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    """Every key path below `model` that holds a scalar (lists are left to the file)."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _scalar_paths(annotation, (*prefix, name))
        elif getattr(annotation, "__origin__", None) is not list:
            yield (*prefix, name)


_ENV_PATHS = {
    ENV_PREFIX + "_".join(p).upper(): p for p in _scalar_paths(Config)
}


def _env_overrides(environ: Mapping[str, str]) -> Iterator[tuple[tuple[str, ...], str]]:
    # Raw strings: pydantic's lax mode turns "5" and "true" into the field's type.
    for var, key_path in _ENV_PATHS.items():
        if var in environ:
            yield key_path, environ[var]


def _set_path(data: dict[str, Any], key_path: tuple[str, ...], value: Any) -> None:
    node = data
    for key in key_path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[key_path[-1]] = value


def env_variables() -> list[str]:
    """The environment variables that override settings, for `--help` and docs."""
    return sorted(_ENV_PATHS)
