"""What every aiohttp server of the runtime shares: binding a site (port 0 allowed) and Basic auth.

Used by the REST listener, the WebSocket server, the input-command server and the admin API.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web

from runtime.core.errors import ListenerBindError


async def start_site(app: web.Application, host: str, port: int, *, key: str,
                     shutdown_timeout: float = 2.0) -> tuple[web.AppRunner, int]:
    """Run ``app`` on ``host:port``; return the runner and the bound port. ``ListenerBindError`` names
    ``key`` and the port when it cannot bind."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenerBindError(key, port, exc.strerror or str(exc)) from exc
    sockets = getattr(site._server, "sockets", None) or []
    return runner, int(sockets[0].getsockname()[1]) if sockets else port


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
