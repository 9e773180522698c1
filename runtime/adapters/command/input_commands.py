"""The input-command server (CONTRACT §6) on the input-command port; part of the command channel.

``GET|POST|PUT|DELETE /{deviceConfigKey}/{routeKey}/{workflowKey}/{inputCommandKey}/{deviceId}``.
It serves while the instance is Starting..Paused (Paused included) and is closed in Stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson
import structlog
from aiohttp import web

from runtime.adapters.httpsite import BasicCredentials, start_site
from runtime.core.lifecycle import InstanceState
from runtime.core.messages import MessageRecord, PemStatus
from runtime.services.dispatcher import InputCommandRefusedError

log = structlog.get_logger(__name__)

MAX_BODY = 256 * 1024
SERVING = frozenset({InstanceState.RUNNING, InstanceState.PAUSED})


class InputCommandExecutor(Protocol):
    def run_input_command(
        self,
        *,
        device_configuration: str,
        route: str,
        workflow: str,
        command: str,
        device_id: str,
        method: str,
        query: dict[str, str],
        body: Any | None,
    ) -> MessageRecord: ...  # raises InputCommandRefusedError for 400/404/405


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
    ) -> None:
        self._executor = executor
        self._state = state
        self._host = host
        self._port = port
        self._auth = None if basic_auth is None else BasicCredentials(*basic_auth)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.counters = {"accepted": 0, "refused": 0}

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await start_site(app, self._host, self._port, key="inputcommands")
        log.info("input_command_server_started", port=self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def status(self) -> dict[str, Any]:
        return {"port": self.port, "state": "listening" if self._runner else "stopped", **self.counters}

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
        state = self._state()
        if state not in SERVING:
            raise InputCommandRefusedError(503, "not_serving", f"input commands are not served while {state.value}",
                                    {"Retry-After": "1"})
        if self._auth is not None and not self._auth.check(request.headers.get("Authorization")):
            raise InputCommandRefusedError(401, "unauthorized", "valid Basic credentials are required",
                                    {"WWW-Authenticate": 'Basic realm="input-commands"'})
        parts = [p for p in request.path.split("/") if p]
        if len(parts) != 5:
            raise InputCommandRefusedError(
                404, "unknown_command",
                "expected /{deviceConfigKey}/{routeKey}/{workflowKey}/{inputCommandKey}/{deviceId}")
        body: Any | None = None
        raw = await request.read()
        if raw:
            if request.method in ("GET", "DELETE"):
                raise InputCommandRefusedError(400, "body_not_allowed", f"a body is not allowed on {request.method}")
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InputCommandRefusedError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
        record = self._executor.run_input_command(
            device_configuration=parts[0], route=parts[1], workflow=parts[2], command=parts[3], device_id=parts[4],
            method=request.method, query={k: v for k, v in request.query.items()}, body=body,
        )
        if record.status is PemStatus.FAILED:
            code, _, detail = (record.error or "internal_error").partition(": ")
            status = 500 if code == "internal_error" else 422
            return _json({"error": {"code": code, "message": detail or code, "stage": record.stage},
                          "messageId": record.id}, status)
        self.counters["accepted"] += 1
        return _json({"status": "accepted", "messageId": record.id}, 202)
