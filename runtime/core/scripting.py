"""The scripting port: what the pure workflow and output stages need from a script engine.

Core code depends only on the protocols here; ``runtime/adapters/scripting`` implements them with an
embedded JavaScript engine (docs/scripting.md). One ``WorkflowScripts`` holds every script of one workflow
(and the output-message scripts its routes use), compiled once per solution load. Per message or input
command the workflow stage opens one ``ScriptSession`` (lazily, on the first hook it actually calls), calls
hooks through it and reads their effects.

Hooks are named by ``hook_*`` below; a name is also what a ``ScriptError`` shows after ``workflow <key> /``.
State moves between Python and the engine as a ``ScriptState`` that the workflow stage owns: the session
pushes it to the engine when ``version`` changed since the last sync, and writes back what scripts changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from runtime.core.errors import RuntimeBaseError

ScriptErrorKind = Literal["error", "timeout", "memory", "compile"]
# The dead-letter error code a pipeline stage gives each kind of script failure.
SCRIPT_ERROR_CODES: dict[ScriptErrorKind, str] = {
    "error": "script_error",
    "timeout": "script_timeout",
    "memory": "script_out_of_memory",
    "compile": "script_error",
}


class ScriptError(RuntimeBaseError):
    """A script threw, ran past its time limit or exhausted its memory (or did not compile).

    ``script`` is the full display name (``workflow simplemotion / outputcommand acknowledge / onExecute``),
    ``message`` the JavaScript error (``TypeError: cannot read property 'x' of undefined``), ``line`` the
    1-based line inside that script when known.
    """

    def __init__(
        self, script: str, message: str, line: int | None = None, kind: ScriptErrorKind = "error"
    ) -> None:
        self.script = script
        self.message = message
        self.line = line
        self.kind = kind
        super().__init__(self.detail)

    @property
    def detail(self) -> str:
        where = f"{self.script}, line {self.line}" if self.line is not None else self.script
        return f"{where}: {self.message}"


# --------------------------------------------------------------------------- hook names


PRE_HANDLER = "preHandler"
POST_HANDLER = "postHandler"


def hook_input_on_set(input_key: str) -> str:
    return f"input {input_key} / onSet"


def hook_attribute_on_set(attribute_key: str) -> str:
    return f"attribute {attribute_key} / onSet"


def hook_on_arrive(command_key: str) -> str:
    return f"inputcommand {command_key} / onArrive"


def hook_on_execute(command_key: str) -> str:
    return f"outputcommand {command_key} / onExecute"


def hook_on_transition(machine_key: str, state_key: str, event: str) -> str:
    return f"statemachine {machine_key} / state {state_key} / event {event} / onTransition"


def hook_transition_in(machine_key: str, state_key: str) -> str:
    """NuvIoT ``State.TransitionInAction``: run when the machine enters the state."""
    return f"statemachine {machine_key} / state {state_key} / onEnter"


def hook_connection_map(src_type: str, src_key: str, dst_type: str, dst_key: str) -> str:
    """NuvIoT ``Connection.Script``: ``map(value)`` on the mapping from one node to another."""
    return f"connection {src_type} {src_key} -> {dst_type} {dst_key} / map"


def hook_business_rule(rule_key: str) -> str:
    return f"businessrule {rule_key} / evaluate"


def hook_output_message(message_key: str) -> str:
    return f"message {message_key} / getOutputMessage"


# --------------------------------------------------------------------------- values crossing the port


@dataclass(slots=True)
class ScriptState:
    """The device state scripts can read and change, owned by the workflow stage for one message.

    Whoever changes it bumps ``version`` so the session knows to push it before the next hook.
    """

    attributes: dict[str, object]
    properties: dict[str, object]
    property_bag: dict[str, object]
    state_machines: dict[str, str]
    location: tuple[float, float] | None = None
    version: int = 0


@dataclass(frozen=True, slots=True)
class SessionContext:
    """Read-only globals of one session: ``IoTDevice``, ``WorkflowInputs``, ``InputCommand``."""

    device_id: str
    device_name: str = ""
    device_configuration: str = ""
    device_type: str | None = None
    message_id: str | None = None
    inputs: Mapping[str, object] = field(default_factory=dict)
    command: Mapping[str, object] | None = None  # InputCommand.<param> (input commands only)


@dataclass(slots=True)
class HookEffects:
    """What one hook call did, besides changing ``ScriptState``.

    ``commands`` are the output commands enqueued (``create()...enqueue()`` or ``send`` without onExecute),
    in order, as ``(command key, fields)``; ``events`` the state-machine events raised with
    ``StateMachines.<key>.handle(event, value)`` as ``(machine key, event, value)``; the workflow stage runs
    them after the hook returns, in order. ``state_changed`` names the parts of ``ScriptState`` the hook
    wrote (``attributes``, ``properties``, ``property_bag``, ``location``).
    """

    value: object = None
    commands: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    events: list[tuple[str, str, object]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    state_changed: frozenset[str] = frozenset()
    # addToDataStream / updateDataStream calls: (op "add"|"update", stream key, values, filter or None)
    stream_writes: list[tuple[str, str, dict[str, object], dict[str, object] | None]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class OutputMessageResult:
    """What ``getOutputMessage()`` returned: a JSON-able value, or a string sent as it is."""

    value: object
    is_text: bool = False
    logs: tuple[str, ...] = ()


class ScriptSession(Protocol):
    """One message's (or input command's) run of a workflow's scripts; session values live here."""

    def call(self, hook: str, args: Sequence[object], state: ScriptState) -> HookEffects:
        """Run ``hook(*args)``; raise ``ScriptError`` when it throws, loops or allocates without end."""
        ...


class OutputScripts(Protocol):
    """The part of the port the output translator uses."""

    def has(self, hook: str) -> bool: ...

    def output_message(
        self, message_key: str, fields: Mapping[str, object], device_id: str
    ) -> OutputMessageResult:
        """Run the message's ``getOutputMessage()`` with ``Fields`` set; raise ``ScriptError`` on failure."""
        ...


class WorkflowScripts(OutputScripts, Protocol):
    """Every script of one workflow, compiled once. ``has`` is a cheap set lookup, never a JS call."""

    @property
    def workflow_key(self) -> str: ...

    def session(self, ctx: SessionContext, state: ScriptState) -> ScriptSession: ...
