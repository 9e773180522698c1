"""RabbitMQ between the roles (adapters/queue/rabbitmq.py, partitions.py), in-process, against a real RabbitMQ:

- a partition is consumed by one worker at a time; when that worker's connection ends (unacked messages
  and all), the standby takes the partition over, per-device order holds and nothing is processed twice
  (the ingest's numbers and the committed cursors, docs/cluster.md "Order");
- a RabbitMQ that restarts (a private node: stop_app/start_app) loses nothing that was confirmed: the
  publisher publishes again what was unconfirmed, in order; the consumers come back by themselves; what the
  publisher sent twice is recorded once.

The workers' "store" is a dict shared by them (the database): each message's log entry and its cursor are
committed together, like PostgresStore's transaction.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runtime.adapters.queue.partitions import PartitionConsumer
from runtime.adapters.queue.rabbitmq import RabbitPublisher
from runtime.core.messages import InboundMessage
from runtime.services.cluster import PartitionSequencer, encode_envelope, partition_of
from runtime.services.dataplane import Intake
from runtime.services.metrics import Counters
from tests.cluster.conftest import amqp_url
from tests.support import rabbitmq

pytestmark = pytest.mark.integration

PARTITIONS = 8
DEVICES = 32


class SharedCursors:
    """The workers' shared database: the last number committed per (queue, source)."""

    def __init__(self) -> None:
        self.committed: dict[tuple[str, str], int] = {}
        self.dropped = 0


class WorkerCursors:
    """One worker's ``Cursors`` over the shared ones (PostgresStore's part in the real worker)."""

    def __init__(self, shared: SharedCursors) -> None:
        self.shared = shared
        self.pending: dict[str, tuple[str, str, int]] = {}

    async def committed(self, queue: str) -> dict[str, int]:
        return {source: n for (q, source), n in self.shared.committed.items() if q == queue}

    def sequence(self, record_id: str, queue: str, source: str, n: int) -> None:
        self.pending[record_id] = (queue, source, n)

    def forget(self, record_id: str) -> None:
        self.pending.pop(record_id, None)

    def commit(self, record_id: str) -> bool:
        """Commit the record's number with it; False for a duplicate (its number was committed)."""
        seq = self.pending.pop(record_id, None)
        if seq is None:
            return True
        queue, source, n = seq
        if n <= self.shared.committed.get((queue, source), 0):
            self.shared.dropped += 1
            return False
        self.shared.committed[(queue, source)] = n
        return True


class Worker:
    """A consumer and a loop that 'commits' each message (records it with its number) and then acks it."""

    def __init__(self, name: str, url: str, instance: str, log: list[tuple[str, str, int]],
                 shared: SharedCursors) -> None:
        self.name = name
        self.intake = Intake(10_000, Counters())
        self.cursors = WorkerCursors(shared)
        self.consumer = PartitionConsumer(url, instance, PARTITIONS, name=f"{instance}-{name}", cursors=self.cursors,
                                          drain_timeout=1.0)
        self._log = log
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start(self.intake)
        self._task = asyncio.create_task(self._work())

    async def _work(self) -> None:
        """Commit each batch, ack the one before: a worker that dies leaves committed, unacked messages
        (RabbitMQ hands them to the next holder: duplicates it must not record again) and uncommitted ones."""
        unacked: list[InboundMessage] = []
        while True:
            if unacked and not len(self.intake):
                batch: list[InboundMessage] = []  # nothing more came: ack what is committed
            else:
                batch = await self.intake.take(64)
            for msg in batch:
                device, _, seq = msg.topic.partition(":") if msg.topic else ("", "", "0")
                if self.cursors.commit(msg.id):
                    self._log.append((self.name, device, int(seq)))
            for msg in unacked:
                assert msg.ack is not None
                msg.ack()
            unacked = batch
            await asyncio.sleep(0.005)

    async def kill(self) -> None:
        """Like a dead process: the connection ends, nothing more is acked."""
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        task = self.consumer._task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def stop(self) -> None:
        await self.consumer.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def publish_all(publisher: RabbitPublisher, sequencer: PartitionSequencer, start: int, count: int,
                confirmed: list[int]) -> None:
    """What the IngestDispatcher does: number each partition's envelopes, publish them."""
    for seq in range(start, start + count):
        device = f"dev{seq % DEVICES}"
        msg = InboundMessage(listener="t", payload=b"{}", topic=f"{device}:{seq}")

        def done(seq: int = seq) -> None:
            confirmed.append(seq)

        partition = partition_of(device, PARTITIONS)
        publisher.publish(partition, encode_envelope(msg, device, seq, sequencer.next(partition)), done)


async def until(what: str, check: Callable[[], bool], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s")
        await asyncio.sleep(0.05)


def check_order(log: list[tuple[str, str, int]], strict: bool = False) -> tuple[set[int], int]:
    """Per device: a reading first seen after a newer one is out of order; ``strict``: each device's readings
    are exactly the ones sent to it, once each, ascending. Returns (seen, duplicates)."""
    by_device: dict[str, list[int]] = defaultdict(list)
    for _, device, seq in log:
        by_device[device].append(seq)
    for device, seqs in by_device.items():
        high, seen = 0, set()
        for s in seqs:
            assert s > high or s in seen, f"{device}: {s} first seen after {high}: {[x for x in log if x[1] == device]}"
            high, _ = max(high, s), seen.add(s)
        if strict:
            assert seqs == sorted(set(seqs)), f"{device}: {seqs}"
    all_seen = {seq for _, _, seq in log}
    return all_seen, len(log) - len(all_seen)


@dataclass
class TwoWorkers:
    """Workers ``a`` and ``b`` of one instance sharing a log and cursors, and a started publisher."""

    log: list[tuple[str, str, int]]
    shared: SharedCursors
    a: Worker
    b: Worker
    publisher: RabbitPublisher
    sequencer: PartitionSequencer
    confirmed: list[int] = field(default_factory=list)


@asynccontextmanager
async def two_workers(rabbit: rabbitmq.Rabbit, instance_id: str) -> AsyncIterator[TwoWorkers]:
    """The publisher and ``a`` started (``b`` is the test's to start); all stopped at the end."""
    url = amqp_url(rabbit)
    log: list[tuple[str, str, int]] = []
    shared = SharedCursors()
    w = TwoWorkers(log, shared, Worker("a", url, instance_id, log, shared), Worker("b", url, instance_id, log, shared),
                   RabbitPublisher(url, instance_id, PARTITIONS, name=f"{instance_id}-pub"),
                   PartitionSequencer(f"{instance_id}-pub", PARTITIONS))
    await w.publisher.start()
    await w.a.start()
    try:
        yield w
    finally:
        await w.publisher.stop(1.0)
        await w.a.stop()
        await w.b.stop()


async def test_one_worker_per_partition_and_failover_loses_nothing(rabbit: rabbitmq.Rabbit, instance_id: str) -> None:
    async with two_workers(rabbit, instance_id) as w:
        log, shared, a, b, publisher, sequencer, confirmed = (w.log, w.shared, w.a, w.b, w.publisher, w.sequencer,
                                                              w.confirmed)
        await b.start()
        publish_all(publisher, sequencer, 1, 2000, confirmed)
        await until("1000 processed", lambda: len(log) >= 1000)
        # a partition is consumed by one worker at a time
        by_partition: dict[int, set[str]] = defaultdict(set)
        for name, device, _ in log:
            by_partition[partition_of(device, PARTITIONS)].add(name)
        assert all(len(names) == 1 for names in by_partition.values()), by_partition
        victim, survivor = (a, b) if a.consumer.held else (b, a)
        await victim.kill()
        publish_all(publisher, sequencer, 2001, 1000, confirmed)
        await until("everything confirmed", lambda: len(confirmed) == 3000)
        await until("every confirmed message processed", lambda: {s for _, _, s in log} >= set(confirmed))
        seen = {seq for _, _, seq in log}
        assert seen == set(range(1, 3001))
        assert set(survivor.consumer.held) == set(range(PARTITIONS)) & {partition_of(f"dev{n}", PARTITIONS)
                                                                          for n in range(DEVICES)}
        assert len(log) == len(seen), "a message committed twice"
        stats = survivor.consumer.order
        print(f"after the failover: duplicates acked {stats.duplicates}, at commit {shared.dropped}, "
              f"gaps {stats.gaps}, late {stats.late}, waited for a predecessor {stats.waited}")
        assert stats.gaps == 0 and stats.late == 0  # every predecessor came (nothing was lost)
        failover_order[:] = [log]


failover_order: list[list[tuple[str, str, int]]] = []


def test_per_device_order_holds_across_the_failover() -> None:
    """RabbitMQ 3.10 returns the dead worker's unacked messages in no particular order, after fresh ones at
    times: the survivor puts each device's readings back in the order they were sent."""
    assert failover_order, "runs after test_one_worker_per_partition_and_failover_loses_nothing"
    check_order(failover_order[0], strict=True)


# aiormq 6.9 (Connection.connect) does not close its socket when the AMQP handshake fails after the TCP connect,
# which happens when a reconnect reaches RabbitMQ while it is starting; the garbage collector closes it with a
# ResourceWarning. Only this test restarts a broker under a client, so only it allows that warning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_rabbitmq_restart_loses_nothing_confirmed(tmp_path: Path) -> None:
    node = rabbitmq.start_own(tmp_path / "rabbit")  # restarted below: never the machine's
    try:
        url = amqp_url(node)
        log: list[tuple[str, str, int]] = []
        shared = SharedCursors()
        worker = Worker("w", url, "restart", log, shared)
        publisher = RabbitPublisher(url, "restart", PARTITIONS, name="restart-pub")
        sequencer = PartitionSequencer("restart-pub", PARTITIONS)
        await publisher.start()
        await worker.start()
        confirmed: list[int] = []
        publish_all(publisher, sequencer, 1, 500, confirmed)
        await until("first confirms", lambda: len(confirmed) == 500)
        assert (await asyncio.to_thread(node._ctl, "stop_app")).returncode == 0
        publish_all(publisher, sequencer, 501, 500, confirmed)  # while RabbitMQ is down: kept, unconfirmed
        await until("publisher saw the outage", lambda: not publisher.connected.is_set())
        assert len(confirmed) == 500
        assert (await asyncio.to_thread(node._ctl, "start_app")).returncode == 0
        await until("everything confirmed after the restart", lambda: len(confirmed) == 1000, within=90)
        await until("everything processed", lambda: {s for _, _, s in log} >= set(range(1, 1001)), within=90)
        _, duplicates = check_order(log, strict=True)
        stats = worker.consumer.order
        print(f"after the restart: republished {publisher.republished}, duplicates acked {stats.duplicates}, "
              f"at commit {shared.dropped}, gaps {stats.gaps}, late {stats.late}")
        assert duplicates == 0 and stats.gaps == 0
        await publisher.stop(1.0)
        await worker.stop()
    finally:
        await asyncio.to_thread(node.stop)


async def test_a_released_partition_moves_to_the_waiting_worker_in_order(rabbit: rabbitmq.Rabbit,
                                                                         instance_id: str) -> None:
    """Rebalancing's hand-over (PartitionConsumer.release): the first worker holds every partition; a worker
    that joins later waits; the first releases half of them while readings flow: the second takes them,
    nothing is lost, recorded twice or out of order."""
    async with two_workers(rabbit, instance_id) as w:
        log, a, b, publisher, sequencer, confirmed = w.log, w.a, w.b, w.publisher, w.sequencer, w.confirmed
        publish_all(publisher, sequencer, 1, 800, confirmed)
        await until("a holds every partition", lambda: len(a.consumer.held) == PARTITIONS)
        await b.start()
        moving = a.consumer.held[PARTITIONS // 2:]
        for p in moving:
            a.consumer.release(p)
        publish_all(publisher, sequencer, 801, 800, confirmed)
        await until("b took the released partitions", lambda: set(b.consumer.held) == set(moving))
        publish_all(publisher, sequencer, 1601, 800, confirmed)
        await until("everything processed", lambda: {s for _, _, s in log} >= set(range(1, 2401)))
        assert set(a.consumer.held) == set(range(PARTITIONS)) - set(moving)
        assert a.consumer.released == len(moving)
        _, duplicates = check_order(log, strict=True)
        assert duplicates == 0
        by_partition: dict[int, set[str]] = defaultdict(set)
        for name, device, _ in log[-800:]:
            by_partition[partition_of(device, PARTITIONS)].add(name)
        assert {p for p, names in by_partition.items() if names == {"b"}} == set(moving)
        print(f"hand-over: requeued and taken by b; b's order keeper: waited {b.consumer.order.waited}, "
              f"duplicates {b.consumer.order.duplicates}, gaps {b.consumer.order.gaps}")
        assert b.consumer.order.gaps == 0
