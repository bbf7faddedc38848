"""The CMDB over HTTP and from files, in process, on a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from daemon import app as daemon_app
from daemon.clock import SystemClock
from daemon.config import Config, ConfigError
from daemon.correlation.topology import Topology, TopologyHolder
from daemon.itsm.cmdb import Cmdb, read_files
from daemon.models import ConfigurationItem
from daemon.store import Store
from daemon.store import cmdb as cmdb_store
from daemon.store.tables import ci_edges, cis

ADMIN = {"Authorization": "Bearer admin"}
Client = TestClient  # type: ignore[type-arg]

DOCUMENT: dict[str, Any] = {"cis": [
    {"id": "svc-checkout", "name": "Checkout", "type": "service", "criticality": 1,
     "depends_on": ["pg-orders", "lb-1"]},
    {"id": "pg-orders", "name": "Orders PostgreSQL", "type": "database",
     "service": "svc-checkout", "owner_group": "dba", "criticality": 2, "environment": "prod",
     "attributes": {"region": "eu-west-1"}, "depends_on": ["host-17"]},
    {"id": "lb-1", "type": "load_balancer", "depends_on": ["host-17"]},
    {"id": "host-17", "type": "host"},
]}


@dataclass
class Daemon:
    client: Client
    components: daemon_app.Components
    store: Store

    @property
    def topology(self) -> TopologyHolder:
        return self.components.topology

    async def ids(self) -> list[str]:
        resp = await self.client.get("/api/v1/cmdb/cis?limit=500", headers=ADMIN)
        assert resp.status == 200
        return [item["id"] for item in (await resp.json())["items"]]

    async def rows(self) -> tuple[int, int]:
        async with self.store.read() as conn:
            n_cis = (await conn.execute(sa.select(sa.func.count()).select_from(cis))).scalar()
            n_edges = (await conn.execute(sa.select(sa.func.count()).select_from(ci_edges))
                       ).scalar()
        return int(n_cis or 0), int(n_edges or 0)

    async def import_(self, body: Any, mode: str = "merge", **kwargs: Any) -> Any:
        return await self.client.post(f"/api/v1/cmdb/import?mode={mode}", headers=ADMIN,
                                      json=body, **kwargs)


Start = Callable[..., Any]


@pytest.fixture
async def start(database_url: str, store: Store) -> AsyncIterator[Start]:
    """Start the daemon in process with the given CMDB files (the store starts empty)."""
    running: list[daemon_app.Components] = []
    clients: list[Client] = []

    async def _start(*files: Path) -> Daemon:
        config = Config.model_validate({
            "database": {"url": database_url},
            "api": {"tokens": [{"value": "admin"}]},
            "cmdb": {"files": [str(f) for f in files]},
        })
        components = await daemon_app.start(config)
        running.append(components)
        client = TestClient(TestServer(components.app))
        await client.start_server()
        clients.append(client)
        return Daemon(client, components, store)

    async def _stop(d: Daemon) -> None:
        """Stop one daemon now (a restart: SQLite takes one daemon per file)."""
        await d.client.close()
        clients.remove(d.client)
        await daemon_app.stop(d.components)
        running.remove(d.components)

    _start.stop = _stop  # type: ignore[attr-defined]
    yield _start
    for client in clients:
        await client.close()
    for components in running:
        await daemon_app.stop(components)


async def test_import_replace_then_merge(start: Start) -> None:
    d = await start()
    resp = await d.import_(DOCUMENT, mode="replace")
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"mode": "replace", "added": 4, "updated": 0, "removed": 0,
                                 "cis": 4, "edges": 4, "services": 1}
    assert await d.rows() == (4, 4)
    assert d.topology.current.upstream("svc-checkout") == {"pg-orders", "lb-1", "host-17"}
    assert d.topology.current.services_of(["pg-orders"]) == {"svc-checkout"}

    resp = await d.client.get("/api/v1/cmdb/cis/pg-orders", headers=ADMIN)
    assert await resp.json() == {
        "id": "pg-orders", "name": "Orders PostgreSQL", "type": "database",
        "service": "svc-checkout", "owner_group": "dba", "criticality": 2,
        "environment": "prod", "attributes": {"region": "eu-west-1"},
        "depends_on": ["host-17"], "dependents": ["svc-checkout"]}

    # Merge: one new CI, one changed, one given unchanged; the others stay.
    merge = {"cis": [{"id": "host-18", "type": "host"},
                     {"id": "lb-1", "type": "load_balancer", "depends_on": ["host-17", "host-18"]},
                     DOCUMENT["cis"][3]]}
    resp = await d.import_(merge)
    assert await resp.json() == {"mode": "merge", "added": 1, "updated": 1, "removed": 0,
                                 "cis": 5, "edges": 5, "services": 1}
    assert d.topology.current.downstream("host-18") == {"lb-1", "svc-checkout"}

    # Replace: what is not in the document goes.
    resp = await d.import_({"cis": [{"id": "host-18", "type": "host"}]}, mode="replace")
    assert await resp.json() == {"mode": "replace", "added": 0, "updated": 0, "removed": 4,
                                 "cis": 1, "edges": 0, "services": 0}
    assert await d.ids() == ["host-18"]
    assert set(d.topology.current.cis) == {"host-18"}
    assert await d.rows() == (1, 0)


async def test_import_csv_and_yaml(start: Start) -> None:
    d = await start()
    csv = ("id,name,type,service,criticality,depends_on,attributes\n"
           "svc,Shop,service,,1,app,\n"
           "app,,application,svc,,db;host-1,\"{\"\"port\"\": 8443}\"\n"
           "db,,database,svc,2,host-1,\n"
           "host-1,,host,,,,\n")
    resp = await d.client.post("/api/v1/cmdb/import?mode=replace", data=csv,
                               headers={**ADMIN, "Content-Type": "text/csv"})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["cis"] == 4
    resp = await d.client.get("/api/v1/cmdb/cis/app", headers=ADMIN)
    body = await resp.json()
    assert (body["depends_on"], body["attributes"], body["criticality"]) == (
        ["db", "host-1"], {"port": 8443}, 3)

    yaml_doc = "cis:\n  - {id: host-2, type: host}\n  - {id: db, type: database, " \
               "service: svc, depends_on: [host-1, host-2]}\n"
    resp = await d.client.post("/api/v1/cmdb/import", data=yaml_doc,
                               headers={**ADMIN, "Content-Type": "application/yaml"})
    assert await resp.json() == {"mode": "merge", "added": 1, "updated": 1, "removed": 0,
                                 "cis": 5, "edges": 5, "services": 1}

    resp = await d.client.post("/api/v1/cmdb/import", data=yaml_doc,
                               headers={**ADMIN, "Content-Type": "text/plain"})
    assert resp.status == 415
    assert (await resp.json())["error"]["code"] == "unsupported_media_type"
    resp = await d.import_(DOCUMENT, mode="upsert")
    assert resp.status == 400
    assert (await resp.json())["error"]["errors"] == [
        {"field": "mode", "reason": "must be merge or replace"}]


async def test_a_bad_import_changes_nothing(start: Start) -> None:
    d = await start()
    assert (await d.import_(DOCUMENT, mode="replace")).status == 200
    before = d.topology.current

    bad = {"cis": [
        {"id": "host-17", "type": "host", "depends_on": ["app-x"]},  # closes a loop
        {"id": "app-x", "type": "app", "depends_on": ["pg-orders", "host-99"],
         "service": "lb-1"},
    ]}
    resp = await d.import_(bad, mode="merge")
    assert resp.status == 400
    assert (await resp.json())["error"]["errors"] == [
        {"field": "app-x.depends_on", "reason": "unknown CI 'host-99'"},
        {"field": "app-x.service", "reason": "'lb-1' is of type 'load_balancer', not 'service'"},
        {"field": "cycle", "reason": "app-x -> pg-orders -> host-17 -> app-x"},
    ]
    # Replace checks the document alone.
    resp = await d.import_(bad, mode="replace")
    assert resp.status == 400
    assert (await resp.json())["error"]["errors"] == [
        {"field": "app-x.depends_on", "reason": "unknown CI 'host-99'"},
        {"field": "app-x.depends_on", "reason": "unknown CI 'pg-orders'"},
        {"field": "app-x.service", "reason": "unknown CI 'lb-1'"},
    ]

    resp = await d.import_({"cis": [{"id": "ok", "type": "x"}, {"id": "bad", "type": "x",
                                                                 "criticality": 9}]})
    assert resp.status == 400
    assert (await resp.json())["error"]["errors"] == [
        {"field": "cis[1].criticality", "reason": "Input should be less than or equal to 5"}]

    assert d.topology.current is before
    assert await d.rows() == (4, 4)
    assert await d.ids() == ["host-17", "lb-1", "pg-orders", "svc-checkout"]


async def test_put_get_delete(start: Start) -> None:
    d = await start()
    await d.import_(DOCUMENT, mode="replace")
    url = "/api/v1/cmdb/cis/app-1"
    resp = await d.client.put(url, json={"type": "app", "service": "svc-checkout",
                                         "depends_on": ["pg-orders"]}, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["name"] == "app-1"
    assert d.topology.current.upstream("app-1") == {"pg-orders", "host-17"}

    resp = await d.client.put(url, json={"id": "app-1", "name": "App", "type": "app"},
                              headers=ADMIN)
    assert resp.status == 200
    body = await resp.json()
    assert (body["name"], body["service"], body["depends_on"], body["dependents"]) == (
        "App", None, [], [])
    assert "app-1" not in d.topology.current.downstream("pg-orders")

    resp = await d.client.put(url, json={"id": "other", "type": "app"}, headers=ADMIN)
    assert resp.status == 400
    assert (await resp.json())["error"]["errors"] == [
        {"field": "id", "reason": "must match the id in the path ('app-1')"}]
    resp = await d.client.put("/api/v1/cmdb/cis/host-17", json={"type": "host",
                                                                 "depends_on": ["lb-1"]},
                              headers=ADMIN)
    assert resp.status == 400
    assert (await resp.json())["error"]["errors"] == [
        {"field": "cycle", "reason": "host-17 -> lb-1 -> host-17"}]
    resp = await d.client.put(url, data=b"[1]", headers=ADMIN)
    assert resp.status == 400

    # Ids may hold a `/`, percent-encoded in the path.
    resp = await d.client.put("/api/v1/cmdb/cis/k8s%2Fpod-1", json={"type": "pod"},
                              headers=ADMIN)
    assert resp.status == 201
    assert (await (await d.client.get("/api/v1/cmdb/cis/k8s%2Fpod-1", headers=ADMIN)).json()
            )["id"] == "k8s/pod-1"

    resp = await d.client.delete("/api/v1/cmdb/cis/host-17", headers=ADMIN)
    assert resp.status == 409
    assert (await resp.json())["error"]["message"] == (
        "cannot delete CI 'host-17': 2 CIs depend on it (lb-1, pg-orders)")
    resp = await d.client.delete("/api/v1/cmdb/cis/svc-checkout", headers=ADMIN)
    assert resp.status == 409
    assert (await resp.json())["error"]["message"] == (
        "cannot delete CI 'svc-checkout': 1 CI belongs to it (pg-orders)")
    assert (await d.client.delete(url, headers=ADMIN)).status == 204
    assert (await d.client.get(url, headers=ADMIN)).status == 404
    assert (await d.client.delete(url, headers=ADMIN)).status == 404
    assert "app-1" not in d.topology.current
    assert await d.rows() == (5, 4)

    assert (await d.client.get("/api/v1/cmdb/cis")).status == 401


async def test_list_filters_and_pages(start: Start) -> None:
    d = await start()
    document = {"cis": [
        {"id": "svc-a", "type": "service"}, {"id": "svc-b", "type": "service"},
        *({"id": f"host-{i}", "type": "host", "service": "svc-a" if i % 2 else "svc-b"}
          for i in range(1, 8)),
    ]}
    assert (await d.import_(document, mode="replace")).status == 200

    seen: list[str] = []
    cursor = ""
    while True:
        resp = await d.client.get(f"/api/v1/cmdb/cis?type=host&limit=3&cursor={cursor}",
                                  headers=ADMIN)
        body = await resp.json()
        seen += [i["id"] for i in body["items"]]
        if body["next_cursor"] is None:
            break
        cursor = body["next_cursor"]
    assert seen == [f"host-{i}" for i in range(1, 8)]

    resp = await d.client.get("/api/v1/cmdb/cis?service=svc-b", headers=ADMIN)
    assert [i["id"] for i in (await resp.json())["items"]] == ["host-2", "host-4", "host-6"]
    resp = await d.client.get("/api/v1/cmdb/cis?type=service", headers=ADMIN)
    assert [i["id"] for i in (await resp.json())["items"]] == ["svc-a", "svc-b"]
    resp = await d.client.get("/api/v1/cmdb/cis?limit=0", headers=ADMIN)
    assert resp.status == 400


def write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document))
    return path


async def test_files_at_start_reload_and_a_broken_file(start: Start, tmp_path: Path) -> None:
    services = write(tmp_path / "services.json", {"cis": DOCUMENT["cis"][:1]})
    infra = tmp_path / "infra.yaml"
    infra.write_text("cis:\n" + "".join(f"  - {json.dumps(c)}\n" for c in DOCUMENT["cis"][1:]))
    d = await start(services, infra)
    assert await d.ids() == ["host-17", "lb-1", "pg-orders", "svc-checkout"]
    assert len(d.topology.current) == 4

    # An API edit lives until the next reload: the files are the whole CMDB.
    await d.client.put("/api/v1/cmdb/cis/extra", json={"type": "x"}, headers=ADMIN)
    write(services, {"cis": [{**DOCUMENT["cis"][0], "name": "Checkout v2"}]})
    resp = await d.client.post("/api/v1/cmdb/reload", headers=ADMIN)
    assert resp.status == 200
    assert await resp.json() == {"files": [str(services), str(infra)], "added": 0,
                                 "updated": 1, "removed": 1, "cis": 4, "edges": 4,
                                 "services": 1}
    assert d.topology.current.cis["svc-checkout"].name == "Checkout v2"

    before = d.topology.current
    infra.write_text(infra.read_text() + "  - {id: svc-checkout, type: service}\n"
                     "  - {id: db-2, type: database, depends_on: [nowhere]}\n")
    resp = await d.client.post("/api/v1/cmdb/reload", headers=ADMIN)
    assert resp.status == 400
    assert (await resp.json())["error"]["errors"] == [
        {"field": f"{services}, {infra}: svc-checkout.id",
         "reason": "duplicate id, given 2 times"},
        {"field": f"{infra}: db-2.depends_on", "reason": "unknown CI 'nowhere'"},
    ]
    assert d.topology.current is before
    assert await d.ids() == ["host-17", "lb-1", "pg-orders", "svc-checkout"]

    # SIGHUP's path: in the background, the outcome logged.
    write(services, {"cis": [DOCUMENT["cis"][0]]})
    infra.write_text("cis:\n" + "".join(f"  - {json.dumps(c)}\n" for c in DOCUMENT["cis"][1:]))
    d.components.cmdb.reload_in_background()
    await d.components.cmdb.drain()
    assert d.topology.current.cis["svc-checkout"].name == "Checkout"

    # A restart rebuilds the topology from the store, files or not.
    kept = set(d.topology.current.cis)
    await start.stop(d)  # type: ignore[attr-defined]
    again = await start()
    assert set(again.topology.current.cis) == kept


async def test_reload_without_files_is_refused(start: Start) -> None:
    d = await start()
    await d.import_(DOCUMENT, mode="replace")
    resp = await d.client.post("/api/v1/cmdb/reload", headers=ADMIN)
    assert resp.status == 400
    assert (await resp.json())["error"]["errors"] == [
        {"field": "cmdb.files", "reason": "no CMDB files are configured; nothing to reload"}]
    assert await d.rows() == (4, 4)


async def test_a_broken_file_at_start_stops_the_daemon(start: Start, tmp_path: Path) -> None:
    bad = tmp_path / "cmdb.yaml"
    bad.write_text("cis:\n  - {id: a, type: app, depends_on: [b]}\n")
    with pytest.raises(ConfigError) as caught:
        await start(bad)
    assert caught.value.problems == [f"{bad}: a.depends_on: unknown CI 'b'"]
    with pytest.raises(ConfigError) as caught:
        await start(tmp_path / "missing.yaml")
    assert caught.value.problems == [
        f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"]


def big_cmdb(n: int) -> list[ConfigurationItem]:
    """`n` CIs in layers: services → apps → hosts; about three edges per CI."""
    hosts = n // 2
    items = [ConfigurationItem(id=f"host-{i:06d}", name=f"host {i}", type="host",
                               attributes={"rack": i % 40}) for i in range(hosts)]
    apps = n - hosts - 100
    items += [ConfigurationItem(
        id=f"app-{i:06d}", name=f"app {i}", type="app", service=f"svc-{i % 100:03d}",
        depends_on=tuple(sorted({f"host-{(i * 7 + k) % hosts:06d}" for k in range(6)})))
        for i in range(apps)]
    items += [ConfigurationItem(
        id=f"svc-{i:03d}", name=f"service {i}", type="service", criticality=1,
        depends_on=tuple(f"app-{(i + 100 * k) % apps:06d}" for k in range(3)))
        for i in range(100)]
    return items


async def test_50k_cis_import_and_reload(store: Store, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    items = big_cmdb(50_000)
    holder = TopologyHolder()
    cmdb = Cmdb(store=store, clock=SystemClock(), topology=holder, files=[])
    started = time.perf_counter()
    change = await cmdb.import_document(items, "replace")
    first = time.perf_counter() - started
    assert (change.added, change.cis) == (50_000, 50_000)

    edited = [*items[:-1], ConfigurationItem(id=items[-1].id, name="renamed", type="service")]
    started = time.perf_counter()
    change = await cmdb.import_document(edited, "replace")
    again = time.perf_counter() - started
    assert (change.added, change.updated, change.removed) == (0, 1, 0)

    started = time.perf_counter()
    await cmdb.load_from_store()
    load = time.perf_counter() - started
    async with store.read() as conn:
        stored = await cmdb_store.all_cis(conn)
    assert {c.id: c for c in stored} == {c.id: c for c in edited}
    assert len(holder.current) == 50_000
    with capsys.disabled():
        print(f"\n{store.dialect}: import 50,000 CIs / {change.edges} edges into an empty "
              f"CMDB {first:.2f} s; again with one change {again:.2f} s; "
              f"load from store {load:.2f} s")


async def test_concurrent_changes_leave_store_and_topology_equal(start: Start) -> None:
    d = await start()
    await d.import_(DOCUMENT, mode="replace")

    async def put(i: int) -> int:
        resp = await d.client.put(f"/api/v1/cmdb/cis/app-{i}",
                                  json={"type": "app", "depends_on": ["host-17"]}, headers=ADMIN)
        return resp.status

    assert await asyncio.gather(*(put(i) for i in range(10))) == [201] * 10
    async with d.store.read() as conn:
        stored = {c.id: c for c in await cmdb_store.all_cis(conn)}
    assert dict(d.topology.current.cis) == stored
    assert len(d.topology.current.dependents("host-17")) == 12


async def test_store_replace_all_and_dependents(store: Store) -> None:
    items = [ConfigurationItem(id="a", name="A", type="app", depends_on=("b", "c")),
             ConfigurationItem(id="b", name="B", type="host"),
             ConfigurationItem(id="c", name="C", type="host", attributes={"k": [1, "x"]})]
    now = SystemClock().now()
    async with store.write() as conn:
        await cmdb_store.replace_all(conn, items, now)
    async with store.write() as conn:
        await cmdb_store.replace_all(conn, items[1:], now)
        await cmdb_store.upsert(conn, items[:1], now)
    async with store.read() as conn:
        assert await cmdb_store.all_cis(conn) == items
        assert await cmdb_store.dependents_of(conn, "c") == ["a"]
        assert await cmdb_store.get_ci(conn, "zz") is None
        assert [c.id for c in await cmdb_store.list_cis(conn, limit=2, after_id="a")] == [
            "b", "c"]


def test_the_shipped_example_cmdb_is_valid() -> None:
    example = Path(__file__).parents[2] / "config" / "cmdb.example.yaml"
    items = read_files([example])
    assert sorted(c.id for c in items if c.is_service) == ["svc-catalog", "svc-checkout"]
    graph = Topology.build(items)
    # The shared load balancer impacts both services.
    assert graph.services_of(graph.downstream("lb-edge-1")) == {"svc-catalog", "svc-checkout"}
