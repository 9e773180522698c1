"""The admin HTTP API (CONTRACT §4) on aiohttp: AppRunner + TCPSite, port 0 allowed.

Open: /health, /ready, /metrics. Everything else needs ``Authorization: Bearer <token>`` (constant-time
compare). Errors are always ``{"error": {"code", "message"}}``; the mapping from errors to status codes
is the one table below.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr

from runtime.adapters.console.routes import register_console
from runtime.adapters.httpguard import ConnectionLimits
from runtime.adapters.httpsite import HttpServer, start_site
from runtime.core.errors import CommandRefusedError
from runtime.services.commands import (
    EVENT_KINDS,
    BadRequestError,
    NotFoundError,
    Operations,
    StorageUnavailableError,
)

log = structlog.get_logger(__name__)

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
OPEN_PREFIX = "/ui"  # the console's page and its static files (no data in them; the API they call needs the token)
MAX_BODY = 1024 * 1024

# error type -> (HTTP status); the code and message come from the error itself
ERROR_STATUS: dict[type[Exception], int] = {
    CommandRefusedError: 409,
    NotFoundError: 404,
    BadRequestError: 400,
    StorageUnavailableError: 503,
}


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    resp = _json({"error": {"code": code, "message": message}}, status)
    if headers:
        resp.headers.update(headers)
    return resp


def _offset(request: web.Request) -> int:
    raw = request.query.get("offset", "0")
    if not raw.isdigit() or int(raw) > 10_000_000:
        raise BadRequestError("bad_offset", "offset must be a whole number from 0")
    return int(raw)


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "100")
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestError("bad_limit", "limit must be a whole number from 1 to 1000") from None
    if not 1 <= value <= 1000:
        raise BadRequestError("bad_limit", "limit must be a whole number from 1 to 1000")
    return value


async def _body(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise
    if not raw:
        raise BadRequestError("bad_json", "a JSON body is required")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError("bad_json", f"the body is not valid JSON: {exc}") from None


def _console_page(request: web.Request) -> bool:
    """GET /ui and its static files are open (they hold no data); /feed and the API need the token."""
    path = request.path
    return request.method in ("GET", "HEAD") and (
        path in (OPEN_PREFIX, OPEN_PREFIX + "/") or path.startswith(OPEN_PREFIX + "/static/"))


class AdminApi:
    def __init__(self, ops: Operations, token: SecretStr, *, host: str = "0.0.0.0", port: int = 8181,
                 limits: ConnectionLimits | None = None,
                 extra_routes: Sequence[Callable[[web.Application], None]] = ()) -> None:
        self._ops = ops
        self._limits = limits
        self._extra_routes = tuple(extra_routes)  # route modules of other parts (data streams)
        self._token = token.get_secret_value().encode()
        self._host = host
        self._port = port
        self._http: HttpServer | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._errors, self._auth])
        r = app.router
        r.add_get("/health", self.health)
        r.add_get("/ready", self.ready)
        r.add_get("/metrics", self.metrics)
        r.add_get("/status", self.status)
        r.add_post("/control/{verb}", self.control)
        r.add_get("/events", self.events)
        r.add_get("/devices", self.devices)
        r.add_get("/devices/{device_id}", self.device)
        r.add_put("/devices/{device_id}", self.put_device)
        r.add_delete("/devices/{device_id}", self.delete_device)
        r.add_get("/messages", self.messages)
        r.add_get("/deadletters", self.deadletters)
        r.add_get("/deadletters/{record_id}", self.deadletter)
        r.add_post("/deadletters/{record_id}/replay", self.replay)
        register_console(app, self._ops)  # GET /ui (+ static), GET /feed, POST /pipeline/test
        for register in self._extra_routes:
            register(app)
        return app

    async def start(self) -> int:
        self._http = await start_site(self.app(), self._host, self._port, key="admin", limits=self._limits,
                                      counters=self._ops.metrics.counters.connection("admin"))
        self.port = self._http.port
        log.info("admin_api_started", host=self._host, port=self.port)
        return self.port

    async def stop(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.stop()

    # ------------------------------------------------------------ middleware
    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return error_response(413, "payload_too_large", f"the body is larger than {MAX_BODY} bytes")
        except web.HTTPNotFound:
            return error_response(404, "not_found", f"no such endpoint: {request.method} {request.path}")
        except web.HTTPMethodNotAllowed as exc:
            return error_response(405, "method_not_allowed", f"{request.method} is not allowed here",
                                  {"Allow": ", ".join(sorted(exc.allowed_methods))})
        except web.HTTPException:
            raise
        except tuple(ERROR_STATUS) as exc:
            status = next(s for t, s in ERROR_STATUS.items() if isinstance(exc, t))
            return error_response(status, exc.code, exc.message)  # type: ignore[attr-defined]  # every type in ERROR_STATUS has both
        except Exception as exc:
            log.exception("admin_request_failed", path=request.path, error=repr(exc))
            return error_response(500, "internal_error", "internal error; see the runtime log")

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path in OPEN_PATHS or _console_page(request):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), self._token)
        if not ok:
            log.warning("admin_unauthorized", path=request.path, method=request.method, remote=request.remote,
                        had_credentials=bool(header))
            return error_response(401, "unauthorized", "a valid bearer token is required",
                                  {"WWW-Authenticate": 'Bearer realm="nuviot-runtime"'})
        return await handler(request)

    # ------------------------------------------------------------ handlers
    async def health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "state": self._ops.runtime.state.value})

    async def ready(self, request: web.Request) -> web.Response:
        ok, reason = self._ops.ready()
        return _json({"ready": ok, "reason": reason}, 200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._ops.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def status(self, request: web.Request) -> web.Response:
        return _json(self._ops.status())

    async def control(self, request: web.Request) -> web.Response:
        state = await self._ops.control(request.match_info["verb"])
        return _json({"state": state.value}, 202)

    async def events(self, request: web.Request) -> web.Response:
        kind = request.query.get("kind") or None
        if kind is not None and kind not in EVENT_KINDS:
            raise BadRequestError("bad_kind", f"kind must be one of {', '.join(EVENT_KINDS)}")
        return _json(await self._ops.events(_limit(request), kind, request.query.get("deviceId") or None))

    async def devices(self, request: web.Request) -> web.Response:
        limit = _limit(request) if "limit" in request.query else None  # without one: every device
        found, total = self._ops.list_devices(limit, _offset(request), request.query.get("q") or None)
        resp = _json(found)
        resp.headers["X-Total-Count"] = str(total)
        return resp

    async def device(self, request: web.Request) -> web.Response:
        return _json(self._ops.get_device(request.match_info["device_id"]))

    async def put_device(self, request: web.Request) -> web.Response:
        device, created = await self._ops.put_device(request.match_info["device_id"], await _body(request))
        return _json(device, 201 if created else 200)

    async def delete_device(self, request: web.Request) -> web.Response:
        await self._ops.delete_device(request.match_info["device_id"])
        return web.Response(status=204)

    async def messages(self, request: web.Request) -> web.Response:
        return _json(await self._ops.messages(_limit(request), request.query.get("deviceId") or None))

    async def deadletters(self, request: web.Request) -> web.Response:
        return _json(await self._ops.deadletters(_limit(request), _offset(request)))

    async def deadletter(self, request: web.Request) -> web.Response:
        return _json(await self._ops.deadletter(request.match_info["record_id"]))

    async def replay(self, request: web.Request) -> web.Response:
        return _json(await self._ops.replay(request.match_info["record_id"]), 202)


