"""The Cluster edition's RabbitMQ adapters run under ``supervise()`` (adapters/supervision.py), against a real
RabbitMQ: a bug that raises in a session (here a ``RuntimeError`` once) is logged with its stack, shown in
the status, and the adapter reconnects by itself (before: the task ended in silence, found only at stop)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import structlog

from runtime.adapters.queue.partitions import PartitionConsumer
from runtime.adapters.queue.rabbitmq import RabbitPublisher
from runtime.core.listener_state import ListenerState
from runtime.services.dataplane import Intake
from runtime.services.metrics import Counters
from tests.cluster.conftest import amqp_url
from tests.support import rabbitmq

pytestmark = pytest.mark.integration


class CrashOnce:
    """Stands in for an adapter's coroutine method: the first call raises ``RuntimeError`` (a bug), the
    next ones run the original."""

    def __init__(self, original: Callable[..., Awaitable[None]], message: str) -> None:
        self.original = original
        self.message = message
        self.calls = 0

    async def __call__(self, *args: Any) -> None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError(self.message)
        await self.original(*args)


async def test_a_publisher_session_that_crashes_is_logged_and_reconnects_and_confirms(
        rabbit: rabbitmq.Rabbit, instance_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    publisher = RabbitPublisher(amqp_url(rabbit), instance_id, 2, name=f"{instance_id}-ingest")
    send = CrashOnce(publisher._send, "a bug in the send loop")
    monkeypatch.setattr(publisher, "_send", send)
    confirmed = asyncio.Event()
    publisher.publish(1, b'{"n": 1}', confirmed.set)
    with structlog.testing.capture_logs() as logs:
        await publisher.start()
        try:
            await asyncio.wait_for(confirmed.wait(), timeout=20)
            status = publisher.status()
        finally:
            await publisher.stop(within=1.0)
    assert send.calls == 2
    crashed = [e for e in logs if e["event"] == "cluster_publisher_session_crashed"]
    assert len(crashed) == 1 and crashed[0]["log_level"] == "error", logs
    assert isinstance(crashed[0]["exc_info"], RuntimeError)
    lost = [e for e in logs if e["event"] == "cluster_publisher_disconnected"]
    assert [e["error"] for e in lost] == ["internal error: a bug in the send loop"], lost
    # the envelope published before the crash went again on the next connection and was confirmed
    assert status["state"] == ListenerState.CONNECTED.value and status["lastError"] is None, status
    assert status["unconfirmed"] == 0 and status["republished"] == 2, status


async def test_a_consumer_session_that_crashes_is_logged_and_reconnects(
        rabbit: rabbitmq.Rabbit, instance_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = PartitionConsumer(amqp_url(rabbit), instance_id, 2, name=f"{instance_id}-worker", drain_timeout=1.0)
    serve = CrashOnce(consumer._serve, "a bug in the consumer")
    monkeypatch.setattr(consumer, "_serve", serve)
    with structlog.testing.capture_logs() as logs:
        await consumer.start(Intake(100, Counters()))
        try:
            assert consumer.status()["state"] == ListenerState.CONNECTED.value, consumer.status()
            assert consumer.status()["lastError"] is None
        finally:
            await consumer.stop()
    assert serve.calls == 2
    assert consumer.status()["state"] == ListenerState.STOPPED.value
    crashed = [e for e in logs if e["event"] == "cluster_consumer_session_crashed"]
    assert len(crashed) == 1 and isinstance(crashed[0]["exc_info"], RuntimeError), logs
    lost = [e for e in logs if e["event"] == "cluster_consumer_disconnected"]
    assert [e["error"] for e in lost] == ["internal error: a bug in the consumer"], lost
