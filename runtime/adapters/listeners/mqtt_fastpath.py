"""Every use of paho's and aiomqtt's internals by the MQTT listener, version-checked at import, with a fallback.

Two things here reach past the libraries' public API:

1. **Manual acknowledgement** (both modes): aiomqtt 2.5 has no API for it, so ``manual_ack(client)`` turns
   paho's automatic PUBACK off on ``client._client`` (aiomqtt's paho client) and returns paho's public
   ``ack(mid, qos)``. The listener acknowledges a QoS 1 message only once its record is committed; without
   this the listener cannot keep that promise, so ``MANUAL_ACK_PROBLEM`` makes it refuse to start.
2. **The fast path** (``FastPath.install``), optional: paho's socket read in big chunks and complete
   PUBLISH packets decoded here (``_BufferedSocket``), paho's decoded messages handed straight to the
   listener (``_handle_on_message``), the socket taken off the event loop while the intake is full
   (back-pressure through TCP, no CPU spent). It replaces paho's ``_create_socket``, ``_handle_on_message``
   and ``loop_read``, reads ``_sock``, ``_in_packet``, ``_protocol``, writes ``_last_bytes_received``, and
   sets ``client._disconnected``'s exception as aiomqtt's own reader does.

At import, ``FASTPATH_PROBLEM`` is computed: ``None`` when paho and aiomqtt are the tested versions
(``TESTED_PAHO``, ``TESTED_AIOMQTT``: major.minor) and every internal above exists with the expected shape;
else the reason. ``fastpath_enabled(wanted)`` says whether a listener may use it and logs the reason once
when it may not: the listener then runs on plain aiomqtt (``async for message in client.messages``), which
is slower (see ``make bench``: ``fallback_q0``) but correct. ``NUVIOT_MQTT_FASTPATH=0`` forces the fallback.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import aiomqtt
import structlog
from paho.mqtt import client as paho_client
from paho.mqtt.enums import CallbackAPIVersion

log = structlog.get_logger(__name__)

TESTED_PAHO = ((2, 2),)  # major.minor versions the fast path was tested with (pyproject pins paho-mqtt to them)
TESTED_AIOMQTT = ((2, 5),)
READ_SIZE = 32 * 1024  # bytes per socket read (at most ~6,500 minimal PUBLISH packets)

Take = Callable[[bytes, bytes, int, int], None]  # (topic bytes, payload, qos, mid): one decoded PUBLISH


def _major_minor(dist: str) -> tuple[int, int]:
    parts = version(dist).split(".")
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


def _manual_ack_problem() -> str | None:
    if "_client" not in aiomqtt.Client.__init__.__code__.co_names:
        return "aiomqtt.Client has no _client (paho client) for manual acknowledgement"
    for name in ("manual_ack_set", "ack"):
        if not callable(getattr(paho_client.Client, name, None)):
            return f"paho's Client has no {name}()"
    return None


def _fastpath_problem() -> str | None:
    paho_v, aiomqtt_v = _major_minor("paho-mqtt"), _major_minor("aiomqtt")
    if paho_v not in TESTED_PAHO:
        return f"paho-mqtt {version('paho-mqtt')} is not a tested version ({TESTED_PAHO})"
    if aiomqtt_v not in TESTED_AIOMQTT:
        return f"aiomqtt {version('aiomqtt')} is not a tested version ({TESTED_AIOMQTT})"
    if "_disconnected" not in aiomqtt.Client.__init__.__code__.co_names:
        return "aiomqtt.Client has no _disconnected future"
    for name, params in (("_create_socket", 1), ("_handle_on_message", 2), ("loop_read", 2)):
        method = getattr(paho_client.Client, name, None)
        if not callable(method) or len(inspect.signature(method).parameters) != params:
            return f"paho's Client.{name} is missing or has another signature"
    probe = paho_client.Client(CallbackAPIVersion.VERSION2)  # no socket is opened
    for name in ("_sock", "_protocol", "_last_bytes_received"):
        if not hasattr(probe, name):
            return f"paho's Client has no {name}"
    if not isinstance(getattr(probe, "_in_packet", None), dict) or "command" not in probe._in_packet:
        return "paho's Client._in_packet is not the expected dict"
    return None


def _checked(check: Callable[[], str | None]) -> str | None:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - a check that cannot run is a failed check, never an import error
        return f"could not check the MQTT libraries: {type(exc).__name__}: {exc}"


MANUAL_ACK_PROBLEM = _checked(_manual_ack_problem)
FASTPATH_PROBLEM = MANUAL_ACK_PROBLEM or _checked(_fastpath_problem)
_logged = False


def fastpath_enabled(wanted: bool) -> bool:
    """Whether a listener runs on the fast path; the reason it cannot is logged once per process."""
    global _logged
    if wanted and FASTPATH_PROBLEM is not None and not _logged:
        _logged = True
        log.warning("mqtt_fastpath_unavailable", reason=FASTPATH_PROBLEM, fallback="plain aiomqtt")
    return wanted and FASTPATH_PROBLEM is None


def manual_ack(client: aiomqtt.Client) -> Callable[[int, int], Any]:
    """Turn paho's automatic PUBACK off for ``client``; returns paho's ``ack(mid, qos)``."""
    paho: Any = client._client  # paho's Client, as aiomqtt keeps it
    paho.manual_ack_set(True)
    ack: Callable[[int, int], Any] = paho.ack
    return ack


class _BufferedSocket:
    """paho's socket, read in big chunks (hot path).

    paho reads a packet with three ``recv`` calls (command byte, length byte, rest) and, for QoS 0, aiomqtt
    handles one packet per readable event: ~3 syscalls and one event-loop turn per message. This wrapper
    reads up to ``READ_SIZE`` bytes at once and serves paho's small reads from that buffer; ``pending()``
    (the hook aiomqtt's reader already loops on for TLS) makes aiomqtt call ``loop_read`` until the buffer
    is used up. ``gate()`` false (the intake is filling up) makes an empty buffer look like "no data yet"
    without reading: the bytes stay in the kernel and TCP pushes back on the broker.
    """

    __slots__ = ("_blocked", "_buf", "_gate", "_pos", "_sock")

    def __init__(self, sock: Any, gate: Callable[[], bool]) -> None:
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
            data: bytes = self._sock.recv(READ_SIZE if n < READ_SIZE else n)
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

    def drain_publishes(self, take: Take) -> int:
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
            remaining = buf[pos + 1]
            i = pos + 2
            if remaining >= 128:  # the remaining length: 1 to 4 bytes, 7 bits each (one: a packet under 130 bytes)
                i = pos + 1
                remaining = 0
                shift = 0
                while True:
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


class FastPath:
    """The fast path of one connection (one fresh aiomqtt client). ``parked``: the socket is off the event
    loop until the intake has room; ``parks`` counts how often that happened (the listener's keep-alive
    probe does not blame the broker for answers it did not read)."""

    __slots__ = ("_client", "_loop", "_resume", "alive", "parks")

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._resume: Callable[[], None] | None = None
        self.alive = True
        self.parks = 0

    @property
    def parked(self) -> bool:
        return self._resume is not None

    def resume(self) -> None:
        """Read again now (the listener stops accepting: what arrives is refused and counted)."""
        if self._resume is not None:
            self._resume()

    @classmethod
    def install(cls, client: aiomqtt.Client, *, take_message: Callable[[Any], None], take: Take,
                reading_allowed: Callable[[], bool],
                call_when_room: Callable[[Callable[[], None]], None]) -> FastPath:
        """Hook the fast path into ``client`` before it connects.

        ``take_message(paho_message)`` gets what paho decodes itself; ``take(topic, payload, qos, mid)`` what
        ``drain_publishes`` decodes; ``reading_allowed()`` false parks the socket until ``call_when_room``
        calls back.
        """
        fast = cls(client)
        paho: Any = client._client  # paho's internals (typed Any: checked by _fastpath_problem at import)
        create_socket = paho._create_socket
        gate = fast._gate(reading_allowed, call_when_room)
        paho._create_socket = lambda: _BufferedSocket(create_socket(), gate)  # in aiomqtt's connect thread
        # Straight from paho's decoded PUBLISH to the listener: paho would first match the topic against its
        # (empty: aiomqtt adds none) per-filter callbacks, and aiomqtt would build and validate its own
        # Message only for the listener to unpack it. Same message, about a fifth less work per message.
        paho._handle_on_message = take_message
        # And before paho reads the next packet, the complete PUBLISH packets already in our socket buffer
        # are decoded here, in order (a fifth of the loop thread's time went to paho's per-packet reads, its
        # MQTTMessage and the threading.Condition each one makes). Anything else, and whatever paho is in the
        # middle of, is paho's as before; so are MQTT 5 connections (properties).
        loop_read = paho.loop_read

        def fast_loop_read(max_packets: int = 1) -> Any:
            sock = paho._sock
            if (isinstance(sock, _BufferedSocket) and paho._in_packet["command"] == 0
                    and paho._protocol != paho_client.MQTTv5 and sock.drain_publishes(take)):
                paho._last_bytes_received = time.monotonic()  # paho's keep-alive clock (its time_func)
            return loop_read(max_packets)

        paho.loop_read = fast_loop_read
        return fast

    def _read_ready(self) -> None:
        """aiomqtt's socket reader (``Client._on_socket_open``), put back after a park: read while the
        socket has bytes pending; an error ends the connection."""
        paho: Any = self._client._client  # paho's internals, checked at import
        try:
            while True:
                paho.loop_read()
                sock = paho._sock
                if sock is None or sock.pending() <= 0:
                    break
        except Exception as exc:  # noqa: BLE001 - the connection broke: aiomqtt's watcher raises it
            disconnected = self._client._disconnected
            if not disconnected.done():
                disconnected.set_exception(exc)

    def _gate(self, reading_allowed: Callable[[], bool],
              call_when_room: Callable[[Callable[[], None]], None]) -> Callable[[], bool]:
        """The ``_BufferedSocket`` gate: ``reading_allowed()``, and when it says no, the socket is taken off
        the event loop until ``call_when_room`` calls back (a readable socket left on the loop would wake it
        on every turn, for nothing, while the worker waits for the store)."""
        loop = self._loop
        paho: Any = self._client._client  # paho's internals, checked at import

        def gate() -> bool:
            if reading_allowed():
                return True
            if self._resume is None:
                sock = paho._sock
                fd = sock.fileno() if sock is not None else -1
                if fd >= 0:
                    loop.remove_reader(fd)

                    def resume() -> None:
                        if self._resume is not resume:
                            return
                        self._resume = None
                        if self.alive and paho._sock is sock and sock.fileno() == fd:
                            loop.add_reader(fd, self._read_ready)
                            loop.call_soon(self._read_ready)  # bytes already read by a TLS layer wake no reader

                    self._resume = resume
                    self.parks += 1
                    call_when_room(resume)
            return False

        return gate
