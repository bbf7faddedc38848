"""The ceiling: a bare aiohttp server that reads and parses each body and answers 202.

Same stack as incidentd (aiohttp on the default asyncio loop, orjson, no access
log), same port, no work: whatever incidentd reaches is compared to this.

    .venv/bin/python bench/baseline_server.py --port 8080
"""

from __future__ import annotations

import argparse

import orjson
from aiohttp import web

MAX_BODY = 1024 * 1024


async def accept(request: web.Request) -> web.Response:
    body = await request.read()
    parsed = orjson.loads(body)
    alerts = parsed.get("alerts") if isinstance(parsed, dict) else None
    count = len(alerts) if isinstance(alerts, list) else 1
    return web.Response(status=202, body=orjson.dumps({"status": "success", "alerts": count}),
                        content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/{path:.*}", accept)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
