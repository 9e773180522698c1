"""The worker's side of the Cluster edition's queue (docs/cluster.md): ``PartitionConsumer``, a data listener
whose messages come from the instance's partition queues (single active consumer). A message is acked only
when the dispatcher's record and device state are committed (``InboundMessage.ack``); an ack of an ended
connection is dropped (the broker delivers the message again). Before the first message of a partition it
did not hold, the consumer reloads that partition's devices from the shared store (``on_gain``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aio_pika.abc import AbstractIncomingMessage

from runtime.adapters.queue.rabbitmq import CONNECT_ERRORS, backoff, connect, declare_partitions, resolve
from runtime.core.listener_state import ListenerState
from runtime.services.cluster import EnvelopeError, decode_envelope
from runtime.services.dataplane import Intake

log = structlog.get_logger(__name__)

# Unacked messages per partition consumer: what a worker can hold and sort after it gains a partition.
MAX_PREFETCH = 256
REORDER_WAIT = 0.2  # seconds: how long a block of returned messages waits for more of its kind
GAIN_WINDOW = 0.5  # seconds: after a gain, messages are held this long and delivered sorted


class PartitionConsumer:
    """The worker's data listener: the partition queues of the instance, single active consumer."""

    type = "rabbitmq-partitions"

    def __init__(self, url: str, instance_id: str, partitions: int, *, key: str = "partitions",
                 prefetch: int = MAX_PREFETCH, on_gain: Callable[[int], Awaitable[None]] | None = None,
                 name: str = "nuviot-worker", drain_timeout: float = 5.0) -> None:
        self.key = key
        self._url = url
        self._instance = instance_id
        self._partitions = partitions
        self._prefetch = min(prefetch, MAX_PREFETCH)
        self._on_gain = on_gain
        self._name = name
        self._drain_timeout = drain_timeout
        self._intake: Intake | None = None
        self._task: asyncio.Task[None] | None = None
        self._state = ListenerState.STOPPED
        self._generation = 0
        self._held: set[int] = set()  # partitions this consumer is active on (it received from them)
        self._outstanding = 0
        self._settled = asyncio.Event()
        self._settled.set()
        self._acks: deque[tuple[int, int, bool]] = deque()
        self._ack_wake = asyncio.Event()
        self._stopping = False
        self.last_error: str | None = None
        self.received = 0
        self.rejected = 0

    @property
    def held(self) -> list[int]:
        return sorted(self._held)

    def status(self) -> dict[str, Any]:
        return {"key": self.key, "type": self.type, "state": self._state.value, "port": None,
                "partitions": self.held, "outstanding": self._outstanding, "lastError": self.last_error}

    async def start(self, intake: Intake) -> None:
        self._intake = intake
        self._stopping = False
        self._state = ListenerState.CONNECTING
        connected = asyncio.Event()
        self._task = asyncio.create_task(self._run(connected), name="cluster:consumer")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(connected.wait(), timeout=10)

    async def stop(self) -> None:
        """No new deliveries; wait (bounded) until what was delivered is committed and acked; close."""
        self._stopping = True
        self._state = ListenerState.STOPPING
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout=self._drain_timeout)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._state = ListenerState.STOPPED
        self._held.clear()

    async def _run(self, connected: asyncio.Event) -> None:
        attempt = 0
        while not self._stopping:
            try:
                conn = await connect(self._url, self._name)
            except CONNECT_ERRORS as exc:
                self.last_error = repr(exc)
                self._state = ListenerState.CONNECTING
                attempt += 1
                await backoff(attempt)
                continue
            self._generation += 1
            self._held.clear()
            self._outstanding = 0
            self._settled.set()
            try:
                async with conn:
                    await self._serve(conn, connected)
            except CONNECT_ERRORS as exc:
                self.last_error = repr(exc)
                log.warning("cluster_consumer_disconnected", error=repr(exc))
            self._state = ListenerState.DISCONNECTED
            self._held.clear()
            attempt = 1
            await backoff(attempt)

    async def _serve(self, conn: Any, connected: asyncio.Event) -> None:
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        queues = await declare_partitions(channel, self._instance, self._partitions)
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.close_callbacks.add(lambda *_: resolve(closed))
        generation = self._generation
        tasks = [asyncio.create_task(self._consume(p, q, generation), name=f"cluster:consume:{p}")
                 for p, q in enumerate(queues)]
        acker = asyncio.create_task(self._ack_loop(channel, generation), name="cluster:acks")
        self._state = ListenerState.CONNECTED
        self.last_error = None
        connected.set()
        log.info("cluster_consumer_connected", partitions=self._partitions)
        try:
            done, _ = await asyncio.wait({closed, acker, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not closed and not task.cancelled() and task.exception() is not None:
                    self.last_error = repr(task.exception())
                    log.warning("cluster_consumer_failed", error=self.last_error)
        finally:
            for task in (*tasks, acker):
                task.cancel()
            await asyncio.gather(*tasks, acker, return_exceptions=True)
        raise ConnectionError("the RabbitMQ connection closed")

    async def _consume(self, partition: int, queue: Any, generation: int) -> None:
        """Deliver one partition's messages to the intake, in order.

        Messages a dead worker left unacked come back first, flagged ``redelivered``, but RabbitMQ returns
        them in no particular order (tests/cluster/test_partitions.py saw 1090 before 1058): such a block is
        held until the next fresh message (or ``REORDER_WAIT``, or a prefetch's worth) and delivered in the
        order the ingest took the messages in (received time, then the ingest's sequence number). RabbitMQ
        3.10 may also hand the new holder fresh messages before the returned ones: for ``GAIN_WINDOW`` after
        it gains a partition, a worker holds everything and sorts it. A heuristic bounded by time and
        prefetch (docs/cluster.md, "Order"); the exact fix is a per-partition sequence checked by workers."""
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

        async def pump() -> None:
            async with queue.iterator() as messages:
                async for message in messages:
                    inbox.put_nowait(message)

        pumping = asyncio.create_task(pump(), name=f"cluster:pump:{partition}")
        returned: list[AbstractIncomingMessage] = []
        loop = asyncio.get_running_loop()
        window_until = 0.0  # after a gain: everything is held and sorted until then
        getting: asyncio.Future[AbstractIncomingMessage] | None = None
        try:
            while True:
                getting = asyncio.create_task(inbox.get(), name="worker:partition:get")
                wait = max(0.0, window_until - loop.time()) if window_until else REORDER_WAIT
                done, _ = await asyncio.wait({getting, pumping}, return_when=asyncio.FIRST_COMPLETED,
                                             timeout=wait if returned else None)
                if getting not in done:
                    getting.cancel()
                    if pumping in done:
                        pumping.result()
                        return
                    self._deliver_sorted(returned, generation)  # no more came back: deliver the block
                    returned = []
                    window_until = 0.0
                    continue
                message = getting.result()
                if partition not in self._held:
                    if self._on_gain is not None:
                        await self._on_gain(partition)  # the previous holder's committed device state
                    self._held.add(partition)
                    window_until = loop.time() + GAIN_WINDOW
                    log.info("cluster_partition_gained", partition=partition)
                if window_until and loop.time() < window_until:
                    returned.append(message)
                    continue
                if message.redelivered:
                    returned.append(message)
                    if len(returned) >= self._prefetch:
                        self._deliver_sorted(returned, generation)
                        returned = []
                    continue
                if returned:
                    self._deliver_sorted(returned, generation)
                    returned = []
                self._deliver(message, generation)
        finally:
            if getting is not None:
                getting.cancel()
            pumping.cancel()
            await asyncio.gather(pumping, return_exceptions=True)

    def _deliver_sorted(self, messages: list[AbstractIncomingMessage], generation: int) -> None:
        def key(message: AbstractIncomingMessage) -> tuple[float, int]:
            try:
                doc = orjson.loads(message.body)
                return float(doc.get("receivedAt") or 0.0), int(doc.get("n") or 0)
            except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
                return 0.0, 0

        for message in sorted(messages, key=key):
            self._deliver(message, generation)

    def _deliver(self, message: AbstractIncomingMessage, generation: int) -> None:
        tag = message.delivery_tag
        try:
            msg, _ = decode_envelope(message.body)
        except EnvelopeError as exc:
            self.rejected += 1
            log.error("cluster_envelope_rejected", error=str(exc))
            if tag is not None:
                self._acks.append((generation, tag, False))
                self._ack_wake.set()
            return
        self.received += 1
        self._outstanding += 1
        self._settled.clear()

        def ack() -> None:
            self._done_one()
            if generation == self._generation and tag is not None:
                self._acks.append((generation, tag, True))
                self._ack_wake.set()

        msg.ack = ack
        if self._intake is None or not self._intake.offer(msg):
            self._done_one()  # not acked: the broker delivers it again (to this or another worker)
            log.warning("cluster_intake_refused", partition_message=msg.id)

    def _done_one(self) -> None:
        self._outstanding -= 1
        if self._outstanding <= 0:
            self._outstanding = 0
            self._settled.set()

    async def _ack_loop(self, channel: Any, generation: int) -> None:
        raw = await channel.get_underlay_channel()
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            while self._acks:
                gen, tag, ok = self._acks.popleft()
                if gen != generation:
                    continue
                if ok:
                    await raw.basic_ack(tag)
                else:  # not an envelope of ours: never processed, not requeued
                    await raw.basic_reject(tag, requeue=False)
