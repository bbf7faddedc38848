"""JSON responses and the one place where errors become HTTP answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from daemon.errors import InvalidInput, Overloaded, UserError
from daemon.store import StoreUnavailable

log = structlog.get_logger("incidentd.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(data), content_type="application/json", headers=headers
    )


def error_response(status: int, code: str, message: str, *,
                   errors: list[dict[str, str]] | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if errors:
        body["error"]["errors"] = errors
    return json_response(body, status=status, headers=headers)


_HEADERS = {
    401: {"WWW-Authenticate": 'Bearer realm="incidentd"'},
    # A body that did not arrive in time: the rest of it is not waited for.
    408: {"Connection": "close"},
}


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map typed outcomes to status codes; nothing else ever reaches a client as a trace."""
    try:
        return await handler(request)
    except InvalidInput as err:
        return error_response(err.status, err.code, err.message, errors=err.errors)
    except Overloaded as err:
        return error_response(err.status, err.code, err.message,
                              headers={"Retry-After": str(err.retry_after)})
    except UserError as err:
        return error_response(err.status, err.code, err.message, headers=_HEADERS.get(err.status))
    except StoreUnavailable as err:
        log.warning("store unavailable", path=request.path, reason=str(err))
        return error_response(503, "store_unavailable", "database unavailable; retry later",
                              headers={"Retry-After": "5"})
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return error_response(err.status, err.reason.lower().replace(" ", "_"), err.reason,
                              headers={k: v for k, v in err.headers.items()
                                       if k in ("Allow", "Retry-After")})
    except Exception:
        log.exception("unhandled error", method=request.method, path=request.path)
        return error_response(500, "internal", "internal error; see the daemon log")
