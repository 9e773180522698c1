"""One run of a workflow: the mutable working copy of a device's state while a message (or an input command, or a
timer) goes through the workflow's nodes, and what the run produced (``WorkflowResult``). ``WorkflowEngine``
(``workflow.py``) prepares a workflow once per solution load and starts a ``_Run`` per message. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runtime.core.devices import Device
from runtime.core.errors import StageError
from runtime.core.health import ALARM_STATE, BUSINESS_RULE, ErrorChanges, HealthEvent
from runtime.core.pipeline.typed import convert
from runtime.core.pipeline.wiring import Edge
from runtime.core.scripting import (
    SCRIPT_ERROR_CODES,
    HookEffects,
    ScriptError,
    ScriptSession,
    ScriptState,
    SessionContext,
    hook_attribute_on_set,
    hook_business_rule,
    hook_on_execute,
    hook_on_transition,
    hook_transition_in,
)
from runtime.core.solution.enums import NodeType
from runtime.core.solution.model import InputCommand, MachineState

if TYPE_CHECKING:
    from runtime.core.pipeline.workflow import WorkflowEngine

STAGE = "workflow"
MAX_EVENTS_PER_RUN = 100


@dataclass(slots=True)
class WorkflowResult:
    """The device state after the run, and what it produced. Nothing is applied until the caller does."""

    attributes: dict[str, object]
    state_machines: dict[str, str]
    properties: dict[str, object]
    property_bag: dict[str, object]
    location: tuple[float, float] | None
    output_commands: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)  # logConsole lines, for the structured log
    warnings: list[str] = field(default_factory=list)
    rule_failures: list[tuple[str | None, str]] = field(default_factory=list)  # (error code, reason)
    # the scripts' addToDataStream / updateDataStream calls: (op, stream key, values, filter)
    stream_writes: list[tuple[str, str, dict[str, object], dict[str, object] | None]] = field(default_factory=list)
    health_events: list[HealthEvent] = field(default_factory=list)  # error codes raised/cleared (core/health.py)
    script_calls: int = 0  # hooks called (0 for a run that needed no script)

    def apply_to(self, device: Device) -> None:
        device.attributes = dict(self.attributes)
        device.state_machines = dict(self.state_machines)
        device.properties = dict(self.properties)
        device.property_bag = dict(self.property_bag)
        if self.location is not None:
            device.latitude, device.longitude = self.location


# Enum members as module constants: ``NodeType.X`` is a class attribute lookup (~0.1 us) on every edge fired.
_INPUT = NodeType.INPUT
_ATTRIBUTE = NodeType.ATTRIBUTE
_STATE_MACHINE = NodeType.STATE_MACHINE
_OUTPUT_COMMAND = NodeType.OUTPUT_COMMAND


class _Run:
    """The mutable working copy of one run. Never escapes the engine."""

    def __init__(
        self, engine: WorkflowEngine, device: Device, ctx: SessionContext | None, now: float | None = None
    ) -> None:
        self.engine = engine
        self.device_id = device.device_id
        self.now = now if now is not None else (device.updated_at or 0.0)
        self._health: ErrorChanges | None = None
        self.wf = engine.workflow
        self.ctx = ctx
        self.scripted = engine.scripts is not None
        attributes = dict(device.attributes)
        for attr in engine._defaulted_attributes:
            if attr.key not in attributes:
                try:
                    attributes[attr.key] = convert(
                        attr.default_value, attr.attribute_type, engine._state_set(attr.state_set)
                    )
                except ValueError:
                    attributes[attr.key] = attr.default_value
        machines = dict(device.state_machines)
        for key, initial in engine._initial_states:
            if key not in machines:
                machines[key] = initial
        location = (
            (device.latitude, device.longitude)
            if device.latitude is not None and device.longitude is not None
            else None
        )
        self.state = ScriptState(
            attributes, dict(device.properties), dict(device.property_bag), machines, location
        )
        self.session: ScriptSession | None = None
        self.commands: list[tuple[str, dict[str, object]]] = []
        self.logs: list[str] = []
        self.warnings: list[str] = []
        self.rule_failures: list[tuple[str | None, str]] = []
        self.stream_writes: list[tuple[str, str, dict[str, object], dict[str, object] | None]] = []
        self.calls = 0
        self.events = 0

    # ---- scripts

    def call(self, hook: str, args: Sequence[object]) -> HookEffects | None:
        scripts = self.engine.scripts
        if scripts is None or not scripts.has(hook):
            return None
        self.calls += 1
        try:
            if self.session is None:
                assert self.ctx is not None  # built by the engine whenever it has scripts
                self.session = scripts.session(self.ctx, self.state)
            effects = self.session.call(hook, args, self.state)
        except ScriptError as exc:
            raise StageError(STAGE, SCRIPT_ERROR_CODES[exc.kind], exc.detail) from exc
        self.logs.extend(effects.logs)
        self.warnings.extend(effects.warnings)
        if effects.stream_writes:
            self.stream_writes.extend(effects.stream_writes)
        if "attributes" in effects.state_changed:
            self._coerce_attributes()
        return effects

    def apply(self, effects: HookEffects | None) -> None:
        if effects is None:
            return
        for key, fields in effects.commands:
            self.emit(key, fields)
        for machine, event, value in effects.events:
            self.raise_event(machine, event, value)

    def hook(self, hook: str, args: Sequence[object]) -> HookEffects | None:
        effects = self.call(hook, args)
        self.apply(effects)
        return effects

    def _coerce_attributes(self) -> None:
        changed = False
        attrs = self.state.attributes
        for attr in self.wf.attributes:
            if attr.key not in attrs or attrs[attr.key] is None:
                continue
            raw = attrs[attr.key]
            try:
                value = convert(raw, attr.attribute_type, self.engine._state_set(attr.state_set))
            except ValueError as exc:
                raise StageError(
                    STAGE,
                    "attribute_conversion_failed",
                    f"attribute {attr.key} ({attr.attribute_type.value}): {exc}",
                ) from None
            if value != raw or type(value) is not type(raw):
                attrs[attr.key] = value
                changed = True
        if changed:
            self.state.version += 1

    # ---- nodes

    def fire(self, node_type: NodeType, key: str, value: object) -> None:
        """The mappings out of an input or an attribute, with ``value``."""
        original = value
        for edge in self.engine._edges.get((node_type, key), ()):
            value = original
            if edge.script is not None and self.scripted:  # NuvIoT Connection.Script: map(value)
                effects = self.call(edge.script, (value,))
                if effects is not None:
                    value = effects.value
                    self.apply(effects)
            to_type = edge.to_type
            if to_type is _ATTRIBUTE:
                self.set_attribute(edge.to_key, value)
            elif to_type is _STATE_MACHINE:
                self.raise_event(edge.to_key, edge.event or _event_name(value), value)
            elif to_type is _OUTPUT_COMMAND:
                self.send(edge.to_key, (value,))

    def set_attribute(self, key: str, value: object) -> None:
        engine = self.engine
        spec = engine._attribute_types.get(key)
        if spec is None:
            self.warnings.append(f"mapping to unknown attribute {key} ignored")
            return
        try:
            typed = convert(value, spec[0], spec[1])
        except ValueError as exc:
            raise StageError(
                STAGE, "attribute_conversion_failed", f"attribute {key} ({spec[0].value}): {exc}"
            ) from None
        effects = self.call(hook_attribute_on_set(key), (typed,)) if self.scripted else None
        if effects is None:  # no script: the value is set directly
            self.state.attributes[key] = typed
            self.state.version += 1
        else:
            self.apply(effects)
        if key in engine._attribute_edges:  # no mapping out of it: firing it would do nothing
            self.fire(_ATTRIBUTE, key, self.state.attributes.get(key))

    def send(self, key: str, args: Sequence[object], by_key: Mapping[str, object] | None = None) -> None:
        """``OutputCommands.<key>.send(*args)`` from a mapping: onExecute(*args), or a command of the args."""
        command = self.wf.output_command_by_key.get(key)
        if command is None:
            self.warnings.append(f"mapping to unknown output command {key} ignored")
            return
        effects = self.call(hook_on_execute(key), args)
        if effects is not None:
            self.apply(effects)
            return
        if by_key is not None and any(p.key in by_key for p in command.parameters):
            fields = {p.key: by_key[p.key] for p in command.parameters if p.key in by_key}
        else:
            fields = {p.key: a for p, a in zip(command.parameters, args, strict=False)}
        self.emit(key, fields)

    def emit(self, key: str, fields: Mapping[str, object]) -> None:
        command = self.wf.output_command_by_key.get(key)
        if command is None:
            self.warnings.append(f"unknown output command {key} dropped")
            return
        out = dict(fields)
        for p in command.parameters:
            if p.key in out and out[p.key] is not None:
                try:
                    out[p.key] = convert(out[p.key], p.parameter_type, self.engine._state_set(p.state_set))
                except ValueError as exc:
                    self.warnings.append(f"output command {key}: field {p.key}: {exc}; sent as it is")
        if command.parameters:
            declared = {p.key for p in command.parameters}
            extra = [k for k in out if k not in declared]
            if extra:
                self.warnings.append(
                    f"output command {key}: fields {', '.join(extra)} are not parameters of the command"
                )
        self.commands.append((key, out))

    def raise_event(self, machine_key: str, event: str, value: object) -> None:
        machine = self.wf.state_machine_by_key.get(machine_key)
        if machine is None:
            self.warnings.append(f"event {event} for unknown state machine {machine_key} ignored")
            return
        self.events += 1
        if self.events > MAX_EVENTS_PER_RUN:
            raise StageError(
                STAGE, "event_limit", f"more than {MAX_EVENTS_PER_RUN} state-machine events in one run"
            )
        current = self.state.state_machines.get(machine.key)
        states = self.engine._states[id(machine)]
        state = states.get(current)
        if state is None:
            start = machine.initial_state
            self.warnings.append(
                f"state machine {machine.key}: unknown state {current!r}, reset to {start!r}"
            )
            state = states.get(start)
            if state is None:
                return
            self.state.state_machines[machine.key] = state.key
            self.state.version += 1
        transition = self.engine._transitions[id(state)].get(event)
        if transition is None:  # the current state does not handle it: ignored (spec §2.5.4) ...
            if machine.exception_on_unhandled_event:  # ... unless the machine says so (NuvIoT's flag)
                raise StageError(STAGE, "unhandled_event",
                                 f"state machine {machine.key}: state {state.key} does not handle event {event}")
            return
        effects = (
            self.call(hook_on_transition(machine.key, state.key, event), (value,)) if self.scripted else None
        )
        if not transition.new_state:
            self.apply(effects)
            return
        self.state.state_machines[machine.key] = transition.new_state
        self.state.version += 1
        entered = states.get(transition.new_state)
        if self.engine._alarms:
            self._alarm_codes(machine.key, state, entered)
        self.apply(effects)
        if entered is not None and self.scripted:  # NuvIoT State.TransitionInAction
            self.hook(hook_transition_in(machine.key, entered.key), (value,))

    def health(self) -> ErrorChanges:
        if self._health is None:
            self._health = ErrorChanges(self.device_id, self.state.property_bag, self.now)
        return self._health

    def _alarm_codes(self, machine_key: str, left: MachineState, entered: MachineState | None) -> None:
        """An alarm state raises its error code when entered and clears it when left (NuvIoT State.IsAlarmState)."""
        alarms = self.engine._alarms
        old = alarms.get(id(left))
        new = alarms.get(id(entered)) if entered is not None else None
        if old is not None and old != new:
            self.health().clear(old, ALARM_STATE, f"state machine {machine_key} left state {left.key}")
            self.state.version += 1
        if new is not None and entered is not None:
            self.health().raise_(new, f"state machine {machine_key} entered state {entered.key}", ALARM_STATE)
            self.state.version += 1

    def business_rule(self, key: str, error_code: str | None) -> None:
        effects = self.call(hook_business_rule(key), ())
        if effects is None:
            return
        ok, reason = _rule_outcome(effects.value)
        if not ok:
            self.rule_failures.append((error_code, reason or f"business rule {key} failed"))
            self.warnings.append(f"business rule {key} failed: {reason or 'no reason given'}")
            if error_code:  # NuvIoT: a rule that returns false raises its error code on the device
                self.health().raise_(error_code, reason or f"business rule {key} failed", BUSINESS_RULE)
                self.state.version += 1
        elif error_code and self.health().is_active(error_code):
            self.health().clear(error_code, BUSINESS_RULE, f"business rule {key} passed")
            self.state.version += 1
        self.apply(effects)

    def command_edge(self, command: InputCommand, edge: Edge, values: Mapping[str, object]) -> None:
        if edge.to_type is NodeType.ATTRIBUTE:
            param = edge.parameter
            if param is None:
                if edge.to_key in values:
                    param = edge.to_key
                elif len(command.parameters) == 1:
                    param = command.parameters[0].key
            if param is not None and param in values:
                self.set_attribute(edge.to_key, values[param])
        elif edge.to_type is NodeType.STATE_MACHINE:
            value = values.get(edge.parameter) if edge.parameter else None
            event = edge.event or (_event_name(value) if value is not None else command.key)
            self.raise_event(edge.to_key, event, value)
        elif edge.to_type is NodeType.OUTPUT_COMMAND:
            if edge.parameter:
                args: list[object] = [values.get(edge.parameter)]
            else:
                args = [values[p.key] for p in command.parameters if p.key in values]
            self.send(edge.to_key, args, by_key=values)

    # ---- the end

    def result(self) -> WorkflowResult:
        st = self.state
        return WorkflowResult(
            attributes={k: v for k, v in st.attributes.items() if v is not None},
            state_machines=dict(st.state_machines),
            properties={k: v for k, v in st.properties.items() if v is not None},
            property_bag=dict(st.property_bag),
            location=st.location,
            output_commands=self.commands,
            logs=self.logs,
            warnings=self.warnings,
            rule_failures=self.rule_failures,
            stream_writes=self.stream_writes,
            health_events=self._health.events if self._health is not None else [],
            script_calls=self.calls,
        )


def _event_name(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _rule_outcome(value: object) -> tuple[bool, str | None]:
    """A business rule returns true/false, or ``{result: bool, reason: str}``."""
    if isinstance(value, dict):
        ok = value.get("result", value.get("valid", value.get("success", False)))
        reason = value.get("reason", value.get("message"))
        return bool(ok), (str(reason) if reason is not None else None)
    if value is None:
        return True, None
    return bool(value), None
