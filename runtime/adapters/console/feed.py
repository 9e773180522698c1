"""``GET /feed``: the console's live feed, server-sent events over one long response.

The browser reads it with ``fetch()`` (so the token travels in the ``Authorization`` header, never in the
URL, which ``EventSource`` cannot avoid). One ``status`` event at once, then one a second and one at each
state change: the instance state, listeners, counters, per-listener message counts, the number of devices,
the number of device errors raised and cleared so far.
The page derives the message rates from the counters and fetches lists (dead letters, devices, events)
only when the counters or the state say they changed: no polling storm.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
import structlog
from aiohttp import web

from runtime.core.timefmt import iso
from runtime.services.commands import Operations

log = structlog.get_logger(__name__)

MAX_STREAMS = 16


class Feed:
    def __init__(self, ops: Operations, *, interval: float = 1.0) -> None:
        self._ops = ops
        self._interval = interval
        self._streams: set[asyncio.Event] = set()
        self._closing = False

    async def on_shutdown(self, app: web.Application) -> None:
        """The admin API is closing: end every open stream now (the runner waits for handlers)."""
        self._closing = True
        for wake in tuple(self._streams):
            wake.set()

    def frame(self) -> bytes:
        ops = self._ops
        body: dict[str, Any] = ops.status()
        counters = ops.metrics.counters
        body["byListener"] = dict(counters.by_listener)
        body["transmitted"] = dict(counters.transmitted)
        body["deviceErrorEvents"] = counters.device_error_events  # the page refetches /events when it moves
        body["deviceCount"] = len(ops.devices)
        loaded = ops.runtime.loaded
        body["solutionListeners"] = [x.key for x in loaded.doc.solution.listeners] if loaded is not None else []
        body["at"] = iso(time.time())
        return b"event: status\ndata: " + orjson.dumps(body) + b"\n\n"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if len(self._streams) >= MAX_STREAMS:
            return web.Response(status=503, content_type="application/json", headers={"Retry-After": "5"},
                                body=orjson.dumps({"error": {"code": "too_many_feeds", "message":
                                                             f"{MAX_STREAMS} feeds are open already"}}))
        resp = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        })
        await resp.prepare(request)
        wake = asyncio.Event()
        self._streams.add(wake)
        remove = self._ops.runtime.add_state_listener(lambda _change: wake.set())
        log.info("console_feed_opened", remote=request.remote, streams=len(self._streams))
        try:
            while not self._closing:
                wake.clear()
                await resp.write(self.frame())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self._interval)
        except ConnectionError:  # the page went away (aiohttp's ClientConnectionResetError is one)
            pass
        finally:
            remove()
            self._streams.discard(wake)
            log.info("console_feed_closed", remote=request.remote)
        return resp
