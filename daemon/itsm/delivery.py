"""The outbox sender: delivers pending notifications, retrying, until delivered or dead.

One pass (`Sender.run_once`):

1. In a short transaction, claim the due rows (pending, `next_attempt_at <= now`,
   oldest first, a bounded batch; `FOR UPDATE SKIP LOCKED` on PostgreSQL, so
   replicas share the work) and lease them: `next_attempt_at` moves past the
   delivery timeout. A daemon killed mid-delivery therefore retries the row
   when the lease ends; nothing is lost. A row whose target is over its rate
   limit is put off until the target has a token again (not an attempt).
2. Deliver outside any transaction.
3. In another short transaction, record each outcome: 2xx → `delivered`;
   network error, timeout, 408, 429 or 5xx → retried after an exponential
   backoff with jitter (tenacity's `wait_exponential_jitter`), and at least the
   target's `Retry-After`; after `retry.max_attempts` attempts, or at once on
   any other answer (the target refuses the request; repeating it will not
   help) → `dead`, visible at `GET /api/v1/notifications?state=dead`.

Delivery is at least once: a daemon killed after the target accepted but
before the outcome was recorded delivers again. Each delivery carries the
event id, the same on every attempt, so receivers deduplicate on it.

Webhook targets get `POST <url>` with the JSON envelope as the body and these
headers:

- `Content-Type: application/json`, `User-Agent: incidentd/<version>`
- `X-Incidentd-Event-Id: <event id>` (a UUID; the same on every attempt)
- `X-Incidentd-Event-Type: <event type>` (e.g. `incident.triggered`)
- the target's configured `headers`
- when the target has secrets: `X-Incidentd-Signature: v1=<hex>[,v1=<hex>...]`,
  where each `<hex>` is the lowercase hex HMAC-SHA256 of the exact request body
  bytes keyed with one secret (UTF-8), one `v1=` per configured secret, in
  config order. During a rotation configure both secrets: a receiver holding
  either one computes HMAC-SHA256(its secret, body) and accepts the request
  when any `v1=` value matches (compare in constant time).

Slack targets get a Block Kit message (`daemon.itsm.slack_messages`), posted to
the incoming-webhook URL (its answer is `200 ok`), or to
`{api_url}/chat.postMessage` with the bot token, where Slack answers 200 with
`{"ok": false, "error": ...}` on failure: `ratelimited` is retried, any other
error is dead. The incoming-webhook URL is a secret: it never reaches a log
line or `last_error`, and neither does any other secret.

ITSM connectors (`daemon.itsm.connectors`) are targets too: their rows are claimed,
rate limited, retried and dead-lettered the same way, but delivered by the sync
engine (find or create the suite's ticket, then update it) instead of one POST, and
one incident's rows for one connector go in order (see `store.due`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import structlog
from tenacity import RetryCallState, Retrying
from tenacity.wait import wait_exponential_jitter

from daemon import __version__, metrics
from daemon.clock import Clock
from daemon.config import NotificationsConfig, NotificationTarget, RetryConfig, SecretRef
from daemon.itsm import slack_messages
from daemon.itsm.connectors.base import ConnectorError
from daemon.itsm.replies import parse_retry_after, read_capped
from daemon.itsm.signing import signature
from daemon.models import incident_key
from daemon.secrets import resolve
from daemon.store import Store, StoreUnavailable
from daemon.store import notifications as store
from daemon.store.notifications import Notification, Outcome, State

if TYPE_CHECKING:
    from daemon.itsm.connectors.sync import ConnectorSync

log = structlog.get_logger("incidentd.notify")

BATCH = 100
# The lease outlasts the delivery timeout by this much (time to record the outcome).
LEASE_MARGIN_SECONDS = 5.0
_ERROR_CHARS = 300
_BODY_BYTES = 64 * 1024
_RETRYABLE_STATUS = frozenset({408, 429})


# -- outcomes of one attempt ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """What one attempt came to: accepted, worth retrying, or refused for good."""

    delivered: bool
    retryable: bool
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds, from the target's Retry-After


def classify(status: int, *, retry_after: float | None, body: str) -> Answer:
    if 200 <= status < 300:
        return Answer(delivered=True, retryable=False, status=status)
    retryable = status in _RETRYABLE_STATUS or status >= 500
    snippet = " ".join(body.split())[:_ERROR_CHARS]
    error = f"HTTP {status}" + (f": {snippet}" if snippet else "")
    return Answer(delivered=False, retryable=retryable, status=status, error=error,
                  retry_after=retry_after)


def network_error(err: BaseException, timeout: float) -> Answer:
    """A failure without an answer; described without the URL (it may be a secret)."""
    if isinstance(err, TimeoutError):
        text = f"no answer within {timeout:g}s"
    elif isinstance(err, aiohttp.ClientConnectorError):
        text = f"cannot connect: {err.os_error.strerror or type(err.os_error).__name__}"
    elif isinstance(err, OSError) and err.strerror:
        text = f"network error: {err.strerror}"
    else:
        text = f"network error: {type(err).__name__}"
    return Answer(delivered=False, retryable=True, error=text)


def backoff(retry: RetryConfig) -> wait_exponential_jitter:
    # tenacity 9.2 renamed `initial` to `multiplier` (same meaning) and warns on the old name.
    if "multiplier" in inspect.signature(wait_exponential_jitter).parameters:
        return wait_exponential_jitter(multiplier=retry.initial_seconds, max=retry.max_seconds)
    return wait_exponential_jitter(initial=retry.initial_seconds, max=retry.max_seconds)


def wait_after(wait: wait_exponential_jitter, attempts: int) -> float:
    """tenacity's wait after the `attempts`-th failed attempt (1 → about `initial`)."""
    state = RetryCallState(Retrying(), None, (), {})
    state.attempt_number = attempts
    return float(wait(state))


# -- per-target rate limit --------------------------------------------------------


class TokenBucket:
    """`per_minute` deliveries a minute, in bursts of up to `per_minute`."""

    def __init__(self, per_minute: int, now: datetime) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._tokens = self._capacity
        self._at = now

    def take(self, now: datetime) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        elapsed = max(0.0, (now - self._at).total_seconds())
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        self._at = max(now, self._at)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


# -- targets --------------------------------------------------------------------


class Target:
    """One configured target with its secrets resolved, and how to post to it."""

    def __init__(self, config: NotificationTarget) -> None:
        self.config = config
        self.name = config.name
        self.signing = [s.encode() for s in (_resolved(config.name, r) for r in config.secrets)
                        if s]
        self.webhook_url = _resolved(config.name, config.webhook_url)
        self.bot_token = _resolved(config.name, config.bot_token)
        # Every secret value, to scrub from anything a target says back.
        self.hidden = [v for v in (self.webhook_url, self.bot_token,
                                   *(s.decode() for s in self.signing)) if v]

    def request(self, row: Notification) -> tuple[str, bytes, dict[str, str]] | str:
        """(url, body, headers) to post, or why it cannot be sent."""
        assert row.payload is not None
        base = {"Content-Type": "application/json", "User-Agent": f"incidentd/{__version__}"}
        if self.config.type == "webhook":
            assert self.config.url is not None
            body = orjson.dumps(row.payload)
            headers = base | dict(self.config.headers) | {
                "X-Incidentd-Event-Id": row.event_id, "X-Incidentd-Event-Type": row.event_type}
            if self.signing:
                headers["X-Incidentd-Signature"] = signature(self.signing, body)
            return self.config.url, body, headers
        text = slack_messages.message(row.payload)
        if self.webhook_url:
            return self.webhook_url, orjson.dumps(text), base
        if self.bot_token and self.config.channel:
            body = orjson.dumps({"channel": self.config.channel} | text)
            headers = base | {"Content-Type": "application/json; charset=utf-8",
                              "Authorization": f"Bearer {self.bot_token}"}
            return f"{self.config.api_url.rstrip('/')}/chat.postMessage", body, headers
        which = self.config.webhook_url or self.config.bot_token
        return f"the Slack secret ({which.describe() if which else 'none'}) has no value"

    def redact(self, text: str) -> str:
        for value in self.hidden:
            text = text.replace(value, "<secret>")
        return text

    @property
    def slack_api(self) -> bool:
        return self.config.type == "slack" and not self.webhook_url


def build_targets(configs: Sequence[NotificationTarget]) -> dict[str, Target]:
    """The targets with their secrets resolved (`ConfigError`: a secret file is unreadable)."""
    return {t.name: Target(t) for t in configs}


def _resolved(target: str, ref: SecretRef | None) -> str | None:
    if ref is None:
        return None
    value = resolve(ref)
    if value is None:
        log.warning("notification target secret has no value; it is left out",
                    target=target, secret=ref.describe())
    return value


# -- the sender -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claimed:
    row: Notification
    target: Target


@dataclass(frozen=True, slots=True)
class _Settings:
    """What the configuration says; a reload replaces it whole, and each pass reads it once."""

    retry: RetryConfig
    poll_seconds: float
    targets: Mapping[str, Target]
    wait: wait_exponential_jitter

    @classmethod
    def of(cls, config: NotificationsConfig, targets: Mapping[str, Target]) -> _Settings:
        return cls(retry=config.retry, poll_seconds=config.poll_interval_seconds,
                   targets=dict(targets), wait=backoff(config.retry))


class Sender:
    """Delivers the outbox: a background loop, or one pass at a time (`run_once`)."""

    def __init__(self, *, config: NotificationsConfig, store: Store, clock: Clock,
                 connectors: ConnectorSync | None = None) -> None:
        self._store = store
        self._clock = clock
        self._settings = _Settings.of(config, build_targets(config.targets))
        self._connectors = connectors
        # A connector is claimed and rate limited as a target of its own name.
        self._connector_targets = {c.name: Target(NotificationTarget(
            name=c.name, type="webhook", url=c.url, routes=[],
            rate_limit_per_minute=c.rate_limit_per_minute)) for c in connectors or ()}
        self._buckets: dict[str, TokenBucket] = {}
        self._session: aiohttp.ClientSession | None = None
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="outbox-sender")

    def wake(self) -> None:
        self._woken.set()

    def reconfigure(self, config: NotificationsConfig, targets: Mapping[str, Target]) -> None:
        """A configuration reload: the next pass uses these targets, retry and poll settings;
        the pass in flight finishes with the old ones. Rows of a removed target go dead
        (visible, re-sendable) when they fall due."""
        old = self._settings.targets
        # A bucket goes with its target, and starts afresh when the target's limit changed;
        # the connectors' buckets (not configured targets) stay.
        self._buckets = {
            name: bucket for name, bucket in self._buckets.items()
            if name not in old or (name in targets and targets[name].config.rate_limit_per_minute
                                   == old[name].config.rate_limit_per_minute)}
        self._settings = _Settings.of(config, targets)
        self._woken.set()

    async def stop(self) -> None:
        """Let the pass in flight finish (bounded by the delivery timeout), then return."""
        self._stopping = True
        self._woken.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), self._settings.retry.timeout_seconds
                                       + LEASE_MARGIN_SECONDS)
            except TimeoutError:
                # The leases of what it was delivering run out and those rows retry.
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run_once(self) -> int:
        """Deliver what is due now; returns the number of delivery attempts made."""
        # A look on a reader first: an idle pass never takes SQLite's one write lock
        # away from the ingest writer.
        settings = self._settings
        async with self._store.read() as conn:
            pending, due = await store.pending_and_due(conn, self._clock.now())
        claimed = await self._claim(settings) if due else []
        if claimed:
            answers = await asyncio.gather(*(self._deliver(c, settings) for c in claimed))
            await self._record(list(zip(claimed, answers, strict=True)), settings)
            async with self._store.read() as conn:
                pending, _ = await store.pending_and_due(conn, self._clock.now())
        metrics.OUTBOX_PENDING.set(pending)
        return len(claimed)

    # -- the loop ------------------------------------------------------------

    async def _loop(self) -> None:
        store_down = False  # said once per outage, not once per pass
        while not self._stopping:
            self._woken.clear()
            try:
                attempts = await self.run_once()
            except StoreUnavailable as err:  # the database is away: the next pass tries again
                if not store_down:
                    log.warning("outbox: store unavailable; retrying each poll", reason=str(err))
                store_down = True
                attempts = 0
            except Exception as err:  # a bug: the loop must outlive it
                log.warning("outbox pass failed; retrying", reason=f"{type(err).__name__}")
                attempts = 0
            else:
                if store_down:
                    log.info("outbox: store reachable again; delivering")
                store_down = False
            if attempts >= BATCH or self._stopping:
                continue  # more may be due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self._settings.poll_seconds)

    # -- claiming ------------------------------------------------------------

    async def _claim(self, settings: _Settings) -> list[_Claimed]:
        now = self._clock.now()
        lease = now + timedelta(seconds=settings.retry.timeout_seconds + LEASE_MARGIN_SECONDS)
        claimed: list[_Claimed] = []
        gone: list[tuple[Notification, Outcome]] = []
        later: list[tuple[int, datetime]] = []
        async with self._store.write() as conn:
            for row in await store.due(conn, now, limit=BATCH,
                                       ordered=self._connector_targets.keys()):
                target = (settings.targets.get(row.target)
                          or self._connector_targets.get(row.target))
                if target is None:
                    # Removed from the config: visible and re-sendable once it is back.
                    gone.append((row, _dead(row, None, f"target {row.target!r} is no longer "
                                                       "configured", attempts=row.attempts)))
                    continue
                wait = self._bucket(target, now).take(now)
                if wait > 0:
                    later.append((row.id, now + timedelta(seconds=wait)))
                    continue
                claimed.append(_Claimed(row, target))
            await store.postpone(conn, [(c.row.id, lease) for c in claimed] + later, now)
            await store.record(conn, [outcome for _, outcome in gone], now)
        for row, _ in gone:
            metrics.NOTIFICATIONS.labels(row.target, "dead").inc()
        return claimed

    def _bucket(self, target: Target, now: datetime) -> TokenBucket:
        bucket = self._buckets.get(target.name)
        if bucket is None:
            bucket = self._buckets[target.name] = TokenBucket(
                target.config.rate_limit_per_minute, now)
        return bucket

    # -- delivering ----------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _deliver(self, claimed: _Claimed, settings: _Settings) -> Answer:
        if claimed.row.target in self._connector_targets:
            return await self._sync(claimed.row, settings)
        target = claimed.target
        timeout = settings.retry.timeout_seconds
        try:
            request = target.request(claimed.row)
        except (KeyError, TypeError, ValueError) as err:
            # A payload this version cannot render: dead, visible, not retried forever.
            log.exception("cannot build the notification request", target=target.name,
                          notification_id=claimed.row.id)
            request = f"cannot build the request ({type(err).__name__})"
        if isinstance(request, str):
            return Answer(delivered=False, retryable=False, error=request)
        url, body, headers = request
        try:
            # The timeout per request: a reload may change it while the session lives on.
            async with self._client().post(url, data=body, headers=headers,
                                           allow_redirects=False,
                                           timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                text = (await read_capped(resp, _BODY_BYTES)).decode("utf-8", "replace")
                after = parse_retry_after(resp.headers.get("Retry-After"), self._clock.now())
                answer = classify(resp.status, retry_after=after, body=text)
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            return network_error(err, timeout)
        if answer.delivered and target.slack_api:
            answer = _slack_api(answer, text)
        if answer.error:  # a target may echo what it was sent, secrets included
            answer = dataclasses.replace(answer, error=target.redact(answer.error))
        return answer

    async def _sync(self, row: Notification, settings: _Settings) -> Answer:
        """An ITSM connector's row: the sync engine, its failures as answers."""
        assert self._connectors is not None
        try:
            await self._connectors.deliver(row, self._client(),
                                           timeout=settings.retry.timeout_seconds)
        except ConnectorError as err:
            return Answer(delivered=False, retryable=err.retryable, status=err.status,
                          error=err.message[:_ERROR_CHARS], retry_after=err.retry_after)
        except StoreUnavailable:
            return Answer(delivered=False, retryable=True, error="store unavailable")
        except Exception as err:  # a bug: retried (and visible) rather than the pass lost
            log.exception("connector delivery failed", target=row.target,
                          notification_id=row.id)
            return Answer(delivered=False, retryable=True,
                          error=f"internal error ({type(err).__name__})")
        return Answer(delivered=True, retryable=False)

    # -- recording -----------------------------------------------------------

    async def _record(self, results: list[tuple[_Claimed, Answer]], settings: _Settings
                      ) -> None:
        now = self._clock.now()
        outcomes = [_outcome(c.row, a, now, settings) for c, a in results]
        async with self._store.write() as conn:
            await store.record(conn, outcomes, now)
        for (claimed, answer), outcome in zip(results, outcomes, strict=True):
            metrics.NOTIFICATIONS.labels(claimed.target.name, _label(outcome)).inc()
            _log(claimed.row, answer, outcome)


def _outcome(row: Notification, answer: Answer, now: datetime, settings: _Settings) -> Outcome:
    attempts = row.attempts + 1
    if answer.delivered:
        return Outcome(id=row.id, state=State.DELIVERED, attempts=attempts,
                       next_attempt_at=None, last_status=answer.status, last_error=None,
                       delivered_at=now)
    if not answer.retryable:
        return _dead(row, answer.status, answer.error or "refused", attempts=attempts)
    if attempts >= settings.retry.max_attempts:
        return _dead(row, answer.status, f"gave up after {attempts} attempts: "
                                         f"{answer.error}", attempts=attempts)
    wait = max(wait_after(settings.wait, attempts), answer.retry_after or 0.0)
    return Outcome(id=row.id, state=State.PENDING, attempts=attempts,
                   next_attempt_at=now + timedelta(seconds=wait),
                   last_status=answer.status, last_error=answer.error, delivered_at=None)


def _slack_api(answer: Answer, text: str) -> Answer:
    """chat.postMessage answers 200 even on failure: `{"ok": false, "error": ...}`."""
    try:
        reply: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        return Answer(delivered=False, retryable=True, status=answer.status,
                      error="slack: the answer is not JSON")
    if isinstance(reply, dict) and reply.get("ok") is True:
        return answer
    error = str(reply.get("error") if isinstance(reply, dict) else "unknown")[:_ERROR_CHARS]
    return Answer(delivered=False, retryable=error == "ratelimited", status=answer.status,
                  error=f"slack: {error}")


def _dead(row: Notification, status: int | None, error: str, *, attempts: int) -> Outcome:
    return Outcome(id=row.id, state=State.DEAD, attempts=attempts, next_attempt_at=None,
                   last_status=status, last_error=error, delivered_at=None)


def _label(outcome: Outcome) -> str:
    return {State.DELIVERED: "delivered", State.DEAD: "dead"}.get(outcome.state, "retry")


def _log(row: Notification, answer: Answer, outcome: Outcome) -> None:
    fields = {"target": row.target, "event_type": row.event_type, "event_id": row.event_id,
              "incident": incident_key(row.incident_id) if row.incident_id else None,
              "attempts": outcome.attempts, "status": answer.status, "error": outcome.last_error}
    if outcome.state is State.DEAD:
        log.warning("notification dead: not delivered and not retried; resend it from "
                    "/api/v1/notifications once the target is fixed", **fields)
    elif outcome.state is State.PENDING:
        log.info("notification not delivered; will retry", **fields,
                 next_attempt_at=outcome.next_attempt_at)
    else:
        log.debug("notification delivered", **fields)
