"""Issue 8: TCP (two framings), UDP and WebSocket listeners, each end to end into device state."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import aiohttp
import pytest

from tests.support.daemon import Daemon

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "socket-listeners.yaml"


def body(device: str, value: int) -> bytes:
    return json.dumps({"deviceId": device, "msgid": "reading", "value": value}).encode()


async def test_each_socket_listener_reaches_device_state_and_replies(tmp_path: Path) -> None:
    with Daemon(tmp_path / "data", "--solution", str(FIXTURE), "--input-command-port", "0") as d:
        status = await asyncio.to_thread(d.wait_state, "Running")
        ports = {lst["key"]: lst["port"] for lst in status["listeners"]}
        assert all(lst["state"] == "listening" for lst in status["listeners"]), status["listeners"]

        async with asyncio.timeout(15):
            # TCP, newline framed: two messages on one connection, a half frame completed later
            reader, writer = await asyncio.open_connection("127.0.0.1", ports["tcpline"])
            writer.write(body("m1", 1) + b"\n" + body("m1", 2)[:10])
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.write(body("m1", 2)[10:] + b"\r\n")
            await writer.drain()
            replies = [json.loads(await reader.readline()) for _ in range(2)]
            assert replies == [{"value": 1}, {"value": 2}]
            writer.write(b"not json at all\n")  # dead letter; the connection stays usable
            writer.write(body("m1", 3) + b"\n")
            await writer.drain()
            assert json.loads(await reader.readline()) == {"value": 3}
            writer.close()

            # TCP, 2-byte big-endian length prefix
            reader, writer = await asyncio.open_connection("127.0.0.1", ports["tcplen"])
            payload = body("m2", 42)
            writer.write(struct.pack(">H", len(payload)) + payload)
            await writer.drain()
            size = struct.unpack(">H", await reader.readexactly(2))[0]
            assert json.loads(await reader.readexactly(size)) == {"value": 42}
            writer.close()

            # UDP: one datagram, one message; the reply goes back to the sender
            loop = asyncio.get_running_loop()
            got: asyncio.Future[bytes] = loop.create_future()

            class Proto(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: object) -> None:
                    if not got.done():
                        got.set_result(data)

            transport, _ = await loop.create_datagram_endpoint(Proto, remote_addr=("127.0.0.1", ports["udpin"]))
            transport.sendto(body("m3", 7))
            assert json.loads(await got) == {"value": 7}
            transport.close()

            # WebSocket server
            async with aiohttp.ClientSession() as session, session.ws_connect(
                f"http://127.0.0.1:{ports['wsin']}/") as ws:
                await ws.send_str(body("m4", 9).decode())
                reply = await ws.receive()
                assert json.loads(reply.data) == {"value": 9}

        devices = {k: (await asyncio.to_thread(d.request, "GET", f"/devices/{k}"))[1]["attributes"]["last"]
                   for k in ("m1", "m2", "m3", "m4")}
        assert devices == {"m1": 3, "m2": 42, "m3": 7, "m4": 9}
        letters = (await asyncio.to_thread(d.request, "GET", "/deadletters"))[1]
        assert [x["listener"] for x in letters] == ["tcpline"]

        # pause closes every listener
        assert (await asyncio.to_thread(d.request, "POST", "/control/pause"))[0] == 202
        status = await asyncio.to_thread(d.wait_state, "Paused")
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", ports["tcpline"])
