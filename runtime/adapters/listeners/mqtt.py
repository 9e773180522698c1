"""MQTT client listener (``mqttclient``): subscribes on a third-party broker and offers each message to the intake.

Hot path. paho decodes a PUBLISH and aiomqtt puts it into its queue; our queue class (``queue_type``)
turns ``put_nowait`` into "build the ``InboundMessage`` and ``intake.offer()`` it", so nothing waits in
aiomqtt's queue and there is no await per message in our code. ``client.messages`` is still iterated,
only to learn that the connection is gone (aiomqtt raises ``MqttError`` then).

Decisions (read these before changing anything):

- **QoS 1 is acknowledged once the message is recorded.** paho's automatic PUBACK is off
  (``manual_ack_set(True)``); ``InboundMessage.ack`` sends the PUBACK and the dispatcher calls it after the
  message's record is committed. An ack for a connection that has since ended is dropped (a fresh paho
  client is used per connection, so a stale message id can never acknowledge a different message).
- **A message refused at the intake (full or paused) is counted and not acknowledged.** The broker
  only redelivers on a new connection, and an unacknowledged message holds one slot of the broker's
  in-flight window (mosquitto's default is 20: a few refusals would stall QoS 1 delivery for good). So
  after a QoS>=1 refusal the listener waits until the intake has drained (bounded), waits a jittered
  delay, closes the connection cleanly and reconnects: the broker then redelivers what was refused.
  This is backpressure by reconnection; QoS 0 messages that are refused are lost (counted).
- **Persistent session** (``clean_session=False``) by default: the client id is stable (configured, or
  ``{instanceId}-{listenerKey}``), and redelivery after a reconnect or a restart needs the session. Two
  runtimes sharing an instance id would share (and fight over) the same client id; give each instance
  its own id. ``clean_session=True`` can be forced; then refused QoS 1 messages are lost on reconnect.
- **Delivery is at least once.** A message recorded but whose ack could not be sent (connection lost
  in between, or a stop that waited ``ack_wait`` in vain) is redelivered and recorded again.
- **QoS 2 subscriptions are made at QoS 1.** paho keeps QoS 2 receive state in the client object only,
  and the QoS 2 handshake hands a message over at PUBREC, before we could record it; at-least-once
  with ack-after-record is the stronger guarantee here.
- **Oversized payloads** (``maxMessageSize`` of the listener, else ``max_payload``) are counted, logged
  (rate-limited) and acknowledged without being offered: redelivering them could never succeed.
- **stop()**: refuse new messages, wait (up to ``ack_wait``) for the acks of messages already offered,
  unsubscribe, disconnect. Messages published while the listener is stopped or paused are therefore
  not kept for it; messages it received but did not record are redelivered on the next start (as long
  as the broker keeps the session).
- **Replies** (original-listener transmitter): ``InboundMessage.reply.send(out)`` enqueues a publish of
  ``out.payload`` to ``out.topic``, or, when the outgoing message has no topic, to the incoming topic +
  ``/reply`` (the convention of the command channel, CONTRACT §5), at QoS 1 on this listener's
  connection. A reply that matches one of our own subscriptions is still sent (the device side may
  expect it) but warned about once, since it comes back to us as a device message.
- **Readiness.** A broker that is down at start is not a bind failure: ``start()`` returns after the
  first attempt with state ``connecting`` and keeps retrying with full-jitter backoff, forever; ``/ready``
  reports such a listener as not up.
- A fresh ``aiomqtt.Client`` per connection attempt (not the re-entered one STYLE §3 suggests): after an
  unexpected disconnect aiomqtt 2.5 leaves ``_connected`` resolved, so re-entering returns before the
  broker's CONNACK (same finding as ``adapters/command/mqtt.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.client import MQTTMessage, MQTTv5, topic_matches_sub

from runtime.adapters.listeners.supervised import Outstanding, SupervisedListener
from runtime.core.backoff import Backoff
from runtime.core.errors import describe
from runtime.core.messages import InboundMessage, OutgoingMessage
from runtime.core.solution.model import Listener
from runtime.services.dataplane import Intake

log = structlog.get_logger(__name__)
_MQTT_LOGGER = logging.getLogger(__name__ + ".aiomqtt")

REPLY_SUFFIX = "/reply"
_OVERSIZE_LOG_EVERY = 10.0  # seconds between two oversized-payload warnings
_READ_SIZE = 32 * 1024  # bytes per socket read (at most ~6,500 minimal PUBLISH packets)



async def enter_client(client: aiomqtt.Client, cancel_grace: float, *, name: str) -> None:
    """``await client.__aenter__()``, safe to cancel.

    aiomqtt connects in a worker thread that cancellation cannot stop; on cancellation the attempt is let
    end (bounded by ``cancel_grace`` seconds) and what it opened is closed, so no socket reader or paho task is left.
    """
    entering = asyncio.get_running_loop().create_task(client.__aenter__(), name=name)
    try:
        await asyncio.shield(entering)
    except asyncio.CancelledError:
        try:
            async with asyncio.timeout(cancel_grace):
                await entering
        except (aiomqtt.MqttError, TimeoutError):
            pass
        else:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
        raise


class _Connection(Outstanding):
    """Per-connection ack bookkeeping. Acks for a connection that has ended are dropped."""

    __slots__ = ("_paho", "alive", "refused", "refused_event", "resume_reading")

    def __init__(self) -> None:
        super().__init__()  # outstanding: QoS>=1 messages offered and not yet acknowledged
        self._paho: Any = None  # the connection's paho client, bound once it exists
        self.resume_reading: Callable[[], None] | None = None  # set while the socket is off the loop
        self.alive = True
        self.refused = 0  # QoS>=1 messages refused (not acknowledged) on this connection
        self.refused_event = asyncio.Event()

    def bind(self, paho: Any) -> None:
        self._paho = paho

    def ack(self, mid: int, qos: int) -> None:
        if self.alive:
            self._paho.ack(mid, qos)

    def acked(self, mid: int, qos: int) -> None:
        if self.alive:
            self._paho.ack(mid, qos)
        self._one_settled()


class _Ack:
    """``InboundMessage.ack`` for one QoS>=1 message: sends its PUBACK once."""

    __slots__ = ("_conn", "_mid", "_qos")

    def __init__(self, conn: _Connection, mid: int, qos: int) -> None:
        self._conn = conn
        self._mid = mid
        self._qos = qos

    def __call__(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None  # type: ignore[assignment]
            conn.acked(self._mid, self._qos)


class _Reply:
    """``InboundMessage.reply`` for one MQTT message (original-listener transmitter)."""

    __slots__ = ("_listener", "_topic")

    def __init__(self, listener: MqttClientListener, topic: str) -> None:
        self._listener = listener
        self._topic = topic

    def send(self, out: OutgoingMessage) -> None:
        self._listener.enqueue_reply(out.topic or self._topic + REPLY_SUFFIX, out.payload)


class _BufferedSocket:
    """paho's socket, read in big chunks: the listener's one change to how paho reads (hot path).

    paho reads a packet with three ``recv`` calls (command byte, length byte, rest) and, for QoS 0, aiomqtt
    handles one packet per readable event: ~3 syscalls and one event-loop turn per message. This wrapper
    reads up to ``_READ_SIZE`` bytes at once and serves paho's small reads from that buffer; ``pending()``
    (the hook aiomqtt's reader already loops on for TLS) makes aiomqtt call ``loop_read`` until the buffer
    is used up. ``gate()`` false (the intake is filling up) makes an empty buffer look like "no data yet"
    without reading: the bytes stay in the kernel and TCP pushes back on the broker. The gate also takes
    the socket off the event loop until the intake has room again (``MqttClientListener._make_client``):
    a readable socket left on it would wake the loop on every turn, for nothing, while the worker waits
    for the store (that spinning took a fifth of the loop thread's time at full load).
    """

    __slots__ = ("_blocked", "_buf", "_gate", "_pos", "_sock")

    def __init__(self, sock: Any, gate: Any) -> None:
        self._sock = sock
        self._gate = gate
        self._buf = b""
        self._pos = 0
        self._blocked = False  # the gate said no: bytes a TLS layer holds are not "pending" for aiomqtt

    def recv(self, n: int) -> bytes:
        pos = self._pos
        buf = self._buf
        if pos >= len(buf):
            if not self._gate():
                self._blocked = True
                raise BlockingIOError
            self._blocked = False
            data = self._sock.recv(_READ_SIZE if n < _READ_SIZE else n)
            if len(data) <= n:
                self._buf, self._pos = b"", 0
                return data
            self._buf, self._pos = data, n
            return data[:n]
        end = pos + n
        self._pos = end
        return buf[pos:end]

    def pending(self) -> int:
        inner = None if self._blocked else getattr(self._sock, "pending", None)
        return len(self._buf) - self._pos + (inner() if inner is not None else 0)

    def drain_publishes(self, take: Any) -> int:
        """Decode the complete MQTT 3.1.1 PUBLISH packets (QoS 0/1) at the head of the buffer, in order.

        ``take(topic_bytes, payload, qos, mid)`` is called for each. Stops at the first packet that is not
        one (any other packet type, QoS 2, a malformed or incomplete one): paho reads that one itself,
        through ``recv``, exactly as before. Returns how many were taken. Only to be called between paho's
        packets (paho's partial-packet state empty), or the bytes would belong to paho's packet.
        """
        buf = self._buf
        pos = self._pos
        size = len(buf)
        taken = 0
        while size - pos >= 4:  # header, 1 length byte, 2 topic length bytes: the smallest PUBLISH
            header = buf[pos]
            if header >> 4 != 3:
                break
            qos = (header >> 1) & 3
            if qos > 1:
                break
            i = pos + 1
            remaining = 0
            shift = 0
            while True:  # the remaining length: 1 to 4 bytes, 7 bits each
                if i >= size or shift > 21:
                    remaining = -1
                    break
                byte = buf[i]
                remaining |= (byte & 127) << shift
                i += 1
                if byte < 128:
                    break
                shift += 7
            if remaining < 0:
                break  # incomplete, or a length paho will call malformed
            end = i + remaining
            if end > size:
                break  # incomplete: paho waits for the rest
            topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1]) if remaining >= 2 else end + 1
            start = topic_end + 2 if qos else topic_end
            if topic_end == i + 2 or start > end:
                break  # empty topic or lengths past the packet: malformed, paho's to report
            mid = ((buf[topic_end] << 8) | buf[topic_end + 1]) if qos else 0
            self._pos = pos = end
            take(buf[i + 2 : topic_end], buf[start:end], qos, mid)
            taken += 1
        return taken

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _intake_queue_type(listener: MqttClientListener, conn: _Connection) -> type[asyncio.Queue[aiomqtt.Message]]:
    """An ``asyncio.Queue`` whose ``put_nowait`` offers the message to the intake (aiomqtt's ``queue_type``)."""

    class IntakeQueue(asyncio.Queue):  # type: ignore[type-arg]
        def put_nowait(self, item: aiomqtt.Message) -> None:
            listener.take(item, conn)

    return IntakeQueue


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
    ) -> None:
        if not config.host_name:
            raise ValueError(f"mqttclient listener {config.key}: hostName is required")
        subs = [s for s in config.mqtt_subscriptions if s.topic.strip()]
        if not subs:
            raise ValueError(f"mqttclient listener {config.key}: at least one subscription is required")
        self.key = config.key
        self._host = config.host_name
        self._port = config.connect_to_port or (8883 if config.secure_connection else 1883)
        self._tls = config.secure_connection
        self._username = None if config.anonymous else config.user_name
        self._password = None
        if not config.anonymous and config.password is not None:
            self._password = config.password.get_secret_value()
        self.client_id = config.client_id or f"{instance_id}-{config.key}"
        self._subscriptions = [(s.topic, min(s.qos.level, 1)) for s in subs]
        self._max_payload = config.max_message_size or max_payload
        self._clean_session = clean_session
        self._ack_wait = ack_wait
        self._redeliver_wait = redeliver_wait
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._backoff = Backoff(base=backoff_base, cap=backoff_cap)
        self._redeliver_backoff = Backoff(base=max(backoff_base, 0.5), cap=backoff_cap)
        self._replies: deque[tuple[str, bytes]] = deque()
        self._reply_queue_size = reply_queue_size
        self._reply_wake = asyncio.Event()
        self._reply_loop_warned = False

        self._intake: Intake | None = None
        self._accepting = False
        self._conn: _Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self._state = "stopped"
        self._ever_connected = False
        self.last_error: str | None = None
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
        await self._end(2 * self._ack_wait + self._connect_timeout)  # settle acks, unsubscribe, disconnect

    def status(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "type": self.type,
            "state": self._state,
            "port": self._port,
            "host": self._host,
            "clientId": self.client_id,
            "lastError": self.last_error,
            **self.counters,
        }

    # ------------------------------------------------------------------ hot path (called by paho via put_nowait)
    def _reading_allowed(self) -> bool:
        """Read more from the socket only while the intake is below a quarter full (see _BufferedSocket).

        Not accepting (stopping, either side): read, so that what arrives is refused and counted as before
        and the UNSUBACK of a stopping listener is seen. A worker stuck for longer than the keep-alive (30 s)
        lets the broker drop the connection: QoS 1 messages are then redelivered on the next one.
        """
        intake = self._intake
        return intake is None or not self._accepting or not intake.accepting or intake.has_room

    def _deliver(self, topic: str, payload: bytes, qos: int, mid: int, conn: _Connection) -> None:
        """One message into the intake (what ``take``, ``take_raw`` and ``take_paho`` share); a QoS>=1
        message refused here is not acknowledged, so the broker delivers it again."""
        msg = InboundMessage(self.key, payload, topic)
        msg.reply = _Reply(self, topic)
        if qos:
            msg.ack = _Ack(conn, mid, qos)
        if self._accepting and self._intake.offer(msg):  # type: ignore[union-attr]
            self.counters["received"] += 1
            if qos:
                conn.outstanding += 1
        else:
            self.counters["refused"] += 1
            if qos:
                conn.refused += 1
                conn.refused_event.set()

    def take(self, m: aiomqtt.Message, conn: _Connection) -> None:
        try:
            payload = m.payload
            qos = m.qos
            if len(payload) > self._max_payload:  # type: ignore[arg-type]
                self._oversized(m, conn)
                return
            self._deliver(m.topic.value, payload, qos, m.mid, conn)  # type: ignore[arg-type]
        except Exception as exc:  # one bad message must not break the connection
            self.counters["errors"] += 1
            log.error("listener_message_crashed", listener=self.key, error=describe(exc), exc_info=exc)

    def take_raw(self, topic: bytes, payload: bytes, qos: int, mid: int, conn: _Connection) -> None:
        """``take`` for a PUBLISH decoded by ``_BufferedSocket.drain_publishes`` (no paho message built)."""
        if len(payload) > self._max_payload or not topic.isascii():  # rare: paho's message, paho's checks
            m = MQTTMessage(mid, topic)
            m.qos = qos
            m.payload = payload
            self.take_paho(m, conn)
            return
        try:
            self._deliver(topic.decode("ascii"), payload, qos, mid, conn)
        except Exception as exc:  # one bad message must not break the connection
            self.counters["errors"] += 1
            log.error("listener_message_crashed", listener=self.key, error=describe(exc), exc_info=exc)

    def take_paho(self, m: Any, conn: _Connection) -> None:
        """``take`` for paho's own ``MQTTMessage`` (``topic`` is a decoded str there)."""
        try:
            payload = m.payload
            qos = m.qos
            if len(payload) > self._max_payload:
                self._oversized(m, conn, m.topic)
                return
            self._deliver(m.topic, payload, qos, m.mid, conn)
        except Exception as exc:  # one bad message (e.g. a topic that is not UTF-8) must not break the connection
            self.counters["errors"] += 1
            log.error("listener_message_crashed", listener=self.key, error=describe(exc), exc_info=exc)

    def _oversized(self, m: Any, conn: _Connection, topic: str | None = None) -> None:
        self.counters["oversized"] += 1
        if m.qos:
            conn.ack(m.mid, m.qos)  # a poison message: redelivery could never succeed
        now = time.monotonic()
        if now - self._last_oversize_log >= _OVERSIZE_LOG_EVERY:
            self._last_oversize_log = now
            log.warning(
                "message_refused_oversized",
                listener=self.key,
                topic=topic if topic is not None else m.topic.value,
                size=len(m.payload),  # type: ignore[arg-type]
                limit=self._max_payload,
                total=self.counters["oversized"],
            )

    # ------------------------------------------------------------------ replies
    def enqueue_reply(self, topic: str, payload: bytes) -> None:
        if self._task is None or len(self._replies) >= self._reply_queue_size:
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

    # ------------------------------------------------------------------ supervision (SupervisedListener._run)
    def _after_loss(self) -> tuple[str, str]:
        if self._ever_connected:
            return "disconnected", "listener_disconnected"
        return "connecting", "listener_connect_failed"

    def _make_client(self, conn: _Connection) -> aiomqtt.Client:
        client = aiomqtt.Client(
            self._host,
            self._port,
            username=self._username,
            password=self._password,
            identifier=self.client_id,
            queue_type=_intake_queue_type(self, conn),
            clean_session=self._clean_session,
            keepalive=self._keepalive,
            timeout=self._connect_timeout,
            tls_context=ssl.create_default_context() if self._tls else None,
            logger=_MQTT_LOGGER,
        )
        paho = client._client  # paho's manual ack has no aiomqtt API
        paho.manual_ack_set(True)
        create_socket = paho._create_socket
        gate = self._read_gate(client, conn)  # here: paho creates the socket in aiomqtt's connect thread
        paho._create_socket = lambda: _BufferedSocket(create_socket(), gate)
        # Straight from paho's decoded PUBLISH to ``take``: paho would first match the topic against its
        # (empty: aiomqtt adds none) per-filter callbacks, and aiomqtt would build and validate its own
        # Message only for our queue to unpack it. Same message, about a fifth less work per message.
        take = self.take_paho

        def handle_on_message(message: Any) -> None:
            take(message, conn)

        paho._handle_on_message = handle_on_message
        # And before paho reads the next packet, the complete PUBLISH packets already in our socket buffer
        # are decoded here, in order (a fifth of the loop thread's time went to paho's per-packet reads,
        # its MQTTMessage and the threading.Condition each one makes). Anything else, and whatever paho is
        # in the middle of, is paho's as before; so are MQTT 5 connections (properties).
        loop_read = paho.loop_read

        def take_raw(topic: bytes, payload: bytes, qos: int, mid: int) -> None:
            self.take_raw(topic, payload, qos, mid, conn)

        def fast_loop_read(max_packets: int = 1) -> Any:
            sock = paho._sock
            if (isinstance(sock, _BufferedSocket) and paho._in_packet["command"] == 0
                    and paho._protocol != MQTTv5 and sock.drain_publishes(take_raw)):
                paho._last_bytes_received = time.monotonic()  # paho's keep-alive clock (its time_func)
            return loop_read(max_packets)

        paho.loop_read = fast_loop_read
        conn.bind(paho)
        return client

    def _read_gate(self, client: aiomqtt.Client, conn: _Connection) -> Callable[[], bool]:
        """The connection's ``_BufferedSocket`` gate: ``_reading_allowed``, and when it says no, the socket
        is taken off the event loop until the intake has room (``Intake.call_when_room``) or the listener
        stops accepting (``_close``). aiomqtt's reader is then put back as this equivalent of it
        (``Client._on_socket_open``: read while the socket has bytes pending; an error ends the connection).
        """
        loop = asyncio.get_running_loop()
        paho = client._client

        def read_ready() -> None:
            try:
                while True:
                    paho.loop_read()
                    sock = paho._sock
                    if sock is None or sock.pending() <= 0:
                        break
            except Exception as exc:  # noqa: BLE001 - the connection broke: aiomqtt's watcher raises it
                disconnected = client._disconnected
                if not disconnected.done():
                    disconnected.set_exception(exc)

        def gate() -> bool:
            if self._reading_allowed():
                return True
            if conn.resume_reading is None and self._intake is not None:
                sock = paho._sock
                fd = sock.fileno() if sock is not None else -1
                if fd >= 0:
                    loop.remove_reader(fd)

                    def resume() -> None:
                        if conn.resume_reading is not resume:
                            return
                        conn.resume_reading = None
                        if conn.alive and paho._sock is sock and sock.fileno() == fd:
                            loop.add_reader(fd, read_ready)
                            loop.call_soon(read_ready)  # bytes already read by a TLS layer wake no reader

                    conn.resume_reading = resume
                    self._intake.call_when_room(resume)
            return False

        return gate

    async def _session(self) -> str:
        """One connection. Returns ``stopped`` or ``redeliver``; raises ``MqttError`` when the connection is lost."""
        conn = _Connection()
        client = self._make_client(conn)
        # open before CONNACK: a persistent session's pending messages arrive before our SUBSCRIBE is acked
        self._accepting = not self._stop_requested.is_set()
        await enter_client(client, self._connect_timeout, name=f"listener:{self.key}:connect")
        started = time.monotonic()
        try:
            return await self._serve(client, conn)
        finally:
            conn.alive = False
            self._accepting = False
            self._conn = None
            if self._state == "connected":
                self._state = "disconnected"
            if time.monotonic() - started > 10 * self._redeliver_backoff.base:
                self._redeliver_backoff.reset()
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    async def _serve(self, client: aiomqtt.Client, conn: _Connection) -> str:
        for topic, qos in self._subscriptions:
            codes = await client.subscribe(topic, qos=qos)
            if any(getattr(code, "value", code) >= 0x80 for code in codes):
                raise aiomqtt.MqttError(f"the broker refused the subscription to {topic}")
        self._conn = conn
        self._state = "connected"
        self._ever_connected = True
        self.last_error = None
        self._backoff.reset()
        self._first_attempt.set()
        log.info("listener_connected", listener=self.key, broker=f"{self._host}:{self._port}",
                 client_id=self.client_id, subscriptions=[t for t, _ in self._subscriptions])
        watch = asyncio.ensure_future(self._watch(client))
        replies = asyncio.ensure_future(self._publish_replies(client))
        stop = asyncio.ensure_future(self._stop_requested.wait())
        redeliver = asyncio.ensure_future(self._redelivery_wanted(conn))
        tasks = (watch, replies, stop, redeliver)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in (watch, replies):
            if t in done:
                t.result()  # raises MqttError: the connection is gone
        stopping = stop in done or self._stop_requested.is_set()
        await self._close(client, conn, unsubscribe=stopping)
        if stopping:
            return "stopped"
        self.counters["redeliveries"] += 1
        log.info("listener_reconnecting_for_redelivery", listener=self.key, refused=conn.refused)
        return "redeliver"

    async def _watch(self, client: aiomqtt.Client) -> None:
        async for _ in client.messages:  # never yields: our queue offers everything itself
            pass

    async def _redelivery_wanted(self, conn: _Connection) -> None:
        """Returns when refused QoS>=1 messages should be fetched again by reconnecting."""
        await conn.refused_event.wait()
        intake = self._intake
        assert intake is not None
        await intake.drained(self._redeliver_wait)
        if not intake.accepting:  # the data plane is stopping us: stop() comes next
            await self._stop_requested.wait()
        await asyncio.sleep(self._redeliver_backoff.next_delay())

    async def _close(self, client: aiomqtt.Client, conn: _Connection, *, unsubscribe: bool) -> None:
        """Refuse new messages, wait for the acks of offered ones, optionally unsubscribe; then disconnect."""
        self._accepting = False
        if conn.resume_reading is not None:  # paused for room: read again (refusing), the UNSUBACK included
            conn.resume_reading()
        if not await conn.settled(self._ack_wait):
            log.warning("listener_closed_with_unacked", listener=self.key, unacked=conn.outstanding)
        if unsubscribe:
            try:
                await client.unsubscribe([t for t, _ in self._subscriptions], timeout=self._ack_wait)
            except aiomqtt.MqttError as exc:
                log.info("listener_unsubscribe_failed", listener=self.key, error=describe(exc))
