"""REST transmitter (``rest``), NuvIoT PipelineModules/Transmitters/Rest.md.

- URL = the transmitter's ``hostName`` (may carry a scheme, a port and a base path such as
  ``https://myserver.com/api``; without a scheme ``http://``, or ``https://`` when ``secureConnection``;
  ``connectToPort`` is added when the host names no port) + the message's ``pathAndQuery``. One of a
  doubled ``/`` at the join is stripped; a missing one is added.
- Method from the message (GET by default). Body = payload for POST, PUT and PATCH, with the message's
  content type unless a header sets one.
- Headers: ``Authorization: Basic`` when not anonymous, then the transmitter's headers, then the
  message's (the message wins; names compare case-insensitively).
- Retried with jittered backoff: connection errors, timeouts, 5xx, 408 and 429. Not retried: other 4xx
  and anything else that is not 2xx (redirects are followed first).
- Logs name the transmitter and the scheme://host:port only: never the user info, the path/query
  (it may carry device keys), the headers or the payload.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from runtime.adapters.outbound.base import PermanentSendError, QueuedTransmitter, RetryableSendError
from runtime.core.messages import OutgoingMessage
from runtime.core.solution.model import Transmitter as TransmitterConfig

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_RETRY_STATUS = frozenset({408, 429})


def base_url(host_name: str, *, secure: bool = False, port: int | None = None) -> str:
    """The transmitter's base URL: scheme added when missing, ``port`` added when the host names none."""
    text = host_name.strip()
    if "://" not in text:
        text = ("https://" if secure else "http://") + text
    parts = urlsplit(text)
    if port and parts.port is None:
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
        text = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return text


def join_url(base: str, path_and_query: str | None) -> str:
    pq = path_and_query or ""
    if not pq:
        return base
    if base.endswith("/") and pq.startswith("/"):
        return base[:-1] + pq
    if not base.endswith("/") and not pq.startswith(("/", "?")):
        return base + "/" + pq
    return base + pq


def _origin(url: str) -> str:
    """scheme://host:port, for logs (no user info, path or query)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


class RestTransmitter(QueuedTransmitter):
    type = "rest"

    def __init__(
        self,
        config: TransmitterConfig,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        concurrency: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(config.key, **kwargs)
        if not config.host_name:
            raise ValueError(f"rest transmitter {config.key}: hostName is required")
        self._base = base_url(config.host_name, secure=config.secure_connection, port=config.connect_to_port)
        self.origin = _origin(self._base)
        headers: dict[str, tuple[str, str]] = {}
        if not config.anonymous:
            password = config.password.get_secret_value() if config.password is not None else ""
            token = base64.b64encode(f"{config.user_name or ''}:{password}".encode()).decode("ascii")
            headers["authorization"] = ("Authorization", f"Basic {token}")  # RFC 7617, UTF-8
        for h in config.headers:
            headers[h.name.lower()] = (h.name, h.value)
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._concurrency = max(1, concurrency)
        self._session: aiohttp.ClientSession | None = None

    def status(self) -> dict[str, Any]:
        return {**super().status(), "url": self.origin}

    def url_for(self, out: OutgoingMessage) -> str:
        return join_url(self._base, out.path_and_query)

    def headers_for(self, out: OutgoingMessage) -> dict[str, str]:
        merged = dict(self._headers)
        for name, value in out.headers:
            merged[name.lower()] = (name, value)
        method = (out.method or "GET").upper()
        if method in _BODY_METHODS and "content-type" not in merged and out.content_type:
            merged["content-type"] = ("Content-Type", out.content_type)
        return dict(merged.values())

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            self._session = session
            self.state = "running"
            try:
                async with asyncio.TaskGroup() as tg:
                    for i in range(self._concurrency):
                        tg.create_task(self._work(), name=f"transmitter:{self.key}:{i}")
            finally:
                self._session = None

    async def _work(self) -> None:
        while True:
            item = await self._next()
            await self._deliver(item)

    async def _send(self, out: OutgoingMessage) -> None:
        session = self._session
        assert session is not None
        method = (out.method or "GET").upper()
        body = out.payload if method in _BODY_METHODS else None
        try:
            async with session.request(method, self.url_for(out), data=body, headers=self.headers_for(out)) as resp:
                status = resp.status
                await resp.read()
        except TimeoutError:
            raise RetryableSendError(f"{method} {self.origin}: timed out") from None
        except aiohttp.ClientError as exc:
            raise RetryableSendError(f"{method} {self.origin}: {type(exc).__name__}") from None
        if 200 <= status < 300:
            return
        message = f"{method} {self.origin}: HTTP {status}"
        if status >= 500 or status in _RETRY_STATUS:
            raise RetryableSendError(message)
        raise PermanentSendError(message)
