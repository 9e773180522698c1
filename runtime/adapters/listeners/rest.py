"""REST listener (``rest``): an aiohttp server on the listener's port.

Every request becomes one ``InboundMessage``. The handler waits (up to the keep-alive timeout) for the
message's final record, so a bad message gets a 4xx naming the stage and reason, and, when
``keepAliveToSendReply`` is set, an original-listener transmitter can answer on this connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import structlog
from aiohttp import web

from runtime.adapters.httpguard import ConnectionLimits
from runtime.adapters.httpsite import BasicCredentials, HttpServer, start_site
from runtime.adapters.listeners.base import ListenerBase
from runtime.core.errors import ListenerBindError
from runtime.core.listener_state import ListenerState
from runtime.core.messages import InboundMessage, MessageRecord, OutgoingMessage, PemStatus
from runtime.core.solution.model import Listener
from runtime.services.dataplane import Intake
from runtime.services.metrics import ConnectionCounters

log = structlog.get_logger(__name__)

DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_TIMEOUT_MS = 5000

# failing stage/code -> HTTP status for the device
_STAGE_STATUS = {"sentinel": 401, "inputtranslator": 400, "workflow": 422, "outputtranslator": 500, "listener": 400}
_CODE_STATUS = {
    "CouldNotDetermineDeviceId": 400,
    "CouldNotDetermineMessageId": 400,
    "CouldNotFindDevice": 404,
    "CouldNotFindMessage": 404,
    "CouldNotFindDeviceConfiguration": 404,
    "payload_too_large": 413,
    "internal_error": 500,
}


def status_for(record: MessageRecord) -> int:
    code = (record.error or "").split(":", 1)[0]
    if code in _CODE_STATUS:
        return _CODE_STATUS[code]
    return _STAGE_STATUS.get(record.stage or "", 400)


class _Reply:
    """The original-listener channel for one request: keeps the first outgoing message."""

    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out: OutgoingMessage | None = None

    def send(self, out: OutgoingMessage) -> None:
        if self.out is None:
            self.out = out


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


class RestListener(ListenerBase):
    type = "rest"

    def __init__(self, config: Listener, *, port: int | None = None, host: str = "0.0.0.0",
                 limits: ConnectionLimits | None = None, connection_counters: ConnectionCounters | None = None) -> None:
        self.config = config
        self._limits = limits
        self.connections = connection_counters if connection_counters is not None else ConnectionCounters()
        self.key = config.key
        self._host = host
        chosen = config.listen_on_port if port is None else port
        if chosen is None:
            raise ValueError(f"rest listener {config.key}: listenOnPort is required")
        self._port = chosen
        self._max_body = config.max_message_size or DEFAULT_MAX_BODY
        timeout_ms = config.keep_alive_to_send_reply_timeout_ms or DEFAULT_TIMEOUT_MS
        self._timeout = timeout_ms / 1000.0
        self._http: HttpServer | None = None
        self._intake: Intake | None = None
        self.bound_port: int | None = None
        self.counters = {"requests": 0, "refused": 0, "unauthorized": 0, "timedOut": 0, "notStored": 0}
        self._auth: BasicCredentials | None = None
        if not config.anonymous:
            pw = config.password.get_secret_value() if config.password else ""
            self._auth = BasicCredentials(config.user_name or "", pw)

    async def start(self, intake: Intake) -> None:
        self._intake = intake
        app = web.Application(client_max_size=self._max_body)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        try:
            self._http = await start_site(app, self._host, self._port, key=self.key, limits=self._limits,
                                          counters=self.connections, max_body=self._max_body)
        except ListenerBindError:
            self._set_state(ListenerState.FAILED)
            raise
        self.bound_port = self._http.port
        self._set_state(ListenerState.LISTENING)

    async def stop(self) -> None:
        self._set_state(ListenerState.STOPPING)
        if self._http is not None:
            http, self._http = self._http, None
            await http.stop()
        self._set_state(ListenerState.STOPPED)

    def status(self) -> dict[str, Any]:
        return {"key": self.key, "type": self.type, "state": self._state, "port": self.bound_port or self._port,
                **self.counters, "tooLarge": self.connections.too_large, "badRequests": self.connections.bad_requests,
                "connections": self.connections.open}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.counters["requests"] += 1
        intake = self._intake
        if intake is None or not intake.accepting:
            self.counters["refused"] += 1
            return _json({"error": {"code": "not_running", "message": "the instance is not taking messages"}}, 503,
                         {"Retry-After": "1"})
        if self._auth is not None and not self._auth.check(request.headers.get("Authorization")):
            self.counters["unauthorized"] += 1
            return _json({"error": {"code": "unauthorized", "message": "valid Basic credentials are required"}},
                         401, {"WWW-Authenticate": f'Basic realm="{self.key}"'})
        body = await request.read()  # read already (and limited, timed) by the connection guard
        loop = asyncio.get_running_loop()
        started = loop.time()
        finished: asyncio.Future[MessageRecord] = loop.create_future()
        committed: asyncio.Future[None] = loop.create_future()

        def done(record: MessageRecord) -> None:
            if not finished.done():
                finished.set_result(record)

        def ack() -> None:  # the store calls it once the message's record is committed, never when it fails
            if not committed.done():
                committed.set_result(None)

        reply = _Reply() if self.config.keep_alive_to_send_reply else None
        msg = InboundMessage(
            listener=self.key,
            payload=body,
            path=request.path,
            method=request.method,
            headers={k.lower(): v for k, v in request.headers.items()},
            query={k: v for k, v in request.query.items()},
            from_address=request.remote,
            reply=reply,
            done=done,
            ack=ack,
        )
        if not intake.offer(msg):
            self.counters["refused"] += 1
            return _json({"error": {"code": "intake_full", "message": "the runtime is busy; retry shortly"}}, 503,
                         {"Retry-After": "1"})
        try:
            record = await asyncio.wait_for(finished, self._timeout)
        except TimeoutError:
            self.counters["timedOut"] += 1
            return _json({"status": "accepted", "messageId": msg.id}, 202)
        if record.status is PemStatus.FAILED:
            code, _, detail = (record.error or "internal_error").partition(": ")
            return _json({"error": {"code": code, "message": detail or code, "stage": record.stage},
                          "messageId": msg.id}, status_for(record))
        try:  # a 2xx only once the record is committed (like a QoS1 PUBACK): a full disk is no silent 200
            await asyncio.wait_for(asyncio.shield(committed), max(0.0, self._timeout - (loop.time() - started)))
        except TimeoutError:
            self.counters["notStored"] += 1
            return _json({"error": {"code": "not_stored", "message": "processed, but its record is not stored "
                                    "(see /ready); send it again"}, "messageId": msg.id}, 503, {"Retry-After": "1"})
        if reply is not None and reply.out is not None:
            out = reply.out
            return web.Response(body=out.payload, status=200, content_type=_mime(out.content_type),
                                headers=dict(out.headers))
        if self.config.default_response:
            return web.Response(text=self.config.default_response, status=200)
        return _json({"status": record.status.value, "messageId": msg.id}, 200)


def _mime(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip() or "application/octet-stream"
