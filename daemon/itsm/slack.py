"""Slack interactivity: the Acknowledge / Resolve buttons on our Slack messages, and
Approve / Deny on a runbook run waiting for approval (`approve_run` / `deny_run`,
the run id as value).

Slack POSTs a form with one field, `payload` (JSON, type `block_actions`), signed
with the app's signing secret:

    X-Slack-Signature: v0=<hex HMAC-SHA256(secret, f"v0:{X-Slack-Request-Timestamp}:{body}")>

Slack wants an answer within 3 s, so the route answers at once and `SlackClicks`
makes the move afterwards, then rewrites the original message through its
`response_url`: the buttons give way to a line saying what happened.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar
from urllib.parse import parse_qs

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from daemon.clock import Clock, timestamp
from daemon.errors import InvalidInput, Unauthorized, UserError
from daemon.itsm.actions import Actions
from daemon.itsm.inbound_webhook import incident_ref
from daemon.itsm.incidents import Transition
from daemon.models import incident_key
from daemon.receivers.auth import ReplayGuard
from daemon.receivers.validation import invalid_input
from daemon.store import StoreUnavailable

if TYPE_CHECKING:
    from daemon.store.runbooks import RunView

log = structlog.get_logger("incidentd.slack")

SIGNATURE_HEADER = "X-Slack-Signature"
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
_PAST = {"acknowledge": "Acknowledged", "resolve": "Resolved"}
_ALL_MOVES = frozenset(_PAST)
# Button action_id → the decision on the run it names.
RUN_DECISIONS = {"approve_run": "approve", "deny_run": "deny"}
_RUN_PAST = {"approve": "Approved", "deny": "Denied"}
_RUN_BUTTONS = frozenset(RUN_DECISIONS)


class RunDecider(Protocol):
    """Approves or denies a run waiting for approval, as `actor`; raises `UserError`
    (no such run, not pending, expired) when it cannot."""

    async def __call__(self, run_id: int, decision: str, *, actor: str) -> RunView: ...


class SlackVerifier:
    """Checks Slack's request signature and that the request is fresh."""

    def __init__(self, *, signing_secret: str | None, max_age_seconds: int,
                 clock: Clock) -> None:
        self._key = signing_secret.encode() if signing_secret else None
        self._max_age = max_age_seconds
        self._clock = clock
        # A captured click cannot be sent again while its timestamp still passes.
        self._replay = ReplayGuard(window_seconds=2 * max_age_seconds)

    def verify(self, headers: Mapping[str, str], body: bytes) -> None:
        if self._key is None:
            raise Unauthorized("Slack actions are not configured (set "
                               "notifications.slack.signing_secret)")
        stamp = headers.get(TIMESTAMP_HEADER, "").strip()
        if not (stamp.isascii() and stamp.isdigit()):  # int() fails on "²"
            raise Unauthorized(f"missing or malformed {TIMESTAMP_HEADER} header")
        now = self._clock.now().timestamp()
        if abs(now - int(stamp)) > self._max_age:
            raise Unauthorized(f"{TIMESTAMP_HEADER} is more than {self._max_age}s from now")
        given = headers.get(SIGNATURE_HEADER, "").strip()
        expected = "v0=" + hmac.new(self._key, b"v0:" + stamp.encode() + b":" + body,
                                    hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized(f"{SIGNATURE_HEADER} does not match the request")
        if not self._replay.claim(expected.encode(), now):
            raise Unauthorized("request already received (replay)")


class _User(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(pattern=r"^[A-Za-z0-9_]{1,64}$")  # it goes into mrkdwn as <@id>
    username: str | None = Field(default=None, max_length=200)
    name: str | None = Field(default=None, max_length=200)


class _Action(BaseModel):
    model_config = ConfigDict(extra="ignore")
    action_id: str = Field(max_length=255)
    value: str | None = Field(default=None, max_length=2000)


class _Move(BaseModel):
    """A press of one of our own buttons: the incident is the button's value."""

    action_id: Literal["acknowledge", "resolve"]
    value: int

    @field_validator("value", mode="before")
    @classmethod
    def _incident(cls, value: Any) -> int:
        return incident_ref(value)


class _RunDecision(BaseModel):
    """A press of Approve / Deny on a run waiting for approval: the run is the value."""

    action_id: Literal["approve_run", "deny_run"]
    value: int = Field(gt=0)


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str | None = None
    blocks: list[dict[str, Any]] = Field(default_factory=list)


class _Payload(BaseModel):
    """The part of Slack's `block_actions` payload we use; the rest is ignored."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["block_actions"]
    user: _User
    actions: list[_Action] = Field(min_length=1)
    response_url: str = Field(pattern=r"^https?://", max_length=2000)
    message: _Message | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SlackClick:
    """One button press: who pressed which button on which incident's message (or, for
    `approve_run` / `deny_run`, on which run)."""

    action: str
    incident_id: int | None  # None for a run's buttons: the run names its incident
    user_id: str
    actor: str  # `slack:<username or id>`, as the timeline records it
    response_url: str  # a capability (anyone holding it may post): never logged
    blocks: tuple[dict[str, Any], ...]
    run_id: int | None = None

    @property
    def subject(self) -> str:
        """What the click is about, for logs and messages."""
        if self.run_id is not None:
            return f"run {self.run_id}"
        return incident_key(self.incident_id or 0)


def parse_click(body: bytes) -> SlackClick | None:
    """The click in a form-encoded Slack request, or a 400 naming the field.

    None for a press that asks nothing of us: Slack reports link buttons (our
    "Open incident") too, and wants its 200 for them all the same.
    """
    payload = _payload(body)
    pressed = payload.actions[0]
    if pressed.action_id not in _PAST and pressed.action_id not in RUN_DECISIONS:
        return None
    user = payload.user
    blocks = tuple(payload.message.blocks) if payload.message else ()
    actor = f"slack:{user.username or user.id}"
    if pressed.action_id in RUN_DECISIONS:
        decision = _pressed(_RunDecision, pressed)
        return SlackClick(action=decision.action_id, incident_id=None, run_id=decision.value,
                          user_id=user.id, actor=actor, response_url=payload.response_url,
                          blocks=blocks)
    move = _pressed(_Move, pressed)
    return SlackClick(action=move.action_id, incident_id=move.value, user_id=user.id,
                      actor=actor, response_url=payload.response_url, blocks=blocks)


_M = TypeVar("_M", bound=BaseModel)


def _pressed(model: type[_M], pressed: _Action) -> _M:
    try:
        return model.model_validate(pressed.model_dump())
    except ValidationError as exc:
        error = invalid_input(exc, "Slack payload")
        first = f"actions[0].{error.errors[0]['field']}"
        raise _bad(first, error.errors[0]["reason"]) from None


def _payload(body: bytes) -> _Payload:
    try:
        fields = parse_qs(body.decode(), strict_parsing=False)
    except UnicodeDecodeError:
        raise _bad("(body)", "not UTF-8 form data") from None
    raw = fields.get("payload")
    if not raw:
        raise _bad("payload", "missing form field")
    try:
        return _Payload.model_validate(json.loads(raw[0]))
    except json.JSONDecodeError as exc:
        raise _bad("payload", f"invalid JSON: {exc.msg}") from None
    except ValidationError as exc:
        raise invalid_input(exc, "Slack payload") from None


def _bad(field: str, reason: str) -> InvalidInput:
    return InvalidInput(f"invalid Slack payload: {field}: {reason}",
                        [{"field": field, "reason": reason}])


class SlackClicks:
    """Makes the move a button asks for, then says what happened in the message."""

    def __init__(self, *, actions: Actions, decide_run: RunDecider | None = None,
                 timeout_seconds: float = 10) -> None:
        self._actions = actions
        self._decide_run = decide_run
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def handle(self, click: SlackClick) -> None:
        """Never raises: it runs after Slack has had its answer."""
        key = click.subject
        verb = RUN_DECISIONS.get(click.action, click.action)
        try:
            message = await (self._decide(click) if click.run_id is not None
                             else self._move(click))
        except StoreUnavailable as err:
            log.warning("Slack action failed: store unavailable", subject=key,
                        action=click.action, reason=str(err))
            message = _ephemeral(f"Could not {verb} {key} right now (database "
                                 "unavailable); please press the button again.")
        except Exception:
            log.exception("Slack action failed", subject=key, action=click.action)
            message = _ephemeral(f"Could not {verb} {key}: internal error; "
                                 "see the incidentd log.")
        await self._post(click, message)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _move(self, click: SlackClick) -> dict[str, Any]:
        assert click.incident_id is not None  # parse_click sets it for incident buttons
        key = incident_key(click.incident_id)
        try:
            t = await self._actions.move(click.incident_id, click.action, actor=click.actor,
                                         note="via Slack")
        except UserError as err:  # no such incident, or not in a state for this move
            return _replacing(click, f"Could not {click.action} {key}: {_escape(err.message)}",
                              spent=_ALL_MOVES)
        log.info(f"{click.action} via Slack", incident=key, actor=click.actor)
        spent = frozenset({"acknowledge"}) if click.action == "acknowledge" else _ALL_MOVES
        return _replacing(click, _said(click, t), spent=spent)

    async def _decide(self, click: SlackClick) -> dict[str, Any]:
        assert click.run_id is not None
        decision = RUN_DECISIONS[click.action]
        if self._decide_run is None:
            return _replacing(click, "Runbook approvals are not enabled on this incidentd.",
                              spent=_RUN_BUTTONS)
        try:
            run = await self._decide_run(click.run_id, decision, actor=click.actor)
        except UserError as err:  # no such run, no longer pending, expired
            return _replacing(click, f"Could not {decision} run {click.run_id}: "
                              f"{_escape(err.message)}", spent=_RUN_BUTTONS)
        log.info(f"run {decision} via Slack", run=run.id, runbook=run.runbook,
                 actor=click.actor)
        line = (f"{_RUN_PAST[decision]} by <@{click.user_id}> {_when(run.updated_at)}: "
                f"runbook {_escape(run.runbook)}, run {run.id}")
        return _replacing(click, line, spent=_RUN_BUTTONS)

    async def _post(self, click: SlackClick, message: dict[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        key = click.subject
        try:
            async with self._session.post(click.response_url, json=message) as resp:
                if resp.status >= 300:
                    log.warning("Slack refused the message update", subject=key,
                                status=resp.status)
        except (aiohttp.ClientError, TimeoutError) as err:
            log.warning("Slack message update failed", subject=key,
                        reason=type(err).__name__)


def _said(click: SlackClick, t: Transition) -> str:
    key = click.subject
    if t.already is not None:
        return (f"{key} was already acknowledged by {_escape(t.already.actor)} "
                f"{_when(t.already.at)} (first); <@{click.user_id}> pressed it too")
    at = t.incident.acknowledged_at if click.action == "acknowledge" else t.incident.resolved_at
    return f"{_PAST[click.action]} by <@{click.user_id}> {_when(at)}"


def _when(at: datetime | None) -> str:
    """Slack shows a date token in each reader's own time zone; the text after | is
    the fallback for clients that cannot."""
    if at is None:
        return ""
    return (f"at <!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|"
            f"{timestamp(at)}>")


def _replacing(click: SlackClick, line: str, *, spent: frozenset[str]) -> dict[str, Any]:
    """The original message with `line` in place of its buttons; the buttons that still
    make sense (Resolve after an acknowledgement, link buttons always) stay below it."""
    context = {"type": "context", "elements": [{"type": "mrkdwn", "text": line}]}
    blocks: list[dict[str, Any]] = []
    for block in click.blocks:
        if block.get("type") != "actions":
            blocks.append(block)
            continue
        blocks.append(context)
        left = [e for e in block.get("elements", []) if e.get("action_id") not in spent]
        if left:
            blocks.append({**block, "elements": left})
    if context not in blocks:
        blocks.append(context)
    return {"replace_original": True, "text": line, "blocks": blocks}


def _ephemeral(text: str) -> dict[str, Any]:
    """Only the presser sees it, and the buttons stay, so they can try again."""
    return {"response_type": "ephemeral", "replace_original": False, "text": text}


def _escape(text: str) -> str:
    """Slack mrkdwn: these three are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
