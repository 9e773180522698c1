"""structlog: one JSON line per event (console renderer on a tty); stdlib loggers routed into it.

``add_sink`` lets the store receive warning-and-above events (the SQLite ``logs`` table or the cloud
outbox) without ever blocking the log call: the sink itself only enqueues. Lines of a dry run
(``dry_run=true``, services/dryrun.py) are printed but never stored.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson
import structlog

_sinks: list[Callable[[str, str, dict[str, Any]], None]] = []
_SINK_LEVELS = {"warning", "error", "critical", "exception"}
_REDACT = ("token", "password", "access_key", "accesskey", "secret", "authorization")


def add_sink(sink: Callable[[str, str, dict[str, Any]], None]) -> Callable[[], None]:
    _sinks.append(sink)
    return lambda: _sinks.remove(sink) if sink in _sinks else None


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if any(word in key.lower() for word in _REDACT):
            event_dict[key] = "***"
    return event_dict


def _to_sinks(_: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    level = str(event_dict.get("level", method))
    if _sinks and not event_dict.get("dry_run") and (level in _SINK_LEVELS or event_dict.get("event") == "state_changed"):
        fields = {k: v for k, v in event_dict.items() if k not in {"event", "level", "timestamp"}}
        for sink in tuple(_sinks):
            try:
                sink(level, str(event_dict.get("event")), fields)
            except Exception:  # noqa: BLE001 - a broken sink must never break logging
                pass
    return event_dict


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure(level: str = "info", fmt: str | None = None) -> None:
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    numeric = logging.getLevelName(level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        _to_sinks,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
