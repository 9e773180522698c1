"""Data streams at run time: rows in (route step, scripts), through the durable queue, out to each
stream's database by one drainer task per stream, with retry and back-off. Over ports only.

A row leaves the queue only after its sink committed it; while a database is away the drainer keeps the
rows, records the error (``/status``, ``/metrics``) and retries with jittered back-off; the instance
stays Running. A row the database refuses itself (a value its column cannot hold, a constraint it breaks) is
another matter: retrying it would stop the stream for good, so the sink commits the batch's other rows and
names the refused ones, which the queue keeps aside (``rejected``) while the stream goes on; the operator
looks at them (``rejected``) and, once the table takes them, queues them again (``requeue_rejected``).
``status()`` is CONTRACT §9's ``GET /datastreams`` body.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import structlog

from runtime.core.errors import describe
from runtime.core.streams import StreamSpec, build_row, passed_mark
from runtime.core.timefmt import iso

log = structlog.get_logger(__name__)

BATCH = 10_000  # rows a drainer writes at most in one transaction
RETRY_BASE = 0.25
RETRY_CAP = 5.0
GATHER = 0.1  # seconds a drainer lets rows gather at most before it writes under half a batch ...
GATHER_STEP = 0.025  # ... as long as each step brings more (the stream process gets a frame each 0.02 s)


class StreamSink(Protocol):
    """One stream's database (adapters/streams)."""

    async def start(self) -> None: ...  # schema check / creation; StreamStartError when it cannot run

    async def write(self, ops: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
        """Commit ``ops`` in order, or raise (nothing committed: the drainer tries the batch again). What the
        database refused itself (not its connection, not its schema) comes back as (the op, the database's
        reason), every other op committed; the drainer keeps those aside and never tries them again."""
        ...

    async def read(self, device_id: str | None, start: float | None, end: float | None,
                   limit: int) -> list[dict[str, Any]]: ...  # newest first

    async def close(self) -> None: ...


class RemoteDrains(Protocol):
    """A queue whose drainers run elsewhere (the stream process)."""

    async def start_streams(self, streams: list[Any], observer: Callable[[dict[str, Any]], None]) -> None: ...

    async def stop_streams(self, budget: float, *, wait: bool = True) -> None: ...

    async def flush(self) -> None: ...


class QueuePort(Protocol):
    listeners: list[Callable[[set[str]], None]]

    @property
    def overflow(self) -> Mapping[str, int]: ...  # rows refused per stream (read-only here)

    @property
    def rejected_kept(self) -> Mapping[str, int]: ...  # refused rows kept aside now, per stream

    def depth(self, stream: str) -> int: ...

    async def rejected(self, stream: str, limit: int) -> list[dict[str, Any]]: ...  # {id, at, reason, row}

    async def requeue_rejected(self, stream: str) -> int: ...  # back at the end of the queue, in one transaction

    def put(self, stream: str, item: dict[str, Any]) -> bool: ...

    def after_commit(self, callback: Callable[[], None]) -> None: ...

    async def flush(self) -> None: ...


class LocalQueue(QueuePort, Protocol):
    """A queue this process drains (``StreamQueue``)."""

    async def take(self, stream: str, limit: int) -> list[tuple[int, list[dict[str, Any]]]]: ...  # chunks

    async def ack(self, stream: str, last_seq: int, count: int,
                  rejected: Sequence[tuple[dict[str, Any], str]] = (), at: float | None = None) -> None: ...


@dataclass
class StreamState:
    spec: StreamSpec
    sink: StreamSink
    wake: asyncio.Event
    idle: asyncio.Event
    written: int = 0
    failures: int = 0
    rejected: int = 0  # rows the database refused (kept aside in the queue's ``rejected`` table)
    last_rejection: str | None = None
    last_rejection_at: float | None = None
    last_write_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    task: asyncio.Task[None] | None = None
    stopping: bool = False


class StreamService:
    """The solution's streams. ``row``/``put`` are synchronous and never block (the dispatcher calls them
    per message); ``start``/``stop`` run with the command plane."""

    def __init__(self, specs: Mapping[str, StreamSpec], sinks: Mapping[str, StreamSink], queue: QueuePort, *,
                 clock: Callable[[], float] = time.time, drain_timeout: float = 5.0) -> None:
        self.specs = dict(specs)
        self._queue = queue
        # the queue runs the drainers in the stream process (adapters/streams/process.py): they get the
        # streams' models (each spec's ``source``) there and report each write here (``_on_report``)
        self._remote: RemoteDrains | None = queue if getattr(queue, "remote", False) else None  # type: ignore[assignment]
        self.observer: Callable[[StreamState], None] | None = None  # told of each write and failure
        self._clock = clock
        self._drain_timeout = drain_timeout
        self._states = {k: StreamState(specs[k], sinks[k], asyncio.Event(), asyncio.Event()) for k in specs}
        self._listener = self._on_commit
        # ``put`` (queue a checked row; False, and counted, when the stream's queue is full) is the queue's own:
        # the dispatcher calls it per message
        self.put: Callable[[str, dict[str, Any]], bool] = queue.put

    def __contains__(self, stream: str) -> bool:
        return stream in self.specs

    # ------------------------------------------------------------------ rows in
    def row(self, stream: str, device_id: str, at: float, values: Mapping[str, Any]) -> dict[str, Any]:
        """A checked new row for ``put``; raises ``StreamRowError`` (a dead letter naming stream and field)."""
        return {"op": "add", "row": build_row(self.specs[stream], device_id, at, values, stamp=False), "at": at}

    def update_row(self, stream: str, device_id: str, at: float, values: Mapping[str, Any],
                   where: Mapping[str, Any] | None) -> dict[str, Any]:
        """``updateDataStream``: set ``values`` on the rows matching ``where`` (column -> value; the
        device's own rows when it is empty)."""
        spec = self.specs[stream]
        row = build_row(spec, device_id, at, values, partial=True)
        return {"op": "update", "row": row, "where": dict(where or {}) or {spec.device_field: device_id}}

    def add(self, stream: str, device_id: str, at: float, values: Mapping[str, Any]) -> bool:
        return self.put(stream, self.row(stream, device_id, at, values))

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._queue.after_commit(callback)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        try:
            for st in self._states.values():
                if st.spec.fallback:
                    log.warning("datastream_written_to_builtin", stream=st.spec.key, type=st.spec.type_id,
                                reason="this stream type cannot be reached from this runtime")
                await st.sink.start()
        except BaseException:
            for st in self._states.values():
                with contextlib.suppress(Exception):
                    await st.sink.close()
            raise
        if self._remote is not None:
            if not self._states:
                return  # nothing to run: no stream process for it
            try:
                await self._remote.start_streams([st.spec.source for st in self._states.values()], self._on_report)
            except BaseException:
                for st in self._states.values():
                    with contextlib.suppress(Exception):
                        await st.sink.close()
                raise
            if self._states:
                log.info("datastreams_started", process=True,
                         streams=[f"{s.spec.key}:{s.spec.kind.value}" for s in self._states.values()])
            return
        self._queue.listeners.append(self._listener)
        for st in self._states.values():
            st.wake.set()  # rows left from a previous run go first
            st.task = asyncio.create_task(self._drain(st), name=f"datastream:{st.spec.key}")
        if self._states:
            log.info("datastreams_started",
                     streams=[f"{s.spec.key}:{s.spec.kind.value}" for s in self._states.values()])

    async def stop(self, budget: float | None = None) -> None:
        """Commit what is queued, give the drainers ``drain_timeout`` (or ``budget``, what the caller has left) to
        deliver it unless their database is failing, then stop; what is left stays in the durable queue."""
        budget = self._drain_timeout if budget is None else max(0.0, min(budget, self._drain_timeout))
        if self._remote is not None:
            if not self._states:
                return
            started = time.monotonic()
            try:
                await asyncio.wait_for(self._remote.flush(), max(budget, 1.0))
                answering = True
            except Exception:  # noqa: BLE001 - not committed in time: the stream process is stuck (or gone)
                answering = False
            # this process's sinks (the start's checks, the reads) close while the stream process stops its own
            await asyncio.gather(self._remote.stop_streams(max(0.0, budget - (time.monotonic() - started)),
                                                           wait=answering),
                                 self._close_sinks())
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._queue.flush(), max(budget, 1.0))  # the queue's own commit: always
        waits = []
        for st in self._states.values():
            st.stopping = True  # no more waiting for rows to gather
            if st.task is not None and self._queue.depth(st.spec.key) and not self._failing(st):
                st.idle.clear()  # set again at the end of the drainer's next pass
                st.wake.set()
                waits.append(st.idle.wait())
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), budget)
        with contextlib.suppress(ValueError):
            self._queue.listeners.remove(self._listener)
        tasks = [st.task for st in self._states.values() if st.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for st in self._states.values():
            st.task = None
        await self._close_sinks()

    async def _close_sinks(self) -> None:
        """All at once: a database that does not answer holds its sink's close up to its timeout (PostgreSQL: 2 s),
        once for all the streams rather than once a stream (the stop must end within CONTRACT §3's 10 s)."""

        async def close(sink: StreamSink) -> None:
            with contextlib.suppress(Exception):
                await sink.close()

        await asyncio.gather(*(close(st.sink) for st in self._states.values()))

    def _on_report(self, msg: Mapping[str, Any]) -> None:
        """A write or failure of a drainer in the stream process."""
        st = self._states.get(msg["key"])
        if st is None:
            return
        st.written += msg["written"]
        st.failures += msg["failures"]
        if msg["lastWriteAt"] is not None:  # a new stream process has written nothing yet: the last write stays
            st.last_write_at = msg["lastWriteAt"]
        st.rejected += msg.get("rejected", 0)  # not in the daemon's own reports (the process ended, a new one)
        if msg.get("lastRejectionAt") is not None:
            st.last_rejection, st.last_rejection_at = msg["lastRejection"], msg["lastRejectionAt"]
        st.last_error, st.last_error_at = msg["lastError"], msg["lastErrorAt"]

    def _on_commit(self, streams: set[str]) -> None:
        for key in streams:
            st = self._states.get(key)
            if st is not None:
                st.wake.set()

    @staticmethod
    def _failing(st: StreamState) -> bool:
        return st.last_error_at is not None and (st.last_write_at or 0) < st.last_error_at

    async def _drain(self, st: StreamState) -> None:
        key = st.spec.key
        queue = cast(LocalQueue, self._queue)  # drainers run where the queue is (``start``)
        attempt = 0
        while True:
            await st.wake.wait()
            await self._gather(st)
            st.wake.clear()
            st.idle.clear()
            while True:
                chunks = await queue.take(key, BATCH)
                if not chunks:
                    break
                items = [item for _, rows in chunks for item in rows]
                try:
                    refused = await st.sink.write(items)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any failure: keep the rows, retry
                    attempt += 1
                    st.failures += 1
                    changed = st.last_error != describe(exc)
                    st.last_error, st.last_error_at = describe(exc), self._clock()
                    if changed or attempt % 50 == 0:
                        log.warning("datastream_write_failed", stream=key, error=st.last_error,
                                    queued=self._queue.depth(key), attempt=attempt)
                    if self.observer is not None:
                        self.observer(st)
                    await asyncio.sleep(random.uniform(0, min(RETRY_CAP, RETRY_BASE * 2 ** min(attempt, 10))))
                    continue
                now = self._clock()
                await queue.ack(key, chunks[-1][0], len(items), refused, now)  # the refused rows kept aside
                if attempt:
                    log.info("datastream_write_resumed", stream=key, after_attempts=attempt)
                    attempt = 0
                st.written += len(items) - len(refused)
                st.last_write_at = now
                if refused:
                    self._count_refused(st, refused, now)
                if self.observer is not None:
                    self.observer(st)
                if 0 < self._queue.depth(key) < BATCH // 2:
                    await self._gather(st)  # rows came during the write: let a batch's worth gather
            st.idle.set()

    async def _gather(self, st: StreamState) -> None:
        """Let rows gather before a write of under half a batch, while they keep coming, for ``GATHER`` seconds
        at most: one transaction for more rows costs the database less per row (the bench's flow, eight
        interleaved pairs: ~1,500 rows a COPY, PostgreSQL 3.95 us of CPU a row; ~4,200 rows, 3.0 us). Two steps
        that bring nothing end the wait: the last rows of a burst, or a lone row, wait 0.05 s as before."""
        key = st.spec.key
        depth, waited, quiet = self._queue.depth(key), 0.0, 0
        while depth < BATCH // 2 and waited < GATHER and not st.stopping:
            await asyncio.sleep(GATHER_STEP)
            waited += GATHER_STEP
            now = self._queue.depth(key)
            quiet = quiet + 1 if now == depth else 0
            if quiet == 2:
                return
            depth = now

    @staticmethod
    def _count_refused(st: StreamState, refused: Sequence[tuple[dict[str, Any], str]], at: float) -> None:
        """Counted per stream; logged when the count passes 1, 10, 100, 1,000 and each 10,000 (a table that
        refuses every row would log each batch otherwise), naming the database's last reason."""
        before = st.rejected
        st.rejected += len(refused)
        st.last_rejection, st.last_rejection_at = refused[-1][1], at
        if passed_mark(before, st.rejected):
            log.warning("datastream_rows_refused", stream=st.spec.key, reason=st.last_rejection,
                        rejected=st.rejected)

    # ------------------------------------------------------------------ reading and status
    async def read(self, stream: str, device_id: str | None, start: float | None, end: float | None,
                   limit: int) -> list[dict[str, Any]]:
        return await self._states[stream].sink.read(device_id, start, end, limit)

    async def rejected(self, stream: str, limit: int) -> list[dict[str, Any]]:
        """The refused rows kept for ``stream``, newest first: ``{id, at, reason, row}``."""
        return await self._queue.rejected(stream, limit)

    async def requeue_rejected(self, stream: str) -> int:
        """Queue ``stream``'s refused rows again (the table was widened, its CHECK dropped); how many. The
        ``rejected`` count stays (a running total); ``rejectedKept`` drops to what is refused again."""
        return await self._queue.requeue_rejected(stream)

    def status(self) -> list[dict[str, Any]]:
        """CONTRACT §9: key, name, type, target, depth, lastWriteAt, lastError (and counts)."""
        out = []
        for raw in self.status_raw():
            raw["lastWriteAt"] = iso(raw["lastWriteAt"])
            raw["lastErrorAt"] = iso(raw["lastErrorAt"])
            raw["lastRejectionAt"] = iso(raw["lastRejectionAt"])
            out.append(raw)
        return out

    def status_raw(self) -> list[dict[str, Any]]:
        out = []
        for st in self._states.values():
            s = st.spec
            out.append({
                "key": s.key,
                "name": s.name,
                "type": s.kind.value,
                "streamType": s.type_id,
                "writtenToBuiltIn": s.fallback,
                "target": s.target,
                "depth": self._queue.depth(s.key),
                "written": st.written,
                "overflow": self._queue.overflow.get(s.key, 0),
                "failures": st.failures,
                "failing": self._failing(st),
                "lastWriteAt": st.last_write_at,
                "lastError": st.last_error,
                "lastErrorAt": st.last_error_at,
                "rejected": st.rejected,
                "rejectedKept": self._queue.rejected_kept.get(s.key, 0),
                "lastRejection": st.last_rejection,
                "lastRejectionAt": st.last_rejection_at,
            })
        return out
