"""Start, supervise and stop the listeners that run one supervision task: connect to a broker, consume, and
reconnect with jittered backoff until stopped (``_run``; the MQTT client and AMQP listeners).

``start`` returns once the first connection attempt was made (a broker that is down is not a start
failure: the listener says ``connecting``); ``stop`` asks the task to end (settle acknowledgements,
unsubscribe, disconnect) within a bound, then cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import structlog

from runtime.core.backoff import Backoff
from runtime.core.errors import describe
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



async def first_attempt_or_end(task: asyncio.Task[None], first_attempt: asyncio.Event) -> bool:
    """Wait until a supervision task made its first connection attempt (``first_attempt`` set) or ended;
    True when it ended: it never should while running, so the caller surfaces what it raised."""
    waiter = asyncio.ensure_future(first_attempt.wait())
    await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    if not waiter.done():
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
    return task.done()


class SupervisedListener:
    """Mixin. The class provides ``key``, ``counters``, ``async _session()`` (one connection: returns
    ``"stopped"``, ``"redeliver"`` (reconnect at once) or None, or raises one of ``_connection_errors``
    when the connection is lost), and sets the attributes below."""

    key: str
    counters: dict[str, int]
    last_error: str | None
    _connection_errors: tuple[type[BaseException], ...]
    _host: str
    _port: int
    _backoff: Backoff
    _task: asyncio.Task[None] | None
    _intake: Intake | None
    _stop_requested: asyncio.Event
    _first_attempt: asyncio.Event
    _state: str
    _accepting: bool
    _replies: deque[Any]

    async def _session(self) -> str | None:
        raise NotImplementedError

    def _after_loss(self) -> tuple[str, str]:
        """The state a lost (or never made) connection leaves, and the warning logged for it."""
        return "connecting", "listener_disconnected"

    async def _run(self) -> None:
        """Sessions until stopped; after a lost connection, wait the jittered backoff (stop cuts it short)."""
        try:
            while not self._stop_requested.is_set():
                outcome = None
                try:
                    outcome = await self._session()
                    error = None
                except* self._connection_errors as group:
                    error = describe(group.exceptions[0])
                except* Exception as group:  # a bug or an unexpected library error: log, keep the listener
                    error = f"internal error: {describe(group.exceptions[0])}"
                    log.error("listener_session_crashed", listener=self.key, exc_info=group.exceptions[0])
                self._first_attempt.set()
                if outcome == "stopped" or self._stop_requested.is_set():
                    return
                if outcome == "redeliver":
                    continue
                self.last_error = error or "the broker closed the connection"
                self._state, event = self._after_loss()
                delay = self._backoff.next_delay()
                log.warning(event, listener=self.key, broker=f"{self._host}:{self._port}", error=self.last_error,
                            attempt=self._backoff.attempt, retry_in=round(delay, 3))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_requested.wait(), timeout=delay)
        finally:
            self._accepting = False
            self._first_attempt.set()

    async def _launch(self, intake: Intake) -> None:
        if self._task is not None:
            raise RuntimeError(f"listener {self.key} is already started")
        self._intake = intake
        self._stop_requested.clear()
        self._first_attempt.clear()
        self._state = "connecting"
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"listener:{self.key}")
        if await first_attempt_or_end(self._task, self._first_attempt):  # a bug: surface it
            task, self._task = self._task, None
            self._state = "stopped"
            task.result()

    async def _end(self, limit: float) -> None:
        task = self._task
        if task is None:
            return
        self._stop_requested.set()
        self._accepting = False
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=limit)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            log.warning("listener_stop_timed_out", listener=self.key)
        except asyncio.CancelledError:  # the caller gave up waiting (DataPlane's drain timeout): end it now
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        except Exception as exc:  # noqa: BLE001 - a crashed supervision task must not stop the stop
            log.error("listener_crashed", listener=self.key, error=describe(exc))
        finally:
            self._task = None
            self._state = "stopped"
            self._replies.clear()
        log.info("listener_stopped", listener=self.key, **self.counters)
