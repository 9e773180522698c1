"""The data plane: listeners -> bounded intake -> one worker that processes batches -> effects.

It starts with Starting and stops with Pausing/Stopping. Stop order (STYLE §3): (1) listeners stop
taking messages, all at once, (2) the intake drains within ``drain_timeout``, (3) the worker ends, (4)
transmitters flush. Every step is bounded by ``drain_timeout`` and by one deadline for the whole stop (the
supervisor's, ``NUVIOT_STOP_TIMEOUT``), so the stop takes that long at most however many listeners there are.
Nothing here awaits per message: the worker takes a batch and processes it synchronously.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import structlog

from runtime.core.errors import ListenerBindError
from runtime.core.messages import InboundMessage
from runtime.services.metrics import Counters

log = structlog.get_logger(__name__)


class Intake:
    """Bounded hand-off between listeners and the worker. ``offer`` never blocks: full means refused."""

    def __init__(self, maxsize: int, counters: Counters) -> None:
        self.maxsize = maxsize
        self._buf: deque[InboundMessage] = deque()
        self._counters = counters
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._accepting = True
        self._empty = asyncio.Event()
        self._empty.set()
        self.low_water = max(1, maxsize // 4)
        self._on_room: list[Callable[[], None]] = []

    def __len__(self) -> int:
        return len(self._buf)

    @property
    def accepting(self) -> bool:
        return self._accepting and not self._closed

    def offer(self, msg: InboundMessage) -> bool:
        c = self._counters
        buf = self._buf
        depth = len(buf)
        if not self._accepting or self._closed or depth >= self.maxsize:
            c.refused += 1
            return False
        buf.append(msg)
        if not depth:  # ``_empty`` is set exactly while the buffer is empty
            self._empty.clear()
        c.received += 1
        c.by_listener[msg.listener] += 1
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        return True

    @property
    def has_room(self) -> bool:
        """Below a quarter full: where a listener that paused reading (TCP pushes back) reads again."""
        return len(self._buf) < self.low_water

    def call_when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, on the event loop, when the buffer is back below ``low_water`` or the
        intake stops accepting (what arrives then is refused and counted, so it should be read)."""
        if not self.accepting or self.has_room:
            callback()
        else:
            self._on_room.append(callback)

    def _room(self) -> None:
        callbacks, self._on_room = self._on_room, []
        for callback in callbacks:
            try:
                callback()
            except Exception as exc:  # one listener's resume must not stop the worker
                log.error("intake_room_callback_failed", error=repr(exc), exc_info=exc)

    def stop_accepting(self) -> None:
        self._accepting = False
        self._room()

    def close(self) -> None:
        self._closed = True
        self._accepting = False
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        self._room()

    async def take(self, max_batch: int) -> list[InboundMessage]:
        """Up to ``max_batch`` messages; waits while empty; [] once closed and empty."""
        while not self._buf:
            if self._closed:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        buf = self._buf
        if len(buf) <= max_batch:
            batch = list(buf)
            buf.clear()
        else:
            batch = [buf.popleft() for _ in range(max_batch)]
        if not buf:
            self._empty.set()
        if self._on_room and len(buf) < self.low_water:
            self._room()
        return batch

    async def drained(self, within: float) -> bool:
        """Wait until the buffer is empty (the worker took everything) or ``within`` seconds pass."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), timeout=within)
        return not self._buf


# Generation-0 collections every 20,000 allocations instead of 700: most per-message objects are freed by
# reference counting within a batch, so a rarer young collection finds far fewer of them alive (GC time in a
# 300,000-message run: 1.4 s -> 0.09 s; the longest young collection ~1 ms).
GC_THRESHOLDS = (20_000, 10, 10)


def settle_heap() -> None:
    """Move what start-up built (modules, the solution, its compiled readers, the devices) out of the GC's sight.

    A full collection walked all of it every time: 40-80 ms pauses of the message worker under load (the
    committed p99). ``gc.freeze`` keeps those objects out of later collections; ``unfreeze`` first, so what
    an earlier start froze (an old solution, after a reload) is collected now if it has become garbage.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def stop_together(what: str, stops: dict[str, Callable[[], Coroutine[Any, Any, object]]], within: float) -> None:
    """Run every stop at once (name -> coroutine function). Those still running after ``within`` seconds are
    cancelled and named in one log line; a failing one is logged and the others go on."""
    tasks = {asyncio.create_task(stop(), name=f"stop:{what}:{name}"): name for name, stop in stops.items()}
    if not tasks:
        return
    try:
        done, pending = await asyncio.wait(tasks, timeout=max(0.0, within))
    finally:
        leftover = [t for t in tasks if not t.done()]
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.wait(leftover, timeout=1.0)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error(f"{what}_stop_failed", name=tasks[task], error=repr(task.exception()))
    if pending:
        log.warning("stop_timed_out", what=what, after_s=round(within, 3), still_running=sorted(tasks[t] for t in pending))


class Deadline:
    """One budget for a whole stop: ``left(bound)`` is ``bound`` or what remains, whichever is less."""

    def __init__(self, at: float | None = None, *, within: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.at = at if at is not None else loop.time() + (within if within is not None else 10.0)

    def left(self, bound: float | None = None) -> float:
        remaining = max(0.0, self.at - self._loop.time())
        return remaining if bound is None else min(bound, remaining)


class Listener(Protocol):
    key: str
    type: str

    async def start(self, intake: Intake) -> None: ...  # bind/connect, then return; raise ListenerBindError

    async def stop(self) -> None: ...  # stop taking messages and close

    def status(self) -> dict[str, Any]: ...  # {key, type, state, port, ...}


class Dispatcher(Protocol):
    def process(self, batch: list[InboundMessage]) -> None: ...  # synchronous: no await per message

    async def flush(self) -> None: ...  # wait for effects of processed messages (transmits) within bounds

    async def ready(self) -> None: ...  # awaited between batches: back-pressure from the store


class DataPlane:
    def __init__(
        self,
        listeners: list[Listener],
        dispatcher: Dispatcher,
        counters: Counters,
        *,
        intake_size: int = 10_000,
        batch_size: int = 256,
        drain_timeout: float = 5.0,
        on_fatal: Callable[[str], None] | None = None,
        closers: list[Callable[[], Any]] | None = None,
        background: dict[str, Callable[[], Coroutine[Any, Any, None]]] | None = None,
    ) -> None:
        self.listeners = listeners
        self.dispatcher = dispatcher
        self.intake = Intake(intake_size, counters)
        self._batch_size = batch_size
        self._drain_timeout = drain_timeout
        self._on_fatal = on_fatal
        self._worker: asyncio.Task[None] | None = None
        self._started: list[Listener] = []
        self._closers = closers or []
        # loops that live as long as the plane (the watchdogs, services/health.py): cancelled on stop
        self._background = background or {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        settle_heap()
        self._worker = asyncio.create_task(self._work(), name="dataplane:worker")
        self._worker.add_done_callback(self._worker_done)
        for name, loop in self._background.items():
            task = asyncio.create_task(loop(), name=f"dataplane:{name}")
            self._tasks.add(task)
            task.add_done_callback(self._background_done)
        try:
            for listener in self.listeners:
                await listener.start(self.intake)
                self._started.append(listener)
                log.info("listener_started", listener=listener.key, type=listener.type,
                         port=listener.status().get("port"))
        except ListenerBindError:
            await self.stop()
            raise
        except Exception:
            await self.stop()
            raise

    async def stop(self, deadline: float | None = None) -> None:
        """Stop within ``deadline`` (event-loop time; default: ``4 * drain_timeout`` from now)."""
        budget = Deadline(deadline, within=4 * self._drain_timeout)
        # (1) no new messages: every listener stops at once
        self.intake.stop_accepting()
        started, self._started = self._started, []
        await stop_together("listener", {lst.key: lst.stop for lst in started}, budget.left(self._drain_timeout))
        # (2) drain what was taken in
        if not await self.intake.drained(budget.left(self._drain_timeout)):
            log.warning("drain_timed_out", left=len(self.intake))
        # (3) end the worker
        self.intake.close()
        if self._worker is not None:
            worker, self._worker = self._worker, None
            try:
                await asyncio.wait_for(asyncio.shield(worker), timeout=budget.left(self._drain_timeout))
            except TimeoutError:
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
                log.warning("worker_cancelled_on_stop", task=worker.get_name())
        tasks, self._tasks = self._tasks, set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # (4) flush effects (transmitters), then close what the plane owns
        try:
            await asyncio.wait_for(self.dispatcher.flush(), timeout=budget.left(self._drain_timeout))
        except Exception as exc:  # noqa: BLE001
            log.warning("flush_on_stop_incomplete", error=repr(exc))
        for close in self._closers:
            with contextlib.suppress(Exception):
                result = close()
                if asyncio.iscoroutine(result):
                    await asyncio.wait_for(result, timeout=budget.left(self._drain_timeout))

    def status(self) -> dict[str, Any]:
        return {
            "listeners": [listener.status() for listener in self.listeners],
            "intake": {"depth": len(self.intake), "capacity": self.intake.maxsize},
        }

    async def _work(self) -> None:
        intake, dispatcher, size = self.intake, self.dispatcher, self._batch_size
        while True:
            batch = await intake.take(size)
            if not batch:
                return
            dispatcher.process(batch)
            await asyncio.sleep(0)  # let listeners and the API run between batches
            await dispatcher.ready()  # the store is behind: wait (the intake fills, listeners push back)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background_task_crashed", task=task.get_name(), error=repr(task.exception()),
                      exc_info=task.exception())

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("worker_crashed", error=repr(exc), exc_info=exc)
            if self._on_fatal is not None:
                self._on_fatal(f"message worker crashed: {exc!r}")
