"""Building the configured integrations: secrets resolved, parsers and limits in place."""

from __future__ import annotations

import time

import structlog

from daemon.clock import Clock
from daemon.config import Config, HmacConfig, IntegrationConfig, SecretRef
from daemon.models import Severity
from daemon.receivers import Parser, grafana, pagerduty
from daemon.receivers.alertmanager import AlertmanagerParser
from daemon.receivers.auth import Credentials, HmacVerifier, ReplayGuard
from daemon.receivers.endpoint import Integration
from daemon.receivers.generic import GenericParser
from daemon.receivers.grafana import GrafanaParser
from daemon.receivers.normalize import Defaults, Limits
from daemon.secrets import resolve, resolve_or_generate

log = structlog.get_logger("incidentd")

DEFAULT_SIGNATURE_HEADER = "X-Incidentd-Signature"


def build_integrations(config: Config, clock: Clock) -> list[Integration]:
    return [_build(i, config, clock) for i in config.integrations]


def _build(cfg: IntegrationConfig, config: Config, clock: Clock) -> Integration:
    limits = Limits(
        max_alerts=cfg.limits.max_alerts,
        max_labels=cfg.limits.max_labels,
        max_label_name_length=cfg.limits.max_label_name_length,
        max_label_value_length=cfg.limits.max_label_value_length,
    )
    severity = Severity(cfg.default_severity)
    parser: Parser | None = None
    if cfg.type == "alertmanager":
        parser = AlertmanagerParser(integration=cfg.name, default_severity=severity, limits=limits)
    elif cfg.type == "grafana":
        parser = GrafanaParser(integration=cfg.name, default_severity=severity, limits=limits)
    elif cfg.type == "generic":
        parser = GenericParser(integration=cfg.name, default_severity=severity, limits=limits,
                               clock=clock)
    default_body = (pagerduty.MAX_BODY_BYTES if cfg.type == "pagerduty"
                    else config.server.max_body_bytes)
    return Integration(
        name=cfg.name,
        type=cfg.type,
        credentials=_credentials(cfg),
        max_body_bytes=cfg.limits.max_body_bytes or default_body,
        defaults=Defaults(labels=cfg.defaults.labels, service=cfg.defaults.service,
                          ci=cfg.defaults.ci),
        parser=parser,
        routing_keys=_routing_keys(cfg),
    )


def _credentials(cfg: IntegrationConfig) -> Credentials:
    auth = cfg.auth
    basic = []
    for cred in auth.basic:
        password = resolve(cred.password)
        if password is None:
            log.warning("basic auth password is not set; that user is refused",
                        integration=cfg.name, username=cred.username,
                        source=cred.password.describe())
        else:
            basic.append((cred.username, password))
    verifier = _hmac(auth.hmac, cfg.type) if auth.hmac else None
    # Only bearer tokens are made up when unset: a made-up password or HMAC
    # secret would be of no use to a sender that has its own.
    bearer = (_generate_if_unset(auth.bearer_tokens, cfg.name, "bearer token")
              if auth.bearer_tokens else ())
    return Credentials(bearer=bearer, basic=tuple(basic), hmac=verifier)


def _routing_keys(cfg: IntegrationConfig) -> tuple[str, ...]:
    if cfg.type != "pagerduty":
        return ()
    return _generate_if_unset(cfg.auth.routing_keys, cfg.name, "routing key")


def _generate_if_unset(refs: list[SecretRef], name: str, what: str) -> tuple[str, ...]:
    resolved = resolve_or_generate(refs)
    if resolved.generated:
        where = ", ".join(r.describe() for r in refs) or "the config"
        log.warning(f"no {what} for integration; generated one for this run (set it from: "
                    f"{where})", integration=name, generated_token=resolved.generated)
    return resolved.values


def _hmac(cfg: HmacConfig, integration_type: str) -> HmacVerifier:
    secrets = tuple(v.encode() for v in (resolve(r) for r in cfg.secrets) if v)
    if not secrets:
        log.warning("no HMAC secret resolves; signed requests will be refused",
                    sources=", ".join(r.describe() for r in cfg.secrets))
    if cfg.header:
        headers: tuple[str, ...] = (cfg.header,)
    elif integration_type == "grafana":
        headers = grafana.SIGNATURE_HEADERS
    else:
        headers = (DEFAULT_SIGNATURE_HEADER,)
    return HmacVerifier(
        secrets=secrets,
        headers=headers,
        prefix=cfg.prefix,
        encoding=cfg.encoding,
        timestamp_header=cfg.timestamp_header,
        max_age_seconds=cfg.max_age_seconds,
        clock=time.time,
        replay=ReplayGuard(window_seconds=2 * cfg.max_age_seconds)
        if cfg.timestamp_header else None,
    )
