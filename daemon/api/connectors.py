"""`POST /api/v1/connectors/{name}/updates`: an ITSM suite tells incidentd what a person
did to its ticket (resolved, acknowledged, re-assigned, commented).

Authenticated per connector by its `inbound` credentials (basic auth, a bearer token,
or the suite's HMAC signature), never by the admin API token. Answers 200 with what
was done: `{"incident": "INC-000123", "results": [{"action", "outcome", ...}]}`;
404 when the ticket is not one of ours; 400 for a body the suite's format does not
allow; 401 for a missing or wrong credential.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiohttp import web

from daemon.api.responses import json_response
from daemon.clock import Clock
from daemon.config import ConnectorConfig
from daemon.errors import NotFound, Unauthorized
from daemon.itsm.actions import Actions
from daemon.itsm.connectors.base import Connector
from daemon.itsm.connectors.inbound import InboundUpdates, inbound_credentials
from daemon.itsm.connectors.sync import ConnectorSync
from daemon.receivers.auth import Credentials
from daemon.receivers.body import read_body
from daemon.store import Store

PATH = "/api/v1/connectors/{name}/updates"


def connector_routes(configs: Sequence[ConnectorConfig], *, sync: ConnectorSync, store: Store,
                     actions: Actions, clock: Clock) -> ConnectorRoutes:
    """The update endpoint of every configured connector, its credentials resolved."""
    return ConnectorRoutes(
        connectors={c.name: c for c in sync},
        credentials={c.name: inbound_credentials(c) for c in configs},
        inbound=InboundUpdates(store=store, actions=actions, clock=clock),
        max_body_bytes={c.name: c.inbound.max_body_bytes for c in configs})


class ConnectorRoutes:
    def __init__(self, *, connectors: Mapping[str, Connector],
                 credentials: Mapping[str, Credentials | None], inbound: InboundUpdates,
                 max_body_bytes: Mapping[str, int]) -> None:
        self._connectors = dict(connectors)
        self._credentials = dict(credentials)
        self._inbound = inbound
        self._limits = dict(max_body_bytes)

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PATH, self.update)]

    async def update(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        connector = self._connectors.get(name)
        if connector is None:
            raise NotFound(f"no connector {name!r}")
        credentials = self._credentials.get(name)
        if credentials is None:
            raise Unauthorized(f"connector {name!r} takes no updates (configure its inbound "
                               "credentials)")
        body = await read_body(request, self._limits.get(name, 1024 * 1024))
        signature = credentials.check_request(request.headers, body)
        try:
            updates = connector.parse_inbound(body, request.headers)
            answer = await self._inbound.apply(name, updates)
        except BaseException:
            if signature is not None:
                credentials.forget(signature)  # so the suite's retry is not a "replay"
            raise
        if not updates:
            answer["reason"] = "nothing incidentd acts on"
        return json_response(answer)
