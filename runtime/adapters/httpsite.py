"""What every aiohttp server of the runtime shares: binding a guarded site (port 0 allowed) and Basic auth.

Used by the REST listener, the WebSocket server, the input-command server and the admin API. Every one gets
the connection guard (``httpguard``: read timeouts, a per-port cap, JSON 400s for client errors).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac

from aiohttp import web

from runtime.adapters.httpguard import (
    GUARD_KEY,
    MAX_BODY_KEY,
    ConnectionGuard,
    ConnectionLimits,
    guard_middleware,
)
from runtime.core.errors import ListenerBindError
from runtime.services.metrics import ConnectionCounters

_BACKLOG = 1024


class _GuardedSite(web.TCPSite):
    """aiohttp's TCPSite with the guard's protocol factory in place of the bare ``runner.server``."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, host, port, reuse_address=True, backlog=_BACKLOG)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server), self._host, self._port, backlog=_BACKLOG, reuse_address=True
        )


class HttpServer:
    """One running aiohttp server: its runner, bound port and guard."""

    def __init__(self, runner: web.AppRunner, port: int, guard: ConnectionGuard) -> None:
        self.runner = runner
        self.port = port
        self.guard = guard

    async def stop(self) -> None:
        """Close idle and stalled connections at once, give running handlers ``shutdown_timeout``."""
        self.guard.close_idle()
        await self.runner.cleanup()


async def start_site(app: web.Application, host: str, port: int, *, key: str,
                     limits: ConnectionLimits | None = None, counters: ConnectionCounters | None = None,
                     max_body: int | None = None) -> HttpServer:
    """Run ``app`` on ``host:port`` behind a connection guard. ``ListenerBindError`` names ``key`` and the
    port when it cannot bind."""
    limits = limits or ConnectionLimits()
    guard = ConnectionGuard(key, limits, counters)
    app[GUARD_KEY] = guard
    app[MAX_BODY_KEY] = max_body if max_body is not None else app._client_max_size
    app.middlewares.append(guard_middleware)  # innermost: authentication and error mapping run first
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=limits.shutdown_timeout,
                           lingering_time=0, keepalive_timeout=limits.header_timeout + 1.0)
    await runner.setup()
    site = _GuardedSite(runner, host, port, guard)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenerBindError(key, port, exc.strerror or str(exc)) from exc
    sockets = getattr(site._server, "sockets", None) or []
    return HttpServer(runner, int(sockets[0].getsockname()[1]) if sockets else port, guard)


class BasicCredentials:
    """One user name and password, checked in constant time against an ``Authorization`` header."""

    __slots__ = ("_password", "_user")

    def __init__(self, user: str, password: str) -> None:
        self._user = user.encode()
        self._password = password.encode()

    def header(self) -> str:
        """The ``Authorization`` value a client sends."""
        return "Basic " + base64.b64encode(self._user + b":" + self._password).decode("ascii")

    def check(self, header: str | None) -> bool:
        scheme, _, value = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        ok_user = hmac.compare_digest(user, self._user)
        ok_password = hmac.compare_digest(password, self._password)
        return ok_user and ok_password
