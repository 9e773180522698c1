"""The stream process (``python -m runtime.adapters.streams.worker FD DATA_DIR MAX_ROWS``): the durable queue
and the drainers, fed by the daemon's ``ProcessQueue`` over the socket ``FD`` (docs/datastreams.md).

It reads frames in order: ``hello`` (the streams to run, after a restart), ``rows`` (each stream's rows one JSON array, stored in the queue as it came; answered
``committed`` once the queue file holds them), ``start`` / ``stop`` (the solution's streams; answered
``reply``), ``rejected`` / ``requeue`` (an operator's look at the refused rows and their return to the queue,
done here because this process owns the queue file, its one connection and its transactions; answered ``reply``)
and ``exit``. Each write and each failure of a drainer is reported (``state``: rows written since
the last report, the last write and error); warnings and errors are sent to the daemon's log sinks (``log``).
It ignores SIGINT and SIGTERM (the daemon stops it, after its own drain) and ends, committing what it holds,
when the socket closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import structlog

from runtime import logsetup
from runtime.adapters.streams import DataStreams, build_sinks
from runtime.adapters.streams.process import encode, read_frame
from runtime.adapters.streams.queue import StreamQueue
from runtime.core.backoff import Backoff
from runtime.core.streams import StreamStartError, spec_of
from runtime.services.dataplane import settle_heap
from runtime.services.streams import StreamService, StreamState

log = structlog.get_logger(__name__)


class Worker:
    def __init__(self, writer: asyncio.StreamWriter, streams: DataStreams) -> None:
        self._writer = writer
        self._streams = streams
        assert isinstance(streams.queue, StreamQueue)  # this process's own
        self._queue = streams.queue
        self.received = 0
        self.service: StreamService | None = None
        self._retry: asyncio.Task[None] | None = None
        self._reported: dict[str, tuple[int, int, int]] = {}  # stream -> (written, failures, rejected) reported

    def send(self, msg: dict[str, Any]) -> None:
        keys = self.service.specs if self.service is not None else self._queue.committed
        msg["r"] = self.received
        msg["d"] = {k: self._queue.depth(k) for k in keys}
        msg["o"] = dict(self._queue.overflow)
        msg["k"] = dict(self._queue.rejected_kept)
        self._writer.write(encode(msg))

    def on_state(self, st: StreamState) -> None:
        key = st.spec.key
        written, failures, rejected = self._reported.get(key, (0, 0, 0))
        self._reported[key] = (st.written, st.failures, st.rejected)
        self.send(
            {
                "t": "state",
                "key": key,
                "written": st.written - written,
                "failures": st.failures - failures,
                "lastWriteAt": st.last_write_at,
                "lastError": st.last_error,
                "lastErrorAt": st.last_error_at,
                "rejected": st.rejected - rejected,
                "lastRejection": st.last_rejection,
                "lastRejectionAt": st.last_rejection_at,
            }
        )

    def on_log(self, level: str, event: str, fields: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # a field that is not JSON: its text
            self.send(
                {
                    "t": "log",
                    "level": level,
                    "event": event,
                    "fields": {
                        k: v if isinstance(v, str | int | float | bool | None) else str(v)
                        for k, v in fields.items()
                    },
                }
            )

    def rows(self, msg: dict[str, Any]) -> None:
        for stream, n, body in msg["chunks"]:
            self._queue.put_chunk(stream, n, body)  # stored as it came; a refusal is counted (reported with ``o``)
        self.received = frame = msg["id"]
        self._queue.after_commit(lambda: self.send({"t": "committed", "id": frame}))

    async def refused_rows(self, msg: dict[str, Any]) -> None:
        """``rejected`` (the rows, newest first) or ``requeue`` (back in the queue), answered ``reply``."""
        try:
            if msg["t"] == "rejected":
                answer: dict[str, Any] = {"rows": await self._queue.rejected(msg["stream"], int(msg["limit"]))}
            else:
                answer = {"requeued": await self._queue.requeue_rejected(msg["stream"])}
        except Exception as exc:  # noqa: BLE001 - the queue file failed it: the operator is told, this process goes on
            log.error("datastream_rejected_request_failed", request=msg["t"], error=repr(exc))
            self.send({"t": "reply", "req": msg["req"], "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            return
        self.send({"t": "reply", "req": msg["req"], "ok": True, **answer})

    async def start(self, streams: list[Any]) -> None:
        """Run ``streams`` (those running before are stopped first); ``StreamStartError`` when one cannot."""
        await self._stop_service(0.0)
        if self._streams.unavailable is not None and streams:  # as ``DataStreams.service_for`` in process
            reason = f"the data-stream queue cannot be opened: {self._streams.unavailable}"
            raise StreamStartError(streams[0].key, reason)
        specs = {ds.key: spec_of(ds) for ds in streams}
        service = StreamService(specs, build_sinks(specs, self._streams.builtin), self._queue)
        service.observer = self.on_state
        await service.start()
        self._reported = {}
        self.service = service

    def start_later(self, streams: list[Any]) -> None:
        """After a restart: the streams were checked when they first started; keep trying until they run."""

        async def attempt() -> None:
            backoff = Backoff(base=0.5, cap=10.0)
            while True:
                try:
                    await self.start(streams)
                    return
                except StreamStartError as exc:
                    log.error("datastream_restart_failed", error=str(exc))
                    await asyncio.sleep(backoff.next_delay())

        self._retry = asyncio.create_task(attempt(), name="datastreams:start")

    async def stop(self, budget: float) -> None:
        """No more attempts to start the streams (``start_later``); the running ones get ``budget`` to drain."""
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
            self._retry = None
        await self._stop_service(budget)

    async def _stop_service(self, budget: float) -> None:
        if self.service is not None:
            service, self.service = self.service, None
            await service.stop(budget)


async def serve(fd: int, data_dir: Path, max_rows: int) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    async with DataStreams(data_dir, max_rows=max_rows, in_process=True) as streams:
        worker = Worker(writer, streams)
        settle_heap()
        remove_sink = logsetup.add_sink(worker.on_log)
        try:
            hello = await read_frame(reader, pickled=True)
            if streams.unavailable is not None:
                worker.send({"t": "hello", "error": streams.unavailable})
            else:
                worker.send({"t": "hello"})
            if hello and hello.get("streams") and streams.unavailable is None:  # else the daemon ends this one
                worker.start_later(hello["streams"])
            while (msg := await read_frame(reader, pickled=True)) is not None:
                kind = msg["t"]
                if kind == "rows":
                    worker.rows(msg)
                elif kind == "start":
                    try:
                        await worker.stop(0.0)
                        await worker.start(msg["streams"])
                        worker.send({"t": "reply", "req": msg["req"], "ok": True})
                    except StreamStartError as exc:
                        worker.send(
                            {
                                "t": "reply",
                                "req": msg["req"],
                                "ok": False,
                                "stream": exc.key.removeprefix("datastream:"),
                                "error": exc.reason,
                            }
                        )
                elif kind == "stop":
                    await worker.stop(float(msg["budget"]))
                    worker.send({"t": "reply", "req": msg["req"], "ok": True})
                elif kind in ("rejected", "requeue"):
                    await worker.refused_rows(msg)
                elif kind == "exit":
                    break
            await worker.stop(0.0)
            await streams.queue.flush()
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            remove_sink()
    writer.close()


def main(argv: list[str]) -> None:
    fd, data_dir, max_rows = int(argv[0]), Path(argv[1]), int(argv[2])
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the daemon stops this process (after its own drain)
    logsetup.configure(
        os.environ.get("NUVIOT_LOG_LEVEL", "info").lower(),
        os.environ.get("NUVIOT_LOG_FORMAT", "").lower() or None,
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        pass
    asyncio.run(serve(fd, data_dir, max_rows))


if __name__ == "__main__":
    main(sys.argv[1:])
