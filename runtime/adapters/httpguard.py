"""Read timeouts, a connection cap and client-error answers for every aiohttp server (issue 18 items 4-6).

aiohttp has no timeout for a request head that never completes and no connection limit, and it answers a
malformed request or an undecodable ``Content-Encoding`` with a logged traceback. Here, per server port:

- **cap**: beyond ``max_connections`` open connections a new one gets ``503 too_many_connections`` and is
  closed (counted ``rejected``); other ports (the admin API) are not affected.
- **header timeout**: a connection must deliver a whole request head within ``header_timeout`` seconds of
  opening, and the next one within the same time after a response (keep-alive); else it is closed
  (``header_timeouts``, or ``idle_closed`` when nothing at all arrived after a response).
- **body timeout**: the body must be read within ``body_timeout`` seconds: ``408 body_timeout``, closed.
- **client errors**: an undecodable body (``Content-Encoding: gzip`` that is not gzip, deflate, br) is
  ``400 bad_content_encoding``; a malformed request ``400 bad_request``; a body over the limit
  ``413 payload_too_large``. All JSON ``{"error": {"code", "message"}}``, logged as one rate-limited
  warning without a traceback.
- **stop**: connections without a request being handled are closed at once, so a stalled client never
  delays a shutdown; handlers still running get ``shutdown_timeout``.

The body is read by the guard's middleware (so handlers find it read); it is the innermost middleware, so
an outer one (the admin API's authentication) runs first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
import structlog
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from runtime.services.metrics import ConnectionCounters

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 256
    shutdown_timeout: float = 1.0  # for handlers still running at stop


GUARD_KEY: web.AppKey[ConnectionGuard] = web.AppKey("connection_guard")


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


def _json_error(status: int, code: str, message: str, *, close: bool = False) -> web.Response:
    resp = web.Response(body=error_body(code, message), status=status, content_type="application/json")
    if close:
        resp.force_close()
    return resp


class _Handler(RequestHandler):
    """aiohttp's per-connection protocol with client errors answered in JSON and logged without a traceback."""

    guard: ConnectionGuard | None = None

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        guard = self.guard
        if status >= 500 or guard is None:
            return super().handle_error(request, status, exc, message)
        code = "bad_content_encoding" if isinstance(exc, ContentEncodingError) else "bad_request"
        guard.client_error(code, request.remote, exc)
        return _json_error(400, code, _reason(exc, code), close=True)


def _reason(exc: BaseException | None, code: str) -> str:
    if code == "bad_content_encoding":
        return "the body cannot be decoded as its Content-Encoding says"
    if isinstance(exc, HttpProcessingError) and exc.message:
        return str(exc.message).splitlines()[0][:200]
    return "malformed HTTP request"


class _Refused(asyncio.Protocol):
    """A connection over the cap: one 503, then closed once the request has been read (closing on unread
    data would reset the connection and lose the 503), or after a second at most."""

    _BODY = error_body("too_many_connections", "too many connections on this port; retry shortly")
    RESPONSE = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
                b"Retry-After: 1\r\nContent-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY)
    GRACE = 1.0

    def __init__(self) -> None:
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        stream = cast(asyncio.Transport, transport)  # a stream server's transport
        stream.write(self.RESPONSE)
        self._timer = asyncio.get_running_loop().call_later(self.GRACE, stream.abort)

    def data_received(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None


class _Guarded(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection: counts it and runs its header/keep-alive timer."""

    __slots__ = ("_guard", "_inner", "_received", "_served", "_timer", "busy", "transport")

    def __init__(self, guard: ConnectionGuard, inner: RequestHandler) -> None:
        self._guard = guard
        self._inner = inner
        self.transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._received = False  # a byte arrived since the timer was armed
        self._served = 0  # requests handled on this connection
        self.busy = False

    # ---- asyncio.Protocol, forwarded
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._guard.opened(self)
        self.arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._received = True
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        self._inner.eof_received()  # aiohttp's handler returns None: the transport closes itself
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        self._guard.closed(self)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # ---- the timer
    def arm(self) -> None:
        self.disarm()
        self._received = False
        self._timer = asyncio.get_running_loop().call_later(self._guard.limits.header_timeout, self._expired)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def request_started(self) -> None:
        self.disarm()
        self._served += 1

    def _expired(self) -> None:
        self._timer = None
        if self.busy or self.transport is None:
            return
        counters = self._guard.counters
        if self._served and not self._received:
            counters.idle_closed += 1
        else:
            counters.header_timeouts += 1
            log.warning("connection_timed_out", server=self._guard.key, phase="header",
                        after_s=self._guard.limits.header_timeout)
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class ConnectionGuard:
    """The guard of one server port."""

    def __init__(self, key: str, limits: ConnectionLimits, counters: ConnectionCounters | None = None) -> None:
        self.key = key
        self.limits = limits
        self.counters = counters if counters is not None else ConnectionCounters()
        self._reserved = 0  # protocols made (a connection is counted from its accept)
        self._open: dict[asyncio.BaseTransport, _Guarded] = {}

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        loop = asyncio.get_running_loop()
        kwargs = dict(server._kwargs)  # what aiohttp's own factory passes (web.Server.__call__)

        def make() -> asyncio.Protocol:
            if self._reserved >= self.limits.max_connections:
                self.counters.rejected += 1
                log.warning("connection_refused", server=self.key, reason="too_many_connections",
                            limit=self.limits.max_connections)
                return _Refused()
            self._reserved += 1
            inner = _Handler(server, loop=loop, **kwargs)
            inner.guard = self
            return _Guarded(self, inner)

        return make

    def opened(self, conn: _Guarded) -> None:
        assert conn.transport is not None
        self._open[conn.transport] = conn
        self.counters.accepted += 1
        self.counters.open = len(self._open)

    def closed(self, conn: _Guarded) -> None:
        if conn.transport is not None and self._open.pop(conn.transport, None) is not None:
            self._reserved -= 1
        self.counters.open = len(self._open)

    def connection(self, transport: asyncio.BaseTransport | None) -> _Guarded | None:
        return self._open.get(transport) if transport is not None else None

    def close_idle(self) -> int:
        """Close every connection that has no request being handled (stop: nothing to wait for)."""
        idle = [c for c in self._open.values() if not c.busy]
        for conn in idle:
            conn.close()
        return len(idle)

    def client_error(self, code: str, remote: str | None, exc: BaseException | None) -> None:
        self.counters.bad_requests += 1
        log.warning("http_request_rejected", server=self.key, code=code, peer=remote,
                    reason=_reason(exc, code))


@web.middleware
async def guard_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    guard = request.app[GUARD_KEY]
    conn = guard.connection(request.transport)
    if conn is not None:
        conn.request_started()
    try:
        if request.body_exists:
            try:
                async with asyncio.timeout(guard.limits.body_timeout):
                    await request.read()
            except TimeoutError:
                guard.counters.body_timeouts += 1
                log.warning("connection_timed_out", server=guard.key, phase="body",
                            after_s=guard.limits.body_timeout, peer=request.remote)
                return _json_error(408, "body_timeout",
                                   f"the body did not arrive within {guard.limits.body_timeout:g} s", close=True)
            except web.HTTPRequestEntityTooLarge:
                guard.counters.too_large += 1
                return _json_error(413, "payload_too_large",
                                   f"the body is larger than {request.app.get(MAX_BODY_KEY, 0)} bytes", close=True)
            except ConnectionError:  # the client went away mid-body: nobody to answer, nothing to report
                log.debug("client_disconnected", server=guard.key, phase="body", peer=request.remote)
                return _json_error(400, "client_disconnected", "the connection closed before the body ended",
                                   close=True)
            except (RequestPayloadError, ContentEncodingError) as exc:
                code = "bad_content_encoding" if "content-encoding" in str(exc).lower() else "bad_request"
                guard.client_error(code, request.remote, exc)
                return _json_error(400, code, _reason(exc, code), close=True)
        if conn is not None:
            conn.busy = True
        return await handler(request)
    finally:
        if conn is not None:
            conn.busy = False
            if conn.transport is not None and not conn.transport.is_closing():
                conn.arm()  # keep-alive: the next request head must come within the header timeout


MAX_BODY_KEY: web.AppKey[int] = web.AppKey("max_body")
