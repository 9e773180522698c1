"""Input commands routed to the worker that owns the device (the Cluster edition, docs/cluster.md).

Device state lives in the owning worker's memory (it writes it behind); a command run on another replica
would work on a stale copy and be overwritten by the worker's next write. So a replica that serves an input
command (HTTP or the MQTT command channel) publishes it to the device's partition queue (``COMMAND_TYPE``,
``reply_to`` its own reply queue, ``expiration`` the caller's wait) and waits for the answer; the worker that
holds the partition runs it between two of its batches on the device it has in memory, and answers
(``partitions.PartitionConsumer``). ``CommandRouter`` is the serving side.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage

from runtime.adapters.queue.rabbitmq import (
    CONNECT_ERRORS,
    connect,
    declare_partitions,
    reconnect_backoff,
    resolve,
)
from runtime.adapters.supervision import supervise
from runtime.services.cluster import partition_queue

log = structlog.get_logger(__name__)

COMMAND_TYPE = "nuviot.input-command"


class CommandRouteError(Exception):
    """The command could not be handed to RabbitMQ (no connection)."""


class CommandRouter:
    def __init__(self, url: str, instance_id: str, partitions: int, *, name: str = "nuviot-commands") -> None:
        self._url = url
        self._instance = instance_id
        self._partitions = partitions
        self._name = name
        self._channel: Any = None
        self._reply_queue: str | None = None
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.last_error: str | None = None
        self._backoff = reconnect_backoff()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cluster:commands")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), timeout=10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def call(self, partition: int, body: bytes, within: float) -> bytes | None:
        """Publish the command to ``partition`` and wait for the worker's answer (None: none ``within`` s)."""
        channel, reply_to = self._channel, self._reply_queue
        if channel is None or reply_to is None or not self.connected.is_set():
            raise CommandRouteError(self.last_error or "not connected to RabbitMQ")
        correlation = secrets.token_hex(8)
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[correlation] = answer
        try:
            message = aio_pika.Message(body, type=COMMAND_TYPE, reply_to=reply_to, correlation_id=correlation,
                                       content_type="application/json", expiration=within)
            try:
                await channel.default_exchange.publish(message, routing_key=partition_queue(self._instance, partition))
            except CONNECT_ERRORS as exc:
                raise CommandRouteError(repr(exc)) from None
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(answer, timeout=within)
            return None
        finally:
            self._waiting.pop(correlation, None)

    def _answered(self, message: AbstractIncomingMessage) -> None:
        answer = self._waiting.get(message.correlation_id or "")
        if answer is not None and not answer.done():
            answer.set_result(message.body)

    async def _serve(self, conn: Any) -> None:
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.close_callbacks.add(lambda *_: resolve(closed))
        channel = await conn.channel()
        await declare_partitions(channel, self._instance, self._partitions)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)

        async def on_reply(message: AbstractIncomingMessage) -> None:
            self._answered(message)

        await queue.consume(on_reply, no_ack=True)
        self._channel, self._reply_queue = channel, queue.name
        self.connected.set()
        self.last_error = None
        self._backoff.reset()
        await closed

    async def _run(self) -> None:
        await supervise(self._session, role="cluster_commands", backoff=self._backoff,
                        connection_errors=CONNECT_ERRORS, on_loss=self._lost)

    async def _session(self) -> None:
        conn = await connect(self._url, self._name)
        try:
            async with conn:
                await self._serve(conn)
        finally:
            self.connected.clear()
            self._channel = self._reply_queue = None

    def _lost(self, error: str) -> str:
        self.last_error = error
        return "cluster_commands_disconnected"
