"""Raw TCP, raw UDP and WebSocket listeners end to end into an ``Intake`` over loopback."""

from __future__ import annotations

import asyncio
import resource
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from runtime.adapters.httpsite import BasicCredentials
from runtime.adapters.listeners.tcp import TcpListener
from runtime.adapters.listeners.udp import UdpListener
from runtime.adapters.listeners.websocket import WebSocketListener
from runtime.core.errors import ListenerBindError
from runtime.core.messages import OutgoingMessage
from runtime.core.solution.model import Listener
from runtime.services.dataplane import Intake
from runtime.services.metrics import Counters
from tests.support.intake import running, take, until

pytestmark = pytest.mark.integration

LOCAL = "127.0.0.1"


def config(listener_type: str, **fields: Any) -> Listener:
    fields.setdefault("listen_on_port", 0)
    return Listener(key=listener_type[:3], listener_type=listener_type, **fields)


def new_intake(size: int = 10_000) -> Intake:
    return Intake(size, Counters())


def out(payload: bytes) -> OutgoingMessage:
    return OutgoingMessage(message_key="m", message_id="m", device_id="d", payload=payload)



@asynccontextmanager
async def tcp_client(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection(LOCAL, port)
    try:
        yield reader, writer
    finally:
        writer.close()
        try:
            async with asyncio.timeout(5):
                await writer.wait_closed()
        except (ConnectionError, TimeoutError):
            pass


async def read_eof(reader: asyncio.StreamReader, within: float = 15.0) -> bytes:
    async with asyncio.timeout(within):
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""


# ====================================================================== TCP

def _len(n: int, order: str) -> Callable[[bytes], bytes]:
    return lambda p: len(p).to_bytes(n, order) + p  # type: ignore[arg-type]


FRAMINGS: dict[str, tuple[dict[str, Any], Callable[[bytes], bytes]]] = {
    "newline": ({}, lambda p: p + b"\r\n"),
    "sequences": ({"start_message_sequence": "\\x02", "end_message_sequence": "\\x03"}, lambda p: b"\x02" + p + b"\x03"),
    "text-end": ({"end_message_sequence": "<END>"}, lambda p: p + b"<END>"),
    "soheot": ({"delimited_with_soheot": True}, lambda p: b"\x01" + p + b"\x04"),
    "len1": ({"message_length_in_message": True, "message_length_size": 1}, _len(1, "big")),
    "len2-big": ({"message_length_in_message": True, "message_length_size": 2,
                  "message_length_byte_count_endiness": "bigendian"}, _len(2, "big")),
    "len2-little": ({"message_length_in_message": True, "message_length_size": 2,
                     "message_length_byte_count_endiness": "littleendian"}, _len(2, "little")),
    "len4-big": ({"message_length_in_message": True, "message_length_size": 4}, _len(4, "big")),
    "len4-little": ({"message_length_in_message": True, "message_length_size": 4,
                     "message_length_byte_count_endiness": "littleendian"}, _len(4, "little")),
}


@pytest.mark.parametrize("name", list(FRAMINGS))
async def test_tcp_frames_half_frames_and_replies(name: str) -> None:
    fields, frame = FRAMINGS[name]
    intake = new_intake()
    async with running(TcpListener(config("rawtcp", **fields), host=LOCAL), intake) as tcp:
        port = tcp.status()["port"]
        async with tcp_client(port) as (reader, writer):
            second = frame(b'{"deviceId":"d2"}')
            writer.write(frame(b"first,1") + second[:3])
            await writer.drain()
            [m1] = await take(intake, 1)
            assert m1.payload == b"first,1"
            assert m1.listener == tcp.key
            assert m1.from_address == f"{LOCAL}:{writer.get_extra_info('sockname')[1]}"
            assert len(intake) == 0  # the half frame waits
            writer.write(second[3:])
            await writer.drain()
            [m2] = await take(intake, 1)
            assert m2.payload == b'{"deviceId":"d2"}'

            m2.reply.send(out(b"pong"))  # type: ignore[union-attr]
            expected = frame(b"pong").replace(b"\r\n", b"\n")  # replies end lines with \n only
            async with asyncio.timeout(5):
                assert await reader.readexactly(len(expected)) == expected
        status = tcp.status()
        assert (status["received"], status["repliesSent"], status["state"]) == (2, 1, "listening")
    assert tcp.status()["state"] == "stopped"


async def test_tcp_start_sequence_only_frame_ends_at_the_next_start_or_at_eof() -> None:
    intake = new_intake()
    async with running(TcpListener(config("rawtcp", start_message_sequence="$GP"), host=LOCAL), intake) as tcp:
        async with tcp_client(tcp.status()["port"]) as (reader, writer):
            writer.write(b"noise$GPa,1$GPb,2")
            assert [m.payload for m in await take(intake, 1)] == [b"a,1"]
            writer.write_eof()
            assert [m.payload for m in await take(intake, 1)] == [b"b,2"]
            assert await read_eof(reader) == b""
        assert tcp.status()["garbageBytes"] == 5


async def test_tcp_oversized_delimited_frame_is_dropped_and_the_stream_resyncs() -> None:
    intake = new_intake()
    async with running(TcpListener(config("rawtcp", max_message_size=16), host=LOCAL), intake) as tcp:
        async with tcp_client(tcp.status()["port"]) as (_, writer):
            writer.write(b"x" * 100)
            writer.write(b"y" * 100 + b"\nok\n")
            await writer.drain()
            [m] = await take(intake, 1)
            assert m.payload == b"ok"
            assert tcp.status()["oversized"] == 1
            writer.write(b"still open\n")
            assert [m.payload for m in await take(intake, 1)] == [b"still open"]


async def test_tcp_length_over_the_cap_closes_the_connection() -> None:
    intake = new_intake()
    cfg = config("rawtcp", message_length_in_message=True, message_length_size=2, max_message_size=8)
    async with running(TcpListener(cfg, host=LOCAL), intake) as tcp:
        async with tcp_client(tcp.status()["port"]) as (reader, writer):
            writer.write(b"\x00\x02ok\x01\x00" + b"z" * 10)
            assert await read_eof(reader) == b""
        [m] = await take(intake, 1)
        assert m.payload == b"ok"
        assert tcp.status()["protocolErrors"] == 1 and tcp.status()["oversized"] == 1


async def test_tcp_half_frame_times_out_and_is_dropped() -> None:
    intake = new_intake()
    cfg = config("rawtcp", message_receive_timeout_ms=100)
    async with running(TcpListener(cfg, host=LOCAL), intake) as tcp:
        async with tcp_client(tcp.status()["port"]) as (_, writer):
            writer.write(b"half a message")
            await until(lambda: tcp.status()["timedOut"] == 1, within=15.0)
            writer.write(b" and its late rest\nnext\n")  # the rest of a dropped frame is not a frame
            assert [m.payload for m in await take(intake, 1)] == [b"next"]
            assert tcp.status()["connections"] == 1


async def test_tcp_idle_connection_is_closed_after_the_idle_timeout() -> None:
    intake = new_intake()
    async with running(TcpListener(config("rawtcp"), host=LOCAL, idle_timeout=0.2), intake) as tcp:
        async with tcp_client(tcp.status()["port"]) as (_, busy_writer):
            async with tcp_client(tcp.status()["port"]) as (reader, _writer):
                started = time.monotonic()
                for _ in range(4):  # the other connection keeps talking, so it stays
                    busy_writer.write(b"tick\n")
                    await asyncio.sleep(0.1)
                assert await read_eof(reader) == b""
                assert 0.15 < time.monotonic() - started < 2.0
            assert len(await take(intake, 4)) == 4
            await until(lambda: tcp.status()["closedIdle"] == 1, within=15.0)
            assert tcp.status()["connections"] == 1


async def test_tcp_connection_limit_refuses_new_connections() -> None:
    intake = new_intake()
    async with running(TcpListener(config("rawtcp"), host=LOCAL, max_connections=2), intake) as tcp:
        port = tcp.status()["port"]
        async with tcp_client(port), tcp_client(port) as (_, w2):
            await until(lambda: tcp.status()["connections"] == 2, within=15.0)
            async with tcp_client(port) as (reader3, _):
                assert await read_eof(reader3) == b""
            assert tcp.status()["rejectedConnections"] == 1
            w2.write(b"fine\n")
            assert [m.payload for m in await take(intake, 1)] == [b"fine"]


class _Idle(asyncio.Protocol):
    def __init__(self) -> None:
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


_IDLE_CLIENTS = """
import resource, socket, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 512), hard))
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
print("connected", flush=True)
sys.stdin.read()  # hold them open until the test says so (closes stdin)
"""


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"needs {need} file descriptors; the hard limit here is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


async def test_tcp_ten_thousand_idle_connections() -> None:
    """Issue 8's bad input: 10,000 connections that never send. The clients live in a child process."""
    n = 10_000
    _raise_fd_limit(n + 1024)
    intake = new_intake()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    async with running(TcpListener(config("rawtcp"), host=LOCAL, max_connections=n + 1), intake) as tcp:
        port = tcp.status()["port"]
        clients = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _IDLE_CLIENTS, str(n), str(port),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        try:
            async with asyncio.timeout(60):
                assert clients.stdout is not None
                assert (await clients.stdout.readline()).strip() == b"connected"
                await until(lambda: tcp.status()["connections"] == n, within=40)
            async with tcp_client(port) as (_, writer):  # still serving
                writer.write(b"alive\n")
                assert [m.payload for m in await take(intake, 1)] == [b"alive"]
            assert tcp.status()["received"] == 1
        finally:
            assert clients.stdin is not None
            clients.stdin.close()
            async with asyncio.timeout(20):
                await clients.wait()
    assert tcp.status()["connections"] == 0  # stop() closed every one of them
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 200, f"{n} idle connections grew the peak RSS by {grown_mib:.0f} MiB"


async def test_tcp_paused_intake_refuses_and_keeps_the_connection() -> None:
    intake = new_intake()
    async with running(TcpListener(config("rawtcp"), host=LOCAL), intake) as tcp:
        async with tcp_client(tcp.status()["port"]) as (reader, writer):
            intake.stop_accepting()
            writer.write(b"one\ntwo\n")
            await until(lambda: tcp.status()["refused"] == 2, within=15.0)
            assert len(intake) == 0
            writer.write(b"three\n")
            await until(lambda: tcp.status()["refused"] == 3, within=15.0)
            assert tcp.status()["connections"] == 1 and not reader.at_eof()


async def test_tcp_reply_to_a_closed_connection_is_dropped_and_stop_closes_connections() -> None:
    intake = new_intake()
    async with running(TcpListener(config("rawtcp"), host=LOCAL), intake) as tcp:
        port = tcp.status()["port"]
        async with tcp_client(port) as (_, writer):
            writer.write(b"bye\n")
            [m] = await take(intake, 1)
        await until(lambda: tcp.status()["connections"] == 0, within=15.0)
        m.reply.send(out(b"too late"))  # type: ignore[union-attr]
        assert tcp.status()["repliesDropped"] == 1
        async with tcp_client(port) as (reader, _):
            await until(lambda: tcp.status()["connections"] == 1, within=15.0)
            await tcp.stop()
            assert await read_eof(reader) == b""


async def test_tcp_port_in_use_is_a_bind_error() -> None:
    intake = new_intake()
    async with running(TcpListener(config("rawtcp"), host=LOCAL), intake) as first:
        second = TcpListener(config("rawtcp"), host=LOCAL, port=first.status()["port"])
        with pytest.raises(ListenerBindError):
            await second.start(intake)
        assert second.status()["state"] == "failed"


def test_tcp_bad_framing_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="1, 2 or 4"):
        TcpListener(config("rawtcp", message_length_in_message=True, message_length_size=3))


# ====================================================================== UDP

class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(data)


@asynccontextmanager
async def udp_client(port: int) -> AsyncIterator[tuple[asyncio.DatagramTransport, _UdpClient]]:
    transport, proto = await asyncio.get_running_loop().create_datagram_endpoint(
        _UdpClient, remote_addr=(LOCAL, port))
    try:
        yield transport, proto
    finally:
        transport.close()
        await asyncio.sleep(0)


async def test_udp_datagrams_garbage_oversize_and_replies() -> None:
    intake = new_intake()
    async with running(UdpListener(config("raw_udp", max_message_size=32), host=LOCAL), intake) as udp:
        async with udp_client(udp.status()["port"]) as (transport, client):
            transport.sendto(b'{"id":"d1"}')
            transport.sendto(b"\xff\x00garbage\x01")
            transport.sendto(b"x" * 33)
            transport.sendto(b"last")
            msgs = await take(intake, 3)
            assert [m.payload for m in msgs] == [b'{"id":"d1"}', b"\xff\x00garbage\x01", b"last"]
            assert msgs[0].from_address == f"{LOCAL}:{transport.get_extra_info('sockname')[1]}"
            assert udp.status()["oversized"] == 1
            msgs[0].reply.send(out(b"ack"))  # type: ignore[union-attr]
            async with asyncio.timeout(5):
                assert await client.received.get() == b"ack"
            assert udp.status()["repliesSent"] == 1
    msgs[0].reply.send(out(b"after stop"))  # type: ignore[union-attr]
    assert udp.status()["repliesDropped"] == 1


async def test_udp_paused_intake_refuses() -> None:
    intake = new_intake()
    async with running(UdpListener(config("raw_udp"), host=LOCAL), intake) as udp:
        intake.stop_accepting()
        async with udp_client(udp.status()["port"]) as (transport, _):
            transport.sendto(b"refused")
            await until(lambda: udp.status()["refused"] == 1, within=15.0)
        assert len(intake) == 0


async def test_udp_port_in_use_is_a_bind_error() -> None:
    intake = new_intake()
    async with running(UdpListener(config("raw_udp"), host=LOCAL), intake) as first:
        with pytest.raises(ListenerBindError):
            await UdpListener(config("raw_udp"), host=LOCAL, port=first.status()["port"]).start(intake)


# ====================================================================== WebSocket, server mode

@asynccontextmanager
async def ws_connect(url: str, **kw: Any) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as session, asyncio.timeout(5):
        async with session.ws_connect(url, **kw) as ws:
            yield ws


async def test_ws_server_frames_and_replies() -> None:
    intake = new_intake()
    async with running(WebSocketListener(config("websocket"), host=LOCAL), intake) as wsl:
        assert wsl.status()["mode"] == "server"
        async with ws_connect(f"http://{LOCAL}:{wsl.status()['port']}/any/path") as ws:
            await ws.send_str('{"deviceId":"d1"}')
            await ws.send_bytes(b"\x00\x01\x02")
            text, binary = await take(intake, 2)
            assert (text.payload, binary.payload) == (b'{"deviceId":"d1"}', b"\x00\x01\x02")
            assert text.from_address is not None and text.from_address.startswith(LOCAL)
            text.reply.send(out(b"text back"))  # type: ignore[union-attr]
            binary.reply.send(out(b"\xffbinary back"))  # type: ignore[union-attr]
            async with asyncio.timeout(5):
                r1, r2 = await ws.receive(), await ws.receive()
            assert (r1.type, r1.data) == (WSMsgType.TEXT, "text back")
            assert (r2.type, r2.data) == (WSMsgType.BINARY, b"\xffbinary back")
            assert wsl.status()["connections"] == 1
        await until(lambda: wsl.status()["connections"] == 0, within=15.0)
        text.reply.send(out(b"gone"))  # type: ignore[union-attr]
        assert wsl.status()["repliesDropped"] == 1


async def test_ws_server_path_auth_subprotocol_and_size_cap() -> None:
    intake = new_intake()
    cfg = config("websocket", path="/devices", anonymous=False, user_name="dev", password="s3cret",
                 supported_protocol="nuviot", max_message_size=64)
    async with running(WebSocketListener(cfg, host=LOCAL), intake) as wsl:
        base = f"http://{LOCAL}:{wsl.status()['port']}"
        good = {"Authorization": BasicCredentials("dev", "s3cret").header()}
        for path, headers, status in [("/other", good, 404), ("/devices", {}, 401),
                                      ("/devices", {"Authorization": BasicCredentials("dev", "wrong").header()}, 401)]:
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                async with ws_connect(base + path, headers=headers):
                    pass
            assert err.value.status == status
        assert wsl.status()["unauthorized"] == 2
        async with ws_connect(base + "/devices", headers=good, protocols=("nuviot",)) as ws:
            assert ws.protocol == "nuviot"
            await ws.send_str("small")
            assert [m.payload for m in await take(intake, 1)] == [b"small"]
            await ws.send_bytes(b"x" * 65)
            async with asyncio.timeout(5):
                closing = await ws.receive()
            assert closing.type is WSMsgType.CLOSE and closing.data == WSCloseCode.MESSAGE_TOO_BIG
        await until(lambda: wsl.status()["oversized"] == 1, within=15.0)


async def test_ws_server_paused_intake_refuses_and_stop_closes_clients() -> None:
    intake = new_intake()
    async with running(WebSocketListener(config("websocket"), host=LOCAL), intake) as wsl:
        async with ws_connect(f"http://{LOCAL}:{wsl.status()['port']}/") as ws:
            intake.stop_accepting()
            await ws.send_str("refused")
            await until(lambda: wsl.status()["refused"] == 1, within=15.0)
            assert not ws.closed
            await wsl.stop()
            async with asyncio.timeout(5):
                msg = await ws.receive()
            assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED) and wsl.status()["state"] == "stopped"


# ====================================================================== WebSocket, client mode

class DeviceServer:
    """A device-side WebSocket server the listener connects to; it can stop and start on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self.sockets: asyncio.Queue[tuple[dict[str, str], web.WebSocketResponse]] = asyncio.Queue()
        self.received: asyncio.Queue[Any] = asyncio.Queue()
        self._runner: web.AppRunner | None = None
        self._open: set[web.WebSocketResponse] = set()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/feed", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOCAL, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        for ws in list(self._open):
            await ws.close(code=WSCloseCode.GOING_AWAY)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("nuviot",))
        await ws.prepare(request)
        self._open.add(ws)
        self.sockets.put_nowait((dict(request.headers), ws))
        try:
            async for msg in ws:
                self.received.put_nowait((msg.type, msg.data))
        finally:
            self._open.discard(ws)
        return ws


@pytest.fixture
async def device_server() -> AsyncIterator[DeviceServer]:
    server = DeviceServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def client_config(server: DeviceServer, **fields: Any) -> Listener:
    return config("websocket", listen_on_port=None, host_name=LOCAL, connect_to_port=server.port, path="/feed",
                  **fields)


async def test_ws_client_connects_with_headers_takes_frames_and_replies(device_server: DeviceServer) -> None:
    intake = new_intake()
    cfg = client_config(device_server, origin="http://runtime.local", supported_protocol="nuviot",
                        anonymous=False, user_name="rt", password="pw")
    async with running(WebSocketListener(cfg, backoff_base=0.05, backoff_cap=0.2), intake) as wsl:
        assert wsl.status()["state"] == "connected"
        assert wsl.status()["url"] == f"ws://{LOCAL}:{device_server.port}/feed"
        async with asyncio.timeout(5):
            headers, ws = await device_server.sockets.get()
        assert headers["Origin"] == "http://runtime.local"
        assert headers["Sec-WebSocket-Protocol"] == "nuviot"
        assert headers["Authorization"] == "Basic cnQ6cHc="  # rt:pw
        await ws.send_str("hello")
        await ws.send_bytes(b"\x01\x02")
        hello, raw = await take(intake, 2)
        assert (hello.payload, raw.payload) == (b"hello", b"\x01\x02")
        raw.reply.send(out(b"\x09reply"))  # type: ignore[union-attr]
        async with asyncio.timeout(5):
            assert await device_server.received.get() == (WSMsgType.BINARY, b"\x09reply")


async def test_ws_client_reconnects_when_the_server_restarts(device_server: DeviceServer) -> None:
    intake = new_intake()
    async with running(WebSocketListener(client_config(device_server), backoff_base=0.05, backoff_cap=0.2),
                       intake) as wsl:
        async with asyncio.timeout(5):
            _, ws = await device_server.sockets.get()
        await ws.send_str("before")
        with structlog.testing.capture_logs() as logs:
            await device_server.stop()
            # a few failed attempts while the server is down
            await until(lambda: sum(e["event"] == "listener_disconnected" for e in logs) >= 3, within=15.0)
        assert wsl.status()["state"] == "connecting"
        await device_server.start()  # same port
        async with asyncio.timeout(10):
            _, ws = await device_server.sockets.get()
        await ws.send_str("after")
        assert [m.payload for m in await take(intake, 2)] == [b"before", b"after"]
        await until(lambda: wsl.status()["state"] == "connected", within=15.0)
        assert wsl.status()["connects"] == 2


async def test_ws_client_with_no_server_keeps_trying_and_stops_cleanly() -> None:
    intake = new_intake()
    server = DeviceServer()
    await server.start()
    port = server.port
    await server.stop()
    cfg = config("websocket", listen_on_port=None, host_name=f"ws://{LOCAL}", connect_to_port=port)
    async with running(WebSocketListener(cfg, backoff_base=0.01, backoff_cap=0.05), intake) as wsl:
        assert wsl.status()["state"] == "connecting"
        assert wsl.status()["lastError"]
        assert wsl.status()["url"] == f"ws://{LOCAL}:{port}/"


def test_ws_mode_needs_a_host_or_a_port() -> None:
    with pytest.raises(ValueError, match="hostName"):
        WebSocketListener(config("websocket", listen_on_port=None))


async def test_ws_client_frame_over_the_cap_reconnects(device_server: DeviceServer) -> None:
    intake = new_intake()
    cfg = client_config(device_server, max_message_size=16)
    async with running(WebSocketListener(cfg, backoff_base=0.01, backoff_cap=0.05), intake) as wsl:
        async with asyncio.timeout(5):
            _, ws = await device_server.sockets.get()
        await ws.send_bytes(b"x" * 17)
        async with asyncio.timeout(5):
            _, ws = await device_server.sockets.get()  # it came back
        await ws.send_str("fits")
        assert [m.payload for m in await take(intake, 1)] == [b"fits"]
        assert wsl.status()["oversized"] == 1 and wsl.status()["connects"] == 2
