"""structlog set-up: one JSON object per line, secrets never printed."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

# Keys whose values are credentials. The one deliberate exception is the
# token generated at start, logged once under `generated_token` so the
# operator can copy it.
_SECRET_KEYS = frozenset(
    {"authorization", "password", "token", "secret", "api_key", "routing_key", "signature"}
)


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in event.keys() & _SECRET_KEYS:
        event[key] = "[redacted]"
    return event


# The level of each logger method; `set_level` moves the bar while the daemon runs.
_METHOD_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                  "warn": logging.WARNING, "error": logging.ERROR, "exception": logging.ERROR,
                  "critical": logging.CRITICAL, "fatal": logging.CRITICAL}
_threshold = {"level": logging.INFO}


def _gate(_: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # A processor, not a filtering logger class: loggers cache their class on first
    # use, so only this can follow a level changed by a configuration reload.
    if _METHOD_LEVELS.get(method, logging.INFO) < _threshold["level"]:
        raise structlog.DropEvent
    return event


def set_level(level: str) -> None:
    """The level from now on, for every logger (a configuration reload)."""
    _threshold["level"] = logging.getLevelNamesMapping()[level.upper()]


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure(*, level: str = "info", fmt: str = "json") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    set_level(level)
    structlog.configure(
        processors=[_gate, *shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # aiohttp, asyncio and alembic log through stdlib logging: render them the
    # same way, so every line on stderr is one JSON object.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
