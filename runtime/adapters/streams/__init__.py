"""Data-stream adapters: the durable queue and one sink per stream type (docs/datastreams.md).

``DataStreams`` is what the process keeps (the queue file and the built-in file, opened once by the
composition root); each loaded solution gets its ``StreamService`` from it (``service_for``), which the
command plane starts and stops. The admin API and ``/metrics`` read the current one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from runtime.adapters.streams.process import ProcessQueue
from runtime.adapters.streams.queue import StreamQueue
from runtime.adapters.streams.sqlite import BuiltinDatabase, BuiltinSink
from runtime.core.solution.model import SolutionDocument
from runtime.core.streams import StreamKind, StreamSpec, StreamStartError, specs_of
from runtime.services.streams import StreamService

log = structlog.get_logger(__name__)

QUEUE_FILE = "datastreams-queue.db"
BUILTIN_FILE = "datastreams.db"


def build_sinks(specs: Mapping[str, StreamSpec], builtin: BuiltinDatabase) -> dict[str, Any]:
    """A sink per stream: PostgreSQL and Redis by their drivers (imported only when used), everything
    else (built-in, and types not reachable here) in the built-in SQLite file."""
    sinks: dict[str, Any] = {}
    for key, spec in specs.items():
        if spec.kind is StreamKind.POSTGRESQL:
            from runtime.adapters.streams.postgres import PostgresSink

            sinks[key] = PostgresSink(spec)
        elif spec.kind is StreamKind.REDIS:
            from runtime.adapters.streams.redis import RedisSink

            sinks[key] = RedisSink(spec)
        else:
            sinks[key] = BuiltinSink(spec, builtin)
    return sinks


class DataStreams:
    """``in_process=False`` (the daemon's default, ``NUVIOT_DATASTREAM_PROCESS``): the queue and the drainers run
    in the stream process (``process.py``); this process keeps the streams' checks at start, the reads and
    the status. ``in_process=True``: all here (the stream process itself, and the tests of the parts)."""

    def __init__(self, data_dir: Path, *, max_rows: int = 200_000, in_process: bool = True,
                 env: Mapping[str, str] | None = None) -> None:
        self.queue: StreamQueue | ProcessQueue = (
            StreamQueue(data_dir / QUEUE_FILE, max_rows=max_rows) if in_process
            else ProcessQueue(data_dir, max_rows=max_rows, env=env))
        self.builtin = BuiltinDatabase(data_dir / BUILTIN_FILE)
        self.current: StreamService | None = None
        self.unavailable: str | None = None

    async def __aenter__(self) -> DataStreams:
        try:
            await self.queue.open()
        except (OSError, sqlite3.Error) as exc:  # the data dir is unusable: the store reports it; streams wait
            self.unavailable = f"{self.queue.path}: {exc}"
            log.error("datastream_queue_unavailable", path=str(self.queue.path), error=str(exc))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.queue.close()
        await self.builtin.close()

    def service_for(self, doc: SolutionDocument, *, drain_timeout: float = 5.0) -> StreamService:
        specs = specs_of(doc)
        if self.unavailable is not None and specs:
            raise StreamStartError(next(iter(specs)), f"the data-stream queue cannot be opened: {self.unavailable}")
        self.current = StreamService(specs, build_sinks(specs, self.builtin), self.queue,
                                     drain_timeout=drain_timeout)
        return self.current

    def status(self) -> list[dict[str, Any]]:
        return self.current.status() if self.current is not None else []


def for_settings(settings: Any) -> DataStreams:
    """The daemon's (and a cluster worker's) data streams, as its settings say."""
    return DataStreams(settings.data_dir, max_rows=settings.datastream_queue_max_rows,
                       in_process=not settings.datastream_process,
                       env={"NUVIOT_LOG_LEVEL": settings.log_level, "NUVIOT_LOG_FORMAT": settings.log_format or ""})


class StreamsCollector(Collector):
    """Per-stream depth, rows written, overflow, rows refused, write failures and last write time for ``/metrics``."""

    def __init__(self, streams: DataStreams) -> None:
        self._streams = streams

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        depth = GaugeMetricFamily("nuviot_datastream_depth", "Rows queued for the stream's database",
                                  labels=["stream", "type"])
        written = CounterMetricFamily("nuviot_datastream_written", "Rows committed to the stream's database",
                                      labels=["stream", "type"])
        overflow = CounterMetricFamily("nuviot_datastream_overflow", "Rows refused because the queue was full",
                                       labels=["stream", "type"])
        rejected = CounterMetricFamily("nuviot_datastream_rejected",
                                       "Rows the stream's database refused (kept aside, not retried)",
                                       labels=["stream", "type"])
        failures = CounterMetricFamily("nuviot_datastream_write_failures", "Failed batch writes (retried)",
                                       labels=["stream", "type"])
        last = GaugeMetricFamily("nuviot_datastream_last_write_timestamp_seconds",
                                 "When the stream last committed rows (0: never)", labels=["stream", "type"])
        error = GaugeMetricFamily("nuviot_datastream_error", "1 when the last write attempt failed",
                                  labels=["stream", "type"])
        for s in self._streams.current.status_raw() if self._streams.current is not None else ():
            labels = [s["key"], s["type"]]
            depth.add_metric(labels, s["depth"])
            written.add_metric(labels, s["written"])
            overflow.add_metric(labels, s["overflow"])
            rejected.add_metric(labels, s["rejected"])
            failures.add_metric(labels, s["failures"])
            last.add_metric(labels, s["lastWriteAt"] or 0)
            error.add_metric(labels, 1 if s["failing"] else 0)
        yield from (depth, written, overflow, rejected, failures, last, error)
