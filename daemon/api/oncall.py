"""Where on-call engineers act from the message in front of them.

- `GET /actions/{token}`: a signed link's confirmation page (GET changes nothing, so
  link previews and mail scanners cannot acknowledge); `POST` performs it, once. Links
  acknowledge or resolve an incident, or approve or deny a runbook run.
- `POST /api/v1/integrations/slack/actions`: Slack's Acknowledge / Resolve buttons, and
  Approve / Deny on a run waiting for approval.
- `POST /api/v1/webhooks/actions`: chat bots and other tools, HMAC-signed.

Each is signed by its own means, so none takes the admin API token.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from sqlalchemy.exc import IntegrityError

from daemon.api.responses import json_response
from daemon.clock import Clock, timestamp
from daemon.errors import InvalidTransition, NotFound, Overloaded, UserError
from daemon.itsm.action_links import RUN_ACTIONS, ActionClaim, ActionLinks, InvalidLink
from daemon.itsm.actions import Actions
from daemon.itsm.inbound_webhook import InboundVerifier, parse
from daemon.itsm.incidents import Transition
from daemon.itsm.slack import SlackClicks, SlackVerifier, parse_click
from daemon.models import Incident, incident_key
from daemon.receivers.body import FORM, read_body
from daemon.store import Store, StoreUnavailable
from daemon.store import incidents as incident_store
from daemon.store import runbooks as run_store
from daemon.store.runbooks import RunView

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from daemon.runbooks.triggers import Triggers

log = structlog.get_logger("incidentd.oncall")

_WEBHOOK_BODY_LIMIT = 64 * 1024
_SLACK_BODY_LIMIT = 1024 * 1024  # the payload carries the whole original message
_TOKEN_LIMIT = 2048
_VERB = {"acknowledge": "Acknowledge", "resolve": "Resolve", "approve": "Approve",
         "deny": "Deny"}
_DONE = {"acknowledge": "acknowledged", "resolve": "resolved", "approve": "approved",
         "deny": "denied"}

PageHandler = Callable[[web.Request], Awaitable[web.Response]]
Spend = Callable[["AsyncConnection"], Awaitable[None]]


class RunDecisions:
    """Approve or deny a runbook run waiting for approval, from a link or a button.

    The decision is one transaction; a link is spent in that same transaction (`spend`),
    so a refused decision (already decided, expired) leaves nothing half done.
    """

    def __init__(self, *, store: Store, clock: Clock, triggers: Triggers,
                 executor_wake: Callable[[], None] | None = None) -> None:
        self._store = store
        self._clock = clock
        self._triggers = triggers
        self._wake = executor_wake

    async def __call__(self, run_id: int, decision: str, *, actor: str,
                       spend: Spend | None = None) -> RunView:
        now = self._clock.now()
        async with self._store.write() as conn:
            if spend is not None:
                await spend(conn)
            if decision == "approve":
                run = await self._triggers.approve(conn, run_id, actor=actor, now=now)
            else:
                run = await self._triggers.deny(conn, run_id, actor=actor, now=now)
        if decision == "approve" and self._wake is not None:
            self._wake()  # the executor picks it up now, not at its next poll
        return run


class OnCallRoutes:
    def __init__(self, *, actions: Actions, links: ActionLinks, store: Store, clock: Clock,
                 slack_signing_secret: str | None, slack_max_age_seconds: int,
                 webhook_secrets: Sequence[str], webhook_max_age_seconds: int,
                 triggers: Triggers | None = None,
                 executor_wake: Callable[[], None] | None = None) -> None:
        self._actions = actions
        self._links = links
        self._store = store
        self._clock = clock
        self._slack = SlackVerifier(signing_secret=slack_signing_secret,
                                    max_age_seconds=slack_max_age_seconds, clock=clock)
        self._runs = (None if triggers is None else
                      RunDecisions(store=store, clock=clock, triggers=triggers,
                                   executor_wake=executor_wake))
        self._clicks = SlackClicks(actions=actions, decide_run=self._runs)
        self._webhook = InboundVerifier(secrets=webhook_secrets,
                                        max_age_seconds=webhook_max_age_seconds, clock=clock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/actions/{token}", _as_page(self.confirm)),
            web.post("/actions/{token}", _as_page(self.perform)),
            web.post("/api/v1/integrations/slack/actions", self.slack),
            web.post("/api/v1/webhooks/actions", self.webhook),
        ]

    async def drain(self) -> None:
        """Take no more Slack clicks; wait for those in flight to move and say so."""
        self._closing = True
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._clicks.close()

    # -- signed links --------------------------------------------------------------

    async def confirm(self, request: web.Request) -> web.Response:
        claim = self._claim(request)
        if claim.action in RUN_ACTIONS:
            return await self._confirm_run(claim)
        incident = await self._incident(claim.incident_id)
        verb = _VERB[claim.action]
        key = incident_key(incident.id)
        body = (f"{_summary(incident)}"
                f"<p>{verb} it as <strong>{_e(claim.person)}</strong>?</p>"
                f'<form method="post"><button type="submit">{verb} {key}</button></form>'
                f'<p class="muted">This link works once, until {_e(timestamp(claim.expires_at))}.'
                "</p>")
        return _page(200, f"{verb} {key}?", body)

    async def perform(self, request: web.Request) -> web.Response:
        claim = self._claim(request)
        if claim.action in RUN_ACTIONS:
            return await self._perform_run(claim)
        # The link is spent in its own transaction *before* the move: Actions.move
        # commits on its own, and a crash between the two must not let the link work
        # twice. If the move is then refused (already resolved, say), the link has
        # served its purpose anyway; the page says what happened.
        try:
            async with self._store.write() as conn:
                await self._links.use(conn, claim, self._clock.now())
        except IntegrityError:  # two clicks at once on PostgreSQL: the other one won
            raise InvalidLink("this link was already used") from None
        key = incident_key(claim.incident_id)
        try:
            t = await self._actions.move(claim.incident_id, claim.action, actor=claim.person,
                                         note="via signed link")
        except InvalidTransition as err:
            return _page(409, f"Cannot {claim.action} {key}",
                         f"<p>{_e(err.message)}</p><p class=\"muted\">Nothing changed.</p>")
        log.info(f"{claim.action} via signed link", incident=key, actor=claim.person)
        incident = await self._incident(claim.incident_id)
        return _page(200, _outcome_title(claim, t), _outcome(claim, t) + _summary(incident))

    async def _confirm_run(self, claim: ActionClaim) -> web.Response:
        run = await self._run(claim)
        verb = _VERB[claim.action]
        body = (f"{_run_summary(run)}"
                f"<p>{verb} this run as <strong>{_e(claim.person)}</strong>?</p>"
                f'<form method="post"><button type="submit">{verb} run {run.id}</button>'
                "</form>"
                f'<p class="muted">This link works once, until {_e(timestamp(claim.expires_at))}.'
                "</p>")
        return _page(200, f"{verb} runbook {run.runbook}?", body)

    async def _perform_run(self, claim: ActionClaim) -> web.Response:
        decide = self._decisions()
        run_id = claim.run_id
        assert run_id is not None  # verify() insists on it for run actions

        async def spend(conn: AsyncConnection) -> None:
            await self._links.use(conn, claim, self._clock.now())
            run = await run_store.get_run(conn, run_id)
            if run is None or run.incident_id != claim.incident_id:
                raise NotFound(f"no runbook run {run_id}")  # rolls the use back too

        try:
            run = await decide(run_id, claim.action, actor=claim.person, spend=spend)
        except IntegrityError:  # two clicks at once on PostgreSQL: the other one won
            raise InvalidLink("this link was already used") from None
        except InvalidTransition as err:
            # Rolled back with the decision: the link stays unspent, and says the same again.
            return _page(409, f"Cannot {claim.action} run {run_id}",
                         f"<p>{_e(err.message)}</p><p class=\"muted\">Nothing changed.</p>")
        log.info(f"run {_DONE[claim.action]} via signed link", run=run.id,
                 runbook=run.runbook, actor=claim.person)
        title = f"Run {run.id} of {run.runbook} {_DONE[claim.action]}"
        said = (f"<p>{_DONE[claim.action].capitalize()} by <strong>{_e(claim.person)}"
                f"</strong> at {_e(timestamp(run.updated_at))}.</p>")
        return _page(200, title, said + _run_summary(run))

    def _decisions(self) -> RunDecisions:
        if self._runs is None:
            raise NotFound("runbook approvals are not enabled on this incidentd")
        return self._runs

    async def _run(self, claim: ActionClaim) -> RunView:
        self._decisions()
        assert claim.run_id is not None
        async with self._store.read() as conn:
            run = await run_store.get_run(conn, claim.run_id)
        if run is None or run.incident_id != claim.incident_id:
            raise NotFound(f"no runbook run {claim.run_id}")
        return run

    def _claim(self, request: web.Request) -> ActionClaim:
        token = request.match_info["token"]
        if len(token) > _TOKEN_LIMIT:
            raise InvalidLink("this link is not valid (garbled)")
        return self._links.verify(token)

    async def _incident(self, incident_id: int) -> Incident:
        async with self._store.read() as conn:
            incident = await incident_store.get_incident(conn, incident_id)
        if incident is None:
            raise NotFound(f"no incident {incident_key(incident_id)}")
        return incident

    # -- Slack ---------------------------------------------------------------------

    async def slack(self, request: web.Request) -> web.Response:
        """Answer Slack at once (it gives up after 3 s); move and update the message after."""
        body = await read_body(request, _SLACK_BODY_LIMIT, accept=FORM)
        self._slack.verify(request.headers, body)
        click = parse_click(body)
        if click is None:  # a link button: nothing for us to do
            return web.Response(status=200)
        if self._closing:
            raise Overloaded("shutting down; press the button again in a moment",
                             retry_after=5)
        task = asyncio.create_task(self._clicks.handle(click))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.Response(status=200)

    # -- inbound webhook -----------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        body = await read_body(request, _WEBHOOK_BODY_LIMIT)
        replay_key = self._webhook.verify(request.headers, body)
        try:
            asked = parse(body)
            t = await self._actions.move(asked.incident, asked.action, actor=asked.actor,
                                         note=asked.note)
        except BaseException:
            self._webhook.forget(replay_key)  # so the sender's retry is not taken as a replay
            raise
        log.info(f"{asked.action} via inbound webhook", incident=incident_key(asked.incident),
                 actor=asked.actor)
        already = ({"by": t.already.actor, "at": timestamp(t.already.at)}
                   if t.already else None)
        return json_response({"incident": incident_key(t.incident.id),
                              "status": t.incident.status.value,
                              "already_acknowledged": already})


def _outcome_title(claim: ActionClaim, t: Transition) -> str:
    key = incident_key(claim.incident_id)
    if t.already is not None:
        return f"{key} was already acknowledged"
    return f"{key} {_DONE[claim.action]}"


def _outcome(claim: ActionClaim, t: Transition) -> str:
    if t.already is not None:
        return (f"<p>Already acknowledged by <strong>{_e(t.already.actor)}</strong> at "
                f"{_e(timestamp(t.already.at))}. Nothing changed.</p>")
    at = t.incident.acknowledged_at if claim.action == "acknowledge" else t.incident.resolved_at
    return (f"<p>{_DONE[claim.action].capitalize()} by <strong>{_e(claim.person)}</strong>"
            f" at {_e(timestamp(at))}.</p>")


def _run_summary(run: RunView) -> str:
    incident = incident_key(run.incident_id) if run.incident_id is not None else "no incident"
    dry = " (dry run: it only records what it would do)" if run.dry_run else ""
    expires = (f"<p>Waiting for approval until {_e(timestamp(run.approval_expires_at))}</p>"
               if run.status == run_store.PENDING_APPROVAL and run.approval_expires_at
               else "")
    return (f"<p>Runbook <strong>{_e(run.runbook)}</strong>{_e(dry)}, run {run.id}, "
            f"for <strong>{incident}</strong> on CI {_e(run.ci_id or 'none')}</p>"
            f"<p>Status: <strong>{_e(run.status)}</strong></p>{expires}")


def _summary(incident: Incident) -> str:
    return (f"<p><strong>{incident_key(incident.id)}</strong> — {_e(incident.title)}</p>"
            f"<p>Status: <strong>{_e(incident.status.value)}</strong></p>")


_HEADINGS = {403: "This link cannot be used", 404: "Not found",
             409: "Not possible now", 413: "Request too large",
             503: "Please try again shortly"}


def _as_page(handler: PageHandler) -> PageHandler:
    """Link pages are for people in a browser: every outcome is an HTML page with the
    right status, never JSON and never a stack trace."""

    async def page(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except UserError as err:
            return _page(err.status, _HEADINGS.get(err.status, "Request refused"),
                         f"<p>{_e(err.message)}</p>")
        except StoreUnavailable as err:
            log.warning("store unavailable", path="/actions/…", reason=str(err))
            return _page(503, _HEADINGS[503], "<p>The database is unavailable. If you had "
                         "pressed the button, use the incident console or API instead, as "
                         "this link may be used up.</p>", headers={"Retry-After": "5"})
        except Exception:
            # The path holds the token (a credential): it stays out of the log.
            log.exception("unhandled error on an action link", method=request.method)
            return _page(500, "Something went wrong",
                         "<p>Internal error; see the incidentd log.</p>")

    return page


_STYLE = ("body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;"
          "padding:0 1rem;line-height:1.5;color:#111}"
          "button{font-size:1.1rem;padding:.6rem 1.4rem;cursor:pointer}.muted{color:#555}")

# No scripts, no external assets, no framing, no referrer (the URL holds the token),
# and no caching (the page tells a state that changes).
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; "
                                "form-action 'self'; frame-ancestors 'none'"),
}


def _page(status: int, title: str, body: str, *, headers: dict[str, str] | None = None
          ) -> web.Response:
    text = ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)} · incidentd</title><style>{_STYLE}</style></head>"
            f"<body><h1>{_e(title)}</h1>{body}</body></html>")
    return web.Response(status=status, text=text, content_type="text/html",
                        headers={**_PAGE_HEADERS, **(headers or {})})


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
