"""AMQP 0-9-1 client listener (``amqp`` and ``rabbitmqclient``): consumes from a queue bound to a topic exchange.

One class serves both listener types (NuvIoT documents the same fields for both; RabbitMQ is the AMQP
0-9-1 server in practice). aio-pika for connection, declarations and consuming; our own reconnect loop
(full-jitter ``Backoff``, forever) instead of ``connect_robust``, so that acks of a dead connection are
never sent on a new one and ``status()`` says what is going on.

Decisions:

- **Where messages come from.** ``ExchangeName`` (default ``amq.topic``, the exchange RabbitMQ's MQTT
  plugin publishes to) is a topic exchange: declared durable unless its name starts with ``amq.`` (those
  exist already and may only be declared passively). The queue is ``Queue`` when configured, else
  ``nuviot.{instanceId}.{listenerKey}``; durable, not exclusive, not auto-deleted, so messages published
  while the runtime is stopped wait for it. Each ``AmqpSubscriptions`` entry binds it with that routing
  pattern (``*`` one word, ``#`` zero or more). ``/`` in a pattern is taken as the word separator and
  written as ``.`` (and a lone ``+`` word as ``*``), so patterns may be written like the topic locators.
- **Topic.** ``InboundMessage.topic`` is the routing key with ``.`` turned into ``/`` (``dev.42.motion`` ->
  ``dev/42/motion``), so the planner's topic locators work the same for MQTT and AMQP listeners; MQTT
  devices publishing through RabbitMQ's MQTT plugin get their own topic back. The raw routing key is in
  ``headers["amqp-routing-key"]``; ``content-type``, ``correlation-id``, ``reply-to`` and string-valued
  AMQP headers (names lower-cased) are there too.
- **Manual acknowledgement.** ``basic.ack`` is sent only when ``InboundMessage.ack`` is called (the
  dispatcher calls it once the record is committed); acks are queued and written by one task per
  connection, so ``ack`` never blocks. An ack for a connection that has ended is dropped: the broker has
  requeued the message and delivers it again (at least once). ``prefetch`` bounds the unacknowledged
  messages in flight (it must cover the commit latency times the message rate).
- **Refusal.** A message the intake refuses (full or paused) is counted and, after the intake has drained
  (up to ``redeliver_wait``) plus a short jittered delay, ``basic.nack(requeue=True)``: it comes back.
- **Oversized payloads** (``maxMessageSize``, else ``max_payload``) are rejected without requeue (a
  poison message; RabbitMQ dead-letters it if the queue has a dead-letter exchange), counted and logged.
- **Credentials.** ``UserName``/``Password`` unless anonymous; anonymous uses AMQP PLAIN with the broker
  default ``guest``/``guest`` (RabbitMQ accepts it only from localhost). Virtual host ``/``. TLS when
  ``SecureConnection`` (system CA store), port ``ConnectToPort`` or 5672 / 5671.
- **Replies** (original-listener transmitter) are published persistent, on this listener's connection:
  to ``ExchangeName`` with routing key ``out.topic`` (``/`` -> ``.``) when the outgoing message has one;
  else, when the incoming message has an AMQP ``reply-to``, to the default exchange with that routing key
  and its ``correlation-id`` (the usual AMQP RPC convention); else to ``ExchangeName`` with the incoming
  routing key + ``.reply``. A reply that one of our bindings matches is warned about once.
- **States**: ``connecting`` (first attempt and every retry; ``lastError`` says why), ``connected``,
  ``stopped``. A broker that is down at start is not a bind failure: ``start()`` returns after the first
  attempt and the listener keeps retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.connection import make_url
from aiormq.abc import DeliveredMessage
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory

from runtime.adapters.listeners.supervised import Outstanding, SupervisedListener
from runtime.core.backoff import Backoff
from runtime.core.errors import describe
from runtime.core.listener_state import ListenerState
from runtime.core.messages import InboundMessage, OutgoingMessage
from runtime.core.solution.model import Listener
from runtime.services.dataplane import Intake

log = structlog.get_logger(__name__)

DEFAULT_EXCHANGE = "amq.topic"
REPLY_SUFFIX = ".reply"
_OVERSIZE_LOG_EVERY = 10.0
_CONNECTION_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, OSError, asyncio.TimeoutError)



def binding_pattern(subscription: str) -> str:
    """An AMQP topic pattern from a subscription that may use ``/`` as separator and ``+`` as one word."""
    words = subscription.strip().replace("/", ".").split(".")
    return ".".join("*" if w == "+" else w for w in words)


def pattern_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more."""
    pat, key = pattern.split("."), routing_key.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(key)
        if pat[i] == "#":
            return any(match(i + 1, k) for k in range(j, len(key) + 1))
        return j < len(key) and pat[i] in ("*", key[j]) and match(i + 1, j + 1)

    return match(0, 0)


class _Transport(TransportFactory):
    """aiormq's TCP/TLS transport, remembering its stream so that we can close it.

    aiormq 6.9 leaves the stream open when the peer drops the TCP connection (its writer task ends without
    closing it): we close it ourselves once the session is over.
    """

    def __init__(self, tls: bool) -> None:
        self._inner: TransportFactory = TLSTransportFactory() if tls else TCPTransportFactory()
        self._writers: list[asyncio.StreamWriter] = []

    async def create(self, url: Any, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await self._inner.create(url, **kwargs)
        self._writers.append(writer)
        return reader, writer

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()


class _Connection(Outstanding):
    """Per-connection ack/nack bookkeeping; written out by ``_settle``. Dead connections drop their acks."""

    __slots__ = ("acks", "alive", "refused", "refused_event", "rejects", "wake")

    def __init__(self) -> None:
        super().__init__()  # outstanding: offered, not yet acknowledged
        self.alive = True
        self.acks: deque[int] = deque()
        self.rejects: deque[int] = deque()  # dropped without requeue (oversized)
        self.refused: list[int] = []  # to be nacked with requeue
        self.wake = asyncio.Event()
        self.refused_event = asyncio.Event()

    def acked(self, tag: int) -> None:
        if self.alive:
            self.acks.append(tag)
            self.wake.set()
        self._one_settled()


class _Ack:
    __slots__ = ("_conn", "_tag")

    def __init__(self, conn: _Connection, tag: int) -> None:
        self._conn: _Connection | None = conn
        self._tag = tag

    def __call__(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.acked(self._tag)


class _Reply:
    __slots__ = ("_correlation_id", "_listener", "_reply_to", "_routing_key")

    def __init__(self, listener: AmqpListener, routing_key: str, reply_to: str | None, correlation_id: str | None):
        self._listener = listener
        self._routing_key = routing_key
        self._reply_to = reply_to
        self._correlation_id = correlation_id

    def send(self, out: OutgoingMessage) -> None:
        lst = self._listener
        if out.topic:
            lst.enqueue_reply(lst.exchange_name, out.topic.replace("/", "."), out, None)
        elif self._reply_to:
            lst.enqueue_reply("", self._reply_to, out, self._correlation_id)
        else:
            lst.enqueue_reply(lst.exchange_name, self._routing_key + REPLY_SUFFIX, out, None)


class AmqpListener(SupervisedListener):
    _connection_errors = _CONNECTION_ERRORS  # a lost connection: reconnect after the backoff

    def __init__(
        self,
        config: Listener,
        *,
        instance_id: str,
        backoff_base: float = 0.2,
        backoff_cap: float = 30.0,
        prefetch: int = 500,
        max_payload: int = 256 * 1024,
        ack_wait: float = 2.0,
        redeliver_wait: float = 5.0,
        requeue_delay: float = 0.5,
        connect_timeout: float = 10.0,
        heartbeat: int = 30,
        reply_queue_size: int = 1000,
    ) -> None:
        kind = str(config.listener_type)
        if not config.host_name:
            raise ValueError(f"{kind} listener {config.key}: hostName is required")
        subs = [binding_pattern(s) for s in config.amqp_subscriptions if s.strip()]
        if not subs:
            raise ValueError(f"{kind} listener {config.key}: at least one AMQP subscription is required")
        if not config.anonymous and not config.user_name:
            raise ValueError(f"{kind} listener {config.key}: userName is required unless anonymous")
        self.key = config.key
        self.type = kind
        self._host = config.host_name
        self._tls = config.secure_connection
        self._port = config.connect_to_port or (5671 if self._tls else 5672)
        self._login = "guest" if config.anonymous or config.user_name is None else config.user_name
        self._password = "guest"
        if not config.anonymous:
            self._password = config.password.get_secret_value() if config.password is not None else ""
        self.exchange_name = config.exchange_name or DEFAULT_EXCHANGE
        self.queue_name = config.queue or f"nuviot.{instance_id}.{config.key}"
        self.bindings = subs
        self.connection_name = f"nuviot-runtime {instance_id}/{config.key}"
        self._prefetch = prefetch
        self._max_payload = config.max_message_size or max_payload
        self._ack_wait = ack_wait
        self._redeliver_wait = redeliver_wait
        self._connect_timeout = connect_timeout
        self._heartbeat = heartbeat
        self._init_supervision(backoff_base, backoff_cap)
        self._requeue_backoff = Backoff(base=requeue_delay, cap=max(requeue_delay, backoff_cap))
        self._replies: deque[tuple[str, str, OutgoingMessage, str | None]] = deque()
        self._reply_queue_size = reply_queue_size
        self._reply_wake = asyncio.Event()
        self._reply_loop_warned = False
        self._last_oversize_log = 0.0
        self.counters = {
            "received": 0,
            "refused": 0,
            "requeued": 0,
            "oversized": 0,
            "errors": 0,
            "reconnects": 0,
            "repliesSent": 0,
            "repliesFailed": 0,
            "repliesDropped": 0,
        }

    # ------------------------------------------------------------------ Listener protocol
    async def start(self, intake: Intake) -> None:
        await self._launch(intake)

    async def stop(self) -> None:
        await self._end(self._ack_wait + 2 * self._connect_timeout)

    def status(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "type": self.type,
            "state": self._state,
            "port": self._port,
            "host": self._host,
            "exchange": self.exchange_name,
            "queue": self.queue_name,
            "bindings": list(self.bindings),
            "connectionName": self.connection_name,
            "lastError": self.last_error,
            **self.counters,
        }

    # ------------------------------------------------------------------ hot path (sync consumer callback)
    def take(self, m: DeliveredMessage, conn: _Connection) -> None:
        try:
            delivery = m.delivery
            tag = delivery.delivery_tag  # type: ignore[union-attr]  # a consumer's delivery is a Basic.Deliver
            body = m.body
            if len(body) > self._max_payload:
                self._oversized(m, conn)
                return
            rk = delivery.routing_key or ""  # type: ignore[union-attr]  # a consumer's delivery is a Basic.Deliver
            props = m.header.properties
            headers = {"amqp-routing-key": rk}
            if props.content_type:
                headers["content-type"] = props.content_type
            if props.correlation_id:
                headers["correlation-id"] = str(props.correlation_id)
            if props.reply_to:
                headers["reply-to"] = props.reply_to
            for name, value in (props.headers or {}).items():
                if isinstance(value, str):
                    headers[name.lower()] = value
                elif isinstance(value, bytes):
                    headers[name.lower()] = value.decode("utf-8", "replace")
            msg = InboundMessage(self.key, body, rk.replace(".", "/"), headers=headers)
            msg.reply = _Reply(self, rk, props.reply_to, props.correlation_id)
            msg.ack = _Ack(conn, tag)  # type: ignore[arg-type]  # a Basic.Deliver's tag is an int
            if self._accepting and conn.alive and self._intake.offer(msg):  # type: ignore[union-attr]  # set by start(); hot path
                self.counters["received"] += 1
                conn.outstanding += 1
            else:
                self.counters["refused"] += 1
                if conn.alive:
                    conn.refused.append(tag)  # type: ignore[arg-type]  # a Basic.Deliver's tag is an int
                    conn.refused_event.set()
        except Exception as exc:  # one bad message must not break the connection
            self.counters["errors"] += 1
            log.error("listener_message_crashed", listener=self.key, error=describe(exc), exc_info=exc)

    def _oversized(self, m: DeliveredMessage, conn: _Connection) -> None:
        self.counters["oversized"] += 1
        if conn.alive:
            conn.rejects.append(m.delivery_tag)  # type: ignore[arg-type]  # a Basic.Deliver's tag is an int
            conn.wake.set()
        now = time.monotonic()
        if now - self._last_oversize_log >= _OVERSIZE_LOG_EVERY:
            self._last_oversize_log = now
            log.warning("message_refused_oversized", listener=self.key, routing_key=m.routing_key,
                        size=len(m.body), limit=self._max_payload, total=self.counters["oversized"])

    # ------------------------------------------------------------------ replies
    def enqueue_reply(self, exchange: str, routing_key: str, out: OutgoingMessage, correlation_id: str | None) -> None:
        if not self._runner.running or len(self._replies) >= self._reply_queue_size:
            self.counters["repliesDropped"] += 1
            return
        if exchange == self.exchange_name and not self._reply_loop_warned and any(
            pattern_matches(b, routing_key) for b in self.bindings
        ):
            self._reply_loop_warned = True
            log.warning("reply_routing_key_bound", listener=self.key, routing_key=routing_key)
        self._replies.append((exchange, routing_key, out, correlation_id))
        self._reply_wake.set()

    async def _publish_replies(self, channel: aio_pika.abc.AbstractChannel) -> None:
        replies = self._replies
        exchanges: dict[str, aio_pika.abc.AbstractExchange] = {"": channel.default_exchange}
        while True:
            if not replies:
                self._reply_wake.clear()
                await self._reply_wake.wait()
                continue
            exchange_name, routing_key, out, correlation_id = replies[0]
            message = aio_pika.Message(
                out.payload,
                content_type=out.content_type,
                correlation_id=correlation_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={k: v for k, v in out.headers} or None,
            )
            try:
                exchange = exchanges.get(exchange_name)
                if exchange is None:
                    exchange = exchanges[exchange_name] = await channel.get_exchange(exchange_name, ensure=False)
                await exchange.publish(message, routing_key, timeout=self._connect_timeout)
            except _CONNECTION_ERRORS:
                raise  # the connection is gone: keep the reply for the next one
            except Exception as exc:  # noqa: BLE001 - e.g. a bad header value: drop this reply
                replies.popleft()
                self.counters["repliesFailed"] += 1
                log.warning("reply_failed", listener=self.key, routing_key=routing_key, error=describe(exc))
                continue
            replies.popleft()
            self.counters["repliesSent"] += 1

    # ------------------------------------------------------------------ supervision (SupervisedListener._run)
    async def _connect(self, transport: _Transport) -> aio_pika.abc.AbstractConnection:
        url = make_url(host=self._host, port=self._port, login=self._login, password=self._password,
                       ssl=self._tls, name=self.connection_name, heartbeat=self._heartbeat)
        connection = aio_pika.Connection(url, ssl_context=ssl.create_default_context() if self._tls else None)
        connection.kwargs["transport_factory"] = transport  # handed on to aiormq.Connection
        await connection.connect(timeout=self._connect_timeout)
        return connection

    async def _session(self) -> None:
        """One connection: declare, bind, consume until the connection ends or stop is requested."""
        transport = _Transport(self._tls)
        try:
            connection = await self._connect(transport)
        except BaseException:
            transport.close()
            raise
        conn = _Connection()
        lost = asyncio.get_running_loop().create_future()

        def on_close(_sender: Any, exc: BaseException | None = None) -> None:
            if not lost.done():
                lost.set_result(exc)

        try:
            connection.close_callbacks.add(on_close)
            channel = await connection.channel()
            channel.close_callbacks.add(on_close)
            await channel.set_qos(prefetch_count=self._prefetch)
            if self.exchange_name.startswith("amq."):
                exchange = await channel.get_exchange(self.exchange_name, ensure=True)
            else:
                exchange = await channel.declare_exchange(self.exchange_name, aio_pika.ExchangeType.TOPIC,
                                                          durable=True)
            queue = await channel.declare_queue(self.queue_name, durable=True)
            for pattern in self.bindings:
                await queue.bind(exchange, routing_key=pattern)
            raw = await channel.get_underlay_channel()
            self._accepting = not self._runner.stop_requested.is_set()

            async def deliver(m: DeliveredMessage) -> None:  # aiormq runs each delivery as a task of its own
                self.take(m, conn)

            tag = (await raw.basic_consume(queue.name, deliver, no_ack=False)).consumer_tag
            if self.counters["received"] or self.last_error:
                self.counters["reconnects"] += 1
            self._set_state(ListenerState.CONNECTED)
            self.last_error = None
            self._backoff.reset()
            self._runner.attempted.set()
            log.info("listener_connected", listener=self.key, broker=f"{self._host}:{self._port}",
                     exchange=self.exchange_name, queue=self.queue_name, bindings=self.bindings)
            await self._serve(channel, raw, conn, lost)
            # stopping: no new deliveries, flush the acks of what was offered, then close
            self._accepting = False
            with contextlib.suppress(*_CONNECTION_ERRORS):
                if tag is not None:
                    await raw.basic_cancel(tag, timeout=self._ack_wait)
            if not await conn.settled(self._ack_wait):
                log.warning("listener_closed_with_unacked", listener=self.key, unacked=conn.outstanding)
            await self._write_settlements(raw, conn)
        finally:
            conn.alive = False
            self._accepting = False
            with contextlib.suppress(*_CONNECTION_ERRORS, RuntimeError):
                await asyncio.wait_for(connection.close(), timeout=self._connect_timeout)
            transport.close()

    async def _serve(self, channel: Any, raw: Any, conn: _Connection, lost: asyncio.Future[Any]) -> None:
        loop, name = asyncio.get_running_loop(), f"listener:{self.key}"
        settle = loop.create_task(self._settle(raw, conn), name=f"{name}:settle")
        requeue = loop.create_task(self._requeue(raw, conn), name=f"{name}:requeue")
        replies = loop.create_task(self._publish_replies(channel), name=f"{name}:replies")
        stop = loop.create_task(self._runner.stop_requested.wait(), name=f"{name}:stop")
        tasks = (settle, requeue, replies, stop, lost)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (settle, requeue, replies, stop):
                t.cancel()
            await asyncio.gather(settle, requeue, replies, stop, return_exceptions=True)
        for t in (settle, requeue, replies):
            if t in done:
                t.result()  # raises: the connection is gone
        if lost in done:
            exc = lost.result()
            raise exc if isinstance(exc, BaseException) else ConnectionError("the broker closed the connection")

    async def _write_settlements(self, raw: Any, conn: _Connection) -> None:
        while conn.acks:
            await raw.basic_ack(conn.acks.popleft(), wait=False)
        while conn.rejects:
            await raw.basic_reject(conn.rejects.popleft(), requeue=False)

    async def _settle(self, raw: Any, conn: _Connection) -> None:
        """Writes out acks (and rejects of poison messages) as ``InboundMessage.ack`` queues them."""
        while True:
            await conn.wake.wait()
            conn.wake.clear()
            await self._write_settlements(raw, conn)

    async def _requeue(self, raw: Any, conn: _Connection) -> None:
        """Nacks refused messages with requeue, once the intake has room again and after a short delay."""
        intake = self._intake
        assert intake is not None
        while True:
            await conn.refused_event.wait()
            await intake.drained(self._redeliver_wait)
            await asyncio.sleep(self._requeue_backoff.next_delay())
            conn.refused_event.clear()
            tags, conn.refused = conn.refused, []
            for tag in tags:
                await raw.basic_nack(tag, requeue=True, wait=False)
            self.counters["requeued"] += len(tags)
            if intake.accepting and len(intake) < intake.maxsize:
                self._requeue_backoff.reset()
