"""The client listeners that keep one broker session: the MQTT client and AMQP listeners.

Each runs ``supervise(self._session)`` in a ``SessionTask`` (``runtime/adapters/supervision.py``):
``start`` returns once the first connection attempt was made (a broker that is down is not a start
failure: the listener says ``connecting``); ``stop`` asks the session to end (settle acknowledgements,
disconnect) within a bound, then cancels it. A lost connection leaves the state ``_after_loss`` names.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import structlog

from runtime.adapters.listeners.base import ListenerBase
from runtime.adapters.supervision import Outcome, SessionTask, supervise
from runtime.core.backoff import Backoff
from runtime.core.listener_state import ListenerState
from runtime.services.dataplane import Intake

log = structlog.get_logger(__name__)


class Outstanding:
    """Counts a connection's messages offered and not yet acknowledged, so ``stop`` can let them settle."""

    __slots__ = ("_idle", "outstanding")

    def __init__(self) -> None:
        self.outstanding = 0
        self._idle: asyncio.Future[None] | None = None

    def _one_settled(self) -> None:
        self.outstanding -= 1
        idle = self._idle
        if self.outstanding <= 0 and idle is not None and not idle.done():
            idle.set_result(None)

    async def settled(self, within: float) -> bool:
        """Wait until every offered message is acknowledged, or ``within`` seconds."""
        if self.outstanding <= 0:
            return True
        self._idle = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle, timeout=within)
        self._idle = None
        return self.outstanding <= 0


class SupervisedListener(ListenerBase):
    """Base of a client listener. The subclass calls ``_init_supervision`` in ``__init__``, provides
    ``counters``, ``_host``, ``_port``, ``_replies`` and ``async _session()`` (one connection: returns an
    ``Outcome`` or None, or raises one of ``_connection_errors`` when the connection is lost)."""

    counters: dict[str, int]
    _connection_errors: tuple[type[BaseException], ...]
    _host: str
    _port: int
    _replies: deque[Any]

    def _init_supervision(self, backoff_base: float, backoff_cap: float) -> None:
        self._backoff = Backoff(base=backoff_base, cap=backoff_cap)
        self._runner = SessionTask(f"listener:{self.key}")
        self._intake: Intake | None = None
        self._accepting = False
        self.last_error: str | None = None

    async def _session(self) -> Outcome | None:
        raise NotImplementedError

    def _after_loss(self) -> tuple[ListenerState, str]:
        """The state a lost (or never made) connection leaves, and the warning logged for it."""
        return ListenerState.CONNECTING, "listener_disconnected"

    def _on_loss(self, error: str) -> str:
        self.last_error = error
        state, event = self._after_loss()
        self._set_state(state)
        return event

    async def _supervise(self) -> None:
        try:
            await supervise(self._session, role="listener", backoff=self._backoff,
                            connection_errors=self._connection_errors, on_loss=self._on_loss,
                            stop=self._runner.stop_requested, attempted=self._runner.attempted,
                            listener=self.key, broker=f"{self._host}:{self._port}")
        finally:
            self._accepting = False

    async def _launch(self, intake: Intake) -> None:
        if self._runner.running:
            raise RuntimeError(f"listener {self.key} is already started")
        self._intake = intake
        self._set_state(ListenerState.CONNECTING)
        try:
            await self._runner.start(self._supervise)
        except BaseException:
            self._set_state(ListenerState.STOPPED)
            raise

    async def _end(self, limit: float) -> None:
        if not self._runner.running:
            return
        self._accepting = False
        try:
            await self._runner.stop(limit)
        finally:
            self._set_state(ListenerState.STOPPED)
            self._replies.clear()
        log.info("listener_stopped", listener=self.key, **self.counters)
