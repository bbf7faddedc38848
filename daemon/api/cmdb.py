"""`/api/v1/cmdb`: read and edit CIs, import whole documents, reload the config files.

Routes (all need the admin token):
- `GET /api/v1/cmdb/cis?type=&service=&limit=&cursor=`: CIs in id order.
- `GET|PUT|DELETE /api/v1/cmdb/cis/{id}`: one CI (PUT body: one CI as in the file).
- `POST /api/v1/cmdb/import?mode=merge|replace`: a whole document, JSON, YAML or CSV.
- `POST /api/v1/cmdb/reload`: re-read the files named in config.

An id with a `/` in it is addressed percent-encoded (`host%2F1`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.api import params
from daemon.api.pages import page
from daemon.api.responses import json_response
from daemon.errors import NotFound
from daemon.itsm.cmdb import Cmdb, Format, ImportMode, parse_ci, parse_document
from daemon.models import ConfigurationItem
from daemon.receivers.body import ANY, media_type_error, read_body
from daemon.store import Store
from daemon.store import cmdb as cmdb_store

# A 50,000-CI document is about 15 MB of JSON; leave room above that.
IMPORT_BODY_LIMIT = 50 * 1024 * 1024
CI_BODY_LIMIT = 1024 * 1024

_FORMATS: dict[str, Format] = {
    "application/json": "json",
    "text/csv": "csv",
    "application/yaml": "yaml",
    "application/x-yaml": "yaml",
    "text/yaml": "yaml",
    "text/x-yaml": "yaml",
}
_MODES: tuple[ImportMode, ...] = ("merge", "replace")


def ci_json(ci: ConfigurationItem) -> dict[str, Any]:
    return {
        "id": ci.id,
        "name": ci.name,
        "type": ci.type,
        "service": ci.service,
        "owner_group": ci.owner_group,
        "criticality": ci.criticality,
        "environment": ci.environment,
        "attributes": ci.attributes,
        "depends_on": sorted(ci.depends_on),
    }


class CmdbRoutes:
    def __init__(self, *, cmdb: Cmdb, store: Store) -> None:
        self._cmdb = cmdb
        self._store = store

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/cmdb/cis", self.list),
            web.get("/api/v1/cmdb/cis/{id}", self.get),
            web.put("/api/v1/cmdb/cis/{id}", self.put),
            web.delete("/api/v1/cmdb/cis/{id}", self.delete),
            web.post("/api/v1/cmdb/import", self.import_document),
            web.post("/api/v1/cmdb/reload", self.reload),
        ]

    async def list(self, request: web.Request) -> web.Response:
        q = request.query
        limit = params.limit(q.get("limit"))
        cursor = q.get("cursor") or None
        if cursor is not None and len(cursor) > 255:
            raise params.bad("cursor", "not a cursor this API returned")
        async with self._store.read() as conn:
            # One more than asked tells whether another page exists.
            items = await cmdb_store.list_cis(
                conn, type=q.get("type") or None, service=q.get("service") or None,
                limit=limit + 1, after_id=cursor)
        shown, next_cursor = page(items, limit)
        return json_response({"items": [ci_json(ci) for ci in shown],
                              "next_cursor": next_cursor})

    async def get(self, request: web.Request) -> web.Response:
        return json_response(await self._detail(request.match_info["id"]))

    async def put(self, request: web.Request) -> web.Response:
        ci_id = request.match_info["id"]
        body = await read_body(request, CI_BODY_LIMIT)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise params.bad("(body)", f"invalid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise params.bad("(body)", "must be one CI object")
        if data.setdefault("id", ci_id) != ci_id:
            raise params.bad("id", f"must match the id in the path ({ci_id!r})")
        change = await self._cmdb.put(parse_ci(data))
        return json_response(await self._detail(ci_id), status=201 if change.added else 200)

    async def delete(self, request: web.Request) -> web.Response:
        await self._cmdb.delete(request.match_info["id"])
        return web.Response(status=204)

    async def import_document(self, request: web.Request) -> web.Response:
        mode = request.query.get("mode", "merge")
        if mode not in _MODES:
            raise params.bad("mode", "must be merge or replace")
        fmt = _FORMATS.get(request.content_type)
        if fmt is None:
            raise media_type_error(request.content_type, " or ".join(_FORMATS))
        body = await read_body(request, IMPORT_BODY_LIMIT, accept=ANY)
        # Parsing a large document is CPU work; a thread keeps other requests moving.
        items = await asyncio.to_thread(parse_document, body, fmt)
        change = await self._cmdb.import_document(items, mode)
        return json_response({"mode": mode, **change.as_dict()})

    async def reload(self, _: web.Request) -> web.Response:
        result = await self._cmdb.reload_files()
        return json_response({"files": [str(f) for f in result.files],
                              **result.change.as_dict()})

    async def _detail(self, ci_id: str) -> dict[str, Any]:
        async with self._store.read() as conn:
            return await ci_detail(conn, ci_id)


async def ci_detail(conn: AsyncConnection, ci_id: str) -> dict[str, Any]:
    """One CI's JSON with the ids of the CIs that depend on it; NotFound when unknown."""
    ci = await cmdb_store.get_ci(conn, ci_id)
    if ci is None:
        raise NotFound(f"no CI {ci_id!r}")
    dependents = await cmdb_store.dependents_of(conn, ci_id)
    return {**ci_json(ci), "dependents": dependents}

