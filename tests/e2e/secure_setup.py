"""A daemon configuration with every kind of secret the daemon can hold, for the tests of
hostile input, authentication and secrets in logs.

Every secret has its own recognisable value, so a test can grep the daemon's log and
the answers it got for each one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from .harness import ADMIN_TOKEN, INTEGRATION_TOKEN, example_config

READ_TOKEN = "e2e-read-only-token-71d0c3"
GRAFANA_TOKEN = "e2e-grafana-token-2f8ab1"
GRAFANA_HMAC = "e2e-grafana-hmac-secret-0c44e9"
GENERIC_TOKEN = "e2e-generic-token-8e21f7"
GENERIC_USER = "e2e-script"
GENERIC_PASSWORD = "e2e-generic-basic-pw-5d93aa"
ROUTING_KEY = "e2e-pagerduty-routing-key-1b7c2d"
SLACK_SECRET = "e2e-slack-signing-secret-93aa10"
LINK_SECRET = "e2e-action-link-secret-4e6f88"
INBOUND_SECRET = "e2e-inbound-webhook-secret-a2d4bb"
TARGET_SECRET = "e2e-notify-target-secret-77c1de"
SESSION_SECRET = "e2e-console-session-secret-3b9f52"

# Every configured secret, by what it is.
SECRETS = {
    "admin token": ADMIN_TOKEN,
    "read-only token": READ_TOKEN,
    "alertmanager token": INTEGRATION_TOKEN,
    "grafana token": GRAFANA_TOKEN,
    "grafana hmac secret": GRAFANA_HMAC,
    "generic token": GENERIC_TOKEN,
    "generic basic password": GENERIC_PASSWORD,
    "pagerduty routing key": ROUTING_KEY,
    "slack signing secret": SLACK_SECRET,
    "action-link secret": LINK_SECRET,
    "inbound webhook secret": INBOUND_SECRET,
    "notification target secret": TARGET_SECRET,
    "console session secret": SESSION_SECRET,
}

ENV = {
    "INCIDENTD_API_READ_TOKEN": READ_TOKEN,
    "INCIDENTD_GRAFANA_TOKEN": GRAFANA_TOKEN,
    "INCIDENTD_GENERIC_TOKEN": GENERIC_TOKEN,
    "INCIDENTD_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
    "INCIDENTD_SLACK_SIGNING_SECRET": SLACK_SECRET,
    "INCIDENTD_ACTION_LINK_SECRET": LINK_SECRET,
    "INCIDENTD_SESSION_SECRET": SESSION_SECRET,
    "E2E_GRAFANA_HMAC": GRAFANA_HMAC,
    "E2E_GENERIC_PASSWORD": GENERIC_PASSWORD,
    "E2E_INBOUND_SECRET": INBOUND_SECRET,
    "E2E_TARGET_SECRET": TARGET_SECRET,
}


def secure_config(*, webhook_url: str | None = None, server: dict[str, Any] | None = None,
                  api: dict[str, Any] | None = None) -> dict[str, Any]:
    """The example config with every credential kind switched on (values from `ENV`)."""
    config = example_config()
    config["api"]["read_only_tokens"] = [{"env": "INCIDENTD_API_READ_TOKEN"}]
    config["api"].update(api or {})
    config["server"].update(server or {})
    by_name = {i["name"]: i for i in config["integrations"]}
    by_name["grafana"]["auth"]["hmac"] = {"secrets": [{"env": "E2E_GRAFANA_HMAC"}]}
    by_name["generic"]["auth"]["basic"] = [
        {"username": GENERIC_USER, "password": {"env": "E2E_GENERIC_PASSWORD"}}]
    notifications = config["notifications"]
    notifications["inbound_webhook"] = {"secrets": [{"env": "E2E_INBOUND_SECRET"}]}
    if webhook_url is not None:
        notifications["targets"] = [{"name": "ops", "type": "webhook", "url": webhook_url,
                                     "secrets": [{"env": "E2E_TARGET_SECRET"}]}]
    return config


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def slack_headers(secret: str, body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    mac = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256)
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={mac.hexdigest()}",
            "Content-Type": "application/x-www-form-urlencoded"}


def inbound_headers(secret: str, body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
    return {"X-Incidentd-Timestamp": stamp, "X-Incidentd-Signature": f"v1={mac.hexdigest()}",
            "Content-Type": "application/json"}
