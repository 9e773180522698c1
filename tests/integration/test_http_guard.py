"""The connection guard in process (``runtime/adapters/httpguard.py``): what a client that misbehaves gets,
and that none of it is logged as a server error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from runtime.adapters.httpguard import ConnectionLimits
from runtime.adapters.httpsite import HttpServer, start_site


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=str(len(await request.read())))

    app = web.Application(client_max_size=1000)
    app.router.add_route("*", "/{tail:.*}", echo)
    srv = await start_site(app, "127.0.0.1", 0, key="probe",
                           limits=ConnectionLimits(header_timeout=0.5, body_timeout=0.5, max_connections=5))
    try:
        yield srv
    finally:
        await srv.stop()


async def exchange(port: int, data: bytes, *, close_after: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if close_after:
            writer.close()
            return b""
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


def server_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_a_client_that_leaves_mid_body_is_no_server_error(server: HttpServer,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await exchange(server.port, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123", close_after=True)
    async with asyncio.timeout(5):
        while server.guard.counters.open:  # noqa: ASYNC110 - a plain counter, nothing to await on
            await asyncio.sleep(0.01)
    assert server_errors(caplog) == []


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (b"GET / HTTP/1.1\r\nHost: t\r\nBad\x01Header: x\r\n\r\n", 400, "bad_request"),
    (b"GET / HTTP/9.9.9\r\n\r\n", 400, "bad_request"),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope", 400,
     "bad_content_encoding"),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Encoding: br\r\nContent-Length: 4\r\n\r\nnope", 400,
     "bad_content_encoding"),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000, 413, "payload_too_large"),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01", 408, "body_timeout"),
])
async def test_client_errors_are_json_with_a_stable_code_and_no_traceback(
        server: HttpServer, caplog: pytest.LogCaptureFixture, request_bytes: bytes, status: int, code: str) -> None:
    caplog.set_level(logging.DEBUG)
    got = await exchange(server.port, request_bytes)
    head, _, body = got.partition(b"\r\n\r\n")
    assert int(head.split(b" ")[1]) == status, got
    assert f'"code":"{code}"'.encode() in body
    assert server_errors(caplog) == []


async def test_a_silent_connection_is_closed_after_the_header_timeout(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        async with asyncio.timeout(5):
            assert await reader.read() == b""
    finally:
        writer.close()
    assert loop.time() - t0 >= 0.45
    assert server.guard.counters.header_timeouts == 1


async def test_keep_alive_connections_get_the_header_timeout_to_send_the_next_request(server: HttpServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for _ in range(3):  # requests on one connection, each well inside the timeout
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            await writer.drain()
            async with asyncio.timeout(5):
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
                await reader.readexactly(1)  # the body: "0"
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # then idle: closed
    finally:
        writer.close()
    assert (server.guard.counters.idle_closed, server.guard.counters.header_timeouts) == (1, 0)


async def test_an_upgraded_websocket_outlives_the_header_timeout() -> None:
    """The timer covers the wait for a request head; a WebSocket session after the upgrade is no such wait."""
    import aiohttp

    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/", ws_echo)
    srv = await start_site(app, "127.0.0.1", 0, key="ws", limits=ConnectionLimits(header_timeout=0.2))
    try:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"http://127.0.0.1:{srv.port}/") as ws:
            for i in range(3):
                await asyncio.sleep(0.3)  # longer than the header timeout each time, on purpose
                await ws.send_str(f"m{i}")
                assert (await ws.receive(timeout=5)).data == f"m{i}"
        assert srv.guard.counters.header_timeouts == 0
    finally:
        await srv.stop()
