"""The data-stream queue and drainers in a process of their own (docs/datastreams.md "The stream process").

The daemon's event loop builds each stream row and hands it to ``ProcessQueue.put`` (a list append); every
``COALESCE`` seconds (at once when ``CHUNK`` rows wait or a flush is asked for) the rows go to the stream
process in one frame, each stream's rows one JSON array that the process stores as it came. That process (``runtime.adapters.streams.worker``) owns what the in-process
``StreamQueue`` and ``StreamService``'s drainers did before: it commits the rows to the durable queue file,
answers the frame's id once they are committed (the messages' acks wait for that answer, as they waited for
the queue's commit), and drains the queue to each stream's database, reporting every write and failure back
(``/status``, ``/metrics``). The SQLite queue, the decoding, the records and the database drivers' encoding
then run on the other CPU, not under the event loop's GIL; the loop keeps each row's checks and its JSON.

Nothing is lost when the stream process dies: a frame stays here until its commit is answered, and a new
process (started again with back-off) gets the streams' configuration and every unanswered frame again, in
order; what the old process had committed is in the file and is drained by the new one. A frame committed
whose answer was lost is sent twice (at-least-once, as after a crash of the in-process queue's caller).
The frames are length-prefixed; rows are JSON (orjson), the configuration is pickled (it carries the
streams' passwords, which never leave the two processes' memory and the socket between them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import socket
import struct
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import structlog

from runtime.adapters.streams.queue import warn_refused
from runtime.adapters.supervision import Outcome, supervise
from runtime.core.backoff import Backoff
from runtime.core.errors import TransientError
from runtime.core.streams import StreamStartError

log = structlog.get_logger(__name__)

CHUNK = 1000  # rows that send a frame at once
COALESCE = 0.02  # seconds rows gather before a frame (unless a chunk is full or a commit is awaited)
MAX_FRAME = 256 * 1024 * 1024
SINK_CLOSE = 3.0  # seconds the stream process's sinks get to close after their drain (PostgreSQL's close: 2 s)
CLOSE_WAIT = 3.0  # seconds the process gets to commit and end at ``close`` before it is killed
ASK_WAIT = 10.0  # seconds an operator's request (the refused rows: read, queue again) waits for the process
_HEAD = struct.Struct("!IB")  # body length, kind
_META = struct.Struct("!I")
JSON, PICKLE, ROWS = 0, 1, 2
_dumps = orjson.dumps
_LINE = orjson.OPT_APPEND_NEWLINE  # a row's JSON never holds a raw newline: the frame joins them with commas


def encode(msg: Any, *, kind: int = JSON) -> bytes:
    body = orjson.dumps(msg) if kind == JSON else pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEAD.pack(len(body), kind) + body


def rows_frame(frame: int, pending: Mapping[str, tuple[int, bytearray]]) -> bytes:
    """A ``rows`` frame: each stream's rows as one JSON array, which the stream process stores as a queue chunk
    without decoding it, after a small JSON header naming the streams, their row counts and sizes. ``pending``:
    per stream, its row count and its rows as ``put`` encoded them (``[`` and one JSON text a line), taken: the
    last newline becomes ``]`` in place and the others commas in one copy."""
    blobs = []
    for _, lines in pending.values():
        lines[-1:] = b"]"
        blobs.append(lines.replace(b"\n", b","))
    meta = orjson.dumps({"t": "rows", "id": frame,
                         "chunks": [[stream, n, len(blob)]
                                    for (stream, (n, _)), blob in zip(pending.items(), blobs, strict=True)]})
    size = _META.size + len(meta) + sum(map(len, blobs))
    return b"".join((_HEAD.pack(size, ROWS), _META.pack(len(meta)), meta, *blobs))


def _read_rows(body: bytes) -> dict[str, Any]:
    (size,) = _META.unpack_from(body)
    at = _META.size + size
    msg: dict[str, Any] = orjson.loads(body[_META.size:at])
    chunks = []
    for stream, n, length in msg["chunks"]:
        chunks.append((stream, n, body[at:at + length]))
        at += length
    msg["chunks"] = chunks
    return msg


async def read_frame(reader: asyncio.StreamReader, *, pickled: bool = False) -> Any:
    """The next frame's message; None at the end of the stream. A pickled frame only where ``pickled`` (the
    stream process reading the daemon: the streams' configuration); the daemon takes JSON only."""
    try:
        head = await reader.readexactly(_HEAD.size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    size, kind = _HEAD.unpack(head)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    body = await reader.readexactly(size)
    if kind == ROWS:
        return _read_rows(body)
    if kind == PICKLE and pickled:
        return pickle.loads(body)  # from the daemon that started this process, over their private socket
    if kind != JSON:
        raise ValueError(f"frame of kind {kind} refused")
    return orjson.loads(body)


class ProcessEnded(Exception):
    """The stream process ended (or never started) while streams may need it: its exit code and why."""


@dataclass
class _Frame:
    id: int
    counts: dict[str, int]
    callbacks: list[Callable[[], None]] = field(default_factory=list)
    body: bytes = b""


class ProcessQueue:
    """``QueuePort`` for ``StreamService`` whose queue and drainers run in the stream process."""

    remote = True

    def __init__(
        self,
        data_dir: Path,
        *,
        max_rows: int = 200_000,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.path = data_dir
        self.max_rows = max_rows
        self._env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self._python = python
        self.listeners: list[Callable[[set[str]], None]] = []  # the drainers are the process's: never told
        # per stream, rows not sent yet: their JSON, one a line, encoded by ``put`` (while the row is fresh in
        # the CPU's cache; the row is freed at once), and their count
        self._pending: dict[str, bytearray] = {}
        self._pending_n: dict[str, int] = {}
        self._pending_total = 0
        self._callbacks: list[Callable[[], None]] = []
        self._unanswered: deque[_Frame] = deque()  # sent (or to send again), commit not answered yet
        self._unreceived: deque[_Frame] = deque()  # not yet in the process's own depth
        self._transit: Counter[str] = Counter()  # rows in frames the process has not put in its queue yet
        self._room: dict[str, int] = {}  # per stream: max_rows - the process's depth - rows in transit
        self._depth: dict[str, int] = {}  # the process's depth, per stream, as it last said
        self._overflow: Counter[str] = Counter()  # refused here
        self._child_overflow: dict[str, int] = {}  # refused there
        self._kept: dict[str, int] = {}  # refused rows in the queue file's ``rejected`` table, as it last said
        self._ended_overflow: Counter[str] = Counter()  # refused by stream processes that have ended
        self._next_id = 1
        self._wake = asyncio.Event()
        self._awake = False
        self._flushing = 0
        self._answered = asyncio.Event()
        self._requests: dict[int, asyncio.Future[Any]] = {}
        self._streams: list[Any] | None = None  # the running streams' DataStream models (sent on each start)
        self._observer: Callable[[dict[str, Any]], None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ready = asyncio.Event()  # a process is up, configured and has every unanswered frame
        self._wanted = asyncio.Event()  # streams were asked to start: from then on a process runs
        self._tasks: list[asyncio.Task[None]] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._closing = False
        self.restarts = 0  # stream processes started again after one ended
        self._backoff = Backoff(base=0.2, cap=5.0)
        self._stuck = False  # it did not commit in time at the streams' stop: ``close`` kills it at once

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> ProcessQueue:
        self._tasks = [
            asyncio.create_task(self._sender(), name="datastreams:sender"),
            asyncio.create_task(self._supervise(), name="datastreams:process"),
        ]
        return self

    async def close(self) -> None:
        """Commit what is queued (the streams' stop did, unless the process stopped answering), end the process;
        one that does not end within ``CLOSE_WAIT`` is killed: the daemon's stop must fit its budget. Frames it
        had not answered are then lost with this process (their acks never ran: a broker sends them again)."""
        self._closing = True
        if self._tasks:
            if self._stuck and self._proc is not None and self._proc.returncode is None:
                log.error("datastream_process_killed", reason="it stopped answering", unanswered=len(self._unanswered))
                self._proc.kill()  # nothing more will be committed: no flush, no goodbye
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.flush(), CLOSE_WAIT)
            if self._writer is not None and self._ready.is_set() and not self._stuck:
                with contextlib.suppress(Exception):
                    self._writer.write(encode({"t": "exit"}))
                    await self._writer.drain()
            proc = self._proc
            if proc is not None and proc.returncode is None:
                try:
                    await asyncio.wait_for(proc.wait(), CLOSE_WAIT)
                except TimeoutError:
                    log.error("datastream_process_killed", reason=f"it did not end within {CLOSE_WAIT:g} s",
                              unanswered=len(self._unanswered))
                    proc.kill()
                    await proc.wait()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []

    async def __aenter__(self) -> ProcessQueue:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _spawn(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        ours, theirs = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self._python,
                "-m",
                "runtime.adapters.streams.worker",
                str(theirs.fileno()),
                str(self.path),
                str(self.max_rows),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=self._env,
            )
        finally:
            theirs.close()
        return await asyncio.open_unix_connection(sock=ours)

    async def _supervise(self) -> None:
        """Keep a stream process up (``supervise``, as every long-lived session): each session starts one,
        configures it, sends it every unanswered frame again and reads its answers; when it ends before
        ``close``, another starts after a back-off."""
        await self._wanted.wait()  # no process before a solution with data streams starts
        await supervise(self._session, role="datastream_process", backoff=self._backoff,
                        connection_errors=(ProcessEnded,), on_loss=self._on_loss)

    async def _session(self) -> Outcome:
        reason = None
        try:
            reader, self._writer = await self._spawn()
            self._writer.write(encode({"t": "hello", "streams": self._streams}, kind=PICKLE))
            hello = await read_frame(reader)
            if hello is None or hello.get("t") != "hello":
                raise RuntimeError(f"the stream process did not start: {hello!r}")
            if hello.get("error") and self._streams:  # running streams, and a queue file it cannot open:
                # nothing can be made durable there; the rows and their acks wait here for the next one
                raise RuntimeError(f"the data-stream queue cannot be opened: {hello['error']}")
            # what an earlier process refused stays counted (a new one counts from zero)
            self._ended_overflow.update(self._child_overflow)
            self._child_overflow = {}
            self._unreceived = deque(self._unanswered)  # every frame not answered goes again, in order
            self._transit = Counter()
            for frame in self._unanswered:
                self._transit.update(frame.counts)
                self._writer.write(frame.body)
            self._apply(hello)
            self._ready.set()
            if self.restarts:
                log.warning("datastream_process_restarted", restarts=self.restarts,
                            frames_sent_again=len(self._unanswered))
                self._tell_streams(None)
            self._backoff.reset()
            while (msg := await read_frame(reader)) is not None:
                self._on_message(msg)
        except (OSError, RuntimeError, ValueError) as exc:  # it did not start, or sent what it must not
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self._ready.clear()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            code = await self._reap()
        if self._closing:
            return Outcome.STOPPED
        raise ProcessEnded(f"the data-stream process ended (exit code {code}{'; ' + reason if reason else ''}); "
                           f"starting it again")

    def _on_loss(self, error: str) -> str:
        """The stream process ended: each running stream's status and every waiting request say so."""
        self.restarts += 1
        self._tell_streams(error)
        for fut in self._requests.values():
            if not fut.done():
                fut.set_exception(RuntimeError(error))
        self._requests.clear()
        return "datastream_process_ended"

    def _tell_streams(self, error: str | None) -> None:
        """The stream process ended (``error``) or a new one is up (None): each running stream's status says so
        (``failing``, with the reason, until a new one runs; then its drainers report their own writes and errors)."""
        if self._observer is None or not self._streams:
            return
        at = time.time() if error is not None else None
        for ds in self._streams:
            self._observer({"t": "state", "key": ds.key, "written": 0, "failures": 0, "lastWriteAt": None,
                            "lastError": error, "lastErrorAt": at})

    async def _reap(self) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), 5.0 if not self._closing else 15.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        return proc.returncode

    # ------------------------------------------------------------------ the process's answers
    def _apply(self, msg: Mapping[str, Any]) -> None:
        """Every answer carries the last frame the process put in its queue (``r``), its depth per stream
        (``d``, which includes that frame) and what it refused (``o``)."""
        received = msg.get("r", 0)
        while self._unreceived and self._unreceived[0].id <= received:
            self._transit.subtract(self._unreceived.popleft().counts)
        if "d" in msg:
            self._depth = msg["d"]
        if "o" in msg:
            self._child_overflow = msg["o"]
        if "k" in msg:
            self._kept = msg["k"]
        self._room = {stream: self.max_rows - self._depth.get(stream, 0) - self._transit[stream]
                      for stream in {*self._depth, *self._transit, *self._room}}

    def _on_message(self, msg: dict[str, Any]) -> None:
        self._apply(msg)
        kind = msg["t"]
        if kind == "committed":
            upto = msg["id"]
            while self._unanswered and self._unanswered[0].id <= upto:
                for cb in self._unanswered.popleft().callbacks:
                    try:
                        cb()
                    except Exception as exc:  # noqa: BLE001 - one ack callback must not stop the others
                        log.error("datastream_queue_callback_failed", error=repr(exc))
            self._answered.set()
        elif kind == "state":
            if self._observer is not None:
                self._observer(msg)
        elif kind == "reply":
            fut = self._requests.pop(msg["req"], None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif kind == "log":
            from runtime import logsetup

            logsetup.to_sinks(msg["level"], msg["event"], msg["fields"])

    # ------------------------------------------------------------------ rows in
    @property
    def overflow(self) -> Mapping[str, int]:
        out = self._overflow + self._ended_overflow
        out.update(self._child_overflow)
        return out

    def depth(self, stream: str) -> int:
        return self._depth.get(stream, 0) + self._transit[stream] + self._pending_n.get(stream, 0)

    def put(self, stream: str, item: dict[str, Any]) -> bool:
        """Queue one operation (``{"op": "add"|"update", ...}``); False (counted) when the stream is full. Per
        message: the room check and the row's JSON appended to the stream's buffer (the bound is kept as each
        stream's room, worked out per answer). Encoding here, while the row is fresh, and dropping it at once
        costs the event loop far less than keeping ~1,000 rows alive for ``COALESCE`` and walking them then:
        their encoding and their freeing missed the CPU's cache (py-spy: ~1.8 -> ~0.6 us a row; the event loop's
        whole extra CPU per message with a stream 5.6 -> 2.7 us, ``bench.stream_profile``)."""
        n = self._pending_n.get(stream, 0)
        if n >= self._room.get(stream, self.max_rows):
            self._overflow[stream] += 1
            warn_refused(stream, self.max_rows, self._overflow[stream] - 1, self._overflow[stream])
            return False
        if n:
            self._pending[stream] += _dumps(item, option=_LINE)
        else:
            self._pending[stream] = buf = bytearray(b"[")
            buf += _dumps(item, option=_LINE)
        self._pending_n[stream] = n + 1
        self._pending_total += 1
        if not self._awake:
            self._awake = True
            self._wake.set()
        return True

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once what is queued now is committed to the queue file (in the stream process)."""
        if self._pending or self._callbacks:
            self._callbacks.append(callback)
        elif self._unanswered:
            self._unanswered[-1].callbacks.append(callback)
        else:
            callback()
            return
        if not self._awake:
            self._awake = True
            self._wake.set()

    async def flush(self) -> None:
        """Wait until what is queued now is committed (by the stream process; a new one if it had to)."""
        self._flushing += 1
        try:
            while self._pending or self._callbacks or self._unanswered:
                self._answered.clear()
                self._wake.set()
                await self._answered.wait()
        finally:
            self._flushing -= 1

    async def _sender(self) -> None:
        while True:
            await self._wake.wait()
            if self._pending_total < CHUNK and not self._flushing:
                await asyncio.sleep(COALESCE)  # let rows gather: one frame (one commit there) for many messages
            self._wake.clear()
            self._awake = False
            if not self._pending:
                if self._callbacks:  # nothing of its own to wait for
                    callbacks, self._callbacks = self._callbacks, []
                    if self._unanswered:
                        self._unanswered[-1].callbacks.extend(callbacks)
                    else:
                        for cb in callbacks:
                            cb()
                self._answered.set()
                continue
            pending = {stream: (n, self._pending[stream]) for stream, n in self._pending_n.items()}
            self._pending, self._pending_n, self._pending_total = {}, {}, 0
            frame = _Frame(self._next_id, {stream: n for stream, (n, _) in pending.items()})
            self._transit.update(frame.counts)  # on the way from here on (sent now, or again to a new process)
            for stream, n in frame.counts.items():
                self._room[stream] = self._room.get(stream, self.max_rows) - n
            frame.callbacks, self._callbacks = self._callbacks, []
            self._next_id += 1
            frame.body = rows_frame(frame.id, pending)
            self._unanswered.append(frame)
            self._unreceived.append(frame)
            if self._ready.is_set() and self._writer is not None:
                self._writer.write(frame.body)
                with contextlib.suppress(ConnectionError):
                    await self._writer.drain()  # back-pressure when the process falls behind

    # ------------------------------------------------------------------ the streams
    async def _request(self, msg: dict[str, Any], *, kind: int = JSON, within: float | None = None) -> Any:
        await asyncio.wait_for(self._ready.wait(), within)
        assert self._writer is not None
        req = self._next_id
        self._next_id += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._requests[req] = fut
        self._writer.write(encode({**msg, "req": req}, kind=kind))
        return await asyncio.wait_for(fut, within)

    @property
    def rejected_kept(self) -> Mapping[str, int]:
        return self._kept

    async def rejected(self, stream: str, limit: int) -> list[dict[str, Any]]:
        """The stream process's ``StreamQueue.rejected``: it owns the file and its one connection."""
        answer = await self._ask({"t": "rejected", "stream": stream, "limit": limit})
        rows: list[dict[str, Any]] = answer["rows"]
        return rows

    async def requeue_rejected(self, stream: str) -> int:
        """The stream process's ``StreamQueue.requeue_rejected`` (its transaction, its drainer woken)."""
        answer = await self._ask({"t": "requeue", "stream": stream})
        return int(answer["requeued"])

    async def _ask(self, msg: dict[str, Any]) -> Any:
        """An operator's request: ``TransientError`` when the process does not answer within ``ASK_WAIT`` (it is
        starting again, or stuck) or fails it. A requeue whose answer was lost may have been done: the rows are
        then in the queue (asking again queues none)."""
        try:
            answer = await self._request(msg, within=ASK_WAIT)
        except (TimeoutError, RuntimeError) as exc:
            raise TransientError(f"the data-stream process did not answer: {exc or type(exc).__name__}") from None
        if not answer.get("ok"):
            raise TransientError(f"the data-stream process failed it: {answer.get('error')}")
        return answer

    async def start_streams(self, streams: list[Any], observer: Callable[[dict[str, Any]], None]) -> None:
        """Start draining ``streams`` (their ``DataStream`` models) there; ``StreamStartError`` when one cannot."""
        self._observer = observer
        self._wanted.set()
        try:
            answer = await self._request({"t": "start", "streams": streams}, kind=PICKLE, within=120.0)
        except (TimeoutError, RuntimeError) as exc:
            key = streams[0].key if streams else "?"
            raise StreamStartError(key, f"the data-stream process did not start it: {exc}") from None
        if not answer.get("ok"):
            raise StreamStartError(answer.get("stream") or "?", answer.get("error") or "unknown error")
        self._streams = streams  # a new process gets them at once

    async def stop_streams(self, budget: float, *, wait: bool = True) -> None:
        """Stop the streams there: their drainers get ``budget`` to deliver what is queued, their sinks
        ``SINK_CLOSE`` more to close. ``wait=False`` (the process stopped answering): not waited for."""
        self._streams = None
        with contextlib.suppress(TimeoutError, RuntimeError):
            if wait:
                await self._request({"t": "stop", "budget": budget}, within=budget + SINK_CLOSE)
            else:
                self._stuck = True
        self._observer = None
