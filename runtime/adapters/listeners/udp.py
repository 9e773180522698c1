"""Raw UDP listener (``raw_udp``): an asyncio datagram endpoint; one datagram is one message.

Decisions:

- **No framing**: a datagram is already whole. A datagram over ``MaxMessageSize`` (default 64 KiB, i.e. no
  limit short of UDP's own) is dropped and counted (``oversized``); an empty one is ignored (``empty``).
  Anything else, garbage included, is a message: the planner dead-letters what it cannot read.
- **Refused offers** (intake full or pausing) are counted (``refused``); UDP has no backpressure.
- **Replies** (original-listener transmitter): ``reply.send(out)`` sends ``out.payload`` as one datagram to
  the sender's address (``transport.sendto``: never blocks). Dropped and counted (``repliesDropped``) once the
  listener is stopped; send errors the kernel reports later (ICMP unreachable) are counted as ``errors``.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import structlog

from runtime.adapters.listeners.base import ListenerBase
from runtime.adapters.listeners.framing import DEFAULT_MAX_MESSAGE_SIZE
from runtime.core.errors import ListenerBindError
from runtime.core.listener_state import ListenerState
from runtime.core.messages import InboundMessage, OutgoingMessage
from runtime.core.solution.model import Listener
from runtime.services.dataplane import Intake

log = structlog.get_logger(__name__)


class _Reply:
    """``InboundMessage.reply`` for one datagram: a datagram back to where it came from."""

    __slots__ = ("_addr", "_listener")

    def __init__(self, listener: UdpListener, addr: Any) -> None:
        self._listener = listener
        self._addr = addr

    def send(self, out: OutgoingMessage) -> None:
        self._listener.send_reply(out.payload, self._addr)


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, listener: UdpListener) -> None:
        self._listener = listener

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._listener.take(data, addr)

    def error_received(self, exc: Exception) -> None:
        self._listener.counters["errors"] += 1


class UdpListener(ListenerBase):
    type = "raw_udp"

    def __init__(self, config: Listener, *, port: int | None = None, host: str = "0.0.0.0") -> None:
        self.config = config
        self.key = config.key
        self._host = host
        self._port = config.listen_on_port if port is None else port
        if self._port is None:
            raise ValueError(f"raw_udp listener {config.key}: listenOnPort is required")
        self.max_size = config.max_message_size or DEFAULT_MAX_MESSAGE_SIZE
        self._transport: asyncio.DatagramTransport | None = None
        self._intake: Intake | None = None
        self.bound_port: int | None = None
        self.counters = {
            "datagrams": 0,
            "received": 0,
            "refused": 0,
            "oversized": 0,
            "empty": 0,
            "errors": 0,
            "repliesSent": 0,
            "repliesDropped": 0,
        }

    async def start(self, intake: Intake) -> None:
        if self._transport is not None:
            raise RuntimeError(f"listener {self.key} is already started")
        self._intake = intake
        loop = asyncio.get_running_loop()
        # Bind the socket ourselves: uvloop sets SO_REUSEADDR on datagram endpoints, which would let a
        # second listener share a port that is in use instead of failing to start.
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self._host, self._port))
            sock.setblocking(False)
            transport, _ = await loop.create_datagram_endpoint(lambda: _Endpoint(self), sock=sock)
        except OSError as exc:
            sock.close()
            self._set_state(ListenerState.FAILED)
            raise ListenerBindError(self.key, self._port, exc.strerror or str(exc)) from exc
        self._transport = transport
        sockname = transport.get_extra_info("sockname")
        self.bound_port = int(sockname[1]) if isinstance(sockname, tuple) else self._port
        self._set_state(ListenerState.LISTENING)

    async def stop(self) -> None:
        transport, self._transport = self._transport, None
        if transport is None:
            return
        transport.close()
        await asyncio.sleep(0)  # connection_lost runs on the next loop turn
        self._set_state(ListenerState.STOPPED)
        log.info("listener_stopped", listener=self.key, **self.counters)

    def status(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "type": self.type,
            "state": self._state,
            "port": self.bound_port if self.bound_port is not None else self._port,
            "host": self._host,
            "maxMessageSize": self.max_size,
            **self.counters,
        }

    def take(self, data: bytes, addr: Any) -> None:
        c = self.counters
        c["datagrams"] += 1
        if not data:
            c["empty"] += 1
            return
        if len(data) > self.max_size:
            c["oversized"] += 1
            return
        from_address = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        msg = InboundMessage(self.key, data, from_address=from_address, reply=_Reply(self, addr))
        intake = self._intake
        if intake is not None and intake.offer(msg):
            c["received"] += 1
        else:
            c["refused"] += 1

    def send_reply(self, payload: bytes, addr: Any) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            self.counters["repliesDropped"] += 1
            return
        transport.sendto(payload, addr)
        self.counters["repliesSent"] += 1
