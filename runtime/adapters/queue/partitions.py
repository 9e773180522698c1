"""The worker's side of the Cluster edition's queue (docs/cluster.md): ``PartitionConsumer``, a data listener
whose messages come from the instance's partition queues (single active consumer). A message is acked only
when the dispatcher's record and device state are committed (``InboundMessage.ack``); an ack of an ended
connection is dropped (the broker delivers the message again). Before the first message of a partition it
did not hold, the consumer waits until what it delivered of that partition before is committed, reloads the
partition's devices (``on_gain``) and the last numbers committed per ingest (``Cursors.committed``); from
then on each ingest's messages go on in the ingest's order (``ordering.PartitionOrder``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage

from runtime.adapters.queue.commands import COMMAND_TYPE
from runtime.adapters.queue.ordering import OrderStats, PartitionOrder
from runtime.adapters.queue.rabbitmq import (
    CONNECT_ERRORS,
    connect,
    declare_partitions,
    reconnect_backoff,
    resolve,
)
from runtime.adapters.supervision import supervise
from runtime.core.listener_state import ListenerState
from runtime.core.messages import InboundMessage
from runtime.services.cluster import EnvelopeError, Sequence, decode_sequenced, partition_queue
from runtime.services.dataplane import Intake

log = structlog.get_logger(__name__)

# Unacked messages per partition consumer: also what a partition can hold back waiting for a predecessor.
MAX_PREFETCH = 256
GAP_TIMEOUT = 2.0  # seconds a message waits for its predecessor before that one is counted as a gap
GAIN_DRAIN_TIMEOUT = 10.0
ACK, REJECT, REQUEUE = 0, 1, 2  # what the ack loop sends for a delivery tag  # seconds a regained partition waits for what went on before to be committed


class Cursors(Protocol):
    """The last number committed per (partition queue, ingest source), committed with the records
    (``PostgresStore``)."""

    async def committed(self, queue: str) -> dict[str, int]:
        """The partition's committed numbers, per source."""
        ...

    def sequence(self, record_id: str, queue: str, source: str, n: int) -> None:
        """The record of ``record_id``, when it comes, is number ``n`` of ``source`` in ``queue``."""
        ...

    def forget(self, record_id: str) -> None:
        """No record comes for ``record_id`` (the intake refused it)."""
        ...


class IntakeRefusedError(ConnectionError):
    """A message could not go on: the connection is closed so that RabbitMQ returns it and its successors."""


@dataclass(slots=True)
class Incoming:
    tag: int | None
    msg: InboundMessage
    seq: Sequence | None


class PartitionConsumer:
    """The worker's data listener: the partition queues of the instance, single active consumer."""

    type = "rabbitmq-partitions"

    def __init__(self, url: str, instance_id: str, partitions: int, *, key: str = "partitions",
                 prefetch: int = MAX_PREFETCH, on_gain: Callable[[int], Awaitable[None]] | None = None,
                 cursors: Cursors | None = None, gap_timeout: float = GAP_TIMEOUT,
                 on_command: Callable[[bytes], bytes | None] | None = None,
                 name: str = "nuviot-worker", drain_timeout: float = 5.0) -> None:
        self.key = key
        self._url = url
        self._instance = instance_id
        self._partitions = partitions
        self._prefetch = min(prefetch, MAX_PREFETCH)
        self._on_gain = on_gain
        self._cursors = cursors
        self._on_command = on_command
        self._channel: Any = None
        self._gap_timeout = gap_timeout
        self.order = OrderStats()
        self._inflight: dict[int, int] = {}  # partition -> delivered, not yet acked (any connection)
        self._drained: dict[int, asyncio.Event] = {}
        self._wakes: dict[int, asyncio.Event] = {}
        self._release_wanted: set[int] = set()
        self.released = 0  # partitions handed to another worker
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
        self._acks: deque[tuple[int, int, int]] = deque()  # (generation, delivery tag, ACK/REJECT/REQUEUE)
        self._ack_wake = asyncio.Event()
        self._stopping = asyncio.Event()  # supervision's ``stop``
        self._opened = False  # the current session's connection was opened
        self._backoff = reconnect_backoff()
        self.last_error: str | None = None
        self.received = 0
        self.rejected = 0

    @property
    def held(self) -> list[int]:
        return sorted(self._held)

    def status(self) -> dict[str, Any]:
        return {"key": self.key, "type": self.type, "state": self._state.value, "port": None,
                "partitions": self.held, "outstanding": self._outstanding, "lastError": self.last_error,
                "duplicates": self.order.duplicates, "gaps": self.order.gaps, "late": self.order.late,
                "released": self.released}

    async def start(self, intake: Intake) -> None:
        self._intake = intake
        self._stopping.clear()
        # a new data plane: what the last one left unacked (a drain that timed out) is never acked now
        # (RabbitMQ returned it when the connection closed); its records are behind us or guarded at commit
        self._outstanding = 0
        self._settled.set()
        self._inflight.clear()
        for drained in self._drained.values():
            drained.set()
        self._state = ListenerState.CONNECTING
        connected = asyncio.Event()
        self._task = asyncio.create_task(self._run(connected), name="cluster:consumer")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(connected.wait(), timeout=10)

    async def stop(self) -> None:
        """No new deliveries; wait (bounded) until what was delivered is committed and acked; close."""
        self._stopping.set()
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
        await supervise(lambda: self._session(connected), role="cluster_consumer", backoff=self._backoff,
                        connection_errors=CONNECT_ERRORS, on_loss=self._lost, stop=self._stopping)

    async def _session(self, connected: asyncio.Event) -> None:
        self._opened = False
        conn = await connect(self._url, self._name)
        self._opened = True
        self._generation += 1
        self._held.clear()  # what the last connection delivered is still counted until it is committed
        async with conn:
            await self._serve(conn, connected)

    def _lost(self, error: str) -> str:
        self.last_error = error
        # a connection that was open ended: DISCONNECTED; one that could not be opened: still CONNECTING
        self._state = ListenerState.DISCONNECTED if self._opened else ListenerState.CONNECTING
        self._held.clear()
        return "cluster_consumer_disconnected"

    async def _serve(self, conn: Any, connected: asyncio.Event) -> None:
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        queues = await declare_partitions(channel, self._instance, self._partitions)
        self._channel = channel
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.close_callbacks.add(lambda *_: resolve(closed))
        generation = self._generation
        registered: list[int] = []
        consuming = asyncio.Event()  # connected = a consumer on every partition (active or waiting)
        tasks = [asyncio.create_task(self._consume(p, q, generation, registered, consuming),
                                     name=f"cluster:consume:{p}") for p, q in enumerate(queues)]
        acker = asyncio.create_task(self._ack_loop(channel, generation), name="cluster:acks")
        all_in = asyncio.create_task(consuming.wait(), name="cluster:consuming")
        await asyncio.wait({all_in, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        all_in.cancel()
        self._state = ListenerState.CONNECTED
        self.last_error = None
        self._backoff.reset()
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

    async def _consume(self, partition: int, queue: Any, generation: int, registered: list[int],
                       consuming: asyncio.Event) -> None:
        """Deliver one partition's messages to the intake, in each ingest's order (``ordering.py``).

        RabbitMQ returns the messages of a worker that died in no particular order, and may hand the new
        holder fresh messages first (tests/cluster/test_partitions.py saw both): the numbers in the
        envelopes put them back in order, and drop what was committed already."""
        inbox: deque[AbstractIncomingMessage] = deque()
        wake = self._wakes[partition] = asyncio.Event()

        async def on_message(message: AbstractIncomingMessage) -> None:
            inbox.append(message)
            wake.set()

        tag = await queue.consume(on_message)
        registered.append(partition)
        if len(registered) == self._partitions:
            consuming.set()
        waiting = asyncio.create_task(wake.wait(), name=f"cluster:wake:{partition}")
        loop = asyncio.get_running_loop()
        order: PartitionOrder[Incoming] | None = None
        try:
            while True:
                if partition in self._release_wanted:
                    self._release_wanted.discard(partition)
                    if partition in self._held:
                        order, tag = await self._hand_over(partition, queue, tag, order, inbox, generation,
                                                           on_message)
                while inbox:
                    message = inbox.popleft()
                    if message.consumer_tag != tag:  # came to a consumer cancelled by a hand-over: not ours
                        self._settle(generation, message.delivery_tag, REQUEUE)
                        continue
                    if partition not in self._held:
                        order = await self._gain(partition)
                    if message.type == COMMAND_TYPE:
                        await self._command(message, generation)
                        continue
                    self._take(message, order, partition, generation)
                deadline = order.deadline() if order is not None else None
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                wake.clear()
                if inbox or partition in self._release_wanted:
                    continue
                if waiting.done():
                    waiting = asyncio.create_task(wake.wait(), name=f"cluster:wake:{partition}")
                await asyncio.wait({waiting}, timeout=timeout)
                if order is not None and not inbox:
                    for item in order.expire(loop.time()):  # predecessors that did not come: a gap
                        if item.seq is not None and not order.exact(item.seq.source):
                            item.seq = None  # no cursor past a gap (see _take)
                        self._deliver(item, generation, partition)
        finally:
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            self._wakes.pop(partition, None)

    def release(self, partition: int) -> None:
        """Hand ``partition`` to the next worker waiting for it (rebalancing, docs/cluster.md)."""
        if partition in self._held:
            self._release_wanted.add(partition)
            wake = self._wakes.get(partition)
            if wake is not None:
                wake.set()

    async def _hand_over(self, partition: int, queue: Any, tag: str, order: PartitionOrder[Incoming] | None,
                         inbox: deque[AbstractIncomingMessage], generation: int,
                         on_message: Callable[[AbstractIncomingMessage], Awaitable[None]],
                         ) -> tuple[PartitionOrder[Incoming] | None, str]:
        """Stop handing the partition's messages on, wait until what went on is committed (so the next holder
        reads every effect from the database), cancel this consumer (RabbitMQ activates the next one in line),
        return what came but did not go on to the queue, and register again at the back of the line."""
        drained = self._drained.setdefault(partition, asyncio.Event())
        if self._inflight.get(partition, 0):
            drained.clear()
            try:
                await asyncio.wait_for(drained.wait(), timeout=GAIN_DRAIN_TIMEOUT)
            except TimeoutError:
                log.warning("cluster_release_not_drained", partition=partition)
                return order, tag
        await queue.cancel(tag)
        self._held.discard(partition)
        await asyncio.sleep(0)  # deliveries that came before the cancel-ok reach the inbox
        returned = [m.delivery_tag for m in inbox] + [i.tag for i in (order.take_held() if order else [])]
        inbox.clear()
        for delivery_tag in returned:
            self._settle(generation, delivery_tag, REQUEUE)
        self.released += 1
        log.info("cluster_partition_released", partition=partition, returned=len(returned))
        return None, await queue.consume(on_message)

    def _settle(self, generation: int, tag: int | None, action: int) -> None:
        if tag is not None:
            self._acks.append((generation, tag, action))
            self._ack_wake.set()

    async def _gain(self, partition: int) -> PartitionOrder[Incoming] | None:
        """This consumer became the partition's holder: what it delivered before (an earlier connection) is
        committed first, then the previous holder's devices and numbers are read."""
        drained = self._drained.setdefault(partition, asyncio.Event())
        if self._inflight.get(partition, 0):
            drained.clear()
            with contextlib.suppress(TimeoutError):  # bounded: the store's cursor check is the last guard
                await asyncio.wait_for(drained.wait(), timeout=GAIN_DRAIN_TIMEOUT)
        if self._on_gain is not None:
            await self._on_gain(partition)  # the previous holder's committed device state
        order: PartitionOrder[Incoming] | None = None
        if self._cursors is not None:
            committed = await self._cursors.committed(partition_queue(self._instance, partition))
            order = PartitionOrder(committed, gap_timeout=self._gap_timeout, capacity=self._prefetch,
                                   stats=self.order)
        self._held.add(partition)
        log.info("cluster_partition_gained", partition=partition, sources=len(committed) if order else None)
        return order

    async def _command(self, message: AbstractIncomingMessage, generation: int) -> None:
        """An input command routed here (``commands.py``): run on this worker's devices, between two of its
        batches (the dispatcher runs a batch without awaiting), answered, acked (not redelivered: run once)."""
        answer = self._on_command(message.body) if self._on_command is not None else None
        if answer is not None and message.reply_to and self._channel is not None:
            reply = aio_pika.Message(answer, correlation_id=message.correlation_id, content_type="application/json")
            with contextlib.suppress(*CONNECT_ERRORS):
                await self._channel.default_exchange.publish(reply, routing_key=message.reply_to)
        if message.delivery_tag is not None:
            self._acks.append((generation, message.delivery_tag, ACK))
            self._ack_wake.set()

    def _take(self, message: AbstractIncomingMessage, order: PartitionOrder[Incoming] | None, partition: int,
              generation: int) -> None:
        try:
            msg, _, seq = decode_sequenced(message.body)
        except EnvelopeError as exc:
            self.rejected += 1
            log.error("cluster_envelope_rejected", error=str(exc))
            if message.delivery_tag is not None:
                self._acks.append((generation, message.delivery_tag, REJECT))
                self._ack_wake.set()
            return
        item = Incoming(message.delivery_tag, msg, seq)
        if order is None or seq is None:
            self._deliver(item, generation, partition)
            return
        late_before = self.order.late
        ready, duplicates = order.offer(seq.source, seq.n, item, asyncio.get_running_loop().time())
        for dup in duplicates:
            if dup.tag is not None:
                self._acks.append((generation, dup.tag, ACK))
                self._ack_wake.set()
        if self.order.late != late_before:
            item.seq = None  # after its successors: no cursor (the store would take it for a duplicate)
            log.warning("cluster_late_message", partition=partition, source=seq.source, n=seq.n)
        for one in ready:
            if one.seq is not None and not order.exact(one.seq.source):
                # after a gap, a source's messages commit without moving its cursor: the cursor never passes a
                # number that was not committed, so a later holder cannot take a skipped one for a duplicate
                # (what follows is at least once for that source, instead of exactly once)
                one.seq = None
        for one in ready:
            self._deliver(one, generation, partition)

    def _deliver(self, item: Incoming, generation: int, partition: int) -> None:
        tag, msg = item.tag, item.msg
        self.received += 1
        self._outstanding += 1
        self._inflight[partition] = self._inflight.get(partition, 0) + 1
        self._settled.clear()
        if item.seq is not None and self._cursors is not None:
            self._cursors.sequence(msg.id, partition_queue(self._instance, partition), item.seq.source, item.seq.n)

        def ack() -> None:
            self._done_one(partition)
            if generation == self._generation and tag is not None:
                self._acks.append((generation, tag, ACK))
                self._ack_wake.set()

        msg.ack = ack
        if self._intake is None or not self._intake.offer(msg):
            # not acked, and its successors must not go on without it: the connection is closed, RabbitMQ
            # returns what is unacked, the partition is gained again after what went on is committed
            if self._cursors is not None:
                self._cursors.forget(msg.id)
            self._done_one(partition)
            log.warning("cluster_intake_refused", partition_message=msg.id)
            raise IntakeRefusedError(f"the intake refused a message of partition {partition}")

    def _done_one(self, partition: int) -> None:
        left = self._inflight.get(partition, 1) - 1
        self._inflight[partition] = max(0, left)
        if left <= 0:
            drained = self._drained.get(partition)
            if drained is not None:
                drained.set()
        self._outstanding -= 1
        if self._outstanding <= 0:
            self._outstanding = 0
            self._settled.set()

    async def _ack_loop(self, channel: Any, generation: int) -> None:
        """Send the acks: the channel's delivery tags count 1, 2, ...; the settled run from the lowest one
        goes in one ``multiple`` ack, what is settled above a message still in work goes one by one."""
        raw = await channel.get_underlay_channel()
        low = 1  # every tag below is settled and sent
        done: set[int] = set()  # acked here, not sent yet
        sent: set[int] = set()  # sent (rejected, or acked one by one above ``low``)
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            while self._acks:
                gen, tag, action = self._acks.popleft()
                if gen != generation:
                    continue
                if action == ACK:
                    done.add(tag)
                    continue
                if action == REJECT:  # not an envelope of ours: never processed, not requeued
                    await raw.basic_reject(tag, requeue=False)
                else:  # handed over before it went on: back to the queue, for the next holder
                    await raw.basic_nack(tag, requeue=True)
                sent.add(tag)
            last = 0
            while True:
                if low in done:
                    done.discard(low)
                    last = low
                elif low in sent:
                    sent.discard(low)
                else:
                    break
                low += 1
            if last:
                await raw.basic_ack(last, multiple=True)
            for tag in sorted(done):
                await raw.basic_ack(tag)
                sent.add(tag)
            done.clear()
