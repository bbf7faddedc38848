"""The composition root: builds every component from config and runs them.

No logic lives here; reading this file top to bottom shows the whole daemon:
receivers → ingest writer (dedup → correlation → incidents) → store, the API
beside it, and the start-up and shutdown order.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.engine import make_url

from daemon import __version__, metrics
from daemon.api.auth import api_token_middleware
from daemon.api.changes import ChangeRoutes
from daemon.api.cmdb import CmdbRoutes
from daemon.api.health import HealthRoutes
from daemon.api.incidents import IncidentRoutes
from daemon.api.notifications import NotificationRoutes
from daemon.api.oncall import OnCallRoutes
from daemon.api.problems import ProblemRoutes
from daemon.api.reports import ReportRoutes
from daemon.api.responses import errors_middleware
from daemon.api.runbooks import RunbookRoutes
from daemon.clock import Clock, SystemClock
from daemon.config import Config, ConfigError
from daemon.correlation.binding import Binder, compile_rules
from daemon.correlation.engine import Correlator
from daemon.correlation.flapping import FlapDetector
from daemon.correlation.topology import TopologyHolder
from daemon.ingest import IngestWriter, Pipeline
from daemon.itsm.actions import Actions
from daemon.itsm.changes import ChangeRecorder
from daemon.itsm.cmdb import Cmdb, CmdbInvalid
from daemon.itsm.delivery import Sender
from daemon.itsm.followup import FollowUp
from daemon.itsm.maintenance import Maintenance
from daemon.itsm.priority import PriorityMatrix
from daemon.leader import Leadership
from daemon.receivers.auth import Credentials
from daemon.receivers.endpoint import Intake
from daemon.receivers.integrations import build_integrations
from daemon.runbooks.catalog import CatalogHolder, CatalogInvalid
from daemon.runbooks.executor import Executor
from daemon.runbooks.triggers import Triggers
from daemon.scheduler import Jobs, start_scheduler
from daemon.secrets import resolve, resolve_or_generate
from daemon.store import Store, gauges, migrate

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


def api_credentials(config: Config) -> Credentials:
    resolved = resolve_or_generate(config.api.tokens)
    if resolved.generated:
        log.warning(
            "no API token configured; generated one for this run (set INCIDENTD_API_TOKEN to "
            "keep it stable)", generated_token=resolved.generated,
        )
    return Credentials(bearer=resolved.values)


def read_only_credentials(config: Config) -> Credentials | None:
    values = tuple(v for v in (resolve(r) for r in config.api.read_only_tokens) if v)
    return Credentials(bearer=values) if values else None


def link_secret(config: Config) -> str:
    resolved = resolve_or_generate([config.notifications.action_links.secret])
    if resolved.generated:
        log.warning("no action-link secret configured; links in notifications work until "
                    "this process stops (set INCIDENTD_ACTION_LINK_SECRET to keep them valid)")
    return resolved.values[0]


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


def build_pipeline(config: Config, topology: TopologyHolder, clock: Clock,
                   followup: FollowUp | None = None) -> Pipeline:
    """The ingest stages, in order: bind → dedup → flapping → maintenance → correlation →
    incidents → follow-up."""
    corr = config.correlation
    return Pipeline(
        binder=Binder(compile_rules(corr.binding), topology),
        correlator=Correlator(
            config=corr, topology=topology,
            group_by={i.name: i.group_by for i in config.integrations if i.group_by is not None},
        ),
        flapping=FlapDetector(changes=corr.flapping_changes,
                              window_seconds=corr.flapping_window_seconds),
        maintenance=Maintenance(config.changes, topology, depth=corr.max_depth),
        priorities=PriorityMatrix(config.priority),
        followup=followup or FollowUp(config, topology, clock=clock),
        reopen_window_seconds=config.lifecycle.reopen_window_seconds,
        topology=topology,
        clock=clock,
    )


def build_app(config: Config, *, store: Store, clock: Clock, writer: IngestWriter,
              health: HealthRoutes, cmdb: Cmdb, topology: TopologyHolder,
              followup: FollowUp, actions: Actions, oncall: OnCallRoutes,
              sender: Sender) -> web.Application:
    intake = Intake(
        integrations=build_integrations(config, clock),
        alerts=writer,
        changes=ChangeRecorder(store=store, clock=clock, topology=topology),
        clock=clock,
    )
    app = web.Application(
        middlewares=[errors_middleware, api_token_middleware(
            api_credentials(config), read_only_credentials(config),
            protect_metrics=config.api.protect_metrics)],
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
    store = Store.open(config.database.url, sqlite_synchronous=config.database.sqlite_synchronous,
                       pool_size=config.database.pool_size)
    if config.database.auto_migrate:
        await migrate.upgrade(store)
    async with store.read() as conn:
        metrics.OPEN_INCIDENTS.replace(await gauges.open_incidents(conn))
    return store


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


async def start(config: Config, *, clock: Clock | None = None) -> Components:
    """Open the store, migrate, rebuild caches, start the workers; return the wired app."""
    clock = clock or SystemClock()
    leadership = Leadership(config.database.url)
    await leadership.start()  # SQLite: refuses a second daemon on the same file
    store = await open_store(config)
    try:
        cmdb, topology = await load_cmdb(config, store, clock)
        catalog = load_runbooks(config)
    except ConfigError:
        await store.close()
        await leadership.stop()
        raise
    followup = FollowUp(config, topology, clock=clock, link_secret=link_secret(config))
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
    sender = Sender(config=config.notifications, store=store, clock=clock)
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
    app = build_app(config, store=store, clock=clock, writer=writer, health=health, cmdb=cmdb,
                    topology=topology, followup=followup, actions=actions, oncall=oncall,
                    sender=sender)
    app.add_routes(RunbookRoutes(store=store, clock=clock, catalog=catalog, triggers=triggers,
                                 executor_wake=executor.wake,
                                 dry_run_all=config.runbooks.dry_run).routes())
    return Components(store=store, writer=writer, health=health, app=app, topology=topology,
                      cmdb=cmdb, scheduler=scheduler, jobs=jobs, followup=followup,
                      sender=sender, oncall=oncall, catalog=catalog, executor=executor,
                      actions=actions, leadership=leadership)


async def stop(components: Components) -> None:
    components.scheduler.shutdown(wait=False)
    await components.jobs.drain()
    await components.leadership.stop()  # another replica takes the timers now
    await components.oncall.drain()
    await components.executor.stop()  # a run cut short is recorded as interrupted
    await components.cmdb.drain()
    await components.writer.stop()
    # Last before the store: what the writer committed is in the outbox by now;
    # what is not delivered yet waits there for the next start.
    await components.sender.stop()
    await components.store.close()


def reload(components: Components) -> None:
    """SIGHUP: read the CMDB and runbook files again; a bad file keeps the old ones."""
    components.cmdb.reload_in_background()
    try:
        catalog = components.catalog.reload()
    except CatalogInvalid as err:
        log.error("runbook files invalid; the previous catalog stays", problems=err.problems)
        return
    log.info("runbooks reloaded", runbooks=len(catalog.runbooks))


async def serve(config: Config) -> int:
    """Run until SIGTERM/SIGINT (SIGHUP reloads the CMDB files); finish in-flight requests,
    commit queued alerts, exit 0."""
    try:
        components = await start(config)
    except ConfigError as err:  # a bad CMDB file: said like any other config problem
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    runner = web.AppRunner(
        components.app, handle_signals=False, access_log=None,
        shutdown_timeout=config.server.shutdown_timeout_seconds,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port)
    try:
        await site.start()
    except OSError as err:
        log.error("cannot listen", listen=config.server.listen, reason=err.strerror)
        await runner.cleanup()
        await stop(components)
        return 1
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
    await stop(components)
    log.info("stopped")
    return 0


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
