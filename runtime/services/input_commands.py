"""Run one input command (CONTRACT §5 and §6), whatever carried it.

The input-command HTTP server and the MQTT command channel both come here, so the parameter rules, the
workflow run, the message record and the statuses and codes are the same on both: 202 with the record's
``messageId``; 400 naming the bad or missing parameter; 404 unknown command or device; 405 wrong method;
503 when the instance is neither Running nor Paused; 422 (500 for ``internal_error``) when the command ran
and failed (the record is a dead letter). Authentication (401) belongs to the transport: Basic credentials
over HTTP, the admin token over MQTT.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.core.lifecycle import InstanceState
from runtime.core.messages import MessageRecord, PemStatus

SERVING = frozenset({InstanceState.RUNNING, InstanceState.PAUSED})
PATH_SHAPE = "/{deviceConfigKey}/{routeKey}/{workflowKey}/{inputCommandKey}/{deviceId}"


class InputCommandRefusedError(Exception):
    """An input command that cannot run: HTTP status, stable code, message naming the bad part."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class InputCommandExecutor(Protocol):
    """The current solution's dispatcher. ``method`` None means the command's own method (a transport
    without methods). Raises ``InputCommandRefusedError`` for 400/404/405."""

    def run_input_command(
        self,
        *,
        device_configuration: str,
        route: str,
        workflow: str,
        command: str,
        device_id: str,
        method: str | None,
        query: dict[str, str],
        body: Any | None,
    ) -> MessageRecord: ...


@dataclass(frozen=True, slots=True)
class InputCommandCall:
    device_configuration: str
    route: str
    workflow: str
    command: str
    device_id: str
    method: str | None = None  # None: the command's own (MQTT has no method)
    query: Mapping[str, str] = field(default_factory=dict)
    body: Any | None = None  # parameters as JSON values (an object), or None

    @classmethod
    def from_path(cls, parts: Sequence[str], **kw: Any) -> InputCommandCall:
        """From the five path (or topic) segments; 404 ``unknown_command`` for any other shape."""
        if len(parts) != 5 or not all(parts):
            raise InputCommandRefusedError(404, "unknown_command", f"expected {PATH_SHAPE}")
        configuration, route, workflow, command, device_id = parts
        return cls(configuration, route, workflow, command, device_id, **kw)


@dataclass(frozen=True, slots=True)
class InputCommandOutcome:
    status: int  # the HTTP status: 202, 400, 401, 404, 405, 408, 413, 422, 500, 503
    message_id: str | None = None  # the record's id, when the command ran
    code: str | None = None
    message: str | None = None
    stage: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.status == 202

    @property
    def ran(self) -> bool:
        """The workflow ran and left a record (accepted or failed): running it again would run it twice."""
        return self.message_id is not None

    @classmethod
    def refused(cls, exc: InputCommandRefusedError) -> InputCommandOutcome:
        return cls(exc.status, code=exc.code, message=exc.message, headers=exc.headers)

    def error(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.stage is not None:
            body["stage"] = self.stage
        return body


class RoutedInputCommands(Protocol):
    """An executor that runs a command elsewhere and waits for it (the Cluster edition: on the worker that
    owns the device, ``cluster_app.ClusterInputCommands``). ``InputCommands.run_async`` prefers it."""

    async def run_routed(self, call: InputCommandCall) -> InputCommandOutcome: ...


def outcome_of(executor: InputCommandExecutor, call: InputCommandCall) -> InputCommandOutcome:
    """Run ``call`` on ``executor``: the outcome a transport answers with."""
    try:
        record = executor.run_input_command(
            device_configuration=call.device_configuration, route=call.route, workflow=call.workflow,
            command=call.command, device_id=call.device_id, method=call.method, query=dict(call.query),
            body=call.body,
        )
    except InputCommandRefusedError as exc:
        return InputCommandOutcome.refused(exc)
    if record.status is PemStatus.FAILED:
        code, _, detail = (record.error or "internal_error").partition(": ")
        return InputCommandOutcome(500 if code == "internal_error" else 422, record.id, code, detail or code,
                                   record.stage)
    return InputCommandOutcome(202, record.id)


class InputCommands:
    """Looks up the state and the current solution's executor per call (a reload swaps the executor)."""

    def __init__(self, state: Callable[[], InstanceState],
                 executor: Callable[[], InputCommandExecutor | None]) -> None:
        self._state = state
        self._executor = executor

    @property
    def state(self) -> InstanceState:
        return self._state()

    def check_serving(self) -> None:
        state = self._state()
        if state not in SERVING:
            raise InputCommandRefusedError(503, "not_serving", f"input commands are not served while {state.value}",
                                           {"Retry-After": "1"})

    def _serving_executor(self) -> InputCommandExecutor:
        self.check_serving()
        executor = self._executor()
        if executor is None:
            raise InputCommandRefusedError(503, "not_serving", "no solution is loaded", {"Retry-After": "1"})
        return executor

    def run(self, call: InputCommandCall) -> InputCommandOutcome:
        try:
            executor = self._serving_executor()
        except InputCommandRefusedError as exc:
            return InputCommandOutcome.refused(exc)
        return outcome_of(executor, call)

    async def run_async(self, call: InputCommandCall) -> InputCommandOutcome:
        """``run``, or, for an executor that routes commands (``RoutedInputCommands``), its answer."""
        try:
            executor = self._serving_executor()
        except InputCommandRefusedError as exc:
            return InputCommandOutcome.refused(exc)
        routed = getattr(executor, "run_routed", None)
        if routed is not None:
            outcome: InputCommandOutcome = await routed(call)
            return outcome
        return outcome_of(executor, call)
