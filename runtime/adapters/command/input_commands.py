"""The input-command server (CONTRACT §6) on the input-command port; part of the command channel.

``GET|POST|PUT|DELETE /{deviceConfigKey}/{routeKey}/{workflowKey}/{inputCommandKey}/{deviceId}``.
It serves while the instance is Starting..Paused (Paused included) and is closed in Stopped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from runtime.adapters.httpguard import ConnectionLimits
from runtime.adapters.httpsite import BasicCredentials, HttpServer, start_site
from runtime.core.lifecycle import InstanceState
from runtime.services.input_commands import (
    InputCommandCall,
    InputCommandExecutor,
    InputCommandOutcome,
    InputCommandRefusedError,
    InputCommands,
)
from runtime.services.metrics import ConnectionCounters

log = structlog.get_logger(__name__)

MAX_BODY = 256 * 1024


def _json(body: Any, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", headers=headers)


class InputCommandServer:
    def __init__(
        self,
        executor: InputCommandExecutor,
        state: Callable[[], InstanceState],
        *,
        port: int,
        host: str = "0.0.0.0",
        basic_auth: tuple[str, str] | None = None,
        limits: ConnectionLimits | None = None,
        connection_counters: ConnectionCounters | None = None,
    ) -> None:
        self._limits = limits
        self._connection_counters = connection_counters
        self._commands = InputCommands(state, lambda: executor)  # the one path MQTT input commands take too
        self._host = host
        self._port = port
        self._auth = None if basic_auth is None else BasicCredentials(*basic_auth)
        self._http: HttpServer | None = None
        self.port: int | None = None
        self.counters = {"accepted": 0, "refused": 0}

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._http = await start_site(app, self._host, self._port, key="inputcommands", limits=self._limits,
                                      counters=self._connection_counters)
        self.port = self._http.port
        log.info("input_command_server_started", port=self.port)

    async def stop(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.stop()

    def status(self) -> dict[str, Any]:
        return {"port": self.port, "state": "listening" if self._http else "stopped", **self.counters}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._serve(request)
        except InputCommandRefusedError as exc:
            self.counters["refused"] += 1
            return _json({"error": {"code": exc.code, "message": exc.message}}, exc.status, exc.headers)
        except web.HTTPRequestEntityTooLarge:
            self.counters["refused"] += 1
            return _json({"error": {"code": "payload_too_large", "message": f"body over {MAX_BODY} bytes"}}, 413)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self._commands.check_serving()
        if self._auth is not None and not self._auth.check(request.headers.get("Authorization")):
            raise InputCommandRefusedError(401, "unauthorized", "valid Basic credentials are required",
                                    {"WWW-Authenticate": 'Basic realm="input-commands"'})
        call = InputCommandCall.from_path([p for p in request.path.split("/") if p], method=request.method,
                                          query={k: v for k, v in request.query.items()})
        raw = await request.read()
        if raw:
            if request.method in ("GET", "DELETE"):
                raise InputCommandRefusedError(400, "body_not_allowed", f"a body is not allowed on {request.method}")
            try:
                call = dataclasses.replace(call, body=orjson.loads(raw))
            except orjson.JSONDecodeError as exc:
                raise InputCommandRefusedError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
        return self._respond(await self._commands.run_async(call))

    def _respond(self, outcome: InputCommandOutcome) -> web.Response:
        if not outcome.accepted:
            self.counters["refused"] += 1
            body: dict[str, Any] = {"error": outcome.error()}
            if outcome.message_id is not None:
                body["messageId"] = outcome.message_id
            return _json(body, outcome.status, dict(outcome.headers) or None)
        self.counters["accepted"] += 1
        return _json({"status": "accepted", "messageId": outcome.message_id}, 202)
