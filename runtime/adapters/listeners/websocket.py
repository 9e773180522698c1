"""WebSocket listener (``websocket``): every text or binary frame is one message, as client or as server.

Decisions:

- **Mode.** ``HostName`` set -> **client** (NuvIoT's definition, reference/nuviot-spec.md §3.1: the runtime
  connects to ``ws[s]://HostName[:ConnectToPort]/Path``). ``HostName`` empty and ``ListenOnPort`` set ->
  **server** (an aiohttp WebSocket server on that port). Neither -> ``ValueError``.
- **Client**: ``wss`` when ``SecureConnection``; ``Origin`` header when set; ``SupportedProtocol`` offered as
  the subprotocol; Basic auth (``UserName``/``Password``) when not ``Anonymous``. A scheme in ``HostName`` is
  tolerated and ignored. It reconnects forever with full-jitter backoff; ``start()`` returns after the first
  attempt (state ``connected`` or ``connecting``): an unreachable server is not a bind failure.
- **Server**: any path, or exactly ``Path`` when set (other paths: 404); the ``port`` and ``host`` arguments
  (``port`` overrides ``ListenOnPort``, 0 picks a free port) apply to this mode only. Basic auth is required when not
  ``Anonymous`` (401 before the upgrade). ``SupportedProtocol`` is the subprotocol offered; ``Origin`` is
  only sent by the client and not checked here. A bind failure raises ``ListenerBindError``.
- **Frames.** Text frames become their UTF-8 bytes, binary frames their bytes. Control frames are not messages.
  ``MaxMessageSize`` (default 64 KiB) is aiohttp's ``max_msg_size``: a bigger frame makes aiohttp close the
  connection with 1009 (counted as ``oversized``; the client then reconnects).
- **Refused offers** (intake full or pausing) are counted (``refused``); the connection stays open.
- **Replies** (original-listener transmitter): ``reply.send(out)`` queues ``out.payload`` on the connection
  the message came from (bounded per connection, ``reply_queue_size``); a per-connection sender task writes
  it as a text frame when the message came as text and the payload is UTF-8, else as binary. Dropped and
  counted (``repliesDropped``) when the connection is gone or its queue is full.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import aiohttp
import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from runtime.adapters.httpguard import ConnectionLimits
from runtime.adapters.httpsite import BasicCredentials, HttpServer, start_site
from runtime.adapters.listeners.base import ListenerBase
from runtime.adapters.listeners.framing import DEFAULT_MAX_MESSAGE_SIZE
from runtime.adapters.supervision import SessionTask, supervise
from runtime.core.backoff import Backoff
from runtime.core.errors import ListenerBindError, describe
from runtime.core.listener_state import ListenerState
from runtime.core.messages import InboundMessage, OutgoingMessage
from runtime.core.solution.model import Listener
from runtime.services.dataplane import Intake
from runtime.services.metrics import ConnectionCounters

log = structlog.get_logger(__name__)

WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse



class _Reply:
    __slots__ = ("_peer", "_text")

    def __init__(self, peer: _Peer, text: bool) -> None:
        self._peer = peer
        self._text = text

    def send(self, out: OutgoingMessage) -> None:
        self._peer.enqueue(out.payload, self._text)


class _Peer:
    """One open WebSocket: its reply queue and the task that writes it."""

    def __init__(self, listener: WebSocketListener, ws: WebSocket, address: str | None) -> None:
        self.listener = listener
        self.ws = ws
        self.address = address
        self.alive = True
        self.text_reply = _Reply(self, True)
        self.binary_reply = _Reply(self, False)
        self._queue: deque[tuple[bytes, bool]] = deque()
        self._wake = asyncio.Event()

    def enqueue(self, payload: bytes, text: bool) -> None:
        c = self.listener.counters
        if not self.alive or len(self._queue) >= self.listener.reply_queue_size:
            c["repliesDropped"] += 1
            return
        self._queue.append((payload, text))
        self._wake.set()

    async def pump(self) -> None:
        queue, c = self._queue, self.listener.counters
        while True:
            if not queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            payload, text = queue.popleft()
            try:
                if text:
                    try:
                        await self.ws.send_str(payload.decode())
                    except UnicodeDecodeError:
                        await self.ws.send_bytes(payload)
                else:
                    await self.ws.send_bytes(payload)
            except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
                c["repliesDropped"] += 1 + len(queue)
                queue.clear()
                self.alive = False
                log.info("reply_dropped", listener=self.listener.key, peer=self.address, error=describe(exc))
                return
            c["repliesSent"] += 1

    def close(self) -> None:
        self.alive = False
        self.listener.counters["repliesDropped"] += len(self._queue)
        self._queue.clear()


class WebSocketListener(ListenerBase):
    type = "websocket"

    def __init__(
        self,
        config: Listener,
        *,
        port: int | None = None,
        host: str = "0.0.0.0",
        backoff_base: float = 0.2,
        backoff_cap: float = 30.0,
        heartbeat: float | None = 30.0,
        connect_timeout: float = 10.0,
        reply_queue_size: int = 1000,
        limits: ConnectionLimits | None = None,
        connection_counters: ConnectionCounters | None = None,
    ) -> None:
        self.config = config
        self._limits = limits
        self._connection_counters = connection_counters
        self.key = config.key
        self.max_size = config.max_message_size or DEFAULT_MAX_MESSAGE_SIZE
        self.reply_queue_size = reply_queue_size
        self._heartbeat = heartbeat
        self._connect_timeout = connect_timeout
        self._protocols = (config.supported_protocol,) if config.supported_protocol else ()
        self._auth: BasicCredentials | None = None
        if not config.anonymous:
            pw = config.password.get_secret_value() if config.password else ""
            self._auth = BasicCredentials(config.user_name or "", pw)
        self._host = host
        if config.host_name:
            self.mode = "client"
            self.url: str | None = _client_url(config)
            self._port = config.connect_to_port
        elif config.listen_on_port is not None or port is not None:
            self.mode = "server"
            self.url = None
            self._port = config.listen_on_port if port is None else port
        else:
            raise ValueError(f"websocket listener {config.key}: hostName (client) or listenOnPort (server) is required")
        self._backoff = Backoff(base=backoff_base, cap=backoff_cap)
        self._intake: Intake | None = None
        self.last_error: str | None = None
        self.bound_port: int | None = None
        # client mode
        self._runner = SessionTask(f"listener:{self.key}")
        self._session: aiohttp.ClientSession | None = None
        # server mode
        self._site: HttpServer | None = None
        self._peers: set[_Peer] = set()
        self.counters = {
            "connects": 0,
            "received": 0,
            "refused": 0,
            "oversized": 0,
            "unauthorized": 0,
            "errors": 0,
            "repliesSent": 0,
            "repliesDropped": 0,
        }

    # ------------------------------------------------------------------ Listener protocol
    async def start(self, intake: Intake) -> None:
        if self._runner.running or self._site is not None:
            raise RuntimeError(f"listener {self.key} is already started")
        self._intake = intake
        if self.mode == "server":
            await self._start_server()
            return
        self._set_state(ListenerState.CONNECTING)
        timeout = aiohttp.ClientTimeout(total=None, connect=self._connect_timeout,
                                        sock_connect=self._connect_timeout)
        self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            await self._runner.start(self._run_client)
        except BaseException:  # a bug: surface it
            await self._close_session()
            self._set_state(ListenerState.FAILED)
            raise

    async def stop(self) -> None:
        if self._site is None and not self._runner.running:
            return
        connected = self._state is ListenerState.CONNECTED
        self._set_state(ListenerState.STOPPING)
        self._runner.stop_requested.set()
        await self._close_peers()
        # connecting or backing off: nothing to close cleanly, end it at once
        await self._runner.stop(2.0 if connected else 0.0)
        await self._close_session()
        site, self._site = self._site, None
        if site is not None:
            await site.stop()
        self._set_state(ListenerState.STOPPED)
        log.info("listener_stopped", listener=self.key, **self.counters)

    def status(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "type": self.type,
            "mode": self.mode,
            "state": self._state,
            "port": self.bound_port if self.bound_port is not None else self._port,
            "url": self.url,
            "connections": len(self._peers),
            "lastError": self.last_error,
            **self.counters,
        }

    # ------------------------------------------------------------------ shared: one open socket
    async def _serve(self, ws: WebSocket, address: str | None) -> str | None:
        """Read frames until the socket closes; the error that ended it, if any."""
        error: str | None = None
        peer = _Peer(self, ws, address)
        self._peers.add(peer)
        self.counters["connects"] += 1
        sender = asyncio.get_running_loop().create_task(peer.pump(), name=f"listener:{self.key}:replies")
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    self._take(msg.data.encode(), peer, text=True)
                elif msg.type is WSMsgType.BINARY:
                    self._take(msg.data, peer, text=False)
                elif msg.type is WSMsgType.ERROR:
                    exc = msg.data
                    if getattr(exc, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                        self.counters["oversized"] += 1
                    else:
                        self.counters["errors"] += 1
                    error = describe(exc)
                    break
        finally:
            self._peers.discard(peer)
            peer.close()
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        return error

    def _take(self, payload: bytes, peer: _Peer, *, text: bool) -> None:
        msg = InboundMessage(self.key, payload, from_address=peer.address,
                             reply=peer.text_reply if text else peer.binary_reply)
        intake = self._intake
        if intake is not None and intake.offer(msg):
            self.counters["received"] += 1
        else:
            self.counters["refused"] += 1

    async def _close_peers(self) -> None:
        peers = list(self._peers)
        if not peers:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.gather(*(p.ws.close(code=WSCloseCode.GOING_AWAY, message=b"listener stopping")
                                       for p in peers), return_exceptions=True)

    # ------------------------------------------------------------------ client mode
    async def _run_client(self) -> None:
        await supervise(self._client_session, role="listener", backoff=self._backoff,
                        connection_errors=(aiohttp.ClientError, OSError, TimeoutError), on_loss=self._on_loss,
                        stop=self._runner.stop_requested, attempted=self._runner.attempted,
                        listener=self.key, url=self.url)

    def _on_loss(self, error: str) -> str:
        self.last_error = error
        self._set_state(ListenerState.CONNECTING)
        return "listener_disconnected"

    async def _client_session(self) -> None:
        """One client connection; raises when it ends (the server closed it, or it broke)."""
        assert self._session is not None and self.url is not None
        headers = {"Authorization": self._auth.header()} if self._auth is not None else None
        async with self._session.ws_connect(
            self.url, protocols=self._protocols, origin=self.config.origin or None, headers=headers,
            heartbeat=self._heartbeat, max_msg_size=self.max_size,
        ) as ws:
            self._set_state(ListenerState.CONNECTED)
            self.last_error = None
            self._backoff.reset()
            self._runner.attempted.set()
            log.info("listener_connected", listener=self.key, url=self.url)
            error = await self._serve(ws, self.url)
            if self._runner.stop_requested.is_set():
                return
            raise ConnectionError(error or f"the server closed the connection (code {ws.close_code})")

    async def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # ------------------------------------------------------------------ server mode
    async def _start_server(self) -> None:
        app = web.Application()
        path = self.config.path
        app.router.add_get(("/" + path.lstrip("/")) if path else "/{tail:.*}", self._handle)
        try:
            self._site = await start_site(app, self._host, self._port or 0, key=self.key, limits=self._limits,
                                          counters=self._connection_counters)
            self.bound_port = self._site.port
        except ListenerBindError:
            self._set_state(ListenerState.FAILED)
            raise
        self._set_state(ListenerState.LISTENING)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._auth is not None and not self._auth.check(request.headers.get("Authorization")):
            self.counters["unauthorized"] += 1
            return web.Response(status=401, headers={"WWW-Authenticate": f'Basic realm="{self.key}"'})
        ws = web.WebSocketResponse(protocols=self._protocols, max_msg_size=self.max_size, heartbeat=self._heartbeat)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="a WebSocket upgrade is expected")
        if self._state is not ListenerState.LISTENING:
            return web.Response(status=503, text="the listener is stopping")
        await ws.prepare(request)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else request.remote
        await self._serve(ws, address)
        return ws


def _client_url(config: Listener) -> str:
    host = config.host_name or ""
    for scheme in ("wss://", "ws://", "https://", "http://"):
        if host.lower().startswith(scheme):
            host = host[len(scheme):]
            break
    host = host.rstrip("/")
    port = f":{config.connect_to_port}" if config.connect_to_port else ""
    path = config.path or "/"
    if not path.startswith("/"):
        path = "/" + path
    return f"{'wss' if config.secure_connection else 'ws'}://{host}{port}{path}"
