"""What the log must never carry, and how often it may repeat itself (issue 18 items 7 and 12).

- ``redact``: a structlog processor, at every level and for stdlib records too (aiosqlite, aiohttp, paho at
  debug). Fields named like a credential (authorization, cookie, token, password, secret, ``*access_key``...)
  become ``"***"``, at any depth (a ``headers`` dict); in every string, values that look like one
  (``Basic ...``, ``Bearer ...``, ``SharedAccessSignature ...``, ``password=...``, ``user:pass@`` in a URL)
  are masked.
- ``RateLimiter``: per (logger, level, event, listener/server) at most ``burst`` warnings or errors per
  ``interval`` seconds; the rest are dropped and counted, and the next one that passes says
  ``suppressed=N``. The number of keys is bounded, so varying field values cannot grow it.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, MutableMapping
from typing import Any

MASK = "***"

_NAME = re.compile(
    r"authorization|cookie|token|passw(or)?d|pwd|secret|credential|signature"
    r"|(access|api|private|device|primary|secondary|shared|sas|auth)[_-]?key",
    re.IGNORECASE,
)
_VALUES = (
    # scheme + credentials in a header value
    (re.compile(r"\b(Basic|Bearer|Digest|SharedAccessSignature|Token)\s+[^\s'\",;)}\]]+", re.IGNORECASE),
     r"\1 " + MASK),
    # name=value / "name": "value" pairs (query strings, reprs, JSON, SQL parameter dumps)
    (re.compile(r"""((?:authorization|cookie|token|passw(?:or)?d|pwd|secret|access[_-]?key|api[_-]?key|"""
                r"""private[_-]?key|sig)['"]?\s*[:=]\s*['"]?)"""
                r"""(?!(?:Basic|Bearer|Digest|SharedAccessSignature|Token)\s)([^\s'"&,;)}\]]+)""", re.IGNORECASE),
     r"\1" + MASK),
    # user:password@ in a URL
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@", re.IGNORECASE), r"\1" + MASK + "@"),
)
_MAX_DEPTH = 6


def is_secret_name(name: str) -> bool:
    return _NAME.search(name) is not None


def redact_text(text: str) -> str:
    for pattern, replacement in _VALUES:
        text = pattern.sub(replacement, text)
    return text


def _clean(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and is_secret_name(k) and v not in (None, "")
                    and not isinstance(v, bool)
                    else _clean(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_clean(v, depth + 1) for v in value)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if key in ("level", "timestamp", "logger", "_record", "_from_structlog"):
            continue
        if key != "event" and is_secret_name(key):
            if value not in (None, "") and not isinstance(value, bool):  # a flag carries no secret
                event_dict[key] = MASK
        elif key == "exc_info" or key == "exception":
            if isinstance(value, str):
                event_dict[key] = redact_text(value)
        else:
            event_dict[key] = _clean(value, 0)
    return event_dict


class RateLimiter:
    """Admits at most ``burst`` events per key per ``interval`` seconds; counts the rest."""

    def __init__(self, *, burst: int = 5, interval: float = 10.0, max_keys: int = 2048,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.interval = interval
        self._max_keys = max_keys
        self._clock = clock
        self._windows: OrderedDict[tuple[Any, ...], list[float | int]] = OrderedDict()  # key -> [start, n, dropped]

    def admit(self, key: tuple[Any, ...]) -> int | None:
        """None: drop this one. Otherwise the number suppressed since the last one admitted (0 if none)."""
        now = self._clock()
        w = self._windows.get(key)
        if w is None:
            self._windows[key] = [now, 1, 0]
            if len(self._windows) > self._max_keys:
                self._windows.popitem(last=False)
            return 0
        self._windows.move_to_end(key)
        if now - w[0] >= self.interval:
            dropped = int(w[2])
            w[0], w[1], w[2] = now, 1, 0
            return dropped
        if w[1] < self.burst:
            w[1] += 1
            dropped = int(w[2])
            w[2] = 0
            return dropped
        w[2] += 1
        return None


RATE_LIMITED_LEVELS = frozenset({"warning", "error", "critical"})


def rate_key(event_dict: MutableMapping[str, Any], logger: str) -> tuple[Any, ...]:
    return (logger, event_dict.get("level"), str(event_dict.get("event"))[:200], event_dict.get("listener"),
            event_dict.get("server"))
