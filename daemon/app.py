"""The composition root: builds every component from config and runs them.

No logic lives here; reading this file top to bottom shows the whole daemon:
receivers → ingest writer (dedup → correlation → incidents) → store, the API
beside it, and the start-up and shutdown order.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from daemon import __version__, metrics
from daemon import logging as daemon_logging
from daemon.api.auth import ApiAccess, ApiGuard
from daemon.api.changes import ChangeRoutes
from daemon.api.cmdb import CmdbRoutes
from daemon.api.connectors import connector_routes
from daemon.api.health import HealthRoutes
from daemon.api.httpserver import GuardedSite, ServerLimits, handler_options
from daemon.api.incidents import IncidentRoutes
from daemon.api.notifications import NotificationRoutes
from daemon.api.oncall import OnCallRoutes
from daemon.api.problems import ProblemRoutes
from daemon.api.reports import ReportRoutes
from daemon.api.responses import errors_middleware
from daemon.api.runbooks import RunbookRoutes
from daemon.api.session import Sessions, SessionSettings
from daemon.clock import Clock, SystemClock
from daemon.config import Config, ConfigError, IntegrationConfig, SecretRef
from daemon.correlation.binding import Binder, compile_rules
from daemon.correlation.engine import Correlator
from daemon.correlation.flapping import FlapDetector
from daemon.correlation.topology import TopologyHolder
from daemon.ingest import IngestWriter, Pipeline, Stages
from daemon.itsm.actions import Actions
from daemon.itsm.changes import ChangeRecorder
from daemon.itsm.cmdb import Cmdb, CmdbInvalid
from daemon.itsm.connectors.sync import ConnectorSync
from daemon.itsm.delivery import Sender, Target, build_targets
from daemon.itsm.followup import FollowUp
from daemon.itsm.maintenance import Maintenance
from daemon.itsm.priority import PriorityMatrix
from daemon.leader import Leadership
from daemon.receivers.auth import Credentials
from daemon.receivers.endpoint import Intake, Integration
from daemon.receivers.integrations import build_integrations
from daemon.reloading import Loader, Refused, Reloader
from daemon.runbooks.catalog import Catalog, CatalogHolder, CatalogInvalid
from daemon.runbooks.executor import Executor
from daemon.runbooks.triggers import Triggers
from daemon.scheduler import Jobs, reschedule, start_scheduler
from daemon.secrets import resolve, resolve_or_generate
from daemon.store import Store, StoreUnavailable, gauges, migrate
from daemon.store.engine import wait_for_database
from daemon.web.console import setup_console
from daemon.web.deps import ConsoleDeps

log = structlog.get_logger("incidentd")


@dataclass(slots=True)
class Components:
    store: Store
    writer: IngestWriter
    health: HealthRoutes
    app: web.Application
    topology: TopologyHolder
    cmdb: Cmdb
    scheduler: AsyncIOScheduler
    jobs: Jobs
    followup: FollowUp
    sender: Sender
    oncall: OnCallRoutes
    catalog: CatalogHolder
    executor: Executor
    actions: Actions
    leadership: Leadership
    # What a configuration reload reconfigures, besides the above.
    clock: Clock
    pipeline: Pipeline
    intake: Intake
    guard: ApiGuard
    triggers: Triggers
    runbook_routes: RunbookRoutes
    reloader: Reloader
    link_secret: str
    sessions: Sessions
    # What each secret reference read when its part was built (see `secret_values`).
    secrets: dict[str, tuple[str | None, ...]] = field(default_factory=dict)


def api_credentials(config: Config) -> Credentials:
    resolved = resolve_or_generate(config.api.tokens)
    if resolved.generated:
        log.warning(
            "no API token configured; generated one for this run (set INCIDENTD_API_TOKEN to "
            "keep it stable)", generated_token=resolved.generated,
        )
    return Credentials(bearer=resolved.values)


def api_access(config: Config) -> ApiAccess:
    return ApiAccess(api_credentials(config), read_only_credentials(config),
                     config.api.protect_metrics)


def read_only_credentials(config: Config) -> Credentials | None:
    values = tuple(v for v in (resolve(r) for r in config.api.read_only_tokens) if v)
    return Credentials(bearer=values) if values else None


def link_secret(config: Config) -> str:
    resolved = resolve_or_generate([config.notifications.action_links.secret])
    if resolved.generated:
        log.warning("no action-link secret configured; links in notifications work until "
                    "this process stops (set INCIDENTD_ACTION_LINK_SECRET to keep them valid)")
    return resolved.values[0]


def session_settings(config: Config) -> SessionSettings:
    """The console's session secret (generated per process when unset) and lifetime."""
    resolved = resolve_or_generate([config.console.session_secret])
    if resolved.generated:
        log.warning("no console session secret configured; console sign-ins last until "
                    "this process stops (set INCIDENTD_SESSION_SECRET to keep them, and to "
                    "share them between replicas)")
    return SessionSettings(secret=resolved.values[0], hours=config.console.session_hours)


def build_oncall(config: Config, *, actions: Actions, followup: FollowUp, store: Store,
                 clock: Clock, triggers: Triggers | None = None,
                 executor_wake: Callable[[], None] | None = None) -> OnCallRoutes:
    """Acknowledge and resolve from signed links, Slack buttons and signed webhooks."""
    inbound = config.notifications
    return OnCallRoutes(
        actions=actions, links=followup.links, store=store, clock=clock,
        slack_signing_secret=resolve(inbound.slack.signing_secret),
        slack_max_age_seconds=inbound.slack.max_age_seconds,
        webhook_secrets=[v for v in (resolve(r) for r in inbound.inbound_webhook.secrets) if v],
        webhook_max_age_seconds=inbound.inbound_webhook.max_age_seconds,
        triggers=triggers, executor_wake=executor_wake,
    )


def build_stages(config: Config, topology: TopologyHolder) -> Stages:
    """The configured ingest stages: bind → flapping → maintenance → correlation → priority."""
    corr = config.correlation
    return Stages(
        binder=Binder(compile_rules(corr.binding), topology),
        correlator=Correlator(
            config=corr, topology=topology,
            group_by={i.name: i.group_by for i in config.integrations if i.group_by is not None},
        ),
        flapping=FlapDetector(changes=corr.flapping_changes,
                              window_seconds=corr.flapping_window_seconds),
        maintenance=Maintenance(config.changes, topology, depth=corr.max_depth),
        priorities=PriorityMatrix(config.priority),
        reopen_window_seconds=config.lifecycle.reopen_window_seconds,
    )


def build_pipeline(config: Config, topology: TopologyHolder, clock: Clock,
                   followup: FollowUp | None = None) -> Pipeline:
    """The ingest stages, in order: bind → dedup → flapping → maintenance → correlation →
    incidents → follow-up."""
    return Pipeline(
        stages=build_stages(config, topology),
        followup=followup or FollowUp(config, topology, clock=clock),
        topology=topology,
        clock=clock,
    )


def build_app(config: Config, *, store: Store, clock: Clock, guard: ApiGuard, intake: Intake,
              health: HealthRoutes, cmdb: Cmdb, topology: TopologyHolder,
              followup: FollowUp, actions: Actions, oncall: OnCallRoutes,
              sender: Sender) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware, guard.middleware()],
        # Bodies are limited per endpoint (with a 413 in JSON); this is only a backstop.
        client_max_size=max(config.server.max_body_bytes, 1024 * 1024) * 2,
    )
    app.add_routes(health.routes())
    app.add_routes(IncidentRoutes(store=store, actions=actions, followup=followup,
                                  clock=clock).routes())
    app.add_routes(ProblemRoutes(store=store, clock=clock, problems=followup.problems).routes())
    app.add_routes(ChangeRoutes(store=store, clock=clock, topology=topology).routes())
    app.add_routes(ReportRoutes(store=store, clock=clock).routes())
    app.add_routes(NotificationRoutes(store=store, clock=clock, sender=sender).routes())
    app.add_routes(oncall.routes())
    app.add_routes(CmdbRoutes(cmdb=cmdb, store=store).routes())
    app.add_routes(intake.routes())
    return app


async def open_store(config: Config) -> Store:
    """The store, migrated. PostgreSQL that is not there yet (starting beside us, being
    restarted) is waited for, up to `database.connect_timeout_seconds`, each try logged;
    then, or at once for a wrong password or a missing database, a `ConfigError` says
    which database and why (the process exits non-zero, no traceback)."""
    db = config.database
    store = Store.open(db.url, sqlite_synchronous=db.sqlite_synchronous, pool_size=db.pool_size)

    async def prepare() -> None:
        if db.auto_migrate:
            await migrate.upgrade(store)
        async with store.read() as conn:
            metrics.OPEN_INCIDENTS.replace(await gauges.open_incidents(conn))

    waited = db.connect_timeout_seconds if store.dialect == "postgresql" else 0.0
    try:
        await wait_for_database(prepare, total_seconds=waited, url=_safe_url(db.url))
    except (StoreUnavailable, DBAPIError) as err:
        await store.close()
        within = f" within {waited:g} s" if waited else ""
        raise ConfigError([f"database.url: cannot use the database {_safe_url(db.url)}{within}: "
                           f"{_first_line(err)}"]) from None
    return store


def _first_line(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or err
    text = str(orig).splitlines()[0] if str(orig) else type(orig).__name__
    return text[:300]


async def load_cmdb(config: Config, store: Store, clock: Clock) -> tuple[Cmdb, TopologyHolder]:
    """The CMDB from the store, then from its files (which win); a bad file stops the start."""
    topology = TopologyHolder()
    cmdb = Cmdb(store=store, clock=clock, topology=topology, files=config.cmdb.files)
    try:
        await cmdb.load_from_store()
        if config.cmdb.files:
            await cmdb.reload_files()
    except CmdbInvalid as err:
        raise ConfigError(err.describe()) from None
    return cmdb, topology


def load_runbooks(config: Config) -> CatalogHolder:
    try:
        return CatalogHolder(files=config.runbooks.files)
    except CatalogInvalid as err:
        raise ConfigError(err.problems) from None


async def start(config: Config, *, clock: Clock | None = None, loader: Loader | None = None,
                source: str = "<config>") -> Components:
    """Open the store, migrate, rebuild caches, start the workers; return the wired app.

    `loader` reads the configuration again on a reload (default: `config` as given);
    `source` names it in the problems a reload reports."""
    clock = clock or SystemClock()
    leadership = Leadership(config.database.url,
                            timeout_seconds=config.database.leader_timeout_seconds)
    await leadership.start()  # SQLite: refuses a second daemon on the same file
    store = await open_store(config)
    try:
        cmdb, topology = await load_cmdb(config, store, clock)
        catalog = load_runbooks(config)
    except ConfigError:
        await store.close()
        await leadership.stop()
        raise
    secret = link_secret(config)
    followup = FollowUp(config, topology, clock=clock, link_secret=secret)
    triggers = Triggers(catalog=catalog, config=config.runbooks, topology=topology)
    followup.automation = triggers.create_runs
    triggers.followup = followup
    pipeline = build_pipeline(config, topology, clock, followup)
    writer = IngestWriter(
        store=store, pipeline=pipeline,
        max_queued_alerts=config.ingest.max_queued_alerts,
        max_batch_alerts=config.ingest.max_batch_alerts,
        retry_after_seconds=config.ingest.retry_after_seconds,
    )
    writer.start()
    connectors = ConnectorSync.build(config.connectors, store=store, clock=clock,
                                     topology=topology)
    sender = Sender(config=config.notifications, store=store, clock=clock,
                    connectors=connectors)
    followup.wake = sender.wake
    sender.start()
    actions = Actions(store=store, clock=clock, matrix=PriorityMatrix(config.priority),
                      followup=followup)
    executor = Executor(store=store, clock=clock, catalog=catalog, config=config.runbooks,
                        actions=actions, escalations_escalate=actions.escalate,
                        followup=followup)
    followup.wake_runs = executor.wake
    # Runs a dead process left mid-step are reported, never re-run blindly.
    await executor.interrupt_running()
    executor.start()
    jobs = Jobs(store=store, clock=clock, config=config, followup=followup, pipeline=pipeline,
                triggers=triggers, leadership=leadership)
    scheduler = start_scheduler(jobs, config)
    health = HealthRoutes(store=store)
    oncall = build_oncall(config, actions=actions, followup=followup, store=store, clock=clock,
                          triggers=triggers, executor_wake=executor.wake)
    sessions = Sessions(session_settings(config), clock=clock, store=store)
    guard = ApiGuard(api_access(config), sessions)
    intake = Intake(integrations=build_integrations(config, clock), alerts=writer,
                    changes=ChangeRecorder(store=store, clock=clock, topology=topology),
                    clock=clock)
    app = build_app(config, store=store, clock=clock, guard=guard, intake=intake, health=health,
                    cmdb=cmdb, topology=topology, followup=followup, actions=actions,
                    oncall=oncall, sender=sender)
    runbook_routes = RunbookRoutes(store=store, clock=clock, catalog=catalog, triggers=triggers,
                                   executor_wake=executor.wake,
                                   dry_run_all=config.runbooks.dry_run)
    app.add_routes(runbook_routes.routes())
    app.add_routes(connector_routes(config.connectors, sync=connectors, store=store,
                                    actions=actions, clock=clock).routes())

    async def apply(running: Config, new: Config) -> None:
        await apply_config(components, running, new, source=source)

    reloader = Reloader(loader=loader or (lambda: config), running=config, apply=apply)
    app.add_routes(reloader.routes())
    setup_console(app, ConsoleDeps(store=store, clock=clock, topology=topology, cmdb=cmdb,
                                   followup=followup), guard=guard)
    components = Components(
        store=store, writer=writer, health=health, app=app, topology=topology, cmdb=cmdb,
        scheduler=scheduler, jobs=jobs, followup=followup, sender=sender, oncall=oncall,
        catalog=catalog, executor=executor, actions=actions, leadership=leadership,
        clock=clock, pipeline=pipeline, intake=intake, guard=guard, triggers=triggers,
        runbook_routes=runbook_routes, reloader=reloader, link_secret=secret,
        sessions=sessions, secrets=secret_values(config))
    return components


async def stop(components: Components) -> None:
    # Timer jobs finish, then the scheduler stops: its shutdown cancels the jobs still
    # running (a transaction cut mid-way, a traceback in the log for nothing).
    components.scheduler.pause()
    await components.jobs.drain()
    await asyncio.sleep(0)  # jobs handed out just before the pause see `closing` and end
    components.scheduler.shutdown(wait=False)
    await components.leadership.stop()  # another replica takes the timers now
    await components.oncall.drain()
    await components.executor.stop()  # a run cut short is recorded as interrupted
    await components.cmdb.drain()
    await components.writer.stop()
    # Last before the store: what the writer committed is in the outbox by now;
    # what is not delivered yet waits there for the next start.
    await components.sender.stop()
    await components.store.close()


# -- configuration reload (SIGHUP, POST /-/reload; see `daemon.reloading`) ------------


def reload(components: Components) -> None:
    """SIGHUP: reload the configuration in the background; the outcome is logged."""
    components.reloader.on_signal()


@dataclass(frozen=True, slots=True)
class _Rebuilt:
    """Every part a new configuration needs, built before any is swapped in."""

    access: ApiAccess
    integrations: list[Integration]
    stages: Stages
    matrix: PriorityMatrix
    link_secret: str
    sessions: SessionSettings
    targets: dict[str, Target]
    catalog: Catalog
    secrets: dict[str, tuple[str | None, ...]]


async def apply_config(c: Components, running: Config, new: Config, *, source: str) -> None:
    """Build every new part (a failure changes nothing), write the CMDB files to the store
    (refused whole, too), then swap the parts in with no await in between: a request or
    batch reads its configuration once, so none sees half of each."""
    rebuilt = _rebuild(c, running, new, source=source)
    await _reload_cmdb(c.cmdb, new)
    c.guard.reconfigure(rebuilt.access)  # sessions of a removed token end here too
    c.sessions.reconfigure(rebuilt.sessions)
    c.intake.reconfigure(rebuilt.integrations)
    c.pipeline.reconfigure(rebuilt.stages)
    c.followup.reconfigure(new, rebuilt.link_secret)
    c.actions.reconfigure(rebuilt.matrix)
    c.sender.reconfigure(new.notifications, rebuilt.targets)
    c.catalog.replace(rebuilt.catalog)
    c.triggers.reconfigure(new.runbooks)
    c.executor.reconfigure(new.runbooks)
    c.runbook_routes.reconfigure(dry_run_all=new.runbooks.dry_run)
    c.jobs.reconfigure(new)
    reschedule(c.scheduler, running, new)
    daemon_logging.set_level(new.logging.level)
    c.link_secret, c.secrets = rebuilt.link_secret, rebuilt.secrets


def _rebuild(c: Components, running: Config, new: Config, *, source: str) -> _Rebuilt:
    try:
        catalog = load_runbooks(new).current
    except ConfigError as err:
        raise Refused("runbook files invalid", err.problems) from None
    try:
        seen = secret_values(new)
        # A part whose secrets read as before is kept: a token generated because none is
        # configured then stays the same, and so does an integration's replay memory.
        admin = (c.guard.access.admin if seen["api.tokens"] == c.secrets.get("api.tokens")
                 else api_credentials(new))
        unchanged = seen[_LINK] == c.secrets.get(_LINK)
        # A generated session secret is kept, or every reload would sign everyone out.
        session_secret = (c.sessions.settings.secret if seen[_SESSION] == c.secrets.get(_SESSION)
                          else session_settings(new).secret)
        return _Rebuilt(
            access=ApiAccess(admin, read_only_credentials(new), new.api.protect_metrics),
            integrations=_integrations(c, running, new, seen),
            stages=build_stages(new, c.topology),
            matrix=PriorityMatrix(new.priority),
            link_secret=c.link_secret if unchanged else link_secret(new),
            sessions=SessionSettings(secret=session_secret, hours=new.console.session_hours),
            targets=build_targets(new.notifications.targets),
            catalog=catalog,
            secrets=seen,
        )
    except ConfigError as err:
        raise Refused("configuration invalid", [f"{source}: {p}" for p in err.problems]) from None


def _integrations(c: Components, running: Config, new: Config,
                  seen: dict[str, tuple[str | None, ...]]) -> list[Integration]:
    """The new integrations, keeping each whose settings and secrets did not change."""
    kept = {i.name: i for i in c.intake.integrations
            if running.integration(i.name) == new.integration(i.name)
            and seen.get(f"integrations.{i.name}") == c.secrets.get(f"integrations.{i.name}")}
    fresh = [i for i in new.integrations if i.name not in kept]
    built = {i.name: i for i in build_integrations(
        new.model_copy(update={"integrations": fresh}), c.clock)}
    return [kept.get(i.name) or built[i.name] for i in new.integrations]


_LINK = "notifications.action_links.secret"
_SESSION = "console.session_secret"


def secret_values(config: Config) -> dict[str, tuple[str | None, ...]]:
    """What the secrets of the API tokens, the link secret and each integration read now
    (`ConfigError`: a secret file is unreadable)."""
    values = {"api.tokens": _read(config.api.tokens),
              _LINK: _read([config.notifications.action_links.secret]),
              _SESSION: _read([config.console.session_secret])}
    for integ in config.integrations:
        values[f"integrations.{integ.name}"] = _read(_integration_secrets(integ))
    return values


def _read(refs: Iterable[SecretRef]) -> tuple[str | None, ...]:
    return tuple(resolve(r) for r in refs)


def _integration_secrets(integ: IntegrationConfig) -> Sequence[SecretRef]:
    auth = integ.auth
    return [*auth.bearer_tokens, *(b.password for b in auth.basic),
            *(auth.hmac.secrets if auth.hmac else ()), *auth.routing_keys]


async def _reload_cmdb(cmdb: Cmdb, config: Config) -> None:
    """Read the (maybe other) CMDB files into the store; on any problem nothing changes."""
    previous = cmdb.files
    cmdb.use_files(config.cmdb.files)
    if not config.cmdb.files:
        return  # without files the CMDB is managed through the API; it stays as it is
    try:
        await cmdb.reload_files()
    except CmdbInvalid as err:
        cmdb.use_files(previous)
        raise Refused("cmdb files invalid", err.describe()) from None
    except StoreUnavailable:
        cmdb.use_files(previous)
        raise Refused("database unavailable",
                      ["cmdb.files: the database is unavailable; try again"]) from None
    except BaseException:
        cmdb.use_files(previous)
        raise


async def serve(config: Config, *, loader: Loader | None = None,
                source: str = "<config>") -> int:
    """Run until SIGTERM/SIGINT; finish in-flight requests, commit queued alerts, exit 0.

    SIGHUP (and `POST /-/reload`) reloads the configuration through `loader`: the one the
    command line used, so the same file, environment and flags."""
    try:
        components = await start(config, loader=loader, source=source)
    except ConfigError as err:  # a bad CMDB file: said like any other config problem
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    limits = ServerLimits(read_timeout=config.server.request_read_timeout_seconds,
                          max_connections=config.server.max_connections)
    runner = web.AppRunner(
        components.app, handle_signals=False, access_log=None,
        shutdown_timeout=config.server.shutdown_timeout_seconds, **handler_options(limits),
    )
    await runner.setup()
    # Slow-loris deadlines, a connection cap, malformed HTTP answered without echo.
    site = GuardedSite(runner, config.server.host, config.server.port, limits=limits)
    try:
        await site.start()
    except OSError as err:
        log.error("cannot listen", listen=config.server.listen, reason=err.strerror)
        await runner.cleanup()
        await stop(components)
        return 1
    settle_heap()
    log.info("listening", url=f"http://{config.server.listen}", version=__version__,
             database=_safe_url(config.database.url))

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, reload, components)
    await stopping.wait()

    log.info("shutting down: finishing in-flight requests")
    components.health.draining = True
    await runner.cleanup()  # stops accepting, waits for in-flight handlers
    await components.reloader.drain()  # a SIGHUP reload in flight finishes first
    await stop(components)
    log.info("stopped")
    return 0


def settle_heap() -> None:
    """Once started: keep the garbage collector off what lives as long as the process.

    The CMDB graph, the configuration and the code are hundreds of thousands of objects
    that never become garbage, yet every full collection walks them all (measured:
    ~75 ms each, several a minute under load, stalling every request in flight). Frozen,
    they are left out; the rare cycles of a batch are still found. Young collections are
    made rarer too: a batch allocates thousands of short-lived objects, and reference
    counting, not the collector, frees nearly all of them."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, 20, 20)


# Allocations between young collections (CPython's default is 700).
_GC_YOUNG_THRESHOLD = 50_000


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
