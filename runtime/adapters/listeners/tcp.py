"""Raw TCP listener (``rawtcp``): an asyncio server; every whole frame on a connection is one message.

Decisions:

- **Framing** is ``framing.FrameSpec.from_listener(config)`` (see ``framing.py``: newline by default, start/end
  sequences, SOH/EOT, or a 1/2/4-byte length prefix). One connection carries any number of messages.
- **Protocol callbacks, not streams**: no task per connection, so 10,000 idle connections cost a transport, a
  small object and one timer each.
- **Half frames** may wait ``MessageReceiveTimeoutMS`` (default 30 s) from the first byte of the frame; then
  the half frame is dropped and counted (``timedOut``). With a length prefix the stream cannot be resynchronised,
  so the connection is closed instead (the same happens for a declared length over ``MaxMessageSize``:
  ``protocolErrors``). Oversized delimited frames are dropped (``oversized``) and the stream resyncs.
- **Idle connections**: a connection that has received no byte for ``idle_timeout`` seconds (default 300 s;
  ``None`` disables it) is closed (``closedIdle``), whether or not it ever sent anything. Devices on a
  long-lived connection that report less often than that reconnect; raise it for them.
- **Connection limit**: beyond ``max_connections`` open connections a new one is closed at once
  (``rejectedConnections``). Both are set from ``NUVIOT_MAX_CONNECTIONS_PER_PORT`` and
  ``NUVIOT_TCP_IDLE_TIMEOUT`` and counted in ``/metrics`` (``ConnectionCounters``, server = listener key).
- **Refused offers** (intake full, or the instance pausing) are counted (``refused``); the connection stays open.
- **Replies** (original-listener transmitter): ``reply.send(out)`` writes ``spec.encode(out.payload)`` on the
  connection the message came from (``transport.write``: never blocks). A reply is dropped and counted
  (``repliesDropped``) when the connection is gone, its write buffer is over ``max_write_buffer`` (a client
  that does not read), or the payload cannot be framed (e.g. too long for a 1-byte length).
- **stop()** closes the server and aborts every connection (unsent replies are discarded).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, cast

import structlog

from runtime.adapters.listeners.base import ListenerBase
from runtime.adapters.listeners.framing import Deframer, FrameSpec, FrameStats
from runtime.core.errors import ListenerBindError
from runtime.core.listener_state import ListenerState
from runtime.core.messages import InboundMessage, OutgoingMessage
from runtime.core.solution.model import Listener
from runtime.services.dataplane import Intake
from runtime.services.metrics import ConnectionCounters

log = structlog.get_logger(__name__)

DEFAULT_RECEIVE_TIMEOUT_MS = 30_000
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_MAX_WRITE_BUFFER = 1024 * 1024
_BACKLOG = 1024


class _Reply:
    """``InboundMessage.reply`` for one TCP message: writes the framed payload back on its connection."""

    __slots__ = ("_conn",)

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    def send(self, out: OutgoingMessage) -> None:
        self._conn.write_reply(out.payload)


class _Connection(asyncio.Protocol):
    __slots__ = ("_deadline_gen", "_frame_timer", "_idle_timer", "_last_rx", "_listener", "_reply", "address",
                 "deframer", "transport")

    def __init__(self, listener: TcpListener) -> None:
        self._listener = listener
        self.transport: asyncio.Transport | None = None
        self.address = "?"
        self.deframer = Deframer(listener.spec, listener.frame_stats)
        self._reply = _Reply(self)
        self._last_rx = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._frame_timer: asyncio.TimerHandle | None = None
        self._deadline_gen = -1  # deframer.completed when the half-frame timer was armed

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass: no isinstance check here
        self.transport = cast(asyncio.Transport, transport)
        listener = self._listener
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.address = f"{peer[0]}:{peer[1]}"
        if not listener.admit(self):
            cast(asyncio.Transport, transport).abort()  # a stream server's transport
            self.transport = None
            return
        self._last_rx = time.monotonic()
        if listener.idle_timeout is not None:
            self._idle_timer = asyncio.get_running_loop().call_later(listener.idle_timeout, self._idle_check)

    def data_received(self, data: bytes) -> None:
        self._last_rx = time.monotonic()
        listener, deframer = self._listener, self.deframer
        for frame in deframer.feed(data):
            listener.deliver(frame, self.address, self._reply)
        if deframer.broken:
            listener.counters["protocolErrors"] += 1
            listener.protocol_error(self.address, deframer.broken)
            self.close()
            return
        if not deframer.pending:
            self._cancel_frame_timer()
        elif self._frame_timer is None or self._deadline_gen != deframer.completed:
            self._cancel_frame_timer()
            self._deadline_gen = deframer.completed
            self._frame_timer = asyncio.get_running_loop().call_later(listener.receive_timeout, self._frame_expired)

    def eof_received(self) -> bool | None:
        if self.deframer.spec.ends_at_next_start:  # start sequence only: the end of the stream ends the frame
            frame = self.deframer.expire()
            if frame is not None:
                self._listener.deliver(frame, self.address, self._reply)
        return False  # close our side too; any other half frame is dropped with the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_frame_timer()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self.transport is not None:
            self.transport = None
            self._listener.forget(self)

    # ------------------------------------------------------------------ timers
    def _cancel_frame_timer(self) -> None:
        if self._frame_timer is not None:
            self._frame_timer.cancel()
            self._frame_timer = None

    def _frame_expired(self) -> None:
        self._frame_timer = None
        listener, deframer = self._listener, self.deframer
        before = deframer.stats.truncated
        frame = deframer.expire()
        if frame is not None:
            listener.deliver(frame, self.address, self._reply)
        if deframer.stats.truncated != before:
            listener.counters["timedOut"] += 1
        if deframer.broken:
            self.close()

    def _idle_check(self) -> None:
        self._idle_timer = None
        timeout = self._listener.idle_timeout
        if self.transport is None or timeout is None:
            return
        left = self._last_rx + timeout - time.monotonic()
        if left > 0:  # data came meanwhile: re-arm for what is left (no timer churn per chunk)
            self._idle_timer = asyncio.get_running_loop().call_later(left, self._idle_check)
            return
        self._listener.counters["closedIdle"] += 1
        self._listener.connections.idle_closed += 1
        self.close()

    # ------------------------------------------------------------------ replies and closing
    def write_reply(self, payload: bytes) -> None:
        listener, transport = self._listener, self.transport
        if transport is None or transport.is_closing():
            listener.counters["repliesDropped"] += 1
            return
        if transport.get_write_buffer_size() > listener.max_write_buffer:
            listener.counters["repliesDropped"] += 1
            return
        try:
            framed = listener.spec.encode(payload)
        except ValueError as exc:
            listener.counters["repliesDropped"] += 1
            log.warning("reply_dropped", listener=listener.key, peer=self.address, error=str(exc))
            return
        transport.write(framed)
        listener.counters["repliesSent"] += 1

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class TcpListener(ListenerBase):
    type = "rawtcp"

    def __init__(
        self,
        config: Listener,
        *,
        port: int | None = None,
        host: str = "0.0.0.0",
        max_connections: int = 10_000,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER,
        connection_counters: ConnectionCounters | None = None,
    ) -> None:
        self.config = config
        self.connections = connection_counters if connection_counters is not None else ConnectionCounters()
        self.key = config.key
        self.spec = FrameSpec.from_listener(config)  # ValueError on a bad framing configuration
        self._host = host
        self._port = config.listen_on_port if port is None else port
        if self._port is None:
            raise ValueError(f"rawtcp listener {config.key}: listenOnPort is required")
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.receive_timeout = (config.message_receive_timeout_ms or DEFAULT_RECEIVE_TIMEOUT_MS) / 1000.0
        self.max_write_buffer = max_write_buffer
        self.frame_stats = FrameStats()
        self._server: asyncio.Server | None = None
        self._intake: Intake | None = None
        self._connections: set[_Connection] = set()
        self.bound_port: int | None = None
        self._last_protocol_log = 0.0
        self.counters = {
            "accepted": 0,
            "rejectedConnections": 0,
            "closedIdle": 0,
            "received": 0,
            "refused": 0,
            "timedOut": 0,
            "protocolErrors": 0,
            "repliesSent": 0,
            "repliesDropped": 0,
        }

    # ------------------------------------------------------------------ Listener protocol
    async def start(self, intake: Intake) -> None:
        if self._server is not None:
            raise RuntimeError(f"listener {self.key} is already started")
        self._intake = intake
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self), self._host, self._port, reuse_address=True, backlog=_BACKLOG
            )
        except OSError as exc:
            self._set_state(ListenerState.FAILED)
            raise ListenerBindError(self.key, self._port, exc.strerror or str(exc)) from exc
        sockets = self._server.sockets
        self.bound_port = int(sockets[0].getsockname()[1]) if sockets else self._port
        self._set_state(ListenerState.LISTENING)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._set_state(ListenerState.STOPPING)
        server.close()
        conns, self._connections = list(self._connections), set()
        for conn in conns:
            conn.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await server.wait_closed()
        await asyncio.sleep(0)  # let the aborted transports run connection_lost
        self._set_state(ListenerState.STOPPED)
        log.info("listener_stopped", listener=self.key, **self.counters)

    def status(self) -> dict[str, Any]:
        stats = self.frame_stats
        return {
            "key": self.key,
            "type": self.type,
            "state": self._state,
            "port": self.bound_port if self.bound_port is not None else self._port,
            "host": self._host,
            "framing": self.spec.mode,
            "connections": len(self._connections),
            "maxConnections": self.max_connections,
            **self.counters,
            "oversized": stats.oversized,
            "garbageBytes": stats.garbage_bytes,
        }

    # ------------------------------------------------------------------ called by connections
    def admit(self, conn: _Connection) -> bool:
        if self._server is None or len(self._connections) >= self.max_connections:
            self.counters["rejectedConnections"] += 1
            self.connections.rejected += 1
            return False
        self._connections.add(conn)
        self.counters["accepted"] += 1
        self.connections.accepted += 1
        self.connections.open = len(self._connections)
        return True

    def forget(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        self.connections.open = len(self._connections)

    def deliver(self, frame: bytes, address: str, reply: _Reply) -> None:
        intake = self._intake
        msg = InboundMessage(self.key, frame, from_address=address, reply=reply)
        if intake is not None and intake.offer(msg):
            self.counters["received"] += 1
        else:
            self.counters["refused"] += 1

    def protocol_error(self, address: str, reason: str) -> None:
        now = time.monotonic()
        if now - self._last_protocol_log >= 10.0:  # rate-limited: a bad client must not flood the log
            self._last_protocol_log = now
            log.warning("connection_closed_on_framing_error", listener=self.key, peer=address, reason=reason,
                        total=self.counters["protocolErrors"])
