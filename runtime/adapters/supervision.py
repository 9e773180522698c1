"""One ``supervise()`` for every long-lived client session (STYLE §3), and ``SessionTask``, its owner.

A *session* is one connection: it connects, serves until the connection ends, and closes what it opened.
``supervise`` runs sessions until stopped: after a lost connection (one of ``connection_errors``, or a
session that returns ``None``) it calls ``on_loss(error)`` (the owner records the error, sets its state and
names the warning to log), waits a full-jitter backoff (``Backoff``: the session resets it once
connected), then runs the next session. A session that returns ``Outcome.AGAIN`` is run again at once
(e.g. reconnecting for redelivery); ``Outcome.STOPPED`` ends supervision. Any other ``Exception`` is a
bug: logged with its stack (``{role}_session_crashed``) and treated as a lost connection, so one bad
session never ends the owner. ``FatalError`` and cancellation escape.

Users: the MQTT client listener and the AMQP listener (``SupervisedListener``), the WebSocket client
listener, the MQTT transmitter and the MQTT command channel (no ``stop``: cancellation ends it), and the Cluster
edition's RabbitMQ publisher, command router (no ``stop``) and partition consumer (``adapters/queue/``), and
the data-stream process (``adapters/streams/process.py``: a session is one stream process).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from runtime.core.backoff import Backoff
from runtime.core.errors import FatalError, describe

log = structlog.get_logger(__name__)


class Outcome(enum.Enum):
    STOPPED = "stopped"  # the session ended because a stop was asked for: supervision ends
    AGAIN = "again"  # reconnect at once, without backoff


async def supervise(
    session: Callable[[], Awaitable[Outcome | None]],
    *,
    role: str,
    backoff: Backoff,
    connection_errors: tuple[type[BaseException], ...],
    on_loss: Callable[[str], str],
    stop: asyncio.Event | None = None,
    attempted: asyncio.Event | None = None,
    closed_error: str = "the broker closed the connection",
    **log_fields: Any,
) -> None:
    """Run ``session`` until it returns ``Outcome.STOPPED`` or ``stop`` is set (forever without ``stop``).

    ``attempted`` is set after every session (and when supervision ends): what ``SessionTask.start`` waits for.
    """
    try:
        while stop is None or not stop.is_set():
            outcome: Outcome | None = None
            error: str | None = None
            try:
                outcome = await session()
            except* FatalError as group:
                raise group.exceptions[0]  # noqa: B904 - naked and unchanged (its own cause kept)
            except* connection_errors as group:
                error = describe(group.exceptions[0])
            except* Exception as group:  # a bug or an unexpected library error: log it, keep supervising
                error = f"internal error: {describe(group.exceptions[0])}"
                log.error(f"{role}_session_crashed", exc_info=group.exceptions[0], **log_fields)
            if attempted is not None:
                attempted.set()
            if outcome is Outcome.STOPPED or (stop is not None and stop.is_set()):
                return
            if outcome is Outcome.AGAIN:
                continue
            event = on_loss(error or closed_error)
            delay = backoff.next_delay()
            log.warning(event, error=error or closed_error, attempt=backoff.attempt, retry_in=round(delay, 3),
                        **log_fields)
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
    finally:
        if attempted is not None:
            attempted.set()


class SessionTask:
    """Owns one named supervision task: ``start`` returns once its first connection attempt was made (a broker
    that is down is not a start failure), ``stop`` asks it to end within a bound, then cancels it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stop_requested = asyncio.Event()
        self.attempted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    async def start(self, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start ``run()`` (which calls ``supervise`` with ``stop_requested`` and ``attempted``). Raises what
        the task raised when it ended before its first attempt (it never should: a bug surfaces here)."""
        if self._task is not None:
            raise RuntimeError(f"{self.name} is already started")
        self.stop_requested.clear()
        self.attempted.clear()
        loop = asyncio.get_running_loop()
        task = self._task = loop.create_task(run(), name=self.name)
        waiter = loop.create_task(self.attempted.wait(), name=f"{self.name}:first-attempt")
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        if task.done():
            self._task = None
            task.result()

    async def stop(self, limit: float) -> bool:
        """Ask the task to end (``stop_requested``) and wait up to ``limit`` seconds, then cancel it. False
        when it had to be cancelled. Cancelling ``stop`` itself cancels the task at once."""
        task = self._task
        if task is None:
            return True
        self.stop_requested.set()
        try:
            if limit <= 0:  # nothing to end cleanly (e.g. still connecting): cancel at once
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return True
            await asyncio.wait_for(asyncio.shield(task), timeout=limit)
            return True
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            log.warning("session_stop_timed_out", task=self.name)
            return False
        except asyncio.CancelledError:  # the caller gave up waiting (DataPlane's drain timeout): end it now
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        except Exception as exc:  # noqa: BLE001 - a crashed supervision task must not stop the stop
            log.error("session_task_crashed", task=self.name, error=describe(exc))
            return True
        finally:
            self._task = None
