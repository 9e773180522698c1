"""Commands on the MQTT command channel: reading, authenticating and de-duplicating them, and input commands.

A command is a JSON object ``{token, requestId, expiresAt?}`` (verbs), plus ``parameters?`` and
``method?`` for an input command on
``{base}/commands/{deviceConfigKey}/{routeKey}/{workflowKey}/{inputCommandKey}/{deviceId}``
(CONTRACT §5). Decisions:

- The token is compared in constant time (``hmac.compare_digest`` also runs for a missing token) and is
  never logged; neither is a payload.
- ``expiresAt`` (ISO 8601 with a zone, or seconds since the epoch) bounds how late a command queued in
  the persistent session may still run: past it, the reply is 408 ``command_expired`` and nothing runs.
- ``RecentReplies`` keeps, for a minute, the reply of every command that *ran* (a verb that was accepted,
  an input command that left a record), by topic and ``requestId``: the same command arriving again in
  that minute (a publisher's retry, a QoS 1 redelivery) is answered with the same reply and not run again.
  A refusal is not kept: nothing ran, so a retry is decided afresh (e.g. 503 in Stopped, then Running).
- An input command is run by the same ``InputCommands`` as the HTTP server's (statuses, codes, record).
  MQTT has no method: the command's own is used, unless the payload names one (then 405 when it differs).
  While the instance moves between states (Starting, Pausing, ...) the command waits for the state to
  settle, up to ``settle_timeout``: a command queued while the connection was down usually arrives while
  the instance is still Starting, and should run once it is Running, not be refused.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeGuard

import orjson
import structlog

from runtime.services.input_commands import (
    InputCommandCall,
    InputCommandOutcome,
    InputCommandRefusedError,
    InputCommands,
)

log = structlog.get_logger(__name__)

_RECOVER_WINDOW = 1024  # bytes searched for a requestId in a payload that cannot be parsed
_REQUEST_ID = re.compile(rb'"requestId"\s*:\s*"([^"\\]{1,256})"')
REPLY_WINDOW = 60.0  # seconds a reply is repeated for the same requestId
_REPLIES_MAX = 4096

RequestId = str | int


class Refused(Exception):
    """A command refused before it ran: HTTP-like status, stable code, and the requestId when known."""

    def __init__(self, status: int, code: str, message: str, request_id: RequestId | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id


def _recover_request_id(payload: bytes) -> str | None:
    found = _REQUEST_ID.search(payload[:_RECOVER_WINDOW])
    return found.group(1).decode("utf-8", "replace") if found else None


def _valid_request_id(value: object) -> TypeGuard[RequestId]:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and 0 < len(value) <= 256


def _expires_at(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed.timestamp()
    raise ValueError(value)


def read_request(raw: bytes, *, max_payload: int, token: bytes, now: float) -> tuple[dict[str, Any], RequestId]:
    """The command's body and requestId, or ``Refused`` (400 unreadable, 401 token, 408 expired)."""
    if len(raw) > max_payload:
        raise Refused(400, "bad_request", f"payload of {len(raw)} bytes exceeds the limit of {max_payload}",
                      _recover_request_id(raw))
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Refused(400, "bad_request", "payload is not valid JSON", _recover_request_id(raw)) from None
    if not isinstance(body, dict):
        raise Refused(400, "bad_request", "payload must be a JSON object {token, requestId}", None)
    document: dict[str, Any] = body
    request_id = body.get("requestId")
    if not _valid_request_id(request_id):
        raise Refused(400, "bad_request", "requestId is missing or is not a string of 1-256 characters", None)
    presented_token = body.get("token")
    presented = presented_token.encode("utf-8", "surrogatepass") if isinstance(presented_token, str) else b""
    # compare_digest also runs for a missing token, so timing does not tell the two cases apart
    if not hmac.compare_digest(presented, token) or not isinstance(presented_token, str):
        raise Refused(401, "unauthorized", "missing or wrong token", request_id)
    if "expiresAt" in body:
        try:
            deadline = _expires_at(body["expiresAt"])
        except ValueError:
            raise Refused(400, "bad_request", "expiresAt must be an ISO 8601 time with a zone or epoch seconds",
                          request_id) from None
        if now > deadline:
            raise Refused(408, "command_expired", f"the command expired at {body['expiresAt']}", request_id)
    return document, request_id


class RecentReplies:
    """Replies of the commands that ran, by (topic, requestId), for ``window`` seconds (bounded)."""

    def __init__(self, window: float = REPLY_WINDOW, max_entries: int = _REPLIES_MAX,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, RequestId], tuple[float, bytes]] = OrderedDict()

    def _expire(self) -> None:
        horizon = self._clock() - self._window
        while self._entries:
            key, (at, _) = next(iter(self._entries.items()))
            if at >= horizon and len(self._entries) <= self._max:
                break
            del self._entries[key]

    def get(self, topic: str, request_id: RequestId) -> bytes | None:
        self._expire()
        found = self._entries.get((topic, request_id))
        return found[1] if found is not None else None

    def remember(self, topic: str, request_id: RequestId, reply: bytes) -> None:
        self._entries[(topic, request_id)] = (self._clock(), reply)
        self._entries.move_to_end((topic, request_id))
        self._expire()


def input_reply(request_id: RequestId, outcome: InputCommandOutcome) -> dict[str, Any]:
    body: dict[str, Any] = {"requestId": request_id, "ok": outcome.accepted, "status": outcome.status}
    if not outcome.accepted:
        body["error"] = outcome.error()
    if outcome.message_id is not None:
        body["messageId"] = outcome.message_id
    return body


def refused_input_reply(request_id: RequestId, refused: Refused) -> dict[str, Any]:
    return input_reply(request_id, InputCommandOutcome(refused.status, code=refused.code, message=refused.message))


class MqttInputCommands:
    """Input commands on ``{base}/commands/+/+/+/+/+``; the reply goes to the same topic + ``/reply``."""

    def __init__(self, commands: InputCommands, base: str, *, settle_timeout: float = 10.0) -> None:
        self._commands = commands
        self._prefix = f"{base}/commands/"
        self.filter = f"{self._prefix}+/+/+/+/+"
        self._settle_timeout = settle_timeout
        self._changed = asyncio.Event()

    def matches(self, topic: str) -> bool:
        return topic.startswith(self._prefix) and topic.count("/", len(self._prefix)) == 4

    def name(self, topic: str) -> str:
        return topic[len(self._prefix):]

    def state_changed(self) -> None:
        self._changed.set()

    async def _settled(self, topic: str) -> None:
        if self._commands.state.is_transitional:
            log.info("input_command_waiting", command=self.name(topic), state=self._commands.state.value)
        try:
            async with asyncio.timeout(self._settle_timeout):
                while self._commands.state.is_transitional:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pass  # decide on the state as it is (503 while still moving)

    async def run(self, topic: str, body: dict[str, Any], request_id: RequestId) -> InputCommandOutcome:
        parameters = body.get("parameters")
        method = body.get("method")
        if parameters is not None and not isinstance(parameters, dict):
            return InputCommandOutcome(400, code="bad_parameters", message="parameters must be a JSON object")
        if method is not None and not isinstance(method, str):
            return InputCommandOutcome(400, code="bad_request", message="method must be a string")
        await self._settled(topic)
        try:
            call = InputCommandCall.from_path(self.name(topic).split("/"), method=method, body=parameters or {})
        except InputCommandRefusedError as exc:
            return InputCommandOutcome.refused(exc)
        return await self._commands.run_async(call)
