"""MQTT client listener (``mqttclient``): subscribes on a third-party broker and offers each message to the intake.

Hot path. On the fast path (``mqtt_fastpath.py``: paho's internals, version-checked at import) paho's
socket is read in big chunks, PUBLISH packets are decoded there and each one goes straight to
``take_raw``/``take_paho``: no await per message. Where the fast path is unavailable (untested paho or
aiomqtt, or ``NUVIOT_MQTT_FASTPATH=0``) the listener runs on plain aiomqtt: ``async for message in
client.messages`` into ``take``. Both modes give the same guarantees; the suite runs every listener test in
both.

Decisions (read these before changing anything):

- **QoS 1 is acknowledged once the message is recorded.** paho's automatic PUBACK is off
  (``mqtt_fastpath.manual_ack``); ``InboundMessage.ack`` sends the PUBACK and the dispatcher calls it after
  the message's record is committed. An ack for a connection that has since ended is dropped (a fresh
  client is used per connection, so a stale message id can never acknowledge a different message).
- **A message refused at the intake (full or paused) is counted and not acknowledged.** The broker
  only redelivers on a new connection, and an unacknowledged message holds one slot of the broker's
  in-flight window (mosquitto's default is 20: a few refusals would stall QoS 1 delivery for good). So
  after a QoS>=1 refusal the listener waits until the intake has drained (bounded), waits a jittered
  delay, closes the connection cleanly and reconnects: the broker then redelivers what was refused.
  QoS 0 messages that are refused are lost (counted). On the fast path a filling intake first parks the
  socket (TCP pushes back on the broker), so refusals are rare there.
- **Persistent session** (``clean_session=False``) by default: the client id is stable (configured, or
  ``{instanceId}-{listenerKey}``). **stop() and pause never unsubscribe**: the session and its
  subscriptions stay at the broker, which queues the QoS 1 messages published while the instance is
  stopped, paused or restarting and delivers them on the next start (reliability.md). Two runtimes sharing
  an instance id would share (and fight over) the same client id; give each instance its own id. A
  subscription removed from the solution stays in the broker's session until the session expires
  (mosquitto ``persistent_client_expiration``) or the client id changes. ``clean_session=True`` can be
  forced; then refused QoS 1 messages and those published while stopped are lost.
- **Delivery is at least once.** A message recorded but whose ack could not be sent (connection lost
  in between, or a stop that waited ``ack_wait`` in vain) is redelivered and recorded again.
- **QoS 2 subscriptions are made at QoS 1.** paho keeps QoS 2 receive state in the client object only,
  and the QoS 2 handshake hands a message over at PUBREC, before we could record it; at-least-once
  with ack-after-record is the stronger guarantee here.
- **Oversized payloads** (``maxMessageSize`` of the listener, else ``max_payload``) are counted, logged
  (rate-limited) and acknowledged without being offered: redelivering them could never succeed.
- **A hung broker** (process stopped, TCP still open) is noticed within one keep-alive period: when
  nothing arrived for a quarter of it, an UNSUBSCRIBE of a filter we never subscribed (a no-op at the
  broker) must be answered within half of it, else the connection is dropped (``disconnected``) and
  re-made with backoff. paho's own keep-alive would take up to two periods.
- **Replies** (original-listener transmitter): ``InboundMessage.reply.send(out)`` enqueues a publish of
  ``out.payload`` to ``out.topic``, or, when the outgoing message has no topic, to the incoming topic +
  ``/reply`` (the convention of the command channel, CONTRACT §5), at QoS 1 on this listener's
  connection. A reply that matches one of our own subscriptions is still sent (the device side may
  expect it) but warned about once, since it comes back to us as a device message.
- **Readiness.** A broker that is down at start is not a bind failure: ``start()`` returns after the
  first attempt with state ``connecting`` and keeps retrying with full-jitter backoff, forever; ``/ready``
  reports such a listener as not up.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.client import MQTTMessage, topic_matches_sub

from runtime.adapters.listeners.mqtt_fastpath import (
    MANUAL_ACK_PROBLEM,
    FastPath,
    fastpath_enabled,
    manual_ack,
)
from runtime.adapters.listeners.supervised import Outstanding, SupervisedListener
from runtime.adapters.mqtt_client import broker_of, close_client, enter_client, make_client
from runtime.adapters.supervision import Outcome
from runtime.core.backoff import Backoff
from runtime.core.errors import describe
from runtime.core.listener_state import ListenerState
from runtime.core.messages import InboundMessage, OutgoingMessage
from runtime.core.solution.model import Listener
from runtime.services.dataplane import Intake

log = structlog.get_logger(__name__)
_MQTT_LOGGER = logging.getLogger(__name__ + ".aiomqtt")

REPLY_SUFFIX = "/reply"
_NONE: Mapping[str, str] = MappingProxyType({})  # an MQTT message's headers and query: none (shared, read-only)
if tuple(InboundMessage.__dataclass_fields__)[:9] != (  # _deliver passes these by position (keywords cost more)
    "listener", "payload", "topic", "path", "method", "headers", "query", "from_address", "reply",
):  # pragma: no cover - a guard for whoever reorders InboundMessage
    raise ImportError("runtime.core.messages.InboundMessage changed: update MqttClientListener._deliver")
_REPLIES_MAX = 4096  # reply channels kept per listener (one per topic; dropped all at once when full)
PROBE_FILTER = "nuviot-runtime/keepalive-probe"  # unsubscribed (never subscribed) to see that the broker answers
_OVERSIZE_LOG_EVERY = 10.0  # seconds between two oversized-payload warnings


class _Connection(Outstanding):
    """Per-connection ack bookkeeping. Acks for a connection that has ended are dropped."""

    __slots__ = ("_ack", "alive", "fast", "refused", "refused_event")

    def __init__(self) -> None:
        super().__init__()  # outstanding: QoS>=1 messages offered and not yet acknowledged
        self._ack: Callable[[int, int], Any] | None = None  # paho's ack(mid, qos), bound once the client exists
        self.fast: FastPath | None = None
        self.alive = True
        self.refused = 0  # QoS>=1 messages refused (not acknowledged) on this connection
        self.refused_event = asyncio.Event()

    def bind(self, ack: Callable[[int, int], Any]) -> None:
        self._ack = ack

    def ack(self, mid: int, qos: int) -> None:
        if self.alive:
            self._ack(mid, qos)  # type: ignore[misc]  # bind() sets it before the connection delivers anything

    def acked(self, mid: int, qos: int) -> None:
        if self.alive:
            self._ack(mid, qos)  # type: ignore[misc]  # bind() sets it before the connection delivers anything
        self._one_settled()

    def end(self) -> None:
        self.alive = False
        if self.fast is not None:
            self.fast.alive = False


class _Ack:
    """``InboundMessage.ack`` for one QoS>=1 message: sends its PUBACK once."""

    __slots__ = ("_conn", "_mid", "_qos")

    def __init__(self, conn: _Connection, mid: int, qos: int) -> None:
        self._conn: _Connection | None = conn
        self._mid = mid
        self._qos = qos

    def __call__(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.acked(self._mid, self._qos)


class _Reply:
    """``InboundMessage.reply`` for one MQTT message (original-listener transmitter)."""

    __slots__ = ("_listener", "_topic")

    def __init__(self, listener: MqttClientListener, topic: str) -> None:
        self._listener = listener
        self._topic = topic

    def send(self, out: OutgoingMessage) -> None:
        self._listener.enqueue_reply(out.topic or self._topic + REPLY_SUFFIX, out.payload)


class MqttClientListener(SupervisedListener):
    type = "mqttclient"
    _connection_errors = (aiomqtt.MqttError,)  # a lost connection: reconnect after the backoff

    def __init__(
        self,
        config: Listener,
        *,
        instance_id: str,
        backoff_base: float = 0.2,
        backoff_cap: float = 30.0,
        max_payload: int = 256 * 1024,
        clean_session: bool = False,
        ack_wait: float = 2.0,
        redeliver_wait: float = 5.0,
        connect_timeout: float = 10.0,
        keepalive: int = 30,
        reply_queue_size: int = 1000,
        fast_path: bool = True,
    ) -> None:
        if MANUAL_ACK_PROBLEM is not None:  # at-least-once needs it; see mqtt_fastpath.py
            raise ValueError(f"mqttclient listener {config.key}: {MANUAL_ACK_PROBLEM}")
        self._broker = broker_of(config)
        subs = [s for s in config.mqtt_subscriptions if s.topic.strip()]
        if not subs:
            raise ValueError(f"mqttclient listener {config.key}: at least one subscription is required")
        self.key = config.key
        self._host = self._broker.host
        self._port = self._broker.port
        self.client_id = config.client_id or f"{instance_id}-{config.key}"
        self._subscriptions = [(s.topic, min(s.qos.level, 1)) for s in subs]
        self._max_payload = config.max_message_size or max_payload
        self._clean_session = clean_session
        self._ack_wait = ack_wait
        self._redeliver_wait = redeliver_wait
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._fast_path = fastpath_enabled(fast_path)
        self._init_supervision(backoff_base, backoff_cap)
        self._redeliver_backoff = Backoff(base=max(backoff_base, 0.5), cap=backoff_cap)
        self._replies: deque[tuple[str, bytes]] = deque()
        self._reply_channels: dict[str, _Reply] = {}  # topic -> its reply channel (immutable, shared)
        self._reply_queue_size = reply_queue_size
        self._reply_wake = asyncio.Event()
        self._reply_loop_warned = False
        self._ever_connected = False
        self._last_oversize_log = 0.0
        self.counters = {
            "received": 0,
            "refused": 0,
            "oversized": 0,
            "errors": 0,
            "redeliveries": 0,
            "repliesSent": 0,
            "repliesFailed": 0,
            "repliesDropped": 0,
        }

    # ------------------------------------------------------------------ Listener protocol
    async def start(self, intake: Intake) -> None:
        self._ever_connected = False
        await self._launch(intake)

    async def stop(self) -> None:
        await self._end(2 * self._ack_wait + self._connect_timeout)  # settle acks, disconnect

    def status(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "type": self.type,
            "state": self._state,
            "port": self._port,
            "host": self._host,
            "clientId": self.client_id,
            "fastPath": self._fast_path,
            "lastError": self.last_error,
            **self.counters,
        }

    # ------------------------------------------------------------------ hot path
    def _reading_allowed(self) -> bool:
        """Fast path: read more from the socket only while the intake is below a quarter full.

        Not accepting (stopping, either side): read, so that what arrives is refused and counted. A worker
        stuck for longer than the keep-alive lets the broker drop the connection: QoS 1 messages are then
        redelivered on the next one.
        """
        intake = self._intake
        return intake is None or not self._accepting or not intake.accepting or intake.has_room

    def _deliver(self, topic: str, payload: bytes, qos: int, mid: int, conn: _Connection) -> None:
        """One message into the intake (what every ``take`` shares); a QoS>=1 message refused here is not
        acknowledged, so the broker delivers it again."""
        reply = self._reply_channels.get(topic)
        if reply is None:
            if len(self._reply_channels) >= _REPLIES_MAX:
                self._reply_channels.clear()
            reply = self._reply_channels[topic] = _Reply(self, topic)
        msg = InboundMessage(self.key, payload, topic, None, None, _NONE, _NONE, None, reply)
        if qos:
            msg.ack = _Ack(conn, mid, qos)
        if self._accepting and self._intake.offer(msg):  # type: ignore[union-attr]  # set by start(); hot path
            self.counters["received"] += 1
            if qos:
                conn.outstanding += 1
        else:
            self.counters["refused"] += 1
            if qos:
                conn.refused += 1
                conn.refused_event.set()

    def take(self, m: aiomqtt.Message, conn: _Connection) -> None:
        """Fallback: one message from ``client.messages``."""
        try:
            payload = m.payload
            if not isinstance(payload, bytes):  # aiomqtt types it loosely; paho gives bytes
                payload = str(payload).encode()
            if len(payload) > self._max_payload:
                self._oversized(m.topic.value, len(payload), m.qos, m.mid, conn)
                return
            self._deliver(m.topic.value, payload, m.qos, m.mid, conn)
        except Exception as exc:  # noqa: BLE001 - logged; one bad message must not break the connection
            self._crashed(exc)

    def take_raw(self, conn: _Connection, topic: bytes, payload: bytes, qos: int, mid: int) -> None:
        """Fast path: a PUBLISH decoded by ``mqtt_fastpath`` (no paho message built)."""
        if len(payload) > self._max_payload or not topic.isascii():  # rare: paho's message, paho's checks
            m = MQTTMessage(mid, topic)
            m.qos = qos
            m.payload = payload
            self.take_paho(m, conn)
            return
        try:
            self._deliver(topic.decode("ascii"), payload, qos, mid, conn)
        except Exception as exc:  # noqa: BLE001 - logged; one bad message must not break the connection
            self._crashed(exc)

    def take_paho(self, m: Any, conn: _Connection) -> None:
        """Fast path: paho's own ``MQTTMessage`` (``topic`` is a decoded str there)."""
        try:
            payload = m.payload
            if len(payload) > self._max_payload:
                self._oversized(m.topic, len(payload), m.qos, m.mid, conn)
                return
            self._deliver(m.topic, payload, m.qos, m.mid, conn)
        except Exception as exc:  # noqa: BLE001 - logged; e.g. a topic that is not UTF-8
            self._crashed(exc)

    def _crashed(self, exc: Exception) -> None:
        self.counters["errors"] += 1
        log.error("listener_message_crashed", listener=self.key, error=describe(exc), exc_info=exc)

    def _oversized(self, topic: str, size: int, qos: int, mid: int, conn: _Connection) -> None:
        self.counters["oversized"] += 1
        if qos:
            conn.ack(mid, qos)  # a poison message: redelivery could never succeed
        now = time.monotonic()
        if now - self._last_oversize_log >= _OVERSIZE_LOG_EVERY:
            self._last_oversize_log = now
            log.warning("message_refused_oversized", listener=self.key, topic=topic, size=size,
                        limit=self._max_payload, total=self.counters["oversized"])

    # ------------------------------------------------------------------ replies
    def enqueue_reply(self, topic: str, payload: bytes) -> None:
        if not self._runner.running or len(self._replies) >= self._reply_queue_size:
            self.counters["repliesDropped"] += 1
            return
        if not self._reply_loop_warned and any(topic_matches_sub(f, topic) for f, _ in self._subscriptions):
            self._reply_loop_warned = True
            log.warning("reply_topic_subscribed", listener=self.key, topic=topic)
        self._replies.append((topic, payload))
        self._reply_wake.set()

    async def _publish_replies(self, client: aiomqtt.Client) -> None:
        replies = self._replies
        while True:
            if not replies:
                self._reply_wake.clear()
                await self._reply_wake.wait()
                continue
            topic, payload = replies[0]
            try:
                await client.publish(topic, payload, qos=1)
            except aiomqtt.MqttError:
                raise  # the connection is gone: keep the reply for the next connection
            except Exception as exc:  # noqa: BLE001 - e.g. an invalid topic: drop this one reply
                replies.popleft()
                self.counters["repliesFailed"] += 1
                log.warning("reply_failed", listener=self.key, topic=topic, error=describe(exc))
                continue
            replies.popleft()
            self.counters["repliesSent"] += 1

    # ------------------------------------------------------------------ supervision (supervise() runs _session)
    def _after_loss(self) -> tuple[ListenerState, str]:
        if self._ever_connected:
            return ListenerState.DISCONNECTED, "listener_disconnected"
        return ListenerState.CONNECTING, "listener_connect_failed"

    def _make_client(self, conn: _Connection) -> aiomqtt.Client:
        client = make_client(self._broker, client_id=self.client_id, clean_session=self._clean_session,
                             keepalive=self._keepalive, timeout=self._connect_timeout, logger=_MQTT_LOGGER)
        conn.bind(manual_ack(client))
        if self._fast_path:
            intake = self._intake
            assert intake is not None
            take_paho = self.take_paho

            def take_message(m: Any) -> None:
                take_paho(m, conn)

            # one call per decoded PUBLISH: a partial (C) rather than a closure (a Python frame more)
            conn.fast = FastPath.install(client, take_message=take_message, take=functools.partial(self.take_raw, conn),
                                         reading_allowed=self._reading_allowed,
                                         call_when_room=intake.call_when_room)
        return client

    async def _session(self) -> Outcome:
        """One connection. Returns STOPPED or AGAIN (redeliver); raises ``MqttError`` when the connection is lost."""
        conn = _Connection()
        client = self._make_client(conn)
        # open before CONNACK: a persistent session's pending messages arrive before our SUBSCRIBE is acked
        self._accepting = not self._runner.stop_requested.is_set()
        await enter_client(client, self._connect_timeout, name=f"listener:{self.key}:connect")
        started = time.monotonic()
        try:
            return await self._serve(client, conn)
        finally:
            conn.end()
            self._accepting = False
            if time.monotonic() - started > 10 * self._redeliver_backoff.base:
                self._redeliver_backoff.reset()
            await close_client(client, self._connect_timeout)
            if self._state is ListenerState.CONNECTED:  # with no await before supervise's on_loss sets lastError
                self._set_state(ListenerState.DISCONNECTED)

    async def _serve(self, client: aiomqtt.Client, conn: _Connection) -> Outcome:
        for topic, qos in self._subscriptions:
            codes = await client.subscribe(topic, qos=qos)
            if any(getattr(code, "value", code) >= 0x80 for code in codes):
                raise aiomqtt.MqttError(f"the broker refused the subscription to {topic}")
        self._set_state(ListenerState.CONNECTED)
        self._ever_connected = True
        self.last_error = None
        self._backoff.reset()
        self._runner.attempted.set()
        log.info("listener_connected", listener=self.key, broker=f"{self._host}:{self._port}",
                 client_id=self.client_id, subscriptions=[t for t, _ in self._subscriptions],
                 fast_path=self._fast_path)
        loop = asyncio.get_running_loop()
        name = f"listener:{self.key}"
        consume = loop.create_task(self._consume(client, conn), name=f"{name}:consume")
        replies = loop.create_task(self._publish_replies(client), name=f"{name}:replies")
        liveness = loop.create_task(self._liveness(client, conn), name=f"{name}:liveness")
        stop = loop.create_task(self._runner.stop_requested.wait(), name=f"{name}:stop")
        redeliver = loop.create_task(self._redelivery_wanted(conn), name=f"{name}:redeliver")
        tasks = (consume, replies, liveness, stop, redeliver)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in (consume, replies, liveness):
            if t in done:
                t.result()  # raises MqttError: the connection is gone
        await self._close(conn)
        if stop in done or self._runner.stop_requested.is_set():
            return Outcome.STOPPED
        self.counters["redeliveries"] += 1
        log.info("listener_reconnecting_for_redelivery", listener=self.key, refused=conn.refused)
        return Outcome.AGAIN

    async def _consume(self, client: aiomqtt.Client, conn: _Connection) -> None:
        """Fallback: every message into ``take``. Fast path: never yields (the fast path offers everything
        itself), only raises ``MqttError`` once the connection is gone."""
        take = self.take
        async for m in client.messages:
            take(m, conn)

    def _activity(self) -> int:
        c = self.counters
        return c["received"] + c["refused"] + c["oversized"] + c["errors"]

    async def _liveness(self, client: aiomqtt.Client, conn: _Connection) -> None:
        """Raises ``MqttError`` once the broker stops answering (hung, not closed): see the module's decisions."""
        period, answer_within = self._keepalive / 4, self._keepalive / 2
        seen = self._activity()
        while True:
            await asyncio.sleep(period)
            fast = conn.fast
            now = self._activity()
            if now != seen or (fast is not None and fast.parked):
                seen = now  # messages came, or we are not reading by choice: nothing to learn from silence
                continue
            parks = fast.parks if fast is not None else 0
            try:
                await client.unsubscribe(PROBE_FILTER, timeout=answer_within)
            except aiomqtt.MqttError as exc:
                if fast is not None and (fast.parked or fast.parks != parks):
                    seen = self._activity()  # the answer may wait in the kernel while we do not read
                    continue
                raise aiomqtt.MqttError(f"the broker did not answer within {answer_within:g}s "
                                        f"(keep-alive {self._keepalive}s): {describe(exc)}") from exc
            seen = self._activity()

    async def _redelivery_wanted(self, conn: _Connection) -> None:
        """Returns when refused QoS>=1 messages should be fetched again by reconnecting."""
        await conn.refused_event.wait()
        intake = self._intake
        assert intake is not None
        await intake.drained(self._redeliver_wait)
        if not intake.accepting:  # the data plane is stopping us: stop() comes next
            await self._runner.stop_requested.wait()
        await asyncio.sleep(self._redeliver_backoff.next_delay())

    async def _close(self, conn: _Connection) -> None:
        """Refuse new messages and wait for the acks of offered ones; the caller disconnects. Never
        unsubscribes: the persistent session keeps the subscriptions and the broker queues for us."""
        self._accepting = False
        if conn.fast is not None:
            conn.fast.resume()  # parked for room: read again (refusing), so the connection can close cleanly
        if not await conn.settled(self._ack_wait):
            log.warning("listener_closed_with_unacked", listener=self.key, unacked=conn.outstanding)
