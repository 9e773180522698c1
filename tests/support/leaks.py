"""What a test may not leave behind: tasks, threads, timers (Home Assistant's ``verify_cleanup``, widened).

``TrackingLoop`` is uvloop (the daemon's loop) with a record of the timers scheduled on it, since uvloop has
no ``_scheduled`` list to look at. ``Leaks`` takes a snapshot when a test starts and says what is left when
it ends.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import uvloop

_PRUNE_AT = 10_000

# Timers a library leaves behind that our code cannot cancel, with the reason. Keep this short.
IGNORED_TIMERS = (
    # aiohttp 3.14's WebSocket client re-arms its heartbeat when a frame arrives while it is closing
    # (_flush_heartbeat_reset does not look at _closed); the timer fires once, finds the socket closed and
    # ends. The listener closes the socket (``async with ws_connect``) and the session.
    "ClientWebSocketResponse._send_heartbeat",
)


class TrackingLoop(uvloop.Loop):  # type: ignore[misc]  # uvloop.Loop has no type information
    """uvloop that remembers its timers (``call_later``/``call_at``, which ``asyncio.sleep``, ``timeout``,
    ``wait_for`` and the libraries use)."""

    def __init__(self) -> None:
        super().__init__()
        self.timers: list[asyncio.TimerHandle] = []

    def _track(self, handle: asyncio.TimerHandle) -> asyncio.TimerHandle:
        if not hasattr(handle, "when"):  # uvloop runs a delay <= 0 as call_soon: a Handle, not a timer
            return handle
        if len(self.timers) >= _PRUNE_AT:
            now = self.time()
            self.timers = [h for h in self.timers if not h.cancelled() and h.when() > now]
        self.timers.append(handle)
        return handle

    def call_later(self, delay: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:
        return self._track(super().call_later(delay, callback, *args, context=context))

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:
        return self._track(super().call_at(when, callback, *args, context=context))

    def pending_timers(self) -> list[asyncio.TimerHandle]:
        now = self.time()
        return [h for h in self.timers if not h.cancelled() and h.when() > now]


class Leaks:
    """A snapshot at the start of a test; ``threads()`` and ``timers()`` say what the test left."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._threads = set(threading.enumerate())
        if isinstance(loop, TrackingLoop):
            loop.timers.clear()  # only timers the test (and its function-scoped fixtures) schedule count

    async def threads(self, within: float = 5.0) -> list[str]:
        """Threads started during the test and still alive ``within`` seconds after it (a thread being
        joined, or a daemon's reader finishing, gets that long). The loop's own executor threads are
        shut down first, as closing the loop would."""
        try:
            async with asyncio.timeout(within):
                await self._loop.shutdown_default_executor()
        except TimeoutError:
            pass  # a job still runs in the loop's executor: its thread is reported below
        deadline = time.monotonic() + within
        while True:
            alive = [t for t in threading.enumerate() if t not in self._threads and t.is_alive()]
            if not alive or time.monotonic() > deadline:
                return [t.name for t in alive]
            await asyncio.sleep(0.02)  # threads have nothing to await on

    async def timers(self, within: float = 1.0) -> list[str]:
        """Timers still pending (not cancelled, not yet due) once the test's tasks are gone, after ``within``
        seconds for callbacks already scheduled (a transport's ``connection_lost`` runs a turn after
        ``close()``) to cancel theirs. What is left is cancelled and named."""
        if not isinstance(self._loop, TrackingLoop):
            return []
        deadline = time.monotonic() + within
        while True:
            pending = [h for h in self._loop.pending_timers() if not any(i in repr(h) for i in IGNORED_TIMERS)]
            if not pending or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        names = [repr(handle) for handle in pending]
        for handle in pending:
            handle.cancel()
        return names
