"""The load generator: client processes that drive a server over loopback HTTP.

Each client process is long-lived for one session (one server, one scenario):
it keeps its own view of what is firing (`workload.Mix`), so repeats and
resolves always name alerts it knows are open, and it takes commands from the
bench over a pipe:

- `("fresh", alerts, concurrency, seconds[, spread])`: send new alerts only (warm-up,
  the RSS load), stopping early after `seconds`;
- `("closed", concurrency, seconds)`: closed loop, `concurrency` requests in
  flight, each sent as soon as the previous one answered;
- `("paced", rate, seconds)`: open loop at `rate` requests/s; each latency is
  counted from when the request was *due*, so a server that falls behind is
  charged for the wait (no coordinated omission);
- `("stop",)`.

Every command answers with a `Result`. The client is plain asyncio + aiohttp
with keep-alive connections, as Alertmanager's and most senders' are.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import workload

# Scenario name → (endpoint kind, alerts per request).
SCENARIOS: dict[str, tuple[str, int]] = {
    "am1": ("alertmanager", 1),
    "am50": ("alertmanager", 50),
    "pd": ("pagerduty", 1),
}
FRESH_BATCH = 50  # warm-up and the RSS load go in Alertmanager batches of this size
MAX_IN_FLIGHT = 512  # per client process, open loop: beyond this the client itself waits
REQUEST_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class ClientSpec:
    index: int
    scenario: str
    base_url: str
    cmdb_path: Path
    am_token: str
    pd_routing_key: str
    seed: int


@dataclass(slots=True)
class Result:
    requests: int = 0
    alerts: int = 0  # alerts in requests answered 2xx
    errors: Counter[str] = field(default_factory=Counter)  # HTTP status or exception name
    latencies: list[float] = field(default_factory=list)  # seconds
    elapsed: float = 0.0
    cpu_seconds: float = 0.0  # this client process's CPU over `elapsed`
    late: int = 0  # open loop: requests sent more than 10 ms after they were due

    def merge(self, other: Result) -> None:
        self.requests += other.requests
        self.alerts += other.alerts
        self.errors.update(other.errors)
        self.latencies.extend(other.latencies)
        self.elapsed = max(self.elapsed, other.elapsed)
        self.cpu_seconds += other.cpu_seconds
        self.late += other.late


class Client:
    """One client process's state: the mix, the endpoint, the request bodies."""

    def __init__(self, spec: ClientSpec) -> None:
        cis = orjson.loads(spec.cmdb_path.read_bytes())["cis"]
        self.spec = spec
        self.kind, self.per_request = SCENARIOS[spec.scenario]
        self.mix = workload.Mix(targets=workload.alertable(cis),
                                namespace=f"{spec.scenario}{spec.seed}c{spec.index}",
                                seed=spec.seed * 1000 + spec.index)
        self.am_url = f"{spec.base_url}/api/v1/alerts/alertmanager"
        self.pd_url = f"{spec.base_url}/v2/enqueue"
        self.am_headers = {"Authorization": f"Bearer {spec.am_token}",
                           "Content-Type": "application/json",
                           "User-Agent": "Alertmanager/0.25.0"}
        self.pd_headers = {"Content-Type": "application/json", "User-Agent": "bench"}

    def next_request(self) -> tuple[str, bytes, dict[str, str], int]:
        """(url, body, headers, alerts) of the next request of the scenario's mix."""
        group, alerts = self.mix.next_request(self.per_request)
        if self.kind == "pagerduty":
            identity, firing = alerts[0]
            body = workload.pagerduty_body(self.spec.pd_routing_key, identity, firing)
            return self.pd_url, body, self.pd_headers, 1
        return self.am_url, workload.alertmanager_body(group, alerts), self.am_headers, len(alerts)

    @property
    def fresh_size(self) -> int:
        return 1 if self.kind == "pagerduty" else FRESH_BATCH

    def fresh_request(self, n: int, *, spread: bool = False
                      ) -> tuple[str, bytes, dict[str, str], int]:
        """`n` new alerts: one Alertmanager batch, or (n = 1) one PagerDuty trigger;
        `spread`: alerts that open an incident per request (`Mix.spread`)."""
        if self.kind == "pagerduty":
            _, made = self.mix.fresh(1)
            body = workload.pagerduty_body(self.spec.pd_routing_key, made[0], True)
            return self.pd_url, body, self.pd_headers, 1
        group, made = self.mix.spread(n) if spread else self.mix.fresh(n)
        body = workload.alertmanager_body(group, [(m, True) for m in made])
        return self.am_url, body, self.am_headers, len(made)


async def _send(session: aiohttp.ClientSession, request: tuple[str, bytes, dict[str, str], int],
                result: Result, since: float) -> None:
    url, body, headers, alerts = request
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            await resp.read()
            status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        result.errors[type(exc).__name__] += 1
        status = 0
    result.latencies.append(time.perf_counter() - since)
    result.requests += 1
    if 200 <= status < 300:
        result.alerts += alerts
    elif status:
        result.errors[str(status)] += 1


def _session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max(1, limit), keepalive_timeout=60),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))


async def _measured(body: Callable[[Result], Awaitable[None]]) -> Result:
    result = Result()
    cpu0 = _cpu()
    started = time.perf_counter()
    await body(result)
    result.elapsed = time.perf_counter() - started
    result.cpu_seconds = _cpu() - cpu0
    return result


async def closed_loop(client: Client, concurrency: int, seconds: float) -> Result:
    async def run(result: Result) -> None:
        deadline = time.perf_counter() + seconds
        async with _session(concurrency) as session:
            async def lane() -> None:
                while time.perf_counter() < deadline:
                    await _send(session, client.next_request(), result, time.perf_counter())
            await asyncio.gather(*(lane() for _ in range(concurrency)))
    return await _measured(run) if concurrency > 0 else Result()


async def fresh(client: Client, alerts: int, concurrency: int, seconds: float,
                spread: bool = False) -> Result:
    """Send `alerts` new alerts, or as many as `seconds` allow (errors are counted, not
    retried)."""
    async def run(result: Result) -> None:
        remaining = alerts
        deadline = time.perf_counter() + seconds
        async with _session(concurrency) as session:
            async def lane() -> None:
                nonlocal remaining
                while remaining > 0 and time.perf_counter() < deadline:
                    request = client.fresh_request(min(remaining, client.fresh_size),
                                                   spread=spread)
                    remaining -= request[3]
                    await _send(session, request, result, time.perf_counter())
            await asyncio.gather(*(lane() for _ in range(max(1, concurrency))))
    return await _measured(run) if alerts > 0 else Result()


async def paced(client: Client, rate: float, seconds: float) -> Result:
    async def run(result: Result) -> None:
        interval = 1.0 / rate
        gate = asyncio.Semaphore(MAX_IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()

        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            gate.release()
        async with _session(MAX_IN_FLIGHT) as session:
            start = time.perf_counter() + 0.01
            n = 0
            while (due := start + n * interval) < start + seconds:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.01:
                    result.late += 1
                await gate.acquire()
                task = asyncio.create_task(_send(session, client.next_request(), result, due))
                tasks.add(task)
                task.add_done_callback(done)
                n += 1
            await asyncio.gather(*tasks)
    return await _measured(run) if rate > 0 else Result()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def client_main(conn: Connection, spec: ClientSpec) -> None:
    """Entry point of a client process: answer commands until `stop`."""
    client = Client(spec)
    while True:
        command: tuple[Any, ...] = conn.recv()
        verb = command[0]
        if verb == "stop":
            conn.close()
            return
        if verb == "fresh":
            result = asyncio.run(fresh(client, *command[1:]))
        elif verb == "closed":
            result = asyncio.run(closed_loop(client, command[1], command[2]))
        elif verb == "paced":
            result = asyncio.run(paced(client, command[1], command[2]))
        else:
            raise ValueError(f"unknown command {command!r}")
        conn.send(result)
