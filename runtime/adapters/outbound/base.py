"""What every transmitter looks like, and the bounded queue + retry loop the network ones share.

- ``submit(out, inbound)`` never blocks: it enqueues and returns ``True``, or returns ``False`` (and
  counts ``refused``) when the queue is full or the transmitter is not running.
- Each transmitter sends from its own task. A send that fails with ``RetryableSendError`` is retried
  with full-jitter backoff up to ``max_attempts`` times in all; then, or at once for a
  ``PermanentSendError``, it is counted ``failed`` and logged (never with credentials or payloads).
- ``stop(drain_timeout)`` refuses new messages, lets the queue drain for up to ``drain_timeout``
  seconds, then ends the task; what is still queued is counted ``dropped`` and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any, Protocol

import structlog

from runtime.core.backoff import Backoff
from runtime.core.messages import InboundMessage, OutgoingMessage
from runtime.services.metrics import Counters

log = structlog.get_logger(__name__)


class Transmitter(Protocol):
    key: str
    type: str

    def submit(self, out: OutgoingMessage, inbound: InboundMessage | None = None) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self, drain_timeout: float) -> None: ...

    def status(self) -> dict[str, Any]: ...  # {key, type, state, queued, sent, failed, refused, ...}


class SendError(Exception):
    """A send did not succeed. ``str()`` must not contain credentials or payloads."""


class RetryableSendError(SendError):
    """Worth another attempt: connection refused or lost, timeout, 5xx."""


class PermanentSendError(SendError):
    """Another attempt would fail the same way: 4xx, no topic."""


class Item:
    __slots__ = ("attempts", "out")

    def __init__(self, out: OutgoingMessage) -> None:
        self.out = out
        self.attempts = 0


class QueuedTransmitter:
    """Bounded queue, counters, start/stop and the retry policy; subclasses implement ``_run``."""

    type = "abstract"

    def __init__(
        self,
        key: str,
        *,
        queue_size: int = 1000,
        max_attempts: int = 3,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        counters: Counters | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.key = key
        self._queue: deque[Item] = deque()
        self._queue_size = queue_size
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._shared = counters
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight = 0
        self._accepting = False
        self._task: asyncio.Task[None] | None = None
        self.state = "stopped"
        self.last_error: str | None = None
        self.counters = {"submitted": 0, "sent": 0, "failed": 0, "refused": 0, "retried": 0, "dropped": 0}

    # ------------------------------------------------------------------ Transmitter protocol
    def submit(self, out: OutgoingMessage, inbound: InboundMessage | None = None) -> bool:
        if not self._accepting or len(self._queue) >= self._queue_size:
            self.counters["refused"] += 1
            if self._shared is not None:
                self._shared.transmit_failed[self.key] += 1
            return False
        self._queue.append(Item(out))
        self.counters["submitted"] += 1
        self._idle.clear()
        self._wake.set()
        return True

    async def start(self) -> None:
        if self._task is not None:
            return
        self._accepting = True
        self.state = "starting"
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"transmitter:{self.key}")

    async def stop(self, drain_timeout: float = 5.0) -> None:
        task = self._task
        self._accepting = False
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=drain_timeout)
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
        if isinstance(results[0], Exception):
            log.error("transmitter_crashed", transmitter=self.key, error=repr(results[0]))
        self._task = None
        self.state = "stopped"
        left = len(self._queue)
        if left:
            self._queue.clear()
            self.counters["dropped"] += left
            if self._shared is not None:
                self._shared.transmit_failed[self.key] += left
            log.warning("transmitter_dropped_on_stop", transmitter=self.key, dropped=left)
        self._in_flight = 0
        self._idle.set()

    def status(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "type": self.type,
            "state": self.state,
            "queued": len(self._queue),
            "lastError": self.last_error,
            **self.counters,
        }

    # ------------------------------------------------------------------ for subclasses
    async def _run(self) -> None:
        raise NotImplementedError

    async def _next(self) -> Item:
        """The next queued item (waits while the queue is empty). Pair with ``_finished``."""
        queue = self._queue
        while not queue:
            self._wake.clear()
            await self._wake.wait()
        self._in_flight += 1
        return queue.popleft()

    def _requeue(self, item: Item) -> None:
        """Put an item back at the head (its send was interrupted, not failed)."""
        self._queue.appendleft(item)
        self._in_flight -= 1
        self._wake.set()

    def _finished(self) -> None:
        self._in_flight -= 1
        if not self._queue and self._in_flight <= 0:
            self._idle.set()

    def _sent(self, item: Item) -> None:
        self.counters["sent"] += 1
        if self._shared is not None:
            self._shared.transmitted[self.key] += 1
        self.last_error = None
        self._finished()

    def _failed(self, item: Item, error: str) -> None:
        self.counters["failed"] += 1
        if self._shared is not None:
            self._shared.transmit_failed[self.key] += 1
        self.last_error = error
        out = item.out
        log.warning(
            "transmit_failed",
            transmitter=self.key,
            type=self.type,
            message_key=out.message_key,
            device_id=out.device_id,
            attempts=item.attempts,
            error=error,
        )
        self._finished()

    def _retry_delay(self, item: Item) -> float | None:
        """After a retryable failure: the delay before the next attempt, or None when attempts are used up."""
        if item.attempts >= self._max_attempts:
            return None
        self.counters["retried"] += 1
        return Backoff(base=self._backoff_base, cap=self._backoff_cap, attempt=item.attempts - 1).next_delay()

    async def _deliver(self, item: Item) -> None:
        """Send one item with the retry policy; counts the outcome. ``_send`` is the subclass's single attempt."""
        try:
            while True:
                item.attempts += 1
                try:
                    await self._send(item.out)
                except PermanentSendError as exc:
                    self._failed(item, str(exc))
                    return
                except RetryableSendError as exc:
                    delay = self._retry_delay(item)
                    if delay is None:
                        self._failed(item, str(exc))
                        return
                    self.last_error = str(exc)
                    await asyncio.sleep(delay)
                    continue
                except Exception as exc:  # a bug in the transmitter: count it, keep sending the others
                    log.error("transmitter_send_crashed", transmitter=self.key, exc_info=exc)
                    self._failed(item, f"internal error: {type(exc).__name__}")
                    return
                self._sent(item)
                return
        except asyncio.CancelledError:
            self._requeue(item)  # stop() counts it as dropped
            raise

    async def _send(self, out: OutgoingMessage) -> None:
        raise NotImplementedError
