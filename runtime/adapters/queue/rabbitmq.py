"""RabbitMQ between ingest and worker replicas (the Cluster edition, docs/cluster.md).

- ``declare_partitions``: N durable quorum queues ``nuviot.{instance}.pNNN`` with
  ``x-single-active-consumer``: one worker at a time consumes a partition, the others wait as standbys and
  RabbitMQ hands the partition to one of them when the active consumer's connection ends.
- ``RabbitPublisher`` (ingest): publishes each envelope persistent to its partition queue on a confirm
  channel; ``on_confirm`` (the MQTT PUBACK, the REST 2xx) runs on the broker's ack. What is unconfirmed
  when the connection ends is published again, in the original order, before anything newer: at least once.
- ``PartitionConsumer`` (worker, ``adapters/queue/partitions.py``).

Each runs its connections under ``supervise()`` (``adapters/supervision.py``, ``reconnect_backoff``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from runtime.adapters.supervision import supervise
from runtime.core.backoff import Backoff
from runtime.core.listener_state import ListenerState
from runtime.services.cluster import partition_queue

log = structlog.get_logger(__name__)

QUEUE_ARGUMENTS: dict[str, Any] = {"x-queue-type": "quorum", "x-single-active-consumer": True}
CONNECT_ERRORS = (OSError, aiormq.exceptions.AMQPError, asyncio.TimeoutError, ConnectionError)


async def connect(url: str, name: str) -> AbstractRobustConnection:
    conn = await aio_pika.connect(url, timeout=10, client_properties={"connection_name": name})
    return conn  # type: ignore[return-value]


async def declare_partitions(channel: AbstractChannel, instance_id: str, partitions: int) -> list[Any]:
    return [await channel.declare_queue(partition_queue(instance_id, p), durable=True, arguments=QUEUE_ARGUMENTS)
            for p in range(partitions)]


def resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def reconnect_backoff() -> Backoff:
    """The Cluster adapters' reconnect delays: 0.2 s doubling to 5 s, full jitter."""
    return Backoff(base=0.2, cap=5.0)


class RabbitPublisher:
    """The ingest's publisher (``services.cluster.Publisher``)."""

    def __init__(self, url: str, instance_id: str, partitions: int, *, name: str = "nuviot-ingest",
                 max_unconfirmed: int = 5_000) -> None:
        self._url = url
        self._instance = instance_id
        self._partitions = partitions
        self._queues = [partition_queue(instance_id, p) for p in range(partitions)]
        self._name = name
        self._max = max_unconfirmed
        self._seq = 0
        self._pending: dict[int, tuple[int, bytes, Callable[[], None]]] = {}  # seq -> (partition, body, ack)
        self._unsent: deque[int] = deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.last_error: str | None = None
        self.republished = 0
        self._backoff = reconnect_backoff()

    def publish(self, partition: int, body: bytes, on_confirm: Callable[[], None]) -> None:
        self._seq += 1
        self._pending[self._seq] = (partition, body, on_confirm)
        self._unsent.append(self._seq)
        self._wake.set()
        self._empty.clear()
        if len(self._pending) >= self._max:
            self._room.clear()

    async def writable(self) -> None:
        await self._room.wait()

    @property
    def unconfirmed(self) -> int:
        return len(self._pending)

    def status(self) -> dict[str, Any]:
        return {"key": "rabbitmq", "type": "queue",
                "state": (ListenerState.CONNECTED if self.connected.is_set() else ListenerState.CONNECTING).value,
                "unconfirmed": len(self._pending), "republished": self.republished, "lastError": self.last_error}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cluster:publisher")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), timeout=10)

    async def drain(self, within: float) -> bool:
        """Wait until every envelope is confirmed (or ``within`` seconds)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), timeout=within)
        return not self._pending

    async def stop(self, within: float = 5.0) -> None:
        await self.drain(within)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        await supervise(self._session, role="cluster_publisher", backoff=self._backoff,
                        connection_errors=CONNECT_ERRORS, on_loss=self._lost)

    async def _session(self) -> None:
        conn = await connect(self._url, self._name)
        try:
            async with conn:
                channel = await conn.channel(publisher_confirms=True)
                await declare_partitions(channel, self._instance, self._partitions)
                # everything unconfirmed goes again, in order, before anything newer
                self._unsent = deque(sorted(set(self._unsent) | set(self._pending)))
                self.republished += len(self._pending)  # what waited for this connection
                self.connected.set()
                self.last_error = None
                self._backoff.reset()
                log.info("cluster_publisher_connected", pending=len(self._pending))
                await self._send(channel, conn)
        finally:
            self.connected.clear()

    def _lost(self, error: str) -> str:
        self.last_error = error
        self.connected.clear()
        return "cluster_publisher_disconnected"

    async def _send(self, channel: AbstractChannel, conn: Any) -> None:
        exchange = await channel.get_underlay_channel()  # aiormq's: no aio-pika Message or wait_for per publish
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.close_callbacks.add(lambda *_: resolve(closed))
        inflight: set[asyncio.Task[None]] = set()
        try:
            await self._send_until(exchange, closed, inflight)
        finally:
            for task in inflight:
                task.cancel()
            await asyncio.gather(*inflight, return_exceptions=True)
        raise ConnectionError("the RabbitMQ connection closed")

    async def _send_until(self, exchange: Any, closed: asyncio.Future[None], inflight: set[asyncio.Task[None]]) -> None:
        while not closed.done():
            while self._unsent and not closed.done():
                seq = self._unsent.popleft()
                item = self._pending.get(seq)
                if item is None:
                    continue
                partition, body, _ = item
                task = asyncio.create_task(self._one(exchange, seq, partition, body), name="ingest:publish")
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                if len(inflight) % 256 == 0:
                    await asyncio.sleep(0)
            self._wake.clear()
            waiter: asyncio.Future[Any] = asyncio.create_task(self._wake.wait(), name="ingest:publisher:wake")
            pending: set[asyncio.Future[Any]] = {waiter, closed}
            try:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    async def _one(self, channel: Any, seq: int, partition: int, body: bytes) -> None:
        properties = aiormq.spec.Basic.Properties(delivery_mode=2, content_type="application/json",
                                                  message_id=str(seq))
        try:
            confirm = await channel.basic_publish(body, routing_key=self._queues[partition], properties=properties,
                                                  wait=False)
        except (asyncio.CancelledError, *CONNECT_ERRORS):
            return  # published again after the reconnect
        if not isinstance(confirm, aiormq.spec.Basic.Ack):
            log.warning("cluster_publish_not_confirmed", partition=partition, answer=type(confirm).__name__)
            self._unsent.append(seq)  # nacked: try again (later; per-device order may then differ)
            self._wake.set()
            return
        item = self._pending.pop(seq, None)
        if len(self._pending) < self._max // 2:
            self._room.set()
        if not self._pending:
            self._empty.set()
        if item is not None:
            try:
                item[2]()
            except Exception as exc:  # noqa: BLE001 - one listener's ack must not stop the publisher
                log.error("cluster_confirm_callback_failed", error=repr(exc))
