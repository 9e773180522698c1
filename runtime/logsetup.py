"""structlog: one JSON line per event (console renderer on a tty); stdlib loggers routed into it.

``add_sink`` lets the store receive warning-and-above events (the SQLite ``logs`` table or the cloud
outbox) without ever blocking the log call: the sink itself only enqueues. Lines of a dry run
(``dry_run=true``, services/dryrun.py) are printed but never stored.

Every event, structlog's and the stdlib's (aiohttp, aiosqlite, paho), at every level, is redacted
(``logredact.redact``: credential-like fields and values) before it is rendered or reaches a sink, and
warnings/errors are rate-limited per key (``logredact.RateLimiter``: at most 5 per 10 s, then one line with
``suppressed=N``), so a flood of bad requests cannot flood stdout or the store.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson
import structlog

from runtime.logredact import RATE_LIMITED_LEVELS, RateLimiter, rate_key, redact

_sinks: list[Callable[[str, str, dict[str, Any]], None]] = []
_SINK_LEVELS = {"warning", "error", "critical", "exception"}
limiter = RateLimiter()


def add_sink(sink: Callable[[str, str, dict[str, Any]], None]) -> Callable[[], None]:
    _sinks.append(sink)
    return lambda: _sinks.remove(sink) if sink in _sinks else None


def to_sinks(level: str, event: str, fields: dict[str, Any]) -> None:
    """An event to this process's sinks (this process's own, and those the stream process logged)."""
    for sink in tuple(_sinks):
        try:
            sink(level, event, fields)
        except Exception:  # noqa: BLE001 - a broken sink must never break logging
            pass


def _rate_limit(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog's own events: dropped (before the sinks) when over the rate."""
    if event_dict.get("level") in RATE_LIMITED_LEVELS:
        suppressed = limiter.admit(rate_key(event_dict, str(event_dict.get("logger"))))
        if suppressed is None:
            raise structlog.DropEvent
        if suppressed:
            event_dict["suppressed"] = suppressed
    return event_dict


class _ForeignRateLimit(logging.Filter):
    """stdlib records (aiohttp, aiosqlite...): the same limit, applied before they are formatted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, dict):  # from structlog: limited in its chain already
            return True
        level = record.levelname.lower()
        if level not in RATE_LIMITED_LEVELS:
            return True
        suppressed = limiter.admit((record.name, level, str(record.msg)[:200], None, None))
        if suppressed is None:
            return False
        if suppressed:
            record.suppressed = suppressed
        return True


def _foreign_suppressed(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    record = event_dict.get("_record")
    suppressed = getattr(record, "suppressed", None)
    if suppressed:
        event_dict["suppressed"] = suppressed
    return event_dict


def _to_sinks(_: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    level = str(event_dict.get("level", method))
    if _sinks and not event_dict.get("dry_run") and (level in _SINK_LEVELS or event_dict.get("event") == "state_changed"):
        fields = {k: v for k, v in event_dict.items() if k not in {"event", "level", "timestamp"}}
        to_sinks(level, str(event_dict.get("event")), fields)
    return event_dict


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure(level: str = "info", fmt: str | None = None) -> None:
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    numeric = logging.getLevelName(level.upper())
    head: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *head,
            _rate_limit,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,  # before redact: a traceback's text is redacted too
            redact,
            _to_sinks,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*head, _foreign_suppressed, structlog.processors.format_exc_info, redact, _to_sinks],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_ForeignRateLimit())
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiosqlite logs every call with its SQL parameters (device keys, headers) at debug: never wanted
    logging.getLogger("aiosqlite").setLevel(max(numeric, logging.INFO))
    structlog.get_logger(__name__).debug("logging_configured", level=level, format=fmt)
