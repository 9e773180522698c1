"""A cheap MQTT 3.1.1 publisher for the benchmark: hand-built PUBLISH packets written in chunks.

Why not paho: on a 2-core machine the publisher competes with the broker and the daemon for CPU. paho
spends ~15 µs of Python per publish; this one builds a packet with one ``%`` format and writes hundreds
per ``sendall``, so nearly all the CPU is left to what is measured. The baseline subscriber and the
daemon get the very same stream.

Payload (JSON): ``{"seq": "<run>-<i>", "ts": <epoch s at send>, "temperature", "humidity", "mode"}``; the
device is ``d%04d`` of ``i % devices``, the topic ``bench/<device>/q0`` or ``q1`` by QoS. QoS 1 PUBACKs
from the broker are read on a thread; at most ``window`` messages are in flight (packet ids never clash).
``rate=None`` publishes as fast as the socket takes it; otherwise messages are paced to ``rate``/s
(1 ms ticks) and each one's send time is kept (``sent_at``) for the latency figures.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from array import array
from dataclasses import dataclass


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id: str, keepalive: int = 60) -> bytes:
    var = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", keepalive)
    body = var + _utf8(client_id)
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: str, payload: bytes, qos: int, packet_id: int = 0) -> bytes:
    body = _utf8(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return bytes([0x30 | (qos << 1)]) + _varint(len(body)) + body


def payload(run: str, i: int, ts: float, devices: int) -> bytes:
    mode = "manual" if (i // devices) % 2 else "auto"
    return b'{"seq":"%s-%d","ts":%.6f,"temperature":%.1f,"humidity":%d,"mode":"%s"}' % (
        run.encode(), i, ts, 15.0 + (i % 200) / 10.0, 30 + i % 50, mode.encode())


def device_of(i: int, devices: int) -> str:
    return f"d{i % devices:04d}"


@dataclass
class PublishResult:
    sent: int
    acked: int
    first_at: float
    last_at: float
    sent_at: array  # epoch seconds per message (paced runs only; empty otherwise)


class _Acks(threading.Thread):
    """Reads the broker's PUBACKs (QoS 1) off the socket: 4 bytes each."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True, name="bench-publisher-acks")
        self.sock = sock
        self.acked = 0
        self.cond = threading.Condition()
        self.closed = False

    def run(self) -> None:
        buf = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                buf += data
                n = len(buf) // 4
                buf = buf[n * 4:]
                with self.cond:
                    self.acked += n
                    self.cond.notify_all()
        except OSError:
            pass
        with self.cond:
            self.closed = True
            self.cond.notify_all()


def publish(host: str, port: int, *, run: str, n: int, qos: int, devices: int, rate: float | None = None,
            chunk: int = 500, window: int = 20_000, client_id: str = "bench-publisher",
            timeout: float = 600.0) -> PublishResult:
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(f"{client_id}-{run}"))
    connack = b""
    while len(connack) < 4:
        part = sock.recv(4 - len(connack))
        if not part:
            raise ConnectionError("the broker closed the connection before CONNACK")
        connack += part
    if connack[0] != 0x20 or connack[3] != 0:
        raise ConnectionError(f"CONNACK refused: {connack!r}")
    sock.settimeout(None)
    acks = _Acks(sock)
    if qos:
        acks.start()
    suffix = "q1" if qos else "q0"
    topics = [f"bench/{device_of(d, devices)}/{suffix}" for d in range(devices)]
    sent_at = array("d")
    deadline = time.monotonic() + timeout
    first_at = time.time()
    i = 0
    start = time.perf_counter()
    while i < n and time.monotonic() < deadline:
        if rate is None:
            k = min(chunk, n - i)
        else:
            due = int((time.perf_counter() - start) * rate) + 1
            k = min(due - i, n - i, chunk)
            if k <= 0:
                time.sleep(0.0005)
                continue
        if qos:
            with acks.cond:
                while i + k - acks.acked > window and not acks.closed:
                    acks.cond.wait(1.0)
        now = time.time()
        packets = []
        for j in range(i, i + k):
            packets.append(publish_packet(topics[j % devices], payload(run, j, now, devices), qos,
                                          (j % 65535) + 1))
            if rate is not None:
                sent_at.append(now)
        sock.sendall(b"".join(packets))
        i += k
    last_at = time.time()
    if qos:
        with acks.cond:
            while acks.acked < i and not acks.closed and time.monotonic() < deadline:
                acks.cond.wait(1.0)
    try:
        sock.sendall(b"\xe0\x00")  # DISCONNECT
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
    if qos:
        acks.join(5)
    return PublishResult(i, acks.acked if qos else i, first_at, last_at, sent_at)
